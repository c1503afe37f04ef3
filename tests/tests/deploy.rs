//! The deployment manifests: valid Kubernetes objects (checked against the
//! API schemas by kubernetes-validate, strict), and the capability set the
//! DaemonSet grants is the one weftd really needs: weftd runs its BPF
//! datapath with exactly those capabilities (root's others dropped from its
//! bounding set) and carries pod traffic; without CAP_BPF, or without
//! CAP_PERFMON (the verifier then refuses the programs), it falls back to
//! the kernel datapath and says why: the set is the smallest that works.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, Cluster, Wiring};

fn deploy_file(name: &str) -> std::path::PathBuf {
    cmd::workspace_dir().join("deploy").join(name)
}

/// The capabilities weft.yaml adds to weftd's container, e.g. ["NET_ADMIN", ...].
fn manifest_caps() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(deploy_file("weft.yaml"))?;
    let line = text.lines().find(|l| l.trim_start().starts_with("add: [")).context("no `add: [...]` capabilities line in weft.yaml")?;
    let inner = line.split('[').nth(1).and_then(|x| x.split(']').next()).context("odd capabilities line")?;
    Ok(inner.split(',').map(|c| c.trim().trim_matches('"').to_string()).filter(|c| !c.is_empty()).collect())
}

#[test]
fn manifests_are_valid_kubernetes_objects() -> Result<()> {
    let files = [deploy_file("weft.yaml"), deploy_file("weft-privileged.yaml")];
    // Installed by `cargo xtask bootstrap` into a virtualenv of the build directory.
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_dir().join("target"))
        .join("xtask-venv/bin/kubernetes-validate");
    let out = cmd::output(std::process::Command::new(&bin).arg("--strict").args(&files))
        .with_context(|| format!("running {} (run `cargo xtask bootstrap`)", bin.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && !text.contains("ERROR"), "kubernetes-validate --strict:\n{text}");
    // Each file: a Namespace, the ConfigMap and the DaemonSet passed.
    ensure!(text.matches(" passed for resource ").count() == 6, "not every object was validated:\n{text}");
    let caps = manifest_caps()?;
    ensure!(caps == ["NET_ADMIN", "BPF", "PERFMON"], "weft.yaml grants {caps:?}; the tests below check exactly NET_ADMIN, BPF, PERFMON");
    let privileged = std::fs::read_to_string(&files[1])?;
    ensure!(privileged.contains("privileged: true") && !privileged.contains("add: ["), "weft-privileged.yaml is not the privileged variant");
    Ok(())
}

/// setpriv: root's capabilities limited to `caps` (bounding set), as a
/// container with `capabilities: {drop: [ALL], add: caps}` runs.
fn only_caps(caps: &[&str]) -> Vec<String> {
    let list: Vec<String> = caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect();
    vec!["setpriv".into(), format!("--bounding-set=-all,{}", list.join(",")), "--".into()]
}

#[test]
fn weftd_runs_with_the_manifests_capabilities() -> Result<()> {
    weft_tests::require_root()?;
    let caps = manifest_caps()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let mut c = Cluster::builder().weft_nodes(3).no_start().build()?;
    let narrow = only_caps(&caps);
    let without_bpf = only_caps(&["NET_ADMIN", "PERFMON"]);
    let without_perfmon = only_caps(&["NET_ADMIN", "BPF"]);
    c.start_weftd_wrapped(1, &narrow.iter().map(String::as_str).collect::<Vec<_>>())?;
    c.start_weftd_wrapped(2, &without_bpf.iter().map(String::as_str).collect::<Vec<_>>())?;
    c.start_weftd_wrapped(3, &without_perfmon.iter().map(String::as_str).collect::<Vec<_>>())?;
    for n in [1, 2, 3] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    let log = |c: &Cluster, n| std::fs::read_to_string(&c.weft_node(n).unwrap().log).unwrap_or_default();
    ensure!(log(&c, 1).contains("datapath: bpf"), "node 1 ({caps:?}) is not on the BPF datapath:\n{}", log(&c, 1));
    ensure!(log(&c, 2).contains("datapath: kernel fallback"), "node 2 (no CAP_BPF) did not fall back and say so:\n{}", log(&c, 2));
    ensure!(
        log(&c, 3).contains("datapath: kernel fallback, because the kernel refused weft's programs"),
        "node 3 (no CAP_PERFMON) did not fall back because the verifier refused:\n{}",
        log(&c, 3)
    );
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::Bridge)?];
    c.register_endpoint(pods[0])?;
    let w1 = c.weft_node(1)?;
    cmd::poll("node 1 (narrow caps) to attach weft_from_pod", Duration::from_secs(10), Duration::from_millis(100), || {
        let pinned = w1.link_pinned("weft_from_pod");
        if pinned {
            Ok(Some(()))
        } else {
            Err(w1.log_tail(5))
        }
    })?;
    c.ping_across_nodes(&pods, 3)?;
    c.pass();
    Ok(())
}
