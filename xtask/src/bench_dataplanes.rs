//! `cargo xtask bench dataplanes` (and its subset `bench host-gw`): every
//! path pod traffic can take between two nodes, measured in one run with the
//! same traffic, each as a ratio to the bare underlay of the same testbed:
//! - vxlan testbed: bare underlay; flannel's kernel vxlan (two nodes
//!   programmed exactly as flanneld programs them); weft vxlan into
//!   registered pods (as weft-cni registers them) and into unregistered pods
//!   (through the overlay device), each also with the earlier ifb overlay
//!   device (no kernel vxlan socket: no GRO for VXLAN);
//! - host-gw testbed: bare; flannel's host-gw routes; weft host-gw with the
//!   fast path on and off;
//! - udp testbed: bare; the reference udp peer (flannel's proxy: one packet
//!   per syscall, one thread); weft udp, with its offloads and without,
//!   and with per-CPU workers (--udp-per-cpu).
//!
//! IPv6 (dual stack, issue 23): the vxlan and host-gw testbeds are built in
//! dual stack (an IPv6 underlay fd77::/64 beside the IPv4 one, pods with an
//! address of each family) when a measured path is IPv6, and then carry
//! each of their paths but the ifb overlay's over IPv6 too, in rows of their
//! own ("weft vxlan, TC decap (IPv6)"), each IPv6 ratio against the bare
//! IPv6 underlay (node to node over fd77::/64) of the same run: flannel's
//! kernel vxlan over IPv6 (`flannel-v6.1`), weft vxlan over IPv6
//! (`weft-v6.1`; registered pods get it straight in, `weft_overlay_in6`,
//! unregistered ones through the stack), flannel's and weft's host-gw
//! routes `<v6 subnet> via <PublicIPv6>` (weft with and without the fast
//! path). udp has no IPv6 (flannel's udp backend has none).
//!
//! Metrics: TCP 1 and 4 streams (iperf3), UDP request/response round trip
//! p50/p99 (weft-rr, 64 bytes, busy-polling ends), 64-byte UDP datagrams per
//! second (iperf3), and busy CPU seconds of the machine per GB moved (1-stream run). Two
//! underlay modes by default: veth as it is (64 KB GSO packets cross it
//! untouched) and NIC-like (MTU-sized frames on the wire, GRO on where the
//! nodes receive); `--mode wire` (all offloads off) on request. Paths alternate within each run so drift hits
//! them alike; figures are medians over runs with min and max. Before each
//! weft figure is kept, its counters must show that weft's programs carried
//! the traffic. Every path gets a 1 s warm-up transfer, not kept, before it
//! is measured. A benchmark, not a test.
use std::{net::IpAddr, path::Path as FsPath, time::Duration};

use anyhow::{ensure, Context, Result};
use weft_common::{map_names, stat};
use weft_tests::{
    bpf, cluster::dual_stack_config, cmd, flannel_node::FlannelBackend, metrics, netns::Netns, perf, pod::Family as IpFamily, Cluster, NodeRef, Wiring,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Vxlan,
    HostGw,
    Udp,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Bare,
    FlannelVxlan,
    WeftVxlanTc,
    WeftVxlanViaHost,
    /// The two above with weft's earlier overlay device (an ifb: no kernel
    /// vxlan socket, so no GRO for VXLAN and weft decapsulates all of it).
    WeftVxlanTcIfb,
    WeftVxlanViaHostIfb,
    FlannelHostGw,
    WeftHostGwFast,
    WeftHostGwStack,
    FlannelUdpRef,
    WeftUdp,
    WeftUdpNoOffload,
    WeftUdpPerCpu,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Bare => "bare underlay",
            Path::FlannelVxlan => "flannel vxlan (kernel)",
            Path::WeftVxlanTc => "weft vxlan, TC decap",
            Path::WeftVxlanViaHost => "weft vxlan, unregistered pod (via weft.1)",
            Path::WeftVxlanTcIfb => "weft vxlan, TC decap, ifb overlay",
            Path::WeftVxlanViaHostIfb => "weft vxlan, unregistered pod, ifb overlay",
            Path::FlannelHostGw => "flannel host-gw (routes)",
            Path::WeftHostGwFast => "weft host-gw, fast path",
            Path::WeftHostGwStack => "weft host-gw, --no-fast-path",
            Path::FlannelUdpRef => "flannel udp (reference proxy)",
            Path::WeftUdp => "weft udp",
            Path::WeftUdpNoOffload => "weft udp, --udp-no-offload",
            Path::WeftUdpPerCpu => "weft udp, --udp-per-cpu",
        }
    }

    /// Whether the path is also measured over IPv6 (dual stack): all but
    /// udp's (flannel's udp backend has no IPv6) and the ifb overlay's
    /// (an IPv4-only device; IPv6 always takes `weft-v6.<VNI>`).
    fn has_v6(self) -> bool {
        !matches!(self, Path::WeftVxlanTcIfb | Path::WeftVxlanViaHostIfb | Path::FlannelUdpRef | Path::WeftUdp | Path::WeftUdpNoOffload | Path::WeftUdpPerCpu)
    }

    /// weftd's flags for this path (None: weft's nodes are not involved).
    /// The bare underlay runs between the weft nodes, with the default flags.
    fn weftd_flags(self) -> Option<&'static [&'static str]> {
        match self {
            Path::Bare | Path::WeftVxlanTc | Path::WeftVxlanViaHost | Path::WeftHostGwFast | Path::WeftUdp => Some(&[]),
            Path::WeftUdpNoOffload => Some(&["--udp-no-offload"]),
            Path::WeftUdpPerCpu => Some(&["--udp-per-cpu"]),
            Path::WeftVxlanTcIfb | Path::WeftVxlanViaHostIfb => Some(&["--overlay-kind", "ifb"]),
            Path::WeftHostGwStack => Some(&["--no-fast-path"]),
            _ => None,
        }
    }
}

