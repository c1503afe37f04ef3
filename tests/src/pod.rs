//! Pod namespaces wired to a node: by weft-cni as a runtime runs it, or by
//! hand the two ways CNI plugins do it.
//!
//! On a dual-stack node (subnet.env with FLANNEL_IPV6_SUBNET) a pod the
//! harness wires gets an IPv6 address too: pod k is `<v6 subnet>::(k+1)`,
//! with the node's side as for IPv4 (cni0 holds the v6 gateway
//! `<v6 subnet>::1`; a `VethRoute` pod reaches the node through the host
//! veth's link-local `fe80::1`). IPv6 DAD is off in the pod's namespace
//! and every address is added `nodad`, so all are usable at once.
//!
//! On an IPv6-only node (subnet.env without FLANNEL_SUBNET) a pod gets its
//! IPv6 address alone, cni0 the IPv6 gateway alone: [`Pod::ip4`] is None
//! and [`Pod::ip`] panics.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::{cni::WeftCni, netns::Netns, subnet_env::SubnetEnv};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wiring {
    /// flannel's usual CNI: node bridge `cni0` holding <subnet>.1/24, pod
    /// veth enslaved, pod address /24, default route via <subnet>.1.
    Bridge,
    /// Calico style: pod address /32 with `default dev eth0`, node-side veth
    /// with proxy_arp and a /32 route to the pod.
    VethRoute,
    /// weft-cni's ADD, run as a container runtime runs it (what the lab
    /// uses): cni0, a veth pair, an address from the node's subnet.env.
    /// Its addresses come from weft-cni's store, so do not mix it with
    /// `Bridge` pods (numbered by the harness) on one node.
    Cni,
}

pub struct Pod {
    /// The pod's IPv4 address (None on an IPv6-only node); see [`Pod::ip`].
    pub ip4: Option<Ipv4Addr>,
    /// The pod's IPv6 address on a dual-stack or IPv6-only node (None on IPv4-only nodes).
    pub ip6: Option<Ipv6Addr>,
    pub wiring: Wiring,
    /// Node number the pod lives on.
    pub node: u32,
    /// Node-side veth name (in the node's namespace).
    pub host_veth: String,
    /// For `Wiring::Cni`: the container ID and weft-cni's ADD result.
    pub cni: Option<(String, serde_json::Value)>,
    pub ns: Netns,
}

/// Creates `cni0` in the node with <subnet>.1/<len> if it is not there yet
/// (dual stack: also the v6 gateway, nodad, and no multicast snooping, so
/// neighbour discovery is flooded as on a hub; IPv6-only: the v6 gateway alone).
fn ensure_bridge(node: &Netns, env: &SubnetEnv) -> Result<()> {
    if node.ip(&["link", "show", "cni0"]).is_ok() {
        return Ok(());
    }
    let mtu = env.mtu.to_string();
    node.ip(&["link", "add", "cni0", "mtu", &mtu, "type", "bridge"])?;
    if let Some(s4) = env.subnet {
        node.ip(&["addr", "add", &format!("{}/{}", s4.host(1), s4.prefix_len), "dev", "cni0"])?;
    }
    if let Some(s6) = env.ipv6_subnet {
        node.ip(&["link", "set", "cni0", "type", "bridge", "mcast_snooping", "0"])?;
        node.ip(&["-6", "addr", "add", &format!("{}/{}", s6.host(1), s6.prefix_len), "dev", "cni0", "nodad"])?;
    }
    node.ip(&["link", "set", "cni0", "up"])?;
    Ok(())
}

/// Turns IPv6 duplicate address detection off in a namespace (for the
/// devices created or moved into it from now on, and all): only ever
/// called on the harness's own namespaces of a dual-stack cluster.
pub fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
}

impl Pod {
    /// Creates pod namespace `pod_ns` as pod number `k` (address <subnet>.(k+1))
    /// of node `n` (namespace `node`), MTU = FLANNEL_MTU.
    pub fn create(node: &Netns, n: u32, env: &SubnetEnv, k: u32, wiring: Wiring, pod_ns: &str) -> Result<Pod> {
        let ns = Netns::create(pod_ns)?;
        let v4 = env.subnet.map(|s4| (s4.host(k + 1), s4));
        let ip6 = env.ipv6_subnet.map(|s6| s6.host(k as u128 + 1));
        if ip6.is_some() {
            no_dad(&ns)?;
        }
        let host_veth = format!("vp{k}");
        let mtu = env.mtu.to_string();
        let r = (|| -> Result<()> {
            node.ip(&["link", "add", &host_veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu, "netns", pod_ns])?;
            match wiring {
                Wiring::Bridge => {
                    ensure_bridge(node, env)?;
                    node.ip(&["link", "set", &host_veth, "master", "cni0", "up"])?;
                    if let Some((ip, s4)) = v4 {
                        ns.ip(&["addr", "add", &format!("{ip}/{}", s4.prefix_len), "dev", "eth0"])?;
                    }
                    ns.ip(&["link", "set", "eth0", "up"])?;
                    if let Some((_, s4)) = v4 {
                        ns.ip(&["route", "add", "default", "via", &s4.host(1).to_string()])?;
                    }
                    if let (Some(ip6), Some(s6)) = (ip6, env.ipv6_subnet) {
                        ns.ip(&["-6", "addr", "add", &format!("{ip6}/{}", s6.prefix_len), "dev", "eth0", "nodad"])?;
                        ns.ip(&["-6", "route", "add", "default", "via", &s6.host(1).to_string()])?;
                    }
                }
                Wiring::Cni => anyhow::bail!("Wiring::Cni pods are made by Pod::create_cni"),
                Wiring::VethRoute => {
                    if let Some((ip, _)) = v4 {
                        node.sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp"), "1")?;
                        // Answer at once (default: a random delay up to 0.8 s), as Calico does.
                        node.sysctl(&format!("net.ipv4.neigh.{host_veth}.proxy_delay"), "0")?;
                        node.ip(&["link", "set", &host_veth, "up"])?;
                        node.ip(&["route", "add", &format!("{ip}/32"), "dev", &host_veth])?;
                        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
                        ns.ip(&["link", "set", "eth0", "up"])?;
                        ns.ip(&["route", "add", "default", "dev", "eth0"])?;
                    } else {
                        node.ip(&["link", "set", &host_veth, "up"])?;
                        ns.ip(&["link", "set", "eth0", "up"])?;
                    }
                    if let Some(ip6) = ip6 {
                        // IPv6 has no proxy ARP for every address: the pod's
                        // gateway is the host veth's link-local fe80::1.
                        node.ip(&["-6", "addr", "add", "fe80::1/64", "dev", &host_veth, "nodad"])?;
                        node.ip(&["-6", "route", "add", &format!("{ip6}/128"), "dev", &host_veth])?;
                        ns.ip(&["-6", "addr", "add", &format!("{ip6}/128"), "dev", "eth0", "nodad"])?;
                        ns.ip(&["-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"])?;
                    }
                }
            }
            Ok(())
        })();
        r.with_context(|| format!("wiring pod {pod_ns} ({wiring:?}) to node netns {}", node.name()))?;
        Ok(Pod { ip4: v4.map(|(ip, _)| ip), ip6, wiring, node: n, host_veth, cni: None, ns })
    }

