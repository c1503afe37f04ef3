//! The network configuration weft-cni reads on stdin.
//!
//! Keys (all but the first three optional):
//! - `cniVersion`, `name`, `type`: as the spec defines them;
//! - `subnetFile`: weftd's subnet.env (default `/run/flannel/subnet.env`);
//! - `bridge`: the node bridge (default `cni0`);
//! - `endpointsDir`: where the endpoint records for weftd go (default `/run/weft/endpoints`);
//! - `dataDir`: the address store's parent, host-local's (default `/var/lib/cni/networks`);
//! - `isDefaultGateway`: default route via the bridge (default true);
//! - `hairpinMode`: hairpin on the pod's bridge port (default true, as flannel's conflist);
//! - `dns`: passed into the result unchanged;
//! - `prevResult`, `runtimeConfig`, `args`, `cni.dev/valid-attachments`: from the runtime.
//!
//! Malformed JSON is error 6; well-formed JSON with wrong values is 7; an
//! `ipam` section or `ipMasq: true` (which weft-cni does not do: it
//! allocates from subnet.env itself, and masquerading is weftd's) is 2.
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::{
    env::ifname_problem,
    error::{code, CniError, Result},
};

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_BRIDGE: &str = "cni0";
pub const DEFAULT_ENDPOINTS_DIR: &str = "/run/weft/endpoints";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The network name goes into the veth alias (at most 255 bytes with the rest).
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub subnet_file: PathBuf,
    pub bridge: String,
    pub endpoints_dir: PathBuf,
    pub data_dir: PathBuf,
    pub is_default_gateway: bool,
    pub hairpin_mode: bool,
    /// The `dns` object (`{}` when absent).
    pub dns: Value,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (None when absent).
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

fn bad(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("invalid network config: {key}: {why}"))
}

fn string(o: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(key, format!("expected a string, got {v}"))),
    }
}

fn boolean(o: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(key, format!("expected true or false, got {v}"))),
    }
}

fn path(o: &Map<String, Value>, key: &str, default: &str) -> Result<PathBuf> {
    let p = string(o, key)?.unwrap_or_else(|| default.to_string());
    if !p.starts_with('/') {
        return Err(bad(key, format!("{p:?} is not an absolute path")));
    }
    Ok(PathBuf::from(p))
}

/// The spec's rule for network names.
fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphanumeric()) && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// The `cniVersion` of stdin, if it is a JSON object that has one (for the
/// error result and VERSION, which must not fail on bad input).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

