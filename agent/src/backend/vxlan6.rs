//! The IPv6 half of a dual-stack vxlan node: `weft-v6.<VNI>`, a kernel vxlan
//! device over the IPv6 underlay like flannel's `flannel-v6.<VNI>` (made by
//! [`crate::net::overlay6`]), whose MAC our lease announces as
//! BackendV6Data.VtepMAC. weft's programs pick the peer (`weft_encap6` on
//! its egress, `weft_overlay_in6` on its ingress, `weft_decap` validating
//! IPv6 VXLAN on the underlay); the device's forwarding table maps each
//! peer's IPv6 VtepMAC to its PublicIPv6, and the device writes the outer
//! headers, with the UDP checksum IPv6 requires and tunnel GSO.
//!
//! Per reconcile, in an order that never routes to a missing entry: map
//! entries in, then what flanneld programs on flannel-v6.<VNI> (FDB entry,
//! permanent neighbour `<v6 subnet network address> lladdr <v6 VtepMAC>`),
//! then routes `<v6 subnet> via <that address> dev weft-v6.<VNI> onlink`;
//! stale routes out, then their kernel entries, then their map entries.
//! The kernel's entries make its own path complete, for when weft's
//! programs stand aside (weftd gone past its deadline, see
//! `dataplane::deadline`).
//!
//! With DirectRouting, an IPv6 peer whose PublicIPv6 is on our L2 segment
//! is routed `<v6 subnet> via <PublicIPv6> dev <underlay>` instead (as
//! flanneld does for IPv6 too), with the fast path's `weft_hostgw6` where
//! it runs ([`routed::apply_host_gw6`]), decided per peer on every reconcile.
//!
//! Without BPF (the kernel fallback) the same device is programmed the
//! same way, without the maps.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{Context, Result};
use rtnetlink::packet_route::AddressFamily;
use weft_common::{subnet_env::Ipv6Cidr, Datapath6Config, Vtep6Entry};

use super::{
    peers::Warned,
    peers6::{desired6, ensure_unreachable6, sync_routes6},
    routed, Changes, Node,
};
use crate::{
    dataplane::Datapath,
    net::{
        neigh,
        netlink::{Link, Netlink},
        overlay6,
    },
    subnet::{Ipv6Net, Leases},
};

pub struct Vxlan6 {
    pub dev: Link,
    pub vtep_mac: [u8; 6],
    pub public_ip: Ipv6Addr,
    vni: u32,
}

/// Who carries the IPv6 peers: weft's programs (with their maps), or the
/// kernel alone.
pub enum Carrier6<'a> {
    Bpf(&'a mut Datapath),
    Kernel,
}

/// DirectRouting for IPv6: the underlay's ifindex, and whether the fast
/// path (`weft_hostgw6`) carries the routed peers too.
#[derive(Debug, Clone, Copy)]
pub struct Direct6 {
    pub underlay: u32,
    pub fast: bool,
}

/// An IPv6 vxlan peer: its PublicIPv6 and IPv6 VtepMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer6 {
    pub ip: Ipv6Addr,
    pub mac: [u8; 6],
}

impl Vxlan6 {
    /// Makes (or adopts) `weft-v6.<VNI>`; a new device takes the IPv6
    /// VtepMAC of our previous lease, else `new_mac`.
    pub async fn new(node: &Node, vni: u32, port: u16, public_ip: Ipv6Addr, new_mac: [u8; 6], bpf: bool) -> Result<Vxlan6> {
        let previous = node.previous.as_ref().and_then(|a| a.vxlan_v6_data().ok()).filter(|d| d.vni == vni).map(|d| d.vtep_mac);
        let name = overlay6::name(vni);
        let u = &node.underlay.link;
        let d = overlay6::Vxlan6Dev {
            name: &name,
            vni,
            port,
            underlay: u.index,
            local: public_ip,
            mtu: u.mtu - overlay6::VXLAN6_OVERHEAD,
            mac: previous.unwrap_or(new_mac),
            noarp: bpf,
        };
        let dev = overlay6::ensure_device6(&node.nl, &d).await?;
        let vtep_mac = dev.mac.with_context(|| format!("{name} has no MAC"))?;
        Ok(Vxlan6 { dev, vtep_mac, public_ip, vni })
    }

