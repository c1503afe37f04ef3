//! Wire headers as byte-only structs (alignment 1, no padding), so a header can
//! be read straight from packet memory and written with one `skb_store_bytes`,
//! and [`at`], the one bounds-checked way to reach them in a packet.
use aya_ebpf::programs::TcContext;

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const VXLAN_LEN: usize = 8;
/// Outer IPv4 + UDP + VXLAN + inner Ethernet: what encap inserts after the MAC header.
pub const ENCAP_LEN: usize = IP_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN;
/// Everything up to the inner IPv4 header of a VXLAN frame.
pub const VXLAN_FRAME_HDRS: usize = ETH_LEN + ENCAP_LEN;

pub const ETH_P_IP: [u8; 2] = [0x08, 0x00];
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
pub const IP6_LEN: usize = 40;
/// Everything up to the inner IPv6 header of an IPv6 VXLAN frame: outer
/// Ethernet, IPv6, UDP, VXLAN, inner Ethernet.
pub const VXLAN6_FRAME_HDRS: usize = ETH_LEN + IP6_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN;
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next header: Hop-by-Hop Options (for every router on the path to
/// read: Router Alert, jumbograms), and ICMPv6.
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMPV6: u8 = 58;
/// VXLAN flags byte: "I" (VNI valid).
pub const VXLAN_FLAG_I: u8 = 0x08;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub csum: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub csum: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct VxlanHdr {
    pub flags: u8,
    pub _rsvd: [u8; 3],
    pub vni: [u8; 3],
    pub _rsvd2: u8,
}

/// The IPv6 fixed header (extension headers, if any, follow it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl Ipv6Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }
}

/// The first word of an ICMPv6 message.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Icmp6Hdr {
    pub typ: u8,
    pub code: u8,
    pub csum: [u8; 2],
}

/// Ethernet + IPv6 fixed header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthIpv6 {
    pub eth: EthHdr,
    pub ip: Ipv6Hdr,
}

/// Ethernet + IPv6 (no extension header) + UDP: the front of a frame that
/// may be IPv6 VXLAN.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthIpv6Udp {
    pub eth: EthHdr,
    pub ip: Ipv6Hdr,
    pub udp: UdpHdr,
}

/// A received IPv6 VXLAN frame's headers, up to and including the inner
/// IPv6 header (`VXLAN6_FRAME_HDRS + IP6_LEN` bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Vxlan6Frame {
    pub eth: EthHdr,
    pub ip: Ipv6Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
    pub inner_eth: EthHdr,
    pub inner_ip: Ipv6Hdr,
}

/// Whether two IPv6 addresses are equal, without a call to memcmp/bcmp
/// (which a BPF object cannot link): four word compares folded into one.
#[inline(always)]
pub fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let w = |x: &[u8; 16], i: usize| u32::from_ne_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
    (w(a, 0) ^ w(b, 0)) | (w(a, 4) ^ w(b, 4)) | (w(a, 8) ^ w(b, 8)) | (w(a, 12) ^ w(b, 12)) == 0
}

/// Whether an IPv6 address is `::` (the "not configured" value).
#[inline(always)]
pub fn is_zero16(a: &[u8; 16]) -> bool {
    eq16(a, &[0; 16])
}

/// Ethernet + IPv4 header: the front of every frame the programs route.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthIpv4 {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
}

/// Ethernet + IPv4 (no options) + UDP: the front of a frame that may be VXLAN.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthIpv4Udp {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
    pub udp: UdpHdr,
}

/// A received VXLAN frame's headers, up to and including the inner IPv4
/// header (`VXLAN_FRAME_HDRS + IP_LEN` bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VxlanFrame {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
    pub inner_eth: EthHdr,
    pub inner_ip: Ipv4Hdr,
}

// The composite headers are the wire headers back to back, no padding.
const _: () = assert!(core::mem::size_of::<EthIpv4>() == ETH_LEN + IP_LEN);
const _: () = assert!(core::mem::size_of::<EthIpv4Udp>() == ETH_LEN + IP_LEN + UDP_LEN);
const _: () = assert!(core::mem::size_of::<VxlanFrame>() == VXLAN_FRAME_HDRS + IP_LEN);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == IP6_LEN);
const _: () = assert!(core::mem::size_of::<EthIpv6Udp>() == ETH_LEN + IP6_LEN + UDP_LEN);
const _: () = assert!(core::mem::size_of::<Vxlan6Frame>() == VXLAN6_FRAME_HDRS + IP6_LEN);

