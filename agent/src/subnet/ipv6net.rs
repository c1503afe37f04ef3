//! A small IPv6 prefix type, and flannel's lease key form of its IPv6 part
//! (`fd44:0:0:5::-64`, after the `&` of a dual-stack key).
use std::{fmt, net::Ipv6Addr, str::FromStr};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self> {
        if len > 128 {
            bail!("prefix length {len} is longer than 128");
        }
        Ok(Ipv6Net { addr, len })
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    fn mask(&self) -> u128 {
        weft_common::subnet_env::mask6(self.len)
    }
    pub fn network_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }
    pub fn trunc(&self) -> Ipv6Net {
        Ipv6Net { addr: self.network_addr(), len: self.len }
    }
    /// Addresses in the prefix (saturating at u128::MAX for /0).
    pub fn size(&self) -> u128 {
        1u128.checked_shl(128 - self.len as u32).unwrap_or(u128::MAX)
    }
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & self.mask() == u128::from(self.network_addr())
    }
    pub fn contains_net(&self, other: &Ipv6Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
    /// The n-th address of the prefix (n = 0 is the network address).
    pub fn nth(&self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network_addr()).wrapping_add(n))
    }

    /// flannel's key form: `fd44:0:0:5::-64` (the address as Go prints it,
    /// which is RFC 5952's form, as Rust's).
    pub fn to_key(&self) -> String {
        format!("{}-{}", self.addr, self.len)
    }
    /// Parses the IPv6 part of flannel's key form.
    pub fn from_key(key: &str) -> Result<Ipv6Net> {
        let (a, l) = key.rsplit_once('-').with_context(|| format!("{key:?} is not of the form <ipv6>-len"))?;
        let addr: Ipv6Addr = a.parse().with_context(|| format!("{a:?} is not an IPv6 address"))?;
        let len: u8 = l.parse().with_context(|| format!("{l:?} is not a prefix length"))?;
        let n = Ipv6Net::new(addr, len)?;
        if n.addr != n.network_addr() {
            bail!("{key:?}: host bits set");
        }
        Ok(n)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv6Net {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (a, l) = s.split_once('/').with_context(|| format!("{s:?} is not of the form <ipv6>/len"))?;
        let addr = a.parse().with_context(|| format!("{a:?} is not an IPv6 address"))?;
        let len = l.parse().with_context(|| format!("{l:?} is not a prefix length"))?;
        Ipv6Net::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let n = Ipv6Net::from_key("fd44:0:0:5::-64").unwrap();
        assert_eq!(n.to_string(), "fd44:0:0:5::/64");
        assert_eq!(n.to_key(), "fd44:0:0:5::-64");
        assert_eq!(n.nth(1), "fd44:0:0:5::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.size(), 1 << 64);
        for bad in ["fd44::", "fd44::1-64", "x-64", "fd44::-129", "10.0.0.0-8"] {
            assert!(Ipv6Net::from_key(bad).is_err(), "{bad}");
        }
        let net: Ipv6Net = "fd44::/48".parse().unwrap();
        assert!(net.contains_net(&n) && !n.contains_net(&net));
        assert!(!net.contains("fd45::1".parse().unwrap()));
    }
}
