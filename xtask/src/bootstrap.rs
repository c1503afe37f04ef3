//! `cargo xtask bootstrap`: make this (Debian/Ubuntu, root) machine able to
//! build and test weft, installing only what is missing and saying so.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::status;

pub const APT_PACKAGES: &[&str] = &[
    "clang-16",
    "llvm-16",
    "libbpf-dev",
    "linux-libc-dev",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "iperf3",
    "ethtool",
    "tcpdump",
    "protobuf-compiler",
    "libprotobuf-dev",
    "etcd-server",
    "etcd-client",
    "openssl",
    "gnuplot-nox",
    "python3-venv",
    // perf, for `cargo xtask bench --profile`.
    "linux-perf",
    // The reference CNI plugins (in /usr/lib/cni): weft-cni's tests chain
    // portmap and bandwidth after it and compare it with host-local.
    "containernetworking-plugins",
    // nft, which weftd's --ip-masq drives (one `nft -j -f -` per
    // transaction); the tests also use it to break weft's rules on purpose,
    // only inside test namespaces.
    "nftables",
    // iptables-nft, as docker and kube-proxy use it: the egress tests set
    // its FORWARD policy to DROP in a node namespace and read weft's
    // accepts back through it.
    "iptables",
    // Not "kubernetes-client" (Debian's kubectl) here: some images ship a
    // `kubectl` package that owns /usr/bin/kubectl, and dpkg refuses to
    // overwrite it; `run` installs Debian's only where no kubectl is on PATH.
];

const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(c: &mut Command) -> Result<String> {
    let o = c.output().with_context(|| format!("running {c:?}"))?;
    if !o.status.success() {
        bail!("{c:?} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Packages of `APT_PACKAGES` that dpkg does not list as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    // One dpkg-query for all; unknown packages go to stderr (exit 1) and
    // simply do not appear in stdout.
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(APT_PACKAGES)
        .output()
        .context("running dpkg-query (is this Debian/Ubuntu?)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let installed: Vec<&str> = text.lines().filter(|l| l.ends_with(" install ok installed")).filter_map(|l| l.split_whitespace().next()).collect();
    Ok(APT_PACKAGES.iter().copied().filter(|p| !installed.contains(p)).collect())
}

fn is_debian_like() -> bool {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os.lines().any(|l| (l.starts_with("ID=") || l.starts_with("ID_LIKE=")) && (l.contains("debian") || l.contains("ubuntu")))
}

fn install_packages(pkgs: &[&str]) -> Result<()> {
    if !is_debian_like() {
        bail!("missing packages {pkgs:?} and this is not Debian/Ubuntu: install their equivalents yourself");
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing packages {pkgs:?}: run as root (apt-get install)");
    }
    println!("bootstrap: installing apt packages: {}", pkgs.join(" "));
    // Keep dpkg from starting services (etcd-server's etcd.service): tests
    // run their own etcd. Only a policy-rc.d we create is removed again.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\n# written by cargo xtask bootstrap: no service starts during install\nexit 101\n")?;
        std::fs::set_permissions(policy, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755))?;
    }
    let r = (|| {
        status(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
        let install =
            status(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(pkgs).env("DEBIAN_FRONTEND", "noninteractive"));
        if let Err(e) = install {
            // A service that fails to start (policy) can fail the install of
            // etcd-server: what counts is whether dpkg has the packages now.
            eprintln!("bootstrap: apt-get install reported: {e:#} (checking what got installed)");
        }
        Ok::<_, anyhow::Error>(())
    })();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    r?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!("apt packages still missing after apt-get install: {still:?}");
    }
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    Ok(PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context("the nightly toolchain is needed (rustup toolchain install nightly)")?,
    ))
}

fn on_path(prog: &str) -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME").or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string())) {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    dirs.iter().any(|d| d.join(prog).is_file())
}

