//! weftd in kube mode keeps its VtepMAC across a reboot as flanneld does:
//! when weft.1 is gone (a reboot removes it; here it is deleted by hand
//! while weftd is stopped), the new device takes the VtepMAC of our Node's
//! `backend-data` annotation, so peers' entries for this node stay right.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_tests::{cmd, kube_store::annotation, metrics::ARGS, traffic, Cluster, NodeRef, Wiring};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// The VtepMAC in node `n`'s Node annotation `backend-data`.
fn annotated_mac(c: &Cluster, n: NodeRef) -> Result<String> {
    let name = c.node_name(n)?;
    let node = c.kube()?.api.node(&name).with_context(|| format!("no Node {name}"))?;
    let data = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&annotation("backend-data")).cloned())
        .with_context(|| format!("Node {name} has no backend-data"))?;
    let v: Value = serde_json::from_str(&data).with_context(|| format!("backend-data {data:?}"))?;
    v["VtepMAC"].as_str().map(str::to_string).with_context(|| format!("no VtepMAC in {data}"))
}

/// weft.1's MAC in node `n`, or None without a weft.1.
fn weft1_mac(c: &Cluster, n: NodeRef) -> Result<Option<String>> {
    let Ok(out) = c.node_ns(n)?.ip(&["-j", "link", "show", "dev", "weft.1"]) else { return Ok(None) };
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -j link: {out}"))?;
    Ok(v[0]["address"].as_str().map(str::to_string))
}

#[test]
fn vtep_mac_survives_a_recreated_device() -> Result<()> {
    let mut c = Cluster::builder().kube().weft_nodes(2).config_json(VXLAN).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let before = annotated_mac(&c, 1)?;
    ensure!(weft1_mac(&c, 1)?.as_deref() == Some(before.as_str()), "weft.1's MAC is not the annotated VtepMAC {before}");

    // A reboot, as far as weft.1 goes: weftd stopped, the device gone.
    c.weft_node_mut(1)?.stop();
    c.node_ns(1)?.ip(&["link", "del", "weft.1"])?;
    ensure!(weft1_mac(&c, 1)?.is_none(), "weft.1 still there");
    c.start_weftd(1)?;
    cmd::poll("node 1's weftd to make weft.1 again", Duration::from_secs(15), Duration::from_millis(100), || match weft1_mac(&c, 1) {
        Ok(Some(m)) => Ok(Some(m)),
        Ok(None) => Err("no weft.1 yet".to_string()),
        Err(e) => Err(format!("{e:#}")),
    })?;
    c.wait_converged()?;
    let after = weft1_mac(&c, 1)?.context("weft.1 gone again")?;
    ensure!(after == before, "the new weft.1 has MAC {after}, not the annotated VtepMAC {before}");
    ensure!(annotated_mac(&c, 1)? == before, "the annotation's VtepMAC changed");
    // Node 2 reaches node 1's pods through the entry it already had.
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip(), 3)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3)?;
    Ok(())
}