/// A path's label in a family: the IPv4 label as it always was, the
/// IPv6 one with ` (IPv6)` after it (and IPv6's overlay device, weft-v6.1,
/// where the IPv4 label names weft.1).
fn label(p: Path, af: IpFamily) -> String {
    match af {
        IpFamily::V4 => p.label().to_string(),
        IpFamily::V6 => format!("{} (IPv6)", p.label().replace("weft.1", "weft-v6.1")),
    }
}

/// Whether the `--paths` filter `o` picks the path labelled `label`: a
/// fragment of the label (any case), or with a leading `=` the whole label.
fn picks(o: &str, label: &str) -> bool {
    match o.strip_prefix('=') {
        Some(exact) => label.eq_ignore_ascii_case(exact.trim()),
        None => label.to_lowercase().contains(&o.to_lowercase()),
    }
}

fn paths(f: Family) -> &'static [Path] {
    match f {
        // Host path right after TC: same flags, no restart between them.
        Family::Vxlan => &[Path::Bare, Path::FlannelVxlan, Path::WeftVxlanTc, Path::WeftVxlanViaHost, Path::WeftVxlanTcIfb, Path::WeftVxlanViaHostIfb],
        Family::HostGw => &[Path::Bare, Path::FlannelHostGw, Path::WeftHostGwFast, Path::WeftHostGwStack],
        Family::Udp => &[Path::Bare, Path::FlannelUdpRef, Path::WeftUdp, Path::WeftUdpPerCpu, Path::WeftUdpNoOffload],
    }
}

/// A testbed's (path, family) pairs in the order a run measures them: each
/// path's IPv6 right after its IPv4 (same weftd flags, no restart between
/// them), IPv6 only with `ipv6` (and not on udp's testbed).
fn cases(f: Family, ipv6: bool) -> Vec<(Path, IpFamily)> {
    // udp's testbed has no IPv6 path, so no IPv6 bare either.
    let v6 = |p: Path| if ipv6 && f != Family::Udp && p.has_v6() { Some((p, IpFamily::V6)) } else { None };
    paths(f).iter().flat_map(|&p| std::iter::once((p, IpFamily::V4)).chain(v6(p))).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Veth,
    /// As a NIC: MTU-sized frames on the wire (TSO/GSO off everywhere), GRO
    /// on where the nodes receive (their eth0), as NIC drivers ship.
    Nic,
    Wire,
}

impl Mode {
    /// Every mode, in the order the tables show them.
    pub const ALL: [Mode; 3] = [Mode::Veth, Mode::Nic, Mode::Wire];

    fn label(self) -> &'static str {
        match self {
            Mode::Veth => "veth (GSO passes)",
            Mode::Nic => "NIC-like (MTU frames on the wire, GRO on receive)",
            Mode::Wire => "wire-realistic (TSO/GSO/GRO off)",
        }
    }

    /// A short name for file names and chart labels.
    fn short(self) -> &'static str {
        match self {
            Mode::Veth => "veth",
            Mode::Nic => "nic",
            Mode::Wire => "wire",
        }
    }
}

