//! IPv6-only pod networks (flannel's `"EnableIPv4": false`): an underlay
//! with IPv6 alone (fd77::N on the nodes' eth0, no IPv4 address), the
//! network config `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":
//! "fd44::/48",...}`, pods with an IPv6 address alone.
//!
//! - `flannel_ipv6_only_selftest` needs no weftd: two nodes programmed as
//!   flanneld programs the kernel with `EnableIPv4: false` (flannel-v6.1
//!   only, leases `0.0.0.0-0&<v6>-64`) carry ping and TCP over IPv6. If it
//!   fails, the harness is broken, not weftd.
//! - `ipv6_only_vxlan` (embedded store), `ipv6_only_host_gw` (etcd, reached
//!   over IPv6): three weftd nodes; subnet.env without FLANNEL_NETWORK and
//!   FLANNEL_SUBNET, with the IPv6 keys; every lease `0.0.0.0-0&<v6>-64`
//!   with `"PublicIP":"0.0.0.0"`, PublicIPv6 and (vxlan) BackendV6Data
//!   only; ping and TCP over IPv6 between all pods (weft-cni's, registered
//!   and unregistered harness pods, a veth+route pod); weft's counters show
//!   the traffic went through its programs (vxlan: encap, decap, straight
//!   into registered pods; host-gw: the fast path both ways). The cluster
//!   has no IPv4 anywhere, so every counted packet is IPv6.
//! - `ipv6_only_vxlan_with_flannel_node`: two weftd nodes and an IPv6-only
//!   flannel node share leases and talk VXLAN over IPv6 both ways.
use std::{net::Ipv6Addr, time::Duration};

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{
    cluster::{ipv6_only_config, node_ip6, IPV6_NETWORK},
    cmd,
    flannel_node::FLANNEL_V6_DEV,
    pod::Family,
    subnet_env::{parse_lease_name6, Ipv6Cidr},
    traffic,
    weft_node::OVERLAY6_DEV,
    Cluster, NodeRef, Wiring,
};

/// Pings per pair, and bytes per TCP transfer.
const PINGS: u32 = 3;
const TCP_BYTES: u64 = 1 << 20;

/// Node `n`'s eth0 has its fd77::N and no IPv4 address at all.
fn underlay_is_ipv6_only(c: &Cluster, n: NodeRef) -> Result<()> {
    let ns = c.node_ns(n)?;
    let v4 = ns.ip(&["-4", "addr", "show", "dev", "eth0"])?;
    ensure!(v4.trim().is_empty(), "node {n}: eth0 has IPv4 addresses in an IPv6-only cluster:\n{v4}");
    let v6 = ns.ip(&["-6", "addr", "show", "dev", "eth0", "scope", "global"])?;
    ensure!(v6.contains(&format!("inet6 {}/64", node_ip6(n))), "node {n}: eth0 lacks {}/64:\n{v6}", node_ip6(n));
    Ok(())
}

/// weftd's subnet.env on node `n` is an IPv6-only node's, as flanneld
/// writes it: no FLANNEL_NETWORK, no FLANNEL_SUBNET; FLANNEL_IPV6_NETWORK
/// the cluster's, FLANNEL_IPV6_SUBNET a /64 of it written as its gateway.
fn check_subnet_env(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    let text = std::fs::read_to_string(&w.subnet_file).with_context(|| format!("node {n}: {}", w.subnet_file.display()))?;
    for key in ["FLANNEL_NETWORK=", "FLANNEL_SUBNET="] {
        ensure!(!text.lines().any(|l| l.starts_with(key)), "node {n}: an IPv6-only node's subnet.env has {key}:\n{text}");
    }
    let env = w.subnet_env()?;
    let net6 = Ipv6Cidr::parse(IPV6_NETWORK).context("IPV6_NETWORK")?;
    ensure!(env.ipv6_network == Some(net6), "node {n}: FLANNEL_IPV6_NETWORK is {:?}, want {net6}:\n{text}", env.ipv6_network);
    let s6 = env.ipv6_subnet.with_context(|| format!("node {n}: no FLANNEL_IPV6_SUBNET:\n{text}"))?;
    ensure!(s6.prefix_len == 64 && net6.contains(s6.addr), "node {n}: FLANNEL_IPV6_SUBNET {s6} is not a /64 of {net6}:\n{text}");
    ensure!(text.lines().any(|l| l == format!("FLANNEL_IPV6_SUBNET={}/64", s6.host(1))), "node {n}: FLANNEL_IPV6_SUBNET is not {}/64:\n{text}", s6.host(1));
    ensure!(env.subnet.is_none() && env.network.is_none(), "node {n}: {env:?}");
    Ok(())
}

