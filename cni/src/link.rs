//! The kernel objects weft-cni makes, over rtnetlink (never `ip`): the node
//! bridge, the pod's veth pair, and the pod side (addresses, routes). Each
//! [`Netlink`] talks to the network namespace it was opened in: the node's
//! is the process's own; the pod's is entered by a dedicated thread
//! ([`in_netns`]), since setns(2) moves only the calling thread.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
    path::Path,
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::{InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute},
    },
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{CniError, Result};

/// What weft-cni needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// "bridge", "veth", ...
    pub kind: Option<String>,
    /// The bridge this link is a port of.
    pub master: Option<u32>,
    pub alias: Option<String>,
    /// Hairpin mode, for bridge ports.
    pub hairpin: Option<bool>,
}

/// A route of the main table (IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// `0a:58:<the four bytes of ip>`: the pod interface's MAC (and a new
/// bridge's, from the gateway), as Kubernetes' kubenet and older CNI
/// plugins derive it. Fixed per address, so a peer's ARP entry stays right
/// when the address moves to a new pod.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// The same for an IPv6-only pod (or bridge): `0a:58:<the last four bytes
/// of ip>`. Fixed per address, and unique among the addresses of one node's
/// subnet (weft-cni hands them out in order from `<subnet>::2`), which is
/// all that shares the bridge's L2.
pub fn mac_for6(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[12], o[13], o[14], o[15]]
}

