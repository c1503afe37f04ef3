//! `--ip-masq` on a dual-stack node masquerades IPv6 pod egress as flannel
//! does with ip6tables: the same rule list for the IPv6 network and subnet
//! in weft's `inet` table (`ip6` matches). An outside IPv6 host
//! (2001:db8:1::10, behind a router on the switch) routes back only to the
//! underlay, so a pod's packet reaches it answered only when it left with
//! the node's address; pod-to-pod traffic keeps the pod's address.
use std::{
    net::{Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use weft_tests::{
    cluster::{dual_stack_config, node_ip6},
    cmd,
    netns::Netns,
    traffic, Cluster, Wiring,
};

const ROUTER: &str = "fd77::fc";
const OUT_NET: &str = "2001:db8:1::/64";
const HOST: &str = "2001:db8:1::10";

/// Router `<prefix>-ox6` on the switch and host `<prefix>-out6` behind it.
fn outside6(c: &Cluster) -> Result<(Netns, Netns)> {
    let router = Netns::create(&format!("{}-ox6", c.prefix))?;
    let host = Netns::create(&format!("{}-out6", c.prefix))?;
    router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    router.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "vox6", "netns", c.sw.name()])?;
    c.sw.ip(&["link", "set", "vox6", "master", "br0", "up"])?;
    router.ip(&["addr", "add", &format!("{ROUTER}/64"), "dev", "up0", "nodad"])?;
    router.ip(&["link", "set", "up0", "up"])?;
    router.ip(&["link", "add", "o0", "type", "veth", "peer", "name", "eth0", "netns", host.name()])?;
    router.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "o0", "nodad"])?;
    router.ip(&["link", "set", "o0", "up"])?;
    host.ip(&["addr", "add", &format!("{HOST}/64"), "dev", "eth0", "nodad"])?;
    host.ip(&["link", "set", "eth0", "up"])?;
    // Back to the underlay only: pod addresses stay unreachable from here.
    host.ip(&["-6", "route", "add", "fd77::/64", "via", "2001:db8:1::1"])?;
    for n in c.nodes() {
        c.node_ns(n)?.ip(&["-6", "route", "add", OUT_NET, "via", ROUTER])?;
    }
    Ok((router, host))
}

#[test]
fn ipv6_pod_egress_is_masqueraded() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().config_json(&dual_stack_config("10.244.0.0/16", "vxlan")).weft_nodes(2).weftd_args(&["--ip-masq"]).build()?;
    c.wait_converged()?;
    let (_router, host) = outside6(&c)?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    let host_ip: Ipv6Addr = HOST.parse()?;
    let w1 = c.weft_node(1)?;
    // weft's table holds flannel's IPv6 rules next to the IPv4 ones.
    let s6 = c.node_env(1)?.ipv6_subnet.context("node 1 has no IPv6 subnet")?;
    cmd::poll("node 1: IPv6 masquerade rules in table inet weft", Duration::from_secs(20), Duration::from_millis(100), || {
        let t = w1.ns.exec("nft", &["list", "table", "inet", "weft"]).map_err(|e| format!("{e:#}"))?;
        let want = [format!("ip6 saddr {s6} ip6 daddr fd44::/48 return"), "ip6 saddr fd44::/48 ip6 daddr != ff00::/8".to_string()];
        if want.iter().all(|w| t.contains(w.as_str())) {
            Ok(Some(()))
        } else {
            Err(format!("missing one of {want:?} in:\n{t}"))
        }
    })?;
    // Answered: the pod's packets left with node 1's IPv6 address.
    let cap = traffic::Capture::start(&host, "eth0", "ip6 and not icmp6[0] >= 133", 4000, 30)?;
    traffic::ping6_ok(&c.pods[p1].ns, host_ip, 3).context("pod on node 1 -> outside IPv6 host")?;
    traffic::tcp_transfer6(&c.pods[p1].ns, &host, host_ip, 1 << 20).context("TCP pod -> outside IPv6 host")?;
    let lines = cap.finish();
    let node6 = node_ip6(1).to_string();
    let from_node = lines.iter().filter(|l| l.contains(&format!("IP6 {node6}"))).count();
    let from_pods: Vec<&String> = lines.iter().filter(|l| l.contains("IP6 fd44:")).collect();
    ensure!(from_pods.is_empty(), "the outside host saw pod addresses: {:?}", &from_pods[..from_pods.len().min(5)]);
    ensure!(from_node >= 3, "the outside host saw {from_node} packets from node 1's {node6}: {:?}", &lines[..lines.len().min(10)]);
    // Pod to pod over IPv6 keeps the pod's address.
    let to = c.pods[p2].ip6.context("pod 2 has no IPv6 address")?;
    let (_, peer) = traffic::tcp_exchange(&c.pods[p1].ns, &c.pods[p2].ns, 7406, SocketAddr::from((to, 7406)))?;
    let own = c.pods[p1].ip6.context("pod 1 has no IPv6 address")?;
    ensure!(peer.ip() == std::net::IpAddr::V6(own), "pod 1 -> pod 2 over IPv6: the server saw {peer}, not {own}");
    c.pass();
    Ok(())
}
