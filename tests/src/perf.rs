//! Throughput and latency between two namespaces: Debian's iperf3 (TCP
//! bulk, UDP rate) and the project's weft-rr (UDP request/response). Both
//! sides are bounded in time (`timeout`), servers serve one test and exit.
//! Either family: a server address is IPv4 or IPv6 (`impl Into<IpAddr>`).
//! For the benchmarks (`cargo xtask bench`), never for pass/fail timing.
use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, netns::Netns};

/// One iperf3 run: receiver-side throughput and the sender's retransmits.
#[derive(Clone, Copy, Debug)]
pub struct Bulk {
    pub gbit_per_s: f64,
    pub retransmits: u64,
}

/// One request/response run: round-trip time percentiles, microseconds.
#[derive(Clone, Copy, Debug)]
pub struct RoundTrip {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// A server process in a namespace, killed on drop (it also ends by itself:
/// `timeout`).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        cmd::terminate(&mut self.0, Duration::from_millis(500));
    }
}

/// CPUs the client and the server run on: fixed, because on a small VM
/// the round trip changes by 2x with placement (same CPU or not), which
/// would otherwise pass for a difference between paths.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

fn start_server(ns: &Netns, prog: &str, args: &[&str], bound_s: u64) -> Result<Server> {
    let bound = bound_s.to_string();
    let mut full = vec![bound.as_str(), "taskset", "-c", SERVER_CPU, prog];
    full.extend(args);
    let child =
        ns.command("timeout", &full).stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| format!("starting {prog} in netns {}", ns.name()))?;
    let server = Server(child);
    wait_listening(ns, prog, args)?;
    Ok(server)
}

/// Waits (up to 10 s) until the server just started in `ns` has bound its
/// port: on a loaded machine a fixed grace period was not enough, and a
/// weft-rr client whose requests all went out before its server bound got
/// no answer at all. iperf3 listens on TCP 5201; weft-rr on the UDP
/// address it was given (`server <ip:port> ...`).
fn wait_listening(ns: &Netns, prog: &str, args: &[&str]) -> Result<()> {
    let (proto, port) = match (prog.ends_with("weft-rr"), args.get(1)) {
        (true, Some(addr)) => ("-u", addr.rsplit(':').next().unwrap_or("11111").to_string()),
        _ => ("-t", "5201".to_string()),
    };
    let sport = format!("( sport = :{port} )");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let out = ns.exec_output("ss", &["-Hln", proto, &sport])?;
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{prog} in netns {} did not bind port {port} within 10 s", ns.name())
}

/// Runs `f` up to three times while it fails because the server was not
/// listening yet (a loaded machine can take longer than the grace period).
fn retry_connect<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    for _ in 0..2 {
        match f() {
            Err(e) if format!("{e:#}").contains("unable to connect") => std::thread::sleep(Duration::from_millis(500)),
            r => return r,
        }
    }
    f()
}

/// iperf3 from `client` to `server_ip` (in `server`) for `secs` seconds
/// with `streams` parallel TCP streams.
pub fn iperf3(client: &Netns, server: &Netns, server_ip: impl Into<IpAddr>, secs: u32, streams: u32) -> Result<Bulk> {
    let server_ip = server_ip.into();
    retry_connect(|| iperf3_once(client, server, server_ip, secs, streams))
}

fn iperf3_once(client: &Netns, server: &Netns, server_ip: IpAddr, secs: u32, streams: u32) -> Result<Bulk> {
    let ip = server_ip.to_string();
    let _srv = start_server(server, "iperf3", &["-s", "-1", "-B", &ip], secs as u64 + 15)?;
    let (t, p, bound) = (secs.to_string(), streams.to_string(), (secs + 10).to_string());
    let out = client.exec_output("timeout", &[&bound, "taskset", "-c", CLIENT_CPU, "iperf3", "-c", &ip, "-t", &t, "-P", &p, "-J"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("iperf3 -J output: {text:.300}"))?;
    if let Some(e) = j.get("error") {
        bail!("iperf3 {} -> {ip}: {e}", client.name());
    }
    let end = &j["end"];
    let bps = end["sum_received"]["bits_per_second"].as_f64().context("iperf3: no end.sum_received.bits_per_second")?;
    Ok(Bulk { gbit_per_s: bps / 1e9, retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0) })
}

