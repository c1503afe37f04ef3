//! weft's programs stand aside once weftd has been gone past its deadline
//! (`--datapath-grace-secs`): a weftd killed with SIGKILL leaves them
//! pinned, and after the grace every packet they see goes to the kernel
//! untouched (counted as `stood_aside`). The kernel's own vxlan device then
//! carries the traffic both ways with what weftd programmed on it beside
//! its maps (per peer a permanent neighbour, an FDB entry and the route):
//! pods on the node keep talking, also a pod weft-cni registered (whose
//! traffic weft's programs otherwise take past the host). Restarted, weftd
//! moves the deadline on and its programs carry the traffic again. On
//! host-gw the fast path's programs stand aside onto the routes.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, traffic, Cluster, Wiring};

/// The grace the nodes' weftd runs with.
const GRACE: Duration = Duration::from_secs(2);

#[test]
fn killed_weftd_s_programs_stand_aside_onto_the_kernel_path() -> Result<()> {
    stand_aside(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
}

/// host-gw's fast path the same way: past the grace its programs leave
/// every packet to the routes, which alone carry the peers.
#[test]
fn host_gw_fast_path_stands_aside_onto_the_routes() -> Result<()> {
    stand_aside(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
}

fn stand_aside(config: &str) -> Result<()> {
    weft_tests::require_root()?;
    let grace = GRACE.as_secs().to_string();
    let mut c = Cluster::builder().config_json(config).weft_nodes(2).weftd_args(&["--datapath-grace-secs", &grace]).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Cni)?;
    let ping = |c: &Cluster, from: usize, to: usize, n: u32| traffic::ping_ok(&c.pods[from].ns, c.pods[to].ip(), n).map(|_| ());
    ping(&c, p1, p2, 3).context("before weftd on node 2 is killed")?;
    let stats = c.weft_node(2)?.stats_pin();
    let aside = || bpf::stat_packets(&stats, stat::STOOD_ASIDE);
    ensure!(aside()? == 0, "node 2's programs stood aside while weftd ran");

    // Every link pinned, weft_from_pod on the registered pod's veth too.
    let node2 = c.weft_node(2)?;
    let links = cmd::poll("weft_from_pod on node 2's registered pod", Duration::from_secs(10), Duration::from_millis(100), || {
        let l = node2.pinned_links().map_err(|e| format!("{e:#}"))?;
        if l.iter().any(|l| l.pin.starts_with("weft_from_pod-")) {
            Ok(Some(l))
        } else {
            Err(format!("{l:?}"))
        }
    })?;
    c.weft_node_mut(2)?.kill();
    std::thread::sleep(GRACE + Duration::from_millis(500));
    let before = aside()?;
    ping(&c, p1, p2, 5).context("to node 2's pod, its programs standing aside")?;
    ping(&c, p2, p1, 5).context("from node 2's pod, its programs standing aside")?;
    let after = aside()?;
    // Each ping both ways crosses node 2's programs twice (in and out).
    ensure!(after >= before + 20, "node 2's programs did not stand aside {GRACE:?} after weftd was killed: stood_aside {before} -> {after}");

    c.start_weftd(2)?;
    // Its maps were pinned: convergence shows nothing; the programs
    // replaced behind the pinned links do (the deadline moved just before).
    c.weft_node(2)?.wait_links_replaced(&links, Duration::from_secs(20))?;
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    let resumed = aside()?;
    ping(&c, p1, p2, 5).context("after weftd on node 2 restarted")?;
    ensure!(aside()? == resumed, "node 2's programs still stand aside after weftd restarted: stood_aside {resumed} -> {}", aside()?);
    c.pass();
    Ok(())
}
