//! Issue 24, "Replace flanneld on a running node": the measurement the
//! takeover work will be judged by (harness: `weft_tests::swap`, measuring:
//! `weft_tests::swap_measure`).
//!
//! A cluster on etcd: node 1 runs weftd (its pod by weft-cni), nodes 2 and
//! 3 are flannel-programmed (flanneld's kernel state, subnet.env, its
//! `--ip-masq` rules, as kube-flannel runs it) with pods attached as
//! flannel's CNI plugin attaches them (bridge + host-local). Node 2 is
//! swapped: flanneld -> weftd (phase 1), then weftd -> flanneld (phase 2).
//! During each phase node 2's pod pings node 1's and node 3's pods at
//! 200/s, and two TCP connections opened before phase 1 stay open through
//! both phases, exchanging a message every 20 ms: node 2's pod -> node 1's
//! pod, and node 3's pod -> node 2's pod.
//!
//! Asserted after each phase: the swapped node keeps its subnet (subnet.env
//! the same, its lease under the same key and no second lease with its
//! PublicIP), its pod keeps its address (on eth0 and in host-local's
//! store), every pod reaches every pod, both TCP connections are alive and
//! move data (no reset, no give-up), and weftd is healthy: ready (/readyz
//! 200) with no ERROR line and no panic in its log in phase 1, exit status
//! 0 on SIGTERM in phase 2.
//!
//! On vxlan the swapped node's weftd runs with a short
//! `--datapath-grace-secs` ([`GRACE`]): after the rollback and the grace,
//! weft's programs left pinned stand aside, and a node joining then (known
//! to flanneld's kernel path only) is reached both ways.
//!
//! Recorded (`figure:` lines): echo requests lost per direction and
//! phase, each connection's longest round trip per phase (TCP's
//! retransmission timer shows there), weftd's time to ready, and whether
//! the lease's value (the VtepMAC) stayed the same. Of these only the loss
//! is bounded, and only where a swap never takes a route away (host-gw,
//! and a vxlan swap weftd refuses): at most [`MAX_LOST_IN_PLACE`] per flood.
//!
//! On vxlan weftd takes flannel.1 over in place (renamed to weft.1 while
//! up; its neighbours kept while weftd turns ARP off; weft's programs
//! attached only after the first reconcile filled their maps), so the
//! lease's value (the VtepMAC) stays and the loss is bounded as for
//! host-gw. The rollback has no manual step: weft.1 answers to `flannel.1`
//! (an altname), so flanneld started again finds it by that name and
//! reuses it, VtepMAC and all (checked: the lease's value is as before
//! phase 1). `vxlan_by_hand` measures the older manual procedure
//! (flannel.1 deleted before weftd starts, weft.1 before flanneld starts
//! again).
//!
//! After phase 1 flanneld's FLANNEL-* iptables chains are gone (weftd's
//! own nft rules masquerade); after phase 2 flanneld's are back beside
//! weft's table, which stays. flanneld's routes, neighbours and FDB
//! entries are weft's own (the kernel path it programs beside its maps):
//! the state diffs are printed, not checked.
//!
//! After phase 1 the swapped node's flannel-CNI pod is registered with
//! weftd (in weft_pods), so weft's fast path carries its traffic.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{
    flannel_node::FlannelBackend,
    report,
    swap_measure::{conns_alive, flanneld_back, identity, measure, open_conns, record, same_identity, scene, weftd_healthy, weftd_started, MAX_LOST_IN_PLACE},
    Cluster, NodeRef,
};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// A manual step of the operator around the swaps (none for the issue's swap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByHand {
    Nothing,
    /// `ip link del flannel.1` before weftd starts, `ip link del weft.1`
    /// after weftd stopped and before flanneld starts.
    DeleteTheOtherVxlanDevice,
}