fn attachments(v: &Value, key: &str) -> Result<Vec<ValidAttachment>> {
    let arr = v.as_array().ok_or_else(|| bad(key, "expected a list of {containerID, ifname}"))?;
    arr.iter()
        .map(|a| {
            let id = a.get("containerID").and_then(Value::as_str);
            let ifname = a.get("ifname").and_then(Value::as_str);
            match (id, ifname) {
                (Some(id), Some(ifname)) => Ok(ValidAttachment { container_id: id.to_string(), ifname: ifname.to_string() }),
                _ => Err(bad(key, format!("entry {a} lacks containerID or ifname"))),
            }
        })
        .collect()
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            let what = if stdin.iter().all(u8::is_ascii_whitespace) { "stdin is empty".to_string() } else { e.to_string() };
            CniError::new(code::DECODE, "decoding failure: the network config on stdin is not JSON").with_details(what)
        })?;
        let o = v.as_object().ok_or_else(|| CniError::new(code::DECODE, "decoding failure: the network config on stdin is not a JSON object"))?;

        let cni_version = match o.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                return Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI version: the config has no cniVersion")
                    .with_details(format!("weft-cni supports {}", crate::version::SUPPORTED.join(", "))))
            }
            Some(other) => return Err(bad("cniVersion", format!("expected a string, got {other}"))),
        };
        crate::version::require_supported(&cni_version)?;

        let name = string(o, "name")?.ok_or_else(|| bad("name", "missing"))?;
        if !valid_name(&name) || name.len() > MAX_NAME_LEN {
            return Err(bad(
                "name",
                format!("{name:?} must start with an alphanumeric character followed by alphanumerics, '_', '.' or '-' (at most {MAX_NAME_LEN})"),
            ));
        }
        let plugin_type = string(o, "type")?.ok_or_else(|| bad("type", "missing"))?;

        if let Some(ipam) = o.get("ipam") {
            return Err(CniError::new(code::UNSUPPORTED_FIELD, format!("unsupported field ipam={ipam}"))
                .with_details("weft-cni allocates pod addresses from subnet.env itself and delegates to no IPAM plugin"));
        }
        if boolean(o, "ipMasq", false)? {
            return Err(CniError::new(code::UNSUPPORTED_FIELD, "unsupported field ipMasq=true")
                .with_details("weft-cni does not masquerade; weftd's node does (FLANNEL_IPMASQ)"));
        }

        let bridge = string(o, "bridge")?.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if let Some(why) = ifname_problem(&bridge) {
            return Err(bad("bridge", format!("{bridge:?} is not an interface name: {why}")));
        }
        let dns = match o.get("dns") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(d @ Value::Object(_)) => d.clone(),
            Some(other) => return Err(bad("dns", format!("expected an object, got {other}"))),
        };
        let prev_result = match o.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(other) => return Err(bad("prevResult", format!("expected an object, got {other}"))),
        };
        // libcni sends both names (containernetworking/cni#1101).
        let valid_attachments = match (o.get("cni.dev/valid-attachments"), o.get("cni.dev/attachments")) {
            (Some(v), _) => Some(attachments(v, "cni.dev/valid-attachments")?),
            (None, Some(v)) => Some(attachments(v, "cni.dev/attachments")?),
            (None, None) => None,
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            subnet_file: path(o, "subnetFile", DEFAULT_SUBNET_FILE)?,
            bridge,
            endpoints_dir: path(o, "endpointsDir", DEFAULT_ENDPOINTS_DIR)?,
            data_dir: path(o, "dataDir", DEFAULT_DATA_DIR)?,
            is_default_gateway: boolean(o, "isDefaultGateway", true)?,
            hairpin_mode: boolean(o, "hairpinMode", true)?,
            dns,
            prev_result,
            valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"weft-cni"}"#).unwrap();
        assert_eq!(c.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.endpoints_dir, PathBuf::from("/run/weft/endpoints"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/networks"));
        assert!(c.is_default_gateway && c.hairpin_mode);
        assert_eq!(c.dns, serde_json::json!({}));
        assert!(c.prev_result.is_none() && c.valid_attachments.is_none());
    }

    #[test]
    fn keys() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","subnetFile":"/tmp/s.env","bridge":"br9","endpointsDir":"/tmp/e",
                "dataDir":"/tmp/d","isDefaultGateway":false,"hairpinMode":false,"dns":{"nameservers":["10.96.0.10"]},
                "runtimeConfig":{},"args":{},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "prevResult":{"cniVersion":"1.1.0"}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_file, PathBuf::from("/tmp/s.env"));
        assert_eq!(c.bridge, "br9");
        assert!(!c.is_default_gateway && !c.hairpin_mode);
        assert_eq!(c.dns["nameservers"][0], "10.96.0.10");
        assert_eq!(c.valid_attachments.unwrap(), vec![ValidAttachment { container_id: "a".into(), ifname: "eth0".into() }]);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        assert_eq!(parse("{not json").unwrap_err().code, code::DECODE);
        assert_eq!(parse("").unwrap_err().code, code::DECODE);
        assert_eq!(parse("[1]").unwrap_err().code, code::DECODE);
        assert_eq!(parse(r#"{"name":"n","type":"t"}"#).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(parse(r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(parse(r#"{"cniVersion":"1.0.0","type":"t"}"#).unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(parse(r#"{"cniVersion":"1.0.0","name":"-x","type":"t"}"#).unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(parse(r#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap_err().code, code::INVALID_CONFIG);
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"t","bridge":5}"#).unwrap_err();
        assert!(e.code == code::INVALID_CONFIG && e.msg.contains("bridge"), "{e}");
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"t","subnetFile":"rel/path"}"#).unwrap_err();
        assert!(e.msg.contains("subnetFile"), "{e}");
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"host-local"}}"#).unwrap_err();
        assert!(e.code == code::UNSUPPORTED_FIELD && e.msg.contains("ipam") && e.msg.contains("host-local"), "{e}");
        assert_eq!(parse(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipMasq":true}"#).unwrap_err().code, code::UNSUPPORTED_FIELD);
        let e = parse(r#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a"}]}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(peek_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(peek_version(b"junk"), None);
    }
}
