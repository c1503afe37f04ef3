//! Kube mode (`--kube-subnet-mgr`) beyond three weft nodes: a weft node and a
//! node programmed as flanneld programs the kernel, whose Node carries the
//! annotations exactly as flanneld writes them (vxlan and host-gw); every
//! other backend and datapath on Node leases (vxlan on the kernel fallback,
//! vxlan with DirectRouting, udp, host-gw with the fast path and registered
//! pods); and 5,000 heartbeats to a peer's Node that must not reconcile.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{json, Value};
use weft_common::stat;
use weft_tests::{
    bpf, cmd,
    flannel_node::FlannelBackend,
    kube_api::Client,
    kube_store::{heartbeat_time, SMP},
    metrics::{self, udp_packets, ARGS},
    subnet_env::Ipv4Subnet,
    traffic, Cluster, NodeRef, Wiring,
};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;
const DIRECT: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
const UDP: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#;

/// The MAC address of `dev` in node `n`.
fn mac_of(c: &Cluster, n: NodeRef, dev: &str) -> Result<String> {
    let out = c.node_ns(n)?.ip(&["-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -j link: {out}"))?;
    v[0]["address"].as_str().map(str::to_string).with_context(|| format!("no address: {out}"))
}

/// Weft node `n`'s annotations in flannel's format: backend-data a JSON
/// object with exactly VNI (1) and VtepMAC (weft.1's MAC), in Go's form of
/// vxlanLeaseAttrs; `null` on host-gw.
fn check_flannel_format(c: &Cluster, n: NodeRef, backend: &str) -> Result<()> {
    let a = c.node_flannel_annotations(n)?;
    ensure!(a.len() == 4, "node {n}: not all four flannel annotations: {a:?}");
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    ensure!(get("kube-subnet-manager") == "true" && get("backend-type") == backend, "node {n}: {a:?}");
    ensure!(get("public-ip") == c.node_ip(n)?.to_string(), "node {n}: public-ip {:?}, want {}", get("public-ip"), c.node_ip(n)?);
    let text = get("backend-data");
    if backend != "vxlan" {
        ensure!(text == "null", "node {n}: {backend} backend-data {text:?}, flannel writes null");
        return Ok(());
    }
    let data: Value = serde_json::from_str(&text).with_context(|| format!("node {n}: backend-data {text:?} is not JSON"))?;
    let obj = data.as_object().with_context(|| format!("node {n}: backend-data {text} is not an object"))?;
    ensure!(obj.keys().map(String::as_str).eq(["VNI", "VtepMAC"]), "node {n}: backend-data keys {:?}, want exactly VNI and VtepMAC", obj.keys());
    ensure!(obj["VNI"].as_u64() == Some(1), "node {n}: VNI {}", obj["VNI"]);
    let mac = obj["VtepMAC"].as_str().with_context(|| format!("node {n}: VtepMAC {}", obj["VtepMAC"]))?;
    let octets: Vec<&str> = mac.split(':').collect();
    ensure!(octets.len() == 6 && octets.iter().all(|o| o.len() == 2 && u8::from_str_radix(o, 16).is_ok()), "node {n}: VtepMAC {mac:?} is no MAC");
    ensure!(mac == mac_of(c, n, "weft.1")?, "node {n}: VtepMAC {mac}, weft.1 has {}", mac_of(c, n, "weft.1")?);
    ensure!(text == format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#), "node {n}: backend-data {text:?} is not in Go's form");
    Ok(())
}

/// A weft node and a flannel node of `backend` in one kube-mode cluster
/// (plus a second weft node), the flannel node's Node as flanneld leaves it.
fn mixed(config: &str, backend: FlannelBackend, backend_type: &str) -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().weft_nodes(2).config_json(config).weftd_args(&ARGS).no_start().build()?;
    let f = c.add_flannel_node_with(backend, 0)?;
    let want = c.flanneld_kube_node(f)?;
    for n in [1, 2] {
        c.start_weftd(n)?;
    }
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    // The flannel node programs itself from the weft nodes' Nodes.
    let programmed = c.flannel_node(f)?.reprogram(&c.store)?;
    ensure!(programmed.len() == 2, "the flannel node programmed {programmed:?} from the weft nodes' Nodes");
    c.wait_converged()?;
    for n in [1, 2] {
        check_flannel_format(&c, n, backend_type)?;
    }
    let (sf, ipf) = (c.node_env(f)?.v4().addr, c.node_ip(f)?);
    if backend_type == "vxlan" {
        for n in [1, 2] {
            let dump = c.weft_node(n)?.vteps()?;
            let (ip, mac) = bpf::vtep_of(&dump, sf).with_context(|| format!("node {n} has no VTEP for the flannel node: {dump}"))?;
            let mac = weft_common::mac::format_mac(&mac);
            ensure!(ip == ipf && mac == c.flannel_node(f)?.mac, "node {n}'s VTEP for the flannel node: {ip} {mac}");
        }
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2, pf], 3)?;
    for (a, b, what) in [(p1, pf, "weft -> flannel"), (pf, p2, "flannel -> weft")] {
        let t = traffic::tcp_transfer(&c.pods[a].ns, &c.pods[b].ns, c.pods[b].ip(), 4 << 20).with_context(|| format!("tcp {what}"))?;
        eprintln!("kube mixed {backend_type} tcp {what}: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    }
    // weftd reads the flannel node's Node and never writes it.
    ensure!(c.node_flannel_annotations(f)? == want, "the flannel node's annotations changed: {:?}, flanneld wrote {want:?}", c.node_flannel_annotations(f)?);
    c.pass();
    Ok(())
}

#[test]
fn kube_mixed_with_flannel_vxlan() -> Result<()> {
    mixed(VXLAN, FlannelBackend::Vxlan, "vxlan")
}

#[test]
fn kube_mixed_with_flannel_host_gw() -> Result<()> {
    mixed(HOST_GW, FlannelBackend::HostGw, "host-gw")
}

/// Node `n`'s VtepMAC as its Node's backend-data says.
fn vtep_mac(c: &Cluster, n: NodeRef) -> Result<String> {
    let data = c.node_flannel_annotations(n)?.get("backend-data").cloned().unwrap_or_default();
    let v: Value = serde_json::from_str(&data).with_context(|| format!("node {n}: backend-data {data:?}"))?;
    v["VtepMAC"].as_str().map(str::to_string).with_context(|| format!("node {n}: no VtepMAC in {data}"))
}

#[test]
fn kube_vxlan_kernel_datapath() -> Result<()> {
    weft_tests::require_root()?;
    let args = [&ARGS[..], &["--datapath", "kernel"]].concat();
    let mut c = Cluster::builder().kube().weft_nodes(2).config_json(VXLAN).weftd_args(&args).build()?;
    c.wait_converged()?;
    for (n, m) in [(1, 2), (2, 1)] {
        check_flannel_format(&c, n, "vxlan")?;
        let w = c.weft_node(n)?;
        let dev = w.ns.ip(&["-d", "link", "show", "weft.1"])?;
        ensure!(dev.contains("vxlan id 1") && dev.contains("dstport 8472"), "node {n}: weft.1 is not a kernel vxlan device:\n{dev}");
        ensure!(!w.vteps_pin().exists() && !w.stats_pin().exists(), "node {n}: --datapath kernel but BPF maps in {}", w.pin_dir.display());
        // flanneld's entries for the peer, from the peer's Node annotations.
        let (mac, ip, sub) = (vtep_mac(&c, m)?, c.node_ip(m)?, c.node_env(m)?.v4().addr);
        let fdb = cmd::sh("bridge", &["-n", w.ns.name(), "fdb", "show", "dev", "weft.1"])?;
        ensure!(
            fdb.lines().any(|l| l.starts_with(&format!("{mac} dst {ip} ")) && l.contains("self permanent")),
            "node {n}: no FDB entry {mac} dst {ip}:\n{fdb}"
        );
        let neigh = w.ns.ip(&["neigh", "show", "dev", "weft.1"])?;
        ensure!(neigh.lines().any(|l| l.starts_with(&format!("{sub} lladdr {mac} PERMANENT"))), "node {n}: no neighbour {sub} -> {mac}:\n{neigh}");
        let r = metrics::reconciles(&w.ns)?;
        ensure!(r.added >= 3, "node {n} counted {} entries added for its peer (route, neighbour, FDB)", r.added);
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    c.ping_across_nodes(&[p1, p2], 3)?;
    traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p1].ns, c.pods[p1].ip(), 2 << 20).context("tcp node 2 -> node 1 on the kernel datapath")?;
    c.pass();
    Ok(())
}