#[derive(Default, Clone)]
struct Samples {
    one: Vec<f64>,
    four: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    pps: Vec<f64>,
    cpu_per_gb: Vec<f64>,
}

/// One two-node testbed: two weft nodes and two flannel-programmed nodes of
/// the same backend on one switch, one pod per node (weft's registered,
/// plus an unregistered pod per weft node). In dual stack the nodes also
/// have an IPv6 underlay (fd77::N) and the pods an IPv6 address each.
struct Bed {
    family: Family,
    c: Cluster,
    weft: [usize; 2],
    unregistered: [usize; 2],
    flannel: [usize; 2],
    flags: Option<Vec<String>>,
    /// The underlay mode being measured (its offloads).
    mode: Mode,
}

impl Bed {
    fn build(f: Family, dual_stack: bool) -> Result<Bed> {
        let (backend, fb) = match f {
            Family::Vxlan => ("vxlan", FlannelBackend::Vxlan),
            Family::HostGw => ("host-gw", FlannelBackend::HostGw),
            Family::Udp => ("udp", FlannelBackend::Udp),
        };
        let cfg = match dual_stack {
            true => dual_stack_config("10.244.0.0/16", backend),
            false => format!(r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{backend}"}}}}"#),
        };
        // udp's counters are in weftd's /metrics (no pinned maps).
        let b = Cluster::builder().config_json(&cfg).weft_nodes(2).weftd_args(&["--healthz-ip", "127.0.0.1", "--healthz-port", metrics::PORT]);
        let mut c = if dual_stack { b.dual_stack() } else { b }.build()?;
        c.wait_converged()?;
        let (f1, f2) = (c.add_flannel_node_with(fb, 0)?, c.add_flannel_node_with(fb, 0)?);
        c.program_flannel_nodes()?;
        c.wait_converged()?;
        let weft = [c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?];
        let unregistered = [c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?];
        let flannel = [c.add_pod(f1, Wiring::Bridge)?, c.add_pod(f2, Wiring::Bridge)?];
        if f != Family::Udp {
            for p in weft {
                c.register_endpoint(p)?;
            }
        }
        Ok(Bed { family: f, c, weft, unregistered, flannel, flags: Some(vec![]), mode: Mode::Veth })
    }

    /// Restarts both weftd with `flags` unless they run with them already,
    /// then waits until the pods are registered (or not, without the fast path).
    fn set_weftd(&mut self, flags: &[&str]) -> Result<()> {
        let want: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        if self.flags.as_ref() == Some(&want) {
            return Ok(());
        }
        for n in [1, 2] {
            self.c.weft_node_mut(n)?.stop();
            self.c.start_weftd_with(n, flags)?;
        }
        // The mode's offloads again: cheap, and no restart may leave the
        // underlay in another mode (best effort).
        if let Err(e) = self.set_offloads() {
            println!("    (offloads after restarting weftd with {flags:?}: {e:#})");
        }
        let registered = !flags.contains(&"--no-fast-path");
        for n in [1, 2] {
            self.c.wait_node_ready(n)?;
            if self.family == Family::Udp {
                continue;
            }
            let w = self.c.weft_node(n)?;
            // Dual stack: the pod's IPv6 address in weft_pods6 too.
            let mut maps = vec![(w.pods_pin(), map_names::PODS)];
            if self.c.dual_stack {
                maps.push((w.pods_pin().with_file_name(map_names::PODS6), map_names::PODS6));
            }
            for (pin, name) in maps {
                cmd::poll(&format!("node {n}: pod registered = {registered} ({name})"), Duration::from_secs(15), Duration::from_millis(50), || {
                    let k = bpf::map_dump(&pin).map_err(|e| format!("{e:#}"))?.as_array().map(|a| a.len()).unwrap_or(0);
                    if (k == 1) == registered {
                        Ok(Some(()))
                    } else {
                        Err(format!("{k} pods in {name}"))
                    }
                })?;
            }
        }
        self.c.wait_converged()?;
        self.flags = Some(want);
        Ok(())
    }

    /// Runs weftd as path `p` needs it (a path with no flags of its own
    /// leaves weftd as it is).
    fn prepare(&mut self, p: Path) -> Result<()> {
        match p.weftd_flags() {
            Some(flags) => self.set_weftd(flags),
            None => Ok(()),
        }
    }

    /// (client, server, server address) of a path in a family: the nodes'
    /// underlay addresses for bare (fd77::N over IPv6), else the pods'.
    fn ends(&self, p: Path, af: IpFamily) -> Result<(&Netns, &Netns, IpAddr)> {
        let pods = |[a, b]: [usize; 2]| -> Result<(&Netns, &Netns, IpAddr)> { Ok((&self.c.pods[a].ns, &self.c.pods[b].ns, self.c.pods[b].addr(af)?)) };
        let node_ip = |n| -> Result<IpAddr> {
            Ok(match af {
                IpFamily::V4 => self.c.node_ip(n)?.into(),
                IpFamily::V6 => self.c.node_ip6(n)?.into(),
            })
        };
        match p {
            Path::Bare => Ok((self.c.node_ns(1)?, self.c.node_ns(2)?, node_ip(2)?)),
            Path::FlannelVxlan | Path::FlannelHostGw | Path::FlannelUdpRef => pods(self.flannel),
            Path::WeftVxlanViaHost | Path::WeftVxlanViaHostIfb => pods(self.unregistered),
            _ => pods(self.weft),
        }
    }

    /// The receiving node's namespace of a path (the server pod's node;
    /// node 2 for bare): its eth0 says whether the underlay carried GSO
    /// packets or MTU-sized frames.
    fn server_node(&self, p: Path) -> Result<&Netns> {
        let pod = match p {
            Path::Bare => return self.c.node_ns(2),
            Path::FlannelVxlan | Path::FlannelHostGw | Path::FlannelUdpRef => self.flannel[1],
            Path::WeftVxlanViaHost | Path::WeftVxlanViaHostIfb => self.unregistered[1],
            _ => self.weft[1],
        };
        self.c.node_ns(self.c.pods[pod].node)
    }

    /// The counters that prove weft carried a path's traffic: node 2's
    /// (receiving) for vxlan, both halves of the fast path for host-gw.
    /// IPv6 VXLAN is decapsulated by weft-v6's kernel socket, after which
    /// `weft_overlay_in6` counts a registered pod's packets as decap_to_pod
    /// and an unregistered pod's as decap (handed to the stack).
    fn proof(&self, p: Path, af: IpFamily) -> Result<Vec<(u64, &'static str)>> {
        let counters: &[(NodeRef, u32, &'static str)] = match p {
            Path::WeftVxlanTc | Path::WeftVxlanTcIfb => &[(2, stat::DECAP_TO_POD, "decap_to_pod")],
            Path::WeftVxlanViaHostIfb => &[(2, stat::DECAP, "decap")],
            Path::WeftVxlanViaHost if af == IpFamily::V6 => &[(2, stat::DECAP, "decap")],
            Path::WeftVxlanViaHost => &[(2, stat::DECAP_KERNEL, "decap_kernel")],
            Path::WeftHostGwFast => &[(1, stat::FWD, "fwd"), (2, stat::ROUTED_TO_POD, "routed_to_pod")],
            Path::WeftUdp | Path::WeftUdpNoOffload | Path::WeftUdpPerCpu => {
                let text = metrics::scrape(self.c.node_ns(2)?)?;
                return Ok(vec![(metrics::sample(&text, "weft_udp_bytes_total{what=\"rx\"}") as u64, "udp rx")]);
            }
            _ => &[],
        };
        counters.iter().map(|&(n, idx, what)| Ok((bpf::stat_counter(&self.c.weft_node(n)?.stats_pin(), idx)?.1, what))).collect()
    }

    /// The mode's offloads on every underlay port (nodes' eth0, the
    /// switch's ports): all on (veth), all off (wire), or all off but GRO
    /// on the nodes' eth0 (NIC).
    fn set_offloads(&self) -> Result<()> {
        let v = if self.mode == Mode::Veth { "on" } else { "off" };
        let gro_at_node = if self.mode == Mode::Nic { "on" } else { v };
        let mut ports: Vec<(&Netns, String, &str)> =
            self.c.nodes().into_iter().map(|n| Ok((self.c.node_ns(n)?, "eth0".to_string(), gro_at_node))).collect::<Result<_>>()?;
        for n in self.c.nodes() {
            ports.push((&self.c.sw, format!("vn{n}"), v));
        }
        for (ns, dev, gro) in ports {
            ns.exec("ethtool", &["-K", &dev, "tso", v, "gso", v, "gro", gro]).with_context(|| format!("ethtool -K {dev} in {}", ns.name()))?;
        }
        Ok(())
    }
}

fn measure(bed: &Bed, p: Path, af: IpFamily, secs: u32, s: &mut Samples) -> Result<()> {
    let (client, server, ip) = bed.ends(p, af)?;
    let name = label(p, af);
    // A 1 s transfer first, not kept: every path is measured warm (neighbours
    // resolved, workers and caches awake), not only those whose weftd was
    // not just restarted.
    perf::iperf3(client, server, ip, 1, 1).with_context(|| format!("warm-up of {name}"))?;
    let before = bed.proof(p, af)?;
    let rx0 = rx_counters(server)?;
    let node = bed.server_node(p)?;
    let node_rx0 = rx_counters(node)?;
    let busy0 = perf::cpu_busy_seconds()?;
    let one = perf::iperf3(client, server, ip, secs, 1)?;
    let busy = perf::cpu_busy_seconds()? - busy0;
    let rx = rx_counters(server)?;
    let node_rx = rx_counters(node)?;
    // Per-packet costs scale with packets per byte: 64 KB GSO packets or
    // MTU-sized ones make a fortyfold difference.
    let per_packet = (rx.1 - rx0.1) as f64 / (rx.0 - rx0.0).max(1) as f64;
    // The same on the receiving node's underlay eth0 (before its GRO): GSO
    // packets that crossed the wire whole (veth: tunnel GSO kept, outer
    // checksum and all) or MTU-sized frames.
    let node_per_packet = (node_rx.1 - node_rx0.1) as f64 / (node_rx.0 - node_rx0.0).max(1) as f64;
    let moved = one.gbit_per_s * 1e9 / 8.0 * secs as f64;
    for ((b0, what), (b1, _)) in before.into_iter().zip(bed.proof(p, af)?) {
        ensure!(
            (b1 - b0) as f64 > moved * 0.5,
            "{name}: weft's `{what}` counter moved {} bytes while iperf3 moved {moved:.0}: the figures would not describe weft",
            b1 - b0
        );
    }
    let four = perf::iperf3(client, server, ip, secs, 4)?;
    let rtt = perf::rr_rtt(client, server, ip, secs)?;
    let pps = perf::udp_pps(client, server, ip, secs, 64)?;
    let gb = one.gbit_per_s * secs as f64 / 8.0;
    println!(
        "    {:51} 1 stream {:6.2} Gbit/s, 4 streams {:6.2}, RTT p50 {:5.1} us p99 {:5.1}, {:7.0} pps, {:.2} CPU s/GB, {per_packet:.0} B/packet in ({node_per_packet:.0} on the node's eth0)",
        name,
        one.gbit_per_s,
        four.gbit_per_s,
        rtt.p50_us,
        rtt.p99_us,
        pps,
        busy / gb
    );
    s.one.push(one.gbit_per_s);
    s.four.push(four.gbit_per_s);
    s.p50.push(rtt.p50_us);
    s.p99.push(rtt.p99_us);
    s.pps.push(pps);
    s.cpu_per_gb.push(busy / gb);
    Ok(())
}

/// (packets, bytes) eth0 of `ns` has received.
fn rx_counters(ns: &Netns) -> Result<(u64, u64)> {
    let j: serde_json::Value = serde_json::from_str(&ns.exec("ip", &["-s", "-j", "link", "show", "eth0"])?).context("ip -s -j link show eth0")?;
    let rx = &j[0]["stats64"]["rx"];
    Ok((rx["packets"].as_u64().context("no rx packets")?, rx["bytes"].as_u64().context("no rx bytes")?))
}

/// One extra 1-stream iperf3 run of `p` under `perf record -a -g` (apart
/// from the measured runs, so the profiler's cost is in no figure); the
/// report goes to `target/bench-profiles/`, its top lines to stdout.
fn profile_one_stream(bed: &Bed, p: Path, af: IpFamily, mode: Mode, secs: u32) -> Result<()> {
    let (client, server, ip) = bed.ends(p, af)?;
    let name = format!("{:?}-{}-{}", bed.family, mode.short(), label(p, af)).to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let (bulk, top) = crate::profile::system_wide(&name, secs, || perf::iperf3(client, server, ip, secs, 1))?;
    println!("    profile of {} ({:.2} Gbit/s under perf), self time, whole machine:\n{top}", label(p, af), bulk.gbit_per_s);
    Ok(())
}

struct Result1 {
    family: Family,
    mode: Mode,
    path: Path,
    af: IpFamily,
    s: Samples,
}

/// What one benchmark run measures and where it writes.
pub struct Plan<'a> {
    /// Testbeds: "vxlan", "host-gw", "udp".
    pub families: &'a [&'a str],
    pub modes: &'a [Mode],
    pub runs: usize,
    pub secs: u32,
    /// The section of `<docs>/performance.md` (and name of its JSON and chart).
    pub section: &'a str,
    /// One more 1-stream run per path under `perf record` afterwards.
    pub profile: bool,
    /// Where performance.md and perf/ are.
    pub docs: &'a FsPath,
    /// Label fragments (lower case) of the paths to measure; empty: all.
    /// The bare underlay of each family measured, every ratio's base, is
    /// always measured. A piece that starts with a space continues the one
    /// before it (see [`rejoin`]).
    pub only: &'a [String],
    /// Whether the vxlan and host-gw testbeds are built in dual stack and
    /// carry their paths over IPv6 too (rows "... (IPv6)"); a filter
    /// (`only`) picks among these as among the others.
    pub ipv6: bool,
}