/// [`mac_for`] of an IPv4 address, [`mac_for6`] of an IPv6 one.
pub fn mac_for_any(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => mac_for(a),
        IpAddr::V6(a) => mac_for6(a),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl_err(what: impl std::fmt::Display, e: rtnetlink::Error) -> CniError {
    CniError::internal(format!("{what}: {e}"))
}

fn link_state(m: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        name: String::new(),
        index: m.header.index,
        mac: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        kind: None,
        master: None,
        alias: None,
        hairpin: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) if b.len() == 6 => l.mac = b.as_slice().try_into().ok(),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(ps)) => {
                            for p in ps {
                                if let InfoBridgePort::HairpinMode(h) = p {
                                    l.hairpin = Some(*h);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// A netlink socket in the namespace of the thread that opened it, with a
/// single-threaded runtime to drive it.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    h: Handle,
}

impl Netlink {
    pub fn new() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| CniError::internal(format!("starting a runtime: {e}")))?;
        let h = rt.block_on(async {
            let (conn, h, _) = rtnetlink::new_connection().map_err(|e| CniError::internal(format!("opening a netlink socket: {e}")))?;
            tokio::spawn(conn);
            Ok::<_, CniError>(h)
        })?;
        Ok(Netlink { rt, h })
    }

    pub fn link_by_name(&self, name: &str) -> Result<Option<LinkState>> {
        self.rt.block_on(async {
            let mut s = self.h.link().get().match_name(name.to_string()).execute();
            match s.try_next().await {
                Ok(m) => Ok(m.map(|m| link_state(&m))),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
                Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
            }
        })
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<LinkState>> {
        self.rt.block_on(async {
            let mut s = self.h.link().get().match_index(index).execute();
            match s.try_next().await {
                Ok(m) => Ok(m.map(|m| link_state(&m))),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
                Err(e) => Err(nl_err(format!("looking up link #{index}"), e)),
            }
        })
    }

    pub fn links(&self) -> Result<Vec<LinkState>> {
        self.rt.block_on(async {
            let mut s = self.h.link().get().execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(|e| nl_err("listing links", e))? {
                out.push(link_state(&m));
            }
            Ok(out)
        })
    }

    /// Addresses (with prefix length) on link `index`, both families.
    pub fn addrs(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        self.rt.block_on(async {
            let mut s = self.h.address().get().set_link_index_filter(index).execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(|e| nl_err("listing addresses", e))? {
                if m.header.index != index {
                    continue;
                }
                for a in &m.attributes {
                    if let AddressAttribute::Local(ip) | AddressAttribute::Address(ip) = a {
                        if !out.contains(&(*ip, m.header.prefix_len)) {
                            out.push((*ip, m.header.prefix_len));
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Routes of the main table, IPv4 then IPv6.
    pub fn routes(&self) -> Result<Vec<RouteState>> {
        let mut out = self.routes_of(RouteMessageBuilder::<Ipv4Addr>::new().build(), IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        out.extend(self.routes_of(RouteMessageBuilder::<Ipv6Addr>::new().build(), IpAddr::V6(Ipv6Addr::UNSPECIFIED))?);
        Ok(out)
    }

    fn routes_of(&self, query: rtnetlink::packet_route::route::RouteMessage, any: IpAddr) -> Result<Vec<RouteState>> {
        self.rt.block_on(async {
            let mut s = self.h.route().get(query).execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(|e| nl_err("listing routes", e))? {
                let mut r = RouteState { dst: any, prefix_len: m.header.destination_prefix_length, gw: None, oif: None };
                let mut table = m.header.table as u32;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = IpAddr::V4(*d),
                        RouteAttribute::Destination(RouteAddress::Inet6(d)) => r.dst = IpAddr::V6(*d),
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gw = Some(IpAddr::V4(*g)),
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.gw = Some(IpAddr::V6(*g)),
                        RouteAttribute::Oif(i) => r.oif = Some(*i),
                        RouteAttribute::Table(t) => table = *t,
                        _ => {}
                    }
                }
                if table == 254 {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// The node bridge: created with the gateway's MAC ([`mac_for`] of the
    /// IPv4 gateway, [`mac_for6`] of the IPv6 one on an IPv6-only node; a
    /// MAC set at creation keeps the bridge from taking its ports' MACs as
    /// they come and go), the MTU and `gw/len`, and up; or adopted when it
    /// exists (also when a concurrent ADD created it a moment ago: EEXIST),
    /// given the MTU and addresses it lacks. Its MAC is never changed. `gw`
    /// is the IPv4 gateway (None on an IPv6-only node), `gw6` the IPv6 one
    /// (dual stack, IPv6-only), added the same way (`nodad`: usable at once,
    /// as the one router of the subnet). At least one of the two is given.
    pub fn ensure_bridge(&self, name: &str, gw: Option<(Ipv4Addr, u8)>, gw6: Option<(Ipv6Addr, u8)>, mtu: u32) -> Result<LinkState> {
        let gws: Vec<(IpAddr, u8)> = gw.map(|(g, l)| (IpAddr::V4(g), l)).into_iter().chain(gw6.map(|(g, l)| (IpAddr::V6(g), l))).collect();
        let Some(&(first, _)) = gws.first() else {
            return Err(CniError::internal(format!("bridge {name}: no gateway address of either family")));
        };
        if self.link_by_name(name)?.is_none() {
            let msg = LinkBridge::new(name).mtu(mtu).address(mac_for_any(first).to_vec()).build();
            let r = self.rt.block_on(self.h.link().add(msg).execute());
            match r {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err(format!("creating bridge {name}"), e)),
            }
        }
        let l = self.link_by_name(name)?.ok_or_else(|| CniError::internal(format!("bridge {name} vanished while it was being set up")))?;
        if l.kind.as_deref() != Some("bridge") {
            return Err(CniError::internal(format!("{name} exists but is a {} device, not a bridge", l.kind.as_deref().unwrap_or("unknown"))));
        }
        if l.mtu != mtu {
            self.set(LinkUnspec::new_with_index(l.index).mtu(mtu).build(), format!("setting MTU {mtu} on {name}"))?;
        }
        let have = self.addrs(l.index)?;
        for (a, len) in gws {
            if have.contains(&(a, len)) {
                continue;
            }
            match self.add_addr_raw(l.index, a, len) {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err(format!("adding {a}/{len} to {name}"), e)),
            }
        }
        if !l.up {
            self.set(LinkUnspec::new_with_index(l.index).up().build(), format!("setting {name} up"))?;
        }
        self.link_by_name(name)?.ok_or_else(|| CniError::internal(format!("bridge {name} vanished while it was being set up")))
    }

    fn set(&self, msg: LinkMessage, what: String) -> Result<()> {
        self.rt.block_on(self.h.link().set(msg).execute()).map_err(|e| nl_err(what, e))
    }

    /// A veth pair: `host` here, `peer` (MAC `peer_mac`) created directly
    /// in the namespace `netns_fd`, both with `mtu`. Err carries the errno
    /// (EEXIST: a name is taken).
    pub fn create_veth(&self, host: &str, peer: &str, peer_mac: [u8; 6], mtu: u32, netns_fd: RawFd) -> std::result::Result<(), (Option<i32>, String)> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string()).mtu(mtu).address(peer_mac.to_vec()).setns_by_fd(netns_fd).build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.rt.block_on(self.h.link().add(msg).execute()).map_err(|e| (errno(&e), format!("creating veth pair {host} / {peer}: {e}")))
    }

    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.set(LinkUnspec::new_with_index(index).alias(alias).build(), format!("setting the alias of link #{index}"))
    }

    /// Makes link `index` a port of `bridge`, up, with hairpin mode as asked.
    pub fn enslave(&self, index: u32, bridge: u32, hairpin: bool) -> Result<()> {
        self.set(LinkUnspec::new_with_index(index).controller(bridge).up().build(), format!("attaching link #{index} to bridge #{bridge}"))?;
        if hairpin {
            let msg = LinkBridgePort::new(index).hairpin(true).build();
            self.rt.block_on(self.h.link().set_port(msg).execute()).map_err(|e| nl_err(format!("setting hairpin mode on link #{index}"), e))?;
        }
        Ok(())
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set(LinkUnspec::new_with_index(index).up().build(), format!("setting link #{index} up"))
    }

    /// Deletes link `index`; true if it existed.
    pub fn delete(&self, index: u32) -> Result<bool> {
        match self.rt.block_on(self.h.link().del(index).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl_err(format!("deleting link #{index}"), e)),
        }
    }

    /// `ip/len` on link `index`; an IPv6 one `nodad` (usable at once).
    fn add_addr_raw(&self, index: u32, ip: IpAddr, prefix_len: u8) -> std::result::Result<(), rtnetlink::Error> {
        let mut req = self.h.address().add(index, ip, prefix_len);
        if ip.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt.block_on(req.execute())
    }

    /// `ip/len` on link `index` (IPv6: `nodad`).
    pub fn add_addr(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        self.add_addr_raw(index, ip, prefix_len).map_err(|e| nl_err(format!("adding {ip}/{prefix_len} to link #{index}"), e))
    }

    /// `dst/len via gw dev index` in the main table (both of one family).
    pub fn add_route(&self, dst: IpAddr, prefix_len: u8, gw: IpAddr, index: u32) -> Result<()> {
        let what = || format!("adding route {dst}/{prefix_len} via {gw}");
        let msg = match (dst, gw) {
            (IpAddr::V4(d), IpAddr::V4(g)) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new();
                if prefix_len > 0 {
                    b = b.destination_prefix(d, prefix_len);
                }
                b.gateway(g).output_interface(index).build()
            }
            (IpAddr::V6(d), IpAddr::V6(g)) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new();
                if prefix_len > 0 {
                    b = b.destination_prefix(d, prefix_len);
                }
                b.gateway(g).output_interface(index).build()
            }
            _ => return Err(CniError::internal(format!("{}: the gateway is of another address family", what()))),
        };
        self.rt.block_on(self.h.route().add(msg).execute()).map_err(|e| nl_err(what(), e))
    }
}

/// Turns IPv6 duplicate address detection off for `ifname` in the calling
/// thread's network namespace (`net.ipv6.conf.<ifname>.accept_dad=0`), as
/// the bridge plugin does for the pod's interface: with hairpin mode the
/// bridge echoes the pod's own neighbour solicitations back, and DAD would
/// fail. Only ever called inside the pod's namespace ([`in_netns`]).
pub fn disable_dad(ifname: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad");
    std::fs::write(&p, "0").map_err(|e| CniError::io(format!("turning off IPv6 DAD for {ifname} ({p}; is IPv6 off in the pod?)"), &e))
}

/// Opens a network namespace file; Err(ENOENT) when it does not exist, an
/// error when it is not a network namespace.
pub fn open_netns(path: &Path) -> std::io::Result<File> {
    let f = File::open(path)?;
    // NS_GET_NSTYPE = _IO(0xb7, 0x3): the namespace type, or -1 if f is no namespace.
    // SAFETY: ioctl on an fd we own, no argument.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), 0xb703) };
    if t != libc::CLONE_NEWNET {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a network namespace", path.display())));
    }
    Ok(f)
}

/// Whether `ns` is the namespace this thread is in (a pod must never be the node).
pub fn is_own_netns(ns: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (ns.metadata(), std::fs::metadata("/proc/thread-self/ns/net")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Runs `f` with a [`Netlink`] opened inside the namespace `ns`, on a thread
/// of its own (setns(2) affects only it; it ends with `f`).
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce(&Netlink) -> Result<T> + Send) -> Result<T> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a valid namespace fd; changes only this thread.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(CniError::internal(format!("entering the pod's network namespace: {}", std::io::Error::last_os_error())));
            }
            let nl = Netlink::new()?;
            f(&nl)
        })
        .join()
        .unwrap_or_else(|_| Err(CniError::internal("the thread working in the pod's namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(weft_common::mac::format_mac(&mac_for(Ipv4Addr::new(10, 244, 1, 5))), "0a:58:0a:f4:01:05");
        assert_eq!(weft_common::mac::format_mac(&mac_for6("fd44:0:0:5::a:102".parse().unwrap())), "0a:58:00:0a:01:02");
        assert_eq!(mac_for_any(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 5))), mac_for(Ipv4Addr::new(10, 244, 1, 5)));
    }
}
