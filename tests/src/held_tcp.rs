//! One established TCP connection between two pods, held open across a
//! disruption (a restart, a swap of the node's agent) and exchanging data
//! all along: the client sends a 32-byte numbered message every `period`
//! and waits for the server to echo it. It answers the questions a ping
//! flood cannot: did the connection survive (no reset, no broken pipe, no
//! give-up), and how long did it stall (the longest round trip, which is
//! where TCP's retransmission timer shows a loss window).
//!
//! Bounded: the client stops by itself after `max` (times the harness's
//! patience) and every socket operation has a timeout; both ends run on
//! threads moved into the pods' namespaces (as [`crate::traffic`] does).
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{netns::Netns, traffic::enter};

/// Bytes per message: an 8-byte sequence number and a fixed pattern.
const MSG: usize = 32;

/// What the client saw so far (shared with the test's thread).
#[derive(Clone, Debug, Default)]
pub struct HeldStats {
    /// Messages sent and echoed intact.
    pub exchanged: u64,
    /// The longest round trip since the last [`HeldConnection::window`].
    pub window_max_rtt: Duration,
    /// The longest round trip of the whole connection.
    pub max_rtt: Duration,
    /// The first failure (reset, broken pipe, timeout, wrong echo), with
    /// the number of messages exchanged before it. The connection is dead
    /// from then on.
    pub failure: Option<String>,
}

/// The connection and its two threads; see the module's doc.
pub struct HeldConnection {
    pub what: String,
    stats: Arc<Mutex<HeldStats>>,
    stop: mpsc::Sender<()>,
    client: Option<JoinHandle<Result<u64>>>,
    server: Option<JoinHandle<Result<u64>>>,
}

