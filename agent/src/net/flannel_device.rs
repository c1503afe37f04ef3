//! flannel's vxlan devices and weft's: `flannel.<VNI>` becomes
//! `weft.<VNI>` (and `flannel-v6.<VNI>` `weft-v6.<VNI>`) when weftd
//! takes a node over, and weft's device answers to flannel's name as an
//! altname, so a flanneld started again (a rollback) finds its device
//! without a manual step.
//!
//! Why an altname does it: altnames are in the kernel's name hash, so an
//! `RTM_GETLINK` by IFLA_IFNAME `flannel.1` (vishvananda/netlink's
//! LinkByName, flanneld's) returns `weft.1`, and a new device named
//! `flannel.1` is refused with EEXIST. flanneld's ensureLink does exactly
//! LinkAdd -> EEXIST -> LinkByName -> a compatibility check (VNI, underlay,
//! local address, port, nolearning, GBP) -> reuses the device, with its
//! MAC (the VtepMAC weft's lease announced), FDB, neighbours and routes.
use anyhow::Result;
use rtnetlink::packet_route::link::InfoKind;

use super::netlink::{errno, Netlink};
use crate::subnet::lease::format_mac;

/// flannel's IPv4 vxlan device for `vni`.
pub fn flannel_name(vni: u32) -> String {
    format!("flannel.{vni}")
}

/// flannel's IPv6 vxlan device for `vni`.
pub fn flannel_v6_name(vni: u32) -> String {
    format!("flannel-v6.{vni}")
}

/// On a node flanneld ran on: its vxlan device `flannel` becomes ours,
/// renamed to `ours` while up (Linux lets a vxlan device be renamed while
/// up): the same device, so its ifindex, VtepMAC, socket, FDB, neighbours
/// and the routes through it stay, and so do the peers' entries for its
/// VtepMAC: no moment without a device for our VNI. Nothing happens when
/// `ours` exists (also when it answers to `flannel` as an altname) or there
/// is no vxlan device `flannel`; a kernel that refuses the rename leaves
/// flannel's device as it is (the caller's creation then names it).
pub async fn take_over(nl: &Netlink, flannel: &str, ours: &str) -> Result<()> {
    if nl.link_by_name(ours).await?.is_some() {
        return Ok(());
    }
    let Some(f) = nl.link_by_name(flannel).await?.filter(|l| l.kind == Some(InfoKind::Vxlan)) else { return Ok(()) };
    let msg = rtnetlink::LinkUnspec::new_with_index(f.index).name(ours.to_string()).build();
    match nl.h.link().set(msg).execute().await {
        Ok(()) => log::info!(
            "took over {flannel} (VtepMAC {}), which flanneld left: renamed to {ours} while up, so the device, its routes, neighbours and FDB entries and the peers' entries for its VtepMAC stay",
            f.mac.map(|m| format_mac(&m)).unwrap_or_default(),
        ),
        Err(e) => log::warn!("could not rename {flannel}, which flanneld left, to {ours} while up: {e}"),
    }
    Ok(())
}

/// What became of an altname request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Altname {
    Added,
    /// The device had it already (weft's device of an earlier run).
    AlreadyOurs,
    /// Another device has that name (a flannel device weft could not take
    /// over): flanneld would find that one.
    HeldBy(u32),
    /// The kernel has no altnames (before Linux 5.5): flanneld started
    /// again would not find its device.
    Unsupported,
    /// Any other refusal, by errno.
    Refused(i32),
}

impl Altname {
    /// The outcome of `RTM_NEWLINKPROP` for device `ours`: `err` its errno
    /// (None: done), `holder` the device the name resolves to now.
    pub fn of(err: Option<i32>, holder: Option<u32>, ours: u32) -> Altname {
        match err {
            None => Altname::Added,
            Some(libc::EEXIST) => match holder {
                Some(h) if h != ours => Altname::HeldBy(h),
                _ => Altname::AlreadyOurs,
            },
            Some(libc::EOPNOTSUPP | libc::EINVAL) => Altname::Unsupported,
            Some(e) => Altname::Refused(e),
        }
    }
}

/// Gives device `index` (named `name`) the altname `alt` (flannel's name
/// for it). Never an error: without it weft runs as well, only a flanneld
/// started after weftd would not find its device; that is warned about.
pub async fn add_altname(nl: &Netlink, index: u32, name: &str, alt: &str) -> Altname {
    let r = nl.h.link().property_add(index).alt_ifname(&[alt]).execute().await;
    let err = r.as_ref().err().map(|e| errno(e).unwrap_or(libc::EIO));
    let holder = match err {
        Some(libc::EEXIST) => nl.link_by_name(alt).await.ok().flatten().map(|l| l.index),
        _ => None,
    };
    let outcome = Altname::of(err, holder, index);
    match outcome {
        Altname::Added => log::info!("{name} answers to {alt} too (an altname): a flanneld started after weftd finds and reuses it"),
        Altname::AlreadyOurs => {}
        Altname::HeldBy(h) => {
            log::warn!("{name} cannot have the altname {alt}: device #{h} has that name, and a flanneld started after weftd would use that one")
        }
        Altname::Unsupported => {
            log::warn!(
                "{name} cannot have the altname {alt} (the kernel has no altnames, Linux < 5.5): rename it to {alt} by hand before starting flanneld again"
            )
        }
        Altname::Refused(e) => log::warn!(
            "giving {name} the altname {alt} failed ({}): rename it to {alt} by hand before starting flanneld again",
            r.err().map(|e| e.to_string()).unwrap_or_else(|| format!("errno {e}"))
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_names() {
        assert_eq!(flannel_name(1), "flannel.1");
        assert_eq!(flannel_v6_name(4096), "flannel-v6.4096");
    }

    #[test]
    fn altname_outcomes() {
        assert_eq!(Altname::of(None, None, 7), Altname::Added);
        // EEXIST: ours already, or the name resolves to another device.
        assert_eq!(Altname::of(Some(libc::EEXIST), Some(7), 7), Altname::AlreadyOurs);
        assert_eq!(Altname::of(Some(libc::EEXIST), None, 7), Altname::AlreadyOurs);
        assert_eq!(Altname::of(Some(libc::EEXIST), Some(3), 7), Altname::HeldBy(3));
        assert_eq!(Altname::of(Some(libc::EOPNOTSUPP), None, 7), Altname::Unsupported);
        assert_eq!(Altname::of(Some(libc::EPERM), None, 7), Altname::Refused(libc::EPERM));
    }
}
