//! The measurements of a live swap ([`crate::swap`]), shared by the swap
//! tests on etcd (tests/tests/live_swap.rs) and on the kube store
//! (tests/tests/live_swap_kube.rs): a 200/s ping flood from the swapped
//! node's pod to each target while a swap runs ([`measure`]), the figures
//! and the loss bound ([`record`]), held TCP connections still moving
//! ([`conns_alive`]), the swapped node's identity before and after
//! ([`identity`], [`same_identity`]), weftd's start and stop
//! ([`weftd_started`], [`flanneld_back`]) and log ([`weftd_healthy`]); and
//! the cluster they run on ([`scene`], [`open_conns`]).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    cni,
    flannel_node::FlannelBackend,
    held_tcp::HeldConnection,
    kube_store, report,
    store::LeaseStore,
    subnet_env::{self as senv, SubnetEnv},
    swap::{self, FlanneldStart, SwapBack, WeftdStart},
    traffic::PingFlood,
    Cluster, ClusterBuilder, NodeRef, Wiring,
};

/// Echo requests per second of each flood (issue 24's rate).
pub const RATE: u32 = 200;
/// Echo requests per flood: 12 s at 200/s, time for weftd's start (or
/// stop and flanneld's start) and 2 s after it.
pub const FLOOD: u32 = 2400;
/// The floods run this long before the swap starts.
pub const BEFORE: Duration = Duration::from_millis(1500);
/// And at least this long after it is done.
pub const AFTER: Duration = Duration::from_secs(2);
/// One TCP message every this long.
pub const PERIOD: Duration = Duration::from_millis(20);
/// The most echo requests a flood may lose in a swap that takes nothing
/// away, both ways, vxlan and host-gw: weftd takes flanneld's device (with
/// its VtepMAC, routes, neighbours, FDB) or routes over in place, and
/// flanneld finds them again. Measured: none lost in most runs, one in a
/// few (live_swap, live_swap_kube). Two: room for a stray loss on a loaded
/// 2-core machine, while the takeover before weft_decap was attached ahead
/// of weft_overlay_in (2 lost per flood, 4 per phase) or any swap that takes
/// a device away for its start (20 and more) still fails it.
pub const MAX_LOST_IN_PLACE: u32 = 2;

/// A swap test's cluster: weft node `w` with pod `pw` (weft-cni), the
/// node to swap `s` and flannel node `f`, both flannel-programmed with
/// `--ip-masq` (as kube-flannel runs flanneld), with pods `ps` and `pf`
/// attached as flannel's CNI plugin attaches them.
pub struct Scene {
    pub c: Cluster,
    pub w: NodeRef,
    pub s: NodeRef,
    pub f: NodeRef,
    pub pw: usize,
    pub ps: usize,
    pub pf: usize,
}

impl Scene {
    /// Every pod, for [`Cluster::ping_across_nodes`].
    pub fn pods(&self) -> [usize; 3] {
        [self.pw, self.ps, self.pf]
    }

    /// The flood targets: the weft node's pod and the flannel node's.
    pub fn targets(&self) -> [(&'static str, usize); 2] {
        [("weft node's pod", self.pw), ("flannel node's pod", self.pf)]
    }
}

/// Builds [`Scene`] from `builder` (its store and network config; one
/// weft node) with flannel nodes of `backend`; every pod reaches every pod.
pub fn scene(builder: ClusterBuilder, backend: FlannelBackend) -> Result<Scene> {
    let mut c = builder.weft_nodes(1).build()?;
    let (w, s, f): (NodeRef, NodeRef, NodeRef) = (1, c.add_flannel_node_with(backend, 0)?, c.add_flannel_node_with(backend, 0)?);
    c.program_flannel_nodes()?;
    // kube-flannel runs flanneld with --ip-masq.
    c.start_flanneld(s, true)?;
    c.start_flanneld(f, true)?;
    c.wait_converged()?;
    let pw = c.add_pod(w, Wiring::Cni)?;
    let ps = c.add_flannel_cni_pod(s)?;
    let pf = c.add_flannel_cni_pod(f)?;
    c.ping_across_nodes(&[pw, ps, pf], 3).context("before the swap")?;
    Ok(Scene { c, w, s, f, pw, ps, pf })
}

/// The two TCP connections held across the swaps (a message every
/// [`PERIOD`], 120 s at most): the swapped pod -> the weft node's pod, and
/// the flannel node's pod -> the swapped pod.
pub fn open_conns(sc: &Scene) -> Result<(HeldConnection, HeldConnection)> {
    let (c, pw, ps, pf) = (&sc.c, sc.pw, sc.ps, sc.pf);
    let to_w = HeldConnection::open(&c.pods[ps].ns, &c.pods[pw].ns, IpAddr::V4(c.pods[pw].ip()), PERIOD, Duration::from_secs(120))?;
    let from_f = HeldConnection::open(&c.pods[pf].ns, &c.pods[ps].ns, IpAddr::V4(c.pods[ps].ip()), PERIOD, Duration::from_secs(120))?;
    Ok((to_w, from_f))
}

/// weftd's start in `phase`: its time to ready recorded, an error (with
/// its own words and its log's path) if it refused.
pub fn weftd_started(test: &str, phase: &str, outcome: &WeftdStart, log: &std::path::Path) -> Result<()> {
    match outcome {
        WeftdStart::Ready { after } => report::figure(test, &format!("{phase}: weftd ready after"), after.as_secs_f64() * 1000.0, "ms"),
        WeftdStart::Refused { exit, error } => bail!("{phase}: weftd did not start ({exit}):\n{error}\nlog {}", log.display()),
    }
    Ok(())
}

/// The swap back in `phase`: weftd exited 0 on SIGTERM (its log `log`'s
/// tail otherwise) and flanneld started again.
pub fn flanneld_back(phase: &str, back: &SwapBack, log: &std::path::Path) -> Result<()> {
    let exit = back.weftd_exit.context("weftd was not running at the swap back")?;
    ensure!(exit.success(), "{phase}: weftd exited {exit} on SIGTERM; log:\n{}", crate::cmd::tail(log, 30));
    if let FlanneldStart::Refused { error } = &back.start {
        bail!("{phase}: flanneld would not start again: {error}");
    }
    Ok(())
}

/// The swapped node's identity, to compare after each phase.
pub struct Identity {
    pub env: SubnetEnv,
    pub env_text: String,
    pub lease_key: String,
    pub lease_value: String,
    pub pod_ip: Ipv4Addr,
    pub store_files: Vec<(String, String)>,
    /// On the kube store: the host's Node's podCIDR and flannel annotations.
    pub node: Option<NodeIdentity>,
}

/// The swapped node's own Node on the kube store.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub pod_cidr: Option<String>,
    /// [`crate::flannel_kube::FLANNELD_ANNOTATIONS`], by short name.
    pub annotations: BTreeMap<String, String>,
}

