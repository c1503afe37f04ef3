//! A lease's subnets, which are also its name in the store: the IPv4
//! subnet and, on a dual-stack network, the IPv6 one. flannel's key joins
//! them with `&`: `10.244.5.0-24&fd44:0:0:5::-64` (`MakeSubnetKey`).
use std::fmt;

use anyhow::{Context, Result};

use super::{Ipv4Net, Ipv6Net};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnets {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
}

impl Subnets {
    pub fn v4(v4: Ipv4Net) -> Subnets {
        Subnets { v4, v6: None }
    }

    /// flannel's key: `10.244.5.0-24`, or `10.244.5.0-24&fd44:0:0:5::-64`.
    pub fn to_key(&self) -> String {
        match self.v6 {
            None => self.v4.to_key(),
            Some(v6) => format!("{}&{}", self.v4.to_key(), v6.to_key()),
        }
    }

    /// Whether a lease of `other` would hold an address of ours, in either
    /// family: two such leases must never both exist. (The store's atomic
    /// create is per key, and a dual-stack key names two subnets, so a
    /// create must check this too.)
    pub fn overlaps(&self, other: &Subnets) -> bool {
        let v4 = self.v4.contains_net(&other.v4) || other.v4.contains_net(&self.v4);
        let v6 = match (self.v6, other.v6) {
            (Some(a), Some(b)) => a.contains_net(&b) || b.contains_net(&a),
            _ => false,
        };
        v4 || v6
    }

    /// Parses flannel's key (either form).
    pub fn from_key(key: &str) -> Result<Subnets> {
        let (v4, v6) = match key.split_once('&') {
            Some((v4, v6)) => (v4, Some(v6)),
            None => (key, None),
        };
        let v4 = Ipv4Net::from_key(v4)?;
        let v6 = v6.map(|s| Ipv6Net::from_key(s).with_context(|| format!("lease key {key:?}: the IPv6 part"))).transpose()?;
        Ok(Subnets { v4, v6 })
    }
}

impl fmt::Display for Subnets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.v6 {
            None => write!(f, "{}", self.v4),
            Some(v6) => write!(f, "{} + {v6}", self.v4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_keys() {
        let d = Subnets::from_key("10.244.5.0-24&fd44:0:0:5::-64").unwrap();
        assert_eq!(d.v4.to_string(), "10.244.5.0/24");
        assert_eq!(d.v6.unwrap().to_string(), "fd44:0:0:5::/64");
        assert_eq!(d.to_key(), "10.244.5.0-24&fd44:0:0:5::-64");
        assert_eq!(d.to_string(), "10.244.5.0/24 + fd44:0:0:5::/64");
        let s = Subnets::from_key("10.244.5.0-24").unwrap();
        assert_eq!((s.v6, s.to_key()), (None, "10.244.5.0-24".to_string()));
        let e = format!("{:#}", Subnets::from_key("10.244.5.0-24&fd44::1-64").unwrap_err());
        assert!(e.contains("IPv6 part"), "{e}");
        assert!(Subnets::from_key("10.244.5.0-24&").is_err());
        let other_v6 = Subnets::from_key("10.244.5.0-24&fd44:0:0:6::-64").unwrap();
        let other_v4 = Subnets::from_key("10.244.6.0-24&fd44:0:0:5::-64").unwrap();
        let neither = Subnets::from_key("10.244.6.0-24&fd44:0:0:6::-64").unwrap();
        assert!(d.overlaps(&other_v6) && d.overlaps(&other_v4) && d.overlaps(&s) && !d.overlaps(&neither));
    }
}
