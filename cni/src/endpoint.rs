//! Endpoint records: how weft-cni tells weftd about a pod interface without
//! touching BPF maps itself.
//!
//! On ADD weft-cni writes one record per pod interface into the network
//! config's `endpointsDir` (default `/run/weft/endpoints`) as
//! `<containerID>-<ifname>.json`, atomically (`<name>.tmp` in the same
//! directory, fsync, rename); DEL removes it (a missing record is fine).
//! **weftd reads these records** (it watches the directory, programs its
//! pod endpoint map from them and attaches its programs to `hostVeth`), so
//! the format is a contract: every field below is always present, with
//! these JSON names, and readers must ignore `*.tmp` files.
//!
//! ```json
//! {"containerID":"…","ifname":"eth0","netns":"/var/run/netns/…","ip":"10.244.1.5",
//!  "podMac":"0a:58:0a:f4:01:05","hostVeth":"veth1a2b3c4d","hostIfindex":17,
//!  "bridge":"cni0","bridgeMac":"…","mtu":1450}
//! ```
use std::{
    io::{ErrorKind, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, Result};

/// One pod interface as weft-cni wired it. weftd reads it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`: the interface's name inside the pod.
    pub ifname: String,
    /// `CNI_NETNS`: the pod's network namespace.
    pub netns: String,
    /// The pod's IPv4 address (no prefix length).
    pub ip: Ipv4Addr,
    /// MAC of the pod's interface, "0a:58:..." (derived from `ip`).
    #[serde(rename = "podMac")]
    pub pod_mac: String,
    /// The host end of the pod's veth pair, in the node's namespace.
    #[serde(rename = "hostVeth")]
    pub host_veth: String,
    /// Its ifindex in the node's namespace.
    #[serde(rename = "hostIfindex")]
    pub host_ifindex: u32,
    /// The bridge the host end is a port of.
    pub bridge: String,
    /// The bridge's MAC: the pod's gateway MAC.
    #[serde(rename = "bridgeMac")]
    pub bridge_mac: String,
    /// MTU of both ends (FLANNEL_MTU).
    pub mtu: u32,
}

/// `<dir>/<containerID>-<ifname>.json`
pub fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}-{ifname}.json"))
}

/// Writes the record atomically (tmp in the same directory, fsync, rename).
pub fn write(dir: &Path, rec: &EndpointRecord) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| CniError::io(format!("creating the endpoint record directory {}", dir.display()), &e))?;
    let dst = path(dir, &rec.container_id, &rec.ifname);
    let tmp = dst.with_extension("json.tmp");
    let body = serde_json::to_vec(rec).map_err(|e| CniError::internal(format!("encoding the endpoint record: {e}")))?;
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(CniError::io(format!("writing endpoint record {}", dst.display()), &e));
    }
    Ok(dst)
}

/// Removes the record; true if it existed.
pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> Result<bool> {
    let p = path(dir, container_id, ifname);
    let _ = std::fs::remove_file(p.with_extension("json.tmp"));
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        // ENOTDIR: a path through a file, where no record can be.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
        Err(e) => Err(CniError::io(format!("removing endpoint record {}", p.display()), &e)),
    }
}

pub fn read(dir: &Path, container_id: &str, ifname: &str) -> Result<Option<EndpointRecord>> {
    let p = path(dir, container_id, ifname);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| CniError::internal(format!("endpoint record {} is not valid: {e}", p.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("reading endpoint record {}", p.display()), &e)),
    }
}

/// Every readable record in `dir` (none if it does not exist), with its path.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, EndpointRecord)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::io(format!("listing {}", dir.display()), &e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if let Ok(rec) = std::fs::read(&p).map_err(|_| ()).and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).map_err(|_| ())) {
            out.push((p, rec));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_format() {
        let rec = EndpointRecord {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ip: Ipv4Addr::new(10, 244, 1, 5),
            pod_mac: "0a:58:0a:f4:01:05".into(),
            host_veth: "veth1a2b3c4d".into(),
            host_ifindex: 17,
            bridge: "cni0".into(),
            bridge_mac: "0a:58:0a:f4:01:01".into(),
            mtu: 1450,
        };
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"containerID":"abc","ifname":"eth0","netns":"/var/run/netns/x","ip":"10.244.1.5",
                "podMac":"0a:58:0a:f4:01:05","hostVeth":"veth1a2b3c4d","hostIfindex":17,"bridge":"cni0",
                "bridgeMac":"0a:58:0a:f4:01:01","mtu":1450})
        );
        let dir = std::env::temp_dir().join(format!("weft-cni-ep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = write(&dir, &rec).unwrap();
        assert_eq!(p, dir.join("abc-eth0.json"));
        assert_eq!(read(&dir, "abc", "eth0").unwrap(), Some(rec.clone()));
        assert_eq!(list(&dir).unwrap(), vec![(p, rec)]);
        assert!(remove(&dir, "abc", "eth0").unwrap());
        assert!(!remove(&dir, "abc", "eth0").unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no tmp file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