#[test]
fn kube_vxlan_direct_routing() -> Result<()> {
    weft_tests::require_root()?;
    // Nodes 1 and 2 share segment A; node 3 is behind the router.
    let mut c = Cluster::builder().kube().segments(&[2, 1]).config_json(DIRECT).weftd_args(&ARGS).build()?;
    let (s1, s2, s3) = (c.node_env(1)?.cidr(), c.node_env(2)?.cidr(), c.node_env(3)?.cidr());
    let plan = [(1, vec![(s2.clone(), c.node_ip(2)?)], vec![s3.clone()]), (2, vec![(s1.clone(), c.node_ip(1)?)], vec![s3.clone()]), (3, vec![], vec![s1, s2])];
    for (n, direct, tunnel) in &plan {
        check_flannel_format(&c, *n, "vxlan")?;
        let w = c.weft_node(*n)?;
        w.wait_route_split(direct, tunnel)?;
    }
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 3)?;
    let encap = |n| c.stat_counter(n, stat::ENCAP).map(|(p, _)| p);
    let (e1, e2) = (encap(1)?, encap(2)?);
    traffic::ping_ok(&c.pods[pods[0]].ns, c.pods[pods[1]].ip(), 5)?;
    ensure!(encap(1)? == e1 && encap(2)? == e2, "same-segment traffic was encapsulated: {e1} -> {}, {e2} -> {}", encap(1)?, encap(2)?);
    traffic::ping_ok(&c.pods[pods[0]].ns, c.pods[pods[2]].ip(), 5)?;
    ensure!(encap(1)? >= e1 + 5, "traffic across the router was not encapsulated by node 1");
    ensure!(encap(3)? >= 5, "node 3 encapsulated no replies");
    c.pass();
    Ok(())
}

