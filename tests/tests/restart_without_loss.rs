//! Restart and upgrade without loss: while a pod pings another at 250
//! packets/s and a TCP stream runs between them, node 1's weftd is killed
//! with SIGKILL and started again, then node 2's weftd is stopped and a new
//! one replaces its programs through the pinned links (an upgrade). No echo
//! request is lost, the TCP stream ends cleanly, and every TC program really
//! was replaced (new program ids on the same links).
use std::time::Duration;

use anyhow::{ensure, Context, Result};
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

/// weftd entered its network namespace with `ip netns exec`, which gives it
/// a mount namespace of its own with /sys remounted (no bpffs at
/// /sys/fs/bpf). It adopts the host's bpffs, so its pins are where this
/// test (in the host's mount namespace) sees them, and a kill -9 restart
/// the same way under a 250/s ping flood loses no echo request. Before,
/// weftd mounted a bpffs of its own there, whose pins died with it (1.3% of
/// a 200/s flood lost).
#[test]
fn restart_under_ip_netns_exec_loses_nothing() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).no_start().build()?;
    let exec = |c: &Cluster, n: NodeRef| -> Result<Vec<String>> { Ok(vec!["ip".into(), "netns".into(), "exec".into(), c.node_ns(n)?.name().to_string()]) };
    for n in [1, 2] {
        let w = exec(&c, n)?;
        c.start_weftd_wrapped(n, &w.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    // The pins are on the host's bpffs, not on one that ends with weftd.
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        ensure!(w.pinned_links()?.len() >= 2, "node {n}: weftd run by `ip netns exec` left no pinned links in {} (the host's bpffs)", w.pin_dir.display());
    }
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    let before = c.weft_node(1)?.pinned_links()?;
    let ping = PingFlood::start(&c.pods[p1].ns, c.pods[p2].ip(), 2000, 20)?;
    std::thread::sleep(Duration::from_millis(1500));
    c.weft_node_mut(1)?.kill();
    let w = exec(&c, 1)?;
    c.start_weftd_wrapped(1, &w.iter().map(String::as_str).collect::<Vec<_>>())?;
    wait_adopted(&c, 1, &before)?;
    let summary = ping.all_answered("across a kill -9 restart of a weftd run by `ip netns exec`")?;
    eprintln!("ping: {summary}");
    report::figure("restart_without_loss", "echo requests lost across a kill -9 restart under ip netns exec (of 2,000 at 250/s)", 0.0, "packets");
    c.pass();
    Ok(())
}

/// Where no persistent bpffs can be found (here: weftd alone in PID and
/// mount namespaces of its own whose /sys/fs/bpf is unmounted, as in a
/// container without the host's /sys/fs/bpf), weftd mounts a bpffs of its
/// own and says that a restart will drop traffic and what to mount: on
/// /readyz and, through it, in `weftd status`. A node started as usual says
/// nothing of the kind.
#[test]
fn a_private_bpffs_is_reported() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&weft_tests::metrics::ARGS).no_start().build()?;
    let container: [&str; 12] = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        "umount -l /sys/fs/bpf 2>/dev/null; exec \"$0\" \"$@\"",
        "--",
    ];
    // `sh -c script arg0 args..`: weftd must be $0, so no "--" after the script.
    c.start_weftd_wrapped(1, &container[..11])?;
    c.start_weftd(2)?;
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    let warning = |n: NodeRef| -> Result<serde_json::Value> {
        let w = c.weft_node(n)?;
        let mut cmd = w.ns.nsenter(&cmd::weftd_bin()?);
        cmd.args(["status", "--json"]).args(c.store.weftd_args()).args(weft_tests::metrics::ARGS);
        cmd.arg("--subnet-file").arg(&w.subnet_file).arg("--bpf-pin-dir").arg(&w.pin_dir);
        let doc: serde_json::Value = serde_json::from_str(&cmd::run(&mut cmd)?).context("status --json")?;
        Ok(doc["bpf_pins_warning"].clone())
    };
    let readyz = weft_tests::metrics::get(&c.weft_node(1)?.ns, "/readyz")?;
    ensure!(readyz.lines().any(|l| l.starts_with("warning: ") && l.contains("/sys/fs/bpf")), "node 1's /readyz says nothing of its private bpffs:\n{readyz}");
    let w1 = warning(1)?;
    ensure!(w1.as_str().is_some_and(|w| w.contains("hostPath")), "node 1's status: bpf_pins_warning {w1}, want the advice to mount the host's /sys/fs/bpf");
    let w2 = warning(2)?;
    ensure!(w2.is_null(), "node 2 (pins on the host's bpffs): bpf_pins_warning {w2}");
    c.pass();
    Ok(())
}
