//! Names weft-cni derives from an attachment, so that DEL, CHECK and GC find
//! what ADD made without any state but the kernel's: the host veth's name
//! and its alias (`ip link` shows it), which says whose it is.
/// FNV-1a 64.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `veth` + 8 hex digits of a hash of containerID and ifname: stable for
/// the attachment, 12 characters (Linux allows 15). A clash between two
/// attachments is told apart by [`alias`] and refused.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let h = fnv1a(format!("{container_id}/{ifname}").as_bytes());
    format!("veth{:08x}", (h ^ (h >> 32)) as u32)
}

const ALIAS_PREFIX: &str = "weft-cni/";

/// The host veth's alias: `weft-cni/<network>/<containerID>/<ifname>` (none
/// of the three may contain '/').
pub fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{container_id}/{ifname}")
}

/// (network, containerID, ifname) of an alias [`alias`] made.
pub fn parse_alias(a: &str) -> Option<(&str, &str, &str)> {
    let mut it = a.strip_prefix(ALIAS_PREFIX)?.split('/');
    let t = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || t.0.is_empty() || t.1.is_empty() || t.2.is_empty() {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let a = host_veth("abc", "eth0");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth("abc", "eth0"));
        assert_ne!(a, host_veth("abc", "eth1"));
        assert_ne!(a, host_veth("abd", "eth0"));
        let al = alias("cbr0", "abc", "eth0");
        assert_eq!(parse_alias(&al), Some(("cbr0", "abc", "eth0")));
        assert_eq!(parse_alias("something else"), None);
        assert_eq!(parse_alias("weft-cni/a/b"), None);
    }
}
