//! What a router does to an IPv4 header it forwards, for the programs that
//! forward instead of the kernel.
use aya_ebpf::programs::TcContext;

use crate::hdr::ETH_LEN;

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
