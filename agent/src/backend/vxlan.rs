//! The vxlan backend: flannel's VXLAN (VNI, UDP 8472, VtepMACs from the
//! leases) carried by weft's BPF programs (`weft_encap` on the overlay
//! device's egress, `weft_decap` on the underlay's ingress, maps of VTEPs),
//! or, where the kernel cannot run them, by the kernel's own vxlan device
//! programmed as flanneld programs flannel.1 ([`super::kernel_vxlan`]).
//! With DirectRouting, peers on our L2 segment are routed as host-gw routes
//! them ([`super::routed`]), decided per peer on every reconcile. IPv6 has
//! its own device beside it ([`super::vxlan6`]); an IPv6-only network has
//! only that one (no `weft.<VNI>`, as flanneld makes no flannel.<VNI> then).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use aya::programs::TcAttachType;
use futures::future::BoxFuture;
use rtnetlink::packet_route::AddressFamily;
use weft_common::{cfg_flags, prog_names, DatapathConfig, VtepEntry, VXLAN_OVERHEAD};

use super::{
    kernel_vxlan,
    peers::{desired, Changes, Warned},
    routed::{self, Routed},
    vxlan6::{Carrier6, Direct6, Vxlan6},
    Backend, Node, Reconciled, Section,
};
use crate::{
    dataplane::{self, fast_path::FastPath, Datapath},
    net::{
        neigh,
        netlink::{self, Link, Netlink},
        overlay6,
    },
    subnet::{
        lease::{format_mac, LeaseAttrs},
        Ipv4Net, Ipv6Net, Leases, Subnets,
    },
};

/// The `Backend` section of a vxlan network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub vni: u32,
    pub port: u16,
    /// Peers on our L2 segment are routed host-gw style.
    pub direct_routing: bool,
}

impl Config {
    pub fn parse(raw: &Section) -> Result<Config> {
        let vni = raw.vni.unwrap_or(1);
        if vni == 0 || vni > 0xff_ffff {
            bail!("config field Backend.VNI: {vni} is outside 1..=16777215");
        }
        if raw.gbp == Some(true) {
            bail!("config field Backend.GBP: group-based policy is not supported by weft");
        }
        Ok(Config { vni, port: raw.port(weft_common::VXLAN_PORT)?, direct_routing: raw.direct_routing == Some(true) })
    }
}

/// What carries the VXLAN.
enum Carrier {
    /// weft's programs; `fast`: the shortcuts past the host (None: --no-fast-path).
    Bpf { dp: Box<Datapath>, fast: Option<FastPath> },
    /// The kernel's vxlan device, programmed per peer (the fallback).
    Kernel,
}

pub struct VxlanBackend {
    cfg: Config,
    node: Node,
    bpf: bool,
    /// The overlay device is a kernel vxlan device (the fallback's, and the
    /// BPF datapath's default: `cfg_flags::KERNEL_VXLAN`).
    kernel_vxlan_overlay: bool,
    /// `weft.<VNI>`, whose MAC is our VtepMAC: a kernel vxlan device, or for
    /// BPF with `--overlay-kind ifb|veth` that kind. None on an IPv6-only
    /// network.
    overlay: Option<Link>,
    /// The IPv4 VtepMAC (zero without `weft.<VNI>`).
    vtep_mac: [u8; 6],
    attrs: LeaseAttrs,
    /// Set by `start`: our IPv4 subnet (None: IPv6-only) and what carries
    /// the VXLAN.
    started: Option<(Option<Ipv4Net>, Carrier)>,
    /// With DirectRouting: the peers routed on our segment.
    direct: Option<Routed>,
    /// On a dual-stack network: `weft-v6.<VNI>` and its peers ([`super::vxlan6`]).
    v6: Option<Vxlan6>,
    /// Our IPv6 subnet, set by `start` on a dual-stack network.
    own6: Option<Ipv6Net>,
    /// weft's programs are attached ([`VxlanBackend::attach_bpf`], after the
    /// first reconcile).
    attached: bool,
}

/// The overlay device's name for `vni`, as flannel names flannel.<VNI>.
pub fn overlay_name(vni: u32) -> String {
    format!("weft.{vni}")
}

