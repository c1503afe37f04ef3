//! A test cluster: a switch namespace (bridge br0, etcd unless the cluster
//! runs on weftd's embedded store), node namespaces attached to it by veth,
//! weftd or a flannel-programmed kernel on each node, and pods. Everything is
//! torn down on drop; if the cluster was not marked [`Cluster::pass`]ed,
//! weftd's log tails are printed first.
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{
    bpf, cmd,
    etcd::EtcdServer,
    flannel_node::FlannelNode,
    netns::Netns,
    pod::{Pod, Wiring},
    state::LabState,
    store::{EmbeddedStore, LeaseStore},
    subnet_env::{parse_lease_name, SubnetEnv},
    tempdir::TempDir,
    weft_node::WeftNode,
};

pub const SWITCH_IP: &str = "192.168.77.254";
pub const UNDERLAY_LEN: u8 = 24;

/// Node number (1-based, shared by weft and flannel nodes).
pub type NodeRef = u32;

pub struct ClusterBuilder {
    weft_nodes: u32,
    etcd_prefix: String,
    network: String,
    config: Option<String>,
    weftd_args: Vec<String>,
    start: bool,
    embedded: bool,
}

impl ClusterBuilder {
    pub fn weft_nodes(mut self, n: u32) -> Self {
        self.weft_nodes = n;
        self
    }
    pub fn etcd_prefix(mut self, p: &str) -> Self {
        self.etcd_prefix = p.trim_end_matches('/').to_string();
        self
    }
    /// The overlay network (default 10.244.0.0/16; must be a /16 for the harness).
    pub fn network(mut self, cidr: &str) -> Self {
        self.network = cidr.to_string();
        self
    }
    /// Full `<prefix>/config` JSON (default `{"Network":..,"Backend":{"Type":"vxlan"}}`).
    pub fn config_json(mut self, json: &str) -> Self {
        self.config = Some(json.to_string());
        self
    }
    pub fn weftd_args(mut self, args: &[&str]) -> Self {
        self.weftd_args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Run on weftd's embedded lease store (`<temp dir>/store`, config in
    /// `<temp dir>/net-conf.json`) instead of etcd; no etcd is started.
    pub fn embedded_store(mut self) -> Self {
        self.embedded = true;
        self
    }
    /// [`ClusterBuilder::embedded_store`] when `yes`.
    pub fn embedded_store_if(mut self, yes: bool) -> Self {
        self.embedded = yes;
        self
    }
    /// Do not start weftd on the nodes (start them with [`Cluster::start_weftd`]).
    pub fn no_start(mut self) -> Self {
        self.start = false;
        self
    }

    /// Creates the switch, the lease store (etcd or the embedded store's
    /// directory), the network config and the weft nodes; starts
    /// weftd on each and waits until each holds a lease and wrote subnet.env.
    pub fn build(self) -> Result<Cluster> {
        bpf::ensure_bpffs()?;
        let prefix = cmd::run_prefix();
        let tmp = TempDir::new(&format!("weft-{prefix}"))?;
        let sw = Netns::create(&format!("{prefix}-sw"))?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["addr", "add", &format!("{SWITCH_IP}/{UNDERLAY_LEN}"), "dev", "br0"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let store = if self.embedded {
            LeaseStore::Embedded(EmbeddedStore::new(&tmp.path().join("store"), &tmp.path().join("net-conf.json"))?)
        } else {
            LeaseStore::Etcd { server: EtcdServer::start(&sw, SWITCH_IP, tmp.path())?, prefix: self.etcd_prefix.clone() }
        };
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| format!(r#"{{"Network":"{}","Backend":{{"Type":"vxlan"}}}}"#, self.network));
        store.write_config(&config)?;
        let network: Ipv4Addr = self.network.split('/').next().unwrap_or_default().parse().with_context(|| format!("network {}", self.network))?;
        let mut c = Cluster {
            pods: Vec::new(),
            weft: Vec::new(),
            flannel: Vec::new(),
            store,
            sw,
            tmp,
            prefix,
            etcd_prefix: self.etcd_prefix,
            network,
            weftd_args: self.weftd_args,
            passed: false,
            kept: false,
        };
        for _ in 0..self.weft_nodes {
            c.add_weft_node()?;
        }
        if self.start {
            let ns: Vec<NodeRef> = c.weft.iter().map(|w| w.n).collect();
            for n in &ns {
                c.start_weftd(*n)?;
            }
            for n in &ns {
                c.wait_node_ready(*n)?;
            }
        }
        Ok(c)
    }
}

pub struct Cluster {
    // Drop order = field order: pods, nodes (weftd killed, pins removed,
    // namespaces deleted), etcd (if any), switch, temp dir (with the
    // embedded store's directory).
    pub pods: Vec<Pod>,
    pub weft: Vec<WeftNode>,
    pub flannel: Vec<FlannelNode>,
    pub store: LeaseStore,
    pub sw: Netns,
    tmp: TempDir,
    pub prefix: String,
    pub etcd_prefix: String,
    pub network: Ipv4Addr,
    weftd_args: Vec<String>,
    passed: bool,
    kept: bool,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            weft_nodes: 3,
            etcd_prefix: "/coreos.com/network".into(),
            network: "10.244.0.0/16".into(),
            config: None,
            weftd_args: Vec::new(),
            start: true,
            embedded: false,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// The cluster's etcd (an error on the embedded store).
    pub fn etcd(&self) -> Result<&EtcdServer> {
        self.store.etcd()
    }
    pub fn etcd_mut(&mut self) -> Result<&mut EtcdServer> {
        self.store.etcd_mut()
    }
    /// The embedded store (an error on etcd).
    pub fn embedded(&self) -> Result<&EmbeddedStore> {
        self.store.embedded()
    }

    fn next_node_number(&self) -> u32 {
        (self.weft.len() + self.flannel.len()) as u32 + 1
    }

    /// Creates `<prefix>-nN` with eth0 = 192.168.77.N/24 on the switch, ip_forward on.
    fn add_node_ns(&self, n: u32) -> Result<(Netns, Ipv4Addr)> {
        if n >= 254 {
            bail!("too many nodes");
        }
        let ns = Netns::create(&format!("{}-n{n}", self.prefix))?;
        let ip = Ipv4Addr::new(192, 168, 77, n as u8);
        let peer = format!("vn{n}");
        ns.ip(&["link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", &peer, "mtu", "1500", "netns", self.sw.name()])?;
        self.sw.ip(&["link", "set", &peer, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/{UNDERLAY_LEN}"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        Ok((ns, ip))
    }

    /// Adds a node that will run weftd (not started).
    pub fn add_weft_node(&mut self) -> Result<NodeRef> {
        let n = self.next_node_number();
        let (ns, ip) = self.add_node_ns(n)?;
        let node = WeftNode::new(n, ip, ns, self.tmp.path(), &self.prefix)?;
        self.weft.push(node);
        Ok(n)
    }

    /// Adds a flannel-programmed node and writes its lease (not programmed
    /// yet: call [`Cluster::program_flannel_nodes`]).
    pub fn add_flannel_node(&mut self) -> Result<NodeRef> {
        let n = self.next_node_number();
        let (ns, ip) = self.add_node_ns(n)?;
        let node = FlannelNode::new(n, ip, ns, &self.store, self.network)?;
        self.flannel.push(node);
        Ok(n)
    }

    /// Reprograms every flannel node from the leases now in the store.
    pub fn program_flannel_nodes(&self) -> Result<()> {
        for f in &self.flannel {
            f.reprogram(&self.store).with_context(|| format!("programming flannel node {}", f.ns.name()))?;
        }
        Ok(())
    }

    pub fn weft_node(&self, n: NodeRef) -> Result<&WeftNode> {
        self.weft.iter().find(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))
    }
    pub fn weft_node_mut(&mut self, n: NodeRef) -> Result<&mut WeftNode> {
        self.weft.iter_mut().find(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))
    }
    pub fn flannel_node(&self, n: NodeRef) -> Result<&FlannelNode> {
        self.flannel.iter().find(|w| w.n == n).with_context(|| format!("node {n} is not a flannel node"))
    }

    /// All node numbers, weft and flannel, ascending.
    pub fn nodes(&self) -> Vec<NodeRef> {
        let mut v: Vec<NodeRef> = self.weft.iter().map(|w| w.n).chain(self.flannel.iter().map(|f| f.n)).collect();
        v.sort();
        v
    }

    pub fn node_ns(&self, n: NodeRef) -> Result<&Netns> {
        if let Ok(w) = self.weft_node(n) {
            return Ok(&w.ns);
        }
        Ok(&self.flannel_node(n)?.ns)
    }

    pub fn node_ip(&self, n: NodeRef) -> Result<Ipv4Addr> {
        if let Ok(w) = self.weft_node(n) {
            return Ok(w.ip);
        }
        Ok(self.flannel_node(n)?.ip)
    }

    /// The node's subnet (subnet.env for weft nodes).
    pub fn node_env(&self, n: NodeRef) -> Result<SubnetEnv> {
        if let Ok(w) = self.weft_node(n) {
            return w.subnet_env();
        }
        Ok(self.flannel_node(n)?.env.clone())
    }

    pub fn start_weftd(&mut self, n: NodeRef) -> Result<()> {
        let args: Vec<String> = self.store.weftd_args().into_iter().chain(self.weftd_args.iter().cloned()).collect();
        self.weft_node_mut(n)?.start(&args)
    }

    /// Waits (20 s) until node `n`'s weftd wrote subnet.env and its lease
    /// (with our PublicIP) is in the store.
    pub fn wait_node_ready(&mut self, n: NodeRef) -> Result<SubnetEnv> {
        let (store, weft) = (&self.store, &mut self.weft);
        let node = weft.iter_mut().find(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))?;
        let r = cmd::poll(&format!("weftd on {} to hold a lease", node.ns.name()), Duration::from_secs(20), Duration::from_millis(200), || {
            if let Some(why) = node.exit_status() {
                return Err(why);
            }
            let env = node.subnet_env().map_err(|e| format!("{e:#}"))?;
            let key = store.key(&env.lease_name());
            match store.get(&env.lease_name()) {
                Ok(Some(v)) if v.contains(&format!("\"{}\"", node.ip)) => Ok(Some(env)),
                Ok(Some(v)) => Err(format!("lease {key} does not carry PublicIP {}: {v}", node.ip)),
                Ok(None) => Err(format!("subnet.env says {} but the store has no lease {key}", env.cidr())),
                Err(e) => Err(format!("{e:#}")),
            }
        });
        r.with_context(|| format!("node {n}: weftd log {}", self.weft_node(n).map(|w| w.log.display().to_string()).unwrap_or_default()))
    }

    /// Waits (20 s) until every weft node has one route on weft.1 per other
    /// node's subnet.
    pub fn wait_converged(&self) -> Result<()> {
        let mut subnets = Vec::new();
        for n in self.nodes() {
            subnets.push((n, self.node_env(n)?.cidr()));
        }
        for w in &self.weft {
            let want: Vec<&String> = subnets.iter().filter(|(n, _)| *n != w.n).map(|(_, s)| s).collect();
            cmd::poll(&format!("routes on weft.1 in {}", w.ns.name()), Duration::from_secs(20), Duration::from_millis(200), || {
                let routes = w.overlay_routes().map_err(|e| format!("{e:#}"))?;
                let have: Vec<&str> = routes.lines().filter_map(|l| l.split_whitespace().next()).collect();
                let missing: Vec<&&String> = want.iter().filter(|s| !have.contains(&s.as_str())).collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("missing routes {missing:?}; `ip -4 route show dev weft.1`:\n{}", routes.trim()))
                }
            })?;
        }
        Ok(())
    }

