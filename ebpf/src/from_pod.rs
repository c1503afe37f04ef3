//! TC ingress on a registered pod's host-side veth (`weft_from_pod`): the
//! pod's traffic to other nodes handled where it leaves the pod, before the
//! bridge and the host's routing see it. To a VXLAN peer: TTL - 1 (the hop
//! the host would have made) and encapsulation straight out of the
//! underlay; to a routed (host-gw) peer: the fast path's forwarding. Every
//! other frame (to a local pod, to the host, not from the registered pod's
//! address, not sent to its gateway MAC) goes on unchanged: the bridge and
//! the stack handle it as before.
use aya_ebpf::{bindings::__sk_buff, programs::TcContext, EbpfContext};
use weft_common::stat;

use crate::{
    encap, fwd,
    hdr::*,
    l3, maps, v6,
    verdict::{Drop, Outcome, Verdict},
};

/// Not for this program: on unchanged, uncounted.
const ON: Outcome = Ok(Verdict::Pass(None));

#[inline(always)]
pub fn run(ctx: &TcContext) -> Outcome {
    // IPv6 (dual stack): `v6.rs`.
    if let Some(EthHdr { proto: ETH_P_IPV6, .. }) = at::<_, EthHdr>(ctx, 0) {
        return v6::from_pod(ctx);
    }
    let Some(EthIpv4 { eth, ip }) = at(ctx, 0) else {
        return ON;
    };
    if eth.proto != ETH_P_IP || ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return ON;
    }
    // Only routed traffic of the pod registered with this address.
    let Some(pod) = maps::pod(ip.saddr) else {
        return ON;
    };
    if eth.dst != pod.gw_mac {
        return ON;
    }
    if let Some(peer) = maps::hostgw_for(ip.daddr) {
        // SAFETY: ctx wraps a valid __sk_buff.
        let in_ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
        return fwd::forward(ctx, in_ifindex, peer);
    }
    let Some(vtep) = maps::vtep_for(ip.daddr) else {
        return ON;
    };
    let (ttl, proto) = (ip.ttl, ip.proto);
    // TTL 1 expires at this hop: the stack sends the ICMP time-exceeded.
    if ttl <= 1 {
        return ON;
    }
    if l3::dec_ttl(ctx, ttl, proto).is_err() {
        return Err(Drop(stat::DROP_HELPER));
    }
    encap::run(ctx, Some(vtep))
}
