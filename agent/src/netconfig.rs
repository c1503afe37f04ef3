//! flannel's network configuration (`<prefix>/config`), parsed and validated
//! with flannel's defaults (subnet/config.go). Errors name the bad field.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{
    backend::Config as Backend,
    subnet::{Ipv4Net, Ipv6Net},
};

/// A network carries IPv4 (the default), IPv4 and IPv6 (dual stack:
/// `EnableIPv6`) or IPv6 only (`EnableIPv4: false`): at least one of the
/// two families is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The IPv4 pod network (`Network`, `SubnetLen`, ...), unless the
    /// network is IPv6-only.
    pub ipv4: Option<Ipv4Config>,
    /// The IPv6 pod network (`EnableIPv6`).
    pub ipv6: Option<Ipv6Config>,
    /// The `Backend` section, as read by the backend it names.
    pub backend: Backend,
}

/// flannel's IPv4 keys, with its defaults (`SubnetLen` 24, or the network's
/// prefix + 2 when that is longer; the first and last subnets of the
/// network are not handed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Config {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
}

/// flannel's IPv6 keys, with its defaults (`IPv6SubnetLen` 64, or the
/// network's prefix + 2 when that is longer; the first and last subnets of
/// the network are not handed out, as for IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Config {
    pub network: Ipv6Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv6Addr,
    pub subnet_max: Ipv6Addr,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    network: Option<String>,
    subnet_len: Option<u32>,
    subnet_min: Option<String>,
    subnet_max: Option<String>,
    #[serde(rename = "EnableIPv4")]
    enable_ipv4: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPv6Network")]
    ipv6_network: Option<String>,
    #[serde(rename = "IPv6SubnetLen")]
    ipv6_subnet_len: Option<u32>,
    #[serde(rename = "IPv6SubnetMin")]
    ipv6_subnet_min: Option<String>,
    #[serde(rename = "IPv6SubnetMax")]
    ipv6_subnet_max: Option<String>,
    backend: Option<serde_json::Value>,
}

fn parse_addr(field: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().with_context(|| format!("config field {field}: {s:?} is not an IPv4 address"))
}

impl NetConfig {
    /// Parses the JSON stored at `<prefix>/config`.
    pub fn parse(json: &str) -> Result<NetConfig> {
        let raw: RawConfig = serde_json::from_str(json).context("network config is not valid JSON of flannel's shape")?;
        let (enable4, enable6) = (raw.enable_ipv4.unwrap_or(true), raw.enable_ipv6.unwrap_or(false));
        if !enable4 && !enable6 {
            bail!("config fields EnableIPv4 and EnableIPv6 are both false: the network carries neither family");
        }
        let ipv6 = if enable6 { Some(Ipv6Config::parse(raw.ipv6_network, raw.ipv6_subnet_len, raw.ipv6_subnet_min, raw.ipv6_subnet_max)?) } else { None };
        let ipv4 = if enable4 { Some(Ipv4Config::parse(raw.network, raw.subnet_len, raw.subnet_min, raw.subnet_max)?) } else { None };
        let backend = Backend::parse(raw.backend)?;
        Ok(NetConfig { ipv4, ipv6, backend })
    }

    /// The IPv4 pod network, if the network carries IPv4.
    pub fn network4(&self) -> Option<Ipv4Net> {
        self.ipv4.as_ref().map(|c| c.network)
    }

    /// The IPv6 pod network, if the network carries IPv6.
    pub fn network6(&self) -> Option<Ipv6Net> {
        self.ipv6.as_ref().map(|c| c.network)
    }
}