    /// Adds pod number k (k = pods on that node so far + 1) to node `n`.
    /// Returns the index into `self.pods`.
    pub fn add_pod(&mut self, n: NodeRef, wiring: Wiring) -> Result<usize> {
        let k = self.pods.iter().filter(|p| p.node == n).count() as u32 + 1;
        let env = self.node_env(n)?;
        let name = format!("{}-n{n}-p{k}", self.prefix);
        let pod = Pod::create(self.node_ns(n)?, n, &env, k, wiring, &name)?;
        self.pods.push(pod);
        Ok(self.pods.len() - 1)
    }

    /// Leases currently in the store: (store key, value); the store key is
    /// the full etcd key, or the lease name on the embedded store.
    pub fn leases(&self) -> Result<Vec<(String, String)>> {
        Ok(self.store.list()?.into_iter().map(|(k, v)| (self.store.key(&k), v)).collect())
    }

    /// The lease key of node `n` in the store (see [`Cluster::leases`]).
    pub fn lease_key(&self, n: NodeRef) -> Result<String> {
        Ok(self.store.key(&self.node_env(n)?.lease_name()))
    }

    /// Node `n`'s lease value, if the store holds it.
    pub fn lease(&self, n: NodeRef) -> Result<Option<String>> {
        self.store.get(&self.node_env(n)?.lease_name())
    }