/// Whether `name` is one of weft's overlay devices (`weft.<digits>`).
pub fn is_overlay_name(name: &str) -> bool {
    name.strip_prefix("weft.").is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

fn random_mac() -> [u8; 6] {
    let mut m: [u8; 6] = rand::random();
    m[0] = (m[0] & 0xfe) | 0x02; // unicast, locally administered
    m
}

impl VxlanBackend {
    /// Chooses the carrier and makes the overlay device first: its MAC is
    /// the VtepMAC our lease announces.
    pub async fn new(cfg: &Config, node: Node) -> Result<VxlanBackend> {
        let bpf = dataplane::choose_bpf(&node.args)?;
        if bpf {
            dataplane::bpffs::ensure_mounted(&node.args.bpf_pin_dir)?;
        }
        let kernel_vxlan_overlay = !bpf || node.args.overlay_kind == "vxlan";
        let overlay = match node.network {
            Some(_) => Some(Self::ensure_overlay(cfg, &node, bpf, kernel_vxlan_overlay).await?),
            None => None,
        };
        let vtep_mac = match &overlay {
            Some(o) => o.mac.context("overlay device has no MAC")?,
            None => [0; 6],
        };
        let underlay = &node.underlay;
        let v6 = match (node.network6, underlay.public_ipv6) {
            (Some(_), Some(pip6)) => Some((Vxlan6::new(&node, cfg.vni, cfg.port, pip6, random_mac(), bpf).await?, pip6)),
            (Some(_), None) => bail!("the network carries IPv6 and the underlay has no PublicIPv6"),
            _ => None,
        };
        let attrs = match (&overlay, &v6) {
            (Some(_), None) => LeaseAttrs::vxlan(underlay.public_ip, cfg.vni, &vtep_mac),
            (Some(_), Some((v6, pip6))) => LeaseAttrs::vxlan(underlay.public_ip, cfg.vni, &vtep_mac).with_ipv6(*pip6, Some((cfg.vni, v6.vtep_mac))),
            (None, Some((v6, pip6))) => LeaseAttrs::ipv6_only("vxlan", *pip6, Some((cfg.vni, v6.vtep_mac))),
            (None, None) => bail!("the network carries neither IPv4 nor IPv6"),
        };
        let v6 = v6.map(|(v6, _)| v6);
        let direct = cfg.direct_routing.then(|| Routed::new(underlay.link.index));
        Ok(VxlanBackend { cfg: *cfg, node, bpf, kernel_vxlan_overlay, overlay, vtep_mac, attrs, started: None, direct, v6, own6: None, attached: false })
    }

    /// `weft.<VNI>`, the IPv4 overlay device.
    async fn ensure_overlay(cfg: &Config, node: &Node, bpf: bool, kernel_vxlan_overlay: bool) -> Result<Link> {
        let (args, nl, underlay) = (&node.args, &node.nl, &node.underlay);
        let name = overlay_name(cfg.vni);
        let mtu = underlay.link.mtu - VXLAN_OVERHEAD;
        // A device made now takes the VtepMAC of our previous lease (flannel
        // reuses it from its Node annotation), else a new one; an existing
        // device keeps its own.
        let previous = node.previous.as_ref().and_then(|a| a.vxlan_data().ok()).filter(|d| d.vni == cfg.vni).map(|d| d.vtep_mac);
        let new_mac = previous.unwrap_or_else(random_mac);
        let dev =
            kernel_vxlan::VxlanDev { name: &name, vni: cfg.vni, port: cfg.port, underlay: underlay.link.index, local: underlay.iface_ip, mtu, mac: new_mac };
        let overlay = if !bpf {
            kernel_vxlan::ensure_device(nl, &dev).await?
        } else if kernel_vxlan_overlay {
            // The same device as the fallback's, with an empty forwarding
            // table: weft's programs send, its socket receives. NOARP: the
            // encap program takes IPv4 only.
            let l = kernel_vxlan::ensure_device(nl, &dev).await?;
            // Turning ARP off flushes the device's neighbours, permanent ones
            // too: on a device just taken over from flanneld its routes go
            // via those, so they are put back until weft's programs (after
            // the first reconcile) carry the traffic.
            let kept = neigh::permanent(nl, l.index, AddressFamily::Inet).await?;
            nl.set_link_up(l.index, &name, mtu).await?;
            neigh::add_neighbours(nl, l.index, AddressFamily::Inet, &kept).await?;
            nl.link_by_index(l.index).await?
        } else {
            nl.ensure_overlay(&name, args.overlay_kind == "veth", mtu, new_mac).await?
        };
        netlink::disable_ipv6(&name);
        Ok(overlay)
    }

    /// weft's programs on the overlay device and the underlay, configured
    /// for our VNI, port and VtepMAC; the fast path as the flags say.
    fn start_bpf(&mut self) -> Result<Carrier> {
        let (args, underlay, Config { vni, port, direct_routing }) = (&self.node.args, &self.node.underlay, self.cfg);
        let mut dp = dataplane::start(args, &self.node.health)?;
        dp.set_config(&DatapathConfig {
            vni,
            local_ip: underlay.iface_ip.octets(),
            underlay_ifindex: underlay.link.index,
            overlay_ifindex: self.overlay.as_ref().map_or(0, |o| o.index),
            vtep_mac: self.vtep_mac,
            port,
            flags: if args.vxlan_udp_csum { cfg_flags::UDP_CSUM } else { 0 } | if self.kernel_vxlan_overlay { cfg_flags::KERNEL_VXLAN } else { 0 },
            underlay_mtu: underlay.link.mtu,
        })?;
        if self.overlay.is_none() {
            // IPv6-only: no IPv4 overlay (the device of an earlier IPv4 run
            // is gone, and with it what its links held).
            dp.release_links(prog_names::ENCAP)?;
            dp.release_links(prog_names::OVERLAY_IN)?;
        } else if !self.kernel_vxlan_overlay {
            dp.release_links(prog_names::OVERLAY_IN)?;
        }
        if args.xdp_decap {
            log::warn!("--xdp-decap is deprecated and does nothing: TC decapsulation after tunnel GRO measured faster (README, \"XDP decap was removed\")");
        }
        if dp.release_links(prog_names::XDP_DECAP)? {
            log::info!("detached the XDP decap an earlier weftd left on {}", underlay.link.name);
        }
        if let Some(v6) = &self.v6 {
            v6.configure(&mut dp)?;
        } else if dp.release_v6()? {
            log::info!("released the IPv6 overlay's links an earlier dual-stack run left");
        }
        if direct_routing {
            log::info!("DirectRouting: peers on this L2 segment are routed via their PublicIP on {}, the others through VXLAN", underlay.link.name);
        }
        let fast = FastPath::from_args(args, &mut dp, direct_routing)?;
        // weft_decap delivers routed peer-pod packets itself here.
        if dp.release_links(prog_names::TO_POD)? {
            log::info!("released the weft_to_pod link an earlier host-gw run left on {}", underlay.link.name);
        }
        Ok(Carrier::Bpf { dp: Box::new(dp), fast })
    }

    /// weft's programs on the overlay devices and the underlay, once the
    /// first reconcile has filled the maps: a program that found them empty
    /// would drop every peer's traffic (no VTEP yet) for the moments until
    /// then. Until this, what carried the traffic before carries it: on a
    /// restart the previous weftd's programs (their pinned links, replaced
    /// here in one step each), on a node flanneld left the kernel's vxlan
    /// device with flanneld's entries (see `kernel_vxlan`'s takeover).
    fn attach_bpf(&mut self) -> Result<()> {
        let Some((_, Carrier::Bpf { dp, .. })) = self.started.as_mut() else { return Ok(()) };
        let (underlay, Config { vni, port, .. }) = (&self.node.underlay, self.cfg);
        // The deadline first: programs of an earlier weftd that stood aside
        // (it was gone too long) carry traffic again from here on, with the
        // maps this reconcile filled; then it moves on while weftd runs.
        dp.keep_deadline(std::time::Duration::from_secs(self.node.args.datapath_grace_secs))?;
        if let Some(o) = &self.overlay {
            dp.attach_tc(prog_names::ENCAP, &o.name, o.index, TcAttachType::Egress)?;
        }
        dp.attach_tc(prog_names::DECAP, &underlay.link.name, underlay.link.index, TcAttachType::Ingress)?;
        // After weft_decap: from then on it marks what it hands to the
        // overlay device, and only that may enter there. The other way
        // round, VXLAN arriving between the two attachments reached the
        // kernel's socket unmarked and weft_overlay_in dropped it (on a
        // node taken over from flanneld: echo requests lost).
        if let (Some(o), true) = (&self.overlay, self.kernel_vxlan_overlay) {
            dp.attach_tc(prog_names::OVERLAY_IN, &o.name, o.index, TcAttachType::Ingress)?;
        }
        log::info!(
            "datapath attached: encap on {} egress, decap on {} ingress{}; VNI {vni}, port {port}, VtepMAC {}",
            self.overlay.as_ref().map_or("(no IPv4 overlay)", |o| o.name.as_str()),
            underlay.link.name,
            if self.kernel_vxlan_overlay { ", the kernel's vxlan socket decapsulating what is not for a registered pod" } else { "" },
            format_mac(&self.vtep_mac)
        );
        if let Some(v6) = &self.v6 {
            v6.attach(dp)?;
        }
        self.attached = true;
        Ok(())
    }

    async fn apply(&mut self, leases: &Leases, warned: &mut Warned) -> Result<Reconciled> {
        let Some(own) = self.started.as_ref().map(|(own, _)| *own) else { bail!("vxlan backend not started") };
        // IPv4 peers, unless the network is IPv6-only.
        let want = match (own, self.node.network) {
            (Some(own4), Some(net4)) => desired_vxlan(leases, &own4, &net4, self.cfg.vni, warned),
            _ => BTreeMap::new(),
        };
        let overlay_index = self.overlay.as_ref().map(|o| o.index);
        let nl = &self.node.nl;
        let mut out = Reconciled { peers: want.len(), changes: Changes::default() };
        // Decided per peer on every reconcile: a route change moves a peer.
        // Without DirectRouting every peer is tunnelled: no copy of `want`.
        let split = match &self.direct {
            Some(d) => Some(routed::split_direct(nl, d.underlay, want.clone()).await?),
            None => None,
        };
        let (tunnel, routed) = match &split {
            Some((t, r)) => (t, r),
            None => (&want, &BTreeMap::new()),
        };
        let ch = &mut out.changes;
        match self.started.as_mut().map(|(_, c)| c) {
            Some(Carrier::Bpf { dp, fast }) => {
                if let Some(f) = fast {
                    f.ensure(dp, nl).await;
                }
                if let Some(index) = overlay_index {
                    ch.merge(apply_bpf(dp, nl, index, &want, tunnel).await?);
                }
                if let Some(d) = &mut self.direct {
                    ch.merge(d.apply(nl, routed, fast.is_some().then_some(&mut **dp)).await?);
                }
            }
            Some(Carrier::Kernel) => {
                if let Some(index) = overlay_index {
                    ch.merge(kernel_vxlan::apply(nl, index, tunnel).await?);
                }
                if let Some(d) = &mut self.direct {
                    ch.merge(d.apply(nl, routed, None).await?);
                }
            }
            None => bail!("vxlan backend not started"),
        }
        if let Some(net4) = &self.node.network {
            routed::ensure_unreachable(nl, net4, ch).await;
        }
        if let (Some(v6), Some(own6), Some(net6), Some((_, carrier))) = (&self.v6, self.own6, self.node.network6, self.started.as_mut()) {
            let (carrier, fast_on) = match carrier {
                Carrier::Bpf { dp, fast } => (Carrier6::Bpf(dp), fast.is_some()),
                Carrier::Kernel => (Carrier6::Kernel, false),
            };
            let direct = self.direct.as_ref().map(|d| Direct6 { underlay: d.underlay, fast: fast_on });
            let (peers6, ch6) = v6.apply(carrier, &self.node, &own6, &net6, leases, warned, direct).await?;
            out.peers = out.peers.max(peers6);
            out.changes.merge(ch6);
        }
        if !self.attached {
            self.attach_bpf()?;
        }
        Ok(out)
    }
}
/// vxlan peers: remote subnet -> VTEP, for leases of our VNI.
pub fn desired_vxlan(leases: &Leases, own: &Ipv4Net, network: &Ipv4Net, vni: u32, warned: &mut Warned) -> BTreeMap<Ipv4Net, VtepEntry> {
    desired(leases, own, network, warned, |l| {
        let d = l.attrs.vxlan_data()?;
        if d.vni != vni {
            anyhow::bail!("VNI {} differs from ours ({vni})", d.vni);
        }
        Ok(VtepEntry { ip: l.attrs.public_ip.octets(), mac: d.vtep_mac, _pad: [0; 2] })
    })
}

/// Makes the maps, the kernel's entries and the routes match `want`: every
/// vxlan peer goes into `weft_vteps` and its PublicIP into `weft_vtep_ips`
/// (decap accepts VXLAN from it, for its subnet's sources), and the peers
/// in `tunnel` (all but those DirectRouting reaches by plain route) get on
/// the overlay device what flanneld gives them on flannel.<VNI>
/// ([`kernel_vxlan::apply`]: permanent neighbour, FDB entry, route). weft's
/// encap redirects before the vxlan driver, so the neighbour and FDB entry
/// cost nothing per packet; they make the kernel's own path complete, for
/// when weft's programs stand aside (weftd gone past its deadline) and for
/// a flanneld started again, which finds its entries as it left them.
/// Errors on one peer are logged and counted; the others are still
/// programmed.
async fn apply_bpf(
    dp: &mut Datapath,
    nl: &Netlink,
    overlay_index: u32,
    want: &BTreeMap<Ipv4Net, VtepEntry>,
    tunnel: &BTreeMap<Ipv4Net, VtepEntry>,
) -> Result<Changes> {
    let mut ch = Changes::default();
    let have = dp.vteps()?;
    let ips: std::collections::BTreeSet<Ipv4Addr> = want.values().map(|e| Ipv4Addr::from(e.ip)).collect();
    let have_ips = dp.vtep_ips()?;
    // Map entries, then the kernel's entries, then routes on the way in;
    // the other way round on the way out: a route never points at a
    // missing entry.
    for ip in ips.difference(&have_ips) {
        ch.tally(dp.add_vtep_ip(*ip), true);
    }
    for (net, e) in want {
        if have.get(net) != Some(e) {
            ch.tally(dp.set_vtep(net, e), true);
        }
    }
    // A peer's change is its map entry's (counted above and below); of the
    // kernel's part only the errors count.
    ch.errors += kernel_vxlan::apply(nl, overlay_index, tunnel).await?.errors;
    for net in have.keys() {
        if !want.contains_key(net) {
            ch.tally(dp.remove_vtep(net), false);
        }
    }
    for ip in have_ips.difference(&ips) {
        ch.tally(dp.remove_vtep_ip(*ip), false);
    }
    Ok(ch)
}

impl Backend for VxlanBackend {
    fn lease_attrs(&self) -> &LeaseAttrs {
        &self.attrs
    }
    /// The underlay's MTU minus VXLAN's overhead: over IPv4 50 bytes, and
    /// on a dual-stack node over IPv6's 70, so that both families fit.
    fn mtu(&self) -> u32 {
        let overhead = if self.v6.is_some() { overlay6::VXLAN6_OVERHEAD } else { VXLAN_OVERHEAD };
        self.node.underlay.link.mtu - overhead
    }
    fn uses_bpf(&self) -> bool {
        self.bpf
    }
    fn start<'a>(&'a mut self, own: Subnets) -> BoxFuture<'a, Result<()>> {
        self.own6 = own.v6;
        let own4 = own.v4;
        Box::pin(async move {
            if let Some(o) = &self.overlay {
                let own4 = own4.context("our lease has no IPv4 subnet, and the network carries IPv4")?;
                self.node.nl.set_only_addr(o.index, own4.network_addr()).await?;
            }
            let carrier = if self.bpf {
                self.start_bpf()?
            } else {
                log::info!("kernel vxlan devices programmed per peer as flanneld does (neighbour, FDB, route)");
                Carrier::Kernel
            };
            self.started = Some((own4, carrier));
            Ok(())
        })
    }
    fn reconcile<'a>(&'a mut self, leases: &'a Leases, warned: &'a mut Warned) -> BoxFuture<'a, Result<Reconciled>> {
        Box::pin(self.apply(leases, warned))
    }
    fn cleanup(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let nl = &self.node.nl;
            if let Some(d) = &self.direct {
                d.cleanup(nl).await;
                if self.v6.is_some() {
                    if let Err(e) = super::peers6::sync_routes6(nl, d.underlay, &BTreeMap::new()).await {
                        log::warn!("removing DirectRouting's IPv6 routes: {e:#}");
                    }
                }
            }
            // Deleting the device removes its routes (and neighbours, FDB)
            // and detaches its links.
            if let Some(o) = &self.overlay {
                if let Err(e) = nl.delete_link(o.index).await {
                    log::warn!("{e:#}");
                }
            }
            if let Some(v6) = &self.v6 {
                v6.cleanup(&self.node).await;
            }
            if let Some((_, Carrier::Bpf { dp, .. })) = &self.started {
                if let Err(e) = dp.remove_pins() {
                    log::warn!("{e:#}");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_names_are_weft_dot_digits_only() {
        assert_eq!(overlay_name(1), "weft.1");
        assert!(is_overlay_name("weft.1") && is_overlay_name("weft.4096"));
        for other in ["weft.", "weft.1p", "weft0", "weft.x", "flannel.1", "weft-1", "xweft.1"] {
            assert!(!is_overlay_name(other), "{other}");
        }
    }
}
