//! TC ingress on a registered pod's host-side veth (`weft_from_pod`): the
//! pod's traffic to other nodes handled where it leaves the pod, before the
//! bridge and the host's routing see it. To a VXLAN peer: TTL - 1 (the hop
//! the host would have made) and encapsulation straight out of the
//! underlay; to a routed (host-gw) peer: the fast path's forwarding. Every
//! other frame (to a local pod, to the host, not from the registered pod's
//! address, not sent to its gateway MAC) goes on unchanged: the bridge and
//! the stack handle it as before.
use aya_ebpf::{
    bindings::{TC_ACT_OK, __sk_buff},
    programs::TcContext,
    EbpfContext,
};
use weft_common::stat;

use crate::{encap, fwd, hdr::*, l3, maps};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + ETH_LEN + IP_LEN > end {
        return TC_ACT_OK as i32;
    }
    // SAFETY: bounds checked just above.
    let eth = unsafe { &*(data as *const EthHdr) };
    let ip = unsafe { &*((data + ETH_LEN) as *const Ipv4Hdr) };
    if eth.proto != ETH_P_IP || ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return TC_ACT_OK as i32;
    }
    // Only routed traffic of the pod registered with this address.
    let Some(pod) = maps::pod(ip.saddr) else {
        return TC_ACT_OK as i32;
    };
    if eth.dst != pod.gw_mac {
        return TC_ACT_OK as i32;
    }
    if let Some(peer) = maps::hostgw_for(ip.daddr) {
        // SAFETY: ctx wraps a valid __sk_buff.
        let in_ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
        return fwd::forward(ctx, in_ifindex, peer);
    }
    let Some(vtep) = maps::vtep_for(ip.daddr) else {
        return TC_ACT_OK as i32;
    };
    let (ttl, proto) = (ip.ttl, ip.proto);
    // TTL 1 expires at this hop: the stack sends the ICMP time-exceeded.
    if ttl <= 1 {
        return TC_ACT_OK as i32;
    }
    if l3::dec_ttl(ctx, ttl, proto).is_err() {
        maps::count(stat::DROP_HELPER, ctx.len());
        return aya_ebpf::bindings::TC_ACT_SHOT as i32;
    }
    encap::run(ctx, Some(vtep))
}
