//! weftd's control plane under etcd faults, against a real etcd and real
//! weftd processes:
//! - etcd slowed down (frozen 2 s of every 3 for 12 s) while leases change,
//!   then compacted and restarted: a 250/s ping loses nothing, every change
//!   reaches both nodes, and neither weftd restarts;
//! - etcd crashes for 30 s (60 s in the soak): the dataplane stays, weftd stays up, and after
//!   etcd returns the watch resumes (a new lease is programmed) and the
//!   leases are renewed, without restarting weftd;
//! - compaction: events written after a compaction still arrive; a weftd that
//!   was dead across writes + deletes + compaction relists on restart and ends
//!   with exactly the current leases (stale routes and VTEP entries removed);
//!   a weftd cut off from etcd while it is compacted past its watch's
//!   revision takes the compaction path (relist) and ends the same way;
//! - 4 weftd started at the same instant (3 rounds, one of them with exactly 4
//!   free subnets): 4 distinct leases, subnet.env matches, all converge;
//! - 1,000 leases written at once (8 transactions), then deleted in one
//!   request: all programmed, then all removed, each within 30 s.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{
    bpf, cmd,
    flannel_node::random_mac,
    report, simultaneous,
    subnet_env::Ipv4Subnet,
    traffic::{self, PingFlood},
    Cluster, Wiring,
};

/// flanneld's vxlan lease value.
fn lease_value(public_ip: Ipv4Addr, mac: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
}

fn vtep_count(dump: &serde_json::Value) -> usize {
    dump.as_array().map(|a| a.len()).unwrap_or(0)
}

/// Waits (10 s) until both nodes' weft_vteps entry for `subnet` carries `ip` and `mac`.
fn wait_vtep_value(c: &Cluster, subnet: Ipv4Addr, ip: Ipv4Addr, mac: &str) -> Result<()> {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(mac.split(':')) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("MAC {mac}"))?;
    }
    for w in &c.weft {
        cmd::poll(&format!("{}: weft_vteps[{subnet}/24] = {ip} {mac}", w.ns.name()), Duration::from_secs(10), Duration::from_millis(100), || {
            let dump = w.vteps().map_err(|e| format!("{e:#}"))?;
            match bpf::vtep_of(&dump, subnet) {
                Some(v) if v == (ip, m) => Ok(Some(())),
                got => Err(format!("entry is {got:?}; dump {dump}")),
            }
        })?;
    }
    Ok(())
}

/// A /24 in 10.244.0.0/16 from `.250` downward that no lease holds.
fn free_subnet(c: &Cluster, skip: &[Ipv4Addr]) -> Result<Ipv4Addr> {
    let taken = c.leased_subnets()?;
    (200u8..=250).rev().map(|x| Ipv4Addr::new(10, 244, x, 0)).find(|s| !taken.contains(s) && !skip.contains(s)).context("no free /24 in 10.244.200-250")
}

fn lease_key(c: &Cluster, subnet: Ipv4Addr) -> String {
    format!("{}/subnets/{subnet}-24", c.etcd_prefix)
}

