//! The IPv6 overlay (dual stack, flannel's `flannel-v6.<VNI>`), whose
//! outer headers the kernel writes: `weft-v6.<VNI>` is a kernel vxlan
//! device over the IPv6 underlay (VNI, port 8472, our PublicIPv6,
//! nolearning, NOARP) with one FDB entry per peer (`<peer v6 VtepMAC> dst
//! <peer PublicIPv6>`, as flannel programs its device). Outer UDP over IPv6
//! needs a real checksum, which a BPF-pushed outer header cannot keep on
//! GSO packets (`bpf_skb_adjust_room` marks SKB_GSO_UDP_TUNNEL, never
//! _CSUM); the vxlan driver computes it and keeps tunnel GSO.
//!
//! Why not an external (collect_md) device with `bpf_skb_set_tunnel_key`:
//! such a device always opens an IPv4 socket on its port too
//! (`vxlan_sock_add`), whose receive flags differ from `weft.<VNI>`'s, so
//! on a dual-stack node it cannot come up beside `weft.<VNI>` on port 8472
//! (measured on 6.18: `ip link set weft-v6.1 up` fails with EADDRINUSE).
//! A plain IPv6 vxlan device opens only an IPv6 socket.
//!
//! - [`encap`] (`weft_encap6`, TC egress of weft-v6): finds the peer in
//!   `weft_vteps6` and writes the inner Ethernet header (our v6 VtepMAC to
//!   the peer's), so the device's FDB entry for the peer's MAC sends it to
//!   the peer's PublicIPv6. No peer: dropped, `drop_no_lease`.
//! - [`underlay`] (inside `weft_decap`, TC ingress of the underlay): IPv6
//!   VXLAN to our PublicIPv6 and port is validated (VNI, lengths, the
//!   sender is a peer's PublicIPv6, the inner source lies in that peer's
//!   IPv6 subnet), marked [`OVERLAY_MARK`] and left to the device's kernel
//!   socket (`decap_kernel`); what fails is dropped, counted by reason.
//! - [`overlay_in`] (`weft_overlay_in6`, TC ingress of weft-v6): only
//!   marked packets enter (the rest reached the socket past `weft_decap`:
//!   `drop_unvalidated`); a registered pod's packet goes straight into it
//!   (hop limit - 1, `decap_to_pod`), the rest to the stack (`decap`).
//! - [`from_pod`] (inside `weft_from_pod`): a registered pod's IPv6 packet
//!   to a peer subnet: hop limit - 1 and redirected to weft-v6's egress,
//!   where `weft_encap6` runs; to a host-gw peer's IPv6 subnet
//!   (`weft_hostgw6`): the host-gw fast path's forwarding (`fwd.rs`).
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
    EbpfContext,
};
use weft_common::{stat, DatapathConfig, PodEntry, OVERLAY_MARK};

use crate::{
    fwd,
    hdr::*,
    l3, maps,
    verdict::{Drop, Outcome, Verdict},
};

/// Offset of the hop limit in a frame with an IPv6 header after Ethernet.
const HOP_OFF: usize = ETH_LEN + 7;

/// Not for the IPv6 path: on unchanged, uncounted.
const ON: Outcome = Ok(Verdict::Pass(None));

#[inline(always)]
fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: ctx wraps a valid __sk_buff.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_size }
}

