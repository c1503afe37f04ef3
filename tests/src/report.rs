//! Figures from the reliability tests (packets lost, time to converge, CPU,
//! RSS) and their two lengths: the short one `cargo xtask test` runs, and
//! the long one `cargo xtask soak` asks for with `WEFT_SOAK=1`. Each figure
//! is printed, and appended as a JSON line to `$WEFT_RELIABILITY_OUT` when
//! set (the soak writes docs/reliability.md from those lines).
use std::io::Write;

use anyhow::{Context, Result};

/// True in `cargo xtask soak`.
pub fn soak() -> bool {
    std::env::var_os("WEFT_SOAK").is_some_and(|v| v == "1")
}

/// `short` seconds in CI, `long` in the soak.
pub fn secs(short: u64, long: u64) -> u64 {
    if soak() {
        long
    } else {
        short
    }
}

/// Records one figure of `test`.
pub fn figure(test: &str, what: &str, value: f64, unit: &str) {
    eprintln!("figure: {test}: {what} = {value:.3} {unit}");
    if let Some(p) = std::env::var_os("WEFT_RELIABILITY_OUT") {
        let line = serde_json::json!({ "test": test, "what": what, "value": value, "unit": unit, "soak": soak() });
        let res = std::fs::OpenOptions::new().create(true).append(true).open(&p).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            eprintln!("figure: cannot append to {}: {e}", std::path::Path::new(&p).display());
        }
    }
}

/// A process's CPU time (user + system, seconds) and resident memory now
/// and at its peak (KiB), from /proc.
pub fn cpu_rss(pid: u32) -> Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("odd /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    Ok((cpu, kb("VmRSS:"), kb("VmHWM:")))
}