/// Plain data that may be read from (and written to) packet memory: no
/// padding, every bit pattern valid.
///
/// # Safety
/// Only for `repr(C)` types made of integers and byte arrays.
pub unsafe trait Pod: Copy {}
// SAFETY: all of them are repr(C) structs of bytes and byte arrays, or u32.
unsafe impl Pod for EthHdr {}
unsafe impl Pod for Ipv4Hdr {}
unsafe impl Pod for UdpHdr {}
unsafe impl Pod for EthIpv4 {}
unsafe impl Pod for EthIpv4Udp {}
unsafe impl Pod for VxlanFrame {}
unsafe impl Pod for Ipv6Hdr {}
unsafe impl Pod for EthIpv6 {}
unsafe impl Pod for Icmp6Hdr {}
unsafe impl Pod for EthIpv6Udp {}
unsafe impl Pod for Vxlan6Frame {}
unsafe impl Pod for u32 {}

/// A program's packet as the verifier sees it: `[data, data_end)`.
pub trait Packet {
    fn data_start(&self) -> usize;
    fn data_stop(&self) -> usize;
}

impl Packet for TcContext {
    #[inline(always)]
    fn data_start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn data_stop(&self) -> usize {
        self.data_end()
    }
}

/// The one bounds check behind every packet access: a `T` at `start + off`
/// when it ends at or before `end`. Written as the verifier wants it (packet
/// pointer + constant compared with the end pointer), and inlined so that
/// `off` is a constant at each use.
#[inline(always)]
fn bounded<T: Pod>(start: usize, off: usize, end: usize) -> Option<*mut T> {
    let p = start + off;
    if p + core::mem::size_of::<T>() > end {
        return None;
    }
    Some(p as *mut T)
}

/// The `T` at byte `off` of the packet's linear data, or None if the packet
/// is shorter. Every header the programs parse is read through here.
#[inline(always)]
pub fn at<P: Packet, T: Pod>(ctx: &P, off: usize) -> Option<&T> {
    // SAFETY: in bounds (checked in `bounded`); T is Pod.
    bounded(ctx.data_start(), off, ctx.data_stop()).map(|p| unsafe { &*p })
}

/// Makes the first `n` bytes of the frame linear (`bpf_skb_pull_data`) when
/// they are not, so that [`at`] can reach headers a driver or GRO left in
/// page fragments. Packet pointers taken before this call are invalid.
#[inline(always)]
pub fn pull(ctx: &TcContext, n: usize) {
    if ctx.data() + n > ctx.data_end() && ctx.len() as usize >= n {
        let _ = ctx.pull_data(n as u32);
    }
}

/// The 64 bytes at the front of an encapsulated frame, written in one store.
/// `align(8)` keeps the stack slot aligned for the verifier.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct VxlanFrameHdrs {
    pub outer_eth: EthHdr,
    pub outer_ip: Ipv4Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
    pub inner_eth: EthHdr,
}

/// VNI (host order, 24 bits) as it sits in the VXLAN header.
#[inline(always)]
pub fn vni_bytes(vni: u32) -> [u8; 3] {
    [(vni >> 16) as u8, (vni >> 8) as u8, vni as u8]
}

/// RFC 1071 checksum of a 20-byte IPv4 header whose `csum` field is zero.
#[inline(always)]
pub fn ipv4_csum(h: &Ipv4Hdr) -> [u8; 2] {
    // SAFETY: Ipv4Hdr is 20 bytes of plain data.
    let b: &[u8; IP_LEN] = unsafe { &*(h as *const Ipv4Hdr as *const [u8; IP_LEN]) };
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IP_LEN {
        sum += ((b[i] as u32) << 8) | b[i + 1] as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Source port for the outer UDP header from the flow hash, in the range the
/// kernel's vxlan uses by default (udp_flow_src_port over 32768..61000).
#[inline(always)]
pub fn flow_src_port(hash: u32) -> [u8; 2] {
    const MIN: u64 = 32768;
    const MAX: u64 = 61000;
    ((((hash as u64) * (MAX - MIN)) >> 32) as u16 + MIN as u16).to_be_bytes()
}
