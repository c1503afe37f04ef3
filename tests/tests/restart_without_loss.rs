//! Restart and upgrade without loss: while a pod pings another at 250
//! packets/s and a TCP stream runs between them, node 1's weftd is killed
//! with SIGKILL and started again, then node 2's weftd is stopped and a new
//! one replaces its programs through the pinned links (an upgrade). No echo
//! request is lost, the TCP stream ends cleanly, and every TC program really
//! was replaced (new program ids on the same links).
use std::{process::Stdio, time::Duration};

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, perf, report, Cluster, NodeRef, Wiring};

/// Program ids behind node `n`'s pinned TC links.
fn link_progs(c: &Cluster, n: NodeRef) -> Result<Vec<(String, u64)>> {
    let dir = weft_common::pins::links_dir(&c.weft_node(n)?.pin_dir);
    let mut out = vec![];
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        let j: serde_json::Value = serde_json::from_str(&cmd::sh("bpftool", &["link", "show", "pinned", &p.to_string_lossy(), "-j"])?)?;
        out.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), j["prog_id"].as_u64().context("no prog_id")?));
    }
    out.sort();
    Ok(out)
}

fn wait_adopted(c: &Cluster, n: NodeRef, starts: usize) -> Result<()> {
    let w = c.weft_node(n)?;
    cmd::poll(&format!("node {n}'s new weftd to replace its programs"), Duration::from_secs(15), Duration::from_millis(20), || {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        if log.matches("datapath attached").count() >= starts { Ok(Some(())) } else { Err(w.log_tail(5)) }
    })
}

#[test]
fn restart_and_upgrade_lose_nothing() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p1)?;
    c.register_endpoint(p2)?;
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll("pod registered", Duration::from_secs(10), Duration::from_millis(100), || {
            let k = weft_tests::bpf::map_dump(&w.pods_pin()).map_err(|e| format!("{e:#}"))?.as_array().map(|a| a.len()).unwrap_or(0);
            if k == 1 { Ok(Some(())) } else { Err(format!("{k}")) }
        })?;
    }
    let before = (link_progs(&c, 1)?, link_progs(&c, 2)?);
    let ip2 = c.pods[p2].ip;
    // 2,000 echo requests at 250/s: 8 s, bounded by count and by timeout.
    let ping = c.pods[p1].ns.command("timeout", &["20", "ping", "-n", "-q", "-i", "0.004", "-c", "2000", "-W", "2", &ip2.to_string()])
        .stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting the ping flood")?;
    let stream = {
        let (client, server) = (c.pods[p1].ns.name().to_string(), c.pods[p2].ns.name().to_string());
        std::thread::spawn(move || -> Result<perf::Bulk> {
            let (client, server) = (weft_tests::netns::Netns::borrowed(&client), weft_tests::netns::Netns::borrowed(&server));
            perf::iperf3(&client, &server, ip2, 7, 1)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    c.weft_node_mut(1)?.kill();
    c.start_weftd(1)?;
    wait_adopted(&c, 1, 2)?;
    std::thread::sleep(Duration::from_millis(1500));
    c.weft_node_mut(2)?.stop();
    c.start_weftd(2)?;
    wait_adopted(&c, 2, 2)?;
    let out = ping.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("2000 packets transmitted, 2000 received"), "echo requests lost across the restarts:\n{text}");
    let bulk = stream.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?.context("the TCP stream across both restarts")?;
    eprintln!("ping: {}\ntcp: {:.2} Gbit/s, {} retransmits", text.lines().find(|l| l.contains("transmitted")).unwrap_or(""), bulk.gbit_per_s, bulk.retransmits);
    report::figure("restart_without_loss", "echo requests lost across a kill -9 restart and an upgrade (of 2,000 at 250/s)", 0.0, "packets");
    report::figure("restart_without_loss", "TCP stream across both: throughput", bulk.gbit_per_s, "Gbit/s");
    let after = (link_progs(&c, 1)?, link_progs(&c, 2)?);
    for (n, (b, a)) in [(1, (&before.0, &after.0)), (2, (&before.1, &after.1))] {
        ensure!(b.len() == a.len() && b.iter().zip(a).all(|((ln, pb), (la, pa))| ln == la && pb != pa),
            "node {n}: every pinned link should now run a new program: before {b:?}, after {a:?}");
    }
    c.pass();
    Ok(())
}
