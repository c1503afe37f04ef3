//! Issue 24's live swap on the Kubernetes subnet manager
//! (`--kube-subnet-mgr`, kube-flannel.yml's flanneld): flanneld -> weftd ->
//! flanneld on a node whose lease is its own Node, vxlan and host-gw.
//!
//! The API server is the harness's ([`weft_tests::kube_api`]; no real API
//! server can be installed on these machines, kubectl checks it in
//! kube_api_server.rs): Nodes, their annotations and conditions, watches,
//! and flannel's RBAC. Node 1 runs weftd in kube mode; nodes 2 and 3 are
//! flannel-programmed (flanneld's kernel state, subnet.env, its `--ip-masq`
//! rules) with their host's Node as flanneld leaves it: podCIDR, the
//! annotations `kube-subnet-manager`, `backend-type`, `backend-data`
//! (`{"VNI":1,"VtepMAC":..}` or `null`), `public-ip`, and
//! NetworkUnavailable=False (`weft_tests::flannel_kube`). Node 2 is swapped
//! (`weft_tests::swap`): weftd starts with `--kube-subnet-mgr`, the same
//! kubeconfig and net-conf.json, `NODE_NAME` its host's Node; then weftd
//! stops and flanneld starts again, writing its annotations back. Pods are
//! attached as flannel's CNI plugin attaches them (bridge + host-local).
//!
//! Measured and asserted as in live_swap.rs (`weft_tests::swap_measure`):
//! during each phase node 2's pod pings node 1's and node 3's pods at
//! 200/s (loss recorded, at most [`MAX_LOST_IN_PLACE`] per flood), and two TCP
//! connections opened before phase 1 survive both phases. After each phase:
//! the swapped node keeps its subnet (subnet.env, its Node's podCIDR, the
//! only lease with its PublicIP), its Node's `public-ip`, `backend-type`
//! and backend-data's VtepMAC (the lease's value unchanged), its pod's
//! address and host-local's store; every pod reaches every pod; the Node's
//! NetworkUnavailable stays False (weftd's after phase 1, flanneld's after
//! phase 2); weftd is ready with no ERROR and no panic, and exits 0 on
//! SIGTERM.
//!
//! Neither rollback has a manual step: on vxlan flanneld finds its device
//! as `flannel.1`, the altname weftd gives `weft.1`.
use anyhow::{ensure, Context, Result};
use weft_tests::{
    flannel_node::FlannelBackend,
    report,
    subnet_env::Ipv4Subnet,
    swap_measure::{
        conns_alive, flanneld_back, identity, measure, open_conns, record, same_identity, scene, weftd_healthy, weftd_started, Identity, MAX_LOST_IN_PLACE,
    },
    Cluster, NodeRef,
};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// The swapped Node's NetworkUnavailable must be False (never True in a
/// swap), with the reason of whoever set it last.
fn network_available(c: &Cluster, n: NodeRef, reason: &str, phase: &str) -> Result<()> {
    let cond = c.network_unavailable(n)?;
    ensure!(cond == Some(("False".to_string(), reason.to_string())), "{phase}: NetworkUnavailable of node {n}'s Node is {cond:?}, want False ({reason})");
    Ok(())
}

/// The lease's value (the Node's annotations as flannel's lease JSON) the
/// same as before phase 1; recorded as a figure too.
fn same_lease_value(test: &str, phase: &str, before: &Identity, now: &Identity) -> Result<()> {
    report::figure(test, &format!("{phase}: the swapped node's lease value as before phase 1"), (now.lease_value == before.lease_value) as u8 as f64, "");
    ensure!(now.lease_value == before.lease_value, "{phase}: node's lease {} was {} and is {}", before.lease_key, before.lease_value, now.lease_value);
    Ok(())
}

fn live_swap_kube(test: &str, config: &str, backend: FlannelBackend) -> Result<()> {
    weft_tests::require_root()?;
    // flanneld's Nodes as kube-flannel leaves them: start_flanneld on the kube store.
    let sc = scene(Cluster::builder().kube().config_json(config), backend)?;
    let (all, targets) = (sc.pods(), sc.targets());
    let (s, ps) = (sc.s, sc.ps);
    let (mut to_w, mut from_f) = open_conns(&sc)?;
    let mut c = sc.c;
    let before = identity(&c, s, ps)?;
    {
        let node = before.node.as_ref().context("no Node identity on the kube store")?;
        ensure!(node.annotations == c.flanneld_annotations(s)?, "node {s}'s Node before the swap: {node:?}");
        ensure!(node.pod_cidr.as_deref() == Some(c.node_env(s)?.cidr().as_str()), "node {s}'s podCIDR {:?}", node.pod_cidr);
    }
    network_available(&c, s, "FlannelIsUp", "before the swap")?;
    let state0 = c.swap_state(s)?;
    eprintln!("{test}: node {s} (swapped) as flanneld left it:\n{state0}");
    let conns = [("swapped pod -> weft node's pod", &to_w), ("flannel node's pod -> swapped pod", &from_f)];

    // Phase 1: flanneld -> weftd.
    let p1 = measure(&mut c, ps, &targets, &conns, |c| c.swap_to_weftd(s, &[]))?;
    let phase = "flanneld -> weftd";
    record(test, phase, &p1, Some(MAX_LOST_IN_PLACE))?;
    let state1 = c.swap_state(s)?;
    eprintln!("{test}: {phase}: {:?} in {:?}; node {s}'s state changed:\n{}", p1.outcome, p1.took, state1.diff_from(&state0));
    let log = c.weft_node(s)?.log.clone();
    weftd_started(test, phase, &p1.outcome, &log)?;
    weftd_healthy(test, &c, s, phase)?;
    let after1 = same_identity(&c, s, ps, &before, phase)?;
    same_lease_value(test, phase, &before, &after1)?;
    network_available(&c, s, "WeftIsUp", phase)?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    conns_alive(&conns, phase)?;

    // Phase 2: weftd -> flanneld (a rollback).
    let p2 = measure(&mut c, ps, &targets, &conns, |c| c.swap_to_flanneld(s))?;
    let phase = "weftd -> flanneld";
    record(test, phase, &p2, Some(MAX_LOST_IN_PLACE))?;
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
    same_lease_value(test, phase, &before, &after2)?;
    ensure!(
        after2.node.as_ref().map(|n| &n.annotations) == Some(&c.flanneld_annotations(s)?),
        "{phase}: node {s}'s Node is not as flanneld writes it: {:?}",
        after2.node
    );
    network_available(&c, s, "FlannelIsUp", phase)?;
    c.wait_converged()?;
    c.ping_across_nodes(&all, 3).with_context(|| format!("after {phase}"))?;
    conns_alive(&conns, phase)?;
    let (n1, n2) = (to_w.close()?, from_f.close()?);
    eprintln!("{test}: TCP: {n1} and {n2} messages, both closed cleanly");
    drop(back.pins);
    c.pass();
    Ok(())
}

#[test]
fn kube_host_gw() -> Result<()> {
    live_swap_kube("live_swap_kube host-gw", HOST_GW, FlannelBackend::HostGw)
}

#[test]
fn kube_vxlan() -> Result<()> {
    live_swap_kube("live_swap_kube vxlan", VXLAN, FlannelBackend::Vxlan)
}
