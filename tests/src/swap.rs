//! Replacing flanneld with weftd on a live node, and back (issue 24).
//!
//! A flannel-programmed node ([`crate::flannel_node`]) is the kernel state
//! flanneld leaves; this module adds what a live flannel node has beyond
//! that, and the two swaps:
//!
//! - [`Cluster::start_flanneld`]: what flanneld does at start besides
//!   programming the kernel: subnet.env at its `--subnet-file`
//!   ([`Cluster::flannel_subnet_file`], the very path a weft node of that
//!   number gets), with `--ip-masq` its iptables rules
//!   ([`flannel_masq_rules`]) in the node's namespace and, on the kube
//!   store (`--kube-subnet-mgr`), its annotations and NetworkUnavailable
//!   condition on its host's Node ([`Cluster::flanneld_kube_node`]).
//! - [`Cluster::add_flannel_cni_pod`]: a pod attached as flannel's CNI
//!   plugin attaches it. Debian ships no `flannel` plugin (it left the
//!   reference plugins), so the harness does its part: it reads
//!   subnet.env and runs the delegate it would run, Debian's `bridge`
//!   (cni0, isGateway, isDefaultGateway and hairpinMode as kube-flannel's
//!   cni-conf.json asks, ipMasq false, the MTU of subnet.env) with
//!   `host-local` over FLANNEL_SUBNET (routes: FLANNEL_NETWORK), through
//!   the CNI protocol as [`crate::cni`] runs plugins; host-local's store is
//!   flannel's `/var/lib/cni/networks/cbr0`, but under the node's temp dir.
//!   The pod is a [`Wiring::Bridge`] pod with the bridge plugin's result in
//!   [`Pod::cni`]: weft-cni wrote no endpoint record for it.
//! - [`Cluster::swap_to_weftd`]: flanneld stops (nothing of its kernel
//!   state changes: flanneld leaves lease, flannel.1, routes, neighbours,
//!   FDB entries and rules in place on SIGTERM) and weftd starts on the
//!   same namespace with flanneld's flags: the same store and prefix (on
//!   the kube store `--kube-subnet-mgr`, its kubeconfig and net-conf.json,
//!   and `NODE_NAME` the host's Node), `--iface eth0`, the same
//!   `--subnet-file`, `--ip-masq` when
//!   subnet.env says FLANNEL_IPMASQ=true (plus the health port, to see
//!   /readyz). The node becomes a [`WeftNode`]. weftd may refuse to start
//!   there: that is reported ([`WeftdStart::Refused`]), not worked around.
//! - [`Cluster::swap_to_flanneld`]: weftd gets SIGTERM (no
//!   `--cleanup-on-exit`, so it leaves its devices, routes, programs and
//!   pins, as it does on every exit) and flanneld starts again:
//!   [`FlannelNode::restart`] (which may fail as flanneld would), its
//!   watch's programming ([`FlannelNode::reprogram`]), subnet.env and
//!   rules. weft's pins stay on bpffs, as on a real node; the returned
//!   [`LeftPins`] removes them when the test is done with the node.
//!
//! The other flannel nodes have no watch: whenever a swap changes the
//! swapped node's lease (a new VtepMAC), the harness reprograms them, as
//! their flanneld would on the lease event: while weftd starts, within one
//! 20 ms readiness poll of the change (a real flanneld reacts sooner);
//! on the swap back, right after flanneld's start.
//!
//! On the kube store the swapped node's lease is its host's Node (made by
//! [`Cluster::start_flanneld`]): weftd reads its podCIDR and annotations
//! there, and flanneld's restart ([`FlannelNode::restart`], whose lease
//! write [`crate::kube_store::KubeStore::put`] puts onto that Node) writes
//! its annotations back. The API server is the harness's own
//! ([`crate::kube_api`]), not a real one.
//!
//! IPv4, etcd, the embedded store or the kube store, vxlan and host-gw only.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::{
    cmd,
    cni::{self, CniArgs},
    flannel_node::{FlannelBackend, FlannelNode},
    metrics,
    netns::Netns,
    pod::{self, Pod, Wiring},
    store::LeaseStore,
    subnet_env::{self as senv, SubnetEnv},
    weft_node::WeftNode,
    Cluster, NodeRef,
};

