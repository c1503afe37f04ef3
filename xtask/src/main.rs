//! `cargo xtask <command>`: bootstrap the machine, build, test, run weftd,
//! and a lab of network namespaces running weft.
mod bench;
mod bench_dataplanes;
mod bootstrap;
mod lab;
mod lint;
mod profile;
mod soak;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "weft's developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing weft needs (Debian/Ubuntu, root):
    /// apt packages, nightly rust-src, bpf-linker. Says what it installs.
    Bootstrap,
    /// rustfmt --check and clippy -D warnings over the workspace and the
    /// kernel programs (what a whole `cargo xtask test` checks first).
    Lint,
    /// Bootstrap, then build the workspace (agent/build.rs builds the eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Bootstrap, build weftd and weft-cni, run `cargo test --workspace`
    /// (needs root); a whole run (no arguments) first checks rustfmt and
    /// clippy (as `cargo xtask lint`) and smokes the dataplane benchmark
    /// (every path once, 1 s, figures in target/bench-smoke/).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name, `-- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Bring up N weft nodes with pods in network namespaces (on weftd's
    /// embedded lease store; etcd with --etcd; Kubernetes Nodes with
    /// --kube), show pings, a TCP transfer, the leases (with --kube the
    /// Nodes' podCIDRs and annotations) and the BPF maps, then tear down.
    Lab {
        /// Leave the lab running (state in /run/weft-lab/state.json). With
        /// --kube the API server lives in the xtask process: the lab stays
        /// in the foreground instead until Ctrl-C, which tears it down.
        #[arg(long)]
        keep: bool,
        /// Tear down a lab left by --keep.
        #[arg(long, conflicts_with = "keep")]
        down: bool,
        /// Run the lease store as an etcd server in the switch namespace
        /// (default: weftd's embedded store, a directory in the lab's temp dir).
        #[arg(long, conflicts_with = "down")]
        etcd: bool,
        /// Leases are Kubernetes Nodes: the tests' API server in the switch
        /// namespace (in the xtask process), a Node with a podCIDR per node,
        /// weftd --kube-subnet-mgr on every node.
        #[arg(long, conflicts_with_all = ["down", "etcd"])]
        kube: bool,
        /// Dual stack: an IPv6 underlay (fd77::/64) too, the network config
        /// with "EnableIPv6":true,"IPv6Network":"fd44::/48", pods with both
        /// families; pings and TCP over IPv4 and IPv6.
        #[arg(long, conflicts_with_all = ["down", "kube"])]
        dual_stack: bool,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=20))]
        nodes: u32,
    },
    /// Benchmarks (figures, not pass/fail), written into docs/performance.md:
    /// `control-plane` measures leases written -> programmed and weftd's RSS
    /// for the embedded store, etcd and Kubernetes Nodes; `dataplanes` every pod-to-pod path (weft's and
    /// flannel's; vxlan, host-gw and udp) against the bare underlay, veth and
    /// wire-realistic; `host-gw` its host-gw part in veth mode, `udp` its udp part.
    Bench {
        #[arg(value_parser = ["control-plane", "dataplanes", "host-gw", "udp"])]
        what: String,
        /// control-plane: lease (Node) counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
        sizes: Vec<usize>,
        /// Traffic benchmarks: runs per path.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Traffic benchmarks: seconds per iperf3/weft-rr measurement.
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Traffic benchmarks: after the runs, profile one more 1-stream
        /// run of every path with `perf record -a -g` (reports in
        /// target/bench-profiles/, top symbols printed).
        #[arg(long)]
        profile: bool,
        /// Traffic benchmarks: underlay modes to measure. `both` (the
        /// default): veth (GSO passes through) and nic (MTU-sized frames on
        /// the wire, GRO on where the nodes receive, as NIC drivers ship);
        /// `wire`: every offload off; `all`: the three.
        #[arg(long, value_parser = ["both", "veth", "nic", "wire", "all"], default_value = "both")]
        mode: String,
        /// Measure only the paths (control-plane: the stores) whose label contains
        /// one of these (comma-separated, e.g. `tc decap,flannel vxlan`;
        /// `=weft udp` picks that label only; bare is always measured). A
        /// filtered run writes into target/bench-explore/, never into docs/.
        #[arg(long, value_delimiter = ',')]
        paths: Vec<String>,
    },
    /// The long reliability run: node loss, load with churn (60 s), etcd
    /// faults (a 60 s outage, a slow etcd, restarts after compaction) and
    /// restart without loss, one test at a time; writes docs/reliability.md.
    Soak,
    /// Bootstrap, build, run weftd with the given flags (inside an existing
    /// network namespace with --netns).
    Run {
        #[arg(long)]
        netns: Option<String>,
        /// weftd's flags, after `--`.
        #[arg(last = true)]
        flags: Vec<String>,
    },
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent").to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// `cargo` (the one that runs us) in the workspace root, without the
/// per-package variables `cargo run` set for xtask itself.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&k.as_ref())
        {
            c.env_remove(k.as_ref());
        }
    }
    c
}

pub fn status(c: &mut Command) -> Result<()> {
    let st = c.status().with_context(|| format!("running {c:?}"))?;
    if !st.success() {
        bail!("{c:?} failed ({st})");
    }
    Ok(())
}

/// Builds weftd, weft-cni, the reference flannel udp peer and weft-rr (the
/// lab, the tests and the benchmarks run them), debug or release; returns
/// weftd's path.
fn build_bins(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.arg("build");
    if release {
        c.arg("--release");
    }
    c.args(["-p", "weft-agent", "--bin", "weftd", "-p", "weft-cni", "--bin", "weft-cni"]);
    status(c.args(["-p", "weft-tests", "--bin", "flannel-udp-ref", "--bin", "weft-rr"]))?;
    Ok(target_dir().join(if release { "release" } else { "debug" }).join("weftd"))
}

