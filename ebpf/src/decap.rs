//! TC ingress on the underlay (`weft_decap`): VXLAN addressed to this node
//! is decapsulated and delivered, into a registered local pod or else into
//! the overlay device; a frame `weft_xdp_decap` already decapsulated (its
//! mark in the XDP metadata) is only delivered. Any other frame may be a
//! DirectRouting peer's pod's packet for one of ours (`to_pod.rs`), or goes
//! to the stack untouched.
use aya_ebpf::{
    bindings::{__sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS},
    helpers::bpf_redirect,
    programs::TcContext,
    EbpfContext,
};
use weft_common::{stat, VXLAN_OVERHEAD};

use crate::{
    hdr, klog, maps, to_pod,
    verdict::{Drop, Outcome, Step, Verdict},
    vxlan,
};

/// XDP metadata word meaning "already decapsulated by weft_xdp_decap".
pub const XDP_DECAP_MARK: u32 = 0x7765_6674; // "weft"

/// Not VXLAN for us and not for a local pod: the stack's, counted.
const PASS: Outcome = Ok(Verdict::Pass(Some(stat::PASS)));

/// The first step for the frame in `ctx`, `len` bytes long: done, or
/// decapsulated in place, then to be [`deliver`]ed into the overlay device
/// whose ifindex the step carries.
#[inline(always)]
pub fn run(ctx: &TcContext, len: u32) -> Step<u32> {
    let Some(cfg) = maps::config() else {
        return Step::Done(PASS);
    };
    // SAFETY: in bounds (checked in hdr).
    if hdr::meta_ptr::<_, u32>(ctx).is_some_and(|mark| unsafe { *mark } == XDP_DECAP_MARK) {
        return Step::Done(deliver(ctx, cfg.overlay_ifindex));
    }
    // SAFETY: ctx wraps a valid __sk_buff.
    let gso = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_size != 0 };
    match vxlan::classify(ctx, len as usize, cfg, gso) {
        // Not VXLAN for us; a DirectRouting peer's pod may have routed it to one of ours.
        Ok(None) => Step::Done(to_pod::from_peer(ctx).unwrap_or(PASS)),
        Err(Drop(reason)) => {
            if klog::on() {
                aya_log_ebpf::debug!(ctx, "weft_decap: dropped VXLAN for us, reason {} (weft_stats index)", reason);
            }
            Step::Done(Err(Drop(reason)))
        }
        Ok(Some(eth)) => {
            let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
            if ctx.adjust_room(-(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags).is_err() || ctx.store(0, &eth, 0).is_err() {
                return Step::Done(Err(Drop(stat::DROP_HELPER)));
            }
            Step::Decapped(cfg.overlay_ifindex)
        }
    }
}

/// Where a decapsulated frame goes: straight into a registered local pod
/// (counted `DECAP_TO_POD`), else into the overlay device (not counted
/// again), so that it enters the stack there, as it does on flannel.1, and
/// reverse-path filtering and routing see the overlay.
#[inline(always)]
pub fn deliver(ctx: &TcContext, overlay_ifindex: u32) -> Outcome {
    to_pod::deliver(ctx, stat::DECAP_TO_POD).unwrap_or_else(|| {
        // SAFETY: plain helper call.
        let action = unsafe { bpf_redirect(overlay_ifindex, BPF_F_INGRESS as u64) as i32 };
        Ok(Verdict::Redirect { action, stat: None })
    })
}
