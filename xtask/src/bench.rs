//! `cargo xtask bench control-plane`: how long weftd takes from N leases
//! written (as fast as the store takes them) to all N programmed in the
//! dataplane (a route on weft.1 per lease; map entries go in before routes),
//! and weftd's RSS then, for both lease stores and for Kubernetes Nodes
//! (`--kube-subnet-mgr`; Nodes watched, and Nodes listed at start). A
//! benchmark, not a test: it reports figures and writes them into
//! docs/performance.md.
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
    /// Kubernetes: how long creating the N Nodes took, and weftd's list and
    /// watch requests (a watch that fell out of the server's history gets
    /// 410 and relists), for the per-run lines.
    note: String,
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

/// Where the leases are, and (for Kubernetes) when weftd sees them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Embedded,
    Etcd,
    /// Nodes created while weftd watches (the same definition as the
    /// other stores: written while weftd runs -> programmed).
    Kube,
    /// Nodes created before weftd starts: weftd's first list of N Nodes,
    /// timed from weftd's start (its start-up, a lease on its own Node, the
    /// list, programming).
    KubeListed,
}

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Etcd => "etcd",
            Store::Kube => "kube (watched)",
            Store::KubeListed => "kube (listed at start)",
        }
    }
}

fn one_run(store: Store, n: usize) -> Result<Sample> {
    let kube = matches!(store, Store::Kube | Store::KubeListed);
    let b = Cluster::builder().weft_nodes(1).config_json(NETWORK);
    // kube mode: weft's own Node gets 10.0.1.0/24 (inside the /10, below
    // the benchmark's Nodes from 10.16.0.0).
    let b = if kube { b.kube().network("10.0.0.0/10") } else { b.embedded_store_if(store == Store::Embedded) };
    let mut c = if store == Store::KubeListed { b.no_start() } else { b }.build()?;
    let kvs = leases(n);
    // kube mode: `put` creates a Node `lease-<subnet>` with that podCIDR and
    // flannel's four annotations, one by one into the API server's store.
    let (t0, created) = if store == Store::KubeListed {
        let t = Instant::now();
        c.store.put_many(&kvs)?;
        let created = t.elapsed();
        let t0 = Instant::now();
        c.start_weftd(1)?;
        (t0, created)
    } else {
        let t0 = Instant::now();
        c.store.put_many(&kvs)?;
        (t0, t0.elapsed())
    };
    let w = c.weft_node(1)?;
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
    // Where the time went inside weftd: its reconciles' own timings.
    let reconciles: Vec<String> =
        w.log_tail(400).lines().filter_map(|l| l.split_once("reconciled ").map(|(_, r)| r.split(':').next().unwrap_or(r).to_string())).collect();
    let note = format!("; weftd: reconciled {}", reconciles.join(", "));
    let note = note
        + &match c.kube() {
            Ok(k) => {
                let reqs: Vec<String> = k
                    .api
                    .counts()
                    .into_iter()
                    .filter(|((v, r, _), _)| (v == "list" || v == "watch") && r == "nodes")
                    .map(|((v, _, code), k)| format!("{v} {code}: {k}"))
                    .collect();
                format!(", Nodes created in {:.0} ms, weftd's requests: {}", created.as_secs_f64() * 1e3, reqs.join(", "))
            }
            Err(_) => String::new(),
        };
    c.pass();
    Ok(Sample { seconds, rss_mb: kb / 1024.0, note })
}

/// `only`: measure the stores whose label contains one of these (all when
/// empty); `docs`: where the figures go (docs/, or target/bench-explore/
/// for a filtered run).
pub fn control_plane(weftd: &Path, sizes: &[usize], docs: &Path, only: &[String]) -> Result<()> {
    // The harness starts the weftd named here (a release build).
    std::env::set_var("WEFTD_BIN", weftd);
    // The machine may be shared: its load goes next to the figures.
    let load = || std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_string)).unwrap_or_else(|| "?".into());
    let load_before = load();
    let mut rows = vec![];
    for store in [Store::Embedded, Store::Etcd, Store::Kube, Store::KubeListed] {
        let label = store.label();
        if !only.is_empty() && !only.iter().any(|o| label.contains(o.as_str())) {
            continue;
        }
        for &n in sizes {
            let mut samples = vec![];
            for r in 1..=RUNS {
                let s = one_run(store, n).with_context(|| format!("{label}, N = {n}, run {r}"))?;
                println!("bench control-plane: {label:22} N = {n:5} run {r}: {:.3} s, RSS {:.1} MB{}", s.seconds, s.rss_mb, s.note);
                samples.push(s);
            }
            let (t, tmin, tmax) = perf::spread(samples.iter().map(|s| s.seconds).collect());
            let (m, _, mmax) = perf::spread(samples.iter().map(|s| s.rss_mb).collect());
            rows.push(format!("| {label} | {n} | {:.0} ms ({:.0}-{:.0}) | {m:.1} MB (max {mmax:.1}) |", t * 1e3, tmin * 1e3, tmax * 1e3));
        }
    }
    let table = format!(
        "| store | leases (Nodes) N | written -> all programmed, median (min-max) of {RUNS} | weftd RSS after, median |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    write_section(
        docs,
        "control-plane",
        "Control plane",
        &format!(
            "Command: `cargo xtask bench control-plane` (release weftd; one node; N leases written at once, \
         etcd in transactions of 125 puts, the embedded store in one locked write; timed until weft.1 \
         has N routes, map entries checked after). Kubernetes (weftd `--kube-subnet-mgr` against the \
         tests' API server, `tests/src/kube_api/`, over HTTPS): N Nodes, each with a podCIDR and \
         flannel's four annotations (vxlan), created one by one in the server's store; \
         *kube (watched)*: created while weftd runs and watches, timed from the first creation, the \
         definition of the other rows; *kube (listed at start)*: created before weftd starts, timed \
         from weftd's start (start-up, its own Node's annotations, the list of N Nodes, programming). \
         Machine: {} cores, 1-minute load average {load_before} before the run and {} after \
         (other work on the machine slows every row alike). Target: 5,000 leases (Nodes listed) in \
         under 1 s, RSS under 50 MB.\n\n{table}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            load()
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
