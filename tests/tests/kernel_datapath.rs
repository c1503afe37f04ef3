//! `--datapath kernel`, the fallback for kernels that cannot run weft's BPF
//! datapath, forced on: vxlan through the kernel's vxlan device programmed
//! as flanneld programs it (neighbour, FDB, route per peer), interworking
//! with a BPF weft node and a flannel node; stale entries leave when a lease
//! does; switching a node from BPF to kernel keeps its VtepMAC and releases
//! the BPF links; host-gw without any BPF.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, metrics, subnet_env::Ipv4Subnet, traffic, Cluster, NodeRef, Wiring};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

fn fdb(c: &Cluster, n: NodeRef) -> Result<String> {
    cmd::sh("bridge", &["-n", c.node_ns(n)?.name(), "fdb", "show", "dev", "weft.1"])
}

fn vtep_mac(c: &Cluster, n: NodeRef) -> Result<String> {
    let lease = c.lease(n)?.with_context(|| format!("node {n} has no lease"))?;
    let j: serde_json::Value = serde_json::from_str(&lease)?;
    Ok(j.pointer("/BackendData/VtepMAC").and_then(|v| v.as_str()).with_context(|| format!("no VtepMAC in {lease}"))?.to_string())
}

#[test]
fn vxlan_kernel_datapath_interworks() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).no_start().build()?;
    c.start_weftd_with(1, &[&["--datapath", "kernel"][..], &metrics::ARGS].concat())?;
    c.start_weftd(2)?;
    c.wait_node_ready(1)?;
    c.wait_node_ready(2)?;
    let f = c.add_flannel_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    let w1 = c.weft_node(1)?;
    let dev = w1.ns.ip(&["-d", "link", "show", "weft.1"])?;
    ensure!(
        dev.contains("vxlan id 1") && dev.contains("dstport 8472") && dev.contains("nolearning"),
        "node 1: weft.1 is not flannel's kind of vxlan device:\n{dev}"
    );
    ensure!(!w1.vteps_pin().exists(), "node 1 runs the kernel datapath but pinned {}", w1.vteps_pin().display());
    let log = std::fs::read_to_string(&w1.log)?;
    ensure!(log.contains("datapath: kernel"), "node 1's log does not say which datapath runs:\n{log}");
    // flanneld's per-peer entries: FDB to each peer's PublicIP.
    let entries = fdb(&c, 1)?;
    for (n, mac) in [(2, vtep_mac(&c, 2)?), (f, c.flannel_node(f)?.mac.clone())] {
        let want = format!("{mac} dst {}", c.node_ip(n)?);
        ensure!(entries.lines().any(|l| l.starts_with(&want) && l.contains("self permanent")), "node 1 fdb lacks `{want} self permanent`:\n{entries}");
    }
    // Idempotent: the link events of pod creation make node 1 reconcile,
    // and a reconcile that finds everything in place changes nothing
    // (weft_reconcile_changes_total stays where it was).
    let ns1 = c.node_ns(1)?;
    let before = metrics::reconciles(ns1)?;
    ensure!(before.count >= 1 && before.added >= 3, "node 1 converged but /metrics counts no reconcile that programmed its 2 peers: {before:?}");
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::VethRoute)?, c.add_pod(f, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 3)?;
    let ns1 = c.node_ns(1)?;
    let after = cmd::poll("node 1 to reconcile after the pods' link events", Duration::from_secs(10), Duration::from_millis(100), || {
        let r = metrics::reconciles(ns1).map_err(|e| format!("{e:#}"))?;
        if r.count > before.count {
            Ok(Some(r))
        } else {
            Err(format!("{r:?}"))
        }
    })?;
    ensure!(
        (after.added, after.removed) == (before.added, before.removed),
        "node 1 changed entries without a lease change: {before:?} -> {after:?}\n{}",
        c.weft_node(1)?.log_tail(8)
    );
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
        traffic::tcp_transfer(&c.pods[pods[a]].ns, &c.pods[pods[b]].ns, c.pods[pods[b]].ip(), 2 << 20)
            .with_context(|| format!("tcp {} -> {}", c.pods[pods[a]].ns.name(), c.pods[pods[b]].ns.name()))?;
    }
    // Node 2's lease goes: node 1 drops its route, neighbour and FDB entry.
    let (mac2, subnet2) = (vtep_mac(&c, 2)?, c.node_env(2)?);
    c.weft_node_mut(2)?.stop();
    ensure!(c.delete_lease(2)?, "node 2's lease was not there to delete");
    let ns1 = c.node_ns(1)?;
    cmd::poll("node 1 to forget node 2", Duration::from_secs(10), Duration::from_millis(100), || {
        let routes = ns1.ip(&["route", "show", "dev", "weft.1"]).map_err(|e| format!("{e:#}"))?;
        let neigh = ns1.ip(&["neigh", "show", "dev", "weft.1"]).map_err(|e| format!("{e:#}"))?;
        let fdb = fdb(&c, 1).map_err(|e| format!("{e:#}"))?;
        let stale = routes.contains(&subnet2.cidr()) || neigh.contains(&format!("{} ", subnet2.v4().addr)) || fdb.contains(&mac2);
        if stale {
            Err(format!("routes:\n{routes}\nneigh:\n{neigh}\nfdb:\n{fdb}"))
        } else {
            Ok(Some(()))
        }
    })?;
    // The reconcile that removed them counted them (route, neighbour, FDB entry).
    let gone = metrics::reconciles(ns1)?;
    ensure!(gone.removed >= after.removed + 3, "node 1 removed node 2's route, neighbour and FDB entry but counted {} removals", gone.removed - after.removed);
    traffic::ping_ok(&c.pods[pods[0]].ns, c.pods[pods[2]].ip(), 3).context("node 1 -> flannel after node 2 left")?;
    c.pass();
    Ok(())
}

