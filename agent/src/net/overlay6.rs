//! The IPv6 overlay device of a dual-stack vxlan node, `weft-v6.<VNI>`
//! (flannel's is `flannel-v6.<VNI>`): a kernel vxlan device over the IPv6
//! underlay (VNI, port 8472, our PublicIPv6 as local address, bound to the
//! underlay, `nolearning`, NOARP), and its forwarding table, one permanent
//! entry per peer (`<peer v6 VtepMAC> dst <peer PublicIPv6>`), exactly as
//! flanneld programs flannel-v6.<VNI>. weft's `weft_encap6` on its egress
//! picks the peer and writes the inner MACs; the device writes the outer
//! IPv6/UDP/VXLAN headers with a real UDP checksum and keeps tunnel GSO
//! (see `ebpf/src/v6.rs`).
//!
//! Not an external (collect_md) device: such a device also opens an IPv4
//! socket on its port, which `weft.<VNI>` already holds with other receive
//! flags, so it cannot come up on a dual-stack node (EADDRINUSE, measured).
//!
//! For the vxlan backend, in this order:
//! ```ignore
//! let dev = overlay6::ensure_device6(&nl, &overlay6::Vxlan6Dev { name: &overlay6::name(vni), vni, port, underlay, local: public_ipv6, mtu: underlay_mtu - 70, mac }).await?;
//! dp.set_config6(&Datapath6Config { local_ip: public_ipv6.octets(), overlay_ifindex: dev.index, vtep_mac: dev.mac.unwrap(), _pad: [0; 2] })?;
//! dp.attach_v6(&dev.name, dev.index)?;
//! // per reconcile, for the peers with an IPv6 lease:
//! overlay6::apply_fdb6(&nl, dev.index, &peers.iter().map(|p| (p.v6_mac, p.public_ipv6)).collect()).await?;
//! // then dp.add_vtep_ip6 / dp.set_vtep6 per peer, then the routes `<v6 subnet> dev weft-v6.<VNI>`.
//! ```
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        AddressFamily,
    },
    LinkUnspec, LinkVxlan,
};

use super::netlink::{errno, Link, Netlink};
use crate::backend::Changes;

/// Outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14): the IPv6
/// overlay's MTU is the underlay's minus this (flannel's v6 device too).
pub const VXLAN6_OVERHEAD: u32 = 70;

/// The IPv6 overlay device's name for `vni`: `weft-v6.<VNI>` (VNIs up to
/// 9,999,999 fit the kernel's 15 characters).
pub fn name(vni: u32) -> String {
    format!("weft-v6.{vni}")
}

/// What the device must be.
#[derive(Debug, Clone)]
pub struct Vxlan6Dev<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// UDP port, host order (8472, flannel's).
    pub port: u16,
    /// Underlay ifindex.
    pub underlay: u32,
    /// Our PublicIPv6: the outer source address.
    pub local: Ipv6Addr,
    pub mtu: u32,
    /// MAC for a new device (our v6 VtepMAC). An existing device keeps its
    /// own, also when it is replaced, so the lease's VtepMAC stays true.
    pub mac: [u8; 6],
    /// NOARP (weft's programs write the MACs); off for the kernel
    /// fallback, whose permanent neighbours do, as flanneld's.
    pub noarp: bool,
}

/// The vxlan settings of an existing device that matter here.
#[derive(Debug, Default, PartialEq)]
struct Have {
    id: Option<u32>,
    local6: Option<Ipv6Addr>,
    port: Option<u16>,
    underlay: Option<u32>,
    external: bool,
    learning: bool,
}

