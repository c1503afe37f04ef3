//! Issue 24's swap on the udp backend: flanneld -> weftd (phase 1), then
//! weftd -> flanneld (phase 2), measured as tests/tests/live_swap.rs
//! measures vxlan and host-gw (`weft_tests::swap_measure`): etcd, node 1
//! runs weftd, nodes 2 and 3 are flannel udp nodes (flanneld's udp backend
//! is the reference proxy `flannel-udp-ref` on the TUN `flannel0`), node 2
//! is swapped, its pod floods node 1's and node 3's pods at 200/s during
//! each phase, and two TCP connections are held through both phases.
//!
//! Unlike vxlan and host-gw, the swap cannot be done in place: flannel0 is
//! the TUN of flanneld's process and goes with it (its route
//! `<network> dev flannel0` too), weftd opens its own `weft0`, and the
//! reverse at the rollback. Between the old process's end and the new one's
//! TUN and route, the swapped node has no route into the overlay and
//! nobody reads port 8285. So loss is expected: it is recorded, and
//! bounded by [`MAX_LOST`] only to catch a swap that breaks for half a second or more.
//!
//! Asserted after each phase: the swapped node keeps its subnet
//! (subnet.env, its lease under the same key with the same value, no second
//! lease), its pod keeps its address (eth0, host-local's store), the
//! overlay device is the new owner's (weft0 after phase 1, flannel0 after
//! phase 2, never both), every pod reaches every pod; weftd is ready with
//! no ERROR or panic in phase 1 and exits 0 on SIGTERM in phase 2.
//! Whether the held TCP connections still move data is recorded (1 or 0)
//! and then required: the window is about 100 ms, which TCP's retransmission
//! covers (they survived every measured run; the longest round trip
//! 207-233 ms, once 1 s: retransmissions).
use anyhow::{ensure, Context, Result};
use weft_tests::{
    flannel_node::FlannelBackend,
    held_tcp::HeldConnection,
    report,
    swap_measure::{conns_alive, flanneld_back, identity, measure, open_conns, record, same_identity, scene, weftd_healthy, weftd_started, RATE},
    Cluster, NodeRef,
};

const UDP: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#;
const TEST: &str = "live_swap udp";

/// The most echo requests a flood may lose in one phase: 0.5 s at
/// [`RATE`]. Measured on a loaded 2-core machine (4 runs,
/// docs/reliability.md): 18-23 per flood flanneld -> weftd (the old
/// proxy's exit, then weftd's start until weft0 and its route exist),
/// 11-16 back (weftd's exit, then the proxy's start until flannel0 and its
/// route exist). About four times the worst leaves room for load; a swap
/// that leaves the node without its overlay for longer (a process that
/// needs its 2 s kill timeout, a route put back late) fails it.
const MAX_LOST: u32 = RATE / 2;

/// The overlay devices on node `n`: (weft0 present, flannel0 present).
fn devices(c: &Cluster, n: NodeRef) -> Result<(bool, bool)> {
    let ns = c.node_ns(n)?;
    let has = |d: &str| ns.ip(&["link", "show", "dev", d]).is_ok();
    Ok((has("weft0"), has("flannel0")))
}

/// Records whether each held connection still moves data after `phase`
/// (1 or 0, each recorded even when one failed); returns whether all do.
fn tcp_survived(conns: &[(&str, &HeldConnection)], phase: &str) -> bool {
    let mut all = true;
    for (label, h) in conns {
        let ok = conns_alive(&[(label, h)], phase).map_err(|e| eprintln!("{TEST}: {phase}: TCP {label}: {e:#}")).is_ok();
        report::figure(TEST, &format!("{phase}: TCP connection survived, {label}"), ok as u8 as f64, "");
        all &= ok;
    }
    all
}

#[test]
fn udp() -> Result<()> {
    weft_tests::require_root()?;
    let sc = scene(Cluster::builder().config_json(UDP), FlannelBackend::Udp)?;
    let (all, targets) = (sc.pods(), sc.targets());
    let (s, ps) = (sc.s, sc.ps);
    let (mut to_w, mut from_f) = open_conns(&sc)?;
    let mut c = sc.c;
    let before = identity(&c, s, ps)?;
    ensure!(devices(&c, s)? == (false, true), "before the swap: node {s} should have flannel0 and no weft0");
    let conns = [("swapped pod -> weft node's pod", &to_w), ("flannel node's pod -> swapped pod", &from_f)];

    // Phase 1: flanneld -> weftd.
    let p1 = measure(&mut c, ps, &targets, &conns, |c| c.swap_to_weftd(s, &[]))?;
    let phase = "flanneld -> weftd";
    record(TEST, phase, &p1, Some(MAX_LOST))?;
    eprintln!("{TEST}: {phase}: {:?} in {:?}", p1.outcome, p1.took);
    let log = c.weft_node(s)?.log.clone();
    weftd_started(TEST, phase, &p1.outcome, &log)?;
    let after1 = same_identity(&c, s, ps, &before, phase)?;
    ensure!(after1.lease_value == before.lease_value, "{phase}: the lease's value changed: {} -> {}", before.lease_value, after1.lease_value);
    ensure!(devices(&c, s)? == (true, false), "{phase}: node {s} should have weft0 and no flannel0 (flanneld's TUN goes with its process)");
    weftd_healthy(TEST, &c, s, phase)?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    ensure!(tcp_survived(&conns, phase), "{phase}: a held TCP connection no longer moves data");

    // Phase 2: weftd -> flanneld (a rollback).
    let p2 = measure(&mut c, ps, &targets, &conns, |c| c.swap_to_flanneld(s))?;
    let phase = "weftd -> flanneld";
    record(TEST, phase, &p2, Some(MAX_LOST))?;
    let back = p2.outcome;
    eprintln!("{TEST}: {phase}: weftd exited {:?}, flanneld {:?}, in {:?}", back.weftd_exit, back.start, p2.took);
    flanneld_back(phase, &back, &log)?;
    let after2 = same_identity(&c, s, ps, &before, phase)?;
    ensure!(after2.lease_value == before.lease_value, "{phase}: the lease's value is not as before phase 1: {} -> {}", before.lease_value, after2.lease_value);
    ensure!(devices(&c, s)? == (false, true), "{phase}: node {s} should have flannel0 again and no weft0 (weft's TUN goes with weftd)");
    c.wait_converged()?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    ensure!(tcp_survived(&conns, phase), "{phase}: a held TCP connection no longer moves data");
    let (n1, n2) = (to_w.close()?, from_f.close()?);
    eprintln!("{TEST}: TCP: {n1} and {n2} messages, both connections closed cleanly");
    drop(back.pins);
    c.pass();
    Ok(())
}
