//! weftd killed with SIGKILL: pinned maps and links keep pods talking while it
//! is gone; restarted, it keeps its subnet (lease reuse by PublicIP), adopts
//! the pinned state and converges again.
use anyhow::{ensure, Context, Result};
use std::time::Duration;

use weft_tests::{cmd, metrics, subnet_env::Ipv4Subnet, traffic, Cluster, Wiring};

#[test]
fn restart_keeps_dataplane() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&metrics::ARGS).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("before the restart")?;
    let subnet_before = c.node_env(2)?.cidr();
    let links_before = c.weft_node(2)?.pinned_links()?;
    for prog in ["weft_encap-", "weft_decap-"] {
        ensure!(links_before.iter().any(|l| l.pin.starts_with(prog)), "node 2 has no pinned {prog}* link: {links_before:?}");
    }

    c.weft_node_mut(2)?.kill();
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 5).context("while weftd on node 2 is dead")?;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip(), 5).context("from node 2 while its weftd is dead")?;

    c.start_weftd(2)?;
    // subnet.env and the lease survive the crash, so readiness alone proves
    // nothing here: wait until the new weftd has replaced the program behind
    // every pinned link: the same links (ids), new programs.
    c.weft_node(2)?.wait_links_replaced(&links_before, Duration::from_secs(20))?;
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    // Pinned map entries survived: the new weftd's reconcile had nothing to
    // add or remove (its counters start at 0 with the process).
    let ns2 = c.node_ns(2)?;
    let r = cmd::poll("the restarted weftd's first reconcile", Duration::from_secs(10), Duration::from_millis(100), || {
        let r = metrics::reconciles(ns2).map_err(|e| format!("{e:#}"))?;
        if r.count >= 1 {
            Ok(Some(r))
        } else {
            Err(format!("{r:?}"))
        }
    })?;
    ensure!(
        r.added == 0 && r.removed == 0,
        "the restarted weftd had to reprogram its dataplane (pinned entries lost?): {r:?}\n{}",
        c.weft_node(2)?.log_tail(20)
    );
    ensure!(c.node_env(2)?.cidr() == subnet_before, "node 2 changed subnet across a restart: {subnet_before} -> {}", c.node_env(2)?.cidr());
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("after the restart")?;
    let t = traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p1].ns, c.pods[p1].ip(), 2 << 20).context("tcp after the restart")?;
    eprintln!("tcp after restart: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}

/// weft.1 deleted by hand while weftd is down: the restarted weftd creates it
/// again (new ifindex, new VtepMAC, which its lease announces and the peers
/// pick up), attaches fresh links, and releases the pins of the dead ones.
#[test]
fn overlay_device_recreated() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let links_before = c.weft_node(2)?.pinned_links()?;
    let old_encap: Vec<String> = links_before.iter().filter(|l| l.pin.starts_with("weft_encap-")).map(|l| l.pin.clone()).collect();
    ensure!(old_encap.len() == 1, "one encap pin expected before: {links_before:?}");
    c.weft_node_mut(2)?.kill();
    c.node_ns(2)?.ip(&["link", "del", "weft.1"])?;
    c.start_weftd(2)?;
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    // The new weft.1 has a new ifindex: its encap link is pinned under that,
    // and the dead device's pin is released, so the pin count is unchanged.
    let node = c.weft_node(2)?;
    let new_encap = format!("weft_encap-{}", node.ns.ifindex("weft.1")?);
    let links_after =
        cmd::poll("the restarted weftd to pin the new device's link and release the dead one's", Duration::from_secs(15), Duration::from_millis(100), || {
            let now = node.pinned_links().map_err(|e| format!("{e:#}"))?;
            let encap: Vec<&str> = now.iter().filter(|l| l.pin.starts_with("weft_encap-")).map(|l| l.pin.as_str()).collect();
            if encap == [new_encap.as_str()] && now.len() == links_before.len() {
                Ok(Some(now))
            } else {
                Err(format!("want only {new_encap} (was {old_encap:?}) and {} pins; pins now {now:?}", links_before.len()))
            }
        })?;
    ensure!(new_encap != old_encap[0], "weft.1 was recreated with its old ifindex ({new_encap}): the test proves nothing");
    eprintln!("link pins before {links_before:?}\nafter {links_after:?}");
    cmd::poll("pods to reach each other over the new device", Duration::from_secs(15), Duration::from_millis(200), || {
        match traffic::ping(&c.pods[p1].ns, c.pods[p2].ip(), 2) {
            Ok(st) if st.all_received() => Ok(Some(())),
            Ok(st) => Err(st.output),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    c.pass();
    Ok(())
}