fn live_swap(test: &str, config: &str, backend: FlannelBackend, by_hand: ByHand) -> Result<()> {
    weft_tests::require_root()?;
    let sc = scene(Cluster::builder().config_json(config), backend)?;
    let (all, targets) = (sc.pods(), sc.targets());
    let (s, ps) = (sc.s, sc.ps);
    let (mut to_w, mut from_f) = open_conns(&sc)?;
    let mut c = sc.c;
    let before = identity(&c, s, ps)?;
    let state0 = c.swap_state(s)?;
    eprintln!("{test}: node {s} (swapped) as flanneld left it:\n{state0}");
    let conns = [("swapped pod -> weft node's pod", &to_w), ("flannel node's pod -> swapped pod", &from_f)];

    // Phase 1: flanneld -> weftd.
    let p1 = measure(&mut c, ps, &targets, &conns, |c| {
        if by_hand == ByHand::DeleteTheOtherVxlanDevice {
            c.node_ns(s)?.ip(&["link", "del", "flannel.1"])?;
        }
        c.swap_to_weftd(s, &["--datapath-grace-secs", &GRACE.as_secs().to_string()])
    })?;
    let phase = "flanneld -> weftd";
    // The manual procedure deletes devices: recorded, not bounded.
    let bound = (by_hand == ByHand::Nothing).then_some(MAX_LOST_IN_PLACE);
    record(test, phase, &p1, bound)?;
    let state1 = c.swap_state(s)?;
    eprintln!("{test}: {phase}: {:?} in {:?}; node {s}'s state changed:\n{}", p1.outcome, p1.took, state1.diff_from(&state0));
    let log = c.weft_node(s)?.log.clone();
    weftd_started(test, phase, &p1.outcome, &log)?;
    let after1 = same_identity(&c, s, ps, &before, phase)?;
    report::figure(test, &format!("{phase}: the swapped node's lease value unchanged"), (after1.lease_value == before.lease_value) as u8 as f64, "");
    if after1.lease_value != before.lease_value {
        eprintln!("{test}: {phase}: lease {} was {} and is {}", before.lease_key, before.lease_value, after1.lease_value);
    }
    // Taken over in place, the node announces what flanneld announced (the
    // VtepMAC above all); only deleting flannel.1 by hand makes a new one.
    ensure!(
        by_hand == ByHand::DeleteTheOtherVxlanDevice || after1.lease_value == before.lease_value,
        "{phase}: the lease's value changed: {} -> {}",
        before.lease_value,
        after1.lease_value
    );
    weftd_healthy(test, &c, s, phase)?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    // weftd registered the swapped node's flannel-CNI pod (weft_pods holds its address).
    let want: Vec<u64> = c.pods[ps].ip().octets().iter().map(|&b| b.into()).collect();
    let pods = weft_tests::bpf::map_dump(&c.weft_node(s)?.pods_pin())?;
    let keys: Vec<Vec<u64>> =
        pods.as_array().into_iter().flatten().map(|e| e["formatted"]["key"].as_array().into_iter().flatten().filter_map(|b| b.as_u64()).collect()).collect();
    ensure!(keys.contains(&want), "{phase}: the swapped pod {} is not in node {s}'s weft_pods: {keys:?}", c.pods[ps].ip());
    conns_alive(&conns, phase)?;
    // weftd masquerades itself now: flanneld's FLANNEL-* chains and jumps are gone.
    // (Removed after weft's rules are read back, beside the start: polled.)
    weft_tests::cmd::poll("flanneld's FLANNEL-* chains removed", Duration::from_secs(10), Duration::from_millis(100), || {
        let ipt = c.swap_state(s).map_err(|e| format!("{e:#}"))?.section("iptables").to_string();
        if ipt.contains("FLANNEL") {
            Err(ipt)
        } else {
            Ok(Some(()))
        }
    })
    .with_context(|| format!("{phase}: flanneld's iptables rules left"))?;

    // Phase 2: weftd -> flanneld (a rollback).
    let p2 = measure(&mut c, ps, &targets, &conns, |c| match by_hand {
        ByHand::DeleteTheOtherVxlanDevice => c.swap_to_flanneld_with(s, |ns| ns.ip(&["link", "del", "weft.1"]).map(|_| ())),
        ByHand::Nothing => c.swap_to_flanneld(s),
    })?;
    let phase = "weftd -> flanneld";
    record(test, phase, &p2, bound)?;
    let state2 = c.swap_state(s)?;
    let back = p2.outcome;
    eprintln!(
        "{test}: {phase}: weftd exited {:?}, flanneld {:?}, in {:?}; node {s}'s state changed:\n{}",
        back.weftd_exit,
        back.start,
        p2.took,
        state2.diff_from(&state1)
    );
    flanneld_back(phase, &back, &log)?;
    let after2 = same_identity(&c, s, ps, &before, phase)?;
    report::figure(test, &format!("{phase}: the swapped node's lease value as before phase 1"), (after2.lease_value == before.lease_value) as u8 as f64, "");
    // flanneld found the device it left (weft.1 by its altname) and
    // announces its VtepMAC again.
    ensure!(
        by_hand == ByHand::DeleteTheOtherVxlanDevice || after2.lease_value == before.lease_value,
        "{phase}: the lease's value is not as before phase 1: {} -> {}",
        before.lease_value,
        after2.lease_value
    );
    c.wait_converged()?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    conns_alive(&conns, phase)?;
    // flanneld put its rules back; weft's table stays (no --cleanup-on-exit): both masquerade the same.
    ensure!(state2.section("iptables").contains("-j FLANNEL-POSTRTG"), "{phase}: flanneld did not put its rules back:\n{}", state2.section("iptables"));
    ensure!(state2.section("nft table inet weft") == "present", "{phase}: weft's nft table is gone (it stays without --cleanup-on-exit)");
    if backend == FlannelBackend::Vxlan {
        stood_aside_after_rollback(test, &mut c, s, ps, &back.pins)?;
    }
    let (n1, n2) = (to_w.close()?, from_f.close()?);
    let (s1, s2) = (to_w.stats(), from_f.stats());
    eprintln!("{test}: TCP: {} messages (longest round trip {:?}) and {} messages (longest {:?}), both closed cleanly", n1, s1.max_rtt, n2, s2.max_rtt);
    drop(back.pins);
    c.pass();
    Ok(())
}