/// etcd is SIGKILLed for 30 s (60 s in the soak) and started again with the same data dir.
#[test]
fn etcd_outage_keeps_dataplane() -> Result<()> {
    weft_tests::require_root()?;
    let length = report::secs(30, 60);
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&["--subnet-lease-ttl", "60"]).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 2).context("before the outage")?;
    let keys = [c.lease_key(1)?, c.lease_key(2)?];
    let lease_ids_before = [c.etcd()?.lease_of(&keys[0])?, c.etcd()?.lease_of(&keys[1])?];
    ensure!(lease_ids_before.iter().all(|l| l.is_some()), "leases without an etcd lease before the outage: {keys:?} {lease_ids_before:?}");
    let mut before = Vec::new();
    for w in &c.weft {
        before.push((w.route_set()?, w.vteps()?));
    }
    let unchanged = |c: &mut Cluster, when: &str| -> Result<()> {
        for (i, w) in c.weft.iter_mut().enumerate() {
            if let Some(why) = w.exit_status() {
                bail!("{when}: {why}");
            }
            let routes = w.route_set()?;
            let dump = w.vteps()?;
            ensure!(routes == before[i].0, "{when}: routes on weft.1 in {} changed: {:?} -> {routes:?}", w.ns.name(), before[i].0);
            ensure!(dump == before[i].1, "{when}: weft_vteps in {} changed: {} -> {dump}", w.ns.name(), before[i].1);
        }
        Ok(())
    };

    c.etcd_mut()?.kill();
    let outage = Instant::now();
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("right after etcd died")?;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip(), 3).context("right after etcd died (reverse)")?;
    unchanged(&mut c, "right after etcd died")?;
    std::thread::sleep(Duration::from_secs(length / 2).saturating_sub(outage.elapsed()));
    unchanged(&mut c, "half-way through the outage")?;
    std::thread::sleep(Duration::from_secs(length - 3).saturating_sub(outage.elapsed()));
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("at the end of the outage")?;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip(), 3).context("at the end of the outage (reverse)")?;
    unchanged(&mut c, "at the end of the outage")?;
    std::thread::sleep(Duration::from_secs(length).saturating_sub(outage.elapsed()));
    for w in &c.weft {
        eprintln!(
            "{}: during the outage weftd logged {} broken-watch and {} failed-renewal lines",
            w.ns.name(),
            w.log_count("lease watch broken"),
            w.log_count("renewing lease")
        );
    }

    c.etcd_mut()?.restart().context("restarting etcd with the same data dir")?;
    let back = Instant::now();
    eprintln!("etcd down for {:?}", outage.elapsed());
    for (i, key) in keys.iter().enumerate() {
        let ip = c.weft[i].ip;
        let v = c.etcd()?.get(key)?;
        ensure!(v.as_deref().is_some_and(|v| v.contains(&format!("\"{ip}\""))), "after the outage lease {key} is gone or changed: {v:?}");
    }
    // A lease written after the restart must reach both weftd: their watches
    // resumed by themselves.
    let extra = free_subnet(&c, &[])?;
    c.etcd()?.put(&lease_key(&c, extra), &lease_value("192.168.77.250".parse()?, &random_mac()))?;
    let took = c.wait_peer(&[1, 2], extra, true, Instant::now(), Duration::from_secs(15)).context("a lease written after etcd came back")?;
    eprintln!("lease written after etcd's restart programmed on both nodes {took:?} after the put ({:?} after the restart)", back.elapsed());
    report::figure("etcd_outage", &format!("etcd killed for {length} s: pings lost during the outage"), 0.0, "packets");
    report::figure("etcd_outage", "after etcd returned: a new lease programmed on both nodes", back.elapsed().as_secs_f64(), "s");
    // Renewal recovers too: each key ends up under a new etcd lease (weftd
    // renews every 30 s with TTL 60, and retries a failed renewal after 6 s).
    let etcd = c.etcd()?;
    for (i, key) in keys.iter().enumerate() {
        let old = lease_ids_before[i];
        let id = cmd::poll(
            &format!("{key} to be renewed after the outage"),
            Duration::from_secs(20).saturating_sub(back.elapsed()),
            Duration::from_millis(250),
            || match etcd.lease_of(key) {
                Ok(Some(id)) if Some(id) != old => Ok(Some(id)),
                Ok(id) => Err(format!("still under etcd lease {id:?} (before the outage: {old:?})")),
                Err(e) => Err(format!("{e:#}")),
            },
        )
        .with_context(|| format!("weftd log:\n{}", c.weft[i].log_tail(20)))?;
        let ttl = c.etcd()?.ctl(&["lease", "timetolive", &format!("{id:x}")])?;
        eprintln!("{key} renewed after the outage: {ttl}", ttl = ttl.trim());
    }
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 2).context("after the outage")?;
    for w in c.weft.iter_mut() {
        if let Some(why) = w.exit_status() {
            bail!("after the outage: {why}");
        }
    }
    eprintln!("etcd_outage_keeps_dataplane: {:?} after the outage began", outage.elapsed());
    c.pass();
    Ok(())
}

