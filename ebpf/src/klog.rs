//! Kernel-side debug logs through aya-log, for the decisions worth a line:
//! drops and hand-offs to the stack (never the packets that go through, so
//! a log switched on does not flood). Off by default; `weftd log-level
//! debug` switches them on at run time (a flag in `weft_config`, read per
//! packet), and weftd prints them with its own log.
use weft_common::cfg_flags;

use crate::maps;

#[inline(always)]
pub fn on() -> bool {
    maps::flags() & cfg_flags::LOG_DEBUG != 0
}
