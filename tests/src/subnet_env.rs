//! flannel's subnet.env (what weftd writes for the CNI plugin; the format is
//! `weft_common::subnet_env`'s) and the per-node subnet arithmetic the
//! harness needs.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{ensure, Context, Result};
pub use weft_common::subnet_env::{Ipv4Cidr, Ipv6Cidr, SubnetEnv};

/// A weft node's subnet.env. Stricter than weft-cni: weftd must write
/// FLANNEL_NETWORK with FLANNEL_SUBNET, FLANNEL_IPV6_NETWORK with
/// FLANNEL_IPV6_SUBNET, and each subnet as its gateway address; an
/// IPv6-only node's has neither FLANNEL_NETWORK nor FLANNEL_SUBNET.
pub fn read(path: &Path) -> Result<SubnetEnv> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse(text: &str) -> Result<SubnetEnv> {
    let env = SubnetEnv::parse(text)?;
    match env.subnet {
        Some(s4) => {
            ensure!(env.network.is_some(), "subnet.env lacks FLANNEL_NETWORK: {text:?}");
            let gw = format!("FLANNEL_SUBNET={}/{}", s4.host(1), s4.prefix_len);
            ensure!(text.lines().any(|l| l.trim() == gw), "FLANNEL_SUBNET is not the first address of its subnet ({gw} expected): {text:?}");
        }
        None => ensure!(env.network.is_none(), "subnet.env has FLANNEL_NETWORK but no FLANNEL_SUBNET (flanneld writes both or neither): {text:?}"),
    }
    if let Some(s6) = env.ipv6_subnet {
        ensure!(env.ipv6_network.is_some(), "subnet.env has FLANNEL_IPV6_SUBNET but lacks FLANNEL_IPV6_NETWORK: {text:?}");
        let gw6 = format!("FLANNEL_IPV6_SUBNET={}/{}", s6.host(1), s6.prefix_len);
        ensure!(text.lines().any(|l| l.trim() == gw6), "FLANNEL_IPV6_SUBNET is not the first address of its subnet ({gw6} expected): {text:?}");
    }
    Ok(env)
}

/// The lease's name in flannel's store: `10.244.73.0-24`, or on a
/// dual-stack node `10.244.73.0-24&fd44:0:0:49::-64` (flannel's
/// MakeSubnetKey: the v6 network address with its `:` kept), or on an
/// IPv6-only node `0.0.0.0-0&fd44:0:0:49::-64` (MakeSubnetKey with an empty
/// IPv4 subnet).
pub fn lease_name(env: &SubnetEnv) -> String {
    let v4 = env.subnet.unwrap_or(Ipv4Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix_len: 0 }).lease_name();
    match env.ipv6_subnet {
        Some(s6) => format!("{v4}&{}-{}", s6.trunc().addr, s6.prefix_len),
        None => v4,
    }
}

/// A node's IPv4 subnet as the (IPv4 or dual-stack) tests use it, from its
/// subnet.env; every accessor panics, naming the file's lack, on an
/// IPv6-only node's (which has no FLANNEL_SUBNET: use `ipv6_subnet`).
pub trait Ipv4Subnet {
    /// FLANNEL_SUBNET, host bits cleared.
    fn v4(&self) -> Ipv4Cidr;
    /// "10.244.73.0/24".
    fn cidr(&self) -> String {
        self.v4().to_string()
    }
    /// The IPv4 part of the lease's name: "10.244.73.0-24" (see [`lease_name`] for the whole).
    fn lease_name(&self) -> String {
        self.v4().lease_name()
    }
    /// The n-th address of the subnet (1: the gateway).
    fn host(&self, n: u32) -> Ipv4Addr {
        self.v4().host(n)
    }
}

impl Ipv4Subnet for SubnetEnv {
    fn v4(&self) -> Ipv4Cidr {
        match self.subnet {
            Some(s) => s,
            None => panic!("this subnet.env has no FLANNEL_SUBNET (an IPv6-only node's): {self:?}"),
        }
    }
}

/// The IPv6 part of a lease key ("...&fd44:0:0:5::-64"), if it has one.
pub fn parse_lease_name6(key: &str) -> Option<Ipv6Cidr> {
    let last = key.rsplit('/').next()?;
    let (_, v6) = last.split_once('&')?;
    let (ip, len) = v6.rsplit_once('-')?;
    let addr: Ipv6Addr = ip.parse().ok()?;
    Some(Ipv6Cidr { addr, prefix_len: len.parse().ok().filter(|l| *l <= 128)? })
}