/// The swapped node's weftd runs with this `--datapath-grace-secs`: its
/// programs, left pinned when it stopped, stand aside this long after.
const GRACE: Duration = Duration::from_secs(2);

/// After a vxlan rollback, once [`GRACE`] has passed: weft's programs left
/// on the swapped node stand aside, so a node that joins afterwards (which
/// only flanneld programs, in the kernel) is reached both ways, and the
/// programs' `stood_aside` counter grew. Without standing aside their maps,
/// which nobody updates any more, would not know the new node: weft_encap
/// would drop the swapped pod's packets to it (no lease) and weft_decap
/// the new node's VXLAN (unknown VTEP).
fn stood_aside_after_rollback(test: &str, c: &mut Cluster, s: NodeRef, ps: usize, pins: &weft_tests::swap::LeftPins) -> Result<()> {
    let stats = weft_common::pins::dir(&pins.0).join(weft_common::map_names::STATS);
    std::thread::sleep(GRACE + Duration::from_millis(500));
    let before = weft_tests::bpf::stat_packets(&stats, weft_common::stat::STOOD_ASIDE)?;
    let n = c.add_flannel_node_with(FlannelBackend::Vxlan, 0)?;
    c.program_flannel_nodes()?;
    c.start_flanneld(n, true)?;
    c.wait_converged()?;
    let pn = c.add_flannel_cni_pod(n)?;
    c.ping_across_nodes(&[ps, pn], 3).with_context(|| format!("after the grace: the swapped node's pod and node {n}'s, which joined after weftd stopped"))?;
    let after = weft_tests::bpf::stat_packets(&stats, weft_common::stat::STOOD_ASIDE)?;
    report::figure(test, "weftd -> flanneld: packets weft's left programs passed to the kernel (stood aside) while a node joined and was pinged (the held TCP connections' included)", (after - before) as f64, "packets");
    ensure!(after > before, "weft's programs on node {s} did not stand aside ({before} -> {after} stood_aside) {GRACE:?} after weftd stopped");
    Ok(())
}

#[test]
fn host_gw() -> Result<()> {
    live_swap("live_swap host-gw", HOST_GW, FlannelBackend::HostGw, ByHand::Nothing)
}

#[test]
fn vxlan() -> Result<()> {
    live_swap("live_swap vxlan", VXLAN, FlannelBackend::Vxlan, ByHand::Nothing)
}

/// Today's manual procedure on vxlan, the one weftd's refusal asks for:
/// flannel.1 deleted right before weftd starts, weft.1 right after weftd
/// stopped (flanneld cannot make flannel.1 beside it either). Not the
/// issue's swap: its figures say what the takeover has to beat.
#[test]
fn vxlan_by_hand() -> Result<()> {
    live_swap("live_swap vxlan by hand", VXLAN, FlannelBackend::Vxlan, ByHand::DeleteTheOtherVxlanDevice)
}
