//! Bounded traffic: ping (count and time limited) and an in-process TCP
//! transfer whose two ends run on threads moved into the pods' namespaces
//! with setns(2) (which changes only the calling thread's namespace).
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::Netns;

#[derive(Clone, Debug)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// "+N duplicates": a datapath that delivers a packet twice.
    pub duplicates: u32,
    /// Average round trip in ms, when any reply came back.
    pub rtt_avg_ms: Option<f64>,
    pub output: String,
}

impl PingStats {
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted && self.duplicates == 0
    }
}

/// `timeout <bound> ping -c N -W 1 -i 0.2` from inside `from`; never fails because
/// replies are missing (see [`ping_ok`] / [`ping_fails`]).
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32) -> Result<PingStats> {
    ping_sized(from, to, count, None)
}

/// As [`ping`], with `-s size -M do` (DF set) when `size` is given.
pub fn ping_sized(from: &Netns, to: Ipv4Addr, count: u32, size: Option<u32>) -> Result<PingStats> {
    ping_waiting(from, to.into(), count, size, 1)
}

/// As [`ping`] over IPv6 (`ping -6`).
pub fn ping6(from: &Netns, to: Ipv6Addr, count: u32) -> Result<PingStats> {
    ping_waiting(from, IpAddr::V6(to), count, None, 1)
}

/// As [`ping_sized`], waiting up to `reply_wait_s` for the last reply;
/// `ping -6` for an IPv6 destination.
fn ping_waiting(from: &Netns, to: IpAddr, count: u32, size: Option<u32>, reply_wait_s: u32) -> Result<PingStats> {
    let (c, bound, w) = (count.to_string(), (count / 5 + 4 + reply_wait_s).to_string(), reply_wait_s.to_string());
    let to_s = to.to_string();
    let mut args = vec![bound.as_str(), "ping", "-n", "-c", &c, "-W", &w, "-i", "0.2"];
    if to.is_ipv6() {
        args.push("-6");
    }
    let sz;
    if let Some(s) = size {
        sz = s.to_string();
        args.extend(["-s", &sz, "-M", "do"]);
    }
    args.push(&to_s);
    let out = from.exec_output("timeout", &args)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut st = PingStats { transmitted: 0, received: 0, duplicates: 0, rtt_avg_ms: None, output: text.clone() };
    for line in text.lines() {
        // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line.split(',').filter_map(|p| p.split_whitespace().next()?.parse().ok()).collect();
            st.transmitted = nums.first().copied().unwrap_or(0);
            st.received = nums.get(1).copied().unwrap_or(0);
            st.duplicates = line
                .split(',')
                .find(|p| p.contains("duplicates"))
                .and_then(|p| p.trim().trim_start_matches('+').split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
        }
        // "rtt min/avg/max/mdev = 0.050/0.061/0.072/0.009 ms"
        if let Some(v) = line.strip_prefix("rtt min/avg/max/mdev = ") {
            st.rtt_avg_ms = v.split('/').nth(1).and_then(|x| x.parse().ok());
        }
    }
    Ok(st)
}

/// Pings and requires every reply (waiting for the last one as long as
/// the harness's patience allows: a reply late on a loaded machine is
/// still a reply).
pub fn ping_ok(from: &Netns, to: Ipv4Addr, count: u32) -> Result<PingStats> {
    ping_ok_any(from, to.into(), count)
}

/// As [`ping_ok`] over IPv6 (`ping -6`).
pub fn ping6_ok(from: &Netns, to: Ipv6Addr, count: u32) -> Result<PingStats> {
    ping_ok_any(from, to.into(), count)
}

/// [`ping_ok`] or [`ping6_ok`] by the address's family.
pub fn ping_ok_any(from: &Netns, to: IpAddr, count: u32) -> Result<PingStats> {
    let st = ping_waiting(from, to, count, None, crate::cmd::patience())?;
    if !st.all_received() {
        bail!("ping from netns {} to {to}: {}/{} replies, {} duplicates\n{}", from.name(), st.received, st.transmitted, st.duplicates, st.output.trim());
    }
    Ok(st)
}

/// Pings and requires that no reply comes back (negative checks).
pub fn ping_fails(from: &Netns, to: Ipv4Addr, count: u32) -> Result<()> {
    ping_fails_any(from, to.into(), count)
}

/// As [`ping_fails`] over IPv6 (`ping -6`).
pub fn ping6_fails(from: &Netns, to: Ipv6Addr, count: u32) -> Result<()> {
    ping_fails_any(from, to.into(), count)
}

/// [`ping_fails`] or [`ping6_fails`] by the address's family.
pub fn ping_fails_any(from: &Netns, to: IpAddr, count: u32) -> Result<()> {
    let st = ping_waiting(from, to, count, None, 1)?;
    if st.received > 0 {
        bail!("ping from netns {} to {to} was expected to fail but got {}/{} replies", from.name(), st.received, st.transmitted);
    }
    Ok(())
}