impl NodeIdentity {
    /// The VtepMAC of the backend-data annotation (None: no such JSON field).
    pub fn vtep_mac(&self) -> Option<String> {
        let data: serde_json::Value = serde_json::from_str(self.annotations.get("backend-data")?).ok()?;
        data["VtepMAC"].as_str().map(str::to_string)
    }
}

/// Node `n`'s identity with its pod `pod` (see [`Identity`]).
pub fn identity(c: &Cluster, n: NodeRef, pod: usize) -> Result<Identity> {
    let path = c.flannel_subnet_file(n);
    let env_text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let env = senv::parse(&env_text)?;
    let name = senv::lease_name(&env);
    let lease_value = c.store.get(&name)?.with_context(|| format!("node {n}'s lease {name} is not in the store"))?;
    let pod_ip = swap::pod_addr(&c.pods[pod])?.context("the swapped pod has no IPv4 address on eth0")?;
    let node = match &c.store {
        LeaseStore::Kube(k) => {
            let host = c.node_name(n)?;
            let obj = k.api.node(&host).with_context(|| format!("no Node {host}"))?;
            Some(NodeIdentity { pod_cidr: kube_store::pod_cidr(&obj), annotations: c.node_flannel_annotations(n)? })
        }
        _ => None,
    };
    Ok(Identity { env, env_text, lease_key: c.store.key(&name), lease_value, pod_ip, store_files: cni::store_files(&c.flannel_cni_store(n))?, node })
}

/// The checks on the swapped node's identity after a phase: subnet.env, the
/// lease's key and the only lease with the node's PublicIP, the pod's
/// address and host-local's store; on the kube store the Node's podCIDR,
/// public-ip, backend-type and backend-data's VtepMAC.
pub fn same_identity(c: &Cluster, n: NodeRef, pod: usize, before: &Identity, phase: &str) -> Result<Identity> {
    let now = identity(c, n, pod).with_context(|| format!("{phase}: the swapped node"))?;
    ensure!(now.env == before.env, "{phase}: subnet.env changed:\nbefore:\n{}after:\n{}", before.env_text, now.env_text);
    ensure!(now.lease_key == before.lease_key, "{phase}: the lease key changed: {} -> {}", before.lease_key, now.lease_key);
    let ip = c.node_ip(n)?;
    let ours: Vec<(String, String)> = c.leases()?.into_iter().filter(|(_, v)| v.contains(&format!("\"PublicIP\":\"{ip}\""))).collect();
    ensure!(ours.len() == 1, "{phase}: leases with the swapped node's PublicIP {ip}: {ours:?}");
    ensure!(now.pod_ip == before.pod_ip, "{phase}: the swapped pod's address changed: {} -> {}", before.pod_ip, now.pod_ip);
    ensure!(now.store_files == before.store_files, "{phase}: host-local's store changed: {:?} -> {:?}", before.store_files, now.store_files);
    if let (Some(b), Some(a)) = (&before.node, &now.node) {
        ensure!(a.pod_cidr == b.pod_cidr, "{phase}: the Node's podCIDR changed: {:?} -> {:?}", b.pod_cidr, a.pod_cidr);
        for k in ["kube-subnet-manager", "public-ip", "backend-type"] {
            ensure!(a.annotations.get(k) == b.annotations.get(k), "{phase}: annotation {k} changed: {:?} -> {:?}", b.annotations.get(k), a.annotations.get(k));
        }
        ensure!(
            a.vtep_mac() == b.vtep_mac(),
            "{phase}: backend-data's VtepMAC changed: {:?} -> {:?}",
            b.annotations.get("backend-data"),
            a.annotations.get("backend-data")
        );
    }
    if now.env_text != before.env_text {
        eprintln!("{phase}: subnet.env's text changed (same values):\nbefore:\n{}after:\n{}", before.env_text, now.env_text);
    }
    Ok(now)
}

