//! A test cluster: a switch namespace (bridge br0, etcd unless the cluster
//! runs on weftd's embedded store; in kube mode the tests' Kubernetes API
//! server instead, with one Node per weft node), node namespaces attached to it by veth,
//! weftd or a flannel-programmed kernel on each node, and pods. Everything is
//! torn down on drop; if the cluster was not marked [`Cluster::pass`]ed,
//! weftd's log tails are printed first.
//!
//! Optionally more L2 segments (for host-gw): segment 0 is the switch above
//! (192.168.77.0/24), segment k is bridge br0 in `<prefix>-sw<k+1>`
//! (192.168.(77+k).0/24), and a router namespace `<prefix>-rt` (ip_forward
//! on) has leg `s<k>` = 192.168.(77+k).253 in each. Every node and the
//! switch (etcd) get a route to each other segment via their own segment's
//! router address; there is no default route anywhere.
//!
//! Dual stack ([`ClusterBuilder::dual_stack`]): segment 0 is also IPv6,
//! fd77::/64 (switch fd77::fe on br0, node N fd77::N on its eth0, all
//! `nodad`); every namespace of the cluster has IPv6 DAD off, the nodes
//! IPv6 forwarding on, and the switch's bridge no multicast snooping (so
//! neighbour discovery is flooded). The network config gains
//! `"EnableIPv6":true,"IPv6Network":"fd44::/48"`, leases are named
//! `10.244.5.0-24&fd44:0:0:5::-64`, and pods get an IPv6 address too.
//!
//! IPv6-only ([`ClusterBuilder::ipv6_only`], flannel's `"EnableIPv4":
//! false`): segment 0 carries only IPv6, fd77::/64 as above, and the nodes'
//! eth0 no IPv4 address at all (weftd is started with `--iface eth0`, as
//! always, the only way it can find an underlay without IPv4); the switch
//! keeps its IPv4 address for nobody. The network config is
//! [`ipv6_only_config`], leases are named `0.0.0.0-0&fd44:0:0:5::-64`,
//! subnet.env has only the IPv6 keys, pods have only an IPv6 address
//! ([`Pod::ip4`] None), and a weft node's [`WeftNode::ip`] is 0.0.0.0 (its
//! lease's PublicIP). etcd listens on `[fd77::fe]:2379`; in kube mode the
//! API server listens on `[fd77::fe]:6443` instead (certificate SAN
//! `IP:fd77::fe`, kubeconfigs `https://[fd77::fe]:6443`) and each weft
//! node's Node has one IPv6 podCIDR alone (`spec.podCIDR` and
//! `spec.podCIDRs`, [`kube_store::default_pod_cidr6`]) and InternalIP
//! fd77::N. Not with more than one segment.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    bpf, cmd,
    etcd::EtcdServer,
    flannel_node::{FlannelBackend, FlannelNode},
    kube_store::{self, KubeStore},
    netns::Netns,
    pod::{self, Family, Pod, Wiring},
    state::LabState,
    store::{EmbeddedStore, LeaseStore},
    subnet_env::{self as senv, parse_lease_name, Ipv4Subnet, Ipv6Cidr, SubnetEnv},
    tempdir::TempDir,
    weft_node::WeftNode,
};

pub const SWITCH_IP: &str = "192.168.77.254";
pub const UNDERLAY_LEN: u8 = 24;
/// The router's host number on every segment (192.168.(77+k).253).
pub const ROUTER_HOST: u8 = 253;
/// Segments the harness supports (192.168.77.0/24 .. 192.168.80.0/24).
pub const MAX_SEGMENTS: usize = 4;
/// The switch's IPv6 address on br0 in a dual-stack cluster.
pub const SWITCH_IP6: &str = "fd77::fe";
/// Prefix length of the IPv6 underlay fd77::/64.
pub const UNDERLAY6_LEN: u8 = 64;
/// The IPv6 pod network of [`ClusterBuilder::dual_stack`] (IPv6SubnetLen
/// defaults to 64: node subnets `fd44:0:0:N::/64`).
pub const IPV6_NETWORK: &str = "fd44::/48";

/// Node `n`'s IPv6 underlay address in a dual-stack cluster: fd77::n.
pub fn node_ip6(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n as u16)
}

/// A dual-stack network config: `{"Network":<network>,"EnableIPv6":true,
/// "IPv6Network":"fd44::/48","Backend":{"Type":<backend>}}`.
pub fn dual_stack_config(network: &str, backend: &str) -> String {
    format!(r#"{{"Network":"{network}","EnableIPv6":true,"IPv6Network":"{IPV6_NETWORK}","Backend":{{"Type":"{backend}"}}}}"#)
}

/// An IPv6-only network config (flannel's `"EnableIPv4": false`):
/// `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/48",
/// "Backend":{"Type":<backend>}}`.
pub fn ipv6_only_config(backend: &str) -> String {
    format!(r#"{{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"{IPV6_NETWORK}","Backend":{{"Type":"{backend}"}}}}"#)
}

/// The config's IPv6Network when it says `"EnableIPv6": true`.
fn config_ipv6_network(config: &str) -> Option<Ipv6Cidr> {
    let j: serde_json::Value = serde_json::from_str(config).ok()?;
    if j.get("EnableIPv6").and_then(|v| v.as_bool()) != Some(true) {
        return None;
    }
    Ipv6Cidr::parse(j.get("IPv6Network")?.as_str()?)
}

/// Network address of segment `seg` (0 = the switch's 192.168.77.0/24).
pub fn segment_net(seg: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77 + seg as u8, 0)
}

/// The router's address on segment `seg`.
pub fn router_ip(seg: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77 + seg as u8, ROUTER_HOST)
}

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
    kube: bool,
    segments: Option<Vec<u32>>,
    dual_stack: bool,
    ipv6_only: bool,
}

