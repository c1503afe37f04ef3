//! The kernel objects weft manages over rtnetlink: the overlay device, its
//! address, and one route per remote subnet. Everything here is idempotent.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    },
    Handle, LinkIfb, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::subnet::{Ipv4Net, Ipv6Net};

/// Requests in flight at once on the netlink socket when many objects
/// change together. The kernel answers each in microseconds; awaited one by
/// one, every request also paid a task wake-up round trip (5,000 routes:
/// 0.3-0.7 s). 64 acks fit any socket receive buffer.
const IN_FLIGHT: usize = 64;

/// Runs `op` on every item with up to [`IN_FLIGHT`] requests in flight on
/// the one netlink socket; one result per item, in completion order (each
/// error names its object).
pub async fn pipelined<I, F, Fut>(items: I, op: F) -> Vec<Result<()>>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use futures::StreamExt;
    futures::stream::iter(items).map(op).buffer_unordered(IN_FLIGHT).collect().await
}

/// Routes weft installs carry this protocol number, so `ip route` shows whose they are.
pub const RTPROT_WEFT: u8 = 0xfe;

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub protocol: u8,
    /// An `unreachable` route (no device; the kernel answers ICMP unreachable).
    pub unreachable: bool,
}

/// An IPv6 route of the main table, as [`Route`] for IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    pub dst: Ipv6Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv6Addr>,
    pub protocol: u8,
    /// An `unreachable` route.
    pub unreachable: bool,
}

/// A stream of "routes or links changed" notices from the kernel (the IPv4
/// route and the link multicast groups): any route deleted (one of weft's
/// removed by hand is put back at once instead of at the next resync), a
/// route of someone else's added (host-gw and DirectRouting decide per peer
/// whether it is on-link), or a link added or removed (the pod bridge the
/// fast path attaches to appears with the first pod).
pub fn net_changes() -> Result<futures::channel::mpsc::UnboundedReceiver<()>> {
    use futures::StreamExt;
    use rtnetlink::{
        packet_core::NetlinkPayload,
        packet_route::RouteNetlinkMessage,
        sys::{AsyncSocket, SocketAddr},
    };
    let (mut conn, _h, mut msgs) = rtnetlink::new_connection().context("opening a netlink socket for route and link events")?;
    let groups = rtnetlink::constants::RTMGRP_IPV4_ROUTE | rtnetlink::constants::RTMGRP_LINK;
    conn.socket_mut().socket_mut().bind(&SocketAddr::new(0, groups)).context("joining the IPv4 route and link event groups")?;
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while let Some((m, _)) = msgs.next().await {
            let relevant = match m.payload {
                // Any route removed: one of weft's (put it back), or a path to a peer.
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(_)) => true,
                // Someone else's route changed: a peer may have moved on or off our segment.
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => u8::from(r.header.protocol) != RTPROT_WEFT,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_)) => true,
                _ => false,
            };
            if relevant && tx.unbounded_send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub kind: Option<InfoKind>,
}

/// A link message's name, index, MTU, MAC and kind (also for a link in
/// another namespace, see `peer_netns`).
pub(crate) fn link_from_msg(m: &LinkMessage) -> Link {
    let mut l = Link { name: String::new(), index: m.header.index, mtu: 0, mac: None, kind: None };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) if b.len() == 6 => l.mac = Some(b.as_slice().try_into().expect("len 6")),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.clone());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

