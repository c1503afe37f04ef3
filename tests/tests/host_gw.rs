//! weftd's host-gw backend: routes `<subnet> via <peer PublicIP> dev eth0`
//! (protocol 254) to peers on the same L2 segment, nothing (and a warning)
//! for peers behind a router, no overlay device, FLANNEL_MTU = underlay MTU,
//! plain routed IPv4 on the wire, hand-deleted routes restored, NAT refused,
//! and interworking with a node programmed as flanneld's host-gw programs it.
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{cmd, subnet_env::Ipv4Subnet, traffic, Cluster, NodeRef, Wiring};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// No weft.1, FLANNEL_MTU 1500, and the lease is host-gw's (no BackendData).
fn check_node_shape(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    ensure!(!w.has_link("weft.1"), "node {n}: host-gw must create no overlay device, but weft.1 exists:\n{}", w.ns.ip(&["link"])?);
    let env = w.subnet_env()?;
    ensure!(env.mtu == 1500, "node {n}: FLANNEL_MTU={} in {}, want the underlay's 1500", env.mtu, w.subnet_file.display());
    let lease = c.lease(n)?.with_context(|| format!("node {n} has no lease"))?;
    let j: serde_json::Value = serde_json::from_str(&lease).with_context(|| format!("lease of node {n}: {lease}"))?;
    ensure!(j["BackendType"] == "host-gw", "node {n}: lease {lease} is not host-gw");
    ensure!(j["PublicIP"] == w.ip.to_string().as_str(), "node {n}: lease {lease} does not carry PublicIP {}", w.ip);
    ensure!(j.get("BackendData").is_none_or(|d| d.is_null()), "node {n}: host-gw lease with BackendData: {lease}");
    Ok(())
}

/// Lines of `ip -4 route` in node `n` whose destination is `subnet`.
fn routes_to(c: &Cluster, n: NodeRef, subnet: &str) -> Result<String> {
    c.node_ns(n)?.ip(&["-4", "route", "show", "to", "exact", subnet])
}

