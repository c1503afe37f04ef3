//! `cargo xtask bench ... --profile`: where the time goes while a transfer
//! runs. `perf record -a -g` samples the whole machine (kernel and every
//! process: the datapath's cost is spread over softirqs, the TUN workers and
//! the traffic tools), then `perf report` ranks symbols by self time. Only
//! reads the machine: perf changes no network state.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use weft_tests::cmd;

/// Where the recordings and reports go (not in docs/: they are large and
/// specific to one machine).
fn dir() -> PathBuf {
    crate::target_dir().join("bench-profiles")
}

/// Runs `work` while `perf record -a -g` samples the whole machine for
/// `secs` seconds; returns its result and the report's top lines (symbols
/// at 1% of the samples or more), also written to `<name>.txt`.
pub fn system_wide<T>(name: &str, secs: u32, work: impl FnOnce() -> Result<T>) -> Result<(T, String)> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    let data = dir.join(format!("{name}.data"));
    let mut rec = Command::new("perf");
    rec.args(["record", "-a", "-g", "-F", "997", "-o"]).arg(&data).args(["--", "sleep", &(secs + 1).to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut rec = rec.spawn().context("starting perf record (Debian package linux-perf)")?;
    // perf needs a moment to set up its buffers on every CPU.
    std::thread::sleep(Duration::from_millis(500));
    let r = work();
    let st = match rec.wait() {
        Ok(st) => st,
        Err(e) => {
            cmd::terminate(&mut rec, Duration::from_secs(1));
            return Err(e).context("waiting for perf record");
        }
    };
    let r = r?;
    ensure!(st.success(), "perf record failed ({st})");
    let out = cmd::output(Command::new("perf").arg("report").arg("-i").arg(&data).args([
        "--stdio",
        "--no-children",
        "--sort",
        "comm,dso,sym",
        "-g",
        "none",
        "--percent-limit",
        "1",
        "-q",
    ]))?;
    ensure!(out.status.success(), "perf report: {}", String::from_utf8_lossy(&out.stderr));
    let top: String =
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).take(25).map(|l| format!("      {}\n", l.trim_end())).collect();
    std::fs::write(dir.join(format!("{name}.txt")), &top)?;
    Ok((r, top))
}
