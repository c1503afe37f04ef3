//! subnet.env, read by the CNI plugin: written as flanneld writes it
//! (temporary file, then rename, so a reader never sees half a file). The
//! format is `weft_common::subnet_env`'s, the one weft-cni parses.
use std::path::Path;

use anyhow::{Context, Result};
use weft_common::subnet_env::{self, Ipv4Cidr, Ipv6Cidr, SubnetEnv};

use crate::{
    netconfig::NetConfig,
    subnet::{Ipv4Net, Ipv6Net, Subnets},
};

/// The file for a node that holds `own` in the network of `cfg`;
/// `ipmasq`: weftd masquerades pod egress (`--ip-masq`), FLANNEL_IPMASQ.
/// A dual-stack node's file adds the IPv6 network and subnet; an IPv6-only
/// node's has those and no IPv4 keys (flanneld writes each family's keys
/// only when the network carries it).
pub fn subnet_env(cfg: &NetConfig, own: Subnets, mtu: u32, ipmasq: bool) -> SubnetEnv {
    let cidr = |n: Ipv4Net| Ipv4Cidr { addr: n.network_addr(), prefix_len: n.prefix_len() };
    let cidr6 = |n: Ipv6Net| Ipv6Cidr { addr: n.network_addr(), prefix_len: n.prefix_len() };
    SubnetEnv {
        network: cfg.network4().map(cidr),
        subnet: own.v4.map(cidr),
        mtu,
        ipmasq: Some(ipmasq),
        ipv6_network: cfg.network6().map(cidr6),
        ipv6_subnet: own.v6.map(cidr6),
    }
}

/// Writes subnet.env atomically.
pub fn write(path: &Path, cfg: &NetConfig, own: Subnets, mtu: u32, ipmasq: bool) -> Result<()> {
    subnet_env(cfg, own, mtu, ipmasq).write(path).with_context(|| format!("writing {}", path.display()))
}

/// FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET of an existing subnet.env, as
/// subnets (for lease reuse); None when it names neither.
pub fn previous_subnet(path: &Path) -> Option<Subnets> {
    let text = std::fs::read_to_string(path).ok()?;
    let v4 = subnet_env::previous_subnet(&text).and_then(|c| Ipv4Net::new(c.addr, c.prefix_len).ok());
    let v6 = SubnetEnv::parse(&text).ok().and_then(|e| e.ipv6_subnet).and_then(|c| Ipv6Net::new(c.addr, c.prefix_len).ok());
    (v4.is_some() || v6.is_some()).then_some(Subnets { v4, v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Subnets {
        Subnets::v4(s.parse().unwrap())
    }

    #[test]
    fn renders_like_flanneld_and_reads_back() {
        let cfg = NetConfig::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap();
        let env = subnet_env(&cfg, v4("10.244.73.0/24"), 1450, false);
        assert_eq!(env.render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let masq = subnet_env(&cfg, v4("10.244.73.0/24"), 1450, true);
        assert_eq!(masq.render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
        assert_eq!(SubnetEnv::parse(&masq.render()).unwrap().ipmasq, Some(true));
        let dir = std::env::temp_dir().join(format!("weft-subnet-env-{}", std::process::id()));
        let path = dir.join("subnet.env");
        write(&path, &cfg, v4("10.244.73.0/24"), 1450, false).unwrap();
        assert_eq!(previous_subnet(&path), Some(v4("10.244.73.0/24")));
        let ds = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        let own = Subnets::from_key("10.244.73.0-24&fd44:0:0:49::-64").unwrap();
        write(&path, &ds, own, 1450, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:49::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnet(&path), Some(own));
        let v6only = NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        let own = Subnets::from_key("0.0.0.0-0&fd44:0:0:49::-64").unwrap();
        write(&path, &v6only, own, 1430, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:49::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(previous_subnet(&path), Some(own));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
