//! The ADD result (spec 1.0.0 section 5 "Success"), written in the
//! configuration's version, and prevResult read back from any of them.
//!
//! weft-cni's result lists, like the `bridge` plugin's: the bridge, the host
//! veth, the pod interface (with `sandbox`); one IP per family on the pod
//! interface (IPv4; on a dual-stack node also IPv6, after it) with the
//! bridge as gateway; the routes it installed in the pod; `dns` from the
//! config. 0.3.x/0.4.0 add `"version": "4"` (or `"6"`) to each IP; 1.1.0
//! adds each interface's `mtu`.
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::{
    error::{code, CniError, Result},
    version,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The pod's namespace path; None for host interfaces.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Value,
}

fn iface_json(i: &Interface, ver: &str) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(i.name));
    if let Some(m) = &i.mac {
        o.insert("mac".into(), json!(m));
    }
    if let (Some(mtu), true) = (i.mtu, version::interfaces_have_mtu(ver)) {
        o.insert("mtu".into(), json!(mtu));
    }
    if let Some(s) = &i.sandbox {
        o.insert("sandbox".into(), json!(s));
    }
    Value::Object(o)
}

fn ip_json(ip: &IpConfig, offset: usize) -> Value {
    let mut o = Map::new();
    o.insert("address".into(), json!(format!("{}/{}", ip.address, ip.prefix_len)));
    if let Some(g) = ip.gateway {
        o.insert("gateway".into(), json!(g.to_string()));
    }
    if let Some(i) = ip.interface {
        o.insert("interface".into(), json!(i + offset));
    }
    Value::Object(o)
}

fn route_json(r: &Route) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), json!(format!("{}/{}", r.dst, r.prefix_len)));
    if let Some(g) = r.gw {
        o.insert("gw".into(), json!(g.to_string()));
    }
    Value::Object(o)
}

/// Adds (0.3.x, 0.4.0) or removes (1.x) the per-IP `version` field.
fn fix_ip_versions(out: &mut Value, ver: &str) {
    let with = version::ips_have_version(ver);
    if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            if with {
                let v6 = ip.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
                ip.insert("version".into(), json!(if v6 { "6" } else { "4" }));
            } else {
                ip.remove("version");
            }
        }
    }
}

fn cidr(s: &str, what: &str) -> Result<(IpAddr, u8)> {
    let bad = || CniError::new(code::INVALID_CONFIG, format!("invalid prevResult: {what} {s:?} is not a CIDR"));
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if len > if ip.is_ipv6() { 128 } else { 32 } {
        return Err(bad());
    }
    Ok((ip, len))
}

fn opt_ip(v: Option<&Value>, what: &str) -> Result<Option<IpAddr>> {
    match v.and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| CniError::new(code::INVALID_CONFIG, format!("invalid prevResult: {what} {s:?} is not an IP address"))),
    }
}

impl CniResult {
    /// The result as version `ver` writes it.
    pub fn to_json(&self, ver: &str) -> Value {
        let mut out = json!({
            "cniVersion": ver,
            "interfaces": self.interfaces.iter().map(|i| iface_json(i, ver)).collect::<Vec<_>>(),
            "ips": self.ips.iter().map(|i| ip_json(i, 0)).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(route_json).collect::<Vec<_>>(),
            "dns": self.dns,
        });
        fix_ip_versions(&mut out, ver);
        out
    }

    /// ADD with a prevResult (weft-cni after another interface plugin): the
    /// previous result with ours appended, in version `ver`.
    pub fn appended_to(&self, prev: &Value, ver: &str) -> Value {
        let mut out = prev.clone();
        out["cniVersion"] = json!(ver);
        let offset = {
            let ifs = out.get_mut("interfaces").and_then(Value::as_array_mut);
            match ifs {
                Some(a) => {
                    let n = a.len();
                    a.extend(self.interfaces.iter().map(|i| iface_json(i, ver)));
                    n
                }
                None => {
                    out["interfaces"] = Value::Array(self.interfaces.iter().map(|i| iface_json(i, ver)).collect());
                    0
                }
            }
        };
        for (key, items) in [("ips", self.ips.iter().map(|i| ip_json(i, offset)).collect::<Vec<_>>()), ("routes", self.routes.iter().map(route_json).collect())]
        {
            match out.get_mut(key).and_then(Value::as_array_mut) {
                Some(a) => a.extend(items),
                None => out[key] = Value::Array(items),
            }
        }
        if out.get("dns").and_then(Value::as_object).is_none_or(|d| d.is_empty()) {
            out["dns"] = self.dns.clone();
        }
        fix_ip_versions(&mut out, ver);
        out
    }

