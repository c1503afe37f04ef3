//! `cargo xtask bench host-gw`: pod-to-pod TCP throughput (1 and 4 streams,
//! iperf3) and request/response round-trip time (sockperf, 64 bytes) on a
//! two-node host-gw cluster, with weft's fast path on and off, against the
//! bare underlay (node to node over the same veth) measured in the same run.
//! Modes alternate within each run so drift hits them alike. A benchmark,
//! not a test: it writes figures into docs/performance.md.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, netns::Netns, perf, Cluster, Wiring};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bare,
    FastPath,
    Stack,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Bare => "bare underlay (node to node)",
            Mode::FastPath => "weft host-gw, fast path on",
            Mode::Stack => "weft host-gw, fast path off (--no-fast-path)",
        }
    }
}

#[derive(Default)]
struct Samples {
    one: Vec<f64>,
    four: Vec<f64>,
    retrans: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Restarts both weftd with the fast path on or off and waits until the
/// programs say so (the bridges exist already, so attachment is immediate).
fn set_fast_path(c: &mut Cluster, on: bool) -> Result<()> {
    for n in [1, 2] {
        c.weft_node_mut(n)?.stop();
        if on { c.start_weftd(n)? } else { c.start_weftd_with(n, &["--no-fast-path"])? }
    }
    for n in [1, 2] {
        c.wait_node_ready(n)?;
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n}: fast path {}", if on { "attached" } else { "released" }), Duration::from_secs(15), Duration::from_millis(50), || {
            if w.fast_path_attached() == on { Ok(Some(())) } else { Err(w.log_tail(3)) }
        })?;
    }
    c.wait_converged()
}

fn fwd_bytes(c: &Cluster) -> Result<u64> {
    Ok(bpf::stat_counter(&c.weft_node(1)?.stats_pin(), stat::FWD)?.1)
}

fn measure(client: &Netns, server: &Netns, ip: std::net::Ipv4Addr, secs: u32, s: &mut Samples) -> Result<()> {
    let one = perf::iperf3(client, server, ip, secs, 1)?;
    let four = perf::iperf3(client, server, ip, secs, 4)?;
    let rtt = perf::sockperf_rtt(client, server, ip, secs)?;
    println!("    1 stream {:6.2} Gbit/s ({} retransmits), 4 streams {:6.2} Gbit/s, RTT p50 {:.1} us p99 {:.1} us",
        one.gbit_per_s, one.retransmits, four.gbit_per_s, rtt.p50_us, rtt.p99_us);
    s.one.push(one.gbit_per_s);
    s.four.push(four.gbit_per_s);
    s.retrans.push(one.retransmits as f64);
    s.p50.push(rtt.p50_us);
    s.p99.push(rtt.p99_us);
    Ok(())
}

pub fn run(weftd: &std::path::Path, runs: usize, secs: u32) -> Result<()> {
    std::env::set_var("WEFTD_BIN", weftd);
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let modes = [Mode::Bare, Mode::FastPath, Mode::Stack];
    let mut samples: Vec<Samples> = modes.iter().map(|_| Samples::default()).collect();
    for r in 1..=runs {
        for (i, &m) in modes.iter().enumerate() {
            println!("bench host-gw: run {r}/{runs}, {}", m.label());
            if m != Mode::Bare {
                set_fast_path(&mut c, m == Mode::FastPath)?;
            }
            let before = fwd_bytes(&c)?;
            if m == Mode::Bare {
                let ip = c.node_ip(2)?;
                measure(c.node_ns(1)?, c.node_ns(2)?, ip, secs, &mut samples[i])?;
            } else {
                let ip = c.pods[p2].ip;
                measure(&c.pods[p1].ns, &c.pods[p2].ns, ip, secs, &mut samples[i])?;
            }
            // The figures must describe the path they are labelled with.
            let carried = fwd_bytes(&c)? - before;
            match m {
                Mode::FastPath => ensure!(carried > 1 << 30, "fast path on, but weft_fwd carried only {carried} bytes"),
                _ => ensure!(carried == 0, "{}: weft_fwd carried {carried} bytes", m.label()),
            }
        }
    }
    c.pass();
    write(&modes, &samples, runs, secs)
}

fn write(modes: &[Mode], samples: &[Samples], runs: usize, secs: u32) -> Result<()> {
    let bare1 = perf::spread(samples[0].one.clone()).0;
    let bare4 = perf::spread(samples[0].four.clone()).0;
    let bare_p50 = perf::spread(samples[0].p50.clone()).0;
    let mut rows = vec![];
    let mut json = vec![];
    for (m, s) in modes.iter().zip(samples) {
        let (one, one_min, one_max) = perf::spread(s.one.clone());
        let (four, four_min, four_max) = perf::spread(s.four.clone());
        let (p50, _, _) = perf::spread(s.p50.clone());
        let (p99, _, _) = perf::spread(s.p99.clone());
        let (re, _, _) = perf::spread(s.retrans.clone());
        rows.push(format!(
            "| {} | {one:.2} ({one_min:.2}-{one_max:.2}) | **{:.2}x** | {four:.2} ({four_min:.2}-{four_max:.2}) | {:.2}x | {p50:.1} (+{:.1}) | {p99:.1} | {re:.0} |",
            m.label(), one / bare1, four / bare4, p50 - bare_p50
        ));
        json.push(serde_json::json!({
            "mode": m.label(),
            "gbit_per_s_1_stream": s.one, "gbit_per_s_4_streams": s.four,
            "rtt_p50_us": s.p50, "rtt_p99_us": s.p99, "retransmits_1_stream": s.retrans,
            "ratio_to_bare_1_stream": one / bare1, "ratio_to_bare_4_streams": four / bare4,
        }));
    }
    let table = format!(
        "| path | 1 stream Gbit/s, median (min-max) | ratio to bare | 4 streams Gbit/s | ratio | RTT p50 us (over bare) | RTT p99 us | retransmits, 1 stream |\n|---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    let dir = crate::workspace().join("docs/perf");
    std::fs::create_dir_all(&dir)?;
    let jpath = dir.join("host-gw.json");
    std::fs::write(&jpath, serde_json::to_string_pretty(&serde_json::json!({ "runs": runs, "secs": secs, "modes": json }))?)
        .with_context(|| format!("writing {}", jpath.display()))?;
    crate::bench::write_section("host-gw", "host-gw: fast path on and off", &format!(
        "Command: `cargo xtask bench host-gw` (release weftd; two nodes on one veth segment, one bridge pod each; \
         {runs} runs, each alternating the three paths; iperf3 {secs} s pod to pod, 1 and 4 streams; sockperf TCP \
         ping-pong, 64-byte messages, {secs} s, full round trip). The bare underlay is node to node over the same \
         veth. Ratios are of medians, to the bare underlay of the same run. Per-run samples: `docs/perf/host-gw.json`. \
         Machine: {} cores. Target: fast path >= 0.95x bare, 1 stream.\n\n{table}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ))
}
