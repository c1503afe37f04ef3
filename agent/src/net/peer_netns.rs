//! The far ends of a bridge's veth ports, read from the node's namespace
//! without entering the pods' namespaces and without sending traffic.
//!
//! A veth port whose peer lives in another namespace carries that
//! namespace's id in ours (IFLA_LINK_NETNSID) and the peer's ifindex there
//! (IFLA_LINK). The kernel answers RTM_GETLINK and RTM_GETADDR for another
//! namespace by that id (IFLA_TARGET_NETNSID, IFA_TARGET_NETNSID; Linux
//! 4.20). For addresses it reads IFA_TARGET_NETNSID only on a socket with
//! strict checking (NETLINK_GET_STRICT_CHK), and would otherwise answer
//! with our own namespace's addresses: this module uses a socket of its
//! own with strict checking on, and takes only answers that name the
//! namespace asked for.
//!
//! [`peer_addr_changes`] is the matching event source: a socket that
//! listens to every namespace with an id in ours (NETLINK_LISTEN_ALL_NSID)
//! hears a pod's address being configured, which the bridge plugin does
//! after the veth appeared (its link events may all come before) and after
//! host-local recorded it, and hears an address removed by hand.
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::{InfoKind, LinkAttribute},
    },
    Handle,
};

use super::netlink::{errno, link_from_msg};

/// One veth port of the bridge whose peer is in another namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub index: u32,
    /// The peer's namespace, by its id in ours.
    pub nsid: i32,
    /// The peer's ifindex in that namespace.
    pub peer_index: u32,
}

/// The peer end of a [`Port`], as its namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub mac: [u8; 6],
    /// Its addresses, without link-local and tentative (in DAD) ones.
    pub addrs: Vec<IpAddr>,
}

/// A bridge and its veth ports.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub index: u32,
    pub mac: [u8; 6],
    pub ports: Vec<Port>,
}

/// A netlink socket with strict checking on (see the module's doc).
#[derive(Clone)]
pub struct PeerNetns {
    h: Handle,
}

impl PeerNetns {
    pub fn new() -> Result<PeerNetns> {
        use rtnetlink::sys::AsyncSocket;
        let (mut conn, h, _) = rtnetlink::new_connection().context("opening a netlink socket for pods' namespaces")?;
        conn.socket_mut().socket_mut().set_netlink_get_strict_chk(true).context("NETLINK_GET_STRICT_CHK (Linux 4.20)")?;
        tokio::spawn(conn);
        Ok(PeerNetns { h })
    }

    /// The bridge named `name` and its veth ports with a peer in another
    /// namespace; None if there is no such bridge.
    pub async fn bridge(&self, name: &str) -> Result<Option<Bridge>> {
        let mut s = self.h.link().get().execute();
        let mut links = Vec::new();
        while let Some(m) = s.try_next().await.context("listing links")? {
            links.push(m);
        }
        let Some(br) = links.iter().map(link_from_msg).find(|l| l.name == name && l.kind == Some(InfoKind::Bridge)) else { return Ok(None) };
        let index = br.index;
        let mac = br.mac.with_context(|| format!("bridge {name} has no MAC"))?;
        let ports = links
            .iter()
            .filter(|m| m.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(c) if *c == index)))
            .filter_map(|m| {
                let l = link_from_msg(m);
                if l.kind != Some(InfoKind::Veth) {
                    return None;
                }
                let nsid = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::LinkNetNsId(id) => Some(*id),
                    _ => None,
                })?;
                let peer_index = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Link(i) => Some(*i),
                    _ => None,
                })?;
                Some(Port { name: l.name, index: l.index, nsid, peer_index })
            })
            .collect();
        Ok(Some(Bridge { index, mac, ports }))
    }

    /// The peer of `port` in its namespace; None if it is gone (the pod
    /// being deleted).
    pub async fn peer(&self, port: &Port) -> Result<Option<Peer>> {
        let mut req = self.h.link().get().match_index(port.peer_index);
        req.message_mut().attributes.push(LinkAttribute::IfNetnsId(port.nsid));
        let link = match req.execute().try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) || errno(&e) == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("the peer of {} (#{} in namespace {})", port.name, port.peer_index, port.nsid)),
        };
        anyhow::ensure!(
            link.attributes.iter().any(|a| matches!(a, LinkAttribute::IfNetnsId(id) if *id == port.nsid)),
            "the kernel answered for another namespace than {} (no IFLA_TARGET_NETNSID: Linux before 4.20?)",
            port.nsid
        );
        let l = link_from_msg(&link);
        let (name, Some(mac)) = (l.name, l.mac) else { return Ok(None) };
        if name.is_empty() {
            return Ok(None);
        }
        let mut req = self.h.address().get();
        req.message_mut().header.index = port.peer_index;
        req.message_mut().attributes.push(AddressAttribute::TargetNetNsId(port.nsid));
        let mut s = req.execute();
        let mut addrs = Vec::new();
        while let Some(m) = s.try_next().await.with_context(|| format!("the addresses of {}'s peer", port.name))? {
            anyhow::ensure!(
                m.attributes.iter().any(|a| matches!(a, AddressAttribute::TargetNetNsId(id) if *id == port.nsid)),
                "the kernel answered with another namespace's addresses than {} (no IFA_TARGET_NETNSID: Linux before 4.20?)",
                port.nsid
            );
            if m.header.index != port.peer_index || m.attributes.iter().any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)))
            {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                    if !link_local && !addrs.contains(ip) {
                        addrs.push(*ip);
                    }
                }
            }
        }
        Ok(Some(Peer { name, mac, addrs }))
    }
}

/// A notice per address added or removed in a namespace with an id in
/// ours (a pod's address configured: see the module's doc), or in ours.
pub fn peer_addr_changes() -> Result<futures::channel::mpsc::UnboundedReceiver<()>> {
    use rtnetlink::{
        packet_core::NetlinkPayload,
        packet_route::RouteNetlinkMessage,
        sys::{AsyncSocket, SocketAddr},
    };
    let (mut conn, _h, mut msgs) = rtnetlink::new_connection().context("opening a netlink socket for pods' address events")?;
    let sock = conn.socket_mut().socket_mut();
    sock.set_listen_all_namespaces(true).context("NETLINK_LISTEN_ALL_NSID")?;
    let groups = rtnetlink::constants::RTMGRP_IPV4_IFADDR | rtnetlink::constants::RTMGRP_IPV6_IFADDR;
    sock.bind(&SocketAddr::new(0, groups)).context("joining the address event groups")?;
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while let Some((m, _)) = msgs.next().await {
            let relevant = matches!(m.payload, NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_)));
            if relevant && tx.unbounded_send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