    /// Our IPv6 configuration for the programs.
    pub fn configure(&self, dp: &mut Datapath) -> Result<()> {
        dp.set_config6(&Datapath6Config { local_ip: self.public_ip.octets(), overlay_ifindex: self.dev.index, vtep_mac: self.vtep_mac, _pad: [0; 2] })
    }

    /// The programs on the device (after the first reconcile filled the maps).
    pub fn attach(&self, dp: &mut Datapath) -> Result<()> {
        dp.attach_v6(&self.dev.name, self.dev.index)?;
        log::info!("IPv6 overlay {} (VtepMAC {}, local {}): weft_encap6 / weft_overlay_in6 attached", self.dev.name, fmt_mac(&self.vtep_mac), self.public_ip);
        Ok(())
    }

    /// Makes FDB, maps (or neighbours) and routes match the IPv6 peers in
    /// `leases`; with `direct` (DirectRouting) those on our segment are
    /// routed via their PublicIPv6 instead.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        carrier: Carrier6<'_>,
        node: &Node,
        own: &Ipv6Net,
        network: &Ipv6Net,
        leases: &Leases,
        warned: &mut Warned,
        direct: Option<Direct6>,
    ) -> Result<(usize, Changes)> {
        let vni = self.vni;
        let want = desired6(leases, own, network, warned, |l, ip| {
            let d = l.attrs.vxlan_v6_data()?;
            if d.vni != vni {
                anyhow::bail!("BackendV6Data.VNI {} differs from ours ({vni})", d.vni);
            }
            Ok(Peer6 { ip, mac: d.vtep_mac })
        });
        let nl = &node.nl;
        let peers = want.len();
        let Some(d) = direct else {
            return Ok((peers, self.apply_tunnel(carrier, nl, network, &want).await?));
        };
        let routes = nl.main_routes6_full().await?;
        let (routed_peers, want): (BTreeMap<_, _>, BTreeMap<_, _>) = want.into_iter().partition(|(_, p)| routed::on_link6(&routes, p.ip, d.underlay));
        let routed_peers: BTreeMap<Ipv6Net, Option<Ipv6Addr>> = routed_peers.into_iter().map(|(n, p)| (n, Some(p.ip))).collect();
        let (mut ch, fast) = match carrier {
            Carrier6::Bpf(dp) => (self.apply_tunnel(Carrier6::Bpf(&mut *dp), nl, network, &want).await?, d.fast.then_some(dp)),
            Carrier6::Kernel => (self.apply_tunnel(Carrier6::Kernel, nl, network, &want).await?, None),
        };
        ch.merge(routed::apply_host_gw6(nl, d.underlay, &routed_peers, fast).await?);
        Ok((peers, ch))
    }

    /// The tunnelled IPv6 peers `want` through `weft-v6.<VNI>`: with weft's
    /// programs their map entries, and with or without them what flanneld
    /// programs on flannel-v6.<VNI> (FDB entry, permanent neighbour
    /// `<v6 subnet address>`, route via it onlink), so that the kernel's own
    /// device carries every peer when the programs stand aside. In: map
    /// entries, then the kernel's entries, then routes; out the other way.
    async fn apply_tunnel(&self, carrier: Carrier6<'_>, nl: &Netlink, network: &Ipv6Net, want: &BTreeMap<Ipv6Net, Peer6>) -> Result<Changes> {
        let index = self.dev.index;
        let fdb: BTreeMap<[u8; 6], IpAddr> = want.values().map(|p| (p.mac, IpAddr::V6(p.ip))).collect();
        let neigh: BTreeMap<IpAddr, [u8; 6]> = want.iter().map(|(n, p)| (IpAddr::V6(n.network_addr()), p.mac)).collect();
        let routes: BTreeMap<Ipv6Net, Option<Ipv6Addr>> = want.keys().map(|n| (*n, Some(n.network_addr()))).collect();
        let mut maps = match carrier {
            Carrier6::Bpf(dp) => Some((MapsIn::apply(dp, want)?, dp)),
            Carrier6::Kernel => None,
        };
        let mut kernel = neigh::add_fdb(nl, index, &fdb).await?;
        kernel.merge(neigh::add_neighbours(nl, index, AddressFamily::Inet6, &neigh).await?);
        let routed = sync_routes6(nl, index, &routes).await?;
        kernel.errors += routed.errors;
        kernel.removed += routed.removed;
        kernel.merge(neigh::remove_neighbours(nl, index, AddressFamily::Inet6, &neigh).await?);
        kernel.merge(neigh::remove_fdb(nl, index, &fdb).await?);
        let mut ch = match maps.as_mut() {
            // A peer's change is its map entry's; of the kernel's part only
            // the errors count.
            Some((m, dp)) => {
                let mut ch = m.finish(dp, want)?;
                ch.errors += kernel.errors;
                ch
            }
            None => kernel,
        };
        ensure_unreachable6(nl, network, &mut ch).await;
        Ok(ch)
    }

    /// Removes the device (its routes and FDB go with it).
    pub async fn cleanup(&self, node: &Node) {
        if let Err(e) = node.nl.delete_link(self.dev.index).await {
            log::warn!("removing {}: {e:#}", self.dev.name);
        }
    }
}

