//! What a program's logic decides for a packet, and the one place where the
//! entry points count it (`weft_stats`) and turn it into a return code.
//! The logic returns an [`Outcome`]: the packet goes on ([`Verdict`]) or is
//! dropped for a reason ([`Drop`]); it never counts itself.
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};

use crate::maps;

/// A packet that goes on.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// To the stack untouched (TC_ACT_OK), counted under this
    /// `weft_common::stat` index if any.
    Pass(Option<u32>),
    /// Sent on by a redirect helper, whose answer is the return code;
    /// counted under `stat` if any.
    Redirect { action: i32, stat: Option<u32> },
}

/// A packet dropped, counted under this `weft_common::stat` index.
#[derive(Clone, Copy)]
pub struct Drop(pub u32);

/// A program's decision for one packet.
pub type Outcome = Result<Verdict, Drop>;

/// The decapsulating programs' first step: done, or the frame was
/// decapsulated in place (`VXLAN_OVERHEAD` bytes shorter), which the entry
/// point counts before the next step (`T`: what that step needs).
pub enum Step<T> {
    Done(Outcome),
    Decapped(T),
}

/// What to count and return for `out`.
#[inline(always)]
fn split(out: Outcome, pass: i32, drop: i32) -> (Option<u32>, i32) {
    match out {
        Ok(Verdict::Pass(stat)) => (stat, pass),
        Ok(Verdict::Redirect { action, stat }) => (stat, action),
        Err(Drop(reason)) => (Some(reason), drop),
    }
}

/// Counts `out` for a packet of `bytes` on this CPU and gives the TC
/// return code.
#[inline(always)]
pub fn tc(out: Outcome, bytes: u32) -> i32 {
    let (stat, action) = split(out, TC_ACT_OK, TC_ACT_SHOT);
    if let Some(idx) = stat {
        maps::count(idx, bytes);
    }
    action
}

/// What a program decides once weftd has been gone past its deadline: the
/// packet to the kernel untouched (TC_ACT_OK: no redirect, no mark),
/// counted as `stat::STOOD_ASIDE`.
pub const STOOD_ASIDE: Outcome = Ok(Verdict::Pass(Some(weft_common::stat::STOOD_ASIDE)));

/// Every entry point's first step: [`STOOD_ASIDE`] once weftd has been gone
/// past its deadline ([`maps::stood_aside`]), else what `run` decides. One
/// outcome for [`tc`] to count either way (a second return path through
/// `tc` made LLVM emit code the verifier refused).
#[inline(always)]
pub fn or_stand_aside(run: impl FnOnce() -> Outcome) -> Outcome {
    if maps::stood_aside() {
        STOOD_ASIDE
    } else {
        run()
    }
}
