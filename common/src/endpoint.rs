//! Endpoint records: how weft-cni tells weftd about a pod interface without
//! touching BPF maps itself.
//!
//! On ADD weft-cni writes one record per pod interface into the network
//! config's `endpointsDir` (default `/run/weft/endpoints`) as
//! `<containerID>-<ifname>.json`, atomically ([`crate::fs::write_atomic`]);
//! DEL removes it (a missing record is fine). weftd reads every `*.json`
//! there (it programs its pod endpoint map from them and attaches its
//! programs to `hostVeth`); readers ignore everything else (the writer's
//! `*.tmp` files).
//!
//! ```json
//! {"containerID":"…","ifname":"eth0","netns":"/var/run/netns/…","ip":"10.244.1.5",
//!  "podMac":"0a:58:0a:f4:01:05","hostVeth":"veth1a2b3c4d","hostIfindex":17,
//!  "bridge":"cni0","bridgeMac":"…","mtu":1450,"ip6":"fc00:0:0:1::5"}
//! ```
//!
//! `ip6` is there only for a pod of a node with IPv6 (FLANNEL_IPV6_SUBNET:
//! dual stack or IPv6-only); `ip` only for a pod of a node with IPv4
//! (FLANNEL_SUBNET), so an IPv6-only pod's record has `ip6` and no `ip`.
//! A record has at least one of the two.
//!
//! The writer always writes every other field. Readers need only those
//! weftd needs (`ifname`, `ip` or `ip6`, `podMac`, `hostVeth`,
//! `hostIfindex`, `bridgeMac`) and take the others as empty (or 0) when a
//! record lacks them, so that a record written by any weft-cni, or by hand,
//! keeps working.
use std::{
    fmt,
    io::{self, ErrorKind},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// One pod interface as weft-cni wired it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `CNI_CONTAINERID` (empty if the record lacks it).
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    /// `CNI_IFNAME`: the interface's name inside the pod.
    pub ifname: String,
    /// `CNI_NETNS`: the pod's network namespace (empty if the record lacks it).
    #[serde(default)]
    pub netns: String,
    /// The pod's IPv4 address (no prefix length); None for a pod of an
    /// IPv6-only node (then the record has `ip6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// MAC of the pod's interface, "0a:58:..." ([`crate::mac::format_mac`]).
    #[serde(rename = "podMac")]
    pub pod_mac: String,
    /// The host end of the pod's veth pair, in the node's namespace.
    #[serde(rename = "hostVeth")]
    pub host_veth: String,
    /// Its ifindex in the node's namespace (never 0).
    #[serde(rename = "hostIfindex")]
    pub host_ifindex: u32,
    /// The bridge the host end is a port of (empty if the record lacks it).
    #[serde(default)]
    pub bridge: String,
    /// The bridge's MAC: the pod's gateway MAC.
    #[serde(rename = "bridgeMac")]
    pub bridge_mac: String,
    /// MTU of both ends, FLANNEL_MTU (0 if the record lacks it).
    #[serde(default)]
    pub mtu: u32,
    /// The pod's IPv6 address on a dual-stack or IPv6-only node (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

/// A record that cannot be read or is not one.
#[derive(Debug)]
pub enum RecordError {
    Io(io::Error),
    /// Says what is wrong with it.
    Invalid(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Io(e) => e.fmt(f),
            RecordError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RecordError {}

impl EndpointRecord {
    /// Parses a record file's contents.
    pub fn parse(bytes: &[u8]) -> Result<EndpointRecord, RecordError> {
        let r: EndpointRecord = serde_json::from_slice(bytes).map_err(|e| RecordError::Invalid(format!("not an endpoint record: {e}")))?;
        if r.host_ifindex == 0 {
            return Err(RecordError::Invalid("hostIfindex is 0".into()));
        }
        if r.ip.is_none() && r.ip6.is_none() {
            return Err(RecordError::Invalid("the record has neither ip nor ip6".into()));
        }
        Ok(r)
    }

    /// The record file's contents.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an endpoint record serializes")
    }
}

/// `<dir>/<containerID>-<ifname>.json`
pub fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}-{ifname}.json"))
}

/// Writes the record to [`path`] atomically, creating `dir`; returns the path.
/// The error says which step failed, on which file.
pub fn write(dir: &Path, rec: &EndpointRecord) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let dst = path(dir, &rec.container_id, &rec.ifname);
    crate::fs::write_atomic(&dst, &rec.to_json(), None)?;
    Ok(dst)
}

/// Removes the record; true if it existed (a path through a file, where no
/// record can be, is not there either).
pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> io::Result<bool> {
    match std::fs::remove_file(path(dir, container_id, ifname)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(e),
    }
}

/// The record at `path`; None if there is none.
pub fn read_file(path: &Path) -> Result<Option<EndpointRecord>, RecordError> {
    match std::fs::read(path) {
        Ok(b) => EndpointRecord::parse(&b).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecordError::Io(e)),
    }
}

/// The record of an attachment; None if there is none.
pub fn read(dir: &Path, container_id: &str, ifname: &str) -> Result<Option<EndpointRecord>, RecordError> {
    read_file(&path(dir, container_id, ifname))
}

