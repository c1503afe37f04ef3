//! XDP on the underlay (`weft_xdp_decap`, opt-in): VXLAN addressed to this
//! node is decapsulated before the kernel builds an skb for it, and a mark
//! is left in the XDP metadata so that `weft_decap` only has to deliver the
//! inner packet. Everything else passes, to be counted by `weft_decap`.
use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_meta},
    programs::XdpContext,
    EbpfContext,
};
use weft_common::{stat, VXLAN_OVERHEAD};

use crate::{
    decap::XDP_DECAP_MARK,
    hdr::{self, EthHdr},
    maps,
    verdict::{Drop, Step, Verdict},
    vxlan,
};

/// Done, or decapsulated in place for the frame in `ctx`, `len` bytes long.
#[inline(always)]
pub fn run(ctx: &XdpContext, len: u32) -> Step<()> {
    let Some(cfg) = maps::config() else {
        return Step::Done(Ok(Verdict::Pass(None)));
    };
    match vxlan::classify(ctx, len as usize, cfg, false) {
        // Counted by weft_decap, which sees every frame XDP passes.
        Ok(None) => Step::Done(Ok(Verdict::Pass(None))),
        Err(drop) => Step::Done(Err(drop)),
        Ok(Some(eth)) => decap(ctx, &eth),
    }
}

#[inline(always)]
fn decap(ctx: &XdpContext, eth: &EthHdr) -> Step<()> {
    let raw = ctx.as_ptr() as *mut xdp_md;
    // SAFETY: helper calls on our own context.
    if unsafe { bpf_xdp_adjust_head(raw, VXLAN_OVERHEAD as i32) } != 0 || unsafe { bpf_xdp_adjust_meta(raw, -4) } != 0 {
        return Step::Done(Err(Drop(stat::DROP_HELPER)));
    }
    // The packet pointers, re-derived after the helpers.
    let (Some(mark), Some(inner_eth)) = (hdr::meta_ptr::<_, u32>(ctx), hdr::ptr_at::<_, EthHdr>(ctx, 0)) else {
        return Step::Done(Err(Drop(stat::DROP_HELPER)));
    };
    // SAFETY: both in bounds (checked in hdr).
    unsafe {
        *mark = XDP_DECAP_MARK;
        // Same Ethernet header as the TC path: weft_decap sees the mark and
        // redirects into the overlay device, whose MAC is our VtepMAC.
        *inner_eth = *eth;
    }
    Step::Decapped(())
}