/// `--paths` as clap hands it over, split at every comma; labels hold
/// ", " (`weft vxlan, TC decap`), so a piece that starts with a space is
/// the rest of the one before it: `=weft vxlan, TC decap` picks that label
/// exactly, as the commands in docs/performance.md meant.
fn rejoin(only: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for o in only {
        match out.last_mut() {
            Some(last) if o.starts_with(' ') => {
                last.push(',');
                last.push_str(o);
            }
            _ => out.push(o.clone()),
        }
    }
    out
}

/// Measures the plan's families in its modes and writes its section of
/// `<docs>/performance.md`, with its JSON and chart in `<docs>/perf/`.
pub fn run(weftd: &FsPath, plan: &Plan) -> Result<()> {
    let &Plan { families, modes, runs, secs, section, profile, docs, only, ipv6 } = plan;
    let only = &rejoin(only)[..];
    let (runs, secs) = (runs.max(1), secs.max(1));
    std::env::set_var("WEFTD_BIN", weftd);
    let mut all: Vec<Result1> = vec![];
    for fam in families {
        let family = match *fam {
            "host-gw" => Family::HostGw,
            "udp" => Family::Udp,
            _ => Family::Vxlan,
        };
        let picked = |p: Path, af: IpFamily| only.is_empty() || only.iter().any(|o| picks(o, &label(p, af)));
        let all_cases = cases(family, ipv6);
        // The paths picked, and the bare underlay of each family among them.
        let measured: Vec<IpFamily> =
            IpFamily::BOTH.into_iter().filter(|&af| all_cases.iter().any(|&(p, f)| f == af && p != Path::Bare && picked(p, af))).collect();
        let cs: Vec<(Path, IpFamily)> = all_cases.into_iter().filter(|&(p, af)| measured.contains(&af) && (p == Path::Bare || picked(p, af))).collect();
        // A filter that picks none of this testbed's paths skips it.
        if cs.is_empty() {
            continue;
        }
        let mut bed = Bed::build(family, measured.contains(&IpFamily::V6))?;
        for &mode in modes {
            bed.mode = mode;
            bed.set_offloads()?;
            let mut samples: Vec<Samples> = vec![Samples::default(); cs.len()];
            for r in 1..=runs {
                println!("bench: {family:?} testbed, {}, run {r}/{runs}", mode.label());
                for (i, &(p, af)) in cs.iter().enumerate() {
                    bed.prepare(p)?;
                    measure(&bed, p, af, secs, &mut samples[i]).with_context(|| format!("{} ({})", label(p, af), mode.label()))?;
                }
            }
            if profile {
                for &(p, af) in &cs {
                    bed.prepare(p)?;
                    profile_one_stream(&bed, p, af, mode, secs).with_context(|| format!("profiling {} ({})", label(p, af), mode.label()))?;
                }
            }
            all.extend(cs.iter().zip(samples).map(|(&(path, af), s)| Result1 { family, mode, path, af, s }));
        }
        bed.c.pass();
    }
    write(&all, runs, secs, section, docs)
}

