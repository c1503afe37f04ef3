//! weft-rr: UDP request/response latency with busy-polling ends, for
//! `cargo xtask bench`.
//!
//! Why not sockperf: on a small VM a blocking receiver's wake-up (an idle
//! vCPU halted, then rescheduled) costs 100–700 µs and swings between runs,
//! so a path's own few microseconds drown. Here both ends poll a
//! non-blocking socket, yielding the CPU between polls (`sched_yield`, so a
//! userspace datapath such as weft's udp workers still gets to run), and
//! what is left is the time the packet spends in the stack and the datapath.
//!
//! Usage (both bounded in time):
//!   weft-rr server BIND_IP:PORT SECS
//!   weft-rr client SERVER_IP:PORT COUNT SECS [SIZE]
//! The client sends COUNT requests one at a time (after 1,000 unmeasured
//! ones), each answered before the next goes, and prints one JSON line:
//! {"samples":N,"lost":L,"p50_us":..,"p99_us":..,"mean_us":..}. A request
//! unanswered for 200 ms counts as lost and the next one goes.
use std::{
    net::{SocketAddr, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

const WARMUP: u64 = 1_000;
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("server") if args.len() == 3 => server(&args[1], &args[2]),
        Some("client") if args.len() == 4 || args.len() == 5 => client(&args[1], &args[2], &args[3], args.get(4).map(String::as_str).unwrap_or("64")),
        _ => Err("usage: weft-rr server BIND_IP:PORT SECS | weft-rr client SERVER_IP:PORT COUNT SECS [SIZE]".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-rr: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{what}: cannot parse {s:?}"))
}

fn yield_cpu() {
    // SAFETY: no arguments, no memory.
    unsafe { libc::sched_yield() };
}

/// Echoes every datagram to its sender until `secs` have passed.
fn server(bind: &str, secs: &str) -> Result<(), String> {
    let at: SocketAddr = parse("bind address", bind)?;
    let end = Instant::now() + Duration::from_secs(parse("seconds", secs)?);
    let sock = UdpSocket::bind(at).map_err(|e| format!("binding {at}: {e}"))?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let mut polls = 0u32;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(4096) && Instant::now() >= end {
                    return Ok(());
                }
                yield_cpu();
            }
            Err(e) => return Err(format!("receiving: {e}")),
        }
    }
}

fn client(to: &str, count: &str, secs: &str, size: &str) -> Result<(), String> {
    let server: SocketAddr = parse("server address", to)?;
    let count: u64 = parse("count", count)?;
    let size: usize = parse("size", size)?;
    if !(8..=1400).contains(&size) || count == 0 {
        return Err(format!("size must be 8..=1400 bytes (got {size}), count at least 1"));
    }
    let span = Duration::from_secs(parse("seconds", secs)?);
    let end = Instant::now() + span;
    // The warm-up ends after WARMUP round trips or a tenth of the time,
    // whichever comes first: on a loaded machine a 1 s run may not get
    // through 1,000 round trips, and would then measure none.
    let warm_until = Instant::now() + span / 10;
    // The unspecified address of the server's family (an IPv4 socket cannot
    // reach an IPv6 server).
    let any = if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let sock = UdpSocket::bind(any).map_err(|e| format!("binding: {e}"))?;
    sock.connect(server).map_err(|e| format!("connecting to {server}: {e}"))?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut req = vec![0u8; size];
    let mut buf = [0u8; 2048];
    let mut rtts: Vec<u64> = Vec::with_capacity(count as usize);
    let mut lost = 0u64;
    let mut seq = 0u64;
    while (rtts.len() as u64) < count && Instant::now() < end {
        seq += 1;
        req[..8].copy_from_slice(&seq.to_ne_bytes());
        let t0 = Instant::now();
        if let Err(e) = sock.send(&req) {
            // ECONNREFUSED: the server is not up yet (or went away); try again.
            if e.kind() != std::io::ErrorKind::ConnectionRefused {
                return Err(format!("sending to {server}: {e}"));
            }
        }
        let answered = loop {
            match sock.recv(&mut buf) {
                // Only the answer to this request counts; a late one is skipped.
                Ok(n) if n >= 8 && buf[..8] == seq.to_ne_bytes() => break true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    if t0.elapsed() > LOSS_TIMEOUT {
                        break false;
                    }
                    yield_cpu();
                }
                Err(e) => return Err(format!("receiving from {server}: {e}")),
            }
        };
        if seq <= WARMUP && Instant::now() < warm_until {
            continue;
        }
        if !answered {
            lost += 1;
        } else {
            rtts.push(t0.elapsed().as_nanos() as u64);
        }
    }
    if rtts.is_empty() {
        return Err(format!("no answers from {server} to {seq} requests (after the warm-up)"));
    }
    let mean = rtts.iter().sum::<u64>() as f64 / rtts.len() as f64;
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    println!("{{\"samples\":{},\"lost\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"mean_us\":{:.2}}}", rtts.len(), lost, pct(0.50), pct(0.99), mean / 1e3);
    Ok(())
}