impl Ipv4Config {
    fn parse(network: Option<String>, len: Option<u32>, min: Option<String>, max: Option<String>) -> Result<Ipv4Config> {
        let net_s = network.context("config field Network is missing (EnableIPv4 is true unless set to false)")?;
        let network: Ipv4Net = net_s.parse().with_context(|| format!("config field Network: {net_s:?}"))?;
        if network.addr() != network.network_addr() {
            bail!("config field Network: {network} has host bits set (did you mean {}?)", network.trunc());
        }
        let subnet_len = match len {
            None if network.prefix_len() <= 22 => 24,
            None => network.prefix_len() + 2,
            Some(l) if l > 30 => bail!("config field SubnetLen: {l} is longer than 30"),
            Some(l) if l < network.prefix_len() as u32 + 2 => {
                bail!("config field SubnetLen: {l} must be at least Network's prefix + 2 ({})", network.prefix_len() + 2)
            }
            Some(l) => l as u8,
        };
        if subnet_len > 30 {
            bail!("config field Network: {network} is too small to hold /{subnet_len} subnets");
        }
        let step = 1u32 << (32 - subnet_len);
        let first = u32::from(network.network_addr());
        let last = first + (network.size() - step as u64) as u32;
        let subnet_min = min.map(|s| parse_addr("SubnetMin", &s)).transpose()?.unwrap_or(Ipv4Addr::from(first + step));
        let subnet_max = max.map(|s| parse_addr("SubnetMax", &s)).transpose()?.unwrap_or(Ipv4Addr::from(last));
        for (field, a) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(a) {
                bail!("config field {field}: {a} is outside Network {network}");
            }
            if u32::from(a) % step != 0 {
                bail!("config field {field}: {a} is not aligned to SubnetLen /{subnet_len}");
            }
        }
        if u32::from(subnet_min) > u32::from(subnet_max) {
            bail!("config fields SubnetMin/SubnetMax: {subnet_min} is above {subnet_max}");
        }
        Ok(Ipv4Config { network, subnet_len, subnet_min, subnet_max })
    }

    /// Every candidate subnet from SubnetMin to SubnetMax, in order.
    pub fn candidate_subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let step = 1u64 << (32 - self.subnet_len);
        let (min, max) = (u32::from(self.subnet_min) as u64, u32::from(self.subnet_max) as u64);
        (min..=max).step_by(step as usize).map(move |a| Ipv4Net::new(Ipv4Addr::from(a as u32), self.subnet_len).expect("len <= 30"))
    }

    /// A subnet of the configured size inside the configured range.
    pub fn fits(&self, n: &Ipv4Net) -> bool {
        n.prefix_len() == self.subnet_len
            && self.network.contains_net(n)
            && u32::from(n.addr()) >= u32::from(self.subnet_min)
            && u32::from(n.addr()) <= u32::from(self.subnet_max)
    }
}

impl Ipv6Config {
    fn parse(network: Option<String>, len: Option<u32>, min: Option<String>, max: Option<String>) -> Result<Ipv6Config> {
        let net_s = network.context("config field IPv6Network is missing (EnableIPv6 is true)")?;
        let network: Ipv6Net = net_s.parse().with_context(|| format!("config field IPv6Network: {net_s:?}"))?;
        if network.addr() != network.network_addr() {
            bail!("config field IPv6Network: {network} has host bits set (did you mean {}?)", network.trunc());
        }
        let p = network.prefix_len();
        let subnet_len = match len {
            None if p > 124 => bail!("config field IPv6Network: {network} is too small (the shortest useful prefix is /124)"),
            None if p <= 62 => 64,
            None => p + 2,
            Some(l) if l > 126 => bail!("config field IPv6SubnetLen: {l} is longer than 126"),
            Some(l) if l < p as u32 + 2 => bail!("config field IPv6SubnetLen: {l} must be at least IPv6Network's prefix + 2 ({})", p + 2),
            Some(l) => l as u8,
        };
        let step = 1u128 << (128 - subnet_len);
        let first = u128::from(network.network_addr());
        let last = first + (network.size() - step);
        let addr = |field: &str, s: String| -> Result<Ipv6Addr> { s.parse().with_context(|| format!("config field {field}: {s:?} is not an IPv6 address")) };
        let subnet_min = min.map(|s| addr("IPv6SubnetMin", s)).transpose()?.unwrap_or(Ipv6Addr::from(first + step));
        let subnet_max = max.map(|s| addr("IPv6SubnetMax", s)).transpose()?.unwrap_or(Ipv6Addr::from(last));
        for (field, a) in [("IPv6SubnetMin", subnet_min), ("IPv6SubnetMax", subnet_max)] {
            if !network.contains(a) {
                bail!("config field {field}: {a} is outside IPv6Network {network}");
            }
            if u128::from(a) % step != 0 {
                bail!("config field {field}: {a} is not aligned to IPv6SubnetLen /{subnet_len}");
            }
        }
        if u128::from(subnet_min) > u128::from(subnet_max) {
            bail!("config fields IPv6SubnetMin/IPv6SubnetMax: {subnet_min} is above {subnet_max}");
        }
        Ok(Ipv6Config { network, subnet_len, subnet_min, subnet_max })
    }

    /// Every candidate subnet from IPv6SubnetMin to IPv6SubnetMax, in order
    /// (lazily: a /48 holds 65,536 /64s).
    pub fn candidate_subnets(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        let step = 1u128 << (128 - self.subnet_len);
        let (min, max) = (u128::from(self.subnet_min), u128::from(self.subnet_max));
        let count = (max - min) / step + 1;
        (0..count).map(move |i| Ipv6Net::new(Ipv6Addr::from(min + i * step), self.subnet_len).expect("len <= 126"))
    }