fn med(v: &[f64]) -> (f64, f64, f64) {
    perf::spread(v.to_vec())
}

/// Median (min, max) of the per-run ratios `a[i] / b[i]`: each path against
/// the bare underlay of its own run, so drift between runs (this machine's
/// bare figure moved by a quarter from one run to the next) cancels.
fn paired(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    med(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>())
}

fn write(all: &[Result1], runs: usize, secs: u32, section: &str, docs: &FsPath) -> Result<()> {
    let mut md = String::new();
    let mut json = vec![];
    let mut chart = String::new();
    let mut runs_md = String::new();
    let v6 = all.iter().any(|r| r.af == IpFamily::V6);
    for fam in [Family::Vxlan, Family::HostGw, Family::Udp] {
        for mode in Mode::ALL {
            if !all.iter().any(|r| r.family == fam && r.mode == mode) {
                continue;
            }
            md.push_str(&format!("\n**{fam:?} testbed, {}**\n\n| path | 1 stream Gbit/s (min-max) | ratio (min-max) | 4 streams | ratio | RTT p50 us (+bare) | p99 us | 64 B UDP kpps | ratio | CPU s/GB |\n|---|---|---|---|---|---|---|---|---|---|\n", mode.label()));
            // IPv4's rows, then IPv6's: each family against its own bare.
            for af in IpFamily::BOTH {
                let rows: Vec<&Result1> = all.iter().filter(|r| r.family == fam && r.mode == mode && r.af == af).collect();
                let Some(&bare) = rows.iter().find(|r| r.path == Path::Bare) else { continue };
                let b = &bare.s;
                for r in rows {
                    let name = label(r.path, af);
                    let per_run: Vec<String> = r.s.one.iter().zip(&b.one).map(|(x, y)| format!("{:.2}", x / y)).collect();
                    runs_md.push_str(&format!("{fam:?}, {}, {}: {}\n", mode.short(), label(r.path, af), per_run.join(" ")));
                    let (one, lo, hi) = med(&r.s.one);
                    let (four, p50, p99, pps, cpu) = (med(&r.s.four).0, med(&r.s.p50).0, med(&r.s.p99).0, med(&r.s.pps).0, med(&r.s.cpu_per_gb).0);
                    let (r1, r1lo, r1hi) = paired(&r.s.one, &b.one);
                    let (r4, rpps) = (paired(&r.s.four, &b.four).0, paired(&r.s.pps, &b.pps).0);
                    let over = med(&r.s.p50.iter().zip(&b.p50).map(|(x, y)| x - y).collect::<Vec<_>>()).0;
                    md.push_str(&format!("| {name} | {one:.2} ({lo:.2}-{hi:.2}) | **{r1:.2}** ({r1lo:.2}-{r1hi:.2}) | {four:.2} | {r4:.2} | {p50:.1} (+{over:.1}) | {p99:.1} | {:.0} | {rpps:.2} | {cpu:.2} |\n",
                    pps / 1e3));
                    chart.push_str(&format!("\"{} / {:?} {}\" {r1:.3}\n", label(r.path, af), fam, mode.short()));
                    json.push(serde_json::json!({
                        "testbed": format!("{fam:?}"), "mode": mode.label(), "path": label(r.path, af), "family": af.to_string(),
                        "gbit_per_s_1": r.s.one, "gbit_per_s_4": r.s.four, "rtt_p50_us": r.s.p50, "rtt_p99_us": r.s.p99,
                        "udp64_pps": r.s.pps, "cpu_s_per_gb": r.s.cpu_per_gb,
                        "ratio_1": r1, "ratio_1_min": r1lo, "ratio_1_max": r1hi, "ratio_4": r4, "rtt_p50_over_bare_us": over, "ratio_pps": rpps,
                    }));
                }
            }
        }
    }
    println!("{md}");
    println!("1-stream ratio to bare (of the same family) per run:\n{runs_md}");
    let dir = docs.join("perf");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{section}.json")), serde_json::to_string_pretty(&serde_json::json!({ "runs": runs, "secs": secs, "results": json }))?)?;
    let png = chart_png(&dir, section, &chart);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    crate::bench::write_section(docs, section, &format!("Pod-to-pod paths ({section})"), &format!(
        "Command: `cargo xtask bench {section} --runs {runs} --secs {secs}` (release weftd; per testbed two weft nodes and two nodes programmed as \
         flanneld programs them, on one switch; {runs} runs alternating the paths, each path after a 1 s warm-up transfer; iperf3 {secs} s, weft-rr UDP \
         request/response 64 B (both ends busy-polling, so no wake-ups in the figure) up to {secs} s, iperf3 UDP 64 B `-b 0` {secs} s; client on CPU 0, server on CPU 1). A ratio is the \
         median over runs of the path's figure divided by the bare underlay's (node to node) of the same run, testbed and mode, with min-max for 1 stream; \
         +bare is the median of the same per-run differences.{} CPU s/GB: busy time of the whole \
         machine during the 1-stream run per GB moved. Per-run samples: `docs/perf/{section}.json`{}. Machine: {cores} cores.\n{md}\n",
        if v6 {
            " IPv6 rows (\"(IPv6)\"; the testbed in dual stack, IPv6 underlay fd77::/64, pods' fd44::/48 addresses): \
             against the bare IPv6 underlay (node to node over fd77::/64) of the same run."
        } else {
            ""
        },
        match &png { Ok(p) => format!("; chart: `docs/perf/{p}`\n\n![1-stream throughput, ratio to bare](perf/{p})"), Err(e) => format!(" (no chart: {e:#})") }
    ))
}