    /// Deletes node `n`'s lease as an operator would; true if it existed.
    pub fn delete_lease(&self, n: NodeRef) -> Result<bool> {
        self.store.delete(&self.node_env(n)?.lease_name())
    }

    /// Subnets of all leases in the store.
    pub fn leased_subnets(&self) -> Result<Vec<Ipv4Addr>> {
        Ok(self.leases()?.iter().filter_map(|(k, _)| parse_lease_name(k)).map(|(s, _)| s).collect())
    }

    /// A failure report: per weft node its log path, last 40 lines, routes.
    pub fn report(&self) -> String {
        let mut s = format!("=== weft cluster {} (temp dir {}, {})\n", self.prefix, self.tmp.path().display(), self.store.describe());
        for w in &self.weft {
            s += &format!("--- {} weftd log {} (last 40 lines):\n{}\n", w.ns.name(), w.log.display(), w.log_tail(40));
            s += &format!("--- {} `ip -4 route`:\n{}\n", w.ns.name(), w.ns.ip(&["-4", "route"]).unwrap_or_else(|e| format!("{e:#}")));
        }
        for f in &self.flannel {
            s += &format!("--- flannel node {} `ip -4 route`:\n{}\n", f.ns.name(), f.ns.ip(&["-4", "route"]).unwrap_or_else(|e| format!("{e:#}")));
        }
        s += &format!("--- leases:\n{:#?}\n", self.leases().unwrap_or_default());
        if let LeaseStore::Embedded(e) = &self.store {
            let raw = e.raw();
            let cut = raw.char_indices().nth(8000).map(|(i, _)| i).unwrap_or(raw.len());
            s += &format!("--- {} ({} bytes):\n{}{}\n", e.db_path().display(), raw.len(), &raw[..cut], if cut < raw.len() { " ..." } else { "" });
        }
        s
    }