#[test]
fn host_gw_within_a_segment() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(3).build()?;
    c.wait_converged()?;
    for n in c.nodes() {
        check_node_shape(&c, n)?;
        // Exactly one route per peer, via the peer's address on eth0, weft's protocol.
        for (subnet, ip) in c.host_gw_peers_of(n)? {
            let r = routes_to(&c, n, &subnet)?;
            let lines: Vec<&str> = r.lines().collect();
            ensure!(
                lines.len() == 1 && lines[0].starts_with(&format!("{subnet} via {ip} dev eth0")) && lines[0].contains("proto 254"),
                "node {n}: want one `{subnet} via {ip} dev eth0 proto 254`, have:\n{r}"
            );
        }
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let p3a = c.add_pod(3, Wiring::Bridge)?;
    let p3b = c.add_pod(3, Wiring::VethRoute)?;
    c.ping_across_nodes(&[p1, p2, p3a, p3b], 3)?;
    traffic::ping_ok(c.node_ns(1)?, c.pods[p2].ip(), 3).context("host-originated: node 1 -> pod on node 2")?;
    // Full-size frames pass unfragmented: the pod MTU is the underlay's.
    traffic::ping_sized(&c.pods[p1].ns, c.pods[p3a].ip(), 2, Some(1472))
        .and_then(|st| if st.all_received() { Ok(st) } else { bail!("{}", st.output) })
        .context("1500-byte DF ping node 1 bridge pod -> node 3 bridge pod")?;
    // On the wire: plain IPv4 between pod addresses, no VXLAN. Captured on
    // node 1's switch port while pod 1 pings pod 2.
    let cap = traffic::Capture::start(&c.sw, "vn1", "udp port 8472 or icmp", 100, 10)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("ping during the capture")?;
    let lines = cap.finish();
    let vxlan: Vec<&String> = lines.iter().filter(|l| l.contains(".8472")).collect();
    let plain = lines.iter().filter(|l| l.contains(&format!("IP {} > {}: ICMP echo request", c.pods[p1].ip(), c.pods[p2].ip()))).count();
    ensure!(vxlan.is_empty(), "VXLAN (udp 8472) on the wire with host-gw:\n{}", lines.join("\n"));
    ensure!(plain >= 3, "want >= 3 plain ICMP echo requests {} > {} on vn1, captured:\n{}", c.pods[p1].ip(), c.pods[p2].ip(), lines.join("\n"));
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3b].ns, c.pods[p3b].ip(), 4 << 20).context("tcp node1 bridge pod -> node3 veth pod")?;
    eprintln!("host-gw tcp n1->n3: {} bytes in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    let t = traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p3a].ns, c.pods[p3a].ip(), 4 << 20).context("tcp node2 veth pod -> node3 bridge pod")?;
    eprintln!("host-gw tcp n2->n3: {} bytes in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    c.pass();
    Ok(())
}

#[test]
fn host_gw_skipped_across_segments() -> Result<()> {
    weft_tests::require_root()?;
    // Nodes 1, 2 on 192.168.77.0/24; node 3 on 192.168.78.0/24 behind the router.
    let mut c = Cluster::builder().config_json(HOST_GW).segments(&[2, 1]).build()?;
    ensure!(c.node_segment(3)? == 1 && c.node_ip(3)?.to_string() == "192.168.78.3", "harness: node 3 should be 192.168.78.3 on segment 1");
    // Harness sanity: the segments reach each other through the router.
    traffic::ping_ok(c.node_ns(3)?, c.node_ip(1)?, 2).context("harness: node 3 -> node 1 through the router")?;
    c.wait_converged()?;
    for n in c.nodes() {
        check_node_shape(&c, n)?;
    }
    let subnet = |n: NodeRef| c.node_env(n).map(|e| e.cidr());
    let (s1, s2, s3) = (subnet(1)?, subnet(2)?, subnet(3)?);
    // Each weftd warns about every peer on the other segment, naming its subnet.
    for (n, peers) in [(1, vec![&s3]), (2, vec![&s3]), (3, vec![&s1, &s2])] {
        let w = c.weft_node(n)?;
        for s in peers {
            cmd::poll(&format!("node {n}'s warning about {s}"), Duration::from_secs(10), Duration::from_millis(200), || {
                let log = std::fs::read_to_string(&w.log).map_err(|e| e.to_string())?;
                if log.lines().any(|l| l.contains("not on the same L2 segment") && l.contains(s.as_str())) {
                    Ok(Some(()))
                } else {
                    Err(format!("no line with \"not on the same L2 segment\" and {s} in {}", w.log.display()))
                }
            })?;
        }
    }
    // Nobody routes to the other segment's subnets (not via the router either).
    for (n, others) in [(1, vec![&s3]), (2, vec![&s3]), (3, vec![&s1, &s2])] {
        for s in others {
            let r = routes_to(&c, n, s)?;
            ensure!(r.trim().is_empty(), "node {n} has a route to {s} on the other segment:\n{r}");
        }
    }
    // Node 3 (alone on its segment) has no peer routes, only the network's
    // catch-all that answers "unreachable" for subnets it cannot reach.
    let r3 = c.weft_node(3)?.host_gw_routes()?;
    let (catch_all, other): (Vec<&str>, Vec<&str>) = r3.lines().partition(|l| l.starts_with("unreachable 10.244.0.0/16"));
    ensure!(catch_all.len() == 1 && other.is_empty(), "node 3 should have exactly `unreachable 10.244.0.0/16` among weft's routes:\n{r3}");
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let p3 = c.add_pod(3, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2], 3)?;
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, c.pods[p2].ip(), 4 << 20).context("tcp node1 pod -> node2 pod")?;
    eprintln!("host-gw tcp n1->n2: {} bytes in {:?}", t.bytes, t.elapsed);
    // Without a route the other segment's pods stay unreachable (no default route anywhere).
    traffic::ping_fails(&c.pods[p1].ns, c.pods[p3].ip(), 2).context("pod on segment A -> pod on segment B")?;
    traffic::ping_fails(&c.pods[p3].ns, c.pods[p2].ip(), 2).context("pod on segment B -> pod on segment A")?;
    c.pass();
    Ok(())
}

