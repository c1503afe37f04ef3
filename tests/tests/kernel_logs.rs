//! Kernel-side logs (aya-log): off by default, switched on and off at run
//! time by `weftd log-level` without a restart, printed by the running
//! weftd. The logged event here: a pod's TTL-1 packet that the host-gw fast
//! path hands to the stack.
use std::time::Duration;

use anyhow::{ensure, Result};
use weft_tests::{cmd, Cluster, Wiring};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

fn log_level(c: &Cluster, level: &str) -> Result<String> {
    let pin = c.weft_node(1)?.pin_dir.display().to_string();
    cmd::sh(&cmd::weftd_bin()?.display().to_string(), &["log-level", level, "--bpf-pin-dir", &pin])
}

#[test]
fn kernel_logs_switch_at_run_time() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    let w1 = c.weft_node(1)?;
    cmd::poll("node 1's fast path", Duration::from_secs(10), Duration::from_millis(100), || {
        if w1.fast_path_attached() {
            Ok(Some(()))
        } else {
            Err(w1.log_tail(3))
        }
    })?;
    let target = c.pods[p2].ip().to_string();
    let ttl1 = || c.pods[p1].ns.exec_output("timeout", &["5", "ping", "-n", "-c", "1", "-W", "1", "-t", "1", &target]);
    let lines = || -> Result<usize> {
        Ok(std::fs::read_to_string(&c.weft_node(1)?.log)?.lines().filter(|l| l.contains("weft_kernel") && l.contains(&format!("TTL 1 to {target}"))).count())
    };
    ttl1()?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(lines()? == 0, "kernel logs are on by default");

    let out = log_level(&c, "debug")?;
    ensure!(out.contains("kernel-side logs: debug"), "weftd log-level debug said: {out}");
    ttl1()?;
    cmd::poll("the kernel's log line in weftd's log", Duration::from_secs(5), Duration::from_millis(100), || match lines() {
        Ok(n) if n >= 1 => Ok(Some(())),
        Ok(_) => Err(c.weft_node(1).map(|w| w.log_tail(5)).unwrap_or_default()),
        Err(e) => Err(format!("{e:#}")),
    })?;

    log_level(&c, "off")?;
    let n = lines()?;
    ttl1()?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(lines()? == n, "kernel logs kept coming after `log-level off`");
    let e = cmd::sh(&cmd::weftd_bin()?.display().to_string(), &["log-level", "debug", "--bpf-pin-dir", "/nonexistent"]).unwrap_err();
    ensure!(format!("{e:#}").contains("/nonexistent"), "a wrong pin dir is not named: {e:#}");
    c.pass();
    Ok(())
}
