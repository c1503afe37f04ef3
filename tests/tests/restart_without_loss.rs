//! Restart and upgrade without loss: while a pod pings another at 250
//! packets/s and a TCP stream runs between them, node 1's weftd is killed
//! with SIGKILL and started again, then node 2's weftd is stopped and a new
//! one replaces its programs through the pinned links (an upgrade). No echo
//! request is lost, the TCP stream ends cleanly, and every TC program really
//! was replaced (new program ids on the same links).
use std::time::Duration;

use anyhow::{Context, Result};
use weft_tests::{cmd, perf, report, traffic::PingFlood, weft_node::PinnedLink, Cluster, NodeRef, Wiring};

/// Waits until node `n`'s new weftd has replaced the program behind each
/// of its pinned links (`before`: the links as the old weftd left them).
fn wait_adopted(c: &Cluster, n: NodeRef, before: &[PinnedLink]) -> Result<()> {
    c.weft_node(n)?.wait_links_replaced(before, Duration::from_secs(15)).map(|_| ()).with_context(|| format!("node {n}'s new weftd"))
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
            if k == 1 {
                Ok(Some(()))
            } else {
                Err(format!("{k}"))
            }
        })?;
    }
    let before = (c.weft_node(1)?.pinned_links()?, c.weft_node(2)?.pinned_links()?);
    let ip2 = c.pods[p2].ip();
    // 2,000 echo requests at 250/s: 8 s, bounded by count and by timeout.
    let ping = PingFlood::start(&c.pods[p1].ns, ip2, 2000, 20)?;
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
    wait_adopted(&c, 1, &before.0)?;
    std::thread::sleep(Duration::from_millis(1500));
    c.weft_node_mut(2)?.stop();
    c.start_weftd(2)?;
    wait_adopted(&c, 2, &before.1)?;
    let summary = ping.all_answered("across the restarts")?;
    let bulk = stream.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?.context("the TCP stream across both restarts")?;
    eprintln!("ping: {}\ntcp: {:.2} Gbit/s, {} retransmits", summary, bulk.gbit_per_s, bulk.retransmits);
    report::figure("restart_without_loss", "echo requests lost across a kill -9 restart and an upgrade (of 2,000 at 250/s)", 0.0, "packets");
    report::figure("restart_without_loss", "TCP stream across both: throughput", bulk.gbit_per_s, "Gbit/s");
    c.pass();
    Ok(())
}
