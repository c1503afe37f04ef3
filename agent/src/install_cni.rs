//! `weftd install-cni`: puts weft-cni and its network config where the
//! container runtime looks for them, as kube-flannel's two init containers
//! do (`cp flannel /opt/cni/bin/`, `cp cni-conf.json
//! /etc/cni/net.d/10-flannel.conflist`): the binary into `--cni-bin-dir`,
//! `10-weft.conflist` (weft-cni, then `portmap` for hostPorts, as
//! kube-flannel's) into `--cni-conf-dir`. Both are replaced atomically
//! (temporary file in the same directory, fsync, rename), so a runtime
//! never sees half a file and a running weft-cni is never overwritten in
//! place; running it again changes nothing.
use std::{
    ffi::OsString,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

/// The file name of the network config list.
pub const CONFLIST: &str = "10-weft.conflist";
/// The plugin's binary name, which is also its `type` in the conflist (the
/// runtime runs `<CNI_PATH>/<type>`).
pub const PLUGIN: &str = "weft-cni";
/// The CNI versions weft-cni speaks (weft-cni's `version::SUPPORTED`).
const CNI_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "weftd install-cni",
    bin_name = "weftd install-cni",
    about = "Install weft-cni and 10-weft.conflist for the container runtime (as kube-flannel's init containers)"
)]
pub struct InstallArgs {
    /// The weft-cni binary to install [default: weft-cni next to the weftd executable].
    #[arg(long, env = "WEFTD_CNI_BIN")]
    pub cni_bin: Option<PathBuf>,
    /// Where the runtime looks for CNI plugins.
    #[arg(long, env = "WEFTD_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Where the runtime looks for network configs.
    #[arg(long, env = "WEFTD_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The network's name (flannel's is cbr0; the address store is <cni-data-dir>/<name>).
    #[arg(long, default_value = "cbr0")]
    pub network_name: String,
    /// cniVersion of the conflist. 1.0.0 works with every current runtime
    /// and plugin; 1.1.0 (STATUS, GC) needs portmap from plugins 1.5 on.
    #[arg(long, default_value = "1.0.0")]
    pub cni_version: String,
    /// weftd's subnet.env, which weft-cni reads (weftd's --subnet-file).
    #[arg(long, env = "WEFTD_SUBNET_FILE", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,
    /// Where weft-cni writes the endpoint records weftd reads.
    #[arg(long, default_value = "/run/weft/endpoints")]
    pub endpoints_dir: PathBuf,
    /// weft-cni's address store (host-local's directory).
    #[arg(long, default_value = "/var/lib/cni/networks")]
    pub cni_data_dir: PathBuf,
    /// The node bridge pods are attached to (weftd's --pod-bridge).
    #[arg(long, default_value = "cni0")]
    pub bridge: String,
}

