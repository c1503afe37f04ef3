//! flannel's subnet.env (`/run/flannel/subnet.env`): weftd (or flanneld)
//! writes it once it holds the node's lease, weft-cni reads it on every ADD,
//! the test harness reads it to learn a node's subnet.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.73.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=false
//! ```
//!
//! `KEY=value` lines; unknown keys and lines without `=` are ignored (flannel
//! adds keys over time), so is surrounding whitespace. FLANNEL_SUBNET holds
//! the subnet's first address (the gateway on the bridge), not its network
//! address.
//!
//! A dual-stack node adds flannel's two IPv6 keys, in flannel's order:
//!
//! ```text
//! FLANNEL_IPV6_NETWORK=fc00::/48
//! FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64
//! ```
//!
//! An IPv6-only node (flannel's `"EnableIPv4": false`) has only the IPv6
//! keys: flanneld writes FLANNEL_NETWORK and FLANNEL_SUBNET only when IPv4
//! is enabled. A file needs FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET, or both.
//!
//! ```text
//! FLANNEL_IPV6_NETWORK=fd44::/48
//! FLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64
//! FLANNEL_MTU=1430
//! FLANNEL_IPMASQ=false
//! ```
//!
//! To add a key: a constant in [`keys`], a field, an arm in
//! [`SubnetEnv::parse`] and a line in [`SubnetEnv::render`].
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

/// The keys weft reads and writes.
pub mod keys {
    pub const NETWORK: &str = "FLANNEL_NETWORK";
    pub const SUBNET: &str = "FLANNEL_SUBNET";
    pub const MTU: &str = "FLANNEL_MTU";
    pub const IPMASQ: &str = "FLANNEL_IPMASQ";
    pub const IPV6_NETWORK: &str = "FLANNEL_IPV6_NETWORK";
    pub const IPV6_SUBNET: &str = "FLANNEL_IPV6_SUBNET";
}

