//! subnet.env, read by the CNI plugin: written as flanneld writes it
//! (temporary file, then rename, so a reader never sees half a file). The
//! format is `weft_common::subnet_env`'s, the one weft-cni parses.
use std::path::Path;

use anyhow::{Context, Result};
use weft_common::subnet_env::{self, Ipv4Cidr, SubnetEnv};

use crate::subnet::Ipv4Net;

/// The file for a node that holds `subnet` in cluster network `network`;
/// `ipmasq`: weftd masquerades pod egress (`--ip-masq`), FLANNEL_IPMASQ.
pub fn subnet_env(network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ipmasq: bool) -> SubnetEnv {
    SubnetEnv {
        network: Some(Ipv4Cidr { addr: network.addr(), prefix_len: network.prefix_len() }),
        subnet: subnet.network_addr(),
        prefix_len: subnet.prefix_len(),
        mtu,
        ipmasq: Some(ipmasq),
        ipv6_network: None,
        ipv6_subnet: None,
    }
}

/// Writes subnet.env atomically.
pub fn write(path: &Path, network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ipmasq: bool) -> Result<()> {
    subnet_env(network, subnet, mtu, ipmasq).write(path).with_context(|| format!("writing {}", path.display()))
}

/// FLANNEL_SUBNET of an existing subnet.env, as a subnet (for lease reuse).
pub fn previous_subnet(path: &Path) -> Option<Ipv4Net> {
    let c = subnet_env::previous_subnet(&std::fs::read_to_string(path).ok()?)?;
    Ipv4Net::new(c.addr, c.prefix_len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_flanneld_and_reads_back() {
        let env = subnet_env("10.244.0.0/16".parse().unwrap(), "10.244.73.0/24".parse().unwrap(), 1450, false);
        assert_eq!(env.render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let masq = subnet_env("10.244.0.0/16".parse().unwrap(), "10.244.73.0/24".parse().unwrap(), 1450, true);
        assert_eq!(masq.render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
        assert_eq!(SubnetEnv::parse(&masq.render()).unwrap().ipmasq, Some(true));
        let dir = std::env::temp_dir().join(format!("weft-subnet-env-{}", std::process::id()));
        let path = dir.join("subnet.env");
        write(&path, "10.244.0.0/16".parse().unwrap(), "10.244.73.0/24".parse().unwrap(), 1450, false).unwrap();
        assert_eq!(previous_subnet(&path), Some("10.244.73.0/24".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