/// `weft_encap6`: the inner Ethernet header for the peer that holds the
/// destination; the vxlan device adds the rest.
#[inline(always)]
pub fn encap(ctx: &TcContext) -> Outcome {
    let Some(cfg6) = maps::config6() else {
        return Err(Drop(stat::DROP_NO_CONFIG));
    };
    pull(ctx, ETH_LEN + IP6_LEN);
    let Some(EthIpv6 { eth, ip }) = at(ctx, 0) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if eth.proto != ETH_P_IPV6 {
        return Err(Drop(stat::DROP_NOT_IPV6));
    }
    // A non-GSO packet must be as long as its header says.
    let payload = u16::from_be_bytes(ip.payload_len) as u32;
    if ip.version() != 6 || (gso_size(ctx) == 0 && payload + (ETH_LEN + IP6_LEN) as u32 > ctx.len()) {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    let Some(vtep) = maps::vtep6_for(ip.daddr) else {
        return Err(Drop(stat::DROP_NO_LEASE));
    };
    let h = EthHdr { dst: vtep.mac, src: cfg6.vtep_mac, proto: ETH_P_IPV6 };
    if ctx.store(0, &h, 0).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    Ok(Verdict::Pass(Some(stat::ENCAP)))
}

/// Part of `weft_decap`, first: Some(outcome) for IPv6 VXLAN to our
/// PublicIPv6 and port (validated and marked for the IPv6 overlay device's
/// socket, or dropped for a reason); None for every other frame, which the
/// IPv4 path then handles exactly as before (IPv4 frames are not touched
/// here: the Ethernet type is checked first).
#[inline(always)]
pub fn underlay(ctx: &TcContext, frame_len: u32, cfg: &DatapathConfig, gso: bool) -> Option<Outcome> {
    match classify(ctx, frame_len as usize, cfg, gso) {
        Ok(false) => None,
        Ok(true) => {
            ctx.set_mark(OVERLAY_MARK);
            Some(Ok(Verdict::Pass(Some(stat::DECAP_KERNEL))))
        }
        Err(d) => Some(Err(d)),
    }
}

/// Ok(false): not IPv6 VXLAN for us. Ok(true): ours and acceptable. Err:
/// ours but dropped for that reason.
#[inline(always)]
fn classify(ctx: &TcContext, frame_len: usize, cfg: &DatapathConfig, gso: bool) -> Result<bool, Drop> {
    match at::<_, EthHdr>(ctx, 0) {
        Some(eth) if eth.proto == ETH_P_IPV6 => {}
        _ => return Ok(false),
    }
    let Some(cfg6) = maps::config6() else {
        return Ok(false);
    };
    let local = cfg6.local_ip;
    let port = cfg.port.to_be_bytes();
    pull(ctx, VXLAN6_FRAME_HDRS + IP6_LEN);
    let Some(EthIpv6Udp { ip, udp, .. }) = at(ctx, 0) else {
        return Ok(false);
    };
    // UDP right after the fixed header (the kernel's vxlan sends no
    // extension headers), to our PublicIPv6 and port; anything else is
    // the stack's.
    if ip.version() != 6 || ip.next != IPPROTO_UDP || udp.dport != port || !eq16(&ip.daddr, &local) {
        return Ok(false);
    }
    let Some(Vxlan6Frame { ip, udp, vxlan: vx, inner_eth, inner_ip, .. }) = at(ctx, 0) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if vx.flags & VXLAN_FLAG_I == 0 || vx.vni != vni_bytes(cfg.vni) {
        return Err(Drop(stat::DROP_WRONG_VNI));
    }
    if inner_eth.proto != ETH_P_IPV6 {
        return Err(Drop(stat::DROP_NOT_IPV6));
    }
    let outer_payload = u16::from_be_bytes(ip.payload_len) as usize;
    let udp_len = u16::from_be_bytes(udp.len) as usize;
    let inner_payload = u16::from_be_bytes(inner_ip.payload_len) as usize;
    // Lengths agree with each other and with the frame (not for GSO, whose
    // length fields the kernel rewrites per segment).
    if inner_ip.version() != 6
        || (!gso
            && (udp_len != outer_payload || inner_payload + IP6_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN > udp_len || ETH_LEN + IP6_LEN + outer_payload > frame_len))
    {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    // Anti-spoofing: a peer's PublicIPv6, for sources in its own subnet.
    if !maps::is_vtep6(&ip.saddr) {
        return Err(Drop(stat::DROP_UNKNOWN_VTEP));
    }
    match maps::vtep6_for(inner_ip.saddr) {
        Some(v) if eq16(&v.ip, &ip.saddr) => Ok(true),
        _ => Err(Drop(stat::DROP_SPOOFED)),
    }
}

/// `weft_overlay_in6`: what `weft_decap` validated and marked, after the
/// kernel's vxlan socket decapsulated it (GRO merged, outer checksum
/// checked); anything else is dropped.
#[inline(always)]
pub fn overlay_in(ctx: &TcContext) -> Outcome {
    // SAFETY: ctx wraps a valid __sk_buff.
    if unsafe { (*(ctx.as_ptr() as *const __sk_buff)).mark } != OVERLAY_MARK {
        return Err(Drop(stat::DROP_UNVALIDATED));
    }
    ctx.set_mark(0);
    pull(ctx, ETH_LEN + IP6_LEN);
    let Some(eth) = at::<_, EthHdr>(ctx, 0) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if eth.proto != ETH_P_IPV6 {
        return Err(Drop(stat::DROP_NOT_IPV6));
    }
    let Some(ip) = at::<_, Ipv6Hdr>(ctx, ETH_LEN) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if ip.version() != 6 {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    let hop = ip.hop_limit;
    // A registered pod, unless the hop limit expires here (the stack then
    // answers time-exceeded).
    match maps::pod6(&ip.daddr) {
        Some(pod) if hop > 1 => into_pod(ctx, &pod, hop, stat::DECAP_TO_POD),
        _ => Ok(Verdict::Pass(Some(stat::DECAP))),
    }
}

/// Hop limit - 1, the gateway's MACs, and `bpf_redirect_peer` into the
/// pod, counted under `counter` (`decap_to_pod` here, `routed_to_pod` for
/// a host-gw peer's packet, `to_pod.rs`). The caller has checked `hop > 1`.
#[inline(always)]
pub fn into_pod(ctx: &TcContext, pod: &PodEntry, hop: u8, counter: u32) -> Outcome {
    let eth = EthHdr { dst: pod.pod_mac, src: pod.gw_mac, proto: ETH_P_IPV6 };
    if ctx.store(HOP_OFF, &(hop - 1), 0).is_err() || ctx.store(0, &eth, 0).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect_peer(pod.host_ifindex, 0) as i32 };
    Ok(Verdict::Redirect { action, stat: Some(counter) })
}

/// Part of `weft_from_pod`, for an IPv6 frame: the registered pod's
/// routed packet (from its own address, to its gateway MAC) for a peer's
/// IPv6 subnet gets hop limit - 1 (the hop the host would make; IPv6 has
/// no header checksum) and goes to the IPv6 overlay device's egress,
/// whose `weft_encap6` does the rest (and counts it); for a host-gw peer's
/// IPv6 subnet it is forwarded out of the underlay (`fwd::forward6`, counted
/// there). Everything else goes on unchanged: hop limit <= 1 (the stack
/// answers time-exceeded), other sources and destinations, no IPv6 overlay
/// configured.
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> Outcome {
    let Some(EthIpv6 { eth, ip }) = at(ctx, 0) else {
        return ON;
    };
    if ip.version() != 6 {
        return ON;
    }
    let Some(pod) = maps::pod6(&ip.saddr) else {
        return ON;
    };
    if eth.dst != pod.gw_mac {
        return ON;
    }
    // A peer's IPv6 subnet routed host-gw style: forwarded as `weft_fwd`
    // forwards it on the bridge, by the same rules (`fwd::forward6`).
    if let Some(peer) = maps::hostgw6_for(ip.daddr) {
        let Some(ip) = l3::ipv6_forwardable(ctx) else {
            return ON;
        };
        // SAFETY: ctx wraps a valid __sk_buff.
        let in_ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
        return fwd::forward6(ctx, in_ifindex, ip, peer);
    }
    if ip.hop_limit <= 1 || maps::vtep6_for(ip.daddr).is_none() {
        return ON;
    }
    let Some(cfg6) = maps::config6() else {
        return ON;
    };
    let (hop, overlay) = (ip.hop_limit, cfg6.overlay_ifindex);
    if ctx.store(HOP_OFF, &(hop - 1), 0).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    // SAFETY: plain helper call (egress of the overlay device).
    let action = unsafe { bpf_redirect(overlay, 0) as i32 };
    Ok(Verdict::Redirect { action, stat: None })
}
