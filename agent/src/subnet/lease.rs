//! Subnet leases in flannel's format: key `<prefix>/subnets/10.244.73.0-24`,
//! value `{"PublicIP":..,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":".."}}`.
//! A dual-stack lease: key `10.244.73.0-24&fd44:0:0:49::-64`, and the value
//! adds `"PublicIPv6":"fd77::1"` and (vxlan) `"BackendV6Data":{"VNI":1,"VtepMAC":".."}`,
//! the parameters of the node's IPv6 vxlan device. An IPv6-only lease:
//! key `0.0.0.0-0&fd44:0:0:49::-64`, `"PublicIP":"0.0.0.0"` and no
//! BackendData (flannel's zero IPv4 values).
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::subnet::{Ipv4Net, Ipv6Net, Subnets};

/// The JSON value of a lease, field for field as flanneld writes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    #[serde(rename = "BackendData", default, skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<serde_json::Value>,
    #[serde(rename = "BackendV6Data", default, skip_serializing_if = "Option::is_none")]
    pub backend_v6_data: Option<serde_json::Value>,
}

/// A peer's lease as weft uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The IPv4 subnet (None: a lease of an IPv6-only network).
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 subnet of a dual-stack lease (the key's `&` part).
    pub subnet6: Option<Ipv6Net>,
    pub attrs: LeaseAttrs,
}

/// VXLAN parameters of a vxlan lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    pub vni: u32,
    pub vtep_mac: [u8; 6],
}

pub use weft_common::mac::format_mac;

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    weft_common::mac::parse_mac(s).with_context(|| format!("{s:?} is not a MAC address"))
}

impl LeaseAttrs {
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, mac: &[u8; 6]) -> LeaseAttrs {
        LeaseAttrs { public_ip, public_ipv6: None, backend_type: Some("vxlan".into()), backend_data: Some(vxlan_json(vni, mac)), backend_v6_data: None }
    }

    /// An IPv6-only network's lease of `backend_type` (vxlan: BackendV6Data
    /// only), PublicIP 0.0.0.0 as flanneld writes it.
    pub fn ipv6_only(backend_type: &str, public_ipv6: Ipv6Addr, vxlan6: Option<(u32, [u8; 6])>) -> LeaseAttrs {
        LeaseAttrs { public_ip: Ipv4Addr::UNSPECIFIED, public_ipv6: None, backend_type: Some(backend_type.into()), backend_data: None, backend_v6_data: None }
            .with_ipv6(public_ipv6, vxlan6)
    }

    /// The same lease announcing our IPv6 address (dual stack), and for
    /// vxlan the parameters of our IPv6 vxlan device (BackendV6Data).
    pub fn with_ipv6(mut self, public_ipv6: Ipv6Addr, vxlan6: Option<(u32, [u8; 6])>) -> LeaseAttrs {
        self.public_ipv6 = Some(public_ipv6);
        self.backend_v6_data = vxlan6.map(|(vni, mac)| vxlan_json(vni, &mac));
        self
    }

    /// flannel's host-gw lease: no BackendData.
    pub fn host_gw(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs { public_ip, public_ipv6: None, backend_type: Some("host-gw".into()), backend_data: None, backend_v6_data: None }
    }

    /// flannel's udp lease: neither BackendType nor BackendData.
    pub fn udp(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs { public_ip, public_ipv6: None, backend_type: None, backend_data: None, backend_v6_data: None }
    }

    /// Whether this is a udp lease (flannel writes no BackendType for udp).
    pub fn is_udp(&self) -> bool {
        matches!(self.backend_type.as_deref(), None | Some("udp"))
    }

    /// The VXLAN parameters, if this is a usable vxlan lease.
    pub fn vxlan_data(&self) -> Result<VxlanData> {
        self.check_vxlan()?;
        parse_vxlan("BackendData", self.backend_data.as_ref())
    }

    /// The parameters of the peer's IPv6 vxlan device (BackendV6Data), if
    /// this is a usable dual-stack vxlan lease.
    pub fn vxlan_v6_data(&self) -> Result<VxlanData> {
        self.check_vxlan()?;
        parse_vxlan("BackendV6Data", self.backend_v6_data.as_ref())
    }

    fn check_vxlan(&self) -> Result<()> {
        if self.backend_type.as_deref() != Some("vxlan") {
            bail!("BackendType is {:?}, not \"vxlan\"", self.backend_type.as_deref().unwrap_or("(none: udp)"));
        }
        Ok(())
    }
}

fn vxlan_json(vni: u32, mac: &[u8; 6]) -> serde_json::Value {
    serde_json::json!({ "VNI": vni, "VtepMAC": format_mac(mac) })
}

/// flannel's vxlan BackendData (or BackendV6Data, named by `field`).
fn parse_vxlan(field: &str, d: Option<&serde_json::Value>) -> Result<VxlanData> {
    let d = d.with_context(|| format!("{field} is missing"))?;
    let vni = d.get("VNI").and_then(|v| v.as_u64()).with_context(|| format!("{field}.VNI is missing or not a number"))?;
    let mac = d.get("VtepMAC").and_then(|v| v.as_str()).with_context(|| format!("{field}.VtepMAC is missing or not a string"))?;
    let vtep_mac = parse_mac(mac).with_context(|| format!("{field}.VtepMAC"))?;
    if vtep_mac[0] & 1 == 1 || vtep_mac == [0; 6] {
        bail!("{field}.VtepMAC {mac} is not a unicast address");
    }
    Ok(VxlanData { vni: u32::try_from(vni).with_context(|| format!("{field}.VNI"))?, vtep_mac })
}