impl ClusterBuilder {
    /// Dual stack (see the module's doc): an IPv6 underlay on segment 0 and,
    /// unless [`ClusterBuilder::config_json`] says otherwise,
    /// [`dual_stack_config`] with vxlan; in kube mode each weft node's Node
    /// also gets an IPv6 podCIDR ([`kube_store::default_pod_cidr6`]). Not
    /// with more than one segment.
    pub fn dual_stack(mut self) -> Self {
        self.dual_stack = true;
        self
    }
    /// IPv6-only (see the module's doc): an underlay with IPv6 alone on
    /// segment 0 and, unless [`ClusterBuilder::config_json`] says
    /// otherwise, [`ipv6_only_config`] with vxlan; in kube mode the API
    /// server on [`SWITCH_IP6`] and IPv6 podCIDRs alone. Not with more than
    /// one segment, or [`ClusterBuilder::dual_stack`].
    pub fn ipv6_only(mut self) -> Self {
        self.ipv6_only = true;
        self
    }
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
    /// Run on Kubernetes (weftd `--kube-subnet-mgr`): the tests' API server
    /// on [`SWITCH_IP`]:[`kube_store::PORT`] in the switch namespace
    /// (on [`SWITCH_IP6`] on an IPv6-only cluster), config
    /// in `<temp dir>/net-conf.json`, a Node per weft node (see
    /// [`Cluster::add_weft_node_on_segment`]); no etcd is started.
    pub fn kube(mut self) -> Self {
        self.kube = true;
        self
    }
    /// Weft nodes per L2 segment, e.g. `&[2, 1]`: nodes 1 and 2 on segment 0
    /// (192.168.77.0/24), node 3 on segment 1 (192.168.78.0/24), joined by
    /// the router namespace. Replaces [`ClusterBuilder::weft_nodes`].
    pub fn segments(mut self, per_segment: &[u32]) -> Self {
        self.weft_nodes = per_segment.iter().sum();
        self.segments = Some(per_segment.to_vec());
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
        if (self.dual_stack || self.ipv6_only) && self.segments.as_ref().is_some_and(|s| s.len() > 1) {
            bail!("the harness's dual stack and IPv6-only have one segment, not several");
        }
        if self.ipv6_only && self.dual_stack {
            bail!("an IPv6-only cluster is not dual stack");
        }
        let ipv6_underlay = self.dual_stack || self.ipv6_only;
        let prefix = cmd::run_prefix();
        let tmp = TempDir::new(&format!("weft-{prefix}"))?;
        let sw = Netns::create(&format!("{prefix}-sw"))?;
        // A switch, not a host: no netfilter on the frames it bridges (with
        // br_netfilter loaded, its hooks otherwise run on every frame). The
        // keys exist only where br_netfilter is loaded; else nothing to do.
        for family in ["iptables", "ip6tables", "arptables"] {
            let _ = sw.sysctl(&format!("net.bridge.bridge-nf-call-{family}"), "0");
        }
        if ipv6_underlay {
            pod::no_dad(&sw)?;
        }
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["addr", "add", &format!("{SWITCH_IP}/{UNDERLAY_LEN}"), "dev", "br0"])?;
        if ipv6_underlay {
            sw.ip(&["link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
            sw.ip(&["-6", "addr", "add", &format!("{SWITCH_IP6}/{UNDERLAY6_LEN}"), "dev", "br0", "nodad"])?;
        }
        sw.ip(&["link", "set", "br0", "up"])?;
        let store = if self.kube {
            // The nodes of an IPv6-only cluster reach the API server over IPv6.
            let sw_ip: std::net::IpAddr = if self.ipv6_only { SWITCH_IP6.parse()? } else { SWITCH_IP.parse()? };
            LeaseStore::Kube(KubeStore::start(&sw, sw_ip, &format!("weft-{prefix}-kube"), &tmp.path().join("net-conf.json"))?)
        } else if self.embedded {
            LeaseStore::Embedded(EmbeddedStore::new(&tmp.path().join("store"), &tmp.path().join("net-conf.json"))?)
        } else {
            // The nodes of an IPv6-only cluster reach etcd over IPv6.
            let listen = if self.ipv6_only { format!("[{SWITCH_IP6}]") } else { SWITCH_IP.to_string() };
            LeaseStore::Etcd { server: EtcdServer::start(&sw, &listen, tmp.path())?, prefix: self.etcd_prefix.clone() }
        };
        let config = match (&self.config, self.dual_stack, self.ipv6_only) {
            (Some(c), _, _) => c.clone(),
            (None, _, true) => ipv6_only_config("vxlan"),
            (None, true, _) => dual_stack_config(&self.network, "vxlan"),
            (None, false, false) => format!(r#"{{"Network":"{}","Backend":{{"Type":"vxlan"}}}}"#, self.network),
        };
        store.write_config(&config)?;
        let network: Ipv4Addr = self.network.split('/').next().unwrap_or_default().parse().with_context(|| format!("network {}", self.network))?;
        let mut c = Cluster {
            pods: Vec::new(),
            weft: Vec::new(),
            flannel: Vec::new(),
            store,
            sw,
            switches: Vec::new(),
            router: None,
            segment_of: Vec::new(),
            ipv6_network: config_ipv6_network(&config),
            dual_stack: self.dual_stack,
            ipv6_only: self.ipv6_only,
            config,
            tmp,
            prefix,
            etcd_prefix: self.etcd_prefix,
            network,
            weftd_args: self.weftd_args,
            passed: false,
            kept: false,
        };
        match &self.segments {
            Some(per) => {
                c.ensure_segments(per.len())?;
                for (seg, k) in per.iter().enumerate() {
                    for _ in 0..*k {
                        c.add_weft_node_on_segment(seg)?;
                    }
                }
            }
            None => {
                for _ in 0..self.weft_nodes {
                    c.add_weft_node()?;
                }
            }
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
    // namespaces deleted), etcd (if any), switch, the other segments'
    // switches, the router, temp dir (with the embedded store's directory).
    pub pods: Vec<Pod>,
    pub weft: Vec<WeftNode>,
    pub flannel: Vec<FlannelNode>,
    pub store: LeaseStore,
    pub sw: Netns,
    /// Switches of segments 1.. (`<prefix>-sw2`, ...); segment 0 is `sw`.
    pub switches: Vec<Netns>,
    /// `<prefix>-rt`, once there is more than one segment.
    pub router: Option<Netns>,
    /// (node, segment) for every node.
    segment_of: Vec<(NodeRef, usize)>,
    /// The network config written to the store.
    config: String,
    /// The config's IPv6Network, if it enables IPv6.
    pub ipv6_network: Option<Ipv6Cidr>,
    /// Built with [`ClusterBuilder::dual_stack`]: the IPv6 underlay.
    pub dual_stack: bool,
    /// Built with [`ClusterBuilder::ipv6_only`]: the IPv6 underlay alone.
    pub ipv6_only: bool,
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
            kube: false,
            segments: None,
            dual_stack: false,
            ipv6_only: false,
        }
    }

    /// The nodes' underlay carries IPv6 (dual stack or IPv6-only).
    pub fn has_ipv6_underlay(&self) -> bool {
        self.dual_stack || self.ipv6_only
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

    /// The Kubernetes API server (an error unless built with [`ClusterBuilder::kube`]).
    pub fn kube(&self) -> Result<&KubeStore> {
        self.store.kube()
    }
    /// [`Cluster::kube`], mutable (for `go_down`/`come_back`).
    pub fn kube_mut(&mut self) -> Result<&mut KubeStore> {
        self.store.kube_mut()
    }

    /// Node `n`'s name: its namespace's (`<prefix>-nN`), also its Node's in kube mode.
    pub fn node_name(&self, n: NodeRef) -> Result<String> {
        Ok(self.node_ns(n)?.name().to_string())
    }

    /// The podCIDR kube mode gives node `n`'s Node: `<network a.b>.n.0/24`.
    pub fn default_pod_cidr(&self, n: NodeRef) -> String {
        let o = self.network.octets();
        format!("{}.{}.{n}.0/24", o[0], o[1])
    }

    fn next_node_number(&self) -> u32 {
        (self.weft.len() + self.flannel.len()) as u32 + 1
    }

    /// Number of L2 segments (1 until [`Cluster::ensure_segments`] adds more).
    pub fn segment_count(&self) -> usize {
        1 + self.switches.len()
    }

    /// The switch namespace of segment `seg` (bridge br0).
    pub fn switch_ns(&self, seg: usize) -> Result<&Netns> {
        match seg {
            0 => Ok(&self.sw),
            k => self.switches.get(k - 1).with_context(|| format!("the cluster has no segment {k}")),
        }
    }

    /// The segment node `n` is on.
    pub fn node_segment(&self, n: NodeRef) -> Result<usize> {
        self.segment_of.iter().find(|(m, _)| *m == n).map(|(_, s)| *s).with_context(|| format!("no node {n}"))
    }

    /// Makes the cluster have at least `count` segments: creates the router
    /// namespace (with its leg on segment 0) if needed, then per new segment
    /// its switch, the router's leg on it, and a route to it on the switch
    /// of segment 0 (etcd) and on every node already there.
    pub fn ensure_segments(&mut self, count: usize) -> Result<()> {
        if count > MAX_SEGMENTS {
            bail!("the harness supports at most {MAX_SEGMENTS} segments, not {count}");
        }
        if count <= self.segment_count() {
            return Ok(());
        }
        if self.has_ipv6_underlay() {
            bail!("the harness's dual stack and IPv6-only have one segment, not {count}");
        }
        if self.router.is_none() {
            let rt = Netns::create(&format!("{}-rt", self.prefix))?;
            rt.sysctl("net.ipv4.ip_forward", "1")?;
            self.router = Some(rt);
            self.attach_router(0)?;
        }
        while self.segment_count() < count {
            let seg = self.segment_count();
            let sw = Netns::create(&format!("{}-sw{}", self.prefix, seg + 1))?;
            sw.ip(&["link", "add", "br0", "type", "bridge"])?;
            sw.ip(&["link", "set", "br0", "up"])?;
            self.switches.push(sw);
            self.attach_router(seg)?;
            let dst = format!("{}/{UNDERLAY_LEN}", segment_net(seg));
            self.sw.ip(&["route", "add", &dst, "via", &router_ip(0).to_string()])?;
            for (n, s) in self.segment_of.clone() {
                self.node_ns(n)?.ip(&["route", "add", &dst, "via", &router_ip(s).to_string()])?;
            }
        }
        Ok(())
    }

    /// Router leg `s<seg>` = 192.168.(77+seg).253/24, its peer `vrt` in the
    /// segment's bridge.
    fn attach_router(&self, seg: usize) -> Result<()> {
        let rt = self.router.as_ref().context("no router namespace")?;
        let sw = self.switch_ns(seg)?;
        let leg = format!("s{seg}");
        rt.ip(&["link", "add", &leg, "mtu", "1500", "type", "veth", "peer", "name", "vrt", "mtu", "1500", "netns", sw.name()])?;
        sw.ip(&["link", "set", "vrt", "master", "br0", "up"])?;
        rt.ip(&["addr", "add", &format!("{}/{UNDERLAY_LEN}", router_ip(seg)), "dev", &leg])?;
        rt.ip(&["link", "set", &leg, "up"])?;
        Ok(())
    }

    /// Creates `<prefix>-nN` with eth0 = 192.168.(77+seg).N/24 on the
    /// segment's switch, ip_forward on, and a route to every other segment
    /// via the router. On an IPv6-only cluster eth0 gets fd77::N alone and
    /// the address returned is 0.0.0.0.
    fn add_node_ns(&self, n: u32, seg: usize) -> Result<(Netns, Ipv4Addr)> {
        if n >= ROUTER_HOST as u32 {
            bail!("too many nodes");
        }
        let sw = self.switch_ns(seg)?;
        let ns = Netns::create(&format!("{}-n{n}", self.prefix))?;
        if self.has_ipv6_underlay() {
            // Before eth0 exists: it comes up without DAD.
            pod::no_dad(&ns)?;
        }
        let o = segment_net(seg).octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], n as u8);
        let peer = format!("vn{n}");
        ns.ip(&["link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", &peer, "mtu", "1500", "netns", sw.name()])?;
        sw.ip(&["link", "set", &peer, "master", "br0", "up"])?;
        if !self.ipv6_only {
            ns.ip(&["addr", "add", &format!("{ip}/{UNDERLAY_LEN}"), "dev", "eth0"])?;
        }
        if self.has_ipv6_underlay() {
            ns.ip(&["-6", "addr", "add", &format!("{}/{UNDERLAY6_LEN}", node_ip6(n)), "dev", "eth0", "nodad"])?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        if self.has_ipv6_underlay() {
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        let ip = if self.ipv6_only { Ipv4Addr::UNSPECIFIED } else { ip };
        for other in (0..self.segment_count()).filter(|k| *k != seg) {
            ns.ip(&["route", "add", &format!("{}/{UNDERLAY_LEN}", segment_net(other)), "via", &router_ip(seg).to_string()])?;
        }
        Ok((ns, ip))
    }

    /// Adds a node that will run weftd (not started), on segment 0.
    pub fn add_weft_node(&mut self) -> Result<NodeRef> {
        self.add_weft_node_on_segment(0)
    }

    /// Adds a node that will run weftd (not started) on segment `seg`
    /// (created with [`Cluster::ensure_segments`] if it does not exist yet).
    /// In kube mode also creates its Node (name = the namespace's,
    /// [`Cluster::default_pod_cidr`], in dual stack also the IPv6 one, on
    /// an IPv6-only cluster the IPv6 one alone, [`kube_store::default_pod_cidr6`],
    /// and InternalIP fd77::N) and gives weftd `NODE_NAME`.
    pub fn add_weft_node_on_segment(&mut self, seg: usize) -> Result<NodeRef> {
        self.ensure_segments(seg + 1)?;
        let n = self.next_node_number();
        let (ns, ip) = self.add_node_ns(n, seg)?;
        let mut node = WeftNode::new(n, ip, ns, self.tmp.path(), &self.prefix)?;
        if self.has_ipv6_underlay() {
            node.ip6 = Some(node_ip6(n));
        }
        if let LeaseStore::Kube(k) = &self.store {
            let name = node.ns.name().to_string();
            let cidr6 = self.ipv6_network.filter(|_| self.has_ipv6_underlay()).map(|net6| kube_store::default_pod_cidr6(net6, n));
            let cidr4 = (!self.ipv6_only).then(|| self.default_pod_cidr(n));
            let cidrs: Vec<String> = [cidr4, cidr6].into_iter().flatten().collect();
            let internal_ip: std::net::IpAddr = if self.ipv6_only { node_ip6(n).into() } else { ip.into() };
            k.api.create_node(kube_store::node_object_cidrs(&name, internal_ip, &cidrs.iter().map(String::as_str).collect::<Vec<_>>()))?;
            node.env.push(("NODE_NAME".into(), name));
        }
        self.weft.push(node);
        self.segment_of.push((n, seg));
        Ok(n)
    }

    /// Adds a flannel-programmed vxlan node and writes its lease (not programmed
    /// yet: call [`Cluster::program_flannel_nodes`]).
    pub fn add_flannel_node(&mut self) -> Result<NodeRef> {
        self.add_flannel_node_with(FlannelBackend::Vxlan, 0)
    }

    /// Adds a node programmed as flanneld's host-gw backend programs it (no
    /// device; routes via the peers' PublicIPs) on segment 0 and writes its
    /// lease (not programmed yet: call [`Cluster::program_flannel_nodes`]).
    pub fn add_flannel_host_gw_node(&mut self) -> Result<NodeRef> {
        self.add_flannel_node_with(FlannelBackend::HostGw, 0)
    }

    /// Adds a flannel-programmed node of `backend` on segment `seg` (on an
    /// IPv6-only cluster an IPv6-only one, [`FlannelNode::ipv6_only`]).
    pub fn add_flannel_node_with(&mut self, backend: FlannelBackend, seg: usize) -> Result<NodeRef> {
        self.ensure_segments(seg + 1)?;
        let n = self.next_node_number();
        let (ns, ip) = self.add_node_ns(n, seg)?;
        let node = match (self.dual_stack, self.ipv6_only, self.ipv6_network) {
            (_, true, Some(net6)) => FlannelNode::ipv6_only(n, node_ip6(n), net6, ns, &self.store, backend)?,
            (_, true, None) => bail!("an IPv6-only cluster whose config has no IPv6Network"),
            (true, _, Some(net6)) => FlannelNode::with_backend_v6(n, ip, Some((node_ip6(n), net6)), ns, &self.store, self.network, backend)?,
            _ => FlannelNode::with_backend_v6(n, ip, None, ns, &self.store, self.network, backend)?,
        };
        self.flannel.push(node);
        self.segment_of.push((n, seg));
        Ok(n)
    }

    /// Waits until weft node `n` holds exactly `subnets` (each /24) as vxlan
    /// peers: those routes on weft.1 and those weft_vteps entries, nothing
    /// else. Returns how long it took.
    pub fn wait_exact_vxlan_peers(&self, n: NodeRef, subnets: &[Ipv4Addr], timeout: Duration) -> Result<Duration> {
        let t0 = std::time::Instant::now();
        let w = self.weft_node(n)?;
        let want: std::collections::BTreeSet<String> = subnets.iter().map(|s| format!("{s}/24")).collect();
        cmd::poll(&format!("node {n} to hold exactly the vxlan peers {want:?}"), timeout, Duration::from_millis(100), || {
            let have = w.route_set().map_err(|e| format!("{e:#}"))?;
            let dump = w.vteps().map_err(|e| format!("{e:#}"))?;
            let entries = dump.as_array().map(|a| a.len()).unwrap_or(0);
            if have == want && entries == subnets.len() && subnets.iter().all(|s| bpf::vteps_contains(&dump, *s)) {
                Ok(Some(()))
            } else {
                Err(format!("routes on weft.1 {have:?}, {entries} weft_vteps entries: {dump}"))
            }
        })?;
        Ok(t0.elapsed())
    }

    /// Waits until every weft node in `nodes` has (or, with `present` false,
    /// lacks) both the route and the weft_vteps entry for `subnet`/24; the
    /// timeout counts from `start` (so several waits can share one budget).
    /// Returns the time since `start`.
    pub fn wait_peer(&self, nodes: &[NodeRef], subnet: Ipv4Addr, present: bool, start: std::time::Instant, timeout: Duration) -> Result<Duration> {
        for &n in nodes {
            let w = self.weft_node(n)?;
            let what = format!("{} to {} {subnet}/24", w.ns.name(), if present { "program" } else { "forget" });
            cmd::poll(&what, timeout.saturating_sub(start.elapsed()), Duration::from_millis(100), || {
                let (r, v, detail) = w.peer_state(subnet).map_err(|e| format!("{e:#}"))?;
                if r == present && v == present {
                    Ok(Some(()))
                } else {
                    Err(format!("route present: {r}, weft_vteps entry present: {v}\n{detail}"))
                }
            })?;
        }
        Ok(start.elapsed())
    }

    /// (packets, bytes) of datapath counter `idx` (`weft_common::stat::*`)
    /// on weft node `n`, read from its pinned weft_stats with bpftool.
    pub fn stat_counter(&self, n: NodeRef, idx: u32) -> Result<(u64, u64)> {
        bpf::stat_counter(&self.weft_node(n)?.stats_pin(), idx)
    }

    /// Adds a node running the reference flannel udp peer on segment 0 and
    /// writes its lease (started by [`Cluster::program_flannel_nodes`]).
    pub fn add_flannel_udp_node(&mut self) -> Result<NodeRef> {
        self.add_flannel_node_with(FlannelBackend::Udp, 0)
    }

    /// udp keeps its peers in the process, not in the kernel: converged is
    /// when every node's host reaches every other node's TUN address (the
    /// subnet's network address), which takes both nodes' peer tables.
    pub fn wait_converged_udp(&self) -> Result<()> {
        for a in self.nodes() {
            for b in self.nodes() {
                if a == b {
                    continue;
                }
                let to = self.node_env(b)?.v4().addr;
                let ns = self.node_ns(a)?;
                cmd::poll(&format!("node {a} reaching node {b}'s TUN address {to} over udp"), Duration::from_secs(20), Duration::from_millis(100), || {
                    match crate::traffic::ping(ns, to, 1) {
                        Ok(st) if st.all_received() => Ok(Some(())),
                        Ok(st) => Err(st.output),
                        Err(e) => Err(format!("{e:#}")),
                    }
                })?;
            }
        }
        Ok(())
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

    /// Node `n`'s IPv6 underlay address (an error unless the cluster is dual stack or IPv6-only).
    pub fn node_ip6(&self, n: NodeRef) -> Result<Ipv6Addr> {
        self.node_ns(n)?;
        anyhow::ensure!(self.has_ipv6_underlay(), "the cluster is neither dual stack nor IPv6-only: node {n} has no IPv6 underlay address");
        Ok(node_ip6(n))
    }

    /// The node's subnet (subnet.env for weft nodes).
    pub fn node_env(&self, n: NodeRef) -> Result<SubnetEnv> {
        if let Ok(w) = self.weft_node(n) {
            return w.subnet_env();
        }
        Ok(self.flannel_node(n)?.env.clone())
    }

    pub fn start_weftd(&mut self, n: NodeRef) -> Result<()> {
        self.start_weftd_with(n, &[])
    }

    /// Starts weftd on node `n` with `extra` flags after the cluster's own.
    /// Starts weftd on node `n` through `wrapper` (see [`WeftNode::start_wrapped`]).
    pub fn start_weftd_wrapped(&mut self, n: NodeRef, wrapper: &[&str]) -> Result<()> {
        let args: Vec<String> = self.store.weftd_args().into_iter().chain(self.weftd_args.iter().cloned()).collect();
        self.weft_node_mut(n)?.start_wrapped(wrapper, &args)
    }

    pub fn start_weftd_with(&mut self, n: NodeRef, extra: &[&str]) -> Result<()> {
        let args: Vec<String> = self.store.weftd_args().into_iter().chain(self.weftd_args.iter().cloned()).chain(extra.iter().map(|s| s.to_string())).collect();
        self.weft_node_mut(n)?.start(&args)
    }

    /// The network config's `Backend.Type` (flannel's default "udp" if absent).
    pub fn backend_type(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()
            .and_then(|j| j.pointer("/Backend/Type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| "udp".into())
    }

    pub fn is_host_gw(&self) -> bool {
        self.backend_type() == "host-gw"
    }

    /// Waits (20 s) until node `n`'s weftd wrote subnet.env and its lease
    /// (with our PublicIP; on an IPv6-only cluster with our PublicIPv6) is
    /// in the store.
    pub fn wait_node_ready(&mut self, n: NodeRef) -> Result<SubnetEnv> {
        let (store, weft, ipv6_only) = (&self.store, &mut self.weft, self.ipv6_only);
        let node = weft.iter_mut().find(|w| w.n == n).with_context(|| format!("node {n} is not a weft node"))?;
        let r = cmd::poll(&format!("weftd on {} to hold a lease", node.ns.name()), Duration::from_secs(20), Duration::from_millis(200), || {
            if let Some(why) = node.exit_status() {
                return Err(why);
            }
            let env = node.subnet_env().map_err(|e| format!("{e:#}"))?;
            let name = senv::lease_name(&env);
            let key = store.key(&name);
            let (what, ours) = match (ipv6_only, node.ip6) {
                (true, Some(ip6)) => ("PublicIPv6", ip6.to_string()),
                _ => ("PublicIP", node.ip.to_string()),
            };
            match store.get(&name) {
                Ok(Some(v)) if v.contains(&format!("\"{ours}\"")) => Ok(Some(env)),
                Ok(Some(v)) => Err(format!("lease {key} does not carry {what} {ours}: {v}")),
                Ok(None) => Err(format!("subnet.env says {name} but the store has no lease {key}")),
                Err(e) => Err(format!("{e:#}")),
            }
        });
        r.with_context(|| format!("node {n}: weftd log {}", self.weft_node(n).map(|w| w.log.display().to_string()).unwrap_or_default()))
    }

    /// Waits (20 s) until every weft node has one route on weft.1 per other
    /// node's subnet; on a host-gw cluster, [`Cluster::wait_converged_host_gw`].
    /// On a dual-stack cluster then also [`Cluster::wait_converged6`]; on
    /// an IPv6-only cluster only that.
    pub fn wait_converged(&self) -> Result<()> {
        if !self.ipv6_only {
            self.wait_converged_v4()?;
        }
        if self.has_ipv6_underlay() && self.ipv6_network.is_some() {
            self.wait_converged6()?;
        }
        Ok(())
    }

    /// The IPv6 routes weft node `n` should have, as `ip -6 route` prints
    /// their start: per other node with an IPv6 subnet (subnet.env, or the
    /// flannel node's), on a vxlan cluster `<v6 subnet>` on weft-v6.1 (only
    /// the destination is checked), on a host-gw cluster `<v6 subnet> via
    /// <its fd77::M> dev eth0` for the host-gw peers. (device, wanted lines).
    pub fn v6_routes_wanted(&self, n: NodeRef) -> Result<(Option<&'static str>, Vec<String>)> {
        let mut want = Vec::new();
        for m in self.nodes() {
            if m == n {
                continue;
            }
            let Some(s6) = self.node_env(m)?.ipv6_subnet else { continue };
            if self.is_host_gw() {
                let host_gw = if self.weft_node(m).is_ok() { true } else { self.flannel_node(m)?.backend == FlannelBackend::HostGw };
                if host_gw {
                    want.push(format!("{s6} via {} dev eth0", node_ip6(m)));
                }
            } else {
                want.push(s6.to_string());
            }
        }
        Ok((if self.is_host_gw() { None } else { Some(crate::weft_node::OVERLAY6_DEV) }, want))
    }

    /// Waits (20 s) until every weft node has its [`Cluster::v6_routes_wanted`].
    pub fn wait_converged6(&self) -> Result<()> {
        for w in &self.weft {
            let (dev, want) = self.v6_routes_wanted(w.n)?;
            if want.is_empty() {
                continue;
            }
            let what = match dev {
                Some(d) => format!("IPv6 routes on {d} in {}", w.ns.name()),
                None => format!("IPv6 host-gw routes in {}", w.ns.name()),
            };
            cmd::poll(&what, Duration::from_secs(20), Duration::from_millis(200), || {
                let (routes, shown) = match dev {
                    Some(d) => (w.ns.ip(&["-6", "route", "show", "dev", d]), format!("ip -6 route show dev {d}")),
                    None => (w.ns.ip(&["-6", "route", "show"]), "ip -6 route show".to_string()),
                };
                let routes = routes.map_err(|e| format!("{e:#}"))?;
                let missing: Vec<&String> = want
                    .iter()
                    .filter(|r| {
                        !routes
                            .lines()
                            .any(|l| if dev.is_some() { l.split_whitespace().next() == Some(r.as_str()) } else { l.trim_end().starts_with(r.as_str()) })
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("missing IPv6 routes {missing:?}; `{shown}`:\n{}", routes.trim()))
                }
            })?;
        }
        Ok(())
    }

    fn wait_converged_v4(&self) -> Result<()> {
        if self.is_host_gw() {
            return self.wait_converged_host_gw();
        }
        if self.backend_type() == "udp" {
            return self.wait_converged_udp();
        }
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

    /// The host-gw routes node `n` should have: `(subnet, next hop)` for
    /// every other host-gw node on its segment (weft nodes of a host-gw
    /// cluster, flannel host-gw nodes).
    pub fn host_gw_peers_of(&self, n: NodeRef) -> Result<Vec<(String, Ipv4Addr)>> {
        let seg = self.node_segment(n)?;
        let mut v = Vec::new();
        for m in self.nodes() {
            let host_gw = if self.weft_node(m).is_ok() { self.is_host_gw() } else { self.flannel_node(m)?.backend == FlannelBackend::HostGw };
            if m != n && host_gw && self.node_segment(m)? == seg {
                v.push((self.node_env(m)?.cidr(), self.node_ip(m)?));
            }
        }
        Ok(v)
    }

    /// Waits (20 s) until every weft node has `<subnet> via <peer ip> dev
    /// eth0` with weft's protocol (254) for every host-gw peer on its segment.
    pub fn wait_converged_host_gw(&self) -> Result<()> {
        for w in &self.weft {
            let want: Vec<String> = self.host_gw_peers_of(w.n)?.iter().map(|(s, ip)| format!("{s} via {ip} dev eth0")).collect();
            cmd::poll(&format!("host-gw routes in {}", w.ns.name()), Duration::from_secs(20), Duration::from_millis(200), || {
                let routes = w.host_gw_routes().map_err(|e| format!("{e:#}"))?;
                let missing: Vec<&String> = want.iter().filter(|r| !routes.lines().any(|l| l.trim_end().starts_with(r.as_str()))).collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("missing routes {missing:?}; `ip -4 route show proto 254`:\n{}", routes.trim()))
                }
            })?;
        }
        Ok(())
    }

    /// Every pair of `pods` (indexes into `self.pods`) on different nodes
    /// pings, `count` packets each way, all replies required.
    pub fn ping_across_nodes(&self, pods: &[usize], count: u32) -> Result<()> {
        for &a in pods {
            for &b in pods {
                if self.pods[a].node == self.pods[b].node {
                    continue;
                }
                crate::traffic::ping_ok(&self.pods[a].ns, self.pods[b].ip(), count).with_context(|| {
                    format!("pod {} ({:?}) -> pod {} ({:?})", self.pods[a].ns.name(), self.pods[a].wiring, self.pods[b].ns.name(), self.pods[b].wiring)
                })?;
            }
        }
        Ok(())
    }

    /// Every ordered pair of `pods` (indexes into `self.pods`) on different
    /// nodes, over `family`: `pings` echo requests, all answered, then (if
    /// `tcp_bytes` > 0) a TCP transfer of that many bytes, arriving intact.
    /// Errors name the family, both pods, their wiring and addresses.
    pub fn traffic_across_nodes(&self, pods: &[usize], family: Family, pings: u32, tcp_bytes: u64) -> Result<()> {
        for &a in pods {
            for &b in pods {
                let (pa, pb) = (&self.pods[a], &self.pods[b]);
                if pa.node == pb.node {
                    continue;
                }
                let to = pb.addr(family)?;
                let what = || {
                    format!(
                        "{family}: pod {} ({:?}, node {}) -> pod {} ({:?}, node {}, {to})",
                        pa.ns.name(),
                        pa.wiring,
                        pa.node,
                        pb.ns.name(),
                        pb.wiring,
                        pb.node
                    )
                };
                crate::traffic::ping_ok_any(&pa.ns, to, pings).with_context(|| format!("ping {}", what()))?;
                if tcp_bytes > 0 {
                    crate::traffic::tcp_transfer_any(&pa.ns, &pb.ns, to, tcp_bytes).with_context(|| format!("tcp {}", what()))?;
                }
            }
        }
        Ok(())
    }

    /// Adds pod number k (k = pods on that node so far + 1) to node `n`
    /// (`Wiring::Cni`: through weft-cni, on weft nodes). Returns the index
    /// into `self.pods`.
    pub fn add_pod(&mut self, n: NodeRef, wiring: Wiring) -> Result<usize> {
        let k = self.pods.iter().filter(|p| p.node == n).count() as u32 + 1;
        let name = format!("{}-n{n}-p{k}", self.prefix);
        let pod = if wiring == Wiring::Cni {
            Pod::create_cni_with(self.node_ns(n)?, n, &self.weft_cni(n)?, &name, self.has_ipv6_underlay())?
        } else {
            Pod::create(self.node_ns(n)?, n, &self.node_env(n)?, k, wiring, &name)?
        };
        self.pods.push(pod);
        Ok(self.pods.len() - 1)
    }

    /// Writes the endpoint record weft-cni would write for bridge pod `p`
    /// into its node's endpoints dir (atomically, as weft-cni does); returns
    /// the record's path.
    pub fn register_endpoint(&self, p: usize) -> Result<std::path::PathBuf> {
        let pod = &self.pods[p];
        anyhow::ensure!(pod.wiring == Wiring::Bridge, "pod {p} is not on the bridge");
        let node = self.weft_node(pod.node)?;
        let link = |ns: &crate::netns::Netns, dev: &str| -> Result<serde_json::Value> {
            let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
            let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("ip -j link show {dev}: {out}"))?;
            Ok(v[0].clone())
        };
        let (pod_if, host_if, bridge) = (link(&pod.ns, "eth0")?, link(&node.ns, &pod.host_veth)?, link(&node.ns, "cni0")?);
        let str_of = |v: &serde_json::Value, what: &str| v.as_str().map(String::from).with_context(|| format!("{what}: {v}"));
        let u32_of = |v: &serde_json::Value, what: &str| v.as_u64().map(|n| n as u32).with_context(|| format!("{what}: {v}"));
        let rec = weft_common::endpoint::EndpointRecord {
            container_id: pod.ns.name().to_string(),
            ifname: "eth0".into(),
            netns: pod.ns.path().display().to_string(),
            ip: pod.ip4,
            pod_mac: str_of(&pod_if["address"], "pod eth0's MAC")?,
            host_veth: pod.host_veth.clone(),
            host_ifindex: u32_of(&host_if["ifindex"], "host veth's ifindex")?,
            bridge: "cni0".into(),
            bridge_mac: str_of(&bridge["address"], "cni0's MAC")?,
            mtu: u32_of(&pod_if["mtu"], "pod eth0's MTU")?,
            ip6: pod.ip6,
        };
        weft_common::endpoint::write(&node.endpoints_dir, &rec).with_context(|| format!("writing the endpoint record of pod {p}"))
    }

    /// weft-cni as [`Wiring::Cni`] pods of node `n` get it: the node's
    /// subnet.env, its state under `<temp dir>/n<N>/cni/`.
    pub fn weft_cni(&self, n: NodeRef) -> Result<crate::cni::WeftCni> {
        crate::cni::WeftCni::for_node(self, n, "cni")
    }

    /// Leases currently in the store: (store key, value); the store key is
    /// the full etcd key, or the lease name on the embedded store.
    pub fn leases(&self) -> Result<Vec<(String, String)>> {
        Ok(self.store.list()?.into_iter().map(|(k, v)| (self.store.key(&k), v)).collect())
    }

    /// The lease key of node `n` in the store (see [`Cluster::leases`]).
    pub fn lease_key(&self, n: NodeRef) -> Result<String> {
        Ok(self.store.key(&senv::lease_name(&self.node_env(n)?)))
    }

    /// Node `n`'s lease value, if the store holds it.
    pub fn lease(&self, n: NodeRef) -> Result<Option<String>> {
        self.store.get(&senv::lease_name(&self.node_env(n)?))
    }

    /// Deletes node `n`'s lease as an operator would; true if it existed.
    pub fn delete_lease(&self, n: NodeRef) -> Result<bool> {
        self.store.delete(&senv::lease_name(&self.node_env(n)?))
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
            if self.has_ipv6_underlay() {
                s += &format!("--- {} `ip -6 route`:\n{}\n", w.ns.name(), w.ns.ip(&["-6", "route"]).unwrap_or_else(|e| format!("{e:#}")));
            }
        }
        for f in &self.flannel {
            s += &format!("--- flannel node {} `ip -4 route`:\n{}\n", f.ns.name(), f.ns.ip(&["-4", "route"]).unwrap_or_else(|e| format!("{e:#}")));
            if self.has_ipv6_underlay() {
                s += &format!("--- flannel node {} `ip -6 route`:\n{}\n", f.ns.name(), f.ns.ip(&["-6", "route"]).unwrap_or_else(|e| format!("{e:#}")));
            }
        }
        if let Some(rt) = &self.router {
            s += &format!(
                "--- segments {:?} (node, segment); router {} `ip -4 route`:\n{}\n",
                self.segment_of,
                rt.name(),
                rt.ip(&["-4", "route"]).unwrap_or_else(|e| format!("{e:#}"))
            );
        }
        s += &format!("--- leases:\n{:#?}\n", self.leases().unwrap_or_default());
        if let LeaseStore::Kube(k) = &self.store {
            s += &format!("--- Nodes:\n{}\n--- requests: {:?}\n", k.dump(), k.api.counts());
        }
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
                .chain(self.switches.iter().map(|s| s.name().to_string()))
                .chain(self.router.iter().map(|r| r.name().to_string()))
                .chain(self.nodes().iter().filter_map(|n| self.node_ns(*n).ok().map(|ns| ns.name().to_string())))
                .chain(self.pods.iter().map(|p| p.ns.name().to_string()))
                .collect(),
            pids: self.weft.iter().filter_map(|w| w.pid().map(|p| (p, "weftd".to_string()))).chain(self.store.pid().map(|p| (p, "etcd".to_string()))).collect(),
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
        for s in &mut self.switches {
            s.disarm();
        }
        if let Some(r) = &mut self.router {
            r.disarm();
        }
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