/// The network name of kube-flannel's cni-conf.json (host-local's store
/// directory is named by it).
pub const CNI_NETWORK: &str = "cbr0";
/// kube-flannel's cni-conf.json's cniVersion.
pub const CNI_VERSION: &str = "0.3.1";

/// How weftd's start on a swapped node went.
#[derive(Clone, Debug)]
pub enum WeftdStart {
    /// weftd runs and its /readyz answered 200 `after` its start.
    Ready { after: Duration },
    /// weftd exited before it was ready: its exit status and the ERROR
    /// lines of its log (its own words for why).
    Refused { exit: String, error: String },
}

/// How flanneld's start on a node swapped back went.
#[derive(Debug)]
pub enum FlanneldStart {
    /// flanneld would run: the kernel programmed as its start and its
    /// first watch event program it.
    Running,
    /// flanneld would fail to start (the error it would stop with); the
    /// node stays a [`WeftNode`] without weftd.
    Refused { error: String },
}

/// A stopped weftd's bpffs pin directory, left in place as weftd leaves it
/// (its programs stay attached through it); removed on drop.
pub struct LeftPins(pub PathBuf);

impl Drop for LeftPins {
    fn drop(&mut self) {
        crate::bpf::remove_pin_dir(&self.0);
    }
}

/// The result of [`Cluster::swap_to_flanneld`].
pub struct SwapBack {
    /// How the SIGTERMed weftd exited (None: it was not running).
    pub weftd_exit: Option<std::process::ExitStatus>,
    pub start: FlanneldStart,
    pub pins: LeftPins,
}

/// flanneld's masquerade rules (`--ip-masq`, flannel's
/// pkg/trafficmngr/iptables, IPv4) for `network` and this node's
/// `subnet`: (table, chain, rule), in flannel's order, with
/// `--random-fully` (flanneld's default). The jumps from POSTROUTING and
/// FORWARD are [`flannel_masq_jumps`].
pub fn flannel_masq_rules(network: &str, subnet: &str) -> Vec<(&'static str, &'static str, String)> {
    let c = "-m comment --comment \"flanneld masq\"";
    let f = "-m comment --comment \"flanneld forward\"";
    vec![
        ("nat", "FLANNEL-POSTRTG", format!("-m mark --mark 0x4000/0x4000 {c} -j RETURN")),
        ("nat", "FLANNEL-POSTRTG", format!("-s {subnet} -d {network} {c} -j RETURN")),
        ("nat", "FLANNEL-POSTRTG", format!("-s {network} -d {subnet} {c} -j RETURN")),
        ("nat", "FLANNEL-POSTRTG", format!("! -s {network} -d {subnet} {c} -j RETURN")),
        ("nat", "FLANNEL-POSTRTG", format!("-s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully")),
        ("nat", "FLANNEL-POSTRTG", format!("! -s {network} -d {network} {c} -j MASQUERADE --random-fully")),
        ("filter", "FLANNEL-FWD", format!("-s {network} {f} -j ACCEPT")),
        ("filter", "FLANNEL-FWD", format!("-d {network} {f} -j ACCEPT")),
    ]
}

/// The jumps into flannel's chains: (table, built-in chain, rule).
pub fn flannel_masq_jumps() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("nat", "POSTROUTING", "-m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG".to_string()),
        ("filter", "FORWARD", "-m comment --comment \"flanneld forward\" -j FLANNEL-FWD".to_string()),
    ]
}

/// `iptables -t <table> <op> <chain> <rule>` in `ns` (the rule split as a
/// shell would, quotes kept together).
fn iptables(ns: &Netns, table: &str, op: &str, chain: &str, rule: &str) -> Result<std::process::Output> {
    let mut args: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), table.into(), op.into(), chain.into()];
    args.extend(shell_words(rule));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec_output("iptables", &refs)
}

