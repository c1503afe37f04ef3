//! TC egress on the overlay device (`weft.<VNI>`): every IPv4 packet the
//! kernel routed to a remote pod subnet is wrapped in VXLAN exactly as
//! flannel's kernel vxlan device would, then redirected out of the underlay.
use aya_ebpf::{
    bindings::{
        __sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::{bpf_get_hash_recalc, bpf_redirect_neigh},
    programs::TcContext,
    EbpfContext,
};
use weft_common::{cfg_flags, stat, VtepEntry};

use crate::{
    csum,
    hdr::*,
    maps,
    verdict::{Drop, Outcome, Verdict},
};

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner L2 header length, in the top byte.
const fn encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}

/// Flags of the single `bpf_skb_adjust_room` call. FIXED_GSO belongs here, in
/// the flags argument: the inner MSS was already sized for the overlay MTU
/// (underlay MTU - 50), so GSO segments must keep it rather than shrink by 50.
const ADJ_FLAGS: u64 = BPF_F_ADJ_ROOM_FIXED_GSO as u64
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
    | encap_l2(ETH_LEN as u64);

/// Encapsulates the frame in `ctx` for the VTEP that holds its destination:
/// `known` when the caller already looked it up (weft_from_pod), else
/// looked up here. One LPM lookup per packet either way.
#[inline(always)]
pub fn run(ctx: &TcContext, known: Option<&'static VtepEntry>) -> Outcome {
    let len = ctx.len();
    let Some(cfg) = maps::config() else {
        return Err(Drop(stat::DROP_NO_CONFIG));
    };
    let Some(EthIpv4 { eth, ip }) = at(ctx, 0) else {
        return Err(Drop(stat::DROP_MALFORMED));
    };
    if eth.proto != ETH_P_IP {
        return Err(Drop(stat::DROP_NOT_IPV4));
    }
    if ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    // A pod's non-GSO packet must be as long as its header says (a raw
    // socket can claim more): a truncated packet is not sent on.
    // SAFETY: ctx wraps a valid __sk_buff.
    let gso_size = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_size };
    let tot_len = u16::from_be_bytes(ip.tot_len) as u32;
    if gso_size == 0 && (tot_len < IP_LEN as u32 || tot_len + ETH_LEN as u32 > len) {
        return Err(Drop(stat::DROP_MALFORMED));
    }
    let Some(vtep) = known.or_else(|| maps::vtep_for(ip.daddr)) else {
        if crate::klog::on() {
            aya_log_ebpf::debug!(ctx, "weft_encap: no lease covers {:i}: dropped", u32::from_be_bytes(ip.daddr));
        }
        return Err(Drop(stat::DROP_NO_LEASE));
    };
    if gso_size == 0 && len - ETH_LEN as u32 + ENCAP_LEN as u32 > cfg.underlay_mtu {
        if crate::klog::on() {
            aya_log_ebpf::debug!(
                ctx,
                "weft_encap: {} bytes to {:i} exceed the underlay MTU {} once encapsulated: dropped",
                len,
                u32::from_be_bytes(ip.daddr),
                cfg.underlay_mtu
            );
        }
        return Err(Drop(stat::DROP_TOO_BIG));
    }

    let inner_ip_len = len - ETH_LEN as u32;
    let mut h = VxlanFrameHdrs {
        // The neighbour lookup in bpf_redirect_neigh fills both MACs.
        outer_eth: EthHdr { dst: [0; 6], src: [0; 6], proto: ETH_P_IP },
        outer_ip: Ipv4Hdr {
            vihl: 0x45,
            // Copy ECN bits as the kernel's tunnels do (ip_tunnel_ecn_encap).
            tos: ip.tos & 0x03,
            tot_len: ((inner_ip_len + ENCAP_LEN as u32) as u16).to_be_bytes(),
            id: [0, 0],
            frag: [0x40, 0x00], // DF: never fragment the outer packet
            ttl: 64,
            proto: IPPROTO_UDP,
            csum: [0, 0],
            saddr: cfg.local_ip,
            daddr: vtep.ip,
        },
        udp: UdpHdr {
            // SAFETY: ctx wraps a valid __sk_buff.
            sport: flow_src_port(unsafe { bpf_get_hash_recalc(ctx.as_ptr() as *mut _) }),
            dport: cfg.port.to_be_bytes(),
            len: ((inner_ip_len + (UDP_LEN + VXLAN_LEN + ETH_LEN) as u32) as u16).to_be_bytes(),
            csum: [0, 0],
        },
        vxlan: VxlanHdr { flags: VXLAN_FLAG_I, _rsvd: [0; 3], vni: vni_bytes(cfg.vni), _rsvd2: 0 },
        inner_eth: EthHdr { dst: vtep.mac, src: cfg.vtep_mac, proto: ETH_P_IP },
    };
    h.outer_ip.csum = ipv4_csum(&h.outer_ip);
    // GSO packets keep 0: segmentation copies the outer header into every
    // segment (BPF cannot ask for SKB_GSO_UDP_TUNNEL_CSUM).
    if cfg.flags & cfg_flags::UDP_CSUM != 0 && gso_size == 0 {
        if let Some(c) = csum::outer_udp_lco(&h, ctx) {
            h.udp.csum = c;
        }
    }
    let underlay = cfg.underlay_ifindex;

    if ctx.adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, ADJ_FLAGS).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    if ctx.store(0, &h, 0).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    // SAFETY: NULL params = look up the next hop for the outer destination.
    let action = unsafe { bpf_redirect_neigh(underlay, core::ptr::null_mut(), 0, 0) as i32 };
    Ok(Verdict::Redirect { action, stat: Some(stat::ENCAP) })
}