#[test]
fn kube_udp() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().weft_nodes(2).config_json(UDP).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    for n in [1, 2] {
        // flannel's udp lease attributes on a Node: backend-type "", backend-data null.
        check_flannel_format(&c, n, "")?;
        let link = c.node_ns(n)?.ip(&["-d", "link", "show", "weft0"])?;
        ensure!(link.contains("tun") && link.contains("mtu 1472"), "node {n}: weft0 is not a TUN with MTU 1472:\n{link}");
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let (tx1, rx2) = (udp_packets(c.node_ns(1)?, "tx")?, udp_packets(c.node_ns(2)?, "rx")?);
    c.ping_across_nodes(&[p1, p2], 3)?;
    let (tx, rx) = (udp_packets(c.node_ns(1)?, "tx")? - tx1, udp_packets(c.node_ns(2)?, "rx")? - rx2);
    ensure!(tx >= 6 && rx >= 6, "the udp path carried too little of 6 pings each way: node 1 tx {tx}, node 2 rx {rx}");
    traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, c.pods[p2].ip(), 2 << 20).context("tcp over udp")?;
    c.pass();
    Ok(())
}

#[test]
fn kube_host_gw_fast_path_to_registered_pods() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().weft_nodes(2).config_json(HOST_GW).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p1)?;
    c.register_endpoint(p2)?;
    for n in [1, 2] {
        check_flannel_format(&c, n, "host-gw")?;
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n}: fast path attached"), Duration::from_secs(15), Duration::from_millis(100), || {
            if w.fast_path_attached() && w.link_pinned("weft_to_pod") {
                Ok(Some(()))
            } else {
                Err(w.log_tail(5))
            }
        })?;
        let peers = bpf::map_dump(&w.hostgw_pin())?;
        ensure!(peers.as_array().map(Vec::len) == Some(1), "node {n}: weft_hostgw should hold the peer's Node lease, has {peers}");
    }
    let routed = |n| c.stat_counter(n, stat::ROUTED_TO_POD).map(|(p, _)| p);
    let fwd = |n| c.stat_counter(n, stat::FWD).map(|(p, _)| p);
    // The records are read on their own schedule: wait for the first deliveries.
    for (a, b, n) in [(p1, p2, 2), (p2, p1, 1)] {
        cmd::poll(&format!("node {n} to deliver straight into its registered pod"), Duration::from_secs(10), Duration::from_millis(200), || {
            let r0 = routed(n).map_err(|e| format!("{e:#}"))?;
            traffic::ping(&c.pods[a].ns, c.pods[b].ip(), 1).map_err(|e| format!("{e:#}"))?;
            if routed(n).map_err(|e| format!("{e:#}"))? > r0 {
                Ok(Some(()))
            } else {
                Err("not yet".into())
            }
        })?;
    }
    for (a, b, from, to) in [(p1, p2, 1, 2), (p2, p1, 2, 1)] {
        let (f0, r0, back0) = (fwd(from)?, routed(to)?, routed(from)?);
        traffic::ping_ok(&c.pods[a].ns, c.pods[b].ip(), 5)?;
        ensure!(fwd(from)? >= f0 + 5, "node {from}'s fast path forwarded {} of 5 echo requests", fwd(from)? - f0);
        ensure!(routed(to)? >= r0 + 5, "node {to} delivered {} of 5 echo requests straight into its pod", routed(to)? - r0);
        ensure!(routed(from)? >= back0 + 5, "node {from} delivered {} of 5 echo replies straight into its pod", routed(from)? - back0);
    }
    let (_, b0) = c.stat_counter(2, stat::ROUTED_TO_POD)?;
    traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, c.pods[p2].ip(), 4 << 20).context("tcp pod 1 -> pod 2")?;
    ensure!(c.stat_counter(2, stat::ROUTED_TO_POD)?.1 - b0 >= 4 << 20, "the 4 MiB did not go straight into pod 2");
    c.pass();
    Ok(())
}