/// UDP request/response (64-byte datagrams, one outstanding) from `client`
/// to `server_ip` with the project's busy-polling tool (`weft-rr`, next to
/// weftd): up to 200,000 round trips or `secs` seconds, percentiles of the
/// full round trip. Polling ends take the receivers' wake-ups out of the
/// figure; on this kind of VM they are 100-700 us and swing between runs,
/// which sockperf's blocking ends measured instead of the path.
pub fn rr_rtt(client: &Netns, server: &Netns, server_ip: impl Into<IpAddr>, secs: u32) -> Result<RoundTrip> {
    let server_ip = server_ip.into();
    let bin = rr_bin()?;
    let bin = bin.to_str().context("weft-rr path is not UTF-8")?;
    let bind = rr_addr(server_ip);
    let _srv = start_server(server, bin, &["server", &bind, &(secs + 5).to_string()], secs as u64 + 10)?;
    rr_client(client, bin, server_ip, secs)
}

/// The client half alone, against an address nobody answers on (for the
/// tool's own test: it must fail rather than report a figure).
pub fn rr_rtt_without_server(client: &Netns, server_ip: impl Into<IpAddr>, secs: u32) -> Result<RoundTrip> {
    let bin = rr_bin()?;
    rr_client(client, bin.to_str().context("weft-rr path is not UTF-8")?, server_ip.into(), secs)
}

/// weft-rr's address on the server: port 11111 (`[v6]:11111` for IPv6).
fn rr_addr(ip: IpAddr) -> String {
    SocketAddr::new(ip, 11111).to_string()
}

fn rr_client(client: &Netns, bin: &str, server_ip: IpAddr, secs: u32) -> Result<RoundTrip> {
    let to = rr_addr(server_ip);
    let bound = (secs + 10).to_string();
    let out = client.exec_output("timeout", &[&bound, "taskset", "-c", CLIENT_CPU, bin, "client", &to, "200000", &secs.to_string(), "64"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("weft-rr {} -> {to}: {}", client.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let j: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("weft-rr {} -> {to}: {text:.300}{}", client.name(), String::from_utf8_lossy(&out.stderr)))?;
    match (j["p50_us"].as_f64(), j["p99_us"].as_f64()) {
        (Some(p50_us), Some(p99_us)) => Ok(RoundTrip { p50_us, p99_us }),
        _ => bail!("weft-rr {} -> {to}: no percentiles in {text}", client.name()),
    }
}

/// The request/response tool: `$WEFT_RR_BIN`, else next to weftd.
fn rr_bin() -> Result<std::path::PathBuf> {
    cmd::sibling_bin("weft-rr", "WEFT_RR_BIN")
}

/// iperf3 UDP from `client` with `len`-byte datagrams, as fast as it can
/// send (`-b 0`) for `secs` seconds: datagrams per second that arrived.
pub fn udp_pps(client: &Netns, server: &Netns, server_ip: impl Into<IpAddr>, secs: u32, len: u32) -> Result<f64> {
    let server_ip = server_ip.into();
    retry_connect(|| udp_pps_once(client, server, server_ip, secs, len))
}

fn udp_pps_once(client: &Netns, server: &Netns, server_ip: IpAddr, secs: u32, len: u32) -> Result<f64> {
    let ip = server_ip.to_string();
    let _srv = start_server(server, "iperf3", &["-s", "-1", "-B", &ip], secs as u64 + 15)?;
    let (t, l, bound) = (secs.to_string(), len.to_string(), (secs + 10).to_string());
    let out = client.exec_output("timeout", &[&bound, "taskset", "-c", CLIENT_CPU, "iperf3", "-c", &ip, "-u", "-b", "0", "-l", &l, "-t", &t, "-J"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("iperf3 -u -J output: {text:.300}"))?;
    if let Some(e) = j.get("error") {
        bail!("iperf3 -u {} -> {ip}: {e}", client.name());
    }
    // The receiver's view (iperf3 3.12: end.sum holds the server's counts).
    let sum = &j["end"]["sum"];
    let (packets, lost, seconds) = (sum["packets"].as_f64(), sum["lost_packets"].as_f64(), sum["seconds"].as_f64());
    match (packets, lost, seconds) {
        (Some(p), Some(l), Some(s)) if s > 0.0 => Ok((p - l).max(0.0) / s),
        _ => bail!("iperf3 -u: no end.sum packets/lost_packets/seconds in {text:.300}"),
    }
}

/// Busy CPU time of the whole machine (user, system, irq, softirq; not idle
/// or iowait), in seconds, from /proc/stat: the cost of a path is the busy
/// time a transfer takes, wherever in the kernel it is spent.
pub fn cpu_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    anyhow::ensure!(f.len() >= 7, "odd /proc/stat line: {line}");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[0] + f[1] + f[2] + f[5] + f[6]) / hz)
}

/// Median, min and max.
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n if n % 2 == 0 => ((v[n / 2 - 1] + v[n / 2]) / 2.0, v[0], v[n - 1]),
        n => (v[n / 2], v[0], v[n - 1]),
    }
}
