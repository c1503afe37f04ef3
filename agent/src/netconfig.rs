//! flannel's network configuration (`<prefix>/config`), parsed and validated
//! with flannel's defaults (subnet/config.go). Errors name the bad field.
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{backend::Config as Backend, subnet::Ipv4Net};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    /// The `Backend` section, as read by the backend it names.
    pub backend: Backend,
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
    backend: Option<serde_json::Value>,
}

fn parse_addr(field: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().with_context(|| format!("config field {field}: {s:?} is not an IPv4 address"))
}

impl NetConfig {
    /// Parses the JSON stored at `<prefix>/config`.
    pub fn parse(json: &str) -> Result<NetConfig> {
        let raw: RawConfig = serde_json::from_str(json).context("network config is not valid JSON of flannel's shape")?;
        if raw.enable_ipv4 == Some(false) {
            bail!("config field EnableIPv4: false is not supported (weft is IPv4-only for now)");
        }
        if raw.enable_ipv6 == Some(true) {
            log::warn!("config field EnableIPv6: IPv6 is not supported yet; carrying IPv4 only");
        }
        let net_s = raw.network.context("config field Network is missing")?;
        let network: Ipv4Net = net_s.parse().with_context(|| format!("config field Network: {net_s:?}"))?;
        if network.addr() != network.network_addr() {
            bail!("config field Network: {network} has host bits set (did you mean {}?)", network.trunc());
        }
        let subnet_len = match raw.subnet_len {
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
        let subnet_min = match raw.subnet_min {
            Some(s) => parse_addr("SubnetMin", &s)?,
            None => Ipv4Addr::from(first + step),
        };
        let subnet_max = match raw.subnet_max {
            Some(s) => parse_addr("SubnetMax", &s)?,
            None => Ipv4Addr::from(last),
        };
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
        let backend = Backend::parse(raw.backend)?;
        Ok(NetConfig { network, subnet_len, subnet_min, subnet_max, backend })
    }

    /// Every candidate subnet from SubnetMin to SubnetMax, in order.
    pub fn candidate_subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let step = 1u64 << (32 - self.subnet_len);
        let (min, max) = (u32::from(self.subnet_min) as u64, u32::from(self.subnet_max) as u64);
        (min..=max).step_by(step as usize).map(move |a| Ipv4Net::new(Ipv4Addr::from(a as u32), self.subnet_len).expect("len <= 30"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_defaults() {
        let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(c.backend, Backend::Vxlan(crate::backend::vxlan::Config { vni: 1, port: 8472, direct_routing: false }));
        let d = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789,"DirectRouting":true}}"#).unwrap();
        assert_eq!(d.backend, Backend::Vxlan(crate::backend::vxlan::Config { vni: 4, port: 4789, direct_routing: true }));
        assert_eq!(c.candidate_subnets().count(), 255);
        let small = NetConfig::parse(r#"{"Network":"10.1.0.0/24"}"#).unwrap();
        assert_eq!(small.subnet_len, 26);
        assert_eq!(small.backend, Backend::Udp(crate::backend::udp::backend::Config { port: 8285 }));
        assert_eq!(small.candidate_subnets().map(|s| s.to_string()).collect::<Vec<_>>(), ["10.1.0.64/26", "10.1.0.128/26", "10.1.0.192/26"]);
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
        ] {
            let e = format!("{:#}", NetConfig::parse(json).unwrap_err());
            assert!(e.contains(field), "{json}: error {e:?} does not name {field}");
        }
        assert!(NetConfig::parse("{not json").is_err());
    }
}
