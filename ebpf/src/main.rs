//! weft's kernel programs: only their entry points, one per attach point,
//! each body in its own module:
//! - `weft_encap`  TC egress of the overlay device: VXLAN encapsulation (`encap.rs`);
//! - `weft_decap`  TC ingress of the underlay: VXLAN decapsulation (`decap.rs`);
//! - `weft_fwd`    TC ingress of the pod bridge: the host-gw fast path (`fwd.rs`);
//! - `weft_from_pod` TC ingress of a registered pod's host-side veth: encap
//!   or forward right where the pod's traffic leaves it (`from_pod.rs`);
//! - `weft_to_pod` TC ingress of the underlay with host-gw: a peer pod's
//!   packet for a registered local pod goes straight into it (`to_pod.rs`);
//! - `weft_overlay_in` TC ingress of a kernel vxlan overlay device: only
//!   what `weft_decap` validated enters the stack there (`decap.rs`);
//! - `weft_encap6` TC egress and `weft_overlay_in6` TC ingress of the IPv6
//!   overlay device `weft-v6.<VNI>` (dual stack; `v6.rs`, which also holds
//!   the IPv6 parts of `weft_decap` and `weft_from_pod`).
//!
//! Traffic for a registered local pod, decapsulated or routed by a peer,
//! skips the overlay device and the host's routing: it goes straight into
//! the pod (bpf_redirect_peer, `to_pod.rs`).
//!
//! Every entry point first asks whether weftd has been gone past its
//! deadline (`maps::stood_aside`): then the packet goes to the kernel
//! untouched, whose own vxlan device (its FDB and neighbours, programmed
//! beside weft's maps) carries it, so that weft's programs never carry
//! traffic for long from maps nobody updates (after a rollback to flanneld).
//!
//! A program's body decides ([`verdict::Outcome`]: go on, or drop for a
//! reason); its entry point here counts that decision in `weft_stats`, for
//! the packet's length as it arrived, and returns the action.
#![no_std]
#![no_main]
#![allow(non_upper_case_globals)]

mod csum;
mod decap;
mod encap;
mod from_pod;
mod fwd;
mod hdr;
mod klog;
mod l3;
mod maps;
mod to_pod;
mod v6;
mod verdict;
mod vxlan;

use aya_ebpf::{macros::classifier, programs::TcContext};
use verdict::Step;
use weft_common::{stat, VXLAN_OVERHEAD};

#[classifier]
fn weft_encap(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| encap::run(&ctx, None)), len)
}

#[classifier]
fn weft_fwd(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| fwd::run(&ctx)), len)
}

#[classifier]
fn weft_from_pod(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| from_pod::run(&ctx)), len)
}

#[classifier]
fn weft_to_pod(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| to_pod::run(&ctx)), len)
}

#[classifier]
fn weft_decap(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let step = if maps::stood_aside() { Step::Done(verdict::STOOD_ASIDE) } else { decap::run(&ctx, len) };
    match step {
        Step::Done(out) => verdict::tc(out, len),
        // Counted as decapsulated, then as what its delivery did, both for
        // the inner frame's length.
        Step::Decapped(overlay_ifindex) => {
            let inner = len - VXLAN_OVERHEAD;
            maps::count(stat::DECAP, inner);
            verdict::tc(decap::deliver(&ctx, overlay_ifindex), inner)
        }
    }
}

#[classifier]
fn weft_overlay_in(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| decap::overlay_in(&ctx)), len)
}

#[classifier]
fn weft_encap6(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| v6::encap(&ctx)), len)
}

#[classifier]
fn weft_overlay_in6(ctx: TcContext) -> i32 {
    let len = ctx.len();
    verdict::tc(verdict::or_stand_aside(|| v6::overlay_in(&ctx)), len)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The object's license, as the kernel reads it. The crate is
/// `Apache-2.0 OR GPL-2.0-only` (Cargo.toml); the kernel knows only its own
/// strings ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL",
/// "Dual MIT/GPL", "Dual MPL/GPL"), none for Apache-2.0, so the object
/// names its GPL option. Without a GPL-compatible string the verifier
/// refuses the GPL-only helpers `weft_fwd` and `weft_from_pod` call
/// (bpf_fib_lookup, bpf_check_mtu).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
