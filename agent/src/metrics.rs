//! Prometheus metrics, served as `/metrics` on the health port (text
//! exposition format 0.0.4). The datapath's counters are read from the
//! pinned `weft_stats` at each scrape (no copy to go stale); the control
//! plane's figures are kept here by the agent as they happen.
use std::{
    fmt::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::Instant,
};

use weft_common::{stat, Counter};

/// Errors talking to the lease store (list, watch, renew), process-wide:
/// the store code counts where it logs.
pub static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Kubernetes Node updates (kube subnet manager) that changed no lease
/// (heartbeats, labels: no reconcile follows), and those that did.
pub static KUBE_NODE_UPDATES_NONE: AtomicU64 = AtomicU64::new(0);
pub static KUBE_NODE_UPDATES_LEASE: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Reconciles {
    count: u64,
    sum_s: f64,
    last_s: f64,
    errors: u64,
    /// Dataplane entries (map entries, routes, FDB/neighbour entries, udp
    /// peers) the reconciles added or updated, and removed: the work they did.
    added: u64,
    removed: u64,
}

pub struct Metrics {
    started: Instant,
    /// `--bpf-pin-dir` (None: no BPF datapath on this node).
    pin_dir: Mutex<Option<PathBuf>>,
    leases: AtomicU64,
    peers: AtomicU64,
    /// When our lease was last created or renewed.
    lease_since: Mutex<Option<Instant>>,
    /// Renewals of our lease that the store accepted (not its creation, nor
    /// a re-claim after it was lost).
    lease_renewals: AtomicU64,
    reconciles: Mutex<Reconciles>,
    /// The udp path's counters (None: not the udp backend).
    udp: Mutex<Option<std::sync::Arc<crate::backend::udp::Stats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            pin_dir: Mutex::new(None),
            leases: AtomicU64::new(0),
            peers: AtomicU64::new(0),
            lease_since: Mutex::new(None),
            lease_renewals: AtomicU64::new(0),
            reconciles: Mutex::new(Reconciles::default()),
            udp: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn set_pin_dir(&self, dir: PathBuf) {
        *lock(&self.pin_dir) = Some(dir);
    }
    pub fn set_udp_stats(&self, s: std::sync::Arc<crate::backend::udp::Stats>) {
        *lock(&self.udp) = Some(s);
    }
    /// Our lease was created, renewed or claimed again: its age restarts.
    pub fn lease_renewed(&self) {
        *lock(&self.lease_since) = Some(Instant::now());
    }
    /// The store accepted a renewal of our existing lease.
    pub fn lease_renewal_counted(&self) {
        self.lease_renewals.fetch_add(1, Relaxed);
        self.lease_renewed();
    }
    pub fn leases(&self, leases: usize, peers: usize) {
        self.leases.store(leases as u64, Relaxed);
        self.peers.store(peers as u64, Relaxed);
    }
    /// One reconcile: how long it took, whether it was clean, and the
    /// entries it added/updated and removed.
    pub fn reconciled(&self, seconds: f64, ok: bool, added: usize, removed: usize) {
        let mut r = lock(&self.reconciles);
        r.added += added as u64;
        r.removed += removed as u64;
        r.count += 1;
        r.sum_s += seconds;
        r.last_s = seconds;
        r.errors += !ok as u64;
    }

    fn datapath_counters(&self) -> Option<Vec<Counter>> {
        crate::dataplane::pinned::counters(lock(&self.pin_dir).as_deref()?)
    }