/// Every lease in the store is flannel's IPv6-only form: key
/// `0.0.0.0-0&<v6 subnet>-64` (flannel's MakeSubnetKey with no IPv4
/// subnet), the v6 part the node's subnet.env's; `"PublicIP":"0.0.0.0"`,
/// PublicIPv6 the node's fd77::N, BackendType `backend`, no BackendData;
/// vxlan: BackendV6Data {VNI 1, a MAC}.
fn check_leases(c: &Cluster, backend: &str) -> Result<()> {
    let leases = c.leases()?;
    ensure!(leases.len() == c.nodes().len(), "{} leases for {} nodes: {leases:#?}", leases.len(), c.nodes().len());
    for n in c.nodes() {
        let s6 = c.node_env(n)?.ipv6_subnet.with_context(|| format!("node {n} has no IPv6 subnet"))?;
        let name = format!("0.0.0.0-0&{}-64", s6.addr);
        let (k, v) = leases
            .iter()
            .find(|(k, _)| k.rsplit('/').next() == Some(name.as_str()))
            .with_context(|| format!("node {n}: no lease named {name} (flannel's IPv6-only key) in {leases:#?}"))?;
        ensure!(parse_lease_name6(k).map(Ipv6Cidr::trunc) == Some(s6), "node {n}: lease key {k} does not name {s6}");
        let j: serde_json::Value = serde_json::from_str(v).with_context(|| format!("lease {k}: {v}"))?;
        let want6 = node_ip6(n).to_string();
        ensure!(j["PublicIP"] == "0.0.0.0", "node {n}: lease {k} = {v}: PublicIP is not 0.0.0.0");
        ensure!(j["PublicIPv6"] == want6.as_str(), "node {n}: lease {k} = {v}: PublicIPv6 is not {want6}");
        ensure!(j["BackendType"] == backend, "node {n}: lease {k} = {v}: BackendType is not {backend}");
        ensure!(j.get("BackendData").is_none_or(|d| d.is_null()), "node {n}: lease {k} = {v}: an IPv6-only lease with BackendData");
        if backend == "vxlan" {
            let mac = j.pointer("/BackendV6Data/VtepMAC").and_then(|m| m.as_str()).unwrap_or_default();
            ensure!(j["BackendV6Data"]["VNI"] == 1 && mac.len() == 17, "node {n}: lease {k} = {v}: BackendV6Data is not {{\"VNI\":1,\"VtepMAC\":<MAC>}}");
        } else {
            ensure!(j.get("BackendV6Data").is_none_or(|d| d.is_null()), "node {n}: {backend} lease {k} with BackendV6Data: {v}");
        }
    }
    Ok(())
}

/// Counters of node `n`, by [`weft_common::stat`] index.
fn counters(c: &Cluster, n: NodeRef, which: &[u32]) -> Result<Vec<u64>> {
    which.iter().map(|&i| Ok(c.stat_counter(n, i)?.0)).collect()
}

/// Waits (10 s) until weftd on node `n` has `k` IPv6 pods in weft_pods6
/// and none in weft_pods (an IPv6-only node's records have no `ip`).
fn wait_registered6(c: &Cluster, n: NodeRef, k: usize) -> Result<()> {
    let w = c.weft_node(n)?;
    let pods6 = weft_common::pins::dir(&w.pin_dir).join(weft_common::map_names::PODS6);
    let len = |p: &std::path::Path| weft_tests::bpf::map_dump(p).map(|v| v.as_array().map(|a| a.len()).unwrap_or(0)).map_err(|e| format!("{e:#}"));
    cmd::poll(&format!("node {n}: {k} pods in weft_pods6"), Duration::from_secs(10), Duration::from_millis(100), || {
        let (six, four) = (len(&pods6)?, len(&w.pods_pin())?);
        if six == k && four == 0 {
            Ok(Some(()))
        } else {
            Err(format!("weft_pods6 {six} entries, weft_pods {four}\n{}", w.log_tail(5)))
        }
    })
}

/// Pods: node 1 two by weft-cni (registered by their records), node 2 a
/// bridge pod and a veth+route pod (unregistered), node 3 two bridge pods,
/// the first registered by a record the harness writes (no `ip`). Each has
/// an IPv6 address and no IPv4 one.
fn pods(c: &mut Cluster) -> Result<Vec<usize>> {
    let v = vec![
        c.add_pod(1, Wiring::Cni)?,
        c.add_pod(1, Wiring::Cni)?,
        c.add_pod(2, Wiring::Bridge)?,
        c.add_pod(2, Wiring::VethRoute)?,
        c.add_pod(3, Wiring::Bridge)?,
        c.add_pod(3, Wiring::Bridge)?,
    ];
    for &p in &v {
        let pod = &c.pods[p];
        ensure!(pod.ip6.is_some() && pod.ip4.is_none(), "pod {} on IPv6-only node {}: {:?} {:?}", pod.ns.name(), pod.node, pod.ip4, pod.ip6);
        let a4 = pod.ns.ip(&["-4", "addr", "show", "dev", "eth0"])?;
        ensure!(a4.trim().is_empty(), "pod {} has an IPv4 address:\n{a4}", pod.ns.name());
    }
    let rec = c.register_endpoint(v[4])?;
    let text = std::fs::read_to_string(&rec)?;
    ensure!(!text.contains("\"ip\":") && text.contains("\"ip6\":"), "the IPv6-only pod's record: {text}");
    wait_registered6(c, 1, 2)?;
    wait_registered6(c, 3, 1)?;
    Ok(v)
}

