//! Classification of a frame arriving on the underlay: VXLAN addressed to
//! this node, or not (`decap.rs`); a frame that is not ours is handed on
//! untouched.
use weft_common::{stat, DatapathConfig};

use crate::{hdr::*, maps, verdict::Drop};

/// VXLAN for us, validated: what decapsulation needs.
pub struct Ours {
    /// The inner packet's Ethernet header after decapsulation.
    pub eth: EthHdr,
    /// The inner packet's destination address.
    pub inner_daddr: [u8; 4],
}

/// Classifies the frame in `ctx` (its linear part; in TC the rest may lie
/// in fragments) whose length is `frame_len`. Ok(None): not VXLAN for us,
/// hand it to the stack untouched. Ok(Some(ours)): ours: strip
/// `VXLAN_OVERHEAD` bytes after the outer Ethernet header and give the
/// inner packet `ours.eth`. Err: VXLAN for us but unacceptable.
/// `gso`: the frame is a GSO super-packet (TC only); its length fields are
/// rewritten per segment by the kernel, so they are not checked against each other.
#[inline(always)]
pub fn classify<P: Packet>(ctx: &P, frame_len: usize, cfg: &DatapathConfig, gso: bool) -> Result<Option<Ours>, Drop> {
    let Some(EthIpv4Udp { eth, ip, udp }) = at(ctx, 0) else {
        return Ok(None);
    };
    // Only option-less, unfragmented IPv4/UDP to our address can be ours;
    // anything else belongs to the stack (which reassembles fragments).
    if eth.proto != ETH_P_IP || ip.vihl != 0x45 || ip.proto != IPPROTO_UDP || ip.frag[0] & 0x3f != 0 || ip.frag[1] != 0 || ip.daddr != cfg.local_ip {
        return Ok(None);
    }
    if udp.dport != cfg.port.to_be_bytes() {
        return Ok(None);
    }
    // From here on the frame is addressed to our VXLAN port: nobody else
    // will take it, so anything wrong is a counted drop.
    let Some(VxlanFrame { vxlan: vx, inner_eth, inner_ip, .. }) = at(ctx, 0) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if vx.flags & VXLAN_FLAG_I == 0 || vx.vni != vni_bytes(cfg.vni) {
        return Err(Drop(stat::DROP_WRONG_VNI));
    }
    if inner_eth.proto != ETH_P_IP {
        return Err(Drop(stat::DROP_NOT_IPV4));
    }
    let outer_len = u16::from_be_bytes(ip.tot_len) as usize;
    let udp_len = u16::from_be_bytes(udp.len) as usize;
    let inner_len = u16::from_be_bytes(inner_ip.tot_len) as usize;
    // Lengths must agree with each other and, unless GSO (whose length
    // fields the kernel rewrites per segment), with the frame itself: a
    // truncated frame is never decapsulated.
    if inner_ip.vihl >> 4 != 4
        || inner_ip.vihl & 0xf < 5
        || (!gso && (udp_len + IP_LEN != outer_len || inner_len + ENCAP_LEN > outer_len || ETH_LEN + outer_len > frame_len))
    {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    // Anti-spoofing, which flannel lacks: only a lease holder's VTEP may
    // send us VXLAN, and only for inner sources inside its own subnet.
    if !maps::is_vtep(ip.saddr) {
        return Err(Drop(stat::DROP_UNKNOWN_VTEP));
    }
    match maps::vtep_for(inner_ip.saddr) {
        Some(v) if v.ip == ip.saddr => {}
        _ => return Err(Drop(stat::DROP_SPOOFED)),
    }
    // The inner packet enters the overlay device, whose MAC is our VtepMAC.
    Ok(Some(Ours { eth: EthHdr { dst: cfg.vtep_mac, src: inner_eth.src, proto: ETH_P_IP }, inner_daddr: inner_ip.daddr }))
}
