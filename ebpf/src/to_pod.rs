//! The last hop into a registered local pod, taken by the programs instead
//! of the host: TTL - 1, the MACs the pod's gateway would write, and
//! `bpf_redirect_peer` through the pod's host-side veth, so the packet
//! enters the pod's namespace at once (no routing, no bridge, no veth
//! backlog queue on the way).
//!
//! Two callers: `weft_decap` for decapsulated VXLAN (`DECAP_TO_POD`), and
//! [`from_peer`] on the underlay's TC ingress for plain IPv4 that a host-gw
//! (or DirectRouting) peer's pod routed to one of ours (`ROUTED_TO_POD`),
//! the receiving half of the host-gw fast path whose sending half is
//! `weft_fwd`/`weft_from_pod`. As there, what is skipped is netfilter's
//! FORWARD hooks for peer-pod to local-pod traffic only: a packet from any
//! other source (the outside world, a node address, a subnet weft does not
//! route host-gw style) goes to the stack as before.
use aya_ebpf::{
    helpers::{bpf_check_mtu, bpf_redirect_peer},
    programs::TcContext,
    EbpfContext,
};
use weft_common::{stat, PodEntry};

use crate::{
    hdr::*,
    l3, maps, v6,
    verdict::{Drop, Outcome, Verdict},
};

/// `weft_to_pod`: [`from_peer`], or for IPv6 [`from_peer6`], and every
/// other frame to the stack, uncounted.
#[inline(always)]
pub fn run(ctx: &TcContext) -> Outcome {
    if let Some(EthHdr { proto: ETH_P_IPV6, .. }) = at::<_, EthHdr>(ctx, 0) {
        return from_peer6(ctx).unwrap_or(Ok(Verdict::Pass(None)));
    }
    from_peer(ctx).unwrap_or(Ok(Verdict::Pass(None)))
}

/// [`from_peer`] for IPv6 (dual stack, host-gw): a frame addressed to this
/// host holding an IPv6 packet to a registered local pod (`weft_pods6`)
/// from a pod of a peer whose IPv6 subnet is routed host-gw style through
/// this very interface (`weft_hostgw6`) goes straight into that pod, hop
/// limit - 1, counted `routed_to_pod`. None (the stack handles the frame,
/// untouched): multicast, link-local or unspecified addresses, ND, hop
/// limit 1 or 0 (time-exceeded), Hop-by-Hop Options, a packet bigger than
/// the pod's link (the stack answers Packet Too Big), any other source.
#[inline(always)]
pub fn from_peer6(ctx: &TcContext) -> Option<Outcome> {
    let (ip, in_ifindex) = l3::routed_ipv6(ctx)?;
    let hop = ip.hop_limit;
    if hop <= 1 || ip.next == IPPROTO_HOPOPTS {
        return None;
    }
    let pod = maps::pod6(&ip.daddr)?;
    if maps::hostgw6_for(ip.saddr)?.ifindex != in_ifindex {
        return None;
    }
    let mut mtu: u32 = 0;
    // SAFETY: helper call; mtu is an out-parameter on our stack.
    if unsafe { bpf_check_mtu(ctx.as_ptr(), pod.host_ifindex, &mut mtu, 0, 0) } != 0 {
        return None;
    }
    Some(v6::into_pod(ctx, &pod, hop, stat::ROUTED_TO_POD))
}

/// Delivers the IPv4 packet behind the frame's Ethernet header into the
/// local pod it is addressed to, to be counted under `counter`; None (frame
/// untouched) when no registered pod holds the destination or its TTL
/// expires here (the stack then answers time-exceeded).
#[inline(always)]
pub fn deliver(ctx: &TcContext, counter: u32) -> Option<Outcome> {
    let ip = at::<_, Ipv4Hdr>(ctx, ETH_LEN)?;
    let pod = maps::pod(ip.daddr)?;
    into(ctx, &pod, ip.ttl, ip.proto, counter)
}

/// A frame that arrived on the underlay addressed to this host: if it holds
/// an IPv4 packet (no options) to a registered local pod from a pod of a
/// peer routed host-gw style through this very interface, it goes straight
/// into that pod. None: the stack handles the frame, untouched. The pod
/// lookup (a hash miss for the node's own traffic) comes before the peer's
/// (an LPM trie walk).
#[inline(always)]
pub fn from_peer(ctx: &TcContext) -> Option<Outcome> {
    let (ip, in_ifindex) = l3::routed_ipv4(ctx)?;
    // Options would need the forwarding path's handling: the stack's job.
    if ip.vihl != 0x45 {
        return None;
    }
    let pod = maps::pod(ip.daddr)?;
    if maps::hostgw_for(ip.saddr)?.ifindex != in_ifindex {
        return None;
    }
    into(ctx, &pod, ip.ttl, ip.proto, stat::ROUTED_TO_POD)
}

/// TTL - 1, the gateway's MACs and the redirect into `pod`; None if the
/// TTL expires at this hop.
#[inline(always)]
fn into(ctx: &TcContext, pod: &PodEntry, ttl: u8, proto: u8, counter: u32) -> Option<Outcome> {
    if ttl <= 1 {
        return None;
    }
    let eth = EthHdr { dst: pod.pod_mac, src: pod.gw_mac, proto: ETH_P_IP };
    if l3::dec_ttl(ctx, ttl, proto).is_err() || ctx.store(0, &eth, 0).is_err() {
        return Some(Err(Drop(stat::DROP_HELPER)));
    }
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect_peer(pod.host_ifindex, 0) as i32 };
    Some(Ok(Verdict::Redirect { action, stat: Some(counter) }))
}
