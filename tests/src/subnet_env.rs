//! flannel's subnet.env (what weftd writes for the CNI plugin; the format is
//! `weft_common::subnet_env`'s) and the per-node subnet arithmetic the
//! harness needs.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{ensure, Context, Result};
pub use weft_common::subnet_env::{Ipv4Cidr, SubnetEnv};

/// A weft node's subnet.env. Stricter than weft-cni: weftd must write
/// FLANNEL_NETWORK, and FLANNEL_SUBNET as the gateway address.
pub fn read(path: &Path) -> Result<SubnetEnv> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse(text: &str) -> Result<SubnetEnv> {
    let env = SubnetEnv::parse(text)?;
    ensure!(env.network.is_some(), "subnet.env lacks FLANNEL_NETWORK: {text:?}");
    let gw = format!("FLANNEL_SUBNET={}/{}", env.gateway(), env.prefix_len);
    ensure!(text.lines().any(|l| l.trim() == gw), "FLANNEL_SUBNET is not the first address of its subnet ({gw} expected): {text:?}");
    Ok(env)
}

/// What a flannel node of the lab says: a /24 of the /16 `network`.
pub fn flannel_node_env(network: Ipv4Addr, subnet: Ipv4Addr, mtu: u32) -> SubnetEnv {
    SubnetEnv {
        network: Some(Ipv4Cidr { addr: network, prefix_len: 16 }),
        subnet,
        prefix_len: 24,
        mtu,
        ipmasq: Some(false),
        ipv6_network: None,
        ipv6_subnet: None,
    }
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
        assert_eq!(e.subnet, Ipv4Addr::new(10, 244, 73, 0));
        assert_eq!(e.prefix_len, 24);
        assert_eq!(e.mtu, 1450);
        assert_eq!(e.host(2), Ipv4Addr::new(10, 244, 73, 2));
        assert_eq!(e.lease_name(), "10.244.73.0-24");
        assert!(parse("FLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\n").is_err());
        assert!(parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.5/24\nFLANNEL_MTU=1450\n").is_err());
        assert_eq!(parse_lease_name("/coreos.com/network/subnets/10.244.9.0-24"), Some((Ipv4Addr::new(10, 244, 9, 0), 24)));
    }
}