/// Three weftd nodes on `backend`, IPv6-only; subnet.env, leases, routes.
fn cluster(backend: &str, embedded: bool) -> Result<Cluster> {
    let c = Cluster::builder().ipv6_only().config_json(&ipv6_only_config(backend)).embedded_store_if(embedded).weft_nodes(3).build()?;
    for n in c.nodes() {
        underlay_is_ipv6_only(&c, n)?;
        check_subnet_env(&c, n)?;
    }
    check_leases(&c, backend)?;
    c.wait_converged().context("weft nodes programming every peer's IPv6 subnet")?;
    Ok(c)
}

#[test]
fn flannel_ipv6_only_selftest() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(0).ipv6_only().build()?;
    let a = c.add_flannel_node()?;
    let b = c.add_flannel_node()?;
    for n in [a, b] {
        underlay_is_ipv6_only(&c, n)?;
        ensure!(!c.node_ns(n)?.ip(&["link", "show"])?.contains("flannel.1"), "node {n}: an IPv6-only flannel node has flannel.1");
    }
    check_leases(&c, "vxlan")?;
    let pa = c.add_pod(a, Wiring::Bridge)?;
    let pb = c.add_pod(b, Wiring::Bridge)?;
    let pbv = c.add_pod(b, Wiring::VethRoute)?;
    let ip6 = |p: usize| c.pods[p].ip6.context("no IPv6 address");
    ensure!(c.pods.iter().all(|p| p.ip4.is_none()), "a pod of an IPv6-only node has an IPv4 address");
    traffic::ping6_ok(c.node_ns(a)?, node_ip6(b), 2).context("IPv6 underlay node a -> node b")?;
    traffic::ping6_fails(&c.pods[pa].ns, ip6(pb)?, 2).context("flannel nodes not programmed yet")?;
    c.program_flannel_nodes()?;
    let fb = c.flannel_node(b)?;
    let s6 = fb.env.ipv6_subnet.context("flannel node b has no v6 subnet")?;
    let routes = c.node_ns(a)?.ip(&["-6", "route", "show", "dev", FLANNEL_V6_DEV])?;
    ensure!(
        routes.lines().any(|l| l.starts_with(&format!("{s6} via {} ", s6.addr)) && l.contains("onlink")),
        "node a: no `{s6} via {} dev {FLANNEL_V6_DEV} onlink`:\n{routes}",
        s6.addr
    );
    let v4routes = c.node_ns(a)?.ip(&["-4", "route", "show"])?;
    ensure!(!v4routes.contains("10.244."), "node a: IPv4 pod routes on an IPv6-only node:\n{v4routes}");
    c.traffic_across_nodes(&[pa, pb, pbv], Family::V6, PINGS, 4 << 20)?;
    traffic::ping6_ok(c.node_ns(a)?, ip6(pb)?, 2).context("IPv6: node a's host -> pod on node b")?;
    traffic::ping6_fails(&c.pods[pa].ns, "fd44:0:0:fa::2".parse()?, 2).context("a v6 subnet without a lease")?;
    c.node_ns(b)?.ip(&["link", "del", FLANNEL_V6_DEV])?;
    traffic::ping6_fails(&c.pods[pa].ns, ip6(pb)?, 2).context("IPv6 with node b's flannel-v6.1 deleted")?;
    c.pass();
    Ok(())
}

