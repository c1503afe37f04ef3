//! weft's kernel programs. One program per attach point:
//! - `weft_encap`  TC egress of the overlay device: VXLAN encapsulation;
//! - `weft_decap`  TC ingress of the underlay: VXLAN decapsulation;
//! - `weft_xdp_decap` XDP on the underlay (opt-in): decapsulates earlier and
//!   leaves a mark in the XDP metadata so that `weft_decap` only has to steer
//!   the inner packet into the overlay device;
//! - `weft_fwd`    TC ingress of the pod bridge: the host-gw fast path;
//! - `weft_from_pod` TC ingress of a registered pod's host-side veth: encap
//!   or forward right where the pod's traffic leaves it;
//! - `weft_to_pod` TC ingress of the underlay with host-gw: a peer pod's
//!   packet for a registered local pod goes straight into it.
//!
//! Traffic for a registered local pod, decapsulated or routed by a peer,
//! skips the overlay device and the host's routing: it goes straight into
//! the pod (bpf_redirect_peer, `to_pod.rs`).
#![no_std]
#![no_main]
#![allow(non_upper_case_globals)]

mod csum;
mod decap;
mod encap;
mod from_pod;
mod fwd;
mod l3;
mod hdr;
mod klog;
mod maps;
mod to_pod;

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT, __sk_buff},
    helpers::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_meta},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use decap::Verdict;
use hdr::{EthHdr, ETH_LEN};
use weft_common::{stat, VXLAN_OVERHEAD};

/// XDP metadata word meaning "already decapsulated by weft_xdp_decap".
const XDP_DECAP_MARK: u32 = 0x7765_6674; // "weft"

#[classifier]
pub fn weft_encap(ctx: TcContext) -> i32 {
    encap::run(&ctx, None)
}

#[classifier]
pub fn weft_fwd(ctx: TcContext) -> i32 {
    fwd::run(&ctx)
}

#[classifier]
pub fn weft_from_pod(ctx: TcContext) -> i32 {
    from_pod::run(&ctx)
}

#[classifier]
pub fn weft_to_pod(ctx: TcContext) -> i32 {
    to_pod::from_peer(&ctx).unwrap_or(TC_ACT_OK as i32)
}

#[classifier]
pub fn weft_decap(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let Some(cfg) = maps::config() else {
        decap::count(stat::PASS, len);
        return TC_ACT_OK as i32;
    };
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: ctx wraps a valid __sk_buff.
    let (meta, data, gso) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize, (*skb).gso_size != 0) };
    if meta + 4 <= data {
        // SAFETY: bounds checked just above.
        if unsafe { *(meta as *const u32) } == XDP_DECAP_MARK {
            return deliver(&ctx, cfg.overlay_ifindex);
        }
    }
    match decap::classify(data, ctx.data_end(), len as usize, cfg, gso) {
        // Not VXLAN for us; a DirectRouting peer's pod may have routed it to one of ours.
        Verdict::Pass => to_pod::from_peer(&ctx).unwrap_or_else(|| {
            decap::count(stat::PASS, len);
            TC_ACT_OK as i32
        }),
        Verdict::Drop(reason) => {
            decap::count(reason, len);
            if klog::on() {
                aya_log_ebpf::debug!(&ctx, "weft_decap: dropped VXLAN for us, reason {} (weft_stats index)", reason);
            }
            TC_ACT_SHOT as i32
        }
        Verdict::Decap(eth) => {
            let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
            if ctx.adjust_room(-(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags).is_err()
                || ctx.store(0, &eth, 0).is_err()
            {
                decap::count(stat::DROP_HELPER, len);
                return TC_ACT_SHOT as i32;
            }
            decap::count(stat::DECAP, len - VXLAN_OVERHEAD);
            deliver(&ctx, cfg.overlay_ifindex)
        }
    }
}

/// Where a decapsulated frame goes: straight into a registered local pod,
/// else into the overlay device and the host's routing.
#[inline(always)]
fn deliver(ctx: &TcContext, overlay_ifindex: u32) -> i32 {
    to_pod::deliver(ctx, stat::DECAP_TO_POD).unwrap_or_else(|| redirect_to_overlay(overlay_ifindex))
}

/// The inner packet enters the stack on the overlay device, as it does on
/// flannel.1, so reverse-path filtering and routing see the overlay.
#[inline(always)]
fn redirect_to_overlay(ifindex: u32) -> i32 {
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) as i32 }
}

#[xdp]
pub fn weft_xdp_decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let Some(cfg) = maps::config() else {
        return xdp_action::XDP_PASS;
    };
    match decap::classify(ctx.data(), ctx.data_end(), len as usize, cfg, false) {
        // Counted by weft_decap, which sees every frame XDP passes.
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop(reason) => {
            decap::count(reason, len);
            xdp_action::XDP_DROP
        }
        Verdict::Decap(eth) => xdp_decap(&ctx, &eth, len),
    }
}

#[inline(always)]
fn xdp_decap(ctx: &XdpContext, eth: &EthHdr, len: u32) -> u32 {
    let raw = ctx.as_ptr() as *mut _;
    // SAFETY: helper calls on our own context; pointers re-derived after each.
    unsafe {
        if bpf_xdp_adjust_head(raw, VXLAN_OVERHEAD as i32) != 0 {
            decap::count(stat::DROP_HELPER, len);
            return xdp_action::XDP_DROP;
        }
        if bpf_xdp_adjust_meta(raw, -4) != 0 {
            decap::count(stat::DROP_HELPER, len);
            return xdp_action::XDP_DROP;
        }
        let (meta, data, end) = (ctx.metadata(), ctx.data(), ctx.data_end());
        if meta + 4 > data || data + ETH_LEN > end {
            decap::count(stat::DROP_HELPER, len);
            return xdp_action::XDP_DROP;
        }
        *(meta as *mut u32) = XDP_DECAP_MARK;
        // Same Ethernet header as the TC path: weft_decap sees the mark and
        // redirects into the overlay device, whose MAC is our VtepMAC.
        *(data as *mut EthHdr) = *eth;
    }
    decap::count(stat::DECAP_XDP, len - VXLAN_OVERHEAD);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
