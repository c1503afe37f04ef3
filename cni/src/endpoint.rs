//! Endpoint records: how weft-cni tells weftd about a pod interface without
//! touching BPF maps itself. The record, its file name and how it is written
//! and read live in `weft_common::endpoint` (weftd reads them with the same
//! code); this is how weft-cni reports what goes wrong.
use std::path::{Path, PathBuf};

use weft_common::endpoint::{self as common, RecordError};
pub use weft_common::endpoint::{path, EndpointRecord};

use crate::error::{CniError, Result};

/// Writes the record atomically (tmp in the same directory, fsync, rename).
pub fn write(dir: &Path, rec: &EndpointRecord) -> Result<PathBuf> {
    common::write(dir, rec).map_err(|e| CniError::io(format!("writing endpoint record {}", path(dir, &rec.container_id, &rec.ifname).display()), &e))
}

/// Removes the record; true if it existed.
pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> Result<bool> {
    common::remove(dir, container_id, ifname).map_err(|e| CniError::io(format!("removing endpoint record {}", path(dir, container_id, ifname).display()), &e))
}

pub fn read(dir: &Path, container_id: &str, ifname: &str) -> Result<Option<EndpointRecord>> {
    let p = path(dir, container_id, ifname);
    common::read_file(&p).map_err(|e| match e {
        RecordError::Io(e) => CniError::io(format!("reading endpoint record {}", p.display()), &e),
        RecordError::Invalid(why) => CniError::internal(format!("endpoint record {} is not valid: {why}", p.display())),
    })
}

/// Every readable record in `dir` (none if it does not exist), with its path.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, EndpointRecord)>> {
    let all = common::list(dir).map_err(|e| CniError::io(format!("listing {}", dir.display()), &e))?;
    Ok(all.into_iter().filter_map(|(p, r)| Some((p, r.ok()?))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_record() {
        let dir = std::env::temp_dir().join(format!("weft-cni-ep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("abc-eth0.json"), "{").unwrap();
        let e = read(&dir, "abc", "eth0").unwrap_err();
        assert!(e.msg.contains("abc-eth0.json is not valid"), "{e}");
        assert!(list(&dir).unwrap().is_empty());
        // A file where the directory should be: I/O error 5, naming the record.
        let rec = EndpointRecord {
            container_id: "x".into(),
            ifname: "eth0".into(),
            netns: String::new(),
            ip: Some("10.0.0.2".parse().unwrap()),
            pod_mac: String::new(),
            host_veth: "v".into(),
            host_ifindex: 1,
            bridge: String::new(),
            bridge_mac: String::new(),
            mtu: 0,
            ip6: None,
        };
        let e = write(&dir.join("abc-eth0.json/sub"), &rec).unwrap_err();
        assert_eq!(e.code, crate::error::code::IO);
        assert!(e.msg.contains("writing endpoint record"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
