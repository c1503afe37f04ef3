//! vxlan with `"DirectRouting": true`: a peer on our L2 segment is routed
//! host-gw style (`via <PublicIP> dev eth0`, no encapsulation), a peer behind
//! the router through VXLAN; every pod reaches every pod. Two nodes on
//! segment A, one on segment B. A registered pod gets the direct peer's
//! packets straight from weft_decap (`routed_to_pod`).
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{cmd, subnet_env::Ipv4Subnet, traffic, Cluster, Wiring};

#[test]
fn direct_routing_per_peer() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().segments(&[2, 1]).config_json(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).build()?;
    let sub = |n: u32| c.node_env(n).map(|e| e.cidr());
    let (s1, s2, s3) = (sub(1)?, sub(2)?, sub(3)?);
    // (node, peers reached directly via their PublicIP, peers through weft.1)
    let plan = [
        (1, vec![(s2.clone(), c.node_ip(2)?)], vec![s3.clone()]),
        (2, vec![(s1.clone(), c.node_ip(1)?)], vec![s3.clone()]),
        (3, vec![], vec![s1.clone(), s2.clone()]),
    ];
    for (n, direct, tunnel) in &plan {
        let w = c.weft_node(*n)?;
        w.wait_route_split(direct, tunnel)?;
    }
    let pods: Vec<usize> = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::VethRoute)?, c.add_pod(3, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 3)?;
    // Node 1 encapsulates for node 3 only: pinging node 2's pod adds nothing.
    let encap = || c.stat_counter(1, stat::ENCAP).map(|(p, _)| p);
    let fwd = || c.stat_counter(1, stat::FWD).map(|(p, _)| p);
    let (before, fwd_before) = (encap()?, fwd()?);
    traffic::ping_ok(&c.pods[pods[0]].ns, c.pods[pods[1]].ip(), 5)?;
    ensure!(encap()? == before, "traffic to a same-segment peer was encapsulated");
    // The bridge pod's echo requests took the fast path (weft_fwd on cni0).
    ensure!(fwd()? >= fwd_before + 5, "the fast path forwarded {} of 5 echo requests to the direct peer", fwd()? - fwd_before);
    // Registered, node 1's bridge pod gets the direct peer's packets from
    // weft_decap straight into it (no VXLAN: the routed-peer delivery).
    c.register_endpoint(pods[0])?;
    let routed = || c.stat_counter(1, stat::ROUTED_TO_POD).map(|(p, _)| p);
    cmd::poll("node 1 to deliver the direct peer's pings straight into pod 1", Duration::from_secs(10), Duration::from_millis(200), || {
        let r0 = routed().map_err(|e| format!("{e:#}"))?;
        traffic::ping(&c.pods[pods[1]].ns, c.pods[pods[0]].ip(), 1).map_err(|e| format!("{e:#}"))?;
        if routed().map_err(|e| format!("{e:#}"))? > r0 {
            Ok(Some(()))
        } else {
            Err("not yet".into())
        }
    })?;
    let r0 = routed()?;
    traffic::ping_ok(&c.pods[pods[1]].ns, c.pods[pods[0]].ip(), 5)?;
    ensure!(routed()? >= r0 + 5, "node 1 delivered {} of 5 echo requests from the direct peer straight into pod 1", routed()? - r0);
    traffic::ping_ok(&c.pods[pods[0]].ns, c.pods[pods[2]].ip(), 5)?;
    ensure!(encap()? >= before + 5, "traffic across the router was not encapsulated");
    let t = traffic::tcp_transfer(&c.pods[pods[0]].ns, &c.pods[pods[2]].ns, c.pods[pods[2]].ip(), 2 << 20).context("tcp A -> B through VXLAN")?;
    eprintln!("tcp across the router: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}

/// Mixed: two weft nodes and a flannel-programmed DirectRouting node on
/// segment A, a flannel vxlan node on segment B. Same-segment peers route
/// directly both ways between weft and flannel, B is reached through VXLAN by
/// everyone, and every pod reaches every pod.
#[test]
fn direct_routing_mixed_with_flannel() -> Result<()> {
    use weft_tests::flannel_node::FlannelBackend;
    weft_tests::require_root()?;
    let mut c = Cluster::builder().segments(&[2]).config_json(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).build()?;
    let fa = c.add_flannel_node_with(FlannelBackend::VxlanDirect, 0)?;
    let fb = c.add_flannel_node_with(FlannelBackend::Vxlan, 1)?;
    c.program_flannel_nodes()?;
    let (sfa, sfb) = (c.node_env(fa)?.cidr(), c.node_env(fb)?.cidr());
    let ip_fa = c.node_ip(fa)?;
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll(&format!("weft node {n}: {sfa} direct, {sfb} through weft.1"), Duration::from_secs(20), Duration::from_millis(200), || {
            let host = w.host_gw_routes().map_err(|e| format!("{e:#}"))?;
            let overlay = w.overlay_routes().map_err(|e| format!("{e:#}"))?;
            if host.lines().any(|l| l.starts_with(&format!("{sfa} via {ip_fa} dev eth0"))) && overlay.lines().any(|l| l.starts_with(sfb.as_str())) {
                Ok(Some(()))
            } else {
                Err(format!("proto 254 routes:\n{host}\nweft.1 routes:\n{overlay}"))
            }
        })?;
    }
    let fa_routes = c.node_ns(fa)?.ip(&["-4", "route"])?;
    ensure!(
        fa_routes.contains(&format!("{} via {} dev eth0", c.node_env(1)?.cidr(), c.node_ip(1)?)),
        "flannel DirectRouting node routes weft node 1 directly:\n{fa_routes}"
    );
    let pods: Vec<usize> = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(fa, Wiring::Bridge)?, c.add_pod(fb, Wiring::Bridge)?];
    c.ping_across_nodes(&pods, 2)?;
    let t = traffic::tcp_transfer(&c.pods[pods[2]].ns, &c.pods[pods[0]].ns, c.pods[pods[0]].ip(), 2 << 20).context("tcp flannel (direct) -> weft")?;
    eprintln!("tcp flannel direct -> weft: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}

/// DirectRouting over IPv6 (dual stack, one segment): every peer's
/// PublicIPv6 is on our segment, so each IPv6 subnet is routed `via
/// <PublicIPv6> dev eth0` (flanneld does the same for IPv6), nothing IPv6 is
/// encapsulated, the bridge pods' IPv6 takes the fast path (`weft_hostgw6`),
/// and every pod reaches every pod over IPv6.
#[test]
fn direct_routing_ipv6_peers_are_routed() -> Result<()> {
    use weft_tests::cluster::{node_ip6, IPV6_NETWORK};
    weft_tests::require_root()?;
    let cfg = format!(r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"{IPV6_NETWORK}","Backend":{{"Type":"vxlan","DirectRouting":true}}}}"#);
    let mut c = Cluster::builder().weft_nodes(3).dual_stack().config_json(&cfg).build()?;
    for n in c.nodes() {
        let want: Vec<String> = c
            .nodes()
            .into_iter()
            .filter(|m| *m != n)
            .map(|m| Ok(format!("{} via {} dev eth0", c.node_env(m)?.ipv6_subnet.context("no FLANNEL_IPV6_SUBNET")?, node_ip6(m))))
            .collect::<Result<_>>()?;
        let ns = c.node_ns(n)?;
        cmd::poll(&format!("node {n}: IPv6 peers routed via their PublicIPv6"), Duration::from_secs(20), Duration::from_millis(200), || {
            let routes = ns.ip(&["-6", "route", "show", "proto", "254"]).map_err(|e| format!("{e:#}"))?;
            let via_overlay = ns.ip(&["-6", "route", "show", "dev", weft_tests::weft_node::OVERLAY6_DEV]).map_err(|e| format!("{e:#}"))?;
            let missing: Vec<&String> = want.iter().filter(|w| !routes.lines().any(|l| l.starts_with(w.as_str()))).collect();
            if missing.is_empty() && !via_overlay.lines().any(|l| l.starts_with("fd44:")) {
                Ok(Some(()))
            } else {
                Err(format!("missing {missing:?}; weft's IPv6 routes:\n{routes}\nvia the IPv6 overlay:\n{via_overlay}"))
            }
        })?;
    }
    let pods: Vec<usize> = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::VethRoute)?];
    let ip6 = |i: usize| c.pods[pods[i]].ip6.context("pod without an IPv6 address");
    let encap = || c.stat_counter(1, stat::ENCAP).map(|(p, _)| p);
    let fwd = || c.stat_counter(1, stat::FWD).map(|(p, _)| p);
    let (encap0, fwd0) = (encap()?, fwd()?);
    traffic::ping6_ok(&c.pods[pods[0]].ns, ip6(1)?, 5)?;
    traffic::ping6_ok(&c.pods[pods[0]].ns, ip6(2)?, 5)?;
    ensure!(encap()? == encap0, "IPv6 to a same-segment peer was encapsulated ({} packets)", encap()? - encap0);
    ensure!(fwd()? >= fwd0 + 10, "the fast path forwarded {} of 10 IPv6 echo requests to the direct peers", fwd()? - fwd0);
    for (a, b) in [(1, 0), (2, 0), (2, 1)] {
        traffic::ping6_ok(&c.pods[pods[a]].ns, ip6(b)?, 3)?;
    }
    let t = traffic::tcp_transfer6(&c.pods[pods[0]].ns, &c.pods[pods[2]].ns, ip6(2)?, 2 << 20).context("tcp over IPv6, routed directly")?;
    eprintln!("tcp over IPv6, DirectRouting: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}
