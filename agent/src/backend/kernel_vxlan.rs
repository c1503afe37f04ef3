//! The kernel's own vxlan device, programmed exactly as flanneld programs
//! flannel.<VNI>: weft's fallback where the BPF datapath cannot run (and
//! `--datapath kernel`). Per peer: a permanent neighbour `<subnet>.0 lladdr
//! <VtepMAC>`, an FDB entry `<VtepMAC> dst <PublicIP> self permanent`, and
//! the route `<subnet> via <subnet>.0 dev weft.<VNI> onlink`. Reconciled
//! like the BPF map: read what exists, add what is missing, remove what is
//! stale; only entries on weft's own device are touched.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        link::InfoKind,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        AddressFamily,
    },
    LinkVxlan,
};
use weft_common::VtepEntry;

use super::peers::Changes;
use crate::{
    net::netlink::{self, errno, Link, Netlink},
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
/// address, as flanneld's) or adopts an existing one. A device of another
/// kind under the name (an ifb or veth overlay of an earlier run) is replaced, keeping
/// its MAC so the VtepMAC our lease announces stays true.
pub async fn ensure_device(nl: &Netlink, d: &VxlanDev<'_>) -> Result<Link> {
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

async fn up(nl: &Netlink, d: &VxlanDev<'_>, index: u32) -> Result<Link> {
    let msg = rtnetlink::LinkUnspec::new_with_index(index).mtu(d.mtu).up().build();
    nl.h.link().set(msg).execute().await.with_context(|| format!("setting {} up with MTU {}", d.name, d.mtu))?;
    nl.link_by_index(index).await
}

/// NDA_DST as IPv4. In an FDB (bridge family) message the library cannot
/// know the address family and hands over raw bytes.
fn attr_ip(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from),
        _ => None,
    })
}

fn attr_mac(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// Permanent IPv4 neighbours on the device: address -> (MAC, message).
async fn neighbours(nl: &Netlink, index: u32) -> Result<HashMap<Ipv4Addr, ([u8; 6], NeighbourMessage)>> {
    let mut s = nl.h.neighbours().get().set_address_family(AddressFamily::Inet).execute();
    let mut out = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing neighbours")? {
        if m.header.ifindex == index && m.header.state == NeighbourState::Permanent {
            if let (Some(ip), Some(mac)) = (attr_ip(&m), attr_mac(&m)) {
                out.insert(ip, (mac, m));
            }
        }
    }
    Ok(out)
}

/// FDB entries on the device: MAC -> (remote, message).
async fn fdb(nl: &Netlink, index: u32) -> Result<HashMap<[u8; 6], (Option<Ipv4Addr>, NeighbourMessage)>> {
    let mut s = nl.h.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    let mut out = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing FDB entries")? {
        if m.header.ifindex == index {
            if let Some(mac) = attr_mac(&m) {
                out.insert(mac, (attr_ip(&m), m));
            }
        }
    }
    Ok(out)
}

async fn add_neighbour(nl: &Netlink, index: u32, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<()> {
    nl.h.neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .with_context(|| format!("neighbour {ip} lladdr {}", format_mac(mac)))
}

async fn add_fdb(nl: &Netlink, index: u32, mac: &[u8; 6], dst: Ipv4Addr) -> Result<()> {
    nl.h.neighbours()
        .add_bridge(index, mac)
        .destination(IpAddr::V4(dst))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .with_context(|| format!("fdb {} dst {dst}", format_mac(mac)))
}

async fn delete(nl: &Netlink, m: NeighbourMessage, what: String) -> Result<()> {
    match nl.h.neighbours().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {what}")),
    }
}

/// Makes neighbours, FDB entries and routes on the device match `want`.
/// Entries go in before their route and out after it.
pub async fn apply(nl: &Netlink, index: u32, want: &BTreeMap<Ipv4Net, VtepEntry>) -> Result<Changes> {
    let mut ch = Changes::default();
    let (neigh, fdb_have) = (neighbours(nl, index).await?, fdb(nl, index).await?);
    // Owned lists: a closure over borrowed items in this Send future trips
    // the compiler's higher-ranked lifetime check.
    let neigh_add: Vec<(Ipv4Addr, [u8; 6])> =
        want.iter().map(|(net, e)| (net.network_addr(), e.mac)).filter(|(gw, mac)| neigh.get(gw).map(|(m, _)| m) != Some(mac)).collect();
    ch.tally_all(netlink::pipelined(neigh_add, |(gw, mac)| async move { add_neighbour(nl, index, gw, &mac).await }).await, true);
    let fdb_add: Vec<([u8; 6], Ipv4Addr)> =
        want.values().map(|e| (e.mac, Ipv4Addr::from(e.ip))).filter(|(mac, dst)| fdb_have.get(mac).map(|(d, _)| *d) != Some(Some(*dst))).collect();
    ch.tally_all(netlink::pipelined(fdb_add, |(mac, dst)| async move { add_fdb(nl, index, &mac, dst).await }).await, true);
    let routes = nl.routes_via(index).await?;
    let have_routes: HashSet<Ipv4Net> = routes.iter().map(|(n, _)| *n).collect();
    let add: Vec<Ipv4Net> = want.keys().filter(|net| !have_routes.contains(net)).copied().collect();
    ch.tally_all(netlink::pipelined(add, |net| async move { nl.replace_route(&net, index).await }).await, true);
    let stale: Vec<Ipv4Net> = have_routes.iter().filter(|net| !want.contains_key(net)).copied().collect();
    ch.tally_all(netlink::pipelined(stale, |net| async move { nl.delete_route(&net, index).await }).await, false);
    let gws: HashSet<Ipv4Addr> = want.keys().map(|n| n.network_addr()).collect();
    let macs: HashSet<[u8; 6]> = want.values().map(|e| e.mac).collect();
    for (ip, (_, m)) in neigh {
        if !gws.contains(&ip) {
            ch.tally(delete(nl, m, format!("neighbour {ip}")).await, false);
        }
    }
    for (mac, (dst, m)) in fdb_have {
        // Only unicast entries with a remote are flannel-style peer entries.
        if dst.is_some() && !macs.contains(&mac) && mac[0] & 1 == 0 {
            ch.tally(delete(nl, m, format!("fdb {}", format_mac(&mac))).await, false);
        }
    }
    Ok(ch)
}