/// vxlan over IPv6, weftd's embedded store: every node encapsulates
/// (`weft_encap6`) and validates and marks incoming VXLAN (`weft_decap`,
/// decap_kernel); the registered pods' nodes deliver straight into them
/// (decap_to_pod), the unregistered ones' through the stack (decap); no
/// spoofed, unknown-VTEP or unvalidated drops.
#[test]
fn ipv6_only_vxlan() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = cluster("vxlan", true)?;
    for w in &c.weft {
        ensure!(w.has_link(OVERLAY6_DEV), "node {}: no {} on an IPv6-only vxlan node", w.n, OVERLAY6_DEV);
    }
    let pods = pods(&mut c)?;
    let which = [stat::ENCAP, stat::DECAP_KERNEL, stat::DECAP, stat::DECAP_TO_POD, stat::DROP_SPOOFED, stat::DROP_UNKNOWN_VTEP, stat::DROP_UNVALIDATED];
    let before: Vec<Vec<u64>> = c.nodes().iter().map(|&n| counters(&c, n, &which)).collect::<Result<_>>()?;
    c.traffic_across_nodes(&pods, Family::V6, PINGS, TCP_BYTES)?;
    // Host-originated IPv6 into a registered pod.
    traffic::ping6_ok(c.node_ns(2)?, c.pods[pods[0]].ip6.context("no v6")?, 2).context("IPv6: node 2's host -> weft-cni pod on node 1")?;
    for (i, &n) in c.nodes().iter().enumerate() {
        let after = counters(&c, n, &which)?;
        let d: Vec<u64> = after.iter().zip(&before[i]).map(|(a, b)| a - b).collect();
        let what = format!("node {n}: counter deltas encap {} decap_kernel {} decap {} decap_to_pod {} drops {:?}", d[0], d[1], d[2], d[3], &d[4..]);
        eprintln!("{what}");
        // Each node's pods sent PINGS echo requests to each of 4 pods elsewhere, and answered theirs.
        ensure!(d[0] >= 4 * PINGS as u64, "{what}: weft_encap6 did not carry the IPv6 traffic this node sent");
        ensure!(d[1] >= 4 * PINGS as u64, "{what}: weft_decap did not validate the IPv6 VXLAN this node received");
        let delivered = if n == 2 { d[2] } else { d[3] };
        ensure!(
            delivered >= 4 * PINGS as u64,
            "{what}: weft_overlay_in6 did not deliver into this node's pods ({})",
            if n == 2 { "decap" } else { "decap_to_pod" }
        );
        ensure!(d[4..].iter().all(|x| *x == 0), "{what}: drops in a cluster with only genuine traffic");
    }
    c.pass();
    Ok(())
}

/// host-gw over IPv6, leases in etcd (reached at [fd77::fe]:2379): routes
/// `<v6 subnet> via fd77::M dev eth0`; the fast path forwards the pods'
/// IPv6 traffic out of every node (fwd) and delivers it straight into the
/// registered pods (routed_to_pod).
#[test]
fn ipv6_only_host_gw() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = cluster("host-gw", false)?;
    ensure!(c.store.etcd().is_ok(), "this test runs on etcd");
    for w in &c.weft {
        ensure!(!w.has_link(OVERLAY6_DEV) && !w.has_link("weft.1"), "node {}: an overlay device on a host-gw node", w.n);
    }
    let pods = pods(&mut c)?;
    let which = [stat::FWD, stat::ROUTED_TO_POD];
    let before: Vec<Vec<u64>> = c.nodes().iter().map(|&n| counters(&c, n, &which)).collect::<Result<_>>()?;
    c.traffic_across_nodes(&pods, Family::V6, PINGS, TCP_BYTES)?;
    for (i, &n) in c.nodes().iter().enumerate() {
        let after = counters(&c, n, &which)?;
        let (fwd, to_pod) = (after[0] - before[i][0], after[1] - before[i][1]);
        eprintln!("node {n}: fwd +{fwd}, routed_to_pod +{to_pod}");
        ensure!(fwd >= 4 * PINGS as u64, "node {n}: the fast path forwarded {fwd} packets of this node's pods' IPv6 traffic");
        if n != 2 {
            ensure!(to_pod >= 4 * PINGS as u64, "node {n}: only {to_pod} IPv6 packets went straight into the registered pods");
        }
    }
    c.pass();
    Ok(())
}

/// Two weftd nodes and an IPv6-only flannel node (flannel-v6.1, its
/// `0.0.0.0-0&` lease): both sides program each other and pods talk over
/// IPv6 VXLAN both ways.
#[test]
fn ipv6_only_vxlan_with_flannel_node() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().ipv6_only().embedded_store().weft_nodes(2).build()?;
    let f = c.add_flannel_node()?;
    check_leases(&c, "vxlan")?;
    c.program_flannel_nodes()?;
    c.wait_converged().context("weft nodes programming the flannel node's IPv6 subnet")?;
    let pods = vec![c.add_pod(1, Wiring::Cni)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(f, Wiring::Bridge)?, c.add_pod(f, Wiring::VethRoute)?];
    c.traffic_across_nodes(&pods, Family::V6, PINGS, TCP_BYTES)?;
    let to: Ipv6Addr = c.pods[pods[0]].ip6.context("no v6")?;
    traffic::ping6_ok(c.node_ns(f)?, to, 2).context("IPv6: flannel host -> weft-cni pod")?;
    c.pass();
    Ok(())
}
