//! A node programmed the way flanneld programs the kernel, with its lease
//! written to the cluster's store (etcd, or weftd's embedded store) exactly
//! as flanneld writes it. No daemon runs: call [`FlannelNode::reprogram`]
//! after new leases appear.
//!
//! - vxlan backend: flannel.1, permanent neighbour + FDB entries, onlink routes;
//! - host-gw backend: no device, `<subnet> via <PublicIP> dev eth0` per peer.
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use crate::{
    netns::Netns,
    store::LeaseStore,
    subnet_env::{flannel_node_env, parse_lease_name, SubnetEnv},
};

/// The flannel backend a [`FlannelNode`] is programmed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlannelBackend {
    Vxlan,
    /// vxlan with `"DirectRouting": true`: on-link peers get a plain route.
    VxlanDirect,
    HostGw,
    /// flannel's udp backend: the reference peer (`flannel-udp-ref`, one
    /// packet per syscall as flannel's proxy) on a TUN `flannel0`.
    Udp,
}

/// A flannel node's view of another lease: (store key, subnet address,
/// prefix length, parsed JSON, PublicIP).
type OtherLease = (String, std::net::Ipv4Addr, u8, serde_json::Value, String);

pub struct FlannelNode {
    pub n: u32,
    pub ip: Ipv4Addr,
    pub env: SubnetEnv,
    pub backend: FlannelBackend,
    /// flannel.1's MAC (the lease's VtepMAC); empty for host-gw.
    pub mac: String,
    /// The lease's key in the store (full etcd key, or the name on the embedded store).
    pub lease_key: String,
    pub ns: Netns,
    /// udp: the running reference peer (restarted by each reprogram).
    proxy: std::sync::Mutex<Option<std::process::Child>>,
}

impl Drop for FlannelNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.proxy.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            crate::cmd::terminate(&mut c, std::time::Duration::from_secs(2));
        }
    }
}