/// weftd's periodic reconcile (`RESYNC` in agent/src/agent/event_loop.rs), seconds.
const RESYNC_S: u64 = 10;

/// `weft_kube_node_updates_total{effect="<effect>"}` of node `n`.
fn node_updates(c: &Cluster, n: NodeRef, effect: &str) -> Result<u64> {
    Ok(metrics::sample(&metrics::scrape(c.node_ns(n)?)?, &format!("weft_kube_node_updates_total{{effect=\"{effect}\"}}")) as u64)
}

#[test]
fn kube_5000_heartbeats_do_not_reconcile() -> Result<()> {
    const PATCHES: i64 = 5000;
    const THREADS: i64 = 8;
    weft_tests::require_root()?;
    let c = Cluster::builder().kube().weft_nodes(2).config_json(VXLAN).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let ns1 = c.node_ns(1)?;
    let r0 = metrics::settled_reconciles(ns1)?;
    let since_r0 = Instant::now();
    let (none0, lease0) = (node_updates(&c, 1, "none")?, node_updates(&c, 1, "lease")?);
    let path = format!("/api/v1/nodes/{}/status", c.node_name(2)?);
    let rv0 = c.kube()?.api.resource_version();
    // A kubelet's status patch each, from THREADS clients in the switch
    // namespace; times base + 1..=PATCHES s, distinct whatever the order.
    let base = heartbeat_time(0).0.as_second();
    let t0 = Instant::now();
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, ns, path) = (Client::new(&c.kube()?.admin_kubeconfig)?, c.sw.path(), path.clone());
            Ok(std::thread::spawn(move || -> Result<()> {
                traffic::enter(&ns)?;
                for i in (t..PATCHES).step_by(THREADS as usize) {
                    let patch = json!({"status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": serde_json::to_value(Time(Timestamp::from_second(base + i + 1).map_err(|e| anyhow::anyhow!("{e}"))?))?}]}});
                    let (code, body) = client.req("PATCH", &path, SMP, &patch)?;
                    ensure!(code == 200, "PATCH {path}: {code} {body}");
                }
                Ok(())
            }))
        })
        .collect::<Result<_>>()?;
    for h in senders {
        traffic::join(h)?;
    }
    let sent = t0.elapsed();
    let rv1 = c.kube()?.api.resource_version();
    ensure!(rv1 >= rv0 + PATCHES as u64, "{PATCHES} heartbeats moved the resourceVersion only {rv0} -> {rv1}");
    let none1 = cmd::poll(&format!("node 1 to count {PATCHES} updates without effect"), Duration::from_secs(30), Duration::from_millis(250), || {
        let v = node_updates(&c, 1, "none").map_err(|e| format!("{e:#}"))?;
        if v >= none0 + PATCHES as u64 {
            Ok(Some(v))
        } else {
            Err(format!("weft_kube_node_updates_total{{effect=\"none\"}} {none0} -> {v}"))
        }
    })?;
    let seen = t0.elapsed();
    let r1 = metrics::reconciles(ns1)?;
    // weftd reconciles every RESYNC (10 s) whatever happens, as flanneld
    // does; 5,000 patches take longer than that here, so the count may grow
    // by the resyncs that fit between the two scrapes, never by more.
    let resyncs = since_r0.elapsed().as_secs() / RESYNC_S + 1;
    let lease1 = node_updates(&c, 1, "lease")?;
    eprintln!(
        "{PATCHES} heartbeats from {THREADS} threads sent in {sent:?}, all seen after {seen:?}; effect=none {none0} -> {none1}, effect=lease {lease0} -> {lease1}, reconciles {r0:?} -> {r1:?} (<= {resyncs} resyncs)"
    );
    ensure!((r1.added, r1.removed) == (r0.added, r0.removed), "heartbeats changed the dataplane: {r0:?} -> {r1:?}");
    ensure!(r1.count <= r0.count + resyncs, "heartbeats caused reconciles: {r0:?} -> {r1:?}, only {resyncs} resyncs fit in {:?}", since_r0.elapsed());
    ensure!(lease1 == lease0, "heartbeats counted as lease changes: {lease0} -> {lease1}");
    c.wait_exact_vxlan_peers(1, &[c.node_env(2)?.v4().addr], Duration::from_secs(2))?;
    c.pass();
    Ok(())
}
