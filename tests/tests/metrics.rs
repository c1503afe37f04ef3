//! /metrics on the health port: parsed by Prometheus' own client library
//! (its text-format parser, from the bootstrap's virtualenv), and its values
//! move as they should: datapath counters equal bpftool's reading of the
//! pinned map, leases and peers follow the store, reconciles are counted;
//! every counter of `weft_stats` (`drop_not_ipv6` included) is a sample;
//! in dual stack an IPv6 ping moves `encap` on the sender and
//! `decap_to_pod` on a registered pod's node.
use std::{collections::HashMap, time::Duration};

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, traffic, Cluster, NodeRef, Wiring};

use weft_tests::metrics::{scrape, ARGS};

/// Every sample as `name{labels}` -> value, through prometheus_client's parser
/// (which fails on anything that is not the text exposition format).
fn parse(text: &str) -> Result<HashMap<String, f64>> {
    let py =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| cmd::workspace_dir().join("target")).join("xtask-venv/bin/python");
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} (run `cargo xtask bootstrap`)", py.display()))?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, text.as_bytes())?;
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "prometheus_client could not parse /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn metrics_parse_and_move() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    weft_tests::traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3)?;
    let ns = c.node_ns(1)?;
    let m = parse(&scrape(ns)?)?;
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().with_context(|| format!("no sample {k} in {m:?}"));
    ensure!(get(&m, "weft_leases")? == 2.0 && get(&m, "weft_peers")? == 1.0, "leases/peers: {m:?}");
    ensure!(get(&m, "weft_ready")? == 1.0, "not ready per /metrics");
    ensure!(get(&m, "weft_reconcile_duration_seconds_count")? >= 1.0, "no reconcile counted");
    ensure!(get(&m, "weft_lease_age_seconds")? < 60.0, "lease age {}", get(&m, "weft_lease_age_seconds")?);
    let w1 = c.weft_node(1)?;
    // Unregistered pods: node 1 leaves the VXLAN to its kernel socket.
    for name in ["encap", "decap_kernel"] {
        let idx = stat::NAMES.iter().position(|n| *n == name).unwrap() as u32;
        let (packets, bytes) = bpf::stat_counter(&w1.stats_pin(), idx)?;
        ensure!(packets >= 3, "{name}: {packets} packets counted for 3 pings");
        ensure!(
            get(&m, &format!("weft_datapath_packets_total{{what=\"{name}\"}}"))? == packets as f64
                && get(&m, &format!("weft_datapath_bytes_total{{what=\"{name}\"}}"))? == bytes as f64,
            "{name}: /metrics disagrees with bpftool ({packets}, {bytes})"
        );
    }
    // A third node joins: leases and peers follow.
    let n3 = c.add_weft_node()?;
    c.start_weftd(n3)?;
    c.wait_node_ready(n3)?;
    c.wait_converged()?;
    let ns = c.node_ns(1)?;
    cmd::poll("node 1's /metrics to see 3 leases", Duration::from_secs(10), Duration::from_millis(100), || {
        let m = parse(&scrape(ns).map_err(|e| format!("{e:#}"))?).map_err(|e| format!("{e:#}"))?;
        if m.get("weft_leases") == Some(&3.0) && m.get("weft_peers") == Some(&2.0) {
            Ok(Some(()))
        } else {
            Err(format!("{m:?}"))
        }
    })?;
    c.pass();
    Ok(())
}

/// The datapath counter `name` in a parsed scrape (packets).
fn packets(m: &HashMap<String, f64>, name: &str) -> Result<f64> {
    let k = format!("weft_datapath_packets_total{{what=\"{name}\"}}");
    m.get(&k).copied().with_context(|| format!("no sample {k} in /metrics"))
}

#[test]
fn metrics_count_ipv6() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().weft_nodes(2).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    // Pod 2 registered: its IPv6 packets from the wire go straight into it.
    c.register_endpoint(p2)?;
    let w2 = c.weft_node(2)?;
    let pods6_pin = weft_common::pins::dir(&w2.pin_dir).join(weft_common::map_names::PODS6);
    cmd::poll("node 2 to register its pod's IPv6 address", Duration::from_secs(10), Duration::from_millis(100), || {
        let d = bpf::map_dump(&pods6_pin).map_err(|e| format!("{e:#}"))?;
        if d.as_array().is_some_and(|a| a.len() == 1) {
            Ok(Some(()))
        } else {
            Err(d.to_string())
        }
    })?;
    let scraped = |n: NodeRef| -> Result<HashMap<String, f64>> { parse(&scrape(c.node_ns(n)?)?) };
    let before = (scraped(1)?, scraped(2)?);
    // Every counter weft_stats has is exported, the IPv6 one too.
    for name in stat::NAMES {
        for (n, m) in [(1, &before.0), (2, &before.1)] {
            packets(m, name).with_context(|| format!("node {n}"))?;
            ensure!(m.contains_key(&format!("weft_datapath_bytes_total{{what=\"{name}\"}}")), "node {n}: no bytes sample for {name}");
        }
    }
    const PINGS: u32 = 5;
    let to = c.pods[p2].ip6.context("pod 2 has no IPv6 address")?;
    traffic::ping6_ok(&c.pods[p1].ns, to, PINGS).context("IPv6: pod 1 -> pod 2")?;
    let after = (scraped(1)?, scraped(2)?);
    let moved = |b: &HashMap<String, f64>, a: &HashMap<String, f64>, name: &str| -> Result<f64> { Ok(packets(a, name)? - packets(b, name)?) };
    let encap1 = moved(&before.0, &after.0, "encap")?;
    let to_pod2 = moved(&before.1, &after.1, "decap_to_pod")?;
    ensure!(encap1 >= PINGS as f64, "node 1: encap moved by {encap1} for {PINGS} IPv6 echo requests");
    ensure!(to_pod2 >= PINGS as f64, "node 2: decap_to_pod moved by {to_pod2} for {PINGS} IPv6 echo requests into its registered pod");
    // And /metrics says what the pinned map says.
    for (n, name) in [(1, "encap"), (2, "decap_to_pod")] {
        let idx = stat::NAMES.iter().position(|x| *x == name).unwrap() as u32;
        let (p, b) = bpf::stat_counter(&c.weft_node(n)?.stats_pin(), idx)?;
        let m = scraped(n)?;
        ensure!(
            packets(&m, name)? == p as f64 && m.get(&format!("weft_datapath_bytes_total{{what=\"{name}\"}}")) == Some(&(b as f64)),
            "node {n}: {name}: /metrics disagrees with bpftool ({p}, {b})"
        );
    }
    c.pass();
    Ok(())
}