    /// The exposition text; `ready` is /readyz's answer.
    pub fn render(&self, ready: bool) -> String {
        let mut o = String::new();
        if let Some(c) = self.datapath_counters() {
            let by = |f: fn(&Counter) -> u64| -> Vec<(String, String)> {
                c.iter().enumerate().map(|(i, c)| (format!("{{what=\"{}\"}}", stat::NAMES[i]), f(c).to_string())).collect()
            };
            family(
                &mut o,
                "weft_datapath_packets_total",
                "counter",
                "Packets by what weft's BPF datapath did with them (encap, decap, fwd, drop_<reason>, ...).",
                &by(|c| c.packets),
            );
            family(&mut o, "weft_datapath_bytes_total", "counter", "Bytes by what weft's BPF datapath did with them.", &by(|c| c.bytes));
        }
        if let Some(u) = lock(&self.udp).as_ref() {
            let snap = u.snapshot();
            let by = |f: fn(&(&str, u64, u64)) -> u64| -> Vec<(String, String)> {
                snap.iter().map(|c| (format!("{{what=\"{}\"}}", c.0), f(c).to_string())).collect()
            };
            family(&mut o, "weft_udp_packets_total", "counter", "Packets by what the udp path did with them (tx, rx, drop_<reason>, ...).", &by(|c| c.1));
            family(&mut o, "weft_udp_bytes_total", "counter", "Bytes by what the udp path did with them.", &by(|c| c.2));
        }
        let one = |v: String| vec![(String::new(), v)];
        family(&mut o, "weft_leases", "gauge", "Leases in the store, ours included.", &one(self.leases.load(Relaxed).to_string()));
        family(
            &mut o,
            "weft_peers",
            "gauge",
            "Peers this node programs (leases of its backend that passed the checks).",
            &one(self.peers.load(Relaxed).to_string()),
        );
        if let Some(t) = *lock(&self.lease_since) {
            family(
                &mut o,
                "weft_lease_age_seconds",
                "gauge",
                "Seconds since our lease was created or last renewed.",
                &one(format!("{:.3}", t.elapsed().as_secs_f64())),
            );
        }
        let r = lock(&self.reconciles);
        family(
            &mut o,
            "weft_reconcile_duration_seconds",
            "summary",
            "Time to reconcile the dataplane with the leases.",
            &[("_sum".into(), format!("{:.6}", r.sum_s)), ("_count".into(), r.count.to_string())],
        );
        family(&mut o, "weft_reconcile_last_duration_seconds", "gauge", "Duration of the last reconcile.", &one(format!("{:.6}", r.last_s)));
        family(&mut o, "weft_reconcile_errors_total", "counter", "Reconciles that failed or left errors.", &one(r.errors.to_string()));
        family(
            &mut o,
            "weft_reconcile_changes_total",
            "counter",
            "Dataplane entries (map entries, routes, FDB and neighbour entries, udp peers) reconciles added or updated, and removed.",
            &[("{op=\"added\"}".into(), r.added.to_string()), ("{op=\"removed\"}".into(), r.removed.to_string())],
        );
        family(
            &mut o,
            "weft_lease_renewals_total",
            "counter",
            "Renewals of our lease the store accepted (not its creation or a re-claim).",
            &one(self.lease_renewals.load(Relaxed).to_string()),
        );
        family(
            &mut o,
            "weft_store_errors_total",
            "counter",
            "Errors talking to the lease store (list, watch, renew).",
            &one(STORE_ERRORS.load(Relaxed).to_string()),
        );
        family(
            &mut o,
            "weft_kube_node_updates_total",
            "counter",
            "Kubernetes Node updates seen by the kube subnet manager, by whether they changed a lease (effect=lease) or nothing weft reads (effect=none: no reconcile).",
            &[
                ("{effect=\"none\"}".into(), KUBE_NODE_UPDATES_NONE.load(Relaxed).to_string()),
                ("{effect=\"lease\"}".into(), KUBE_NODE_UPDATES_LEASE.load(Relaxed).to_string()),
            ],
        );
        {
            use crate::egress as e;
            family(
                &mut o,
                "weft_egress_rules_applied_total",
                "counter",
                "nftables transactions that put weft's egress rules (--ip-masq, forward accepts) in place.",
                &one(e::APPLIED.load(Relaxed).to_string()),
            );
            family(
                &mut o,
                "weft_egress_rules_restored_total",
                "counter",
                "Of those, the ones that restored rules someone else changed or removed.",
                &one(e::RESTORED.load(Relaxed).to_string()),
            );
            family(
                &mut o,
                "weft_egress_checks_total",
                "counter",
                "Checks of the kernel's egress rules against the wanted ones.",
                &one(e::CHECKS.load(Relaxed).to_string()),
            );
            family(
                &mut o,
                "weft_egress_flannel_rules_removed_total",
                "counter",
                "flanneld's iptables objects (jumps into and chains FLANNEL-POSTRTG, FLANNEL-FWD) weftd removed once its own rules replaced them.",
                &one(e::FLANNEL_REMOVED.load(Relaxed).to_string()),
            );
            family(
                &mut o,
                "weft_egress_rules_ok",
                "gauge",
                "1 when the kernel holds weft's egress rules, 0 when putting them in place failed (masquerading is off; see the log), 2 when none are wanted.",
                &one(e::STATE.load(Relaxed).to_string()),
            );
        }
        family(&mut o, "weft_ready", "gauge", "1 when /readyz answers 200.", &one((ready as u8).to_string()));
        family(&mut o, "weft_uptime_seconds", "gauge", "Seconds since weftd started.", &one(format!("{:.3}", self.started.elapsed().as_secs_f64())));
        o
    }
}

/// One metric family: HELP, TYPE, then `name<suffix-or-labels> value` per
/// sample (a sample's first part is either `{labels}` or a `_sum`-style suffix).
fn family(o: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (tail, v) in samples {
        let _ = writeln!(o, "{name}{tail} {v}");
    }
}
