//! `cargo xtask bench control-plane`: how long weftd takes from N leases
//! written (as fast as the store takes them) to all N programmed in the
//! dataplane (a route on weft.1 per lease; map entries go in before routes),
//! and weftd's RSS then, for both lease stores. A benchmark, not a test: it
//! reports figures and writes them into docs/performance.md.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use weft_tests::{bpf, cmd, perf, Cluster};

/// A /10 holds 16,384 /24 subnets: room for 5,000 leases.
const NETWORK: &str = r#"{"Network":"10.0.0.0/10","Backend":{"Type":"vxlan"}}"#;
const RUNS: usize = 3;

struct Sample {
    seconds: f64,
    rss_mb: f64,
}

/// N distinct flannel-format vxlan leases in 10.16.0.0 upward.
fn leases(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let (a, b) = (16 + i / 256, i % 256);
            let value = format!(
                r#"{{"PublicIP":"192.168.78.{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:{:02x}:{:02x}"}}}}"#,
                1 + i % 250,
                i / 256,
                i % 256
            );
            (format!("10.{a}.{b}.0-24"), value)
        })
        .collect()
}

fn one_run(embedded: bool, n: usize) -> Result<Sample> {
    let c = Cluster::builder().weft_nodes(1).config_json(NETWORK).embedded_store_if(embedded).build()?;
    let w = c.weft_node(1)?;
    let kvs = leases(n);
    let t0 = Instant::now();
    c.store.put_many(&kvs)?;
    cmd::poll(&format!("{n} routes on weft.1"), Duration::from_secs(60), Duration::from_millis(5), || {
        let k = w.overlay_routes().map_err(|e| format!("{e:#}"))?.lines().count();
        if k >= n {
            Ok(Some(()))
        } else {
            Err(format!("{k} of {n} routes"))
        }
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let entries = bpf::map_dump(&w.vteps_pin())?.as_array().map(|a| a.len()).unwrap_or(0);
    ensure!(entries == n, "weft_vteps holds {entries} entries, expected {n}");
    let pid = w.pid().context("weftd is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).context("no VmRSS")?;
    c.pass();
    Ok(Sample { seconds, rss_mb: kb / 1024.0 })
}

pub fn control_plane(weftd: &Path, sizes: &[usize]) -> Result<()> {
    // The harness starts the weftd named here (a release build).
    std::env::set_var("WEFTD_BIN", weftd);
    let mut rows = vec![];
    for embedded in [true, false] {
        let store = if embedded { "embedded" } else { "etcd" };
        for &n in sizes {
            let mut samples = vec![];
            for r in 1..=RUNS {
                let s = one_run(embedded, n).with_context(|| format!("{store}, N = {n}, run {r}"))?;
                println!("bench control-plane: {store:8} N = {n:5} run {r}: {:.3} s, RSS {:.1} MB", s.seconds, s.rss_mb);
                samples.push(s);
            }
            let (t, tmin, tmax) = perf::spread(samples.iter().map(|s| s.seconds).collect());
            let (m, _, mmax) = perf::spread(samples.iter().map(|s| s.rss_mb).collect());
            rows.push(format!("| {store} | {n} | {:.0} ms ({:.0}-{:.0}) | {m:.1} MB (max {mmax:.1}) |", t * 1e3, tmin * 1e3, tmax * 1e3));
        }
    }
    let table = format!(
        "| store | leases N | written -> all programmed, median (min-max) of {RUNS} | weftd RSS after, median |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    write_section(
        &docs_dir(),
        "control-plane",
        "Control plane",
        &format!(
            "Command: `cargo xtask bench control-plane` (release weftd; one node; N leases written at once, \
         etcd in transactions of 125 puts, the embedded store in one locked write; timed until weft.1 \
         has N routes, map entries checked after). Machine: {} cores. Target: 5,000 leases in under \
         1 s, RSS under 50 MB.\n\n{table}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        ),
    )
}

/// `docs/`, where the benchmarks write their figures.
pub fn docs_dir() -> std::path::PathBuf {
    crate::workspace().join("docs")
}

/// Replaces the section between `<!-- NAME -->` markers in
/// `<docs>/performance.md`, or appends it (other benchmarks own the other
/// sections).
pub fn write_section(docs: &Path, name: &str, title: &str, body: &str) -> Result<()> {
    std::fs::create_dir_all(docs)?;
    let path = docs.join("performance.md");
    let old = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| "# weft performance\n\nFigures written by `cargo xtask bench`; each section says the command that made it.\n".into());
    let (start, end) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    let section = format!("{start}\n## {title}\n\n{body}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote {}", path.display());
    Ok(())
}
