//! What a router does to an IPv4 header it forwards, for the programs that
//! forward instead of the kernel.
use aya_ebpf::{bindings::__sk_buff, programs::TcContext, EbpfContext};

use crate::hdr::{at, EthIpv4, Ipv4Hdr, ETH_LEN, ETH_P_IP};

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
