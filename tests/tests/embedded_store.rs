//! weftd on its embedded lease store (no etcd: `--store-dir` shared by every
//! node's weftd, `--net-config-path`), against real weftd processes:
//! - three nodes converge; pods ping across every node pair; a TCP transfer
//!   arrives intact; a flannel-programmed node whose lease is written into
//!   the store file is picked up and reachable;
//! - a lease deleted from the store file (its weftd SIGKILLed first) leaves
//!   the other nodes' routes and weft_vteps within 10 s;
//! - 3 weftd released at the same instant (all blocked on the store's flock,
//!   then let go) get distinct subnets; 3 rounds, two of them with exactly 3
//!   free subnets;
//! - with `--subnet-lease-ttl 10`, the lease of a SIGKILLed weftd expires and
//!   its subnet leaves the other nodes within 20 s, while the live nodes keep
//!   renewing theirs.
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{simultaneous, subnet_env::Ipv4Subnet, traffic, Cluster, Wiring};

#[test]
fn embedded_three_nodes_and_flannel_node() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(3).embedded_store().build()?;
    ensure!(c.etcd().is_err() && c.store.pid().is_none(), "an embedded-store cluster must not run etcd");
    for w in &c.weft {
        ensure!(w.log_count("embedded lease store") >= 1, "{}: weftd did not log that it uses the embedded store:\n{}", w.ns.name(), w.log_tail(20));
    }
    c.wait_converged()?;
    let subnets = simultaneous::check_leases(&c, "after start")?;
    eprintln!("embedded store: 3 leases {subnets:?}, converged");
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let p3a = c.add_pod(3, Wiring::Bridge)?;
    let p3b = c.add_pod(3, Wiring::VethRoute)?;
    let pods = [p1, p2, p3a, p3b];
    c.ping_across_nodes(&pods, 3)?;
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3b].ns, c.pods[p3b].ip(), 4 << 20).context("tcp node1 bridge pod -> node3 veth pod")?;
    eprintln!("embedded store: tcp n1->n3 {} bytes intact in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    let t = traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p3a].ns, c.pods[p3a].ip(), 4 << 20).context("tcp node2 veth pod -> node3 bridge pod")?;
    eprintln!("embedded store: tcp n2->n3 {} bytes intact in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());

    // A flannel-programmed node: its lease is written into the store file by
    // the harness (flock, revision, put event); the weft nodes' watches must
    // pick it up.
    let f = c.add_flannel_node()?;
    let fsub = c.node_env(f)?.v4().addr;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    c.program_flannel_nodes()?;
    let start = Instant::now();
    let took = c.wait_peer(&[1, 2, 3], fsub, true, start, Duration::from_secs(10)).context("weft nodes learning a lease put into the store file")?;
    eprintln!("embedded store: flannel node's lease programmed on all weft nodes {took:?} after the put");
    for &p in &[p1, p2] {
        traffic::ping_ok(&c.pods[pf].ns, c.pods[p].ip(), 3).with_context(|| format!("flannel pod -> {}", c.pods[p].ns.name()))?;
        traffic::ping_ok(&c.pods[p].ns, c.pods[pf].ip(), 3).with_context(|| format!("{} -> flannel pod", c.pods[p].ns.name()))?;
    }
    c.pass();
    Ok(())
}

#[test]
fn embedded_lease_deleted_from_store_file() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(3).embedded_store().build()?;
    c.wait_converged()?;
    let gone = c.node_env(3)?;
    c.wait_peer(&[1, 2], gone.v4().addr, true, Instant::now(), Duration::from_secs(10)).context("before the deletion")?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p3 = c.add_pod(3, Wiring::Bridge)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p3].ip(), 2)?;

    c.weft_node_mut(3)?.kill();
    let rev_before = c.embedded()?.read_db()?["revision"].as_i64().unwrap_or(0);
    ensure!(c.delete_lease(3)?, "deleting {} from the store file: it was not there; store.json: {}", gone.lease_name(), c.embedded()?.raw());
    let start = Instant::now();
    let took = c
        .wait_peer(&[1, 2], gone.v4().addr, false, start, Duration::from_secs(10))
        .with_context(|| format!("after deleting {} from the store file (revision {rev_before} -> {rev_before}+1)", gone.lease_name()))?;
    eprintln!("embedded store: peers forgot {} {took:?} after its lease was deleted from the store file", gone.cidr());
    ensure!(c.lease(3)?.is_none(), "{} is back in the store: {}", gone.lease_name(), c.embedded()?.raw());
    traffic::ping_fails(&c.pods[p1].ns, c.pods[p3].ip(), 2).context("pod on node 3 after its lease is gone")?;
    // The survivors still reach each other.
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 2).context("node 1 -> node 2 after the deletion")?;
    c.pass();
    Ok(())
}

