//! An "outside" host that is not in the cluster: a router namespace
//! `<prefix>-ox` on the cluster's switch (192.168.77.252) with a second leg
//! on a TEST-NET network, and the host `<prefix>-out` (203.0.113.10) behind
//! it. Nodes get a specific route to 203.0.113.0/24 via the router (nothing
//! leaves the test namespaces); the outside host routes back only to the
//! underlay, never to the pod network, so a pod's packet that was not
//! masqueraded gets no reply. The namespaces go on drop.
use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};

use crate::{
    cluster::{Cluster, NodeRef, UNDERLAY_LEN},
    netns::Netns,
    traffic,
};

/// The router's address on the cluster's switch (segment 0).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 252);
/// The outside network and the router's and the host's addresses in it.
pub const NET: &str = "203.0.113.0/24";
pub const ROUTER_OUT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub struct Outside {
    /// The outside host (its interface is `eth0`).
    pub host: Netns,
    pub router: Netns,
}

impl Outside {
    /// Creates router and host and routes every node of segment 0 (weft and
    /// flannel nodes there now) to the outside network via the router.
    pub fn attach(c: &Cluster) -> Result<Outside> {
        let router = Netns::create(&format!("{}-ox", c.prefix))?;
        let host = Netns::create(&format!("{}-out", c.prefix))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.ip(&["link", "add", "up0", "mtu", "1500", "type", "veth", "peer", "name", "vox", "mtu", "1500", "netns", c.sw.name()])?;
        c.sw.ip(&["link", "set", "vox", "master", "br0", "up"])?;
        router.ip(&["addr", "add", &format!("{ROUTER}/{UNDERLAY_LEN}"), "dev", "up0"])?;
        router.ip(&["link", "set", "up0", "up"])?;
        router.ip(&["link", "add", "o0", "mtu", "1500", "type", "veth", "peer", "name", "eth0", "mtu", "1500", "netns", host.name()])?;
        router.ip(&["addr", "add", &format!("{ROUTER_OUT}/24"), "dev", "o0"])?;
        router.ip(&["link", "set", "o0", "up"])?;
        host.ip(&["addr", "add", &format!("{HOST}/24"), "dev", "eth0"])?;
        host.ip(&["link", "set", "eth0", "up"])?;
        // Back to the underlay only: pod addresses stay unreachable from here.
        host.ip(&["route", "add", &format!("{}/{UNDERLAY_LEN}", crate::cluster::segment_net(0)), "via", &ROUTER_OUT.to_string()])?;
        let out = Outside { host, router };
        for n in c.nodes() {
            if c.node_segment(n)? == 0 {
                out.route_node(c, n)?;
            }
        }
        Ok(out)
    }

    /// Node `n` reaches the outside network via the router.
    pub fn route_node(&self, c: &Cluster, n: NodeRef) -> Result<()> {
        c.node_ns(n)?.ip(&["route", "add", NET, "via", &ROUTER.to_string()])?;
        Ok(())
    }
}

/// Pod `p` pings the outside host and sends it 1 MiB over TCP while the
/// outside host captures: every packet from the node carries the node's
/// underlay address, none a pod address (10.244.x), so the pod got out and
/// back only through masquerading.
pub fn masqueraded(c: &Cluster, out: &Outside, p: usize) -> Result<()> {
    let node_ip = c.node_ip(c.pods[p].node)?;
    let cap = traffic::Capture::start(&out.host, "eth0", "ip and not arp", 4000, 60)?;
    traffic::ping_ok(&c.pods[p].ns, HOST, 3).context("pod -> outside host")?;
    traffic::tcp_transfer(&c.pods[p].ns, &out.host, HOST, 1 << 20).context("tcp pod -> outside host")?;
    let lines = cap.finish();
    let from_node = lines.iter().filter(|l| l.contains(&format!("IP {node_ip}"))).count();
    let pod_src: Vec<&String> = lines.iter().filter(|l| l.contains("IP 10.244.")).collect();
    ensure!(pod_src.is_empty(), "the outside host saw pod addresses: {:?}", &pod_src[..pod_src.len().min(5)]);
    ensure!(from_node >= 3, "the outside host saw {from_node} packets from node address {node_ip}; capture: {:?}", &lines[..lines.len().min(10)]);
    Ok(())
}