/// The conflist `args` describe.
pub fn conflist(a: &InstallArgs) -> serde_json::Value {
    json!({
        "name": a.network_name,
        "cniVersion": a.cni_version,
        "plugins": [
            {
                "type": PLUGIN,
                "subnetFile": a.subnet_file,
                "bridge": a.bridge,
                "endpointsDir": a.endpoints_dir,
                "dataDir": a.cni_data_dir,
                "hairpinMode": true,
                "isDefaultGateway": true
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Writes `bytes` to `dst` with `mode` atomically
/// ([`weft_common::fs::write_atomic`]: the runtime never execs or reads half
/// a file). Returns false (touching nothing) when `dst` already has exactly
/// these bytes and this mode.
pub fn install_file(bytes: &[u8], dst: &Path, mode: u32) -> Result<bool> {
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let (Ok(meta), Ok(have)) = (std::fs::metadata(dst), std::fs::read(dst)) {
        if have == bytes && meta.permissions().mode() & 0o7777 == mode {
            return Ok(false);
        }
    }
    dst.file_name().and_then(|n| n.to_str()).context("destination has no file name")?;
    weft_common::fs::write_atomic(dst, bytes, Some(mode)).with_context(|| format!("installing {}", dst.display()))?;
    Ok(true)
}

/// Installs both files; one line per file says what happened.
pub fn install(a: &InstallArgs) -> Result<Vec<String>> {
    if !CNI_VERSIONS.contains(&a.cni_version.as_str()) {
        bail!("--cni-version {:?}: weft-cni speaks {}", a.cni_version, CNI_VERSIONS.join(", "));
    }
    let src = match &a.cni_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding weftd's own path (give --cni-bin)")?.with_file_name(PLUGIN),
    };
    let bin = std::fs::read(&src).with_context(|| format!("reading the weft-cni binary {} (build it, or give --cni-bin)", src.display()))?;
    if !bin.starts_with(b"\x7fELF") {
        bail!("{} is not an executable (no ELF header)", src.display());
    }
    let mut log = Vec::new();
    let dst = a.cni_bin_dir.join(PLUGIN);
    let changed = install_file(&bin, &dst, 0o755).with_context(|| format!("installing {}", dst.display()))?;
    log.push(format!("{} {} (from {})", if changed { "installed" } else { "unchanged:" }, dst.display(), src.display()));
    let conf = serde_json::to_vec_pretty(&conflist(a))?;
    let dst = a.cni_conf_dir.join(CONFLIST);
    let changed = install_file(&[conf.as_slice(), b"\n"].concat(), &dst, 0o644).with_context(|| format!("installing {}", dst.display()))?;
    log.push(format!("{} {}", if changed { "installed" } else { "unchanged:" }, dst.display()));
    Ok(log)
}

/// `weftd install-cni [flags]`; `args` starts with "install-cni".
pub fn main(args: impl IntoIterator<Item = OsString>) -> std::process::ExitCode {
    let a = InstallArgs::parse_from(args);
    match install(&a) {
        Ok(lines) => {
            for l in lines {
                println!("weftd install-cni: {l}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weftd install-cni: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, bin: &Path) -> InstallArgs {
        InstallArgs::parse_from([
            OsString::from("install-cni"),
            "--cni-bin".into(),
            bin.into(),
            "--cni-bin-dir".into(),
            dir.join("bin").into(),
            "--cni-conf-dir".into(),
            dir.join("net.d").into(),
        ])
    }

    #[test]
    fn installs_atomically_and_idempotently() {
        let dir = std::env::temp_dir().join(format!("weft-install-cni-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("weft-cni-src");
        std::fs::write(&bin, b"\x7fELF fake plugin").unwrap();
        let a = args(&dir, &bin);
        let log = install(&a).unwrap();
        assert!(log[0].starts_with("installed") && log[1].starts_with("installed"), "{log:?}");
        let dst = dir.join("bin/weft-cni");
        assert_eq!(std::fs::read(&dst).unwrap(), b"\x7fELF fake plugin");
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o755);
        let conf: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("net.d/10-weft.conflist")).unwrap()).unwrap();
        assert_eq!(conf["name"], "cbr0");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["plugins"][0]["type"], "weft-cni");
        assert_eq!(conf["plugins"][0]["subnetFile"], "/run/flannel/subnet.env");
        assert_eq!(conf["plugins"][1], json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        // Again: nothing changes, nothing is left behind.
        let log = install(&a).unwrap();
        assert!(log.iter().all(|l| l.starts_with("unchanged")), "{log:?}");
        let names: Vec<String> = std::fs::read_dir(dir.join("bin")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["weft-cni".to_string()]);
        // A new binary replaces the old one.
        std::fs::write(&bin, b"\x7fELF newer").unwrap();
        assert!(install(&a).unwrap()[0].starts_with("installed"));
        assert_eq!(std::fs::read(&dst).unwrap(), b"\x7fELF newer");
        // Errors name what is wrong.
        let e = install(&args(&dir, &dir.join("missing"))).unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
        std::fs::write(dir.join("notabinary"), b"#!/bin/sh").unwrap();
        assert!(format!("{:#}", install(&args(&dir, &dir.join("notabinary"))).unwrap_err()).contains("ELF"));
        let mut bad = a.clone();
        bad.cni_conf_dir = dst.clone(); // a file, not a directory
        assert!(install(&bad).is_err());
        bad = a.clone();
        bad.cni_version = "0.2.0".into();
        assert!(format!("{:#}", install(&bad).unwrap_err()).contains("0.2.0"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