/// Many revisions on an unrelated key, compaction to the current revision,
/// then a new lease: both nodes program it, and forget it when it is deleted.
#[test]
fn watch_survives_compaction() -> Result<()> {
    weft_tests::require_root()?;
    let c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    for i in 0..50 {
        c.etcd()?.put("/unrelated/x", &i.to_string())?;
    }
    let rev = c.etcd()?.revision()?;
    c.etcd()?.compact(rev)?;
    let subnet = free_subnet(&c, &[])?;
    let key = lease_key(&c, subnet);
    let mac = random_mac();
    c.etcd()?.put(&key, &lease_value("192.168.77.250".parse()?, &mac))?;
    let took = c.wait_peer(&[1, 2], subnet, true, Instant::now(), Duration::from_secs(10)).context("a lease written after compaction")?;
    eprintln!("compacted at revision {rev}; lease {subnet}/24 programmed on both nodes in {took:?}");
    wait_vtep_value(&c, subnet, "192.168.77.250".parse()?, &mac)?;
    // An update (new PublicIP and VtepMAC, as after a peer's re-install) arrives too.
    let mac2 = "02:42:00:00:00:fa";
    c.etcd()?.put(&key, &lease_value("192.168.77.249".parse()?, mac2))?;
    wait_vtep_value(&c, subnet, "192.168.77.249".parse()?, mac2).context("a lease updated after compaction")?;
    ensure!(c.etcd()?.del(&key)? == 1, "deleting {key}: etcd deleted nothing");
    let took = c.wait_peer(&[1, 2], subnet, false, Instant::now(), Duration::from_secs(10)).context("the lease deleted after compaction")?;
    eprintln!("... and forgotten {took:?} after its deletion");
    for w in &c.weft {
        eprintln!("{}: watch relisted after compaction {} times", w.ns.name(), w.log_count("fell behind etcd's compaction"));
    }
    c.pass();
    Ok(())
}

/// Node 2's weftd is SIGKILLed; meanwhile a lease it had programmed is
/// deleted, others are written (and one written and deleted), and etcd is
/// compacted. Restarted, node 2 must end with exactly the current leases.
#[test]
fn restart_after_compaction_relists() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let x = free_subnet(&c, &[])?;
    let y = free_subnet(&c, &[x])?;
    let z = free_subnet(&c, &[x, y])?;
    c.etcd()?.put(&lease_key(&c, x), &lease_value("192.168.77.251".parse()?, &random_mac()))?;
    c.wait_peer(&[1, 2], x, true, Instant::now(), Duration::from_secs(10)).context("lease X before the kill")?;

    c.weft_node_mut(2)?.kill();
    ensure!(c.etcd()?.del(&lease_key(&c, x))? == 1, "deleting X");
    c.etcd()?.put(&lease_key(&c, y), &lease_value("192.168.77.252".parse()?, &random_mac()))?;
    c.etcd()?.put(&lease_key(&c, z), &lease_value("192.168.77.253".parse()?, &random_mac()))?;
    ensure!(c.etcd()?.del(&lease_key(&c, z))? == 1, "deleting Z");
    for i in 0..20 {
        c.etcd()?.put("/unrelated/x", &i.to_string())?;
    }
    let rev = c.etcd()?.revision()?;
    c.etcd()?.compact(rev)?;

    c.start_weftd(2)?;
    c.wait_node_ready(2)?;
    let start = Instant::now();
    wait_exact_peers(&c, y, Duration::from_secs(15))?;
    eprintln!("after the restart both nodes hold exactly {{peer, {y}/24}} ({:?} after node 2 was ready)", start.elapsed());
    c.pass();
    Ok(())
}

/// Cuts a node off etcd (inside the node's namespace only): a `prohibit`
/// route to etcd's address makes reconnects fail at once, and `ss -K`
/// destroys the open client sockets. Dropping it removes the route.
struct EtcdPartition<'a> {
    ns: &'a weft_tests::netns::Netns,
    dst: String,
}