    /// Marks the run as successful (no failure report on drop).
    pub fn pass(mut self) {
        self.passed = true;
    }

    /// Leaves everything running and returns what `cargo xtask lab --down`
    /// needs to remove it.
    pub fn keep(mut self) -> LabState {
        let state = LabState {
            prefix: self.prefix.clone(),
            temp_dir: self.tmp.path().to_path_buf(),
            netns: std::iter::once(self.sw.name().to_string())
                .chain(self.nodes().iter().filter_map(|n| self.node_ns(*n).ok().map(|ns| ns.name().to_string())))
                .chain(self.pods.iter().map(|p| p.ns.name().to_string()))
                .collect(),
            pids: self
                .weft
                .iter()
                .filter_map(|w| w.pid().map(|p| (p, "weftd".to_string())))
                .chain(self.store.pid().map(|p| (p, "etcd".to_string())))
                .collect(),
            pin_dirs: self.weft.iter().map(|w| w.pin_dir.clone()).collect(),
        };
        self.kept = true;
        self.passed = true;
        for p in &mut self.pods {
            p.ns.disarm();
        }
        for w in &mut self.weft {
            w.disarm();
        }
        for f in &mut self.flannel {
            f.ns.disarm();
        }
        self.store.disarm();
        self.sw.disarm();
        self.tmp.disarm();
        state
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.passed || std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}