    /// A subnet of the configured size inside the configured range.
    pub fn fits(&self, n: &Ipv6Net) -> bool {
        n.prefix_len() == self.subnet_len
            && self.network.contains_net(n)
            && u128::from(n.addr()) >= u128::from(self.subnet_min)
            && u128::from(n.addr()) <= u128::from(self.subnet_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_defaults() {
        let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.backend, Backend::Vxlan(crate::backend::vxlan::Config { vni: 1, port: 8472, direct_routing: false }));
        let c = c.ipv4.unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        let d = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789,"DirectRouting":true}}"#).unwrap();
        assert_eq!(d.backend, Backend::Vxlan(crate::backend::vxlan::Config { vni: 4, port: 4789, direct_routing: true }));
        assert_eq!(c.candidate_subnets().count(), 255);
        let small = NetConfig::parse(r#"{"Network":"10.1.0.0/24"}"#).unwrap();
        assert_eq!(small.backend, Backend::Udp(crate::backend::udp::backend::Config { port: 8285 }));
        let small = small.ipv4.unwrap();
        assert_eq!(small.subnet_len, 26);
        assert_eq!(small.candidate_subnets().map(|s| s.to_string()).collect::<Vec<_>>(), ["10.1.0.64/26", "10.1.0.128/26", "10.1.0.192/26"]);
    }

    #[test]
    fn ipv6_defaults_as_flannel() {
        let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","Backend":{"Type":"vxlan"}}"#).unwrap();
        let v6 = c.ipv6.unwrap();
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(v6.subnet_min, "fd44:0:0:1::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.subnet_max, "fd44:0:0:ffff::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.candidate_subnets().count(), 65535);
        assert_eq!(v6.candidate_subnets().next().unwrap().to_string(), "fd44:0:0:1::/64");
        let small = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/120"}"#).unwrap().ipv6.unwrap();
        assert_eq!(small.subnet_len, 122);
        assert_eq!(small.candidate_subnets().map(|s| s.to_string()).collect::<Vec<_>>(), ["fd44::40/122", "fd44::80/122", "fd44::c0/122"]);
        assert!(NetConfig::parse(r#"{"Network":"10.244.0.0/16","IPv6Network":"fd44::/48"}"#).unwrap().ipv6.is_none());
    }

    #[test]
    fn ipv6_only_as_flannel() {
        let c = NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/48","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert!(c.ipv4.is_none() && c.network4().is_none());
        assert_eq!(c.network6().unwrap().to_string(), "fd44::/48");
        // Network may be given and is then not used (flannel ignores it too).
        let n = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        assert!(n.ipv4.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        for (json, field) in [
            (r#"{"Backend":{"Type":"vxlan"}}"#, "Network"),
            (r#"{"Network":"10.244.0.0/33"}"#, "Network"),
            (r#"{"Network":"10.244.1.0/16"}"#, "Network"),
            (r#"{"Network":"10.244.0.0/16","SubnetLen":31}"#, "SubnetLen"),
            (r#"{"Network":"10.244.0.0/16","SubnetLen":17}"#, "SubnetLen"),
            (r#"{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}"#, "SubnetMin"),
            (r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.7"}"#, "SubnetMax"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}"#, "Backend.Type"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#, "Backend.VNI"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":70000}}"#, "Backend.Port"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true}"#, "IPv6Network"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}"#, "IPv6Network"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::1/48"}"#, "IPv6Network"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/125"}"#, "IPv6Network"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","IPv6SubnetLen":127}"#, "IPv6SubnetLen"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","IPv6SubnetLen":49}"#, "IPv6SubnetLen"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","IPv6SubnetMin":"fd45::"}"#, "IPv6SubnetMin"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","IPv6SubnetMax":"fd44:0:0:3::7"}"#, "IPv6SubnetMax"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48","IPv6SubnetMin":"x"}"#, "IPv6SubnetMin"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv4":false}"#, "EnableIPv4"),
            (r#"{"EnableIPv4":false,"EnableIPv6":false,"IPv6Network":"fd44::/48"}"#, "EnableIPv6"),
            (r#"{"EnableIPv4":false,"EnableIPv6":true}"#, "IPv6Network"),
        ] {
            let e = format!("{:#}", NetConfig::parse(json).unwrap_err());
            assert!(e.contains(field), "{json}: error {e:?} does not name {field}");
        }
        assert!(NetConfig::parse("{not json").is_err());
    }
}
