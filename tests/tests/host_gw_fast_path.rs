//! The host-gw fast path (`weft_fwd` on the pod bridge's TC ingress) in a
//! live cluster: it attaches when the bridge appears (after weftd started),
//! its map holds the routed peers, its counters show it carried the pods'
//! traffic (ping and TCP), it hands TTL-expiring packets to the stack (which
//! answers time-exceeded), and `--no-fast-path` leaves forwarding to the
//! stack, also when given at a restart.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, traffic, Cluster, NodeRef, Wiring};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

fn wait_attached(c: &Cluster, n: NodeRef, want: bool) -> Result<()> {
    let w = c.weft_node(n)?;
    cmd::poll(&format!("node {n}: fast path attached = {want}"), Duration::from_secs(15), Duration::from_millis(100), || {
        if w.fast_path_attached() == want {
            Ok(Some(()))
        } else {
            Err(w.log_tail(5))
        }
    })
}

#[test]
fn fast_path_carries_pod_traffic() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(3).no_start().build()?;
    for n in [1, 3] {
        c.start_weftd(n)?;
    }
    c.start_weftd_with(2, &["--no-fast-path"])?;
    for n in [1, 2, 3] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    ensure!(!c.weft_node(1)?.fast_path_attached(), "node 1: weft_fwd attached before any pod bridge exists");
    // The bridge appears with the first pod; weftd attaches on the link event.
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let p3 = c.add_pod(3, Wiring::Bridge)?;
    wait_attached(&c, 1, true)?;
    wait_attached(&c, 3, true)?;
    ensure!(!c.weft_node(2)?.fast_path_attached(), "node 2 runs with --no-fast-path but weft_fwd is attached");
    let peers = bpf::map_dump(&c.weft_node(1)?.hostgw_pin())?;
    ensure!(peers.as_array().map(|a| a.len()) == Some(2), "node 1: weft_hostgw should hold the 2 peers, has {peers}");

    let (fwd0, _) = c.stat_counter(1, stat::FWD)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p3].ip(), 5)?;
    let (fwd1, _) = c.stat_counter(1, stat::FWD)?;
    ensure!(fwd1 >= fwd0 + 5, "node 1 fast path forwarded {} of 5 echo requests", fwd1 - fwd0);
    let (_, bytes0) = c.stat_counter(1, stat::FWD)?;
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3].ns, c.pods[p3].ip(), 4 << 20).context("tcp pod 1 -> pod 3")?;
    let (_, bytes1) = c.stat_counter(1, stat::FWD)?;
    ensure!(bytes1 - bytes0 >= 4 << 20, "the fast path carried {} bytes of a 4 MiB transfer", bytes1 - bytes0);
    eprintln!("fast path tcp n1->n3: {} bytes ({:.0} Mbit/s), {} bytes through weft_fwd", t.bytes, t.mbit_per_s(), bytes1 - bytes0);
    // Replies come back through node 3's fast path.
    ensure!(c.stat_counter(3, stat::FWD)?.0 >= 5, "node 3's fast path carried no replies");

    // Node 2 forwards through the stack: same reachability, no counts.
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p3].ip(), 3)?;
    traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p1].ns, c.pods[p1].ip(), 1 << 20).context("tcp pod 2 -> pod 1 without the fast path")?;
    ensure!(c.stat_counter(2, stat::FWD)?.0 == 0, "node 2 (--no-fast-path) counted fast-path packets");

    // TTL 1: the fast path declines, the stack answers time-exceeded.
    let (stack0, _) = c.stat_counter(1, stat::FWD_STACK)?;
    let out = c.pods[p1].ns.exec_output("timeout", &["5", "ping", "-n", "-c", "1", "-W", "1", "-t", "1", &c.pods[p3].ip().to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("Time to live exceeded"), "ping -t 1 across nodes: want time-exceeded from node 1, got:\n{text}");
    ensure!(c.stat_counter(1, stat::FWD_STACK)?.0 > stack0, "the TTL-1 packet was not counted as handed to the stack");

    // Restarted with --no-fast-path: the link is released, traffic keeps flowing.
    c.weft_node_mut(1)?.stop();
    c.start_weftd_with(1, &["--no-fast-path"])?;
    wait_attached(&c, 1, false)?;
    let (f0, _) = c.stat_counter(1, stat::FWD)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p3].ip(), 3)?;
    ensure!(c.stat_counter(1, stat::FWD)?.0 == f0, "weft_fwd still counts after --no-fast-path");
    c.pass();
    Ok(())
}
