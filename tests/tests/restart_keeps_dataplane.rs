//! weftd killed with SIGKILL: pinned maps and links keep pods talking while it
//! is gone; restarted, it keeps its subnet (lease reuse by PublicIP), adopts
//! the pinned state and converges again.
use anyhow::{ensure, Context, Result};
use std::time::Duration;

use weft_tests::{cmd, traffic, Cluster, Wiring};

#[test]
fn restart_keeps_dataplane() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip, 3).context("before the restart")?;
    let subnet_before = c.node_env(2)?.cidr();

    c.weft_node_mut(2)?.kill();
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip, 5).context("while weftd on node 2 is dead")?;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip, 5).context("from node 2 while its weftd is dead")?;

    c.start_weftd(2)?;
    // subnet.env and the lease survive the crash, so readiness alone proves
    // nothing here: wait for the new weftd to say it adopted the pinned links.
    let node = c.weft_node(2)?;
    cmd::poll("restarted weftd to adopt its pinned links", Duration::from_secs(20), Duration::from_millis(100), || {
        let log = node.log_tail(60);
        let adopted = log.contains("replacing weft_encap on weft.1 through its pinned link")
            && log.contains("replacing weft_decap on eth0 through its pinned link")
            && log.matches("datapath attached").count() >= 2;
        if adopted { Ok(Some(())) } else { Err(format!("log so far:\n{log}")) }
    })?;
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    // Pinned map entries survived: the new weftd's reconcile had nothing to add.
    let log = c.weft_node(2)?.log_tail(60);
    let after = log.rsplit("datapath attached").next().unwrap_or_default();
    ensure!(!after.contains("added/updated"), "the restarted weftd had to reprogram the map (pinned entries lost?):\n{after}");
    ensure!(c.node_env(2)?.cidr() == subnet_before, "node 2 changed subnet across a restart: {subnet_before} -> {}", c.node_env(2)?.cidr());
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip, 3).context("after the restart")?;
    let t = traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p1].ns, c.pods[p1].ip, 2 << 20).context("tcp after the restart")?;
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
    let links_dir = c.weft_node(2)?.vteps_pin().parent().expect("layout dir").join("links");
    let pins_before: Vec<String> = std::fs::read_dir(&links_dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    c.weft_node_mut(2)?.kill();
    c.node_ns(2)?.ip(&["link", "del", "weft.1"])?;
    c.start_weftd(2)?;
    let node = c.weft_node(2)?;
    cmd::poll("the restarted weftd to release the dead link's pin", Duration::from_secs(15), Duration::from_millis(100), || {
        let log = node.log_tail(40);
        if log.contains("released stale link pin") { Ok(Some(())) } else { Err(log) }
    })?;
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    let pins_after: Vec<String> = std::fs::read_dir(&links_dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    ensure!(pins_after.len() == pins_before.len(), "link pins before {pins_before:?}, after {pins_after:?}");
    ensure!(pins_after.iter().filter(|p| p.starts_with("weft_encap-")).count() == 1, "one encap pin expected: {pins_after:?}");
    cmd::poll("pods to reach each other over the new device", Duration::from_secs(15), Duration::from_millis(200), || {
        match traffic::ping(&c.pods[p1].ns, c.pods[p2].ip, 2) {
            Ok(st) if st.all_received() => Ok(Some(())),
            Ok(st) => Err(st.output),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    c.pass();
    Ok(())
}