    /// Creates pod namespace `pod_ns` on node `n` and runs weft-cni's ADD
    /// for it (container ID = the namespace's name, interface eth0).
    pub fn create_cni(node: &Netns, n: u32, cni: &WeftCni, pod_ns: &str) -> Result<Pod> {
        Self::create_cni_with(node, n, cni, pod_ns, false)
    }

    /// As [`Pod::create_cni`]; with `ipv6` (a dual-stack or IPv6-only
    /// node), IPv6 DAD is turned off in the pod's namespace before
    /// weft-cni's ADD. The pod's addresses are the IPv4 and IPv6 entries of
    /// weft-cni's result (each None if it has none; one it must have).
    pub fn create_cni_with(node: &Netns, n: u32, cni: &WeftCni, pod_ns: &str, ipv6: bool) -> Result<Pod> {
        let ns = Netns::create(pod_ns)?;
        if ipv6 {
            no_dad(&ns)?;
        }
        let result = cni.add(node, pod_ns, &ns)?.result().with_context(|| format!("weft-cni ADD for pod {pod_ns} on node netns {}", node.name()))?;
        let ip4 = result_ip4(&result)?;
        let ip6 = result_ip6(&result)?;
        anyhow::ensure!(ip4.is_some() || ip6.is_some(), "weft-cni's result has no address: {result}");
        let host_veth = result["interfaces"][1]["name"].as_str().with_context(|| format!("no host veth in {result}"))?.to_string();
        Ok(Pod { ip4, ip6, wiring: Wiring::Cni, node: n, host_veth, cni: Some((pod_ns.to_string(), result)), ns })
    }

    /// The pod's IPv4 address, for tests of IPv4 and dual-stack clusters.
    /// Panics on a pod of an IPv6-only node, which has none (use
    /// [`Pod::ip4`], [`Pod::ip6`] or [`Pod::addr`] there).
    pub fn ip(&self) -> Ipv4Addr {
        match self.ip4 {
            Some(ip) => ip,
            None => panic!("pod {} has no IPv4 address (an IPv6-only node's pod): use ip6", self.ns.name()),
        }
    }

    /// The pod's address of `family` (the harness's tests loop over both).
    pub fn addr(&self, family: Family) -> Result<std::net::IpAddr> {
        match family {
            Family::V4 => self.ip4.map(Into::into).with_context(|| format!("pod {} has no IPv4 address (an IPv6-only node's pod)", self.ns.name())),
            Family::V6 => {
                self.ip6.map(Into::into).with_context(|| format!("pod {} has no IPv6 address (not on a dual-stack or IPv6-only node?)", self.ns.name()))
            }
        }
    }
}

/// An address family, for tests that run the same check over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The first IPv4 address in a CNI result's `ips` (None if there is none).
pub fn result_ip4(result: &serde_json::Value) -> Result<Option<Ipv4Addr>> {
    for e in result["ips"].as_array().into_iter().flatten() {
        let Some(a) = e["address"].as_str() else { continue };
        let ip = a.split('/').next().unwrap_or_default();
        if !ip.contains(':') {
            return ip.parse().map(Some).with_context(|| format!("ips[].address {a:?} in {result}"));
        }
    }
    Ok(None)
}

/// The first IPv6 address in a CNI result's `ips` (None if there is none).
pub fn result_ip6(result: &serde_json::Value) -> Result<Option<Ipv6Addr>> {
    for e in result["ips"].as_array().into_iter().flatten() {
        let Some(a) = e["address"].as_str() else { continue };
        let ip = a.split('/').next().unwrap_or_default();
        if ip.contains(':') {
            return ip.parse().map(Some).with_context(|| format!("ips[].address {a:?} in {result}"));
        }
    }
    Ok(None)
}
