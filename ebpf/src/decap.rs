//! TC ingress on the underlay (`weft_decap`): VXLAN addressed to this node
//! is validated, then decapsulated and delivered into a registered local
//! pod; the rest goes to the overlay device: still encapsulated, for its
//! kernel vxlan socket to decapsulate (`cfg_flags::KERNEL_VXLAN`, the
//! default), or decapsulated here and redirected into it (an ifb or veth
//! overlay). Any other frame may be a DirectRouting peer's pod's packet
//! for one of ours (`to_pod.rs`), or goes to the stack untouched.
//!
//! With a kernel vxlan overlay, GRO has already merged VXLAN segments of
//! one flow before this hook (the socket's gro_receive), so a registered
//! pod gets merged packets; the kernel's own decapsulation of the rest
//! clears the tunnel GSO state, which `bpf_skb_adjust_room` here cannot
//! and which a packet the host forwards must not keep.
use aya_ebpf::{
    bindings::{__sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS},
    helpers::bpf_redirect,
    programs::TcContext,
    EbpfContext,
};
use weft_common::{cfg_flags, stat, OVERLAY_MARK, VXLAN_OVERHEAD};

use crate::{
    klog, maps, to_pod, v6,
    verdict::{Drop, Outcome, Step, Verdict},
    vxlan,
};

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
    // SAFETY: ctx wraps a valid __sk_buff.
    let gso = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_size != 0 };
    // IPv6 VXLAN for us (dual stack): validated here, decapsulated by the
    // IPv6 overlay device's socket (`v6.rs`). Other frames: as before.
    if let Some(out) = v6::underlay(ctx, len, cfg, gso) {
        return Step::Done(out);
    }
    match vxlan::classify(ctx, len as usize, cfg, gso) {
        // Not VXLAN for us; a DirectRouting peer's pod may have routed it to one of ours.
        Ok(None) => Step::Done(to_pod::from_peer(ctx).unwrap_or(PASS)),
        Err(Drop(reason)) => {
            if klog::on() {
                aya_log_ebpf::debug!(ctx, "weft_decap: dropped VXLAN for us, reason {} (weft_stats index)", reason);
            }
            Step::Done(Err(Drop(reason)))
        }
        Ok(Some(ours)) => {
            if cfg.flags & cfg_flags::KERNEL_VXLAN != 0 && maps::pod(ours.inner_daddr).is_none() {
                ctx.set_mark(OVERLAY_MARK);
                return Step::Done(Ok(Verdict::Pass(Some(stat::DECAP_KERNEL))));
            }
            let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
            if ctx.adjust_room(-(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags).is_err() || ctx.store(0, &ours.eth, 0).is_err() {
                return Step::Done(Err(Drop(stat::DROP_HELPER)));
            }
            Step::Decapped(cfg.overlay_ifindex)
        }
    }
}

/// `weft_overlay_in`, on the ingress of a kernel vxlan overlay device: what
/// `weft_decap` marked goes on (mark cleared, already counted there);
/// anything else (VXLAN that reached the kernel's socket past `weft_decap`:
/// sent to another local address, or by a local pod) is dropped, counted.
#[inline(always)]
pub fn overlay_in(ctx: &TcContext) -> Outcome {
    // SAFETY: ctx wraps a valid __sk_buff.
    if unsafe { (*(ctx.as_ptr() as *const __sk_buff)).mark } != OVERLAY_MARK {
        return Err(Drop(stat::DROP_UNVALIDATED));
    }
    ctx.set_mark(0);
    Ok(Verdict::Pass(None))
}

/// Where a decapsulated frame goes: straight into a registered local pod
/// (counted `DECAP_TO_POD`), else into the overlay device (not counted
/// again), so that it enters the stack there, as it does on flannel.1, and
/// reverse-path filtering and routing see the overlay.
#[inline(always)]
pub fn deliver(ctx: &TcContext, overlay_ifindex: u32) -> Outcome {
    to_pod::deliver(ctx, stat::DECAP_TO_POD).unwrap_or_else(|| {
        if maps::flags() & cfg_flags::KERNEL_VXLAN != 0 {
            ctx.set_mark(OVERLAY_MARK);
        }
        // SAFETY: plain helper call.
        let action = unsafe { bpf_redirect(overlay_ifindex, BPF_F_INGRESS as u64) as i32 };
        Ok(Verdict::Redirect { action, stat: None })
    })
}