    /// Reads a result of any supported version (IPv4 and IPv6 entries);
    /// malformed ones are error 7.
    pub fn parse(v: &Value) -> Result<CniResult> {
        let list = |k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut interfaces = Vec::new();
        for i in list("interfaces") {
            let name = i
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| CniError::new(code::INVALID_CONFIG, format!("invalid prevResult: interface {i} has no name")))?;
            interfaces.push(Interface {
                name: name.to_string(),
                mac: i.get("mac").and_then(Value::as_str).map(str::to_string),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: i.get("sandbox").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string),
            });
        }
        let mut ips = Vec::new();
        for i in list("ips") {
            let addr = i.get("address").and_then(Value::as_str).unwrap_or_default();
            let (address, prefix_len) = cidr(addr, "address")?;
            ips.push(IpConfig {
                address,
                prefix_len,
                gateway: opt_ip(i.get("gateway"), "gateway")?,
                interface: i.get("interface").and_then(Value::as_u64).map(|x| x as usize),
            });
        }
        let mut routes = Vec::new();
        for r in list("routes") {
            let dst = r.get("dst").and_then(Value::as_str).unwrap_or_default();
            let (dst, prefix_len) = cidr(dst, "route dst")?;
            routes.push(Route { dst, prefix_len, gw: opt_ip(r.get("gw"), "route gw")? });
        }
        Ok(CniResult { interfaces, ips, routes, dns: v.get("dns").cloned().unwrap_or_else(|| json!({})) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn sample() -> CniResult {
        let gw = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 1));
        CniResult {
            interfaces: vec![
                Interface { name: "cni0".into(), mac: Some("0a:58:0a:f4:01:01".into()), mtu: Some(1450), sandbox: None },
                Interface { name: "veth01234567".into(), mac: Some("aa:bb:cc:dd:ee:ff".into()), mtu: Some(1450), sandbox: None },
                Interface { name: "eth0".into(), mac: Some("0a:58:0a:f4:01:05".into()), mtu: Some(1450), sandbox: Some("/var/run/netns/p".into()) },
            ],
            ips: vec![IpConfig { address: Ipv4Addr::new(10, 244, 1, 5).into(), prefix_len: 24, gateway: Some(gw), interface: Some(2) }],
            routes: vec![
                Route { dst: Ipv4Addr::new(10, 244, 0, 0).into(), prefix_len: 16, gw: Some(gw) },
                Route { dst: Ipv4Addr::UNSPECIFIED.into(), prefix_len: 0, gw: Some(gw) },
            ],
            dns: json!({}),
        }
    }

    #[test]
    fn per_version_output_and_round_trip() {
        let r = sample();
        let v1 = r.to_json("1.0.0");
        assert_eq!(v1["ips"][0], json!({"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}));
        assert!(v1["interfaces"][2].get("mtu").is_none());
        assert_eq!(v1["interfaces"][2]["sandbox"], "/var/run/netns/p");
        assert!(v1["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v1["routes"][1], json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"}));
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][2]["mtu"], 1450);
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["cniVersion"], "0.4.0");
        for v in [v1, v11, v04] {
            let back = CniResult::parse(&v).unwrap();
            assert_eq!((back.ips.clone(), back.routes.clone()), (r.ips.clone(), r.routes.clone()));
            assert_eq!(back.interfaces.iter().map(|i| &i.name).collect::<Vec<_>>(), vec!["cni0", "veth01234567", "eth0"]);
        }
    }

    #[test]
    fn appends_to_a_previous_result() {
        let prev = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "x"}], "ips": [{"version": "6", "address": "fd00::2/64", "interface": 0}], "dns": {"nameservers": ["1.1.1.1"]}});
        let out = sample().appended_to(&prev, "1.0.0");
        assert_eq!(out["interfaces"].as_array().unwrap().len(), 4);
        assert_eq!(out["ips"][1]["interface"], 3);
        assert!(out["ips"][0].get("version").is_none());
        assert_eq!(out["dns"]["nameservers"][0], "1.1.1.1");
        let back = CniResult::parse(&out).unwrap();
        assert_eq!(back.ips.len(), 2, "the other plugin's IPv6 entry is read too");
        assert_eq!((back.ips[0].address, back.ips[0].interface), ("fd00::2".parse().unwrap(), Some(0)));
    }

    #[test]
    fn malformed_prev_result() {
        assert_eq!(CniResult::parse(&json!({"ips": [{"address": "10.0.0.1"}]})).unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(CniResult::parse(&json!({"interfaces": [{"mac": "x"}]})).unwrap_err().code, code::INVALID_CONFIG);
        assert!(CniResult::parse(&json!({})).unwrap().ips.is_empty());
    }

    /// A dual-stack pod: both addresses on eth0 (interface 2) with their
    /// gateways, the routes of both families; 0.4.0 marks each IP's version.
    #[test]
    fn dual_stack_result() {
        let mut r = sample();
        let gw6: IpAddr = "fd00:0:0:1::1".parse().unwrap();
        r.ips.push(IpConfig { address: "fd00:0:0:1::5".parse().unwrap(), prefix_len: 64, gateway: Some(gw6), interface: Some(2) });
        r.routes.push(Route { dst: "fd00::".parse().unwrap(), prefix_len: 48, gw: Some(gw6) });
        r.routes.push(Route { dst: Ipv6Addr::UNSPECIFIED.into(), prefix_len: 0, gw: Some(gw6) });
        let v1 = r.to_json("1.0.0");
        assert_eq!(
            v1["ips"],
            json!([{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}, {"address": "fd00:0:0:1::5/64", "gateway": "fd00:0:0:1::1", "interface": 2}])
        );
        assert_eq!(
            v1["routes"],
            json!([{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "fd00::/48", "gw": "fd00:0:0:1::1"}, {"dst": "::/0", "gw": "fd00:0:0:1::1"}])
        );
        let v04 = r.to_json("0.4.0");
        assert_eq!((v04["ips"][0]["version"].as_str(), v04["ips"][1]["version"].as_str()), (Some("4"), Some("6")));
        for v in [v1, v04] {
            let back = CniResult::parse(&v).unwrap();
            assert_eq!((back.ips, back.routes), (r.ips.clone(), r.routes.clone()));
        }
        assert_eq!(CniResult::parse(&json!({"ips": [{"address": "fd00::1/129"}]})).unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(CniResult::parse(&json!({"routes": [{"dst": "fd00::/48", "gw": "fd00::zz"}]})).unwrap_err().code, code::INVALID_CONFIG);
    }

    /// An IPv6-only pod: one IPv6 entry on eth0, only IPv6 routes; 0.4.0 marks it "6".
    #[test]
    fn ipv6_only_result() {
        let mut r = sample();
        let gw6: IpAddr = "fd44:0:0:5::1".parse().unwrap();
        r.ips = vec![IpConfig { address: "fd44:0:0:5::2".parse().unwrap(), prefix_len: 64, gateway: Some(gw6), interface: Some(2) }];
        r.routes = vec![
            Route { dst: "fd44::".parse().unwrap(), prefix_len: 48, gw: Some(gw6) },
            Route { dst: Ipv6Addr::UNSPECIFIED.into(), prefix_len: 0, gw: Some(gw6) },
        ];
        let v1 = r.to_json("1.0.0");
        assert_eq!(v1["ips"], json!([{"address": "fd44:0:0:5::2/64", "gateway": "fd44:0:0:5::1", "interface": 2}]));
        assert_eq!(v1["routes"], json!([{"dst": "fd44::/48", "gw": "fd44:0:0:5::1"}, {"dst": "::/0", "gw": "fd44:0:0:5::1"}]));
        assert_eq!(r.to_json("0.4.0")["ips"][0]["version"], "6");
        let back = CniResult::parse(&v1).unwrap();
        assert_eq!((back.ips, back.routes), (r.ips.clone(), r.routes.clone()));
    }
}
