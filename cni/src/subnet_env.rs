//! flannel's subnet.env as weftd (or flanneld) writes it: the node's pod
//! subnet, the cluster network and the MTU pods get. The format lives in
//! `weft_common::subnet_env`; this is how weft-cni reports a file it cannot use.
//!
//! A missing file is error 11 ("try again later"): weftd writes it once it
//! holds a lease, so a node that has just booted gets there by itself, and
//! the runtime retries. A file that is there but unreadable is 5, one whose
//! contents are wrong is 7.
use std::path::Path;

pub use weft_common::subnet_env::SubnetEnv;

use crate::error::{code, CniError, Result};

pub fn read(path: &Path) -> Result<SubnetEnv> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::new(code::TRY_AGAIN_LATER, format!("{} does not exist yet: is weftd running on this node?", path.display()))
                .with_details("weftd writes it once it holds the node's subnet lease"))
        }
        Err(e) => return Err(CniError::io(format!("reading {}", path.display()), &e)),
    };
    SubnetEnv::parse(&text).map_err(|why| CniError::new(code::INVALID_CONFIG, format!("{}: {why}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let missing = read(Path::new("/nonexistent/weft/subnet.env")).unwrap_err();
        assert_eq!(missing.code, code::TRY_AGAIN_LATER);
        assert!(missing.msg.contains("/nonexistent/weft/subnet.env"), "{missing}");
        let dir = std::env::temp_dir().join(format!("weft-cni-subnet-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("subnet.env");
        std::fs::write(&p, "FLANNEL_SUBNET=10.0.0.1/24\n").unwrap();
        let bad = read(&p).unwrap_err();
        assert_eq!((bad.code, bad.msg), (code::INVALID_CONFIG, format!("{}: FLANNEL_MTU is missing", p.display())));
        std::fs::write(&p, "FLANNEL_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1450\n").unwrap();
        assert_eq!(read(&p).unwrap().gateway(), Some(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
