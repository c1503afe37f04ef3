//! Permanent neighbours and FDB entries on a vxlan device, for either
//! family: what flanneld writes per peer on flannel.<VNI> (IPv4) and
//! flannel-v6.<VNI> (IPv6), read, written and removed here once for both
//! ([`crate::backend::kernel_vxlan`], [`super::overlay6`]).
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    AddressFamily,
};

use super::netlink::{errno, pipelined, Netlink};
use crate::{backend::Changes, subnet::lease::format_mac};

/// NDA_DST. In an FDB (bridge family) message the library cannot know the
/// address family and may hand over raw bytes: 4 are IPv4, 16 IPv6.
fn attr_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        },
        _ => None,
    })
}

fn attr_mac(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// Permanent neighbours of `family` (Inet, Inet6) on the device: address
/// -> (MAC, message).
async fn neighbours(nl: &Netlink, index: u32, family: AddressFamily) -> Result<HashMap<IpAddr, ([u8; 6], NeighbourMessage)>> {
    let mut s = nl.h.neighbours().get().set_address_family(family).execute();
    let mut out = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing neighbours")? {
        if m.header.ifindex == index && m.header.state == NeighbourState::Permanent {
            if let (Some(ip), Some(mac)) = (attr_dst(&m), attr_mac(&m)) {
                out.insert(ip, (mac, m));
            }
        }
    }
    Ok(out)
}

/// FDB entries on the device: MAC -> (remote, message).
pub async fn fdb(nl: &Netlink, index: u32) -> Result<HashMap<[u8; 6], (Option<IpAddr>, NeighbourMessage)>> {
    let mut s = nl.h.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    let mut out = HashMap::new();
    while let Some(m) = s.try_next().await.context("listing FDB entries")? {
        if m.header.ifindex == index {
            if let Some(mac) = attr_mac(&m) {
                out.insert(mac, (attr_dst(&m), m));
            }
        }
    }
    Ok(out)
}

/// The device's permanent neighbours of `family`: address -> MAC.
pub async fn permanent(nl: &Netlink, index: u32, family: AddressFamily) -> Result<BTreeMap<IpAddr, [u8; 6]>> {
    Ok(neighbours(nl, index, family).await?.into_iter().map(|(ip, (mac, _))| (ip, mac)).collect())
}

async fn add_neighbour(nl: &Netlink, index: u32, ip: IpAddr, mac: &[u8; 6]) -> Result<()> {
    nl.h.neighbours()
        .add(index, ip)
        .link_layer_address(mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .with_context(|| format!("neighbour {ip} lladdr {}", format_mac(mac)))
}

/// `<mac> dst <remote> self permanent`, as flanneld writes it.
async fn add_fdb_entry(nl: &Netlink, index: u32, mac: &[u8; 6], dst: IpAddr) -> Result<()> {
    nl.h.neighbours()
        .add_bridge(index, mac)
        .destination(dst)
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .with_context(|| format!("fdb {} dst {dst}", format_mac(mac)))
}

/// Deletes an entry; one already gone is no error.
async fn delete(nl: &Netlink, m: NeighbourMessage, what: String) -> Result<()> {
    match nl.h.neighbours().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {what}")),
    }
}

/// Writes the permanent neighbours of `want` (address -> MAC) that the
/// device lacks or has with another MAC. Before the routes through them.
pub async fn add_neighbours(nl: &Netlink, index: u32, family: AddressFamily, want: &BTreeMap<IpAddr, [u8; 6]>) -> Result<Changes> {
    let have = neighbours(nl, index, family).await?;
    let add: Vec<(IpAddr, [u8; 6])> = want.iter().filter(|(ip, mac)| have.get(ip).map(|(m, _)| m) != Some(mac)).map(|(ip, mac)| (*ip, *mac)).collect();
    let mut ch = Changes::default();
    // Owned lists: a closure over borrowed items in a Send future trips the
    // compiler's higher-ranked lifetime check.
    ch.tally_all(pipelined(add, |(ip, mac)| async move { add_neighbour(nl, index, ip, &mac).await }).await, true);
    Ok(ch)
}

/// Removes the device's permanent neighbours of `family` that `want` lacks.
/// After the routes through them went out.
pub async fn remove_neighbours(nl: &Netlink, index: u32, family: AddressFamily, want: &BTreeMap<IpAddr, [u8; 6]>) -> Result<Changes> {
    let mut ch = Changes::default();
    for (ip, (_, m)) in neighbours(nl, index, family).await? {
        if !want.contains_key(&ip) {
            ch.tally(delete(nl, m, format!("neighbour {ip}")).await, false);
        }
    }
    Ok(ch)
}

/// Writes the peer FDB entries of `want` (a peer's VtepMAC -> its PublicIP
/// or PublicIPv6) that the device lacks or has with another remote. Before
/// the peers' map entries and routes.
pub async fn add_fdb(nl: &Netlink, index: u32, want: &BTreeMap<[u8; 6], IpAddr>) -> Result<Changes> {
    let have = fdb(nl, index).await?;
    let add: Vec<([u8; 6], IpAddr)> = want.iter().filter(|(mac, dst)| have.get(*mac).map(|(d, _)| *d) != Some(Some(**dst))).map(|(m, d)| (*m, *d)).collect();
    let mut ch = Changes::default();
    ch.tally_all(pipelined(add, |(mac, dst)| async move { add_fdb_entry(nl, index, &mac, dst).await }).await, true);
    Ok(ch)
}

/// Removes the peer FDB entries `want` lacks: unicast entries with a remote
/// (the kernel's own, such as the all-zero default, are not peers'). After
/// the peers' routes and map entries went out.
pub async fn remove_fdb(nl: &Netlink, index: u32, want: &BTreeMap<[u8; 6], IpAddr>) -> Result<Changes> {
    let mut ch = Changes::default();
    for (mac, (dst, m)) in fdb(nl, index).await? {
        if dst.is_some() && !want.contains_key(&mac) && mac[0] & 1 == 0 && mac != [0; 6] {
            ch.tally(delete(nl, m, format!("fdb {}", format_mac(&mac))).await, false);
        }
    }
    Ok(ch)
}