/// A bar chart of the 1-stream ratios with gnuplot (Debian's gnuplot-nox).
fn chart_png(dir: &FsPath, name: &str, data: &str) -> Result<String> {
    let dat = dir.join(format!("{name}.dat"));
    std::fs::write(&dat, data)?;
    let png = format!("{name}.png");
    let script = format!(
        "set terminal png size 1100,{} font ',10'\nset output '{}'\nset style data histograms\nset style fill solid 0.8\n\
         set yrange [0:*]\nset ylabel 'TCP 1 stream, ratio to bare'\nset xtics rotate by -35 left\nset grid ytics\nset key off\n\
         set bmargin 14\nplot '{}' using 2:xtic(1) lc rgb '#3b6ea5'\n",
        520,
        dir.join(&png).display(),
        dat.display()
    );
    // `-e` takes one line: gnuplot does not split it at newlines.
    let out = cmd::output(std::process::Command::new("gnuplot").arg("-e").arg(script.replace('\n', "; ")))?;
    let _ = std::fs::remove_file(&dat);
    ensure!(out.status.success(), "gnuplot: {}", String::from_utf8_lossy(&out.stderr));
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::{cases, label, picks, rejoin, Family, IpFamily, Path};

    #[test]
    fn a_paths_filter_split_at_commas_is_joined_back_where_a_label_goes_on() {
        let split: Vec<String> = ["bare", "=weft vxlan", " TC decap", "flannel vxlan"].iter().map(|s| s.to_string()).collect();
        assert_eq!(rejoin(&split), ["bare", "=weft vxlan, TC decap", "flannel vxlan"]);
        assert!(picks(&rejoin(&split)[1], "weft vxlan, TC decap"));
        assert!(!picks(&rejoin(&split)[1], "weft vxlan, TC decap, ifb overlay"));
    }

    #[test]
    fn ipv6_cases_follow_their_ipv4_path_and_skip_udp_and_ifb() {
        let c = cases(Family::Vxlan, true);
        assert_eq!(&c[..4], [(Path::Bare, IpFamily::V4), (Path::Bare, IpFamily::V6), (Path::FlannelVxlan, IpFamily::V4), (Path::FlannelVxlan, IpFamily::V6)]);
        assert!(!c.contains(&(Path::WeftVxlanTcIfb, IpFamily::V6)));
        assert!(cases(Family::Udp, true).iter().all(|&(_, af)| af == IpFamily::V4));
        assert!(cases(Family::HostGw, false).iter().all(|&(_, af)| af == IpFamily::V4));
        assert_eq!(label(Path::WeftVxlanTc, IpFamily::V6), "weft vxlan, TC decap (IPv6)");
        assert_eq!(label(Path::WeftVxlanViaHost, IpFamily::V6), "weft vxlan, unregistered pod (via weft-v6.1) (IPv6)");
        assert!(picks("=weft vxlan, TC decap (IPv6)", &label(Path::WeftVxlanTc, IpFamily::V6)));
    }

    #[test]
    fn a_paths_filter_picks_by_fragment_or_whole_label() {
        assert!(picks("weft udp", "weft udp, --udp-per-cpu"));
        assert!(picks("TC DECAP", "weft vxlan, TC decap"));
        assert!(picks("=weft udp", "weft udp"));
        assert!(!picks("=weft udp", "weft udp, --udp-per-cpu"));
        assert!(!picks("host-gw", "weft udp"));
    }
}
