//! Dual stack (issue 23): an IPv6 underlay (fd77::/64) next to the IPv4 one,
//! `"EnableIPv6":true,"IPv6Network":"fd44::/48"`, pods with both families.
//!
//! - `flannel_dual_stack_selftest` needs no weftd: two nodes programmed as
//!   flanneld v0.2x programs the kernel in dual stack (flannel.1 and
//!   flannel-v6.1) carry ping and TCP over both families both ways. If it
//!   fails, the harness is broken, not weftd.
//! - `dual_stack_vxlan_mixed`, `dual_stack_host_gw_mixed`: three weftd nodes
//!   and a flannel-programmed node: subnet.env with flannel's IPv6 keys,
//!   every lease in the `&` form with PublicIPv6 (and, vxlan,
//!   BackendV6Data), ping and TCP over both families between all pods.
//! - `dual_stack_restart_loses_no_ipv6_ping`: kill -9 and restart of one
//!   weftd under a 200/s IPv6 ping flood loses no echo request.
use std::{net::Ipv6Addr, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{
    cluster::{dual_stack_config, node_ip6, IPV6_NETWORK},
    cmd,
    flannel_node::FLANNEL_V6_DEV,
    pod::Family,
    subnet_env::{parse_lease_name, parse_lease_name6, Ipv4Subnet, Ipv6Cidr},
    traffic::{self, PingFlood},
    weft_node::{PinnedLink, OVERLAY6_DEV},
    Cluster, NodeRef, Wiring,
};

/// Pings per pair and family, and bytes per TCP transfer.
const PINGS: u32 = 3;
const TCP_BYTES: u64 = 1 << 20;

/// weftd's subnet.env on node `n` has flannel's IPv6 keys: the cluster's
/// IPv6Network, and a /64 of it whose first address is the gateway.
fn check_subnet_env_v6(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    let text = std::fs::read_to_string(&w.subnet_file).with_context(|| format!("node {n}: {}", w.subnet_file.display()))?;
    let env = w.subnet_env()?;
    let net6 = Ipv6Cidr::parse(IPV6_NETWORK).context("IPV6_NETWORK")?;
    let Some(got) = env.ipv6_network else {
        bail!("node {n}: weftd ignored the dual-stack config: its subnet.env has no FLANNEL_IPV6_NETWORK (want {net6}):\n{text}");
    };
    ensure!(got == net6, "node {n}: FLANNEL_IPV6_NETWORK={got}, want {net6}:\n{text}");
    let s6 = env.ipv6_subnet.with_context(|| format!("node {n}: subnet.env has FLANNEL_IPV6_NETWORK but no FLANNEL_IPV6_SUBNET:\n{text}"))?;
    ensure!(s6.prefix_len == 64 && net6.contains(s6.addr), "node {n}: FLANNEL_IPV6_SUBNET {s6} is not a /64 of {net6} (IPv6SubnetLen defaults to 64):\n{text}");
    Ok(())
}

/// Every lease in the store is in flannel's dual-stack form: key
/// `<v4>-24&<v6>-64`, the v6 part the node's subnet.env's (weft nodes),
/// PublicIP and PublicIPv6 the node's underlay addresses, BackendType
/// `backend`; vxlan: BackendData and BackendV6Data, each {VNI 1, a MAC}.
fn check_leases_v6(c: &Cluster, backend: &str) -> Result<()> {
    let leases = c.leases()?;
    for (k, v) in &leases {
        ensure!(
            parse_lease_name6(k).is_some(),
            "lease key {k} has no IPv6 part (`&<v6 subnet>-64`, flannel's MakeSubnetKey): weftd did not take the dual-stack config; value {v}"
        );
    }
    for n in c.nodes() {
        let env = c.node_env(n)?;
        let (k, v) = leases
            .iter()
            .find(|(k, _)| parse_lease_name(k).is_some_and(|(s, _)| s == env.v4().addr))
            .with_context(|| format!("node {n}: no lease for {} in {leases:#?}", env.cidr()))?;
        let j: serde_json::Value = serde_json::from_str(v).with_context(|| format!("lease {k}: {v}"))?;
        let want6 = node_ip6(n).to_string();
        ensure!(j["PublicIP"] == c.node_ip(n)?.to_string().as_str(), "node {n}: lease {k} = {v}: PublicIP is not {}", c.node_ip(n)?);
        ensure!(j["PublicIPv6"] == want6.as_str(), "node {n}: lease {k} = {v}: PublicIPv6 is not {want6} (the global IPv6 address of its eth0)");
        ensure!(j["BackendType"] == backend, "node {n}: lease {k} = {v}: BackendType is not {backend}");
        let s6 = parse_lease_name6(k).map(Ipv6Cidr::trunc);
        ensure!(s6 == env.ipv6_subnet, "node {n}: lease key {k} says IPv6 subnet {s6:?}, its subnet.env {:?}", env.ipv6_subnet);
        if backend == "vxlan" {
            for field in ["BackendData", "BackendV6Data"] {
                let mac = j.pointer(&format!("/{field}/VtepMAC")).and_then(|m| m.as_str()).unwrap_or_default();
                ensure!(j[field]["VNI"] == 1 && mac.len() == 17, "node {n}: lease {k} = {v}: {field} is not {{\"VNI\":1,\"VtepMAC\":<MAC>}}");
            }
            ensure!(j["BackendData"]["VtepMAC"] != j["BackendV6Data"]["VtepMAC"], "node {n}: lease {k} = {v}: the v4 and v6 devices share a VtepMAC");
        } else {
            for field in ["BackendData", "BackendV6Data"] {
                ensure!(j.get(field).is_none_or(|d| d.is_null()), "node {n}: {backend} lease {k} with {field}: {v}");
            }
        }
    }
    Ok(())
}

/// One pod per node (Bridge), plus a VethRoute pod on `veth_node`.
fn pods(c: &mut Cluster, veth_node: NodeRef) -> Result<Vec<usize>> {
    let mut v = Vec::new();
    for n in c.nodes() {
        v.push(c.add_pod(n, Wiring::Bridge)?);
    }
    v.push(c.add_pod(veth_node, Wiring::VethRoute)?);
    for &p in &v {
        ensure!(c.pods[p].ip6.is_some(), "pod {} on dual-stack node {} has no IPv6 address", c.pods[p].ns.name(), c.pods[p].node);
    }
    Ok(v)
}

#[test]
fn flannel_dual_stack_selftest() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(0).dual_stack().build()?;
    let a = c.add_flannel_node()?;
    let b = c.add_flannel_node()?;
    check_leases_v6(&c, "vxlan")?;
    let pa = c.add_pod(a, Wiring::Bridge)?;
    let pb = c.add_pod(b, Wiring::Bridge)?;
    let pbv = c.add_pod(b, Wiring::VethRoute)?;
    let ip6 = |p: usize| c.pods[p].ip6.context("no IPv6 address");
    // The underlay carries IPv6 at once (nodad): node to node, no overlay.
    traffic::ping6_ok(c.node_ns(a)?, node_ip6(b), 2).context("IPv6 underlay node a -> node b")?;
    // Not programmed yet: no route between the nodes' v6 subnets.
    traffic::ping6_fails(&c.pods[pa].ns, ip6(pb)?, 2).context("flannel nodes not programmed yet")?;
    c.program_flannel_nodes()?;
    // flanneld's v6 shape on node a for node b's lease.
    let fb = c.flannel_node(b)?;
    let s6 = fb.env.ipv6_subnet.context("flannel node b has no v6 subnet")?;
    let routes = c.node_ns(a)?.ip(&["-6", "route", "show", "dev", FLANNEL_V6_DEV])?;
    ensure!(
        routes.lines().any(|l| l.starts_with(&format!("{s6} via {} ", s6.addr)) && l.contains("onlink")),
        "node a: no `{s6} via {} dev {FLANNEL_V6_DEV} onlink`:\n{routes}",
        s6.addr
    );
    let neigh = c.node_ns(a)?.ip(&["-6", "neigh", "show", "dev", FLANNEL_V6_DEV])?;
    ensure!(neigh.contains(&format!("{} lladdr {} PERMANENT", s6.addr, fb.mac6)), "node a: no permanent v6 neighbour {} -> {}:\n{neigh}", s6.addr, fb.mac6);
    let fdb = cmd::sh("bridge", &["-n", c.node_ns(a)?.name(), "fdb", "show", "dev", FLANNEL_V6_DEV])?;
    ensure!(fdb.contains(&format!("{} dst {} self permanent", fb.mac6, node_ip6(b))), "node a: no FDB entry {} dst {}:\n{fdb}", fb.mac6, node_ip6(b));
    let pods = [pa, pb, pbv];
    for family in Family::BOTH {
        c.traffic_across_nodes(&pods, family, PINGS, 4 << 20)?;
    }
    // Host-originated over IPv6.
    traffic::ping6_ok(c.node_ns(a)?, ip6(pb)?, 2).context("IPv6: node a's host -> pod on node b")?;
    // No lease for fd44:0:0:fa::/64: nothing may answer.
    traffic::ping6_fails(&c.pods[pa].ns, "fd44:0:0:fa::2".parse()?, 2).context("a v6 subnet without a lease")?;
    // Without flannel-v6.1 node b cannot decapsulate IPv6: v6 fails, v4 still
    // works (the v6 traffic above went through the v6 VXLAN tunnel).
    c.node_ns(b)?.ip(&["link", "del", FLANNEL_V6_DEV])?;
    traffic::ping6_fails(&c.pods[pa].ns, ip6(pb)?, 2).context("IPv6 with node b's flannel-v6.1 deleted")?;
    traffic::ping_ok(&c.pods[pa].ns, c.pods[pb].ip(), 2).context("IPv4 with node b's flannel-v6.1 deleted")?;
    c.pass();
    Ok(())
}

