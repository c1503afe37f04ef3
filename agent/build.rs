//! Builds the kernel programs (ebpf/, nightly, bpfel-unknown-none, bpf-linker)
//! and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `WEFT_EBPF_OBJ=<path>` uses a prebuilt object instead.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("weft.bpf.o");
    println!("cargo:rerun-if-env-changed=WEFT_EBPF_OBJ");
    for p in ["ebpf/src", "ebpf/Cargo.toml", "ebpf/.cargo/config.toml", "common/src", "common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    if let Ok(obj) = env::var("WEFT_EBPF_OBJ") {
        std::fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying WEFT_EBPF_OBJ={obj}: {e}"));
        return;
    }
    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf).args(["+nightly", "build", "--release", "--ignore-rust-version"]).arg("--target-dir").arg(&target_dir);
    // Do not leak the outer (stable, host) build's settings into the BPF build.
    for (k, _) in env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k.starts_with("RUSTC") || k == "RUSTFLAGS" || k == "RUSTUP_TOOLCHAIN" {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running cargo +nightly for ebpf/: {e}"));
    if !status.success() {
        panic!("building the eBPF programs failed (needs the nightly toolchain with rust-src and bpf-linker: run `cargo xtask bootstrap`)");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/weft");
    std::fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