#[derive(Clone)]
pub struct Netlink {
    pub(crate) h: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the current network namespace.
    pub fn new() -> Result<Netlink> {
        let (conn, h, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { h })
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let mut s = self.h.link().get().execute();
        let mut out = vec![];
        while let Some(m) = s.try_next().await.context("listing links")? {
            out.push(link_from_msg(&m));
        }
        Ok(out)
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut s = self.h.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(link_from_msg(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Link> {
        let mut s = self.h.link().get().match_index(index).execute();
        let m = s.try_next().await.with_context(|| format!("looking up link #{index}"))?;
        m.map(|m| link_from_msg(&m)).with_context(|| format!("no link #{index}"))
    }

    /// IPv4 addresses (with prefix length) on a link, or on every link when `index` is None.
    pub async fn ipv4_addrs(&self, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
        let mut req = self.h.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let mut s = req.execute();
        let mut out = vec![];
        while let Some(m) = s.try_next().await.context("listing addresses")? {
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if !out.iter().any(|(i, x, _)| *i == m.header.index && x == ip) {
                        out.push((m.header.index, *ip, m.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Global IPv6 addresses (with prefix length) on a link: no link-local,
    /// loopback or tentative (still in DAD) address.
    pub async fn ipv6_global_addrs(&self, index: u32) -> Result<Vec<(Ipv6Addr, u8)>> {
        let mut s = self.h.address().get().set_link_index_filter(index).execute();
        let mut out = vec![];
        while let Some(m) = s.try_next().await.context("listing addresses")? {
            let tentative = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)));
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V6(ip)) = a {
                    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                    if m.header.index == index && !tentative && !link_local && !ip.is_loopback() && !out.iter().any(|(x, _)| x == ip) {
                        out.push((*ip, m.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// IPv4 routes of the main table with an output interface: (destination, ifindex).
    pub async fn main_routes(&self) -> Result<Vec<(Ipv4Net, u32)>> {
        Ok(self.main_routes_full().await?.into_iter().filter_map(|r| Some((r.dst, r.oif?))).collect())
    }

    async fn routes(&self) -> Result<Vec<RouteMessage>> {
        let mut s = self.h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut out = vec![];
        while let Some(m) = s.try_next().await.context("listing routes")? {
            out.push(m);
        }
        Ok(out)
    }

    /// Creates an ifb or veth overlay device (`--overlay-kind`; see the README)
    /// or adopts the existing one, and sets MTU and state. Keeps an existing
    /// MAC (the VtepMAC in our lease must not change across restarts); a new
    /// device gets `new_mac`. With `veth`, the device is one end of a pair
    /// whose other end (`<name>p`) is only brought up.
    pub async fn ensure_overlay(&self, name: &str, veth: bool, mtu: u32, new_mac: [u8; 6]) -> Result<Link> {
        let want = if veth { InfoKind::Veth } else { InfoKind::Ifb };
        let peer = format!("{name}p");
        let mut new_mac = new_mac;
        let existing = match self.link_by_name(name).await? {
            Some(l) if l.kind != Some(want.clone()) => {
                // Another overlay kind of ours (a changed --overlay-kind):
                // replaced, keeping the VtepMAC our lease announces.
                log::info!("replacing {name} ({:?}) with a {want:?} overlay device, keeping its MAC", l.kind);
                new_mac = l.mac.unwrap_or(new_mac);
                self.delete_link(l.index).await?;
                None
            }
            l => l,
        };
        if existing.is_none() {
            let msg = if veth {
                LinkVeth::new(name, &peer).mtu(mtu).address(new_mac.to_vec()).build()
            } else {
                LinkIfb::new(name).mtu(mtu).address(new_mac.to_vec()).build()
            };
            match self.h.link().add(msg).execute().await {
                Ok(()) => log::info!("created overlay device {name} ({want:?})"),
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating device {name}")),
            }
        }
        if veth {
            let p = self.link_by_name(&peer).await?.with_context(|| format!("veth peer {peer} missing"))?;
            self.set_up(p.index, &peer, mtu).await?;
        }
        let l = self.link_by_name(name).await?.with_context(|| format!("device {name} vanished"))?;
        self.set_up(l.index, name, mtu).await?;
        self.link_by_name(name).await?.with_context(|| format!("device {name} vanished"))
    }

    /// Sets a device we opened ourselves (the udp path's TUN) up with `mtu`.
    pub async fn set_link_up(&self, index: u32, name: &str, mtu: u32) -> Result<()> {
        self.set_up(index, name, mtu).await
    }

    async fn set_up(&self, index: u32, name: &str, mtu: u32) -> Result<()> {
        // NOARP: the encap program takes IPv4 only, so neighbour resolution on
        // the overlay must not send ARP (an ifb is NOARP by itself).
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).arp(false).up().build();
        self.h.link().set(msg).execute().await.with_context(|| format!("setting {name} up with MTU {mtu}"))
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.h.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e).context("deleting link"),
        }
    }

    /// Makes `addr/32` the only IPv4 address of the link.
    pub async fn set_only_addr(&self, index: u32, addr: Ipv4Addr) -> Result<()> {
        let mut s = self.h.address().get().set_link_index_filter(index).execute();
        let mut have = false;
        while let Some(m) = s.try_next().await.context("listing addresses")? {
            let ip = m.attributes.iter().find_map(|a| if let AddressAttribute::Address(IpAddr::V4(ip)) = a { Some(*ip) } else { None });
            match ip {
                Some(ip) if ip == addr && m.header.prefix_len == 32 => have = true,
                Some(ip) => {
                    log::info!("removing stale address {ip}/{} from link #{index}", m.header.prefix_len);
                    self.h.address().del(m).execute().await.context("removing a stale address")?;
                }
                None => {}
            }
        }
        if !have {
            self.h.address().add(index, IpAddr::V4(addr), 32).replace().execute().await.with_context(|| format!("adding {addr}/32 to link #{index}"))?;
        }
        Ok(())
    }

    /// The IPv4 routes weft installed through the link (protocol
    /// [`RTPROT_WEFT`], main table): (destination, gateway). Routes of anyone
    /// else on the same link are not weft's to change.
    pub async fn routes_via(&self, index: u32) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>> {
        Ok(self.main_routes_full().await?.into_iter().filter(|r| r.oif == Some(index) && r.protocol == RTPROT_WEFT).map(|r| (r.dst, r.gateway)).collect())
    }

    /// Every IPv4 route of the main table.
    pub async fn main_routes_full(&self) -> Result<Vec<Route>> {
        let mut out = vec![];
        for r in self.routes().await? {
            let mut route = Route {
                dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, r.header.destination_prefix_length)?,
                oif: None,
                gateway: None,
                protocol: u8::from(r.header.protocol),
                unreachable: r.header.kind == RouteType::Unreachable,
            };
            let mut table = r.header.table as u32;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => route.dst = Ipv4Net::new(*d, r.header.destination_prefix_length)?,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(*g),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == 254 {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// host-gw: `<subnet> via <gateway> dev <link>`, replacing a conflicting route.
    pub async fn replace_gw_route(&self, net: &Ipv4Net, gateway: Ipv4Addr, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .gateway(gateway)
            .output_interface(index)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .scope(RouteScope::Universe)
            .build();
        self.h.route().add(msg).replace().execute().await.with_context(|| format!("adding route {net} via {gateway}"))
    }

    /// Deletes weft's route to `net` through the link, whatever its gateway.
    pub async fn delete_weft_route(&self, net: &Ipv4Net, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .build();
        match self.h.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting route {net}")),
        }
    }

    /// `unreachable <net> proto 254 metric 4294967295`: the network's
    /// catch-all, below every peer's route, so traffic to a subnet no lease
    /// holds (a node that left) is answered with ICMP unreachable at once
    /// instead of following the default route out of the node.
    pub async fn ensure_unreachable(&self, net: &Ipv4Net) -> Result<bool> {
        let have = self.main_routes_full().await?.into_iter().any(|r| r.unreachable && r.dst == *net && r.protocol == RTPROT_WEFT);
        self.add_unreachable(have, Self::unreachable_route(net), net).await
    }
    pub async fn delete_unreachable(&self, net: &Ipv4Net) -> Result<()> {
        self.delete_unreachable_msg(Self::unreachable_route(net), net).await
    }

    /// Adds an `unreachable` route unless `have` (one of weft's is there):
    /// whether it was added.
    async fn add_unreachable(&self, have: bool, msg: RouteMessage, net: &(dyn std::fmt::Display + Sync)) -> Result<bool> {
        if have {
            return Ok(false);
        }
        self.h.route().add(msg).replace().execute().await.with_context(|| format!("adding route unreachable {net}"))?;
        Ok(true)
    }

    /// Deletes an `unreachable` route; one already gone is no error.
    async fn delete_unreachable_msg(&self, msg: RouteMessage, net: &(dyn std::fmt::Display + Sync)) -> Result<()> {
        match self.h.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting route unreachable {net}")),
        }
    }

    fn unreachable_route(net: &Ipv4Net) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .kind(RouteType::Unreachable)
            .priority(u32::MAX)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .build()
    }

    /// `<net> dev <link>` (scope link, no gateway): the udp path's one route
    /// for the whole network, as flannel's `flannel0` has.
    pub async fn replace_dev_route(&self, net: &Ipv4Net, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .scope(RouteScope::Link)
            .build();
        self.h.route().add(msg).replace().execute().await.with_context(|| format!("adding route {net} dev #{index}"))
    }

    fn overlay_route(net: &Ipv4Net, index: u32) -> RouteMessage {
        // flannel's form: `<subnet> via <subnet>.0 dev weft.N onlink`, so the
        // kernel keeps one neighbour entry per peer, not one per pod.
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .gateway(net.network_addr())
            .output_interface(index)
            .onlink()
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .scope(RouteScope::Universe)
            .build()
    }

    pub async fn replace_route(&self, net: &Ipv4Net, index: u32) -> Result<()> {
        self.h
            .route()
            .add(Self::overlay_route(net, index))
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding route {net} via {} onlink", net.network_addr()))
    }

    pub async fn delete_route(&self, net: &Ipv4Net, index: u32) -> Result<()> {
        match self.h.route().del(Self::overlay_route(net, index)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting route {net}")),
        }
    }
}

impl Netlink {
    /// Every IPv6 route of the main table.
    pub async fn main_routes6_full(&self) -> Result<Vec<Route6>> {
        let mut s = self.h.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
        let mut out = vec![];
        while let Some(r) = s.try_next().await.context("listing IPv6 routes")? {
            let mut route = Route6 {
                dst: Ipv6Net::new(Ipv6Addr::UNSPECIFIED, r.header.destination_prefix_length)?,
                oif: None,
                gateway: None,
                protocol: u8::from(r.header.protocol),
                unreachable: r.header.kind == RouteType::Unreachable,
            };
            let mut table = r.header.table as u32;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => route.dst = Ipv6Net::new(*d, r.header.destination_prefix_length)?,
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => route.gateway = Some(*g),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == 254 {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// weft's IPv6 routes (protocol weft, main table) through a link:
    /// (destination, gateway).
    pub async fn routes6_via(&self, index: u32) -> Result<Vec<(Ipv6Net, Option<Ipv6Addr>)>> {
        let all = self.main_routes6_full().await?;
        Ok(all.into_iter().filter(|r| r.protocol == RTPROT_WEFT && r.oif == Some(index)).map(|r| (r.dst, r.gateway)).collect())
    }

    /// The output interface of the main table's IPv6 default route (the
    /// underlay of an IPv6-only node when no `--iface` is given).
    pub async fn default_route6_oif(&self) -> Result<Option<u32>> {
        Ok(self.main_routes6_full().await?.into_iter().find(|r| r.dst.prefix_len() == 0 && r.oif.is_some()).and_then(|r| r.oif))
    }

    /// A gateway inside the destination itself is flannel's overlay form
    /// (`<v6 subnet> via <its network address> dev flannel-v6.1 onlink`),
    /// reachable only on-link.
    fn route6(net: &Ipv6Net, gateway: Option<Ipv6Addr>, index: u32) -> RouteMessage {
        let b = RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(net.network_addr(), net.prefix_len()).output_interface(index);
        let b = match gateway {
            Some(g) if net.contains(g) => b.gateway(g).onlink().scope(RouteScope::Universe),
            Some(g) => b.gateway(g).scope(RouteScope::Universe),
            None => b.scope(RouteScope::Link),
        };
        b.protocol(RouteProtocol::from(RTPROT_WEFT)).build()
    }

    /// `<net> via <gateway> dev <link>` (host-gw over IPv6), or with no
    /// gateway `<net> dev <link>` (an IPv6 overlay device), replacing a
    /// conflicting route.
    pub async fn replace_route6(&self, net: &Ipv6Net, gateway: Option<Ipv6Addr>, index: u32) -> Result<()> {
        let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        self.h.route().add(Self::route6(net, gateway, index)).replace().execute().await.with_context(|| format!("adding route {net}{via} dev #{index}"))
    }

    /// The IPv6 network's catch-all, as [`Self::ensure_unreachable`]'s for
    /// IPv4: `unreachable <net> proto 254 metric 4294967295`. True if added.
    pub async fn ensure_unreachable6(&self, net: &Ipv6Net) -> Result<bool> {
        let have = self.main_routes6_full().await?.into_iter().any(|r| r.unreachable && r.dst == *net && r.protocol == RTPROT_WEFT);
        self.add_unreachable(have, Self::unreachable6(net), net).await
    }
    pub async fn delete_unreachable6(&self, net: &Ipv6Net) -> Result<()> {
        self.delete_unreachable_msg(Self::unreachable6(net), net).await
    }

    fn unreachable6(net: &Ipv6Net) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .kind(RouteType::Unreachable)
            .priority(u32::MAX)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .build()
    }

    /// Deletes weft's IPv6 route to `net` through the link.
    pub async fn delete_route6(&self, net: &Ipv6Net, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(net.network_addr(), net.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::from(RTPROT_WEFT))
            .build();
        match self.h.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting route {net}")),
        }
    }
}

/// Disables IPv6 on weft's own overlay device (nothing IPv6 may reach the encap program).
pub fn disable_ipv6(dev: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    if let Err(e) = std::fs::write(&p, "1") {
        log::debug!("could not write {p}: {e}");
    }
}