fn shell_words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Installs flanneld's masquerade rules in `ns` as flanneld ensures them
/// (every `--iptables-resync`): chains created if missing, each rule
/// appended unless present (`-C`). Returns how many rules it added.
pub fn program_flannel_masq(ns: &Netns, network: &str, subnet: &str) -> Result<usize> {
    let mut added = 0;
    for (table, chain) in [("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD")] {
        // -N fails when the chain exists: that is fine.
        let _ = iptables(ns, table, "-N", chain, "")?;
    }
    for (table, chain, rule) in flannel_masq_rules(network, subnet).into_iter().chain(flannel_masq_jumps()) {
        if iptables(ns, table, "-C", chain, &rule)?.status.success() {
            continue;
        }
        let out = iptables(ns, table, "-A", chain, &rule)?;
        ensure!(out.status.success(), "iptables -t {table} -A {chain} {rule} in {}: {}", ns.name(), String::from_utf8_lossy(&out.stderr).trim());
        added += 1;
    }
    Ok(added)
}

/// The part of a node's kernel state a swap may touch, section by
/// section, as text (for reports and before/after comparisons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState(pub Vec<(String, String)>);

impl NodeState {
    /// The sections whose lines differ from `before`: lines gone (`-`) and
    /// lines new (`+`), per section; empty when nothing changed.
    pub fn diff_from(&self, before: &NodeState) -> String {
        let mut s = String::new();
        let mut names: Vec<&String> = self.0.iter().map(|(n, _)| n).collect();
        names.extend(before.0.iter().map(|(n, _)| n).filter(|n| !self.0.iter().any(|(m, _)| m == *n)));
        for name in names {
            let (now, was) = (self.section(name), before.section(name));
            let (now_l, was_l): (Vec<&str>, Vec<&str>) = (now.lines().collect(), was.lines().collect());
            let gone: Vec<&&str> = was_l.iter().filter(|l| !now_l.contains(l)).collect();
            let new: Vec<&&str> = now_l.iter().filter(|l| !was_l.contains(l)).collect();
            if gone.is_empty() && new.is_empty() {
                continue;
            }
            s += &format!("  [{name}]\n");
            for l in gone {
                s += &format!("  - {l}\n");
            }
            for l in new {
                s += &format!("  + {l}\n");
            }
        }
        s
    }

    /// The text of section `name` (empty if there is none).
    pub fn section(&self, name: &str) -> &str {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str()).unwrap_or("")
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, text) in &self.0 {
            writeln!(f, "  [{name}]")?;
            for l in text.lines() {
                writeln!(f, "    {l}")?;
            }
        }
        Ok(())
    }
}

