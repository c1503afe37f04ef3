//! flannel's subnet.env (what weftd writes for the CNI plugin) and the
//! per-node subnet arithmetic the harness needs.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetEnv {
    /// FLANNEL_NETWORK, e.g. "10.244.0.0/16".
    pub network: String,
    /// Network address of the node's subnet, e.g. 10.244.73.0.
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// FLANNEL_MTU.
    pub mtu: u32,
}

impl SubnetEnv {
    pub fn parse(text: &str) -> Result<SubnetEnv> {
        let (mut network, mut subnet, mut mtu) = (None, None, None);
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once('=') else { continue };
            match k {
                "FLANNEL_NETWORK" => network = Some(v.to_string()),
                "FLANNEL_SUBNET" => subnet = Some(v.to_string()),
                "FLANNEL_MTU" => mtu = Some(v.parse::<u32>().with_context(|| format!("FLANNEL_MTU={v}"))?),
                _ => {}
            }
        }
        let (Some(network), Some(subnet), Some(mtu)) = (network, subnet, mtu) else {
            bail!("subnet.env lacks FLANNEL_NETWORK, FLANNEL_SUBNET or FLANNEL_MTU: {text:?}");
        };
        let (ip, len) = subnet.split_once('/').with_context(|| format!("FLANNEL_SUBNET={subnet} has no prefix length"))?;
        let ip: Ipv4Addr = ip.parse().with_context(|| format!("FLANNEL_SUBNET={subnet}"))?;
        let prefix_len: u8 = len.parse().with_context(|| format!("FLANNEL_SUBNET={subnet}"))?;
        if prefix_len == 0 || prefix_len > 30 {
            bail!("FLANNEL_SUBNET={subnet}: odd prefix length");
        }
        let mask = u32::MAX << (32 - prefix_len);
        let net = Ipv4Addr::from(u32::from(ip) & mask);
        if u32::from(ip) != u32::from(net) + 1 {
            bail!("FLANNEL_SUBNET={subnet} is not the first address of its subnet");
        }
        Ok(SubnetEnv { network, subnet: net, prefix_len, mtu })
    }

    pub fn read(path: &Path) -> Result<SubnetEnv> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        SubnetEnv::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The n-th address of the subnet (1 = gateway on cni0).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + n)
    }

    /// "10.244.73.0/24"
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix_len)
    }

    /// flannel's lease key suffix: "10.244.73.0-24".
    pub fn lease_name(&self) -> String {
        format!("{}-{}", self.subnet, self.prefix_len)
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
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n").unwrap();
        assert_eq!(e.subnet, Ipv4Addr::new(10, 244, 73, 0));
        assert_eq!(e.prefix_len, 24);
        assert_eq!(e.mtu, 1450);
        assert_eq!(e.host(2), Ipv4Addr::new(10, 244, 73, 2));
        assert_eq!(e.lease_name(), "10.244.73.0-24");
        assert_eq!(parse_lease_name("/coreos.com/network/subnets/10.244.9.0-24"), Some((Ipv4Addr::new(10, 244, 9, 0), 24)));
    }
}
