//! Outer UDP checksum from headers alone (the kernel's "local checksum
//! offload", include/linux/skbuff.h lco_csum): a valid inner IPv4 header sums to
//! zero, and a valid inner TCP/UDP segment sums to the complement of its
//! pseudo-header, whether its checksum is filled in now or later by offload.
//! So the outer checksum needs only the bytes we write plus a few inner header
//! fields. Where the inner checksum cannot be relied on, the answer is None
//! and the outer checksum stays 0, which receivers accept for IPv4.
use crate::hdr::*;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;

#[inline(always)]
fn add_bytes(sum: u32, b: &[u8]) -> u32 {
    let mut s = sum;
    let mut i = 0;
    while i + 1 < b.len() {
        s += ((b[i] as u32) << 8) | b[i + 1] as u32;
        i += 2;
    }
    s
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The outer UDP checksum of a non-GSO VXLAN frame whose headers are `h` and
/// whose inner packet (still unencapsulated) is in `ctx` after its Ethernet
/// header; None when it cannot be computed from headers.
#[inline(always)]
pub fn outer_udp_lco<P: Packet>(h: &VxlanFrameHdrs, ctx: &P) -> Option<[u8; 2]> {
    let EthIpv4Udp { ip, udp, .. } = at(ctx, 0)?;
    if ip.vihl != 0x45 || ip.frag[0] & 0x3f != 0 || ip.frag[1] != 0 {
        return None;
    }
    let l4_len = u16::from_be_bytes(ip.tot_len).checked_sub(IP_LEN as u16)?;
    // Sum of the inner L4 segment once its checksum is valid.
    let inner_l4 = match ip.proto {
        IPPROTO_ICMP => 0,
        IPPROTO_TCP | IPPROTO_UDP => {
            if ip.proto == IPPROTO_UDP && udp.csum == [0, 0] {
                return None; // sender chose no checksum: nothing to lean on
            }
            let mut p = add_bytes(0, &ip.saddr);
            p = add_bytes(p, &ip.daddr);
            p += ip.proto as u32 + l4_len as u32;
            !fold(p) as u32
        }
        _ => return None,
    };
    let mut s = add_bytes(0, &h.outer_ip.saddr);
    s = add_bytes(s, &h.outer_ip.daddr);
    s += IPPROTO_UDP as u32 + u16::from_be_bytes(h.udp.len) as u32;
    s = add_bytes(s, &h.udp.sport);
    s = add_bytes(s, &h.udp.dport);
    s = add_bytes(s, &h.udp.len);
    s = add_bytes(s, &[h.vxlan.flags, h.vxlan._rsvd[0], h.vxlan._rsvd[1], h.vxlan._rsvd[2]]);
    s = add_bytes(s, &[h.vxlan.vni[0], h.vxlan.vni[1], h.vxlan.vni[2], h.vxlan._rsvd2]);
    s = add_bytes(s, &h.inner_eth.dst);
    s = add_bytes(s, &h.inner_eth.src);
    s = add_bytes(s, &h.inner_eth.proto);
    s += inner_l4;
    let c = !fold(s);
    Some(if c == 0 { 0xffff } else { c }.to_be_bytes())
}