async fn existing(nl: &Netlink, name: &str) -> Result<Option<(Link, Have)>> {
    let Some(l) = nl.link_by_name(name).await? else { return Ok(None) };
    let mut s = nl.h.link().get().match_index(l.index).execute();
    let mut have = Have::default();
    if let Some(m) = s.try_next().await.with_context(|| format!("looking up link {name}"))? {
        for a in &m.attributes {
            let LinkAttribute::LinkInfo(infos) = a else { continue };
            for i in infos {
                let LinkInfo::Data(InfoData::Vxlan(v)) = i else { continue };
                for x in v {
                    match x {
                        InfoVxlan::Id(id) => have.id = Some(*id),
                        InfoVxlan::Local6(ip) => have.local6 = Some(*ip),
                        InfoVxlan::Port(p) => have.port = Some(*p),
                        InfoVxlan::Link(i) => have.underlay = Some(*i),
                        InfoVxlan::CollectMetadata(b) => have.external = *b,
                        InfoVxlan::Learning(b) => have.learning = *b,
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(Some((l, have)))
}

/// Creates `weft-v6.<VNI>` or adopts the existing one, and sets it up
/// (MTU, NOARP). A device of another kind under the name, or a vxlan
/// device with other settings (VNI, port, local address, underlay, an
/// external or learning one), is replaced, keeping its MAC.
pub async fn ensure_device6(nl: &Netlink, d: &Vxlan6Dev<'_>) -> Result<Link> {
    let mut mac = d.mac;
    let want = Have { id: Some(d.vni), local6: Some(d.local), port: Some(d.port), underlay: Some(d.underlay), external: false, learning: false };
    if let Some((l, have)) = existing(nl, d.name).await? {
        if l.kind == Some(InfoKind::Vxlan) && have == want {
            return up(nl, d, l.index).await;
        }
        log::info!("replacing {} ({:?}, {have:?}) with an IPv6 vxlan device ({want:?}), keeping its MAC", d.name, l.kind);
        mac = l.mac.unwrap_or(mac);
        nl.delete_link(l.index).await?;
    }
    let msg = LinkVxlan::new(d.name, d.vni).dev(d.underlay).local6(d.local).port(d.port).learning(false).mtu(d.mtu).address(mac.to_vec()).build();
    match nl.h.link().add(msg).execute().await {
        Ok(()) => log::info!("created IPv6 vxlan device {} (VNI {}, port {}, local {})", d.name, d.vni, d.port, d.local),
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating IPv6 vxlan device {}", d.name)),
    }
    let l = nl.link_by_name(d.name).await?.with_context(|| {
        format!(
            "cannot create IPv6 vxlan device {}: another IPv6 vxlan device already has VNI {} on port {} (flannel-v6.{} of a flanneld on this node?); remove it",
            d.name, d.vni, d.port, d.vni
        )
    })?;
    up(nl, d, l.index).await
}

async fn up(nl: &Netlink, d: &Vxlan6Dev<'_>, index: u32) -> Result<Link> {
    // NOARP: no neighbour discovery on the overlay; weft_encap6 writes the MACs.
    let msg = LinkUnspec::new_with_index(index).mtu(d.mtu).arp(!d.noarp).up().build();
    nl.h.link().set(msg).execute().await.with_context(|| format!("setting {} up with MTU {}", d.name, d.mtu))?;
    nl.link_by_index(index).await
}

fn attr_ip6(m: &NeighbourMessage) -> Option<Ipv6Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(*ip),
        // In an FDB (bridge family) message the library cannot know the
        // address family and may hand over raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => <[u8; 16]>::try_from(b.as_slice()).ok().map(Ipv6Addr::from),
        _ => None,
    })
}

fn attr_mac(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// The device's FDB entries: MAC -> (IPv6 remote, message).
pub async fn fdb6(nl: &Netlink, index: u32) -> Result<HashMap<[u8; 6], (Option<Ipv6Addr>, NeighbourMessage)>> {
    let mut s = nl.h.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    let mut out = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing FDB entries")? {
        if m.header.ifindex == index {
            if let Some(mac) = attr_mac(&m) {
                out.insert(mac, (attr_ip6(&m), m));
            }
        }
    }
    Ok(out)
}

/// Makes the device's forwarding table exactly `want` (a peer's IPv6
/// VtepMAC -> its PublicIPv6): missing or changed entries are written
/// (`self permanent`, as flannel's), others removed. Call it before the
/// peers' `weft_vteps6` entries go in, and after they went out.
pub async fn apply_fdb6(nl: &Netlink, index: u32, want: &BTreeMap<[u8; 6], Ipv6Addr>) -> Result<Changes> {
    let mut ch = Changes::default();
    let have = fdb6(nl, index).await?;
    for (mac, ip) in want {
        if have.get(mac).map(|(d, _)| *d) != Some(Some(*ip)) {
            let r =
                nl.h.neighbours()
                    .add_bridge(index, mac)
                    .destination(IpAddr::V6(*ip))
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .with_context(|| format!("fdb {} dst {ip}", crate::subnet::lease::format_mac(mac)));
            ch.tally(r, true);
        }
    }
    for (mac, (_, m)) in have {
        // The kernel's own entries (the all-zero default) have no lladdr we
        // track; only peers' MACs are ours to remove.
        if !want.contains_key(&mac) && mac != [0; 6] {
            let r = match nl.h.neighbours().del(m).execute().await {
                Err(e) if errno(&e) != Some(libc::ENOENT) => Err(e).context("deleting an FDB entry"),
                _ => Ok(()),
            };
            ch.tally(r, false);
        }
    }
    Ok(ch)
}

/// The kernel fallback's permanent IPv6 neighbours on the device (flanneld's
/// `<v6 subnet network address> lladdr <peer v6 VtepMAC>`): exactly `want`
/// (address -> MAC) afterwards. Call it before the routes go in, and after
/// they went out.
pub async fn apply_neighbours6(nl: &Netlink, index: u32, want: &BTreeMap<Ipv6Addr, [u8; 6]>) -> Result<Changes> {
    let mut ch = Changes::default();
    let mut s = nl.h.neighbours().get().set_address_family(AddressFamily::Inet6).execute();
    let mut have = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing IPv6 neighbours")? {
        if m.header.ifindex == index && m.header.state == NeighbourState::Permanent {
            if let (Some(ip), Some(mac)) = (attr_ip6(&m), attr_mac(&m)) {
                have.insert(ip, (mac, m));
            }
        }
    }
    for (ip, mac) in want {
        if have.get(ip).map(|(m, _)| m) != Some(mac) {
            let r =
                nl.h.neighbours()
                    .add(index, IpAddr::V6(*ip))
                    .link_layer_address(mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .with_context(|| format!("neighbour {ip} lladdr {}", crate::subnet::lease::format_mac(mac)));
            ch.tally(r, true);
        }
    }
    for (ip, (_, m)) in have {
        if !want.contains_key(&ip) {
            let r = match nl.h.neighbours().del(m).execute().await {
                Err(e) if errno(&e) != Some(libc::ENOENT) => Err(e).with_context(|| format!("deleting neighbour {ip}")),
                _ => Ok(()),
            };
            ch.tally(r, false);
        }
    }
    Ok(ch)
}
