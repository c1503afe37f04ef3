//! The legacy udp backend: pod traffic through a TUN device and a UDP
//! socket in flannel's udp wire format (port 8285, the UDP payload is the
//! bare inner IPv4 packet, inner TTL decremented on send and on receive),
//! for kernels without BPF and for `"Backend":{"Type":"udp"}` clusters.
//!
//! flannel's proxy moves one packet per syscall in one thread. weft runs one
//! worker thread per core, each with its own queue of a multi-queue TUN and
//! its own SO_REUSEPORT socket, moves packets in batches, lets the kernel
//! hand the TUN 64 KB TCP packets (virtio-net header, TSO) which it
//! segments into wire-sized packets itself and sends with UDP GSO, and
//! merges received segments (UDP GRO) back into TSO packets for the TUN.
//! Buffers are allocated once per worker.
pub mod backend;
pub mod cpus;
pub mod csum;
pub mod gro;
pub mod packet;
pub mod peers;
pub mod sys;
mod worker;

use std::{
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};

pub use peers::{PeerMap, Peers};

/// flannel's default udp port.
pub const DEFAULT_PORT: u16 = 8285;
/// IPv4 + UDP header: the TUN's MTU is the underlay's minus this.
pub const UDP_OVERHEAD: u32 = 28;
/// The TUN's name pattern: the kernel gives the first free `weft<N>`
/// (flannel's is `flannel%d`).
pub const TUN_NAME: &str = "weft%d";

/// The udp path's counters, by index.
pub mod stat {
    /// Inner packets sent as datagrams.
    pub const TX: usize = 0;
    /// Inner packets received and written into the TUN.
    pub const RX: usize = 1;
    /// From the TUN with no lease for the destination (answered with ICMP net unreachable).
    pub const DROP_NO_LEASE: usize = 2;
    /// Datagrams from an address that holds no lease.
    pub const DROP_UNKNOWN_PEER: usize = 3;
    /// From a lease holder, with an inner source outside its subnet.
    pub const DROP_SPOOFED: usize = 4;
    /// Not IPv4, or lengths that do not add up.
    pub const DROP_MALFORMED: usize = 5;
    /// TTL would reach 0.
    pub const DROP_TTL: usize = 6;
    /// Larger than the TUN's MTU or than one datagram.
    pub const DROP_TOO_BIG: usize = 7;
    /// The socket refused the datagram.
    pub const DROP_SEND: usize = 8;
    /// The TUN refused the packet.
    pub const DROP_TUN_WRITE: usize = 9;
    /// TSO packets read from the TUN and segmented (packets only).
    pub const TSO_READS: usize = 10;
    /// UDP GSO sends of several datagrams at once (packets only).
    pub const GSO_SENDS: usize = 11;
    /// Merged TSO packets written into the TUN (packets only).
    pub const GRO_WRITES: usize = 12;
    /// ICMP net-unreachable answers written into the TUN (packets only).
    pub const ICMP_SENT: usize = 13;
    pub const COUNT: usize = 14;
    pub const NAMES: [&str; COUNT] = [
        "tx",
        "rx",
        "drop_no_lease",
        "drop_unknown_peer",
        "drop_spoofed",
        "drop_malformed",
        "drop_ttl",
        "drop_too_big",
        "drop_send",
        "drop_tun_write",
        "tso_reads",
        "gso_sends",
        "gro_writes",
        "icmp_sent",
    ];
}