impl<'a> EtcdPartition<'a> {
    fn new(ns: &'a weft_tests::netns::Netns) -> Result<EtcdPartition<'a>> {
        let dst = format!("{}/32", weft_tests::cluster::SWITCH_IP);
        ns.ip(&["route", "add", "prohibit", &dst])?;
        let p = EtcdPartition { ns, dst };
        ns.exec("ss", &["-t", "-K", "dst", weft_tests::cluster::SWITCH_IP, "and", "dport", "=", ":2379"])?;
        Ok(p)
    }
}

impl Drop for EtcdPartition<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.ip(&["route", "del", "prohibit", &self.dst]) {
            eprintln!("removing the partition route in {}: {e:#}", self.ns.name());
        }
    }
}

/// Node 2's weftd stays up but loses etcd (socket destroyed, reconnects
/// refused) while a lease it had programmed is deleted, others are written
/// (one written and deleted) and etcd is compacted past the revision its
/// watch will resume from. When etcd is reachable again its resumed watch
/// gets a compaction response: it must relist and end with exactly the
/// current leases.
#[test]
fn watch_behind_compaction_relists() -> Result<()> {
    weft_tests::require_root()?;
    let c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let x = free_subnet(&c, &[])?;
    let y = free_subnet(&c, &[x])?;
    let z = free_subnet(&c, &[x, y])?;
    c.etcd()?.put(&lease_key(&c, x), &lease_value("192.168.77.251".parse()?, &random_mac()))?;
    c.wait_peer(&[1, 2], x, true, Instant::now(), Duration::from_secs(10)).context("lease X before the partition")?;
    let w2 = c.weft_node(2)?;
    let broken_before = w2.log_count("lease watch broken");
    {
        let _cut = EtcdPartition::new(&w2.ns)?;
        cmd::poll("node 2's weftd to notice its broken watch", Duration::from_secs(10), Duration::from_millis(100), || {
            if w2.log_count("lease watch broken") > broken_before {
                Ok(Some(()))
            } else {
                Err(w2.log_tail(5))
            }
        })?;
        ensure!(c.etcd()?.del(&lease_key(&c, x))? == 1, "deleting X");
        c.etcd()?.put(&lease_key(&c, y), &lease_value("192.168.77.252".parse()?, &random_mac()))?;
        c.etcd()?.put(&lease_key(&c, z), &lease_value("192.168.77.253".parse()?, &random_mac()))?;
        ensure!(c.etcd()?.del(&lease_key(&c, z))? == 1, "deleting Z");
        for i in 0..10 {
            c.etcd()?.put("/unrelated/x", &i.to_string())?;
        }
        let rev = c.etcd()?.revision()?;
        c.etcd()?.compact(rev)?;
        // Node 2 still has the deleted X and lacks Y: it cannot know yet.
        let (r, v, detail) = w2.peer_state(x)?;
        ensure!(r && v, "node 2 dropped X while cut off from etcd: {detail}");
    }
    let start = Instant::now();
    wait_exact_peers(&c, y, Duration::from_secs(20))?;
    let relists = w2.log_count("fell behind etcd's compaction");
    ensure!(relists >= 1, "node 2 converged but never took the compaction path; log:\n{}", w2.log_tail(20));
    eprintln!("node 2 relisted after compaction ({relists}x) and holds exactly {{peer, {y}/24}} {:?} after the partition ended", start.elapsed());
    c.pass();
    Ok(())
}

/// 4 nodes start at once, 3 rounds (fresh cluster each); rounds 2 and 3 offer
/// exactly 4 subnets, so the nodes must collide and choose again.
#[test]
fn simultaneous_start() -> Result<()> {
    weft_tests::require_root()?;
    simultaneous::three_rounds(4, false)
}

