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
//! neigh::add_fdb(&nl, dev.index, &peers.iter().map(|p| (p.v6_mac, IpAddr::V6(p.public_ipv6))).collect()).await?;
//! // then dp.add_vtep_ip6 / dp.set_vtep6 per peer, then the routes `<v6 subnet> dev weft-v6.<VNI>`.
//! ```
use std::net::Ipv6Addr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo},
        AddressFamily,
    },
    LinkUnspec, LinkVxlan,
};

use super::{
    flannel_device,
    netlink::{errno, Link, Netlink},
};

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

/// Creates `weft-v6.<VNI>` or adopts the existing one (on a node flanneld
/// left, its `flannel-v6.<VNI>`: [`flannel_device::take_over`]), and sets it
/// up (MTU, NOARP), answering to flannel's name too. A device of another kind under the name, or a vxlan
/// device with other settings (VNI, port, local address, underlay, an
/// external or learning one), is replaced, keeping its MAC.
pub async fn ensure_device6(nl: &Netlink, d: &Vxlan6Dev<'_>) -> Result<Link> {
    flannel_device::take_over(nl, &flannel_device::flannel_v6_name(d.vni), d.name).await?;
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
    // NOARP: no neighbour discovery on the overlay; weft_encap6 writes the
    // MACs. Turning ARP off flushes the device's neighbours, permanent ones
    // too: on a device taken over from flanneld its routes go via those, so
    // they are put back until weft's programs carry the traffic.
    let kept = super::neigh::permanent(nl, index, AddressFamily::Inet6).await?;
    let msg = LinkUnspec::new_with_index(index).mtu(d.mtu).arp(!d.noarp).up().build();
    nl.h.link().set(msg).execute().await.with_context(|| format!("setting {} up with MTU {}", d.name, d.mtu))?;
    super::neigh::add_neighbours(nl, index, AddressFamily::Inet6, &kept).await?;
    flannel_device::add_altname(nl, index, d.name, &flannel_device::flannel_v6_name(d.vni)).await;
    nl.link_by_index(index).await
}