/// What a flannel node of the lab says: a /24 of the /16 `network`.
pub fn flannel_node_env(network: Ipv4Addr, subnet: Ipv4Addr, mtu: u32) -> SubnetEnv {
    SubnetEnv {
        network: Some(Ipv4Cidr { addr: network, prefix_len: 16 }),
        subnet: Some(Ipv4Cidr { addr: subnet, prefix_len: 24 }),
        mtu,
        ipmasq: Some(false),
        ipv6_network: None,
        ipv6_subnet: None,
    }
}

/// The same on a dual-stack node: plus `ipv6_network` and the node's v6 subnet.
pub fn flannel_node_env_dual(network: Ipv4Addr, subnet: Ipv4Addr, mtu: u32, ipv6_network: Ipv6Cidr, ipv6_subnet: Ipv6Cidr) -> SubnetEnv {
    SubnetEnv { ipv6_network: Some(ipv6_network.trunc()), ipv6_subnet: Some(ipv6_subnet.trunc()), ..flannel_node_env(network, subnet, mtu) }
}

/// Parses a lease key's last element "10.244.73.0-24" into (subnet, len).
pub fn parse_lease_name(key: &str) -> Option<(Ipv4Addr, u8)> {
    let last = key.rsplit('/').next()?;
    let v4 = last.split('&').next()?;
    let (ip, len) = v4.split_once('-')?;
    Some((ip.parse().ok()?, len.parse().ok()?))
}

#[cfg(test)]
mod t {
    use super::*;
    #[test]
    fn parses() {
        let e = parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n").unwrap();
        assert_eq!(e.v4(), Ipv4Cidr { addr: Ipv4Addr::new(10, 244, 73, 0), prefix_len: 24 });
        assert_eq!(e.mtu, 1450);
        assert_eq!(e.host(2), Ipv4Addr::new(10, 244, 73, 2));
        assert_eq!(e.lease_name(), "10.244.73.0-24");
        assert!(parse("FLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\n").is_err());
        assert!(parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.5/24\nFLANNEL_MTU=1450\n").is_err());
        assert_eq!(parse_lease_name("/coreos.com/network/subnets/10.244.9.0-24"), Some((Ipv4Addr::new(10, 244, 9, 0), 24)));
        assert_eq!(lease_name(&e), "10.244.73.0-24");
    }

    #[test]
    fn dual_stack_lease_names() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        let e = parse(text).unwrap();
        assert_eq!(lease_name(&e), "10.244.5.0-24&fd44:0:0:5::-64");
        let key = "/coreos.com/network/subnets/10.244.5.0-24&fd44:0:0:5::-64";
        assert_eq!(parse_lease_name(key), Some((Ipv4Addr::new(10, 244, 5, 0), 24)));
        assert_eq!(parse_lease_name6(key).map(|c| c.to_string()).as_deref(), Some("fd44:0:0:5::/64"));
        assert_eq!(parse_lease_name6("10.244.5.0-24"), None);
        assert!(parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:5::7/64\nFLANNEL_MTU=1450\n").is_err());
        let d = flannel_node_env_dual(
            Ipv4Addr::new(10, 244, 0, 0),
            Ipv4Addr::new(10, 244, 5, 0),
            1450,
            Ipv6Cidr::parse("fd44::/48").unwrap(),
            Ipv6Cidr::parse("fd44:0:0:5::/64").unwrap(),
        );
        assert_eq!(d.render(), text);
    }

    #[test]
    fn ipv6_only_lease_names() {
        let text = "FLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        let e = parse(text).unwrap();
        assert_eq!((e.subnet, e.network), (None, None));
        assert_eq!(lease_name(&e), "0.0.0.0-0&fd44:0:0:5::-64");
        let key = "/coreos.com/network/subnets/0.0.0.0-0&fd44:0:0:5::-64";
        assert_eq!(parse_lease_name(key), Some((Ipv4Addr::UNSPECIFIED, 0)));
        assert_eq!(parse_lease_name6(key).map(|c| c.to_string()).as_deref(), Some("fd44:0:0:5::/64"));
        assert!(parse(&format!("FLANNEL_NETWORK=10.244.0.0/16\n{text}")).is_err(), "FLANNEL_NETWORK without FLANNEL_SUBNET");
        assert!(parse("FLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\nFLANNEL_MTU=1430\n").is_err(), "no FLANNEL_IPV6_NETWORK");
        assert!(std::panic::catch_unwind(|| e.cidr()).is_err(), "an IPv6-only node has no IPv4 subnet");
    }
}
