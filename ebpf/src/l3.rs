//! What a router does to an IPv4 or IPv6 header it forwards, for the
//! programs that forward instead of the kernel.
use aya_ebpf::{bindings::__sk_buff, programs::TcContext, EbpfContext};

use crate::hdr::{at, EthIpv4, EthIpv6, Icmp6Hdr, Ipv4Hdr, Ipv6Hdr, ETH_LEN, ETH_P_IP, ETH_P_IPV6, IP6_LEN, IPPROTO_ICMPV6};

/// `skb->pkt_type` of a frame addressed to this host's MAC.
const PACKET_HOST: u32 = 0;

/// A frame the host would route: addressed to this host's MAC and holding
/// IPv4 (version 4, header length at least 20). Its IPv4 header (copied)
/// and the interface it came in by; None for anything else.
#[inline(always)]
pub fn routed_ipv4(ctx: &TcContext) -> Option<(Ipv4Hdr, u32)> {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: ctx wraps a valid __sk_buff.
    let (pkt_type, in_ifindex) = unsafe { ((*skb).pkt_type, (*skb).ifindex) };
    if pkt_type != PACKET_HOST {
        return None;
    }
    let EthIpv4 { eth, ip } = at(ctx, 0)?;
    if eth.proto != ETH_P_IP || ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return None;
    }
    Some((*ip, in_ifindex))
}

/// Offset of the IPv4 TTL byte and of the header checksum in the frame.
const TTL_OFF: usize = ETH_LEN + 8;
const CSUM_OFF: usize = ETH_LEN + 10;

/// TTL - 1 with the header checksum fixed up incrementally (RFC 1624), as
/// ip_forward does. The caller has checked `ttl > 1`.
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, ttl: u8, proto: u8) -> Result<(), ()> {
    // The helper takes the 16-bit word as it sits in the packet.
    let old = u16::from_ne_bytes([ttl, proto]) as u64;
    let new = u16::from_ne_bytes([ttl - 1, proto]) as u64;
    ctx.l3_csum_replace(CSUM_OFF, old, new, 2).map_err(|_| ())?;
    ctx.store(TTL_OFF, &(ttl - 1), 0).map_err(|_| ())
}

/// A frame the host would route over IPv6: addressed to this host's MAC
/// and [`ipv6_forwardable`]. Its IPv6 fixed header (in the packet) and the
/// interface it came in by; None for anything else.
#[inline(always)]
pub fn routed_ipv6(ctx: &TcContext) -> Option<(&Ipv6Hdr, u32)> {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: ctx wraps a valid __sk_buff.
    let (pkt_type, in_ifindex) = unsafe { ((*skb).pkt_type, (*skb).ifindex) };
    if pkt_type != PACKET_HOST {
        return None;
    }
    Some((ipv6_forwardable(ctx)?, in_ifindex))
}

/// The IPv6 fixed header (in the packet) of a frame that holds a packet a
/// router may forward: version 6, both addresses global unicast (not
/// multicast, link-local, unspecified or loopback: those never leave their
/// link, and ip6_forward refuses such sources), and not Neighbor Discovery
/// (ICMPv6 133-137, the link's own business, also when unicast). None: the
/// stack's. Extension headers are not parsed (routing does not read them);
/// the callers leave Hop-by-Hop Options, which every router reads, to the
/// stack.
#[inline(always)]
pub fn ipv6_forwardable(ctx: &TcContext) -> Option<&Ipv6Hdr> {
    let EthIpv6 { eth, ip } = at(ctx, 0)?;
    if eth.proto != ETH_P_IPV6 || ip.version() != 6 || !global6(&ip.saddr) || !global6(&ip.daddr) {
        return None;
    }
    if ip.next == IPPROTO_ICMPV6 {
        // Its type must be readable to tell ND apart; else the stack's.
        let icmp = at::<_, Icmp6Hdr>(ctx, ETH_LEN + IP6_LEN)?;
        if icmp.typ >= ND_FIRST && icmp.typ <= ND_LAST {
            return None;
        }
    }
    Some(ip)
}

/// ICMPv6 Neighbor Discovery: Router Solicitation (133) .. Redirect (137).
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;

/// Whether `a` may be forwarded to or from: not multicast (ff00::/8), not
/// link-local (fe80::/10), not `::` or `::1`. Byte tests with one value
/// live at a time (few registers, no spills).
#[inline(always)]
fn global6(a: &[u8; 16]) -> bool {
    match a[0] {
        0xff => false,
        0xfe => a[1] & 0xc0 != 0x80,
        0 => a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9] | a[10] | a[11] | a[12] | a[13] | a[14] != 0 || a[15] > 1,
        _ => true,
    }
}

/// Offset of the IPv6 hop limit in the frame.
const HOP_OFF: usize = ETH_LEN + 7;

/// Hop limit - 1, as ip6_forward does (IPv6 has no header checksum, and
/// the upper layers' pseudo-header leaves the hop limit out). The caller
/// has checked `hop > 1`.
#[inline(always)]
pub fn dec_hop_limit(ctx: &TcContext, hop: u8) -> Result<(), ()> {
    ctx.store(HOP_OFF, &(hop - 1), 0).map_err(|_| ())
}
