//! A lease's subnets, which are also its name in the store: the IPv4
//! subnet and, on a dual-stack network, the IPv6 one. flannel's key joins
//! them with `&`: `10.244.5.0-24&fd44:0:0:5::-64` (`MakeSubnetKey`). An
//! IPv6-only network's key has the zero IPv4 subnet: `0.0.0.0-0&fd44:0:0:5::-64`.
use std::fmt;

use anyhow::{bail, Context, Result};

use super::{Ipv4Net, Ipv6Net};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnets {
    /// None on an IPv6-only network.
    pub v4: Option<Ipv4Net>,
    /// None on an IPv4-only network.
    pub v6: Option<Ipv6Net>,
}

/// The IPv4 part of an IPv6-only key (flannel's zero `ip.IP4Net`).
const NO_V4_KEY: &str = "0.0.0.0-0";

impl Subnets {
    pub fn v4(v4: Ipv4Net) -> Subnets {
        Subnets { v4: Some(v4), v6: None }
    }

    /// flannel's key: `10.244.5.0-24`, `10.244.5.0-24&fd44:0:0:5::-64`, or
    /// `0.0.0.0-0&fd44:0:0:5::-64`.
    pub fn to_key(&self) -> String {
        let v4 = self.v4.map(|n| n.to_key()).unwrap_or_else(|| NO_V4_KEY.to_string());
        match self.v6 {
            None => v4,
            Some(v6) => format!("{v4}&{}", v6.to_key()),
        }
    }

    /// Whether a lease of `other` would hold an address of ours, in either
    /// family: two such leases must never both exist. (The store's atomic
    /// create is per key, and a dual-stack key names two subnets, so a
    /// create must check this too.)
    pub fn overlaps(&self, other: &Subnets) -> bool {
        let v4 = match (self.v4, other.v4) {
            (Some(a), Some(b)) => a.contains_net(&b) || b.contains_net(&a),
            _ => false,
        };
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
        let v6 = v6.map(|s| Ipv6Net::from_key(s).with_context(|| format!("lease key {key:?}: the IPv6 part"))).transpose()?;
        let v4 = match (v4, v6) {
            (NO_V4_KEY, Some(_)) => None,
            (NO_V4_KEY, None) => bail!("lease key {key:?} names no subnet (0.0.0.0/0 without an IPv6 part)"),
            (v4, _) => Some(Ipv4Net::from_key(v4)?),
        };
        Ok(Subnets { v4, v6 })
    }
}

impl fmt::Display for Subnets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.v4, self.v6) {
            (Some(v4), None) => write!(f, "{v4}"),
            (Some(v4), Some(v6)) => write!(f, "{v4} + {v6}"),
            (None, Some(v6)) => write!(f, "{v6}"),
            (None, None) => write!(f, "(no subnet)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_keys() {
        let d = Subnets::from_key("10.244.5.0-24&fd44:0:0:5::-64").unwrap();
        assert_eq!(d.v4.unwrap().to_string(), "10.244.5.0/24");
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

    #[test]
    fn ipv6_only_keys_as_flannel() {
        let o = Subnets::from_key("0.0.0.0-0&fd44:0:0:5::-64").unwrap();
        assert_eq!((o.v4, o.v6.unwrap().to_string()), (None, "fd44:0:0:5::/64".to_string()));
        assert_eq!(o.to_key(), "0.0.0.0-0&fd44:0:0:5::-64");
        assert_eq!(o.to_string(), "fd44:0:0:5::/64");
        assert!(format!("{:#}", Subnets::from_key("0.0.0.0-0").unwrap_err()).contains("names no subnet"));
        let other = Subnets::from_key("0.0.0.0-0&fd44:0:0:6::-64").unwrap();
        let ds = Subnets::from_key("10.244.5.0-24&fd44:0:0:5::-64").unwrap();
        assert!(!o.overlaps(&other) && o.overlaps(&ds) && o.overlaps(&o));
    }
}
