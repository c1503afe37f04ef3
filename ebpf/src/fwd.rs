//! TC ingress on the pod-facing bridge (`cni0`): the host-gw fast path.
//!
//! A pod's IPv4 packet to a peer's subnet that weft routes host-gw style
//! (`weft_hostgw`), or its IPv6 packet to a peer's IPv6 subnet routed via
//! the peer's PublicIPv6 (`weft_hostgw6`, [`forward6`]), is forwarded here, as the kernel would forward it, but
//! without the trip through the host's forwarding path: the FIB gives the
//! next hop and its MAC, the TTL goes down by one, and the packet leaves by
//! the underlay. The program only ever agrees with the kernel: it forwards
//! when the FIB's own answer is the route weft programmed (same gateway,
//! same interface) and the packet fits; on anything else (TTL about to
//! expire, another route, MTU, forwarding off, a multicast frame, a
//! destination that is not a peer subnet) the packet goes to the stack
//! unchanged, which forwards it, or answers with the right ICMP error.
//!
//! What the fast path skips is netfilter's FORWARD and POSTROUTING hooks for
//! pod-to-peer-pod traffic only (never for other destinations, so
//! masquerading to the outside is untouched). `--no-fast-path` turns it off.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, bpf_redir_neigh, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
    EbpfContext,
};
use weft_common::{stat, HostGw6Entry, HostGwEntry};

use crate::{
    hdr::*,
    l3, maps,
    verdict::{Drop, Outcome, Verdict},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Not peer traffic: to the stack, uncounted.
const NOT_PEER: Outcome = Ok(Verdict::Pass(None));
/// Peer traffic the fast path declined: to the stack, counted.
const TO_STACK: Outcome = Ok(Verdict::Pass(Some(stat::FWD_STACK)));

#[inline(always)]
pub fn run(ctx: &TcContext) -> Outcome {
    if let Some((ip, in_ifindex)) = l3::routed_ipv4(ctx) {
        let Some(peer) = maps::hostgw_for(ip.daddr) else {
            return NOT_PEER;
        };
        return forward(ctx, in_ifindex, peer);
    }
    // IPv6 (dual stack): multicast, link-local and ND never get here.
    let Some((ip, in_ifindex)) = l3::routed_ipv6(ctx) else {
        return NOT_PEER;
    };
    match maps::hostgw6_for(ip.daddr) {
        Some(peer) => forward6(ctx, in_ifindex, ip, peer),
        None => NOT_PEER,
    }
}

/// Forwards the IPv4 packet in the frame to `peer` (a routed peer subnet
/// holds its destination), or hands it to the stack. The frame's headers
/// are read again here, bounds-checked.
#[inline(always)]
pub fn forward(ctx: &TcContext, in_ifindex: u32, peer: &HostGwEntry) -> Outcome {
    let Some(ip) = at::<_, Ipv4Hdr>(ctx, ETH_LEN) else {
        return TO_STACK;
    };
    // TTL 1 expires here: the stack sends the ICMP time-exceeded.
    if ip.ttl <= 1 {
        if crate::klog::on() {
            aya_log_ebpf::debug!(ctx, "weft_fwd: TTL {} to {:i}: to the stack (time-exceeded)", ip.ttl, u32::from_be_bytes(ip.daddr));
        }
        return TO_STACK;
    }
    let (ttl, proto) = (ip.ttl, ip.proto);

    // SAFETY: an all-zero bpf_fib_lookup is a valid "nothing set" request.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = proto;
    fib.ifindex = in_ifindex;
    // tot_len stays 0: the kernel then checks this skb against the egress
    // MTU itself, GSO-aware (a GSO super-packet's IP length exceeds the MTU).
    fib.__bindgen_anon_2.tos = ip.tos;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.saddr);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.daddr);
    let fib_dst = ip.daddr;
    // SAFETY: helper call with a stack buffer of the size we pass.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut fib, core::mem::size_of::<FibParams>() as i32, 0) } as u32;
    // SAFETY: reading the unions the kernel filled in.
    let (gw, out) = unsafe { (fib.__bindgen_anon_4.ipv4_dst, fib.ifindex) };
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || out != peer.ifindex || gw != u32::from_ne_bytes(peer.gateway) {
        if crate::klog::on() {
            aya_log_ebpf::debug!(
                ctx,
                "weft_fwd: FIB answer {} (0 ok, 7 no neighbour) via #{} for {:i} is not weft's route: to the stack",
                rc,
                out,
                u32::from_be_bytes(fib_dst)
            );
        }
        return TO_STACK;
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH {
        // Without a neighbour the kernel skipped its MTU check: do it here.
        let mut mtu: u32 = 0;
        // SAFETY: helper call; mtu is an out-parameter on our stack.
        if unsafe { bpf_check_mtu(ctx.as_ptr(), out, &mut mtu, 0, 0) } != 0 {
            return TO_STACK;
        }
    }

    if l3::dec_ttl(ctx, ttl, proto).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    if rc == BPF_FIB_LKUP_RET_SUCCESS {
        // SAFETY: reading the MACs the kernel filled in on success.
        let macs = unsafe { fib.__bindgen_anon_6.__bindgen_anon_2 };
        let hdr = EthHdr { dst: macs.dmac, src: macs.smac, proto: ETH_P_IP };
        if ctx.store(0, &hdr, 0).is_err() {
            return Err(Drop(stat::DROP_HELPER));
        }
        // SAFETY: plain helper call.
        let action = unsafe { bpf_redirect(out, 0) as i32 };
        return Ok(Verdict::Redirect { action, stat: Some(stat::FWD) });
    }
    // No neighbour entry yet: the kernel resolves it (ARP) and sends.
    let mut nh = bpf_redir_neigh { nh_family: AF_INET as u32, __bindgen_anon_1: unsafe { core::mem::zeroed() } };
    nh.__bindgen_anon_1.ipv4_nh = gw;
    // SAFETY: helper call with a stack buffer of the size we pass.
    let action = unsafe { bpf_redirect_neigh(out, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) as i32 };
    Ok(Verdict::Redirect { action, stat: Some(stat::FWD) })
}