/// The netmask of a prefix length (0..=32).
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// An IPv4 prefix as subnet.env writes it: `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// `a.b.c.d/len` with len <= 32.
    pub fn parse(s: &str) -> Option<Ipv4Cidr> {
        let (ip, len) = s.split_once('/')?;
        let prefix_len: u8 = len.parse().ok()?;
        (prefix_len <= 32).then_some(())?;
        Some(Ipv4Cidr { addr: ip.parse().ok()?, prefix_len })
    }

    /// The same prefix with the host bits cleared.
    pub fn trunc(self) -> Ipv4Cidr {
        Ipv4Cidr { addr: Ipv4Addr::from(u32::from(self.addr) & mask(self.prefix_len)), ..self }
    }

    /// The n-th address of the prefix (0: the network address, 1: the gateway).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & mask(self.prefix_len)).wrapping_add(n))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.addr) & mask(self.prefix_len)
    }

    /// The prefix as flannel's lease store names an IPv4 subnet: "10.244.73.0-24".
    pub fn lease_name(&self) -> String {
        format!("{}-{}", self.trunc().addr, self.prefix_len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An IPv6 prefix as subnet.env writes it: `fc00::/48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

/// The IPv6 netmask of a prefix length (0..=128).
pub fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

impl Ipv6Cidr {
    /// `a:b::c/len` with len <= 128.
    pub fn parse(s: &str) -> Option<Ipv6Cidr> {
        let (ip, len) = s.split_once('/')?;
        let prefix_len: u8 = len.parse().ok()?;
        (prefix_len <= 128).then_some(())?;
        Some(Ipv6Cidr { addr: ip.parse().ok()?, prefix_len })
    }

    /// The same prefix with the host bits cleared.
    pub fn trunc(self) -> Ipv6Cidr {
        Ipv6Cidr { addr: Ipv6Addr::from(u128::from(self.addr) & mask6(self.prefix_len)), ..self }
    }

    /// The n-th address of the prefix (0: the network address, 1: the gateway).
    pub fn host(&self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from((u128::from(self.addr) & mask6(self.prefix_len)).wrapping_add(n))
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix_len) == u128::from(self.addr) & mask6(self.prefix_len)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// What subnet.env says. Parsed and rendered here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// FLANNEL_NETWORK, host bits cleared; None when the file has none.
    pub network: Option<Ipv4Cidr>,
    /// The node's IPv4 pod subnet (FLANNEL_SUBNET with the host bits
    /// cleared; the file holds its first address, the gateway), prefix
    /// 1..=30 (a gateway and at least one pod); None on an IPv6-only node.
    pub subnet: Option<Ipv4Cidr>,
    /// FLANNEL_MTU, 68..=65535.
    pub mtu: u32,
    /// FLANNEL_IPMASQ (`true` is true, any other value false); None when
    /// absent. Rendered as `false` when None, as weftd always writes it.
    pub ipmasq: Option<bool>,
    /// FLANNEL_IPV6_NETWORK, host bits cleared (dual stack).
    pub ipv6_network: Option<Ipv6Cidr>,
    /// The node's IPv6 pod subnet (FLANNEL_IPV6_SUBNET with the host bits
    /// cleared; the file holds its first address, the gateway), prefix 1..=126.
    pub ipv6_subnet: Option<Ipv6Cidr>,
}

/// Why a subnet.env cannot be used; the message names the key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// FLANNEL_SUBNET of a subnet.env's text, host bits cleared, whatever else
/// the file holds or lacks: a subnet weftd or flanneld held before, which
/// weftd asks for again. None when the file has none (an IPv6-only node's).
pub fn previous_subnet(text: &str) -> Option<Ipv4Cidr> {
    lines(text).find(|(k, _)| *k == keys::SUBNET).and_then(|(_, v)| Ipv4Cidr::parse(v)).map(Ipv4Cidr::trunc)
}

fn lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.trim().split_once('=')).map(|(k, v)| (k.trim(), v.trim()))
}

impl SubnetEnv {
    pub fn parse(text: &str) -> Result<SubnetEnv, ParseError> {
        let err = |m: String| ParseError(m);
        let cidr = |k: &str, v: &str| Ipv4Cidr::parse(v).ok_or_else(|| err(format!("{k}={v} is not an IPv4 CIDR")));
        let cidr6 = |k: &str, v: &str| Ipv6Cidr::parse(v).ok_or_else(|| err(format!("{k}={v} is not an IPv6 CIDR")));
        let (mut network, mut subnet, mut mtu, mut ipmasq) = (None, None, None, None);
        let (mut ipv6_network, mut ipv6_subnet) = (None, None);
        for (k, v) in lines(text) {
            match k {
                keys::IPV6_NETWORK => ipv6_network = Some(cidr6(k, v)?.trunc()),
                keys::IPV6_SUBNET => ipv6_subnet = Some(cidr6(k, v)?),
                keys::NETWORK => network = Some(cidr(k, v)?),
                keys::SUBNET => subnet = Some(cidr(k, v)?),
                keys::MTU => mtu = Some(v.parse::<u32>().map_err(|_| err(format!("{k}={v} is not a number")))?),
                keys::IPMASQ => ipmasq = Some(v == "true"),
                _ => {}
            }
        }
        if subnet.is_none() && ipv6_subnet.is_none() {
            return Err(err(format!("{} and {} are missing (a node needs at least one)", keys::SUBNET, keys::IPV6_SUBNET)));
        }
        let mtu = mtu.ok_or_else(|| err(format!("{} is missing", keys::MTU)))?;
        if !(68..=65535).contains(&mtu) {
            return Err(err(format!("{}={mtu} is outside 68..65535", keys::MTU)));
        }
        if let Some(s) = subnet.filter(|s| !(1..=30).contains(&s.prefix_len)) {
            return Err(err(format!("{}={s}: the prefix must be 1..30 (a gateway and at least one pod)", keys::SUBNET)));
        }
        if let Some(s6) = ipv6_subnet {
            if !(1..=126).contains(&s6.prefix_len) {
                return Err(err(format!("{}={s6}: the prefix must be 1..126 (a gateway and at least one pod)", keys::IPV6_SUBNET)));
            }
        }
        Ok(SubnetEnv {
            network: network.map(Ipv4Cidr::trunc),
            subnet: subnet.map(Ipv4Cidr::trunc),
            mtu,
            ipmasq,
            ipv6_network,
            ipv6_subnet: ipv6_subnet.map(Ipv6Cidr::trunc),
        })
    }

    /// The file as flanneld writes it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.network {
            s += &format!("{}={n}\n", keys::NETWORK);
        }
        if let Some(s4) = self.subnet {
            s += &format!("{}={}/{}\n", keys::SUBNET, s4.host(1), s4.prefix_len);
        }
        if let Some(n) = self.ipv6_network {
            s += &format!("{}={n}\n", keys::IPV6_NETWORK);
        }
        if let Some(s6) = self.ipv6_subnet {
            s += &format!("{}={}/{}\n", keys::IPV6_SUBNET, s6.host(1), s6.prefix_len);
        }
        s += &format!("{}={}\n", keys::MTU, self.mtu);
        s += &format!("{}={}\n", keys::IPMASQ, self.ipmasq.unwrap_or(false));
        s
    }

    /// Writes the file atomically ([`crate::fs::write_atomic`]), creating
    /// its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
        crate::fs::write_atomic(path, self.render().as_bytes(), None)
    }

    /// The IPv4 gateway on the bridge: the subnet's first address
    /// (FLANNEL_SUBNET's); None on an IPv6-only node.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.subnet.map(|s| s.host(1))
    }

    /// The IPv6 gateway on the bridge (FLANNEL_IPV6_SUBNET's address), if the node has
    /// IPv6 (dual stack or IPv6-only).
    pub fn ipv6_gateway(&self) -> Option<Ipv6Addr> {
        self.ipv6_subnet.map(|s| s.host(1))
    }
}

impl std::str::FromStr for SubnetEnv {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        SubnetEnv::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNELD: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn parses_and_renders_flanneld_output() {
        let e = SubnetEnv::parse(FLANNELD).unwrap();
        assert_eq!(e.network, Some(Ipv4Cidr { addr: Ipv4Addr::new(10, 244, 0, 0), prefix_len: 16 }));
        let s = e.subnet.unwrap();
        assert_eq!((s, e.mtu, e.ipmasq), (Ipv4Cidr { addr: Ipv4Addr::new(10, 244, 73, 0), prefix_len: 24 }, 1450, Some(false)));
        assert_eq!(e.gateway(), Some(Ipv4Addr::new(10, 244, 73, 1)));
        assert_eq!(s.host(2), Ipv4Addr::new(10, 244, 73, 2));
        assert_eq!((s.to_string(), s.lease_name()), ("10.244.73.0/24".to_string(), "10.244.73.0-24".to_string()));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 244, 73, 255));
        assert!(s.contains(Ipv4Addr::new(10, 244, 73, 9)) && !s.contains(Ipv4Addr::new(10, 244, 74, 9)));
        assert_eq!(e.render(), FLANNELD);
        let e = SubnetEnv::parse(" FLANNEL_SUBNET = 10.9.0.1/29 \nFLANNEL_MTU=1400\nFLANNEL_NEW=x\njunk\n").unwrap();
        assert_eq!((e.network, e.ipmasq, e.subnet.map(|s| s.broadcast())), (None, None, Some(Ipv4Addr::new(10, 9, 0, 7))));
        assert_eq!(e.render(), "FLANNEL_SUBNET=10.9.0.1/29\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n");
    }

    #[test]
    fn dual_stack_keys_as_flanneld_writes_them() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:49::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        let e = SubnetEnv::parse(text).unwrap();
        assert_eq!(e.ipv6_network.map(|c| c.to_string()).as_deref(), Some("fc00::/48"));
        assert_eq!(e.ipv6_subnet.map(|c| c.to_string()).as_deref(), Some("fc00:0:0:49::/64"));
        assert_eq!(e.ipv6_gateway(), Some("fc00:0:0:49::1".parse().unwrap()));
        assert!(e.ipv6_subnet.unwrap().contains("fc00:0:0:49::7".parse().unwrap()));
        assert!(!e.ipv6_subnet.unwrap().contains("fc00:0:0:4a::7".parse().unwrap()));
        assert_eq!(e.render(), text);
        assert_eq!(SubnetEnv::parse(FLANNELD).unwrap().ipv6_subnet, None);
        let err = |t: &str| SubnetEnv::parse(t).unwrap_err().to_string();
        assert_eq!(err("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_SUBNET=junk"), "FLANNEL_IPV6_SUBNET=junk is not an IPv6 CIDR");
        assert!(err("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_SUBNET=fc00::1/127").contains("prefix must be 1..126"));
        assert_eq!(err("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_NETWORK=10.0.0.0/8"), "FLANNEL_IPV6_NETWORK=10.0.0.0/8 is not an IPv6 CIDR");
    }

    /// flanneld with `"EnableIPv4": false` writes no IPv4 key at all.
    const IPV6_ONLY: &str = "FLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn ipv6_only_as_flanneld_writes_it() {
        let e = SubnetEnv::parse(IPV6_ONLY).unwrap();
        assert_eq!((e.network, e.subnet, e.gateway()), (None, None, None));
        assert_eq!(e.ipv6_network.map(|c| c.to_string()).as_deref(), Some("fd44::/48"));
        assert_eq!(e.ipv6_subnet.map(|c| c.to_string()).as_deref(), Some("fd44:0:0:5::/64"));
        assert_eq!(e.ipv6_gateway(), Some("fd44:0:0:5::1".parse().unwrap()));
        assert_eq!((e.mtu, e.ipmasq), (1430, Some(false)));
        // Byte for byte: no FLANNEL_NETWORK, no FLANNEL_SUBNET.
        assert_eq!(e.render(), IPV6_ONLY);
        assert_eq!(previous_subnet(IPV6_ONLY), None);
        // The IPv6 checks still apply without IPv4.
        let err = |t: &str| SubnetEnv::parse(t).unwrap_err().to_string();
        assert!(err("FLANNEL_IPV6_SUBNET=fd44::1/127\nFLANNEL_MTU=1430").contains("prefix must be 1..126"));
        assert_eq!(err("FLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\n"), "FLANNEL_MTU is missing");
        // Written and read back.
        let dir = std::env::temp_dir().join(format!("weft-common-subnet-env6-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        e.write(&dir.join("subnet.env")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("subnet.env")).unwrap(), IPV6_ONLY);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_what_cannot_work() {
        let err = |t: &str| SubnetEnv::parse(t).unwrap_err().to_string();
        assert_eq!(err("FLANNEL_MTU=1450\n"), "FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET are missing (a node needs at least one)");
        assert_eq!(err("FLANNEL_NETWORK=10.0.0.0/16\nFLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_MTU=1450\n"), err("FLANNEL_MTU=1450\n"));
        assert_eq!(err("FLANNEL_SUBNET=10.0.0.1/24\n"), "FLANNEL_MTU is missing");
        assert!(err("FLANNEL_SUBNET=10.0.0.1/31\nFLANNEL_MTU=1450").contains("prefix must be 1..30"));
        assert_eq!(err("FLANNEL_SUBNET=junk\nFLANNEL_MTU=1450"), "FLANNEL_SUBNET=junk is not an IPv4 CIDR");
        assert_eq!(err("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=9"), "FLANNEL_MTU=9 is outside 68..65535");
        assert_eq!(err("FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=x"), "FLANNEL_MTU=x is not a number");
        assert_eq!(err("FLANNEL_NETWORK=10.0.0.0/33\nFLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1450"), "FLANNEL_NETWORK=10.0.0.0/33 is not an IPv4 CIDR");
    }

    #[test]
    fn previous_subnet_needs_only_the_subnet() {
        assert_eq!(previous_subnet("FLANNEL_SUBNET=10.244.73.1/24\n"), Some(Ipv4Cidr { addr: Ipv4Addr::new(10, 244, 73, 0), prefix_len: 24 }));
        assert_eq!(previous_subnet(FLANNELD).map(|c| c.to_string()).as_deref(), Some("10.244.73.0/24"));
        assert_eq!(previous_subnet("FLANNEL_MTU=1450\n"), None);
    }

    #[test]
    fn writes_atomically() {
        let dir = std::env::temp_dir().join(format!("weft-common-subnet-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/subnet.env");
        let e = SubnetEnv::parse(FLANNELD).unwrap();
        e.write(&path).unwrap();
        assert_eq!(SubnetEnv::parse(&std::fs::read_to_string(&path).unwrap()).unwrap(), e);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