/// Builds bpf-linker against the nightly's own libLLVM: a folder whose lib/
/// holds `libLLVM.so` and the versioned name, both pointing at the sysroot's.
fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    let lib = sysroot.join("lib");
    let mut names: Vec<String> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM") && n.contains(".so") && n != "libLLVM.so")
        .collect();
    // Prefer the soname form "libLLVM.so.<ver>-rust-..." (what bpf-linker links against).
    names.sort_by_key(|n| !n.starts_with("libLLVM.so."));
    let name = names.into_iter().next().with_context(|| format!("no libLLVM*.so* in {}", lib.display()))?;
    let major = llvm_major(&name).with_context(|| format!("cannot tell the LLVM version from {name}"))?;
    let prefix = crate::target_dir().join("xtask-llvm");
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    for link in ["libLLVM.so", name.as_str()] {
        let p = plib.join(link);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(lib.join(&name), &p).with_context(|| format!("symlinking {}", p.display()))?;
    }
    println!(
        "bootstrap: installing bpf-linker {BPF_LINKER_VERSION} (cargo install, feature llvm-{major}, against {}; takes a few minutes)",
        lib.join(&name).display()
    );
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

/// "libLLVM.so.22.1-rust-1.97.0-nightly" or "libLLVM-22-rust-1.9x.0-nightly.so" -> "22".
fn llvm_major(name: &str) -> Option<String> {
    let rest = name.strip_prefix("libLLVM")?.trim_start_matches(".so").trim_start_matches(['.', '-']);
    let major: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!major.is_empty()).then_some(major)
}

/// Checkers the tests use, from PyPI, in a virtualenv of the build directory
/// (nothing installed system-wide): the Kubernetes schema validator for the
/// manifests, and Prometheus' own client library, whose parser reads /metrics.
const PIP_PACKAGES: [(&str, &str); 2] = [("kubernetes-validate==1.37.0", "kubernetes_validate"), ("prometheus-client==0.21.1", "prometheus_client")];

fn venv() -> PathBuf {
    crate::target_dir().join("xtask-venv")
}

fn pip_packages_present() -> bool {
    let modules: Vec<&str> = PIP_PACKAGES.iter().map(|(_, m)| *m).collect();
    Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_pip_packages() -> Result<()> {
    let pkgs: Vec<&str> = PIP_PACKAGES.iter().map(|(p, _)| *p).collect();
    println!("bootstrap: installing {} from PyPI into {} (a virtualenv)", pkgs.join(" "), venv().display());
    status(Command::new("python3").arg("-m").arg("venv").arg(venv()))?;
    status(Command::new(venv().join("bin/pip")).args(["install", "-q"]).args(&pkgs))
}

pub fn run() -> Result<()> {
    let mut did = Vec::new();
    let missing = missing_packages()?;
    if !missing.is_empty() {
        install_packages(&missing)?;
        did.push(format!("{} apt packages", missing.len()));
    }
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src").is_dir() {
        println!("bootstrap: installing rust-src for the nightly toolchain (rustup component add rust-src --toolchain nightly)");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
        did.push("rust-src".into());
    }
    // The lint step (xtask/src/lint.rs): clippy and rustfmt on both
    // toolchains (the kernel programs are checked with nightly).
    for tc in ["stable", "nightly"] {
        for comp in ["clippy", "rustfmt"] {
            let have = Command::new("rustup")
                .args(["component", "list", "--installed", "--toolchain", tc])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with(comp)))
                .unwrap_or(false);
            if !have {
                println!("bootstrap: installing {comp} for the {tc} toolchain (rustup component add {comp} --toolchain {tc})");
                status(Command::new("rustup").args(["component", "add", comp, "--toolchain", tc]))?;
                did.push(format!("{comp} ({tc})"));
            }
        }
    }
    // A real client for the tests' API server (tests/tests/kube_api_server.rs).
    if !on_path("kubectl") {
        println!("bootstrap: installing kubernetes-client (Debian's kubectl: no kubectl on PATH)");
        install_packages(&["kubernetes-client"])?;
        did.push("kubernetes-client".into());
    }
    if !on_path("bpf-linker") {
        install_bpf_linker(&sysroot)?;
        did.push("bpf-linker".into());
    }
    if !pip_packages_present() {
        install_pip_packages()?;
        did.push("pip packages".into());
    }
    if did.is_empty() {
        println!("bootstrap: nothing to install ({} apt packages, nightly rust-src, clippy and rustfmt, bpf-linker, kubernetes-validate and prometheus-client present)", APT_PACKAGES.len());
    } else {
        println!("bootstrap: installed {}", did.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod t {
    #[test]
    fn llvm_major() {
        assert_eq!(super::llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly").as_deref(), Some("22"));
        assert_eq!(super::llvm_major("libLLVM-19-rust-1.84.0-nightly.so").as_deref(), Some("19"));
        assert_eq!(super::llvm_major("libLLVM.so"), None);
    }
}
