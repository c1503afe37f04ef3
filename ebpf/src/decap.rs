//! Decapsulation of VXLAN addressed to this node. The parse is shared by the
//! TC and XDP programs; a frame that is not ours is handed on untouched.
use weft_common::{stat, DatapathConfig};

use crate::{hdr::*, maps};

/// What to do with a frame arriving on the underlay.
pub enum Verdict {
    /// Not VXLAN for us: hand it to the stack untouched.
    Pass,
    /// VXLAN for us but unacceptable: drop, counted under this reason.
    Drop(u32),
    /// Ours: strip `VXLAN_OVERHEAD` bytes after the outer Ethernet header and
    /// give the inner packet this Ethernet header.
    Decap(EthHdr),
}

/// Classifies the frame whose first bytes are `[data, end)` (the linear
/// part; in TC the rest may lie in fragments) and whose length is
/// `frame_len`. Every read is bounds-checked.
/// `gso`: the frame is a GSO super-packet (TC only); its length fields are
/// rewritten per segment by the kernel, so they are not checked against each other.
#[inline(always)]
pub fn classify(data: usize, end: usize, frame_len: usize, cfg: &DatapathConfig, gso: bool) -> Verdict {
    if data + ETH_LEN + IP_LEN + UDP_LEN > end {
        return Verdict::Pass;
    }
    // SAFETY: bounds checked just above.
    let eth = unsafe { &*(data as *const EthHdr) };
    let ip = unsafe { &*((data + ETH_LEN) as *const Ipv4Hdr) };
    // Only option-less, unfragmented IPv4/UDP to our address can be ours;
    // anything else belongs to the stack (which reassembles fragments).
    if eth.proto != ETH_P_IP
        || ip.vihl != 0x45
        || ip.proto != IPPROTO_UDP
        || ip.frag[0] & 0x3f != 0
        || ip.frag[1] != 0
        || ip.daddr != cfg.local_ip
    {
        return Verdict::Pass;
    }
    let udp = unsafe { &*((data + ETH_LEN + IP_LEN) as *const UdpHdr) };
    if udp.dport != cfg.port.to_be_bytes() {
        return Verdict::Pass;
    }
    // From here on the frame is addressed to our VXLAN port: nobody else
    // will take it, so anything wrong is a counted drop.
    if data + VXLAN_FRAME_HDRS + IP_LEN > end {
        return Verdict::Drop(stat::DROP_MALFORMED);
    }
    let vx = unsafe { &*((data + ETH_LEN + IP_LEN + UDP_LEN) as *const VxlanHdr) };
    if vx.flags & VXLAN_FLAG_I == 0 || vx.vni != vni_bytes(cfg.vni) {
        return Verdict::Drop(stat::DROP_WRONG_VNI);
    }
    let inner_eth = unsafe { &*((data + ETH_LEN + ENCAP_LEN - ETH_LEN) as *const EthHdr) };
    if inner_eth.proto != ETH_P_IP {
        return Verdict::Drop(stat::DROP_NOT_IPV4);
    }
    let inner_ip = unsafe { &*((data + VXLAN_FRAME_HDRS) as *const Ipv4Hdr) };
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
        return Verdict::Drop(stat::DROP_MALFORMED);
    }
    // Anti-spoofing, which flannel lacks: only a lease holder's VTEP may
    // send us VXLAN, and only for inner sources inside its own subnet.
    if !maps::is_vtep(ip.saddr) {
        return Verdict::Drop(stat::DROP_UNKNOWN_VTEP);
    }
    match maps::vtep_for(inner_ip.saddr) {
        Some(v) if v.ip == ip.saddr => {}
        _ => return Verdict::Drop(stat::DROP_SPOOFED),
    }
    // The inner packet enters the overlay device, whose MAC is our VtepMAC.
    Verdict::Decap(EthHdr { dst: cfg.vtep_mac, src: inner_eth.src, proto: ETH_P_IP })
}

#[inline(always)]
pub fn count(idx: u32, len: u32) {
    maps::count(idx, len)
}