/// Counters shared by the workers (each adds its own once per wake-up).
pub struct Stats {
    packets: [AtomicU64; stat::COUNT],
    bytes: [AtomicU64; stat::COUNT],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { packets: std::array::from_fn(|_| AtomicU64::new(0)), bytes: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Stats {
    fn add(&self, packets: &[u64; stat::COUNT], bytes: &[u64; stat::COUNT]) {
        for i in 0..stat::COUNT {
            if packets[i] != 0 {
                self.packets[i].fetch_add(packets[i], Relaxed);
            }
            if bytes[i] != 0 {
                self.bytes[i].fetch_add(bytes[i], Relaxed);
            }
        }
    }

    /// (name, packets, bytes) of every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        (0..stat::COUNT).map(|i| (stat::NAMES[i], self.packets[i].load(Relaxed), self.bytes[i].load(Relaxed))).collect()
    }
}

/// How to run the udp path.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Our address and the udp port (flannel's `Backend.Port`).
    pub bind: SocketAddrV4,
    pub tun_mtu: u32,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Offloads (TSO on the TUN, GSO/GRO on the sockets) where the kernel has them.
    pub offload: bool,
    /// Worker i pinned on the i-th CPU weftd may use, and each received
    /// datagram handed to the worker of the CPU that received it (`cpus.rs`).
    pub pin: bool,
}

/// The running udp path: the TUN and its workers. Dropping it stops the
/// workers and closes the TUN, which removes the device and its routes.
pub struct UdpPath {
    pub name: String,
    pub peers: Arc<Peers>,
    pub stats: Arc<Stats>,
    pub port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpPath {
    /// Opens the TUN (one queue per worker) and the sockets, and starts
    /// the workers. The caller sets the TUN's address, MTU and route.
    pub fn start(cfg: &UdpConfig) -> Result<UdpPath> {
        let workers = if cfg.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { cfg.workers };
        let (tuns, name) = match sys::open_tun(TUN_NAME, workers, cfg.offload) {
            Ok(t) => t,
            Err(e) if cfg.offload => {
                log::warn!("udp: TUN offloads unavailable ({e:#}); running without them");
                sys::open_tun(TUN_NAME, workers, false)?
            }
            Err(e) => return Err(e),
        };
        let peers = Arc::new(Peers::default());
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let placement = worker_cpus(cfg.pin, workers);
        let mut socks = Vec::new();
        for _ in 0..tuns.len() {
            socks.push(sys::udp_socket(cfg.bind, cfg.offload)?);
        }
        // Every socket is in the reuseport group now: socket i is worker i's.
        let steered = match (socks.first(), placement.iter().any(Option::is_some)) {
            (Some((s, _)), true) => match cpus::attach_steering(std::os::fd::AsFd::as_fd(s), &cpus::steering_program(&placement)) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("udp: cannot steer datagrams by CPU ({e}); the kernel spreads them by hash");
                    false
                }
            },
            _ => false,
        };
        let f = socks.first().map(|(_, f)| *f).context("no udp worker")?;
        for (i, (tun, (sock, feats))) in tuns.into_iter().zip(socks).enumerate() {
            let cpu = placement[i];
            let w = worker::Worker { tun, sock, feats, cpu, peers: peers.clone(), stats: stats.clone(), stop: stop.clone(), tun_mtu: cfg.tun_mtu as usize };
            threads.push(std::thread::Builder::new().name(format!("weft-udp-{i}")).spawn(move || w.run()).context("starting a udp worker")?);
        }
        log::info!(
            "udp: {name}, {workers} workers (one TUN queue and one socket on {} each), TSO on the TUN: {}, UDP GSO: {}, UDP GRO: {}, pinned on CPUs: {}, steered by CPU: {steered}",
            cfg.bind, cfg.offload, f.gso, f.gro,
            if placement.iter().any(Option::is_some) { format!("{:?}", placement.iter().flatten().collect::<Vec<_>>()) } else { "no".into() }
        );
        Ok(UdpPath { name, peers, stats, port: cfg.bind.port(), stop, threads })
    }
}

impl Drop for UdpPath {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The CPU of each of `workers` workers: the allowed CPUs in turn, or none
/// (not pinning, or the affinity mask cannot be read).
fn worker_cpus(pin: bool, workers: usize) -> Vec<Option<usize>> {
    let allowed = if pin {
        cpus::allowed().unwrap_or_else(|e| {
            log::warn!("udp: cannot read the CPU affinity mask ({e}); workers run unpinned");
            vec![]
        })
    } else {
        vec![]
    };
    (0..workers.max(1)).map(|i| (!allowed.is_empty()).then(|| allowed[i % allowed.len()])).collect()
}