#[test]
fn host_gw_route_restored() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).build()?;
    c.wait_converged()?;
    let s2 = c.node_env(2)?.cidr();
    let want = format!("{s2} via {} dev eth0", c.node_ip(2)?);
    let ns1 = c.node_ns(1)?;
    let before = routes_to(&c, 1, &s2)?;
    ensure!(before.trim_start().starts_with(&want), "node 1 before: want `{want}`, have:\n{before}");
    // `ip route del` succeeding proves the route went; weftd may put it
    // back before a second `ip` could see the gap, so that is not checked.
    let t0 = std::time::Instant::now();
    ns1.ip(&["route", "del", &s2])?;
    cmd::poll(&format!("weftd on node 1 to restore {s2}"), Duration::from_secs(5), Duration::from_millis(50), || {
        let r = routes_to(&c, 1, &s2).map_err(|e| format!("{e:#}"))?;
        if r.trim_start().starts_with(&want) && r.contains("proto 254") {
            Ok(Some(()))
        } else {
            Err(format!("`ip -4 route show to exact {s2}`: {:?}", r.trim()))
        }
    })?;
    eprintln!("route {s2} restored after {:?}", t0.elapsed());
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("after the route came back")?;
    c.pass();
    Ok(())
}

#[test]
fn host_gw_refuses_nat() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(1).no_start().build()?;
    c.start_weftd_with(1, &["--public-ip", "192.168.77.99"])?;
    let w = c.weft_node_mut(1)?;
    let st = cmd::poll("weftd with a foreign --public-ip to exit", Duration::from_secs(15), Duration::from_millis(100), || match w.exit_status() {
        Some(s) => Ok(Some(s)),
        None => Err("still running".into()),
    })?;
    let log = std::fs::read_to_string(&w.log).with_context(|| format!("reading {}", w.log.display()))?;
    ensure!(!st.ends_with("exit status: 0"), "weftd exited successfully ({st}); log:\n{log}");
    ensure!(log.contains("NAT") && log.contains("host-gw"), "weftd ({st}) log does not mention host-gw and NAT:\n{log}");
    // It must not have claimed a subnet with the wrong PublicIP.
    let leases = c.leases()?;
    ensure!(leases.iter().all(|(_, v)| !v.contains("192.168.77.99")), "a lease with the refused PublicIP: {leases:?}");
    eprintln!("weftd refused: {st}");
    c.pass();
    Ok(())
}

#[test]
fn host_gw_mixed_with_flannel() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).build()?;
    c.wait_converged()?;
    // Added after the weft nodes hold leases: they learn it from the watch.
    let f = c.add_flannel_host_gw_node()?;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    // Before the flannel node is programmed it has no way back: must fail.
    traffic::ping_fails(&c.pods[pf].ns, c.pods[p1].ip(), 2).context("flannel node not programmed yet")?;
    let programmed = c.flannel_node(f)?.reprogram(&c.store)?;
    let want = [c.node_env(1)?.cidr(), c.node_env(2)?.cidr()];
    ensure!(want.iter().all(|s| programmed.contains(s)), "flannel host-gw node programmed {programmed:?}, want {want:?}");
    c.wait_converged().context("weft nodes routing to the flannel node's subnet")?;
    for &p in &[p1, p2] {
        traffic::ping_ok(&c.pods[pf].ns, c.pods[p].ip(), 3).with_context(|| format!("flannel pod -> {}", c.pods[p].ns.name()))?;
        traffic::ping_ok(&c.pods[p].ns, c.pods[pf].ip(), 3).with_context(|| format!("{} -> flannel pod", c.pods[p].ns.name()))?;
    }
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[pf].ns, c.pods[pf].ip(), 4 << 20).context("tcp weft -> flannel")?;
    eprintln!("tcp weft->flannel: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    let t = traffic::tcp_transfer(&c.pods[pf].ns, &c.pods[p2].ns, c.pods[p2].ip(), 4 << 20).context("tcp flannel -> weft")?;
    eprintln!("tcp flannel->weft: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}