/// 1,000 flannel vxlan leases in 8 transactions, then deleted in one request.
#[test]
fn thousand_leases_at_once() -> Result<()> {
    weft_tests::require_root()?;
    const N: usize = 1000;
    // 10.0.0.0/12: the node takes one of the first 100 free /24s (10.0.1.0
    // upward); the 1,000 leases are 10.4.0.0/24 .. 10.7.249.0/24.
    let c = Cluster::builder().weft_nodes(1).network("10.0.0.0/12").build()?;
    let w = c.weft_node(1)?;
    let base_routes = w.route_set()?;
    let base_vteps = vtep_count(&w.vteps()?);
    ensure!(base_routes.is_empty() && base_vteps == 0, "a lone node already has routes {base_routes:?} / {base_vteps} VTEP entries");
    let subnets: Vec<Ipv4Addr> = (0..N).map(|i| Ipv4Addr::new(10, 4 + (i / 250) as u8, (i % 250) as u8, 0)).collect();
    let kvs: Vec<(String, String)> = subnets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ip = Ipv4Addr::new(192, 168, 78, 1 + (i % 250) as u8);
            let mac = weft_common::mac::format_mac(&[2, 0, 0, 0, (i >> 8) as u8, (i & 0xff) as u8]);
            (format!("{}/subnets/{s}-24", c.etcd_prefix), lease_value(ip, &mac))
        })
        .collect();
    let want: BTreeSet<String> = subnets.iter().map(|s| format!("{s}/24")).collect();

    let start = Instant::now();
    c.etcd()?.put_many(&kvs, 125)?;
    let written = start.elapsed();
    for (k, v) in [&kvs[0], &kvs[N - 1]] {
        let got = c.etcd()?.get(k)?;
        ensure!(got.as_deref() == Some(v.as_str()), "{k}: stored {got:?}, wrote {v}");
    }
    cmd::poll(&format!("{N} routes and VTEP entries"), Duration::from_secs(30), Duration::from_millis(250), || {
        let routes = w.route_set().map_err(|e| format!("{e:#}"))?;
        if routes != want {
            return Err(format!(
                "{} of {N} routes on weft.1 (+{} others); weftd log:\n{}",
                routes.intersection(&want).count(),
                routes.difference(&want).count(),
                w.log_tail(5)
            ));
        }
        let n = vtep_count(&w.vteps().map_err(|e| format!("{e:#}"))?);
        if n != N {
            return Err(format!("{n} of {N} weft_vteps entries"));
        }
        Ok(Some(()))
    })?;
    let programmed = start.elapsed();
    let dump = w.vteps()?;
    let missing: Vec<&Ipv4Addr> = subnets.iter().filter(|s| !bpf::vteps_contains(&dump, **s)).take(5).collect();
    ensure!(missing.is_empty(), "weft_vteps has {N} entries but lacks e.g. {missing:?}");
    // Every entry carries its own lease's PublicIP and VtepMAC.
    for (i, s) in subnets.iter().enumerate() {
        let want = (Ipv4Addr::new(192, 168, 78, 1 + (i % 250) as u8), [2, 0, 0, 0, (i >> 8) as u8, (i & 0xff) as u8]);
        let got = bpf::vtep_of(&dump, *s);
        ensure!(got == Some(want), "weft_vteps entry for {s}/24 is {got:?}, want {want:?}");
    }
    eprintln!("{N} leases: written in {written:?}, all routes + VTEP entries after {programmed:?}");

    let start = Instant::now();
    let p = format!("{}/subnets/", c.etcd_prefix);
    let deleted = c.etcd()?.del_range(&format!("{p}10.4."), &format!("{p}10.8"))?;
    ensure!(deleted as usize == N, "deleting the range removed {deleted} keys, want {N}");
    cmd::poll(&format!("all {N} routes and VTEP entries to go"), Duration::from_secs(30), Duration::from_millis(250), || {
        let routes = w.route_set().map_err(|e| format!("{e:#}"))?;
        let n = vtep_count(&w.vteps().map_err(|e| format!("{e:#}"))?);
        if routes.is_empty() && n == 0 {
            Ok(Some(()))
        } else {
            Err(format!("{} routes, {n} weft_vteps entries left; weftd log:\n{}", routes.len(), w.log_tail(5)))
        }
    })?;
    eprintln!("{N} leases deleted in one request: all gone after {:?}", start.elapsed());
    let mut c = c;
    ensure!(c.weft_node_mut(1)?.exit_status().is_none(), "weftd exited");
    c.pass();
    Ok(())
}