/// weft's IPv6 maps for the tunnelled peers: the entries in first
/// ([`MapsIn::apply`]), the stale ones out last ([`MapsIn::finish`]).
struct MapsIn {
    ch: Changes,
    have: BTreeMap<Ipv6Net, Vtep6Entry>,
    have_ips: BTreeSet<Ipv6Addr>,
}

impl MapsIn {
    /// VTEP addresses and entries of `want` in.
    fn apply(dp: &mut Datapath, want: &BTreeMap<Ipv6Net, Peer6>) -> Result<MapsIn> {
        let mut ch = Changes::default();
        let ips: BTreeSet<Ipv6Addr> = want.values().map(|p| p.ip).collect();
        let have_ips = dp.vtep_ips6()?;
        let have: BTreeMap<Ipv6Net, Vtep6Entry> = dp.vteps6()?.into_iter().filter_map(|(c, e)| Some((Ipv6Net::new(c.addr, c.prefix_len).ok()?, e))).collect();
        for ip in ips.difference(&have_ips) {
            ch.tally(dp.add_vtep_ip6(*ip), true);
        }
        for (net, p) in want {
            let e = Vtep6Entry { ip: p.ip.octets(), mac: p.mac, _pad: [0; 2] };
            if have.get(net) != Some(&e) {
                ch.tally(dp.set_vtep6(&cidr(net), &e), true);
            }
        }
        Ok(MapsIn { ch, have, have_ips })
    }

    /// Entries of peers no longer in `want` out (after their routes).
    fn finish(&mut self, dp: &mut Datapath, want: &BTreeMap<Ipv6Net, Peer6>) -> Result<Changes> {
        let mut ch = std::mem::take(&mut self.ch);
        let ips: BTreeSet<Ipv6Addr> = want.values().map(|p| p.ip).collect();
        for net in self.have.keys().filter(|n| !want.contains_key(n)) {
            ch.tally(dp.remove_vtep6(&cidr(net)), false);
        }
        for ip in self.have_ips.difference(&ips) {
            ch.tally(dp.remove_vtep_ip6(*ip), false);
        }
        Ok(ch)
    }
}

fn cidr(n: &Ipv6Net) -> Ipv6Cidr {
    Ipv6Cidr { addr: n.network_addr(), prefix_len: n.prefix_len() }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    crate::subnet::lease::format_mac(m)
}

/// Whether `name` is one of weft's IPv6 overlay devices (`weft-v6.<digits>`).
pub fn is_overlay6_name(name: &str) -> bool {
    name.strip_prefix("weft-v6.").is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}
