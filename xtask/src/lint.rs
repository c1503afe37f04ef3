//! The habits `cargo xtask test` checks before any test runs, so CI fails
//! on them: rustfmt (rustfmt.toml) over both workspaces, and clippy with
//! `-D warnings` over every target of the main workspace and over the
//! kernel programs with their own toolchain (nightly, bpfel-unknown-none).
use anyhow::{bail, Result};

use crate::{cargo, status, workspace};

/// Runs every check, reports each, and fails if any failed.
pub fn run() -> Result<()> {
    let ebpf = workspace().join("ebpf");
    let mut failed = vec![];
    let mut check = |what: &str, c: &mut std::process::Command| {
        println!("xtask: lint: {what}");
        if let Err(e) = status(c) {
            eprintln!("xtask: lint: {what} failed: {e:#}");
            failed.push(what.to_string());
        }
    };
    check("rustfmt (workspace)", cargo().args(["fmt", "--all", "--", "--check"]));
    // ebpf/ is its own workspace; `cargo fmt` there would also walk the
    // main one, so rustfmt starts at its crate root and follows its modules.
    check("rustfmt (ebpf)", std::process::Command::new("rustfmt").args(["--check", "--edition", "2021"]).arg(ebpf.join("src/main.rs")));
    check("clippy (workspace, all targets)", cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]));
    // The BPF crate builds core itself (ebpf/.cargo/config.toml); its own
    // target dir keeps clippy's metadata apart from build.rs's release build.
    let ebpf_target = crate::target_dir().join("ebpf-clippy");
    // rustup's `cargo` proxy (not $CARGO, the stable toolchain's binary)
    // picks the nightly, as agent/build.rs does; nothing of the outer
    // (stable, host) build leaks in.
    let mut c = std::process::Command::new("cargo");
    c.current_dir(&ebpf).args(["+nightly", "clippy", "--release", "--ignore-rust-version", "--target-dir"]).arg(&ebpf_target).args(["--", "-D", "warnings"]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "CARGO" || k.starts_with("RUSTC") || k == "RUSTFLAGS" || k == "RUSTUP_TOOLCHAIN" {
            c.env_remove(k.as_ref());
        }
    }
    check("clippy (ebpf, nightly, bpfel-unknown-none)", &mut c);
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}