/// Three weftd nodes (`config`, dual stack, etcd) and a flannel node of the
/// same backend: subnet.env, leases, routes, then traffic over both
/// families between every pair of pods on different nodes.
fn mixed(config: &str, backend: &str) -> Result<()> {
    let mut c = Cluster::builder().dual_stack().config_json(config).weft_nodes(3).build()?;
    for n in c.nodes() {
        check_subnet_env_v6(&c, n)?;
    }
    let f = if backend == "host-gw" { c.add_flannel_host_gw_node()? } else { c.add_flannel_node()? };
    check_leases_v6(&c, backend)?;
    for w in &c.weft {
        let has = w.has_link(OVERLAY6_DEV);
        ensure!(has == (backend == "vxlan"), "node {}: {OVERLAY6_DEV} {} on a {backend} cluster", w.n, if has { "exists" } else { "is missing" });
    }
    c.program_flannel_nodes()?;
    c.wait_converged().context("weft nodes programming every peer, IPv4 and IPv6")?;
    let pods = pods(&mut c, 2)?;
    for family in Family::BOTH {
        c.traffic_across_nodes(&pods, family, PINGS, TCP_BYTES)?;
    }
    let p2 = c.pods.iter().position(|p| p.node == 2 && p.wiring == Wiring::VethRoute).context("veth pod")?;
    traffic::ping6_ok(c.node_ns(f)?, c.pods[p2].ip6.context("no v6")?, 2).context("IPv6: flannel host -> weft veth pod")?;
    c.pass();
    Ok(())
}