/// Every `*.json` file in `dir`, sorted by path, with its record or why it
/// is none (a file removed since the listing is left out). A missing `dir`
/// holds no records.
pub fn list(dir: &Path) -> io::Result<Vec<(PathBuf, Result<EndpointRecord, RecordError>)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| match read_file(&p) {
            Ok(None) => None,
            Ok(Some(r)) => Some((p, Ok(r))),
            Err(e) => Some((p, Err(e))),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record exactly as weft-cni has written them since records exist.
    const TODAYS: &str = r#"{"containerID":"abc","ifname":"eth0","netns":"/var/run/netns/x","ip":"10.244.1.5","podMac":"0a:58:0a:f4:01:05","hostVeth":"veth1a2b3c4d","hostIfindex":17,"bridge":"cni0","bridgeMac":"0a:58:0a:f4:01:01","mtu":1450}"#;

    fn rec() -> EndpointRecord {
        EndpointRecord {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ip: Some(Ipv4Addr::new(10, 244, 1, 5)),
            pod_mac: "0a:58:0a:f4:01:05".into(),
            host_veth: "veth1a2b3c4d".into(),
            host_ifindex: 17,
            bridge: "cni0".into(),
            bridge_mac: "0a:58:0a:f4:01:01".into(),
            mtu: 1450,
            ip6: None,
        }
    }

    #[test]
    fn a_dual_stack_record_adds_ip6_last() {
        let r = EndpointRecord { ip6: Some("fd44:0:0:1::5".parse().unwrap()), ..rec() };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, TODAYS.replace(r#""mtu":1450}"#, r#""mtu":1450,"ip6":"fd44:0:0:1::5"}"#));
        assert_eq!(EndpointRecord::parse(text.as_bytes()).unwrap(), r);
    }

    /// A pod of an IPv6-only node: `ip6`, no `ip` (not even null); every
    /// other field where it always was.
    #[test]
    fn an_ipv6_only_record_has_no_ip() {
        let r = EndpointRecord { ip: None, ip6: Some("fd44:0:0:5::2".parse().unwrap()), ..rec() };
        let text = String::from_utf8(r.to_json()).unwrap();
        let want = TODAYS.replace(r#""ip":"10.244.1.5","#, "").replace(r#""mtu":1450}"#, r#""mtu":1450,"ip6":"fd44:0:0:5::2"}"#);
        assert_eq!(text, want);
        assert!(!text.contains(r#""ip":"#), "{text}");
        assert_eq!(EndpointRecord::parse(text.as_bytes()).unwrap(), r);
        // Neither address: not a record weftd can use.
        let neither = TODAYS.replace(r#""ip":"10.244.1.5","#, "");
        let e = EndpointRecord::parse(neither.as_bytes()).unwrap_err();
        assert!(matches!(&e, RecordError::Invalid(why) if why.contains("neither ip nor ip6")), "{e}");
        assert!(EndpointRecord::parse(neither.replace(r#""mtu":1450"#, r#""mtu":1450,"ip":null"#).as_bytes()).is_err());
    }

    #[test]
    fn the_format_is_todays() {
        assert_eq!(EndpointRecord::parse(TODAYS.as_bytes()).unwrap(), rec());
        // Byte for byte: field order and names are the contract's.
        assert_eq!(String::from_utf8(rec().to_json()).unwrap(), TODAYS);
    }

    #[test]
    fn reading_is_tolerant_of_what_weftd_does_not_need() {
        let minimal =
            br#"{"ifname":"eth0","ip":"10.244.1.5","podMac":"02:00:00:00:00:02","hostVeth":"v","hostIfindex":3,"bridgeMac":"02:00:00:00:00:01","future":1}"#;
        let r = EndpointRecord::parse(minimal).unwrap();
        assert_eq!((r.container_id.as_str(), r.netns.as_str(), r.bridge.as_str(), r.mtu, r.host_ifindex), ("", "", "", 0, 3));
        for bad in [
            &b"{"[..],
            br#"{"ip":"10.0.0.1"}"#,
            br#"{"ifname":"eth0","ip":"10.244.1.5","podMac":"02:00:00:00:00:02","hostVeth":"v","hostIfindex":0,"bridgeMac":"02:00:00:00:00:01"}"#,
        ] {
            assert!(matches!(EndpointRecord::parse(bad), Err(RecordError::Invalid(_))), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(EndpointRecord::parse(b"{").unwrap_err().to_string().split(':').next(), Some("not an endpoint record"));
    }

    #[test]
    fn write_read_list_remove() {
        let dir = std::env::temp_dir().join(format!("weft-common-ep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = write(&dir, &rec()).unwrap();
        assert_eq!(p, dir.join("abc-eth0.json"));
        assert_eq!(std::fs::read(&p).unwrap(), TODAYS.as_bytes());
        assert_eq!(read(&dir, "abc", "eth0").unwrap(), Some(rec()));
        std::fs::write(dir.join("bad.json"), "{").unwrap();
        std::fs::write(dir.join(".x.json.1.tmp"), "{").unwrap();
        let l = list(&dir).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((&l[0].0, l[0].1.as_ref().unwrap()), (&p, &rec()));
        assert!(l[1].1.is_err());
        std::fs::remove_file(dir.join("bad.json")).unwrap();
        std::fs::remove_file(dir.join(".x.json.1.tmp")).unwrap();
        assert!(remove(&dir, "abc", "eth0").unwrap());
        assert!(!remove(&dir, "abc", "eth0").unwrap());
        assert_eq!(read(&dir, "abc", "eth0").unwrap(), None);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no tmp file left");
        assert!(list(&dir.join("missing")).unwrap().is_empty());
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(!remove(&dir.join("f"), "abc", "eth0").unwrap(), "a path through a file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
