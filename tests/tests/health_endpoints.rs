//! /healthz and /readyz on --healthz-ip/--healthz-port: readyz is 503 with
//! the reason while weftd waits for the network config, and 200 once it holds
//! a lease, wrote subnet.env and programmed the dataplane.
use std::time::Duration;

use anyhow::{ensure, Result};
use weft_tests::{
    cmd,
    metrics::{get, ARGS},
    Cluster,
};

#[test]
fn health_endpoints() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(1).no_start().weftd_args(&ARGS).build()?;
    let config_key = format!("{}/config", c.etcd_prefix);
    let config = c.etcd()?.get(&config_key)?.expect("the builder wrote the config");
    c.etcd()?.del(&config_key)?;
    c.start_weftd(1)?;
    let ns = c.node_ns(1)?;
    let waiting = cmd::poll("readyz to say it waits for the config", Duration::from_secs(10), Duration::from_millis(100), || {
        let r = get(ns, "/readyz").map_err(|e| format!("{e:#}"))?;
        if r.starts_with("HTTP/1.1 503") && r.contains("waiting for the network config") {
            Ok(Some(r))
        } else {
            Err(r)
        }
    })?;
    ensure!(get(ns, "/healthz")?.starts_with("HTTP/1.1 200"), "healthz must be 200 while waiting");
    eprintln!("before the config: {}", waiting.lines().last().unwrap_or_default());
    c.etcd()?.put(&config_key, &config)?;
    c.wait_node_ready(1)?;
    let ns = c.node_ns(1)?;
    cmd::poll("readyz 200", Duration::from_secs(10), Duration::from_millis(100), || {
        let r = get(ns, "/readyz").map_err(|e| format!("{e:#}"))?;
        if r.starts_with("HTTP/1.1 200") && r.ends_with("ready\n") {
            Ok(Some(()))
        } else {
            Err(r)
        }
    })?;
    ensure!(get(ns, "/nope")?.starts_with("HTTP/1.1 404"), "unknown paths are 404");
    c.pass();
    Ok(())
}