/// The gateway of `peer` as the FIB lookup's four words. `HostGw6Entry`
/// is 4-aligned with the gateway first, so the words are read in place.
#[inline(always)]
fn gateway_words(peer: &HostGw6Entry) -> [u32; 4] {
    // SAFETY: the gateway is the entry's first 16 bytes, at a 4-aligned address.
    unsafe { *(peer as *const HostGw6Entry as *const [u32; 4]) }
}

/// [`forward`] for IPv6: the frame's packet (header `ip`, already checked
/// by `l3::ipv6_forwardable`: global unicast addresses, no ND) goes to
/// `peer` when the kernel's IPv6 FIB answers with weft's route (same
/// gateway, same interface) and it fits the MTU, with hop limit - 1 (no
/// checksum to fix in IPv6); else to the stack unchanged: hop limit 1 or 0
/// (time-exceeded), Hop-by-Hop Options (every router reads them), too big
/// (Packet Too Big: IPv6 routers never fragment), another route,
/// forwarding off. Other extension headers are forwarded as they are.
#[inline(always)]
pub fn forward6(ctx: &TcContext, in_ifindex: u32, ip: &Ipv6Hdr, peer: &HostGw6Entry) -> Outcome {
    let hop = ip.hop_limit;
    if hop <= 1 || ip.next == IPPROTO_HOPOPTS {
        return TO_STACK;
    }
    // SAFETY: an all-zero bpf_fib_lookup is a valid "nothing set" request.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = ip.next;
    fib.ifindex = in_ifindex;
    // tot_len 0: the kernel checks the skb against the egress MTU (GSO-aware).
    // Traffic class and flow label, as ip6_route_input passes them.
    fib.__bindgen_anon_2.flowinfo = u32::from_ne_bytes([ip.vtc_flow[0] & 0x0f, ip.vtc_flow[1], ip.vtc_flow[2], ip.vtc_flow[3]]);
    // SAFETY: the address unions are 16 bytes each; plain byte copies.
    unsafe {
        *(&mut fib.__bindgen_anon_3 as *mut _ as *mut [u8; 16]) = ip.saddr;
        *(&mut fib.__bindgen_anon_4 as *mut _ as *mut [u8; 16]) = ip.daddr;
    }
    // SAFETY: helper call with a stack buffer of the size we pass.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut fib, core::mem::size_of::<FibParams>() as i32, 0) } as u32;
    // SAFETY: reading the unions the kernel filled in.
    let (gw, out) = unsafe { (fib.__bindgen_anon_4.ipv6_dst, fib.ifindex) };
    let want = gateway_words(peer);
    let same_gw = (gw[0] ^ want[0]) | (gw[1] ^ want[1]) | (gw[2] ^ want[2]) | (gw[3] ^ want[3]) == 0;
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || out != peer.ifindex || !same_gw {
        if crate::klog::on() {
            aya_log_ebpf::debug!(ctx, "weft_fwd: IPv6 FIB answer {} (0 ok, 7 no neighbour) via #{} is not weft's route: to the stack", rc, out);
        }
        return TO_STACK;
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH {
        // Without a neighbour the kernel skipped its MTU check: do it here.
        let mut mtu: u32 = 0;
        // SAFETY: helper call; mtu is an out-parameter on our stack.
        if unsafe { bpf_check_mtu(ctx.as_ptr(), out, &mut mtu, 0, 0) } != 0 {
            return TO_STACK;
        }
    }
    // One exit for both helper failures and one for both redirects: the
    // verifier then never sees an undefined register merged into a result.
    // SAFETY: reading the MACs the kernel filled in (meaningful on success only).
    let macs = unsafe { fib.__bindgen_anon_6.__bindgen_anon_2 };
    let hdr = EthHdr { dst: macs.dmac, src: macs.smac, proto: ETH_P_IPV6 };
    let found = rc == BPF_FIB_LKUP_RET_SUCCESS;
    if l3::dec_hop_limit(ctx, hop).is_err() || (found && ctx.store(0, &hdr, 0).is_err()) {
        return Err(Drop(stat::DROP_HELPER));
    }
    let action = if found {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(out, 0) as i32 }
    } else {
        // No neighbour entry yet: the kernel resolves it (ND) and sends.
        let mut nh = bpf_redir_neigh { nh_family: AF_INET6 as u32, __bindgen_anon_1: unsafe { core::mem::zeroed() } };
        nh.__bindgen_anon_1.ipv6_nh = gw;
        // SAFETY: helper call with a stack buffer of the size we pass.
        unsafe { bpf_redirect_neigh(out, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) as i32 }
    };
    Ok(Verdict::Redirect { action, stat: Some(stat::FWD) })
}