/// One ping with TTL `ttl`: true if the reply came, false on
/// time-exceeded (anything else is an error).
pub fn ping_ttl(from: &Netns, to: Ipv4Addr, ttl: u8) -> Result<bool> {
    let out = from.exec_output("timeout", &["5", "ping", "-n", "-c", "1", "-W", "1", "-t", &ttl.to_string(), &to.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains(" 1 received") {
        return Ok(true);
    }
    if !text.contains("Time to live exceeded") {
        bail!("ping -t {ttl} {to}: neither a reply nor time-exceeded:\n{text}");
    }
    Ok(false)
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid fd; affects only this thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({}): {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread moved into `ns` (setns(2) changes only the
/// calling thread's namespace, so the test's own thread stays where it is);
/// join the handle for its result. For in-process sockets in a pod or node
/// namespace without forking a helper binary.
pub fn spawn_in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send + 'static) -> std::thread::JoinHandle<Result<T>> {
    let path = ns.path();
    std::thread::spawn(move || {
        enter(&path)?;
        f()
    })
}

/// [`spawn_in_ns`] and wait: `f`'s result (an error if the thread panicked).
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    join(spawn_in_ns(ns, f))
}

/// Joins a helper thread: its result, or an error if it panicked.
pub fn join<T>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow::anyhow!("helper thread panicked"))?
}

/// The Internet checksum (RFC 1071) of `b`: written into a header whose
/// checksum field is zero, or 0 over a header that verifies. For tests that
/// craft IPv4/ICMP/UDP packets by hand.
pub fn inet_csum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A bounded ping flood running in the background: `count` echo requests at
/// 250/s (`-i 0.004`, 2 s to answer each), interrupted after `secs` (times
/// the harness's patience) at the latest: SIGINT, so ping still prints its
/// summary. Tests start one before a disruption (restart, etcd outage, node
/// loss) and [`PingFlood::all_answered`] proves nothing was lost across it.
pub struct PingFlood {
    child: std::process::Child,
    count: u32,
    /// Echo requests per second.
    rate: u32,
}

impl PingFlood {
    pub fn start(from: &Netns, to: Ipv4Addr, count: u32, secs: u32) -> Result<PingFlood> {
        Self::start_at(from, to.into(), count, secs, 250)
    }

    /// As [`PingFlood::start`] over IPv6 (`ping -6`), at `rate` requests/s.
    pub fn start6(from: &Netns, to: Ipv6Addr, count: u32, secs: u32, rate: u32) -> Result<PingFlood> {
        Self::start_at(from, to.into(), count, secs, rate)
    }

    /// `count` echo requests to `to` at `rate`/s (1..=1000), interrupted
    /// after `secs` (times the harness's patience) at the latest.
    pub fn start_at(from: &Netns, to: IpAddr, count: u32, secs: u32, rate: u32) -> Result<PingFlood> {
        ensure!((1..=1000).contains(&rate), "ping flood rate {rate}/s is outside 1..1000");
        let interval = format!("{:.3}", 1.0 / rate as f64);
        let (bound, n, to_s) = ((secs * crate::cmd::patience()).to_string(), count.to_string(), to.to_string());
        let mut args = vec!["-s", "INT", &bound, "ping", "-n", "-q"];
        if to.is_ipv6() {
            args.push("-6");
        }
        args.extend(["-i", &interval, "-c", &n, "-W", "2", &to_s]);
        let child = from
            .command("timeout", &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting the ping flood")?;
        Ok(PingFlood { child, count, rate })
    }

    /// Waits for the flood to end; its summary line ("N packets transmitted,
    /// N received, ..."), or an error naming `what` unless every request
    /// was answered. A machine too slow to send all `count` in time has
    /// the flood interrupted: then at least half must have gone out (the
    /// flood still spans its planned time) and only the one request in
    /// flight at the interrupt may be unanswered.
    pub fn all_answered(self, what: &str) -> Result<String> {
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let n = self.count;
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
        let nums: Vec<u32> = line.split(',').filter_map(|p| p.split_whitespace().next()?.parse().ok()).collect();
        let (sent, got) = (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0));
        let ok = if sent >= n { got == n } else { sent >= n / 2 && got + 1 >= sent };
        ensure!(ok, "{what}: echo requests lost (of {n} at {}/s):\n{text}", self.rate);
        Ok(line)
    }

    /// Waits for the flood to end and asserts nothing: (echo requests
    /// sent, replies received, ping's summary line). For tests that record
    /// a loss rather than require none.
    pub fn counts(self) -> Result<(u32, u32, String)> {
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
        let nums: Vec<u32> = line.split(',').filter_map(|p| p.split_whitespace().next()?.parse().ok()).collect();
        ensure!(nums.len() >= 2, "ping flood printed no summary:\n{text}{}", String::from_utf8_lossy(&out.stderr));
        Ok((nums[0], nums[1], line))
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// FNV-1a 64.
#[derive(Clone, Copy)]
struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf29ce484222325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Sends `bytes` of deterministic pseudo-random data over TCP from a thread
/// in `client` to a listener on `server_ip` in `server`; checks that the
/// server received exactly that many bytes with the same FNV-1a hash.
/// Every socket operation has a 10 s timeout (scaled by the harness's patience).
pub fn tcp_transfer(client: &Netns, server: &Netns, server_ip: Ipv4Addr, bytes: u64) -> Result<Transfer> {
    tcp_transfer_any(client, server, server_ip.into(), bytes)
}

/// As [`tcp_transfer`] to a listener on an IPv6 address.
pub fn tcp_transfer6(client: &Netns, server: &Netns, server_ip: Ipv6Addr, bytes: u64) -> Result<Transfer> {
    tcp_transfer_any(client, server, server_ip.into(), bytes)
}

/// [`tcp_transfer`] or [`tcp_transfer6`] by the address's family.
pub fn tcp_transfer_any(client: &Netns, server: &Netns, server_ip: IpAddr, bytes: u64) -> Result<Transfer> {
    let timeout = crate::cmd::patient(Duration::from_secs(10));
    let (cpath, spath) = (client.path(), server.path());
    let (sname, cname) = (server.name().to_string(), client.name().to_string());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<u16, String>>();
    let server_t = std::thread::spawn(move || -> Result<(u64, u64)> {
        let r = (|| {
            enter(&spath)?;
            let l = TcpListener::bind((server_ip, 0)).with_context(|| format!("listening on {server_ip} in netns {sname}"))?;
            l.set_nonblocking(true)?;
            Ok::<_, anyhow::Error>(l)
        })();
        let l = match r {
            Ok(l) => {
                let _ = ready_tx.send(Ok(l.local_addr()?.port()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(format!("{e:#}")));
                return Err(e);
            }
        };
        let deadline = Instant::now() + timeout;
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => bail!("accept on {server_ip} in netns {sname}: {e}"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        let (mut n, mut h, mut buf) = (0u64, Fnv::new(), vec![0u8; 64 * 1024]);
        loop {
            let k = s.read(&mut buf).with_context(|| format!("reading on {server_ip} in netns {sname} after {n} bytes"))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        // Acknowledge: lets the client know everything arrived before it closes.
        let _ = s.write_all(&n.to_le_bytes());
        Ok((n, h.0))
    });
    let port = match ready_rx.recv_timeout(timeout) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let _ = server_t.join();
            bail!("tcp server: {e}");
        }
        Err(_) => bail!("tcp server in netns {} did not start", server.name()),
    };
    let client_t = std::thread::spawn(move || -> Result<(u64, u64, Duration)> {
        enter(&cpath)?;
        let addr = SocketAddr::from((server_ip, port));
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting from netns {cname} to {addr}"))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_read_timeout(Some(timeout))?;
        let (mut rng, mut h, mut left, mut buf) = (XorShift(0x9e3779b97f4a7c15), Fnv::new(), bytes, vec![0u8; 64 * 1024]);
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..k]);
            s.write_all(&buf[..k]).with_context(|| format!("sending from netns {cname} to {addr}, {} bytes sent", bytes - left))?;
            h.update(&buf[..k]);
            left -= k as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).with_context(|| format!("waiting for the server's acknowledgement in netns {cname}"))?;
        Ok((bytes, h.0, start.elapsed()))
    });
    let client_r = client_t.join().map_err(|_| anyhow::anyhow!("tcp client thread panicked"))?;
    let server_r = server_t.join().map_err(|_| anyhow::anyhow!("tcp server thread panicked"))?;
    let (sent, sh, elapsed) = client_r.with_context(|| format!("tcp client {} -> {server_ip}", client.name()))?;
    let (got, gh) = server_r.with_context(|| format!("tcp server {} on {server_ip}", server.name()))?;
    if sent != got || sh != gh {
        bail!("tcp {} -> {server_ip} ({}): sent {sent} bytes hash {sh:016x}, received {got} bytes hash {gh:016x}", client.name(), server.name());
    }
    Ok(Transfer { bytes: got, elapsed })
}

/// One TCP exchange through a translated address: a listener on
/// `0.0.0.0:listen_port` (`[::]` for an IPv6 `connect`) in `server`, a client in `client` connecting to
/// `connect` (e.g. a node's hostPort that portmap DNATs to the server).
/// Returns the address the server's end of the connection had (the
/// translated destination) and the client's address as the server saw it.
/// Every step has a 10 s timeout (scaled by the harness's patience).
pub fn tcp_exchange(client: &Netns, server: &Netns, listen_port: u16, connect: SocketAddr) -> Result<(SocketAddr, SocketAddr)> {
    let timeout = crate::cmd::patient(Duration::from_secs(10));
    let (cpath, spath) = (client.path(), server.path());
    let (sname, cname) = (server.name().to_string(), client.name().to_string());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let server_t = std::thread::spawn(move || -> Result<(SocketAddr, SocketAddr)> {
        let r = (|| {
            enter(&spath)?;
            // The listener's family is the connection's: `[::]` for an IPv6 `connect`.
            let any: std::net::IpAddr = if connect.is_ipv6() { std::net::Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
            let l = TcpListener::bind((any, listen_port)).with_context(|| format!("listening on port {listen_port} in netns {sname}"))?;
            l.set_nonblocking(true)?;
            Ok::<_, anyhow::Error>(l)
        })();
        let l = match r {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(format!("{e:#}")));
                return Err(e);
            }
        };
        let deadline = Instant::now() + timeout;
        let (mut s, peer) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => bail!("accept on port {listen_port} in netns {sname}: {e}"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).with_context(|| format!("reading the greeting in netns {sname}"))?;
        if &buf != b"hello" {
            bail!("server in {sname} got {buf:?}");
        }
        s.write_all(b"world")?;
        Ok((s.local_addr()?, peer))
    });
    match ready_rx.recv_timeout(timeout) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = server_t.join();
            bail!("tcp server: {e}");
        }
        Err(_) => bail!("tcp server in netns {} did not start", server.name()),
    }
    let client_t = std::thread::spawn(move || -> Result<()> {
        enter(&cpath)?;
        let mut s = TcpStream::connect_timeout(&connect, timeout).with_context(|| format!("connecting from netns {cname} to {connect}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).with_context(|| format!("reading the answer in netns {cname}"))?;
        if &buf != b"world" {
            bail!("client in {cname} got {buf:?}");
        }
        Ok(())
    });
    let client_r = client_t.join().map_err(|_| anyhow::anyhow!("tcp client thread panicked"))?;
    if let Err(e) = client_r {
        // The server gives up after its accept timeout.
        let _ = server_t.join();
        return Err(e);
    }
    server_t.join().map_err(|_| anyhow::anyhow!("tcp server thread panicked"))?
}

/// A bounded packet capture (`timeout <secs> tcpdump -c <max>`) running in
/// a namespace; stopped (SIGTERM, then SIGKILL) on [`Capture::finish`] or drop.
pub struct Capture {
    child: Option<std::process::Child>,
    out_rx: mpsc::Receiver<String>,
    what: String,
}

impl Capture {
    /// Starts `tcpdump -i <iface> -n -l -c <max> <filter>` in `ns`, bounded by
    /// `secs`, and waits (5 s) until it is listening.
    pub fn start(ns: &Netns, iface: &str, filter: &str, max: u32, secs: u32) -> Result<Capture> {
        use std::io::BufRead;
        let (secs_s, max_s) = (secs.to_string(), max.to_string());
        let mut args = vec![secs_s.as_str(), "tcpdump", "-i", iface, "-n", "-l", "-c", &max_s];
        args.extend(filter.split_whitespace());
        let mut c = ns.command("timeout", &args);
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let what = format!("`{}` in netns {}", crate::cmd::describe(&c), ns.name());
        let mut child = c.spawn().with_context(|| format!("spawning {what}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut cap = Capture { child: Some(child), out_rx: mpsc::channel().1, what };
        let (out_tx, out_rx) = mpsc::channel::<String>();
        let (err_tx, err_rx) = mpsc::channel::<String>();
        if let Some(o) = stdout {
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(o).lines().map_while(|l| l.ok()) {
                    let _ = out_tx.send(l);
                }
            });
        }
        if let Some(e) = stderr {
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(e).lines().map_while(|l| l.ok()) {
                    let _ = err_tx.send(l);
                }
            });
        }
        cap.out_rx = out_rx;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            match err_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("listening on") => break,
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{} exited before listening: {}", cap.what, seen.join("\n")),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= deadline {
                bail!("{} not listening after 5 s: {}", cap.what, seen.join("\n"));
            }
        }
        Ok(cap)
    }

    /// Stops the capture and returns the packets it printed (one line each).
    pub fn finish(mut self) -> Vec<String> {
        // Let the last packets reach tcpdump before it is stopped.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(mut c) = self.child.take() {
            crate::cmd::terminate(&mut c, Duration::from_secs(2));
        }
        let mut v = Vec::new();
        while let Ok(l) = self.out_rx.recv_timeout(Duration::from_millis(500)) {
            v.push(l);
        }
        v
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::cmd::terminate(&mut c, Duration::from_secs(2));
        }
    }
}