/// The reference udp peer's binary: `$WEFT_UDP_REF_BIN`, else next to weftd.
pub fn udp_ref_bin() -> Result<std::path::PathBuf> {
    crate::cmd::sibling_bin("flannel-udp-ref", "WEFT_UDP_REF_BIN")
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> String {
    let mut x = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64 ^ ((std::process::id() as u64) << 40);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let b = x.to_le_bytes();
    weft_common::mac::format_mac(&[(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

impl FlannelNode {
    /// Creates flannel.1 in `ns` (eth0 must carry `ip` already), picks a free
    /// /24 in `network` from `.200` upward, and writes its lease (TTL 3600 s).
    pub fn new(n: u32, ip: Ipv4Addr, ns: Netns, store: &LeaseStore, network: Ipv4Addr) -> Result<FlannelNode> {
        Self::with_backend(n, ip, ns, store, network, FlannelBackend::Vxlan)
    }

    /// As [`FlannelNode::new`] for either backend. host-gw creates no device;
    /// its lease is `{"PublicIP":..,"PublicIPv6":null,"BackendType":"host-gw"}`
    /// and its FLANNEL_MTU the underlay's (1500).
    pub fn with_backend(n: u32, ip: Ipv4Addr, ns: Netns, store: &LeaseStore, network: Ipv4Addr, backend: FlannelBackend) -> Result<FlannelNode> {
        let leases = store.list()?;
        let taken: Vec<Ipv4Addr> = leases.iter().filter_map(|(k, _)| parse_lease_name(k)).map(|(s, _)| s).collect();
        let o = network.octets();
        let subnet =
            (200u8..=254).map(|x| Ipv4Addr::new(o[0], o[1], x, 0)).find(|s| !taken.contains(s)).context("no free /24 from .200 upward for the flannel node")?;
        let lease_key = store.key(&format!("{subnet}-24"));
        if backend == FlannelBackend::HostGw {
            let env = flannel_node_env(network, subnet, 1500);
            let value = format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#);
            store.put(&env.lease_name(), &value)?;
            return Ok(FlannelNode { n, ip, env, backend, mac: String::new(), lease_key, ns, proxy: Default::default() });
        }
        if backend == FlannelBackend::Udp {
            // flannel's udp lease has no BackendType; FLANNEL_MTU = 1500 - 28.
            let env = flannel_node_env(network, subnet, 1472);
            store.put(&env.lease_name(), &format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null}}"#))?;
            return Ok(FlannelNode { n, ip, env, backend, mac: String::new(), lease_key, ns, proxy: Default::default() });
        }
        let env = flannel_node_env(network, subnet, 1450);
        let mac = random_mac();
        let ips = ip.to_string();
        ns.ip(&["link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "local", &ips, "dstport", "8472", "nolearning"])?;
        ns.ip(&["link", "set", "flannel.1", "address", &mac, "mtu", "1450"])?;
        ns.ip(&["addr", "add", &format!("{subnet}/32"), "dev", "flannel.1"])?;
        ns.ip(&["link", "set", "flannel.1", "up"])?;
        let value = format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#);
        store.put(&env.lease_name(), &value)?;
        Ok(FlannelNode { n, ip, env, backend, mac, lease_key, ns, proxy: Default::default() })
    }

    /// Programs the kernel from the other leases of our backend type, as
    /// flanneld does; returns the subnets programmed.
    pub fn reprogram(&self, store: &LeaseStore) -> Result<Vec<String>> {
        match self.backend {
            FlannelBackend::Vxlan => self.reprogram_vxlan(store, false),
            FlannelBackend::VxlanDirect => self.reprogram_vxlan(store, true),
            FlannelBackend::HostGw => self.reprogram_host_gw(store),
            FlannelBackend::Udp => self.reprogram_udp(store),
        }
    }

    /// (Re)starts the reference udp peer with every other udp lease (no
    /// BackendType) as a peer; waits until its TUN has the network's route.
    fn reprogram_udp(&self, store: &LeaseStore) -> Result<Vec<String>> {
        let mut peers = Vec::new();
        for (name, v) in store.list()? {
            let k = store.key(&name);
            let Some((sub, len)) = parse_lease_name(&k) else { continue };
            let j: serde_json::Value = serde_json::from_str(&v).with_context(|| format!("lease {k} is not JSON: {v}"))?;
            if k == self.lease_key || j.get("BackendType").is_some_and(|t| !t.is_null()) {
                continue;
            }
            let public = j.get("PublicIP").and_then(|p| p.as_str()).with_context(|| format!("lease {k} has no PublicIP: {v}"))?;
            peers.push(format!("{sub}/{len}={public}"));
        }
        let mut slot = self.proxy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = slot.take() {
            crate::cmd::terminate(&mut c, std::time::Duration::from_secs(2));
        }
        let bin = udp_ref_bin()?;
        let mut c = self.ns.nsenter(&bin);
        let network = self.env.network.map(|n| n.to_string()).unwrap_or_default();
        c.args(["--tun", "flannel0", "--local", &self.ip.to_string(), "--subnet", &self.env.cidr(), "--network", &network, "--mtu", &self.env.mtu.to_string()]);
        for p in &peers {
            c.args(["--peer", p]);
        }
        c.stdin(std::process::Stdio::null());
        *slot = Some(c.spawn().with_context(|| format!("starting {}", crate::cmd::describe(&c)))?);
        drop(slot);
        crate::cmd::poll(&format!("flannel0 in {}", self.ns.name()), std::time::Duration::from_secs(10), std::time::Duration::from_millis(50), || match self
            .ns
            .ip(&["route", "show", "dev", "flannel0"])
        {
            Ok(r) if r.contains(&network) => Ok(Some(())),
            Ok(r) => Err(format!("routes on flannel0: {r:?}")),
            Err(e) => Err(format!("{e:#}")),
        })?;
        Ok(peers.into_iter().map(|p| p.split('=').next().unwrap_or_default().to_string()).collect())
    }

    /// For every other host-gw lease: `ip route replace <subnet> via
    /// <PublicIP> dev eth0`, as flanneld's host-gw (route_network.go) does.
    /// A route the kernel refuses (next hop not on-link) is reported on
    /// stderr and skipped, as flanneld logs and goes on.
    fn reprogram_host_gw(&self, store: &LeaseStore) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (_, sub, len, _, public) in self.other_leases(store, "host-gw")? {
            match self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", &public, "dev", "eth0"]) {
                Ok(_) => done.push(format!("{sub}/{len}")),
                Err(e) => eprintln!("weft-tests: flannel host-gw node {}: route to {sub}/{len} via {public}: {e:#}", self.ns.name()),
            }
        }
        Ok(done)
    }

    /// Every other lease of `backend` in the store (see [`OtherLease`]).
    fn other_leases(&self, store: &LeaseStore, backend: &str) -> Result<Vec<OtherLease>> {
        let mut out = Vec::new();
        for (name, v) in store.list()? {
            let k = store.key(&name);
            if k == self.lease_key {
                continue;
            }
            let Some((sub, len)) = parse_lease_name(&k) else { continue };
            let j: serde_json::Value = serde_json::from_str(&v).with_context(|| format!("lease {k} is not JSON: {v}"))?;
            if j.get("BackendType").and_then(|t| t.as_str()) != Some(backend) {
                continue;
            }
            let public = j.get("PublicIP").and_then(|p| p.as_str()).with_context(|| format!("lease {k} has no PublicIP: {v}"))?.to_string();
            out.push((k, sub, len, j, public));
        }
        Ok(out)
    }

    /// For every other vxlan lease in the store: neighbour, FDB entry and
    /// route, as flanneld's vxlan_network.go does. With `direct` (flannel's
    /// DirectRouting), a peer whose PublicIP is on-link (`ip route get` shows
    /// no gateway) gets `<subnet> via <PublicIP> dev eth0` instead. Returns
    /// the subnets programmed.
    fn reprogram_vxlan(&self, store: &LeaseStore, direct: bool) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (k, sub, len, j, public) in self.other_leases(store, "vxlan")? {
            let v = j.to_string();
            let public = public.as_str();
            if direct && !self.ns.ip(&["route", "get", public])?.contains(" via ") {
                self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", public, "dev", "eth0"])?;
                done.push(format!("{sub}/{len}"));
                continue;
            }
            let mac = j.pointer("/BackendData/VtepMAC").and_then(|p| p.as_str()).with_context(|| format!("lease {k} has no VtepMAC: {v}"))?;
            if mac.len() != 17 {
                bail!("lease {k}: odd VtepMAC {mac:?}");
            }
            let subs = sub.to_string();
            self.ns.ip(&["neigh", "replace", &subs, "lladdr", mac, "dev", "flannel.1", "nud", "permanent"])?;
            // `append` fails when the entry already exists: that is fine.
            let mut fdb = std::process::Command::new("bridge");
            fdb.args(["-n", self.ns.name(), "fdb", "append", mac, "dev", "flannel.1", "dst", public, "self", "permanent"]);
            let out = crate::cmd::output(&mut fdb)?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !err.contains("exists") {
                bail!("`{}` failed in netns {}: {}", crate::cmd::describe(&fdb), self.ns.name(), err.trim());
            }
            self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", &subs, "dev", "flannel.1", "onlink"])?;
            done.push(format!("{sub}/{len}"));
        }
        Ok(done)
    }
}