impl HeldConnection {
    /// Listens on `server_ip` (port chosen by the kernel) in `server`,
    /// connects from `client`, and starts the exchange: one message every
    /// `period`, for at most `max` (times the harness's patience). Returns
    /// once the connection is established and a first message came back.
    pub fn open(client: &Netns, server: &Netns, server_ip: IpAddr, period: Duration, max: Duration) -> Result<HeldConnection> {
        let what = format!("TCP {} -> {} ({server_ip})", client.name(), server.name());
        let max = crate::cmd::patient(max);
        let step = crate::cmd::patient(Duration::from_secs(10));
        // A round trip this long is a dead connection, not a slow one
        // (TCP itself retransmits for many minutes before it gives up).
        let io_timeout = crate::cmd::patient(Duration::from_secs(30));
        let (cpath, spath) = (client.path(), server.path());
        let (sname, cname) = (server.name().to_string(), client.name().to_string());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u16, String>>();
        let server_t = std::thread::spawn(move || -> Result<u64> {
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
            let deadline = Instant::now() + step;
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => bail!("accept on {server_ip} in netns {sname}: {e}"),
                }
            };
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(io_timeout))?;
            s.set_write_timeout(Some(io_timeout))?;
            let (mut n, mut buf) = (0u64, [0u8; MSG]);
            loop {
                // EOF exactly between two messages: the client closed cleanly.
                let k = s.read(&mut buf[..1]).with_context(|| format!("server in netns {sname}: reading after {n} messages"))?;
                if k == 0 {
                    return Ok(n);
                }
                s.read_exact(&mut buf[1..]).with_context(|| format!("server in netns {sname}: reading message {n}"))?;
                s.write_all(&buf).with_context(|| format!("server in netns {sname}: echoing message {n}"))?;
                n += 1;
            }
        });
        let port = match ready_rx.recv_timeout(step) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = server_t.join();
                bail!("{what}: server: {e}");
            }
            Err(_) => bail!("{what}: the server did not start"),
        };
        let stats = Arc::new(Mutex::new(HeldStats::default()));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (up_tx, up_rx) = mpsc::channel::<Result<(), String>>();
        let st = stats.clone();
        let client_t = std::thread::spawn(move || -> Result<u64> {
            let fail = |msg: String| {
                let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                if g.failure.is_none() {
                    g.failure = Some(msg.clone());
                }
                anyhow::anyhow!(msg)
            };
            let setup = (|| {
                enter(&cpath)?;
                let addr = SocketAddr::from((server_ip, port));
                let s = TcpStream::connect_timeout(&addr, step).with_context(|| format!("connecting from netns {cname} to {addr}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(io_timeout))?;
                s.set_write_timeout(Some(io_timeout))?;
                Ok::<_, anyhow::Error>(s)
            })();
            let mut s = match setup {
                Ok(s) => s,
                Err(e) => {
                    let _ = up_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let end = Instant::now() + max;
            let (mut seq, mut out, mut back) = (0u64, [0xa5u8; MSG], [0u8; MSG]);
            loop {
                out[..8].copy_from_slice(&seq.to_le_bytes());
                let t = Instant::now();
                if let Err(e) = s.write_all(&out) {
                    return Err(fail(format!("writing message {seq}: {e} ({:?})", e.kind())));
                }
                if let Err(e) = s.read_exact(&mut back) {
                    return Err(fail(format!("reading the echo of message {seq}: {e} ({:?})", e.kind())));
                }
                let rtt = t.elapsed();
                if back != out {
                    return Err(fail(format!("message {seq} came back different: {back:?}")));
                }
                seq += 1;
                {
                    let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                    g.exchanged = seq;
                    g.window_max_rtt = g.window_max_rtt.max(rtt);
                    g.max_rtt = g.max_rtt.max(rtt);
                }
                if seq == 1 {
                    let _ = up_tx.send(Ok(()));
                }
                if Instant::now() >= end {
                    break;
                }
                match stop_rx.recv_timeout(period.saturating_sub(rtt)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            // A clean close: the server sees EOF between two messages and
            // closes its end; anything but EOF here is a failure.
            if let Err(e) = s.shutdown(std::net::Shutdown::Write) {
                return Err(fail(format!("closing after {seq} messages: {e} ({:?})", e.kind())));
            }
            match s.read(&mut back) {
                Ok(0) => Ok(seq),
                Ok(k) => Err(fail(format!("{k} unexpected bytes after {seq} messages"))),
                Err(e) => Err(fail(format!("waiting for the server's close after {seq} messages: {e} ({:?})", e.kind()))),
            }
        });
        let first = up_rx.recv_timeout(step);
        let mut held = HeldConnection { what: what.clone(), stats, stop: stop_tx, client: Some(client_t), server: Some(server_t) };
        match first {
            Ok(Ok(())) => Ok(held),
            Ok(Err(e)) => {
                let _ = held.close();
                bail!("{what}: {e}")
            }
            Err(_) => {
                let _ = held.close();
                bail!("{what}: no first echo within {step:?}")
            }
        }
    }

    /// What the client saw so far.
    pub fn stats(&self) -> HeldStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends a measuring window: the stats, with the longest round trip
    /// since the previous window; starts the next one.
    pub fn window(&self) -> HeldStats {
        let mut g = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.clone();
        g.window_max_rtt = Duration::ZERO;
        s
    }

    /// Requires the connection alive and moving: no failure so far, and at
    /// least `more` messages exchanged after this call within `within`
    /// (times the harness's patience). Returns the stats then.
    pub fn flowing(&self, more: u64, within: Duration) -> Result<HeldStats> {
        let from = self.stats().exchanged;
        let what = format!("{}: {more} more messages echoed (after {from})", self.what);
        crate::cmd::poll(&what, within, Duration::from_millis(20), || {
            let s = self.stats();
            if let Some(f) = &s.failure {
                return Err(format!("the connection failed: {f}"));
            }
            if s.exchanged >= from + more {
                Ok(Some(s))
            } else {
                Err(format!("{} echoed so far", s.exchanged))
            }
        })
        .map_err(|e| {
            // A failure is final: say so rather than "timed out".
            match self.stats().failure {
                Some(f) => anyhow::anyhow!("{}: the connection failed: {f}", self.what),
                None => e,
            }
        })
    }

    /// Stops the client, closes the connection cleanly and checks both
    /// ends: the number of messages exchanged, or the first failure.
    pub fn close(&mut self) -> Result<u64> {
        let _ = self.stop.send(());
        let c = self.client.take().map(|h| h.join().map_err(|_| anyhow::anyhow!("client thread panicked")).and_then(|r| r));
        let s = self.server.take().map(|h| h.join().map_err(|_| anyhow::anyhow!("server thread panicked")).and_then(|r| r));
        let sent = match c {
            Some(r) => r.with_context(|| format!("{}: client", self.what))?,
            None => bail!("{}: already closed", self.what),
        };
        let echoed = match s {
            Some(r) => r.with_context(|| format!("{}: server", self.what))?,
            None => bail!("{}: already closed", self.what),
        };
        if sent != echoed {
            bail!("{}: the client counted {sent} messages, the server echoed {echoed}", self.what);
        }
        Ok(sent)
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        if self.client.is_some() {
            let _ = self.close();
        }
    }
}