/// `cargo xtask bench dataplanes` cut to a smoke: every path of every
/// testbed once, 1 s per figure, veth mode, on the debug weftd, figures into
/// target/bench-smoke/ (never docs/). It fails where the benchmark would:
/// a path that carries no traffic, a counter that does not show weft
/// carried it, a tool whose output cannot be read.
fn bench_smoke(weftd: &std::path::Path) -> Result<()> {
    println!("xtask: benchmark smoke (cargo xtask bench dataplanes, 1 run of 1 s, veth mode; figures in target/bench-smoke/)");
    let docs = target_dir().join("bench-smoke");
    bench_dataplanes::run(
        weftd,
        &bench_dataplanes::Plan {
            families: &["vxlan", "host-gw", "udp"],
            modes: &[bench_dataplanes::Mode::Veth],
            runs: 1,
            secs: 1,
            section: "dataplanes",
            profile: false,
            docs: &docs,
            only: &[],
            // The IPv6 paths would add a dual-stack build and ~7 s per path.
            ipv6: false,
        },
    )
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Bootstrap => bootstrap::run(),
        Cmd::Lint => {
            bootstrap::run()?;
            lint::run()
        }
        Cmd::Build { release } => {
            bootstrap::run()?;
            let mut c = cargo();
            c.arg("build");
            if release {
                c.arg("--release");
            }
            status(&mut c)
        }
        Cmd::Test { args } => {
            bootstrap::run()?;
            let weftd = build_bins(false)?;
            let mut c = cargo();
            c.args(["test", "--workspace", "--no-fail-fast"]).args(&args).env("WEFTD_BIN", &weftd).env("WEFT_CNI_BIN", weftd.with_file_name("weft-cni"));
            // Test errors are anyhow errors: their messages say what failed;
            // captured backtraces (RUST_BACKTRACE=1) only bury them.
            if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
                c.env("RUST_LIB_BACKTRACE", "0");
            }
            // A whole run (no test named) first checks the habits and
            // smokes the dataplane benchmark; the tests run whatever those
            // say, so cargo test's summary stays the last word and one run
            // reports every failure.
            let whole = args.is_empty();
            let lint = if whole { Some(lint::run()) } else { None };
            let smoke = if whole { Some(bench_smoke(&weftd)) } else { None };
            let tests = status(&mut c);
            if let Some(Err(e)) = lint {
                bail!("{e:#}");
            }
            if let Some(Err(e)) = smoke {
                bail!("the benchmark smoke failed: {e:#}");
            }
            tests
        }
        Cmd::Soak => {
            bootstrap::run()?;
            let weftd = build_bins(false)?;
            soak::run(&weftd)
        }
        Cmd::Lab { down: true, .. } => lab::down(),
        Cmd::Lab { keep, nodes, etcd, kube, dual_stack, .. } => {
            lab::refuse_if_running()?;
            bootstrap::run()?;
            status(cargo().arg("build"))?;
            let store = match (etcd, kube) {
                (_, true) => lab::Store::Kube,
                (true, _) => lab::Store::Etcd,
                _ => lab::Store::Embedded,
            };
            lab::run(&target_dir().join("debug/weftd"), nodes, keep, store, dual_stack)
        }
        Cmd::Bench { what, sizes, runs, secs, profile, mode, paths } => {
            bootstrap::run()?;
            let weftd = build_bins(true)?;
            let modes: &[bench_dataplanes::Mode] = match mode.as_str() {
                "veth" => &[bench_dataplanes::Mode::Veth],
                "nic" => &[bench_dataplanes::Mode::Nic],
                "wire" => &[bench_dataplanes::Mode::Wire],
                "all" => &bench_dataplanes::Mode::ALL,
                _ => &[bench_dataplanes::Mode::Veth, bench_dataplanes::Mode::Nic],
            };
            let docs = if paths.is_empty() { bench::docs_dir() } else { target_dir().join("bench-explore") };
            let only = &paths;
            let plan = |families, modes, section| bench_dataplanes::Plan { families, modes, runs, secs, section, profile, docs: &docs, only, ipv6: true };
            match what.as_str() {
                // host-gw alone is veth mode unless a mode is named.
                "host-gw" => {
                    let modes = if mode == "both" { &[bench_dataplanes::Mode::Veth][..] } else { modes };
                    bench_dataplanes::run(&weftd, &plan(&["host-gw"], modes, "host-gw"))
                }
                "udp" => bench_dataplanes::run(&weftd, &plan(&["udp"], modes, "udp")),
                "dataplanes" => bench_dataplanes::run(&weftd, &plan(&["vxlan", "host-gw", "udp"], modes, "dataplanes")),
                _ => bench::control_plane(&weftd, &sizes, &docs, only),
            }
        }
        Cmd::Run { netns, flags } => {
            bootstrap::run()?;
            let weftd = build_bins(false)?;
            let mut c = match &netns {
                Some(ns) => {
                    let p = PathBuf::from("/var/run/netns").join(ns);
                    if ns.contains('/') || !p.exists() {
                        bail!("network namespace {ns:?} does not exist (ip netns list)");
                    }
                    let mut c = Command::new("nsenter");
                    c.arg(format!("--net={}", p.display())).arg("--").arg(&weftd);
                    c
                }
                None => Command::new(&weftd),
            };
            c.args(&flags);
            eprintln!("xtask: running {c:?}");
            let st = c.status().with_context(|| format!("running {c:?}"))?;
            std::process::exit(st.code().unwrap_or(1));
        }
    }
}