/// 3 rounds (fresh cluster each); rounds 2 and 3 offer exactly 3 subnets, so
/// the nodes must collide and choose again.
#[test]
fn embedded_simultaneous_start() -> Result<()> {
    weft_tests::require_root()?;
    simultaneous::three_rounds(3, true)
}

#[test]
fn embedded_lease_of_dead_node_expires() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(3).embedded_store().weftd_args(&["--subnet-lease-ttl", "10"]).build()?;
    c.wait_converged()?;
    let gone = c.node_env(3)?;
    c.wait_peer(&[1, 2], gone.v4().addr, true, Instant::now(), Duration::from_secs(10)).context("before the kill")?;
    let entry = c.embedded()?.entry(&gone.lease_name())?.context("node 3's entry")?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let left = entry["expires_ms"].as_u64().unwrap_or(0).saturating_sub(now_ms);
    ensure!(left <= 10_000, "node 3's lease expires in {left} ms with --subnet-lease-ttl 10: {entry}");
    let survivors: Vec<(String, i64)> = [1, 2]
        .iter()
        .map(|&n| -> Result<(String, i64)> {
            let name = c.node_env(n)?.lease_name();
            let e = c.embedded()?.entry(&name)?.with_context(|| format!("node {n}'s entry"))?;
            Ok((name, e["mod_revision"].as_i64().unwrap_or(0)))
        })
        .collect::<Result<_>>()?;

    c.weft_node_mut(3)?.kill();
    let start = Instant::now();
    let took = c.wait_peer(&[1, 2], gone.v4().addr, false, start, Duration::from_secs(20)).with_context(|| {
        format!("{} after node 3's weftd was SIGKILLed (TTL 10 s); store.json: {}", gone.cidr(), c.embedded().map(|e| e.raw()).unwrap_or_default())
    })?;
    eprintln!("embedded store: {} expired and left the peers {took:?} after its weftd was killed", gone.cidr());
    ensure!(c.embedded()?.entry(&gone.lease_name())?.is_none(), "the expired entry is still in store.json: {}", c.embedded()?.raw());
    // The live nodes renew (every 5 s with TTL 10): their leases outlive the
    // dead one's and carry newer revisions.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(start.elapsed()));
    for (name, rev) in &survivors {
        let e = c.embedded()?.entry(name)?;
        let new_rev = e.as_ref().and_then(|e| e["mod_revision"].as_i64()).unwrap_or(0);
        ensure!(c.store.get(name)?.is_some() && new_rev > *rev, "live lease {name} not renewed (mod_revision {rev} -> {new_rev}): {e:?}");
    }
    for n in [1, 2] {
        if let Some(why) = c.weft_node_mut(n)?.exit_status() {
            bail!("{why}");
        }
    }
    c.wait_peer(&[1], c.node_env(2)?.v4().addr, true, Instant::now(), Duration::from_secs(5)).context("live peers stay programmed")?;
    c.wait_peer(&[2], c.node_env(1)?.v4().addr, true, Instant::now(), Duration::from_secs(5)).context("live peers stay programmed")?;
    c.pass();
    Ok(())
}