impl Lease {
    /// Parses a lease from its key suffix (after `<prefix>/subnets/`) and JSON value.
    pub fn parse(key_suffix: &str, value: &[u8]) -> Result<Lease> {
        let Subnets { v4: subnet, v6: subnet6 } = Subnets::from_key(key_suffix)?;
        let attrs: LeaseAttrs = serde_json::from_slice(value).with_context(|| format!("lease {key_suffix}: value is not flannel's lease JSON"))?;
        Ok(Lease { subnet, subnet6, attrs })
    }

    /// The subnets, as the store names them.
    pub fn subnets(&self) -> Subnets {
        Subnets { v4: self.subnet, v6: self.subnet6 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flanneld_value_round_trips() {
        let v = r#"{"PublicIP":"192.168.254.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"56:b8:b2:db:69:11"}}"#;
        let l = Lease::parse("10.244.73.0-24", v.as_bytes()).unwrap();
        assert_eq!(l.attrs.vxlan_data().unwrap(), VxlanData { vni: 1, vtep_mac: [0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x11] });
        let ours = LeaseAttrs::vxlan("192.168.254.1".parse().unwrap(), 1, &[0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x11]);
        assert_eq!(serde_json::to_string(&ours).unwrap(), v);
        let hg = LeaseAttrs::host_gw("10.0.0.2".parse().unwrap());
        assert_eq!(serde_json::to_string(&hg).unwrap(), r#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#);
    }

    #[test]
    fn other_backends_and_junk() {
        let hostgw = Lease::parse("10.244.2.0-24", br#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#).unwrap();
        assert!(hostgw.attrs.vxlan_data().unwrap_err().to_string().contains("host-gw"));
        let udp = Lease::parse("10.244.3.0-24", br#"{"PublicIP":"10.0.0.3","PublicIPv6":null}"#).unwrap();
        assert!(udp.attrs.vxlan_data().is_err());
        assert!(udp.attrs.is_udp());
        assert_eq!(serde_json::to_string(&LeaseAttrs::udp("10.0.0.3".parse().unwrap())).unwrap(), r#"{"PublicIP":"10.0.0.3","PublicIPv6":null}"#);
        assert!(Lease::parse("10.244.3.0-24", b"garbage").is_err());
        let badmac = Lease::parse("10.244.4.0-24", br#"{"PublicIP":"10.0.0.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}"#).unwrap();
        assert!(format!("{:#}", badmac.attrs.vxlan_data().unwrap_err()).contains("VtepMAC"));
        let mcast =
            Lease::parse("10.244.4.0-24", br#"{"PublicIP":"10.0.0.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}}"#).unwrap();
        assert!(mcast.attrs.vxlan_data().is_err());
    }

    #[test]
    fn ipv6_only_lease_as_flanneld_writes_it() {
        let v = r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"56:b8:b2:db:69:12"}}"#;
        let l = Lease::parse("0.0.0.0-0&fd44:0:0:49::-64", v.as_bytes()).unwrap();
        assert_eq!((l.subnet, l.subnet6.unwrap().to_string()), (None, "fd44:0:0:49::/64".to_string()));
        assert!(format!("{:#}", l.attrs.vxlan_data().unwrap_err()).contains("BackendData is missing"));
        assert_eq!(l.attrs.vxlan_v6_data().unwrap().vtep_mac, [0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x12]);
        let ours = LeaseAttrs::ipv6_only("vxlan", "fd77::1".parse().unwrap(), Some((1, [0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x12])));
        assert_eq!(serde_json::to_string(&ours).unwrap(), v);
    }

    #[test]
    fn dual_stack_lease_as_flanneld_writes_it() {
        let v = r#"{"PublicIP":"192.168.77.1","PublicIPv6":"fd77::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"56:b8:b2:db:69:11"},"BackendV6Data":{"VNI":1,"VtepMAC":"56:b8:b2:db:69:12"}}"#;
        let l = Lease::parse("10.244.73.0-24&fd44:0:0:49::-64", v.as_bytes()).unwrap();
        assert_eq!(l.subnet6.unwrap().to_string(), "fd44:0:0:49::/64");
        assert_eq!(l.attrs.public_ipv6, Some("fd77::1".parse().unwrap()));
        assert_eq!(l.attrs.vxlan_v6_data().unwrap(), VxlanData { vni: 1, vtep_mac: [0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x12] });
        let ours = LeaseAttrs::vxlan("192.168.77.1".parse().unwrap(), 1, &[0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x11])
            .with_ipv6("fd77::1".parse().unwrap(), Some((1, [0x56, 0xb8, 0xb2, 0xdb, 0x69, 0x12])));
        assert_eq!(serde_json::to_string(&ours).unwrap(), v);
        let hg = LeaseAttrs::host_gw("10.0.0.2".parse().unwrap()).with_ipv6("fd77::2".parse().unwrap(), None);
        assert_eq!(serde_json::to_string(&hg).unwrap(), r#"{"PublicIP":"10.0.0.2","PublicIPv6":"fd77::2","BackendType":"host-gw"}"#);
        let v4only = Lease::parse(
            "10.244.2.0-24",
            br#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}"#,
        )
        .unwrap();
        assert!(format!("{:#}", v4only.attrs.vxlan_v6_data().unwrap_err()).contains("BackendV6Data is missing"));
        assert!(Lease::parse("10.244.2.0-24&fd44::-64", br#"{"PublicIP":"10.0.0.2","PublicIPv6":"nope"}"#).is_err());
    }
}