/// One phase's measurements.
pub struct Measured<T> {
    pub outcome: T,
    /// (target label, sent, received).
    pub floods: Vec<(String, u32, u32)>,
    /// (connection label, longest round trip in the phase).
    pub stalls: Vec<(String, Duration)>,
    pub took: Duration,
}

/// Floods from pod `from` to each target pod, runs `swap` [`BEFORE`] into
/// them, waits for the floods, and reads each connection's window.
pub fn measure<T>(
    c: &mut Cluster,
    from: usize,
    targets: &[(&str, usize)],
    conns: &[(&str, &HeldConnection)],
    swap: impl FnOnce(&mut Cluster) -> Result<T>,
) -> Result<Measured<T>> {
    let secs = FLOOD / RATE + 10;
    let mut floods = Vec::new();
    for (label, t) in targets {
        floods.push((label.to_string(), PingFlood::start_at(&c.pods[from].ns, IpAddr::V4(c.pods[*t].ip()), FLOOD, secs, RATE)?));
    }
    let t_flood = Instant::now();
    for (_, h) in conns {
        h.window();
    }
    std::thread::sleep(BEFORE);
    let t0 = Instant::now();
    let outcome = swap(c)?;
    let took = t0.elapsed();
    let flood_len = Duration::from_secs_f64(FLOOD as f64 / RATE as f64);
    let left = flood_len.saturating_sub(t_flood.elapsed());
    ensure!(left >= AFTER, "the swap took {took:?}: the {FLOOD}-request floods end {left:?} after it, less than {AFTER:?} (raise FLOOD)");
    let mut out = Vec::new();
    for (label, f) in floods {
        let (sent, got, line) = f.counts()?;
        eprintln!("  flood -> {label}: {line}");
        ensure!(sent == FLOOD, "the flood to {label} sent {sent} of {FLOOD} echo requests (interrupted: too slow a machine?)");
        out.push((label, sent, got));
    }
    let stalls = conns.iter().map(|(label, h)| (label.to_string(), h.window().window_max_rtt)).collect();
    Ok(Measured { outcome, floods: out, stalls, took })
}

/// Records the phase's figures; then, with a `bound`, requires each
/// flood to have lost at most that many echo requests.
pub fn record<T>(test: &str, phase: &str, m: &Measured<T>, bound: Option<u32>) -> Result<()> {
    for (label, sent, got) in &m.floods {
        report::figure(test, &format!("{phase}: echo requests lost, swapped pod -> {label} (of {FLOOD} at {RATE}/s)"), (sent - got) as f64, "packets");
    }
    for (label, rtt) in &m.stalls {
        report::figure(test, &format!("{phase}: longest TCP round trip, {label}"), rtt.as_secs_f64() * 1000.0, "ms");
    }
    if let Some(b) = bound {
        for (label, sent, got) in &m.floods {
            ensure!(sent - got <= b, "{phase}: {} echo requests to the {label} lost, more than {b} (the test's bound)", sent - got);
        }
    }
    Ok(())
}

/// Every connection alive and moving: 25 more messages (0.5 s) each.
pub fn conns_alive(conns: &[(&str, &HeldConnection)], phase: &str) -> Result<()> {
    for (label, h) in conns {
        h.flowing(25, Duration::from_secs(10)).with_context(|| format!("{phase}: TCP {label}"))?;
    }
    Ok(())
}

/// weftd on swapped node `n` after `phase`: its log's tail printed, the
/// cluster converged, and no ERROR line or panic in its log (WARN lines
/// printed, not failed).
pub fn weftd_healthy(test: &str, c: &Cluster, n: NodeRef, phase: &str) -> Result<()> {
    let log = c.weft_node(n)?.log.clone();
    eprintln!("{test}: {phase}: the swapped node's weftd log:\n{}", crate::cmd::tail(&log, 40));
    c.wait_converged()?;
    let problems = c.weftd_log_problems(n)?;
    let bad: Vec<&String> = problems.iter().filter(|l| l.contains(" ERROR ") || l.contains("panicked")).collect();
    ensure!(bad.is_empty(), "{phase}: weftd on the swapped node logged:\n{bad:#?}");
    if !problems.is_empty() {
        eprintln!("{test}: {phase}: weftd's warnings:\n{}", problems.join("\n"));
    }
    Ok(())
}