#[test]
fn switching_to_the_kernel_datapath_keeps_the_vtep() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 2)?;
    let mac = vtep_mac(&c, 1)?;
    let links = c.weft_node(1)?.vteps_pin().parent().context("layout dir")?.join("links");
    ensure!(std::fs::read_dir(&links)?.count() >= 2, "node 1 (BPF) pinned no links in {}", links.display());
    c.weft_node_mut(1)?.stop();
    c.start_weftd_with(1, &["--datapath", "kernel"])?;
    let w1 = c.weft_node(1)?;
    // weft.1 is a kernel vxlan device with BPF too: wait until the kernel
    // datapath programmed it (an FDB entry for node 2) and released the links.
    let node2 = c.node_ip(2)?.to_string();
    cmd::poll("node 1's weft.1 to be programmed as the kernel datapath programs it", Duration::from_secs(15), Duration::from_millis(100), || {
        let d = w1.ns.ip(&["-d", "link", "show", "weft.1"]).map_err(|e| format!("{e:#}"))?;
        let fdb = w1
            .ns
            .exec_output("bridge", &["fdb", "show", "dev", "weft.1"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("{e:#}"))?;
        let pinned = links.exists() && std::fs::read_dir(&links).map(|d| d.count()).unwrap_or(0) > 0;
        if d.contains("vxlan id 1") && fdb.contains(&node2) && !pinned {
            Ok(Some(()))
        } else {
            Err(format!("{d}\nFDB: {fdb}\nlinks pinned: {pinned}"))
        }
    })?;
    c.wait_converged()?;
    ensure!(vtep_mac(&c, 1)? == mac, "the VtepMAC changed from {mac} to {}", vtep_mac(&c, 1)?);
    let dev = w1.ns.ip(&["link", "show", "weft.1"])?;
    ensure!(dev.contains(&mac), "weft.1 does not carry the lease's VtepMAC {mac}:\n{dev}");
    ensure!(!links.exists() || std::fs::read_dir(&links)?.count() == 0, "BPF links still pinned in {}", links.display());
    c.ping_across_nodes(&pods, 3)?;
    c.pass();
    Ok(())
}

#[test]
fn host_gw_kernel_datapath() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).weftd_args(&["--datapath", "kernel"]).build()?;
    c.wait_converged()?;
    let f = c.add_flannel_host_gw_node()?;
    c.flannel_node(f)?.reprogram(&c.store)?;
    c.wait_converged()?;
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(f, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 3)?;
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        ensure!(!w.fast_path_attached() && !w.stats_pin().exists(), "node {n}: --datapath kernel but BPF state in {}", w.pin_dir.display());
    }
    traffic::tcp_transfer(&c.pods[pods[0]].ns, &c.pods[pods[2]].ns, c.pods[pods[2]].ip(), 2 << 20).context("tcp weft -> flannel host-gw")?;
    c.pass();
    Ok(())
}