#[test]
fn dual_stack_vxlan_mixed() -> Result<()> {
    weft_tests::require_root()?;
    mixed(&dual_stack_config("10.244.0.0/16", "vxlan"), "vxlan")
}

#[test]
fn dual_stack_host_gw_mixed() -> Result<()> {
    weft_tests::require_root()?;
    mixed(&dual_stack_config("10.244.0.0/16", "host-gw"), "host-gw")
}

/// As restart_without_loss.rs, over IPv6: while a pod pings another over
/// IPv6 at 200/s, node 1's weftd is killed with SIGKILL and started again;
/// no echo request is lost, and the new weftd replaced its programs
/// through the pinned links.
#[test]
fn dual_stack_restart_loses_no_ipv6_ping() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().weft_nodes(2).build()?;
    for n in c.nodes() {
        check_subnet_env_v6(&c, n)?;
    }
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p1)?;
    c.register_endpoint(p2)?;
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll("pod registered", Duration::from_secs(10), Duration::from_millis(100), || {
            let k = weft_tests::bpf::map_dump(&w.pods_pin()).map_err(|e| format!("{e:#}"))?.as_array().map(|a| a.len()).unwrap_or(0);
            if k >= 1 {
                Ok(Some(()))
            } else {
                Err(format!("{k} entries"))
            }
        })?;
    }
    let to: Ipv6Addr = c.pods[p2].ip6.context("pod 2 has no IPv6 address")?;
    traffic::ping6_ok(&c.pods[p1].ns, to, 3).context("IPv6 before the restart")?;
    let before: Vec<PinnedLink> = c.weft_node(1)?.pinned_links()?;
    // 2,000 echo requests at 200/s: 10 s, bounded by count and by timeout.
    let flood = PingFlood::start6(&c.pods[p1].ns, to, 2000, 25, 200)?;
    std::thread::sleep(Duration::from_millis(2000));
    c.weft_node_mut(1)?.kill();
    c.start_weftd(1)?;
    c.weft_node(1)?.wait_links_replaced(&before, Duration::from_secs(15)).context("node 1's new weftd")?;
    let summary = flood.all_answered("IPv6 across a kill -9 restart of node 1's weftd")?;
    eprintln!("ping -6: {summary}");
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("IPv4 after the restart")?;
    c.pass();
    Ok(())
}
