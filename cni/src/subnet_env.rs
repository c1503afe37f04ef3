//! flannel's subnet.env as weftd (or flanneld) writes it: the node's pod
//! subnet, the cluster network and the MTU pods get.
//!
//! A missing file is error 11 ("try again later"): weftd writes it once it
//! holds a lease, so a node that has just booted gets there by itself, and
//! the runtime retries. A file that is there but unreadable is 5, one whose
//! contents are wrong is 7.
use std::{net::Ipv4Addr, path::Path};

use crate::error::{code, CniError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// FLANNEL_NETWORK (network address, prefix length), when present.
    pub network: Option<(Ipv4Addr, u8)>,
    /// Network address of the node's subnet (FLANNEL_SUBNET masked).
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// FLANNEL_MTU.
    pub mtu: u32,
}

fn cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some(())?;
    Some((ip.parse().ok()?, len))
}

pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

impl SubnetEnv {
    pub fn parse(text: &str) -> std::result::Result<SubnetEnv, String> {
        let (mut network, mut subnet, mut mtu) = (None, None, None);
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once('=') else { continue };
            let v = v.trim();
            match k.trim() {
                "FLANNEL_NETWORK" => network = Some(cidr(v).ok_or(format!("FLANNEL_NETWORK={v} is not an IPv4 CIDR"))?),
                "FLANNEL_SUBNET" => subnet = Some(cidr(v).ok_or(format!("FLANNEL_SUBNET={v} is not an IPv4 CIDR"))?),
                "FLANNEL_MTU" => mtu = Some(v.parse::<u32>().map_err(|_| format!("FLANNEL_MTU={v} is not a number"))?),
                _ => {}
            }
        }
        let (ip, prefix_len) = subnet.ok_or("FLANNEL_SUBNET is missing")?;
        let mtu = mtu.ok_or("FLANNEL_MTU is missing")?;
        if !(68..=65535).contains(&mtu) {
            return Err(format!("FLANNEL_MTU={mtu} is outside 68..65535"));
        }
        if !(1..=30).contains(&prefix_len) {
            return Err(format!("FLANNEL_SUBNET={ip}/{prefix_len}: the prefix must be 1..30 (a gateway and at least one pod)"));
        }
        let subnet = Ipv4Addr::from(u32::from(ip) & mask(prefix_len));
        let network = network.map(|(n, l)| (Ipv4Addr::from(u32::from(n) & mask(l)), l));
        Ok(SubnetEnv { network, subnet, prefix_len, mtu })
    }

    pub fn read(path: &Path) -> Result<SubnetEnv> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CniError::new(code::TRY_AGAIN_LATER, format!("{} does not exist yet: is weftd running on this node?", path.display()))
                    .with_details("weftd writes it once it holds the node's subnet lease"))
            }
            Err(e) => return Err(CniError::io(format!("reading {}", path.display()), &e)),
        };
        SubnetEnv::parse(&text).map_err(|why| CniError::new(code::INVALID_CONFIG, format!("{}: {why}", path.display())))
    }

    /// The gateway on the bridge: the subnet's first address (FLANNEL_SUBNET's).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | !mask(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.subnet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flanneld_output() {
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n").unwrap();
        assert_eq!(e.network, Some((Ipv4Addr::new(10, 244, 0, 0), 16)));
        assert_eq!((e.subnet, e.prefix_len, e.mtu), (Ipv4Addr::new(10, 244, 73, 0), 24, 1450));
        assert_eq!(e.gateway(), Ipv4Addr::new(10, 244, 73, 1));
        assert_eq!(e.broadcast(), Ipv4Addr::new(10, 244, 73, 255));
        assert!(e.contains(Ipv4Addr::new(10, 244, 73, 9)) && !e.contains(Ipv4Addr::new(10, 244, 74, 9)));
        let e = SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/29\nFLANNEL_MTU=1400\n").unwrap();
        assert_eq!((e.network, e.broadcast()), (None, Ipv4Addr::new(10, 9, 0, 7)));
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert!(SubnetEnv::parse("FLANNEL_MTU=1450\n").unwrap_err().contains("FLANNEL_SUBNET"));
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=10.0.0.1/24\n").unwrap_err().contains("FLANNEL_MTU"));
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=10.0.0.1/31\nFLANNEL_MTU=1450").is_err());
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=junk\nFLANNEL_MTU=1450").is_err());
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=9").is_err());
        let missing = SubnetEnv::read(Path::new("/nonexistent/weft/subnet.env")).unwrap_err();
        assert_eq!(missing.code, code::TRY_AGAIN_LATER);
    }
}
