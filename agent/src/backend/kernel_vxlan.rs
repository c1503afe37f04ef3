//! The kernel's own vxlan device, programmed exactly as flanneld programs
//! flannel.<VNI>: weft's fallback where the BPF datapath cannot run (and
//! `--datapath kernel`). Per peer: a permanent neighbour `<subnet>.0 lladdr
//! <VtepMAC>`, an FDB entry `<VtepMAC> dst <PublicIP> self permanent`, and
//! the route `<subnet> via <subnet>.0 dev weft.<VNI> onlink`. Reconciled
//! like the BPF map: read what exists, add what is missing, remove what is
//! stale; only entries on weft's own device are touched.
use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context, Result};
use rtnetlink::{
    packet_route::{link::InfoKind, AddressFamily},
    LinkVxlan,
};
use weft_common::VtepEntry;

use super::peers::Changes;
use crate::{
    net::{
        flannel_device, neigh,
        netlink::{self, errno, Link, Netlink},
    },
    subnet::{lease::format_mac, Ipv4Net},
};

/// What the device must be.
pub struct VxlanDev<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    pub underlay: u32,
    pub local: Ipv4Addr,
    pub mtu: u32,
    /// MAC for a new device; an existing device keeps its own (the VtepMAC
    /// in our lease), also when it replaces weft's BPF overlay device.
    pub mac: [u8; 6],
}

/// Creates the vxlan device (nolearning, bound to the underlay and our
/// address, as flanneld's) or adopts an existing one, on a node flanneld
/// left its own ([`flannel_device::take_over`]). A device of another
/// kind under the name (an ifb or veth overlay of an earlier run) is replaced, keeping
/// its MAC so the VtepMAC our lease announces stays true.
pub async fn ensure_device(nl: &Netlink, d: &VxlanDev<'_>) -> Result<Link> {
    flannel_device::take_over(nl, &flannel_device::flannel_name(d.vni), d.name).await?;
    let mut mac = d.mac;
    if let Some(l) = nl.link_by_name(d.name).await? {
        if l.kind == Some(InfoKind::Vxlan) {
            return up(nl, d, l.index).await;
        }
        log::info!(
            "replacing {} ({:?}, the BPF datapath's) with a kernel vxlan device, keeping MAC {}",
            d.name,
            l.kind,
            l.mac.map(|m| format_mac(&m)).unwrap_or_default()
        );
        mac = l.mac.unwrap_or(mac);
        nl.delete_link(l.index).await?;
    }
    let msg = LinkVxlan::new(d.name, d.vni).dev(d.underlay).local(d.local).port(d.port).learning(false).mtu(d.mtu).address(mac.to_vec()).build();
    match nl.h.link().add(msg).execute().await {
        Ok(()) => log::info!("created kernel vxlan device {} (VNI {}, port {}, local {})", d.name, d.vni, d.port, d.local),
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating vxlan device {}", d.name)),
    }
    // EEXIST without a device of our name: the kernel allows one vxlan
    // device per VNI and port, and another one has ours.
    let l = nl.link_by_name(d.name).await?.with_context(|| {
        format!(
            "cannot create vxlan device {}: another vxlan device already has VNI {} on port {} (flannel.{} of a flanneld on this node?); \
             remove it (with the BPF datapath, --overlay-kind ifb also avoids the clash, without tunnel GRO)",
            d.name, d.vni, d.port, d.vni
        )
    })?;
    up(nl, d, l.index).await
}

/// Sets the device up, answering to flannel's name too
/// ([`flannel_device::add_altname`]): whether weft made it or took it over,
/// a flanneld started after weftd finds it.
async fn up(nl: &Netlink, d: &VxlanDev<'_>, index: u32) -> Result<Link> {
    let msg = rtnetlink::LinkUnspec::new_with_index(index).mtu(d.mtu).up().build();
    nl.h.link().set(msg).execute().await.with_context(|| format!("setting {} up with MTU {}", d.name, d.mtu))?;
    flannel_device::add_altname(nl, index, d.name, &flannel_device::flannel_name(d.vni)).await;
    nl.link_by_index(index).await
}

/// Makes neighbours, FDB entries and routes on the device match `want`.
/// Entries go in before their route and out after it.
pub async fn apply(nl: &Netlink, index: u32, want: &BTreeMap<Ipv4Net, VtepEntry>) -> Result<Changes> {
    let neigh_want: BTreeMap<IpAddr, [u8; 6]> = want.iter().map(|(net, e)| (IpAddr::V4(net.network_addr()), e.mac)).collect();
    let fdb_want: BTreeMap<[u8; 6], IpAddr> = want.values().map(|e| (e.mac, IpAddr::V4(Ipv4Addr::from(e.ip)))).collect();
    let mut ch = neigh::add_neighbours(nl, index, AddressFamily::Inet, &neigh_want).await?;
    ch.merge(neigh::add_fdb(nl, index, &fdb_want).await?);
    let routes = nl.routes_via(index).await?;
    let have_routes: HashSet<Ipv4Net> = routes.iter().map(|(n, _)| *n).collect();
    // Owned lists: a closure over borrowed items in this Send future trips
    // the compiler's higher-ranked lifetime check.
    let add: Vec<Ipv4Net> = want.keys().filter(|net| !have_routes.contains(net)).copied().collect();
    ch.tally_all(netlink::pipelined(add, |net| async move { nl.replace_route(&net, index).await }).await, true);
    let stale: Vec<Ipv4Net> = have_routes.iter().filter(|net| !want.contains_key(net)).copied().collect();
    ch.tally_all(netlink::pipelined(stale, |net| async move { nl.delete_route(&net, index).await }).await, false);
    ch.merge(neigh::remove_neighbours(nl, index, AddressFamily::Inet, &neigh_want).await?);
    ch.merge(neigh::remove_fdb(nl, index, &fdb_want).await?);
    Ok(ch)
}