/// The kernel state of node namespace `ns` a swap may touch: devices,
/// IPv4 routes, permanent neighbours, the FDB of flannel.1 and weft.1,
/// iptables (flannel's and the CNI plugins' chains) and weft's nft table.
pub fn node_state(ns: &Netns) -> NodeState {
    let or_err = |r: Result<String>| r.unwrap_or_else(|e| format!("(error: {e:#})"));
    let mut v = Vec::new();
    let links = or_err(ns.ip(&["-br", "link", "show"]));
    // The veth names are the pods' (random): only the devices a swap may touch.
    let links: Vec<&str> = links.lines().filter(|l| !l.starts_with("veth") && !l.starts_with("vp")).collect();
    v.push(("links".to_string(), links.join("\n")));
    v.push(("routes".to_string(), or_err(ns.ip(&["-4", "route", "show"]))));
    v.push(("neigh permanent".to_string(), or_err(ns.ip(&["-4", "neigh", "show", "nud", "permanent"]))));
    for dev in ["flannel.1", "weft.1"] {
        if ns.ip(&["link", "show", "dev", dev]).is_ok() {
            let mut c = std::process::Command::new("bridge");
            c.args(["-n", ns.name(), "fdb", "show", "dev", dev]);
            v.push((format!("fdb {dev}"), or_err(cmd::run(&mut c))));
        }
    }
    let ipt = ns.exec_output("iptables-save", &[]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let ipt: Vec<&str> = ipt.lines().filter(|l| l.contains("FLANNEL") || l.contains("CNI-")).collect();
    v.push(("iptables".to_string(), ipt.join("\n")));
    let nft = ns.exec_output("nft", &["list", "table", "inet", "weft"]).map(|o| o.status.success()).unwrap_or(false);
    v.push(("nft table inet weft".to_string(), if nft { "present".into() } else { "absent".into() }));
    NodeState(v)
}

/// The lines of `log` after byte `from` (what one weftd run wrote).
fn log_since(log: &Path, from: u64) -> String {
    let b = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(b.get(from as usize..).unwrap_or_default()).into_owned()
}

/// The lines of a weftd log (part) at level ERROR or WARN, or telling of a panic.
pub fn log_problems(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ") || l.contains("panicked")).map(str::to_string).collect()
}

impl Cluster {
    /// flanneld's `--subnet-file` on node `n`: `<temp dir>/n<N>/subnet.env`,
    /// the path [`WeftNode::new`] gives weftd on that node.
    pub fn flannel_subnet_file(&self, n: NodeRef) -> PathBuf {
        self.dir().join(format!("n{n}")).join("subnet.env")
    }

    /// What flanneld does at start on flannel node `n` besides what
    /// [`FlannelNode`] programs: writes subnet.env (FLANNEL_IPMASQ =
    /// `ip_masq`) at [`Cluster::flannel_subnet_file`] and, with `ip_masq`,
    /// installs its masquerade rules ([`program_flannel_masq`]).
    pub fn start_flanneld(&mut self, n: NodeRef, ip_masq: bool) -> Result<()> {
        let path = self.flannel_subnet_file(n);
        let f = self.flannel.iter_mut().find(|f| f.n == n).with_context(|| format!("node {n} is not a flannel node"))?;
        ensure!(f.env.subnet.is_some() && f.env.ipv6_subnet.is_none(), "the harness swaps IPv4 nodes only");
        f.env.ipmasq = Some(ip_masq);
        f.env.write(&path).with_context(|| format!("writing {}", path.display()))?;
        if ip_masq {
            let (network, subnet) = (f.env.network.context("no FLANNEL_NETWORK")?.to_string(), f.env.subnet.context("no FLANNEL_SUBNET")?.to_string());
            program_flannel_masq(&f.ns, &network, &subnet)?;
        }
        if matches!(self.store, LeaseStore::Kube(_)) {
            self.flanneld_kube_node(n)?;
        }
        Ok(())
    }

    /// Attaches a new pod to flannel node `n` as flannel's CNI plugin does
    /// (see the module's doc): reads subnet.env (written by
    /// [`Cluster::start_flanneld`]), runs bridge + host-local ADD by the
    /// CNI protocol in the node's namespace, keeps the delegate
    /// configuration where flannel's plugin keeps it for DEL
    /// (`<node dir>/var/lib/cni/flannel/<container id>`). Returns the index
    /// into `self.pods`.
    pub fn add_flannel_cni_pod(&mut self, n: NodeRef) -> Result<usize> {
        let subnet_file = self.flannel_subnet_file(n);
        let env = senv::read(&subnet_file).with_context(|| format!("node {n}: flannel's CNI plugin reads subnet.env (start_flanneld first)"))?;
        let node_ns = self.node_ns(n)?;
        let k = self.pods.iter().filter(|p| p.node == n).count() as u32 + 1;
        let name = format!("{}-n{n}-p{k}", self.prefix);
        let lib = self.dir().join(format!("n{n}")).join("var/lib/cni");
        let delegate = flannel_delegate(&env, &lib.join("networks"))?;
        let ns = Netns::create(&name)?;
        if env.ipv6_subnet.is_some() {
            pod::no_dad(&ns)?;
        }
        let args = CniArgs {
            args: Some(format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={name}")),
            ..CniArgs::new("ADD", &name, Some(&ns.path()), "eth0")
        };
        let flannel_dir = lib.join("flannel");
        std::fs::create_dir_all(&flannel_dir).with_context(|| format!("creating {}", flannel_dir.display()))?;
        std::fs::write(flannel_dir.join(&name), serde_json::to_vec(&delegate)?).context("keeping the delegate configuration")?;
        let out = cni::exec(node_ns, &cni::debian_plugin("bridge")?, &args, &serde_json::to_vec(&delegate)?)?;
        let result = out.result().with_context(|| format!("bridge ADD (flannel's delegate) for pod {name} on node {n}"))?;
        let ip4 = pod::result_ip4(&result)?;
        let ip6 = pod::result_ip6(&result)?;
        ensure!(ip4.is_some(), "bridge's result has no IPv4 address: {result}");
        let host_veth = result["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i.get("sandbox").is_none() && i["name"] != "cni0")
            .and_then(|i| i["name"].as_str())
            .with_context(|| format!("no host veth in {result}"))?
            .to_string();
        self.pods.push(Pod { ip4, ip6, wiring: Wiring::Bridge, node: n, host_veth, cni: Some((name, result)), ns });
        Ok(self.pods.len() - 1)
    }

    /// host-local's store of node `n`'s flannel-CNI pods: flannel's
    /// `/var/lib/cni/networks/cbr0` under the node's temp dir.
    pub fn flannel_cni_store(&self, n: NodeRef) -> PathBuf {
        self.dir().join(format!("n{n}")).join("var/lib/cni/networks").join(CNI_NETWORK)
    }

    /// The flannel backend a flanneld on this cluster runs: the network
    /// config's (vxlan, host-gw or udp). A udp node's flanneld is its
    /// reference proxy: stopping it (the node's drop) ends the process,
    /// and flannel0 with its route goes with it.
    fn flanneld_backend(&self) -> Result<FlannelBackend> {
        match self.backend_type().as_str() {
            "vxlan" => Ok(FlannelBackend::Vxlan),
            "host-gw" => Ok(FlannelBackend::HostGw),
            "udp" => Ok(FlannelBackend::Udp),
            other => bail!("the harness swaps vxlan, host-gw and udp nodes, not {other}"),
        }
    }

    /// Reprograms every flannel node but `except` (their flanneld's watch
    /// on a changed lease).
    fn reprogram_other_flannel_nodes(&self, except: NodeRef) -> Result<()> {
        for f in self.flannel.iter().filter(|f| f.n != except) {
            f.reprogram(&self.store).with_context(|| format!("reprogramming flannel node {}", f.ns.name()))?;
        }
        Ok(())
    }

    /// Swaps flanneld on flannel node `n` for weftd (see the module's doc):
    /// the node becomes a [`WeftNode`] on the same namespace, its kernel
    /// state untouched, and weftd starts with flanneld's flags (the
    /// cluster's weftd arguments, `--ip-masq` if subnet.env says
    /// FLANNEL_IPMASQ=true, the health port, then `extra`). Waits for its
    /// /readyz (30 s) or its exit; an error if neither comes.
    pub fn swap_to_weftd(&mut self, n: NodeRef, extra: &[&str]) -> Result<WeftdStart> {
        let want = self.flanneld_backend()?;
        let i = self.flannel.iter().position(|f| f.n == n).with_context(|| format!("node {n} is not a flannel node"))?;
        ensure!(self.flannel[i].backend == want, "flannel node {n} is programmed as {:?} on a {want:?} network", self.flannel[i].backend);
        let env = senv::read(&self.flannel_subnet_file(n)).with_context(|| format!("node {n}: flanneld's subnet.env (start_flanneld first)"))?;
        let lease_before = self.store.get(&senv::lease_name(&env))?;
        // kube: weftd's NODE_NAME is the host's Node, which holds the lease.
        let node_name = match &self.store {
            LeaseStore::Kube(k) => {
                let name = self.node_name(n)?;
                let holder = k.node_of_lease(&senv::lease_name(&env));
                ensure!(
                    holder.as_deref() == Some(name.as_str()),
                    "node {n}'s lease is held by Node {holder:?}, not its host's Node {name} (start_flanneld first)"
                );
                Some(name)
            }
            _ => None,
        };
        // flanneld stops: its kernel state stays (the FlannelNode's drop
        // touches nothing but a udp proxy, which vxlan and host-gw lack; on
        // udp its end takes flannel0 and its route, as flanneld's exit does).
        let mut f = self.flannel.remove(i);
        let placeholder = Netns::borrowed(f.ns.name());
        let ns = std::mem::replace(&mut f.ns, placeholder);
        let ip = f.ip;
        drop(f);
        let mut w = WeftNode::new(n, ip, ns, self.dir(), &self.prefix)?;
        w.env.extend(node_name.map(|name| ("NODE_NAME".to_string(), name)));
        let (log, from) = (w.log.clone(), std::fs::metadata(&w.log).map(|m| m.len()).unwrap_or(0));
        self.weft.push(w);
        let mut args: Vec<&str> = Vec::new();
        if env.ipmasq == Some(true) {
            args.push("--ip-masq");
        }
        args.extend(metrics::ARGS);
        args.extend(extra);
        let t0 = Instant::now();
        self.start_weftd_with(n, &args)?;
        // The other flannel nodes' watch: each poll reads the lease, and a
        // changed one has them reprogrammed at once.
        let name = senv::lease_name(&env);
        let mut programmed = lease_before;
        let start = {
            let (store, flannel) = (&self.store, &self.flannel);
            let w = self.weft.iter_mut().find(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))?;
            let what = format!("weftd on {} to be ready (/readyz 200) or to exit", w.ns.name());
            let mut watch = || -> Result<()> {
                let now = store.get(&name)?;
                if now != programmed {
                    for f in flannel.iter().filter(|f| f.n != n) {
                        f.reprogram(store).with_context(|| format!("reprogramming flannel node {} for node {n}'s changed lease", f.ns.name()))?;
                    }
                    programmed = now;
                }
                Ok(())
            };
            let r = cmd::poll(&what, Duration::from_secs(30), Duration::from_millis(20), || {
                if let Err(e) = watch() {
                    return Ok(Some(Err(e)));
                }
                if let Some(exit) = w.exit_status() {
                    let error = log_since(&log, from).lines().filter(|l| l.contains(" ERROR ")).collect::<Vec<_>>().join("\n");
                    return Ok(Some(Ok(WeftdStart::Refused { exit, error })));
                }
                match metrics::get(&w.ns, "/readyz") {
                    Ok(r) if r.starts_with("HTTP/1.1 200") => Ok(Some(Ok(WeftdStart::Ready { after: t0.elapsed() }))),
                    Ok(r) => Err(format!("/readyz: {}", r.lines().last().unwrap_or_default())),
                    Err(e) => Err(format!("{e:#}")),
                }
            });
            let start = r.with_context(|| format!("weftd log {}:\n{}", log.display(), log_since(&log, from)))??;
            watch()?;
            start
        };
        Ok(start)
    }

    /// [`node_state`] of node `n`, plus weft's pinned program links on it
    /// (`<pin dir>/v2/links`: what keeps weft's programs attached, also
    /// after weftd stopped), by device name.
    pub fn swap_state(&self, n: NodeRef) -> Result<NodeState> {
        let ns = self.node_ns(n)?;
        let mut st = node_state(ns);
        // WeftNode::new's pin directory for node n.
        let dir = weft_common::pins::links_dir(Path::new(&format!("/sys/fs/bpf/{}-n{n}", self.prefix)));
        let mut links: Vec<String> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        links.sort();
        let names: Value = cni::ip_json(ns, &["link", "show"]).unwrap_or(Value::Null);
        let named = links
            .iter()
            .map(|l| {
                let dev = l
                    .rsplit_once('-')
                    .and_then(|(_, i)| i.parse::<u64>().ok())
                    .and_then(|i| names.as_array()?.iter().find(|d| d["ifindex"].as_u64() == Some(i))?["ifname"].as_str().map(str::to_string));
                format!("{l} ({})", dev.unwrap_or_else(|| "no such device".into()))
            })
            .collect::<Vec<_>>();
        st.0.push(("weft pinned links".to_string(), named.join("\n")));
        Ok(st)
    }

    /// The ERROR and WARN lines and panics of weft node `n`'s whole weftd
    /// log ([`log_problems`]).
    pub fn weftd_log_problems(&self, n: NodeRef) -> Result<Vec<String>> {
        let w = self.weft_node(n)?;
        Ok(log_problems(&std::fs::read_to_string(&w.log).unwrap_or_default()))
    }

    /// Swaps weftd on node `n` back for flanneld (see the module's doc):
    /// SIGTERM to weftd (if it runs; an error if it does not exit within
    /// 10 s), then flanneld's start ([`FlannelNode::restart`]); if that
    /// works, its watch's programming, subnet.env (FLANNEL_IPMASQ as
    /// before) and, with it, its masquerade rules, and the other flannel
    /// nodes reprogrammed if the lease changed.
    pub fn swap_to_flanneld(&mut self, n: NodeRef) -> Result<SwapBack> {
        self.swap_to_flanneld_with(n, |_| Ok(()))
    }

    /// As [`Cluster::swap_to_flanneld`], running `between` on the node's
    /// namespace after weftd stopped and before flanneld starts (an
    /// operator's manual step, which a test names).
    pub fn swap_to_flanneld_with(&mut self, n: NodeRef, between: impl FnOnce(&Netns) -> Result<()>) -> Result<SwapBack> {
        let backend = self.flanneld_backend()?;
        let i = self.weft.iter().position(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))?;
        let subnet_file = self.flannel_subnet_file(n);
        let env = senv::read(&subnet_file).with_context(|| format!("node {n}: subnet.env"))?;
        let lease_before = self.store.get(&senv::lease_name(&env))?;
        let weftd_exit = if self.weft[i].running() { Some(self.weft[i].terminate()?) } else { None };
        between(&self.weft[i].ns)?;
        let mut w = self.weft.remove(i);
        let pins = LeftPins(w.pin_dir.clone());
        let placeholder = Netns::borrowed(w.ns.name());
        let ns = std::mem::replace(&mut w.ns, placeholder);
        let (ip, ip6, env_of_weftd) = (w.ip, w.ip6, std::mem::take(&mut w.env));
        // Not its drop's cleanup: weft's pins stay, as weftd left them.
        w.disarm();
        drop(w);
        let ip_masq = env.ipmasq == Some(true);
        let start = match FlannelNode::restart(n, ip, ns, &self.store, env.clone(), backend) {
            Ok(f) => {
                f.reprogram(&self.store).with_context(|| format!("flanneld's first programming on node {n}"))?;
                self.flannel.push(f);
                self.start_flanneld(n, ip_masq)?;
                if self.store.get(&senv::lease_name(&env))? != lease_before {
                    self.reprogram_other_flannel_nodes(n)?;
                }
                FlanneldStart::Running
            }
            Err((ns, e)) => {
                let mut w = WeftNode::new(n, ip, ns, self.dir(), &self.prefix)?;
                w.ip6 = ip6;
                w.env = env_of_weftd;
                self.weft.push(w);
                FlanneldStart::Refused { error: format!("{e:#}") }
            }
        };
        Ok(SwapBack { weftd_exit, start, pins })
    }
}

/// What flannel's CNI plugin delegates to for a node with subnet.env
/// `env` (flannel-io/cni-plugin's doCmdAdd with kube-flannel's
/// `"delegate": {"hairpinMode": true, "isDefaultGateway": true}`), with
/// host-local's `dataDir` = `data_dir`: bridge (cni0), isGateway, ipMasq
/// false (the delegate's setting; flannel's plugin would choose `true`
/// itself only when FLANNEL_IPMASQ is false and the delegate says
/// nothing), the MTU of subnet.env, host-local over FLANNEL_SUBNET with a
/// route to FLANNEL_NETWORK.
pub fn flannel_delegate(env: &SubnetEnv, data_dir: &Path) -> Result<Value> {
    let s4 = env.subnet.context("flannel's CNI plugin here needs FLANNEL_SUBNET")?;
    let network = env.network.context("flannel's CNI plugin here needs FLANNEL_NETWORK")?;
    let mut ranges = vec![json!([{ "subnet": s4.to_string() }])];
    let mut routes = vec![json!({ "dst": network.to_string() })];
    if let (Some(s6), Some(n6)) = (env.ipv6_subnet, env.ipv6_network) {
        ranges.push(json!([{ "subnet": s6.to_string() }]));
        routes.push(json!({ "dst": n6.to_string() }));
    }
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": CNI_NETWORK,
        "type": "bridge",
        "bridge": "cni0",
        "hairpinMode": true,
        "isDefaultGateway": true,
        "isGateway": true,
        "ipMasq": false,
        "mtu": env.mtu,
        "ipam": { "type": "host-local", "dataDir": data_dir, "ranges": ranges, "routes": routes },
    }))
}

/// The IPv4 address on the pod's eth0 (`ip -4 -j addr`), to check that a
/// pod kept its address.
pub fn pod_addr(pod: &Pod) -> Result<Option<Ipv4Addr>> {
    let v = cni::ip_json(&pod.ns, &["-4", "addr", "show", "dev", "eth0"])?;
    let a = v.pointer("/0/addr_info/0/local").and_then(|a| a.as_str());
    a.map(|a| a.parse().with_context(|| format!("pod {}: address {a:?}", pod.ns.name()))).transpose()
}
