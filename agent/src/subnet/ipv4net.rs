//! A small IPv4 prefix type, and flannel's lease key form `10.244.73.0-24`.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self> {
        if len > 32 {
            bail!("prefix length {len} is longer than 32");
        }
        Ok(Ipv4Net { addr, len })
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }
    pub fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net { addr: self.network_addr(), len: self.len }
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.len)
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.network_addr())
    }
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
    /// The n-th address of the prefix (n = 0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network_addr()).wrapping_add(n))
    }

    /// flannel's etcd key form: `10.244.73.0-24`.
    pub fn to_key(&self) -> String {
        format!("{}-{}", self.addr, self.len)
    }
    /// Parses flannel's key form (the IPv4 part; a dual-stack key's `&v6`
    /// part is [`super::Subnets::from_key`]'s).
    pub fn from_key(key: &str) -> Result<Ipv4Net> {
        let v4 = key.split('&').next().unwrap_or(key);
        let (a, l) = v4.rsplit_once('-').with_context(|| format!("lease key {key:?} is not of the form a.b.c.d-len"))?;
        let addr: Ipv4Addr = a.parse().with_context(|| format!("lease key {key:?}: {a:?} is not an IPv4 address"))?;
        let len: u8 = l.parse().with_context(|| format!("lease key {key:?}: {l:?} is not a prefix length"))?;
        let n = Ipv4Net::new(addr, len).with_context(|| format!("lease key {key:?}"))?;
        if n.addr != n.network_addr() {
            bail!("lease key {key:?}: host bits set");
        }
        Ok(n)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (a, l) = s.split_once('/').with_context(|| format!("{s:?} is not of the form a.b.c.d/len"))?;
        let addr = a.parse().with_context(|| format!("{a:?} is not an IPv4 address"))?;
        let len = l.parse().with_context(|| format!("{l:?} is not a prefix length"))?;
        Ipv4Net::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let n = Ipv4Net::from_key("10.244.73.0-24").unwrap();
        assert_eq!(n.to_string(), "10.244.73.0/24");
        assert_eq!(n.to_key(), "10.244.73.0-24");
        assert_eq!(n.nth(1), Ipv4Addr::new(10, 244, 73, 1));
        assert_eq!(Ipv4Net::from_key("10.244.73.0-24&fd00::-64").unwrap(), n);
        for bad in ["10.244.73.0", "10.244.73.1-24", "x-24", "10.244.73.0-40", "10.244.73.0-"] {
            assert!(Ipv4Net::from_key(bad).is_err(), "{bad}");
        }
        assert!("10.0.0.0/8".parse::<Ipv4Net>().unwrap().contains_net(&n));
        assert!(!n.contains_net(&"10.0.0.0/8".parse().unwrap()));
    }
}