/// Waits until nodes 1 and 2 each hold exactly {the other node's subnet,
/// `extra`}: the same set of routes on weft.1 and of weft_vteps entries.
fn wait_exact_peers(c: &Cluster, extra: Ipv4Addr, timeout: Duration) -> Result<()> {
    let own: Vec<Ipv4Addr> = [1, 2].iter().map(|n| c.node_env(*n).map(|e| e.v4().addr)).collect::<Result<_>>()?;
    for (i, n) in [1u32, 2].into_iter().enumerate() {
        c.wait_exact_vxlan_peers(n, &[own[1 - i], extra], timeout)
            .with_context(|| format!("weftd log:\n{}", c.weft_node(n).map(|w| w.log_tail(8)).unwrap_or_default()))?;
    }
    Ok(())
}

/// etcd slowed down: frozen (SIGSTOP) 2 s of every 3 for 12 s, a new lease
/// written in each thawed second; then compacted and killed, restarted 3 s
/// later, and a lease deleted and another written. A 250/s pod-to-pod ping
/// runs throughout and loses nothing; both weftd (the same processes) end
/// with exactly the current leases.
#[test]
fn etcd_slow_then_restarted_after_compaction() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 2)?;
    let pids: Vec<Option<u32>> = c.weft.iter().map(|w| w.pid()).collect();
    // 6,000 echo requests at 250/s: 24 s, bounded by count and time.
    let flood = PingFlood::start(&c.pods[p1].ns, c.pods[p2].ip(), 6000, 60)?;
    let etcd_pid = c.etcd()?.pid().context("etcd not running")? as i32;
    let mut written = Vec::new();
    let t0 = Instant::now();
    for round in 0..4 {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(etcd_pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: as above.
        unsafe { libc::kill(etcd_pid, libc::SIGCONT) };
        let s = free_subnet(&c, &written)?;
        c.etcd()?.put(&lease_key(&c, s), &lease_value(Ipv4Addr::new(192, 168, 77, 240 + round), &random_mac()))?;
        written.push(s);
        std::thread::sleep(Duration::from_secs(1));
    }
    let own: Vec<Ipv4Addr> = [1, 2].iter().map(|&n| c.node_env(n).map(|e| e.v4().addr)).collect::<Result<_>>()?;
    let slow = t0.elapsed();
    let mut last = Duration::ZERO;
    for n in [1u32, 2] {
        let mut want = written.clone();
        want.push(own[if n == 1 { 1 } else { 0 }]);
        c.wait_exact_vxlan_peers(n, &want, Duration::from_secs(15)).with_context(|| format!("node {n} after the slow etcd"))?;
        last = t0.elapsed() - slow;
    }
    report::figure(
        "etcd_slow",
        &format!("4 leases written while etcd froze 2 s of every 3 ({:.0} s): all on both nodes, this long after", slow.as_secs_f64()),
        last.as_secs_f64(),
        "s",
    );
    // Compaction, then a crash and a restart.
    c.etcd()?.compact(c.etcd()?.revision()?)?;
    c.etcd_mut()?.kill();
    std::thread::sleep(Duration::from_secs(3));
    c.etcd_mut()?.restart().context("restarting etcd after the compaction")?;
    let back = Instant::now();
    let gone = written.remove(0);
    ensure!(c.etcd()?.del(&lease_key(&c, gone))? == 1, "deleting the lease of {gone}");
    let s = free_subnet(&c, &[gone])?;
    c.etcd()?.put(&lease_key(&c, s), &lease_value(Ipv4Addr::new(192, 168, 77, 239), &random_mac()))?;
    written.push(s);
    for n in [1u32, 2] {
        let mut want = written.clone();
        want.push(own[if n == 1 { 1 } else { 0 }]);
        c.wait_exact_vxlan_peers(n, &want, Duration::from_secs(15)).with_context(|| format!("node {n} after etcd's restart"))?;
    }
    report::figure("etcd_slow", "after a compaction and an etcd restart: changes programmed on both nodes", back.elapsed().as_secs_f64(), "s");
    for (w, pid) in c.weft.iter_mut().zip(&pids) {
        ensure!(w.running() && w.pid() == *pid, "{}: weftd restarted or died", w.ns.name());
    }
    flood.all_answered("pod traffic while etcd was slow or restarting")?;
    report::figure("etcd_slow", "echo requests lost (of 6,000 at 250/s)", 0.0, "packets");
    c.pass();
    Ok(())
}
