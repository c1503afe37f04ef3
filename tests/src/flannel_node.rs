//! A node programmed the way flanneld programs the kernel, with its lease
//! written to the cluster's store (etcd, or weftd's embedded store) exactly
//! as flanneld writes it. No daemon runs: call [`FlannelNode::reprogram`]
//! after new leases appear.
//!
//! - vxlan backend: flannel.1, permanent neighbour + FDB entries, onlink routes;
//! - host-gw backend: no device, `<subnet> via <PublicIP> dev eth0` per peer.
//!
//! Dual stack (flanneld v0.2x with `EnableIPv6`): the lease key gains
//! `&<v6 subnet>-<len>` and the value `PublicIPv6` (and, vxlan,
//! `BackendV6Data`). vxlan adds a second device `flannel-v6.1` over the
//! IPv6 underlay (MTU underlay - 70) with the v6 subnet's network address
//! /128, and per dual-stack peer the v6 neighbour, FDB entry and onlink
//! route (vxlan.go, vxlan_network.go, device.go); host-gw adds
//! `<v6 subnet> via <PublicIPv6> dev eth0` (hostgw.go, route_network.go).
//!
//! IPv6-only (flanneld with `"EnableIPv4": false`, [`FlannelNode::ipv6_only`]):
//! no IPv4 subnet, no flannel.1; the lease key is `0.0.0.0-0&<v6 subnet>-64`
//! and the value has `"PublicIP":"0.0.0.0"` and no BackendData; only the
//! IPv6 half above is programmed, for the other leases' IPv6 parts.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};

use crate::{
    netns::Netns,
    store::LeaseStore,
    subnet_env::{self, flannel_node_env, flannel_node_env_dual, parse_lease_name, parse_lease_name6, Ipv4Subnet, Ipv6Cidr, SubnetEnv},
};

/// The underlay's MTU on every node of the harness.
const UNDERLAY_MTU: u32 = 1500;
/// flanneld's v6 vxlan device: the kernel's default MTU for a vxlan device
/// over IPv6 (outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN6_OVERHEAD: u32 = 70;
/// The v6 vxlan device's name (VNI 1).
pub const FLANNEL_V6_DEV: &str = "flannel-v6.1";

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

/// A flannel node's view of another lease.
struct OtherLease {
    /// The store key.
    key: String,
    sub: Ipv4Addr,
    len: u8,
    j: serde_json::Value,
    /// PublicIP.
    public: String,
    /// The key's IPv6 subnet, on a dual-stack lease.
    sub6: Option<Ipv6Cidr>,
}

impl OtherLease {
    /// The lease's PublicIPv6 (an error unless it is a non-null string).
    fn public6(&self) -> Result<Ipv6Addr> {
        let v = self.j.get("PublicIPv6").and_then(|p| p.as_str()).with_context(|| format!("dual-stack lease {} has no PublicIPv6: {}", self.key, self.j))?;
        v.parse().with_context(|| format!("lease {}: PublicIPv6 {v:?}", self.key))
    }
}

pub struct FlannelNode {
    pub n: u32,
    /// The node's IPv4 underlay address (PublicIP); 0.0.0.0 on an IPv6-only node.
    pub ip: Ipv4Addr,
    pub env: SubnetEnv,
    pub backend: FlannelBackend,
    /// flannel.1's MAC (the lease's VtepMAC); empty for host-gw and IPv6-only.
    pub mac: String,
    /// Dual stack: the node's PublicIPv6 (its underlay's IPv6 address).
    pub ip6: Option<Ipv6Addr>,
    /// Dual stack, vxlan: flannel-v6.1's MAC (BackendV6Data.VtepMAC); else empty.
    pub mac6: String,
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

/// The lease value flanneld's udp backend writes for PublicIP `ip`: no
/// BackendType, no BackendData.
fn udp_lease_value(ip: Ipv4Addr) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null}}"#)
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
    /// An IPv6-only node as flanneld makes one with `"EnableIPv4": false`:
    /// `ip6` (already on its eth0) its PublicIPv6, the first free /64 of
    /// `net6` from index 0xc8 upward its subnet, the lease
    /// `0.0.0.0-0&<subnet>-64` = `{"PublicIP":"0.0.0.0","PublicIPv6":..,
    /// "BackendType":..}` plus, for vxlan, BackendV6Data of the only device,
    /// `flannel-v6.1`. vxlan and host-gw only.
    pub fn ipv6_only(n: u32, ip6: Ipv6Addr, net6: Ipv6Cidr, ns: Netns, store: &LeaseStore, backend: FlannelBackend) -> Result<FlannelNode> {
        let leases = store.list()?;
        let taken6: Vec<Ipv6Cidr> = leases.iter().filter_map(|(k, _)| parse_lease_name6(k)).map(Ipv6Cidr::trunc).collect();
        let net6 = net6.trunc();
        if net6.prefix_len > 64 - 8 {
            bail!("IPv6Network {net6}: the harness's flannel node needs at least 8 bits of /64s");
        }
        let subnet6 = (0xc8u128..=0xff)
            .map(|x| Ipv6Cidr { addr: net6.host(x << 64), prefix_len: 64 })
            .find(|s| !taken6.contains(s))
            .with_context(|| format!("no free /64 in {net6} for the flannel node"))?;
        let (mtu, value, mac6) = match backend {
            FlannelBackend::HostGw => (UNDERLAY_MTU, format!(r#"{{"PublicIP":"0.0.0.0","PublicIPv6":"{ip6}","BackendType":"host-gw"}}"#), String::new()),
            FlannelBackend::Vxlan | FlannelBackend::VxlanDirect => {
                let mac6 = Self::make_vxlan6_dev(&ns, ip6, subnet6)?;
                let v = format!(r#"{{"PublicIP":"0.0.0.0","PublicIPv6":"{ip6}","BackendType":"vxlan","BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#);
                (UNDERLAY_MTU - VXLAN6_OVERHEAD, v, mac6)
            }
            FlannelBackend::Udp => bail!("flannel's udp backend has no IPv6: an IPv6-only flannel node is vxlan or host-gw"),
        };
        let env = SubnetEnv { network: None, subnet: None, mtu, ipmasq: Some(false), ipv6_network: Some(net6), ipv6_subnet: Some(subnet6) };
        let name = subnet_env::lease_name(&env);
        store.put(&name, &value)?;
        let lease_key = store.key(&name);
        Ok(FlannelNode { n, ip: Ipv4Addr::UNSPECIFIED, env, backend, mac: String::new(), ip6: Some(ip6), mac6, lease_key, ns, proxy: Default::default() })
    }

    /// Creates flannel.1 in `ns` (eth0 must carry `ip` already), picks a free
    /// /24 in `network` from `.200` upward, and writes its lease (TTL 3600 s).
    pub fn new(n: u32, ip: Ipv4Addr, ns: Netns, store: &LeaseStore, network: Ipv4Addr) -> Result<FlannelNode> {
        Self::with_backend(n, ip, ns, store, network, FlannelBackend::Vxlan)
    }

    /// As [`FlannelNode::new`] for either backend. host-gw creates no device;
    /// its lease is `{"PublicIP":..,"PublicIPv6":null,"BackendType":"host-gw"}`
    /// and its FLANNEL_MTU the underlay's (1500).
    pub fn with_backend(n: u32, ip: Ipv4Addr, ns: Netns, store: &LeaseStore, network: Ipv4Addr, backend: FlannelBackend) -> Result<FlannelNode> {
        Self::with_backend_v6(n, ip, None, ns, store, network, backend)
    }

    /// As [`FlannelNode::with_backend`]; with `v6` = (the node's PublicIPv6,
    /// already on its eth0; the cluster's IPv6Network), a dual-stack node as
    /// flanneld v0.2x makes one: a /64 of the v6 network too (the first free
    /// one from index .200's upward: `fd44:0:0:c8::/64` for `10.244.200.0/24`),
    /// the `&` lease key, PublicIPv6, and for vxlan `flannel-v6.1` and
    /// BackendV6Data. vxlan and host-gw only (flannel's udp has no IPv6).
    pub fn with_backend_v6(
        n: u32,
        ip: Ipv4Addr,
        v6: Option<(Ipv6Addr, Ipv6Cidr)>,
        ns: Netns,
        store: &LeaseStore,
        network: Ipv4Addr,
        backend: FlannelBackend,
    ) -> Result<FlannelNode> {
        let leases = store.list()?;
        let taken: Vec<Ipv4Addr> = leases.iter().filter_map(|(k, _)| parse_lease_name(k)).map(|(s, _)| s).collect();
        let o = network.octets();
        let subnet =
            (200u8..=254).map(|x| Ipv4Addr::new(o[0], o[1], x, 0)).find(|s| !taken.contains(s)).context("no free /24 from .200 upward for the flannel node")?;
        if let Some((ip6, net6)) = v6 {
            if !matches!(backend, FlannelBackend::Vxlan | FlannelBackend::VxlanDirect | FlannelBackend::HostGw) {
                bail!("flannel's {backend:?} backend has no IPv6: a dual-stack flannel node is vxlan or host-gw");
            }
            let taken6: Vec<Ipv6Cidr> = leases.iter().filter_map(|(k, _)| parse_lease_name6(k)).map(Ipv6Cidr::trunc).collect();
            let net6 = net6.trunc();
            if net6.prefix_len > 64 - 8 {
                bail!("IPv6Network {net6}: the harness's flannel node needs at least 8 bits of /64s");
            }
            let subnet6 = (subnet.octets()[2] as u128..=0xff)
                .map(|x| Ipv6Cidr { addr: net6.host(x << 64), prefix_len: 64 })
                .find(|s| !taken6.contains(s))
                .with_context(|| format!("no free /64 in {net6} for the flannel node"))?;
            let (mtu, v6_dev) = match backend {
                FlannelBackend::HostGw => (UNDERLAY_MTU, false),
                _ => (UNDERLAY_MTU - 50, true),
            };
            let env = flannel_node_env_dual(network, subnet, mtu, net6, subnet6);
            let name = subnet_env::lease_name(&env);
            let lease_key = store.key(&name);
            let (mut mac, mut mac6) = (String::new(), String::new());
            let value = if v6_dev {
                mac = Self::make_vxlan_dev(&ns, ip, subnet)?;
                mac6 = Self::make_vxlan6_dev(&ns, ip6, subnet6)?;
                format!(
                    r#"{{"PublicIP":"{ip}","PublicIPv6":"{ip6}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
                )
            } else {
                format!(r#"{{"PublicIP":"{ip}","PublicIPv6":"{ip6}","BackendType":"host-gw"}}"#)
            };
            store.put(&name, &value)?;
            return Ok(FlannelNode { n, ip, env, backend, mac, ip6: Some(ip6), mac6, lease_key, ns, proxy: Default::default() });
        }
        let lease_key = store.key(&format!("{subnet}-24"));
        if backend == FlannelBackend::HostGw {
            let env = flannel_node_env(network, subnet, 1500);
            let value = format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#);
            store.put(&env.lease_name(), &value)?;
            return Ok(FlannelNode { n, ip, env, backend, mac: String::new(), ip6: None, mac6: String::new(), lease_key, ns, proxy: Default::default() });
        }
        if backend == FlannelBackend::Udp {
            // flannel's udp lease has no BackendType; FLANNEL_MTU = 1500 - 28.
            let env = flannel_node_env(network, subnet, 1472);
            store.put(&env.lease_name(), &udp_lease_value(ip))?;
            return Ok(FlannelNode { n, ip, env, backend, mac: String::new(), ip6: None, mac6: String::new(), lease_key, ns, proxy: Default::default() });
        }
        let env = flannel_node_env(network, subnet, 1450);
        let mac = Self::make_vxlan_dev(&ns, ip, subnet)?;
        let value = format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#);
        store.put(&env.lease_name(), &value)?;
        Ok(FlannelNode { n, ip, env, backend, mac, ip6: None, mac6: String::new(), lease_key, ns, proxy: Default::default() })
    }

    /// flannel-v6.1 over the IPv6 underlay (local `ip6`, MTU underlay - 70)
    /// with `<subnet6 address>/128`, up; its MAC.
    fn make_vxlan6_dev(ns: &Netns, ip6: Ipv6Addr, subnet6: Ipv6Cidr) -> Result<String> {
        let mac6 = random_mac();
        let ip6s = ip6.to_string();
        ns.ip(&["link", "add", FLANNEL_V6_DEV, "type", "vxlan", "id", "1", "dev", "eth0", "local", &ip6s, "dstport", "8472", "nolearning"])?;
        ns.ip(&["link", "set", FLANNEL_V6_DEV, "address", &mac6, "mtu", &(UNDERLAY_MTU - VXLAN6_OVERHEAD).to_string()])?;
        // Slashes: the device name has a dot.
        ns.sysctl(&format!("net/ipv6/conf/{FLANNEL_V6_DEV}/accept_ra"), "0")?;
        ns.ip(&["-6", "addr", "add", &format!("{}/128", subnet6.addr), "dev", FLANNEL_V6_DEV])?;
        ns.ip(&["link", "set", FLANNEL_V6_DEV, "up"])?;
        Ok(mac6)
    }

    /// flannel.1 over the IPv4 underlay with `<subnet>/32`, up; its MAC.
    fn make_vxlan_dev(ns: &Netns, ip: Ipv4Addr, subnet: Ipv4Addr) -> Result<String> {
        let mac = random_mac();
        let ips = ip.to_string();
        ns.ip(&["link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "local", &ips, "dstport", "8472", "nolearning"])?;
        ns.ip(&["link", "set", "flannel.1", "address", &mac, "mtu", "1450"])?;
        ns.ip(&["addr", "add", &format!("{subnet}/32"), "dev", "flannel.1"])?;
        ns.ip(&["link", "set", "flannel.1", "up"])?;
        Ok(mac)
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
    /// On a dual-stack node, for every dual-stack host-gw lease also
    /// `ip -6 route replace <v6 subnet> via <PublicIPv6> dev eth0`.
    fn reprogram_host_gw(&self, store: &LeaseStore) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for l in self.other_leases(store, "host-gw")? {
            let (sub, len, public) = (l.sub, l.len, &l.public);
            // An IPv6-only node (or lease) has no IPv4 half.
            if self.has_ipv4() && len > 0 {
                match self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", public, "dev", "eth0"]) {
                    Ok(_) => done.push(format!("{sub}/{len}")),
                    Err(e) => eprintln!("weft-tests: flannel host-gw node {}: route to {sub}/{len} via {public}: {e:#}", self.ns.name()),
                }
            }
            if let (Some(_), Some(sub6)) = (self.ip6, l.sub6) {
                let public6 = l.public6()?;
                match self.ns.ip(&["-6", "route", "replace", &sub6.to_string(), "via", &public6.to_string(), "dev", "eth0"]) {
                    Ok(_) => done.push(sub6.to_string()),
                    Err(e) => eprintln!("weft-tests: flannel host-gw node {}: route to {sub6} via {public6}: {e:#}", self.ns.name()),
                }
            }
        }
        Ok(done)
    }

    /// The node has an IPv4 subnet (flannel.1, IPv4 routes): not IPv6-only.
    fn has_ipv4(&self) -> bool {
        self.env.subnet.is_some()
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
            let sub6 = parse_lease_name6(&k).map(Ipv6Cidr::trunc);
            out.push(OtherLease { key: k, sub, len, j, public, sub6 });
        }
        Ok(out)
    }

    /// For every other vxlan lease in the store: neighbour, FDB entry and
    /// route, as flanneld's vxlan_network.go does. With `direct` (flannel's
    /// DirectRouting), a peer whose PublicIP is on-link (`ip route get` shows
    /// no gateway) gets `<subnet> via <PublicIP> dev eth0` instead. Returns
    /// the subnets programmed.
    ///
    /// On a dual-stack node, for every dual-stack vxlan lease also (or, with
    /// `direct` and an on-link PublicIPv6, `<v6 subnet> via <PublicIPv6>`):
    /// `<v6 subnet address> lladdr <BackendV6Data.VtepMAC> dev flannel-v6.1
    /// nud permanent`, FDB `<that MAC> dst <PublicIPv6>` and
    /// `<v6 subnet> via <v6 subnet address> dev flannel-v6.1 onlink`. A
    /// dual-stack lease without BackendV6Data is an error here (flanneld
    /// logs "error decoding v6 subnet lease JSON" and skips the whole lease).
    fn reprogram_vxlan(&self, store: &LeaseStore, direct: bool) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for l in self.other_leases(store, "vxlan")? {
            let (k, sub, len, j) = (&l.key, l.sub, l.len, &l.j);
            let v = j.to_string();
            // v6 first, as flanneld decodes both before programming either.
            let v6 = match (self.ip6, l.sub6) {
                (Some(_), Some(sub6)) => {
                    let mac6 = j
                        .pointer("/BackendV6Data/VtepMAC")
                        .and_then(|p| p.as_str())
                        .with_context(|| format!("dual-stack lease {k} has no BackendV6Data.VtepMAC (flanneld skips such a lease entirely): {v}"))?;
                    if mac6.len() != 17 {
                        bail!("lease {k}: odd BackendV6Data.VtepMAC {mac6:?}");
                    }
                    Some((sub6, l.public6()?, mac6))
                }
                _ => None,
            };
            let public = l.public.as_str();
            if !self.has_ipv4() || len == 0 {
                // An IPv6-only node (or lease): no flannel.1, no IPv4 half.
            } else if direct && !self.ns.ip(&["route", "get", public])?.contains(" via ") {
                self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", public, "dev", "eth0"])?;
                done.push(format!("{sub}/{len}"));
            } else {
                let mac = j.pointer("/BackendData/VtepMAC").and_then(|p| p.as_str()).with_context(|| format!("lease {k} has no VtepMAC: {v}"))?;
                if mac.len() != 17 {
                    bail!("lease {k}: odd VtepMAC {mac:?}");
                }
                let subs = sub.to_string();
                self.program_vxlan_peer("flannel.1", &subs, mac, public)?;
                self.ns.ip(&["route", "replace", &format!("{sub}/{len}"), "via", &subs, "dev", "flannel.1", "onlink"])?;
                done.push(format!("{sub}/{len}"));
            }
            let Some((sub6, public6, mac6)) = v6 else { continue };
            let public6 = public6.to_string();
            if direct && !self.ns.ip(&["-6", "route", "get", &public6])?.contains(" via ") {
                self.ns.ip(&["-6", "route", "replace", &sub6.to_string(), "via", &public6, "dev", "eth0"])?;
            } else {
                let subs6 = sub6.addr.to_string();
                self.program_vxlan_peer(FLANNEL_V6_DEV, &subs6, mac6, &public6)?;
                self.ns.ip(&["-6", "route", "replace", &sub6.to_string(), "via", &subs6, "dev", FLANNEL_V6_DEV, "onlink"])?;
            }
            done.push(sub6.to_string());
        }
        Ok(done)
    }

    /// The permanent neighbour `gw` -> `mac` and the FDB entry `mac` ->
    /// `public` on vxlan device `dev` (the route goes last, as in flanneld).
    fn program_vxlan_peer(&self, dev: &str, gw: &str, mac: &str, public: &str) -> Result<()> {
        self.ns.ip(&["neigh", "replace", gw, "lladdr", mac, "dev", dev, "nud", "permanent"])?;
        // `append` fails when the entry already exists: that is fine.
        let mut fdb = std::process::Command::new("bridge");
        fdb.args(["-n", self.ns.name(), "fdb", "append", mac, "dev", dev, "dst", public, "self", "permanent"]);
        let out = crate::cmd::output(&mut fdb)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("exists") {
            bail!("`{}` failed in netns {}: {}", crate::cmd::describe(&fdb), self.ns.name(), err.trim());
        }
        Ok(())
    }

    /// flanneld started (again) on node namespace `ns` where flannel, or
    /// weftd in flannel's formats, ran before: what flanneld v0.2x does at
    /// start with the etcd subnet manager before its watch programs the
    /// peers (call [`FlannelNode::reprogram`] then). IPv4 only; vxlan (also
    /// with DirectRouting), host-gw and udp; subnet.env is the caller's.
    ///
    /// - vxlan: an existing `flannel.1` (a vxlan device, found as
    ///   LinkByName finds it: by its name or an altname, so weft's `weft.1`
    ///   answering to `flannel.1` is found) is reused with its MAC, given `<subnet>/32` and set up; else it is created as
    ///   [`FlannelNode::new`] does. The kernel refusing that (another vxlan
    ///   device holds VNI 1 on port 8472) is flanneld's "failed to create
    ///   VXLAN device", which ends flanneld: the error, and `ns` handed back.
    /// - udp: nothing here; the first [`FlannelNode::reprogram`] starts the
    ///   reference proxy, which opens flannel0 (address, MTU, the network's
    ///   route) as the node's first start did.
    /// - The lease under `env`'s key (the one with our PublicIP) is reused
    ///   and written again with our attributes (tryAcquireLease's
    ///   updateSubnet), so a VtepMAC announced under that key by someone
    ///   else becomes flannel.1's again.
    #[allow(clippy::result_large_err)]
    pub fn restart(
        n: u32,
        ip: Ipv4Addr,
        ns: Netns,
        store: &LeaseStore,
        env: SubnetEnv,
        backend: FlannelBackend,
    ) -> Result<FlannelNode, (Netns, anyhow::Error)> {
        let r = (|| -> Result<(String, String)> {
            let subnet = env.subnet.context("a restarted flannel node needs an IPv4 subnet (IPv6-only is not supported here)")?;
            let mac = match backend {
                FlannelBackend::HostGw => String::new(),
                FlannelBackend::Vxlan | FlannelBackend::VxlanDirect => {
                    // LinkByName("flannel.1"): RTM_GETLINK by IFLA_IFNAME, which
                    // also finds a device that has the name as an altname
                    // (weft.1 after weftd), whatever its ifname.
                    let dev = match ns.ip(&["-d", "-j", "link", "show", "dev", "flannel.1"]) {
                        Ok(shown) => {
                            let links: serde_json::Value =
                                serde_json::from_str(&shown).with_context(|| format!("ip -d -j link show dev flannel.1: {shown}"))?;
                            links.as_array().and_then(|a| a.first()).cloned()
                        }
                        Err(e) if format!("{e:#}").contains("does not exist") => None,
                        Err(e) => return Err(e),
                    };
                    match dev {
                        Some(l) if l.pointer("/linkinfo/info_kind").and_then(|k| k.as_str()) == Some("vxlan") => {
                            ns.ip(&["addr", "replace", &format!("{}/32", subnet.addr), "dev", "flannel.1"])?;
                            ns.ip(&["link", "set", "flannel.1", "up"])?;
                            l["address"].as_str().context("flannel.1 has no MAC")?.to_string()
                        }
                        Some(l) => bail!("flannel.1 exists but is no vxlan device: {l}"),
                        None => Self::make_vxlan_dev(&ns, ip, subnet.addr).context("flanneld: failed to create VXLAN device flannel.1")?,
                    }
                }
                // flannel0 is the proxy's TUN: made by the first reprogram.
                FlannelBackend::Udp => String::new(),
            };
            let value = match backend {
                FlannelBackend::HostGw => format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#),
                FlannelBackend::Udp => udp_lease_value(ip),
                _ => format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#),
            };
            let name = subnet_env::lease_name(&env);
            store.put(&name, &value)?;
            Ok((mac, store.key(&name)))
        })();
        match r {
            Ok((mac, lease_key)) => Ok(FlannelNode { n, ip, env, backend, mac, ip6: None, mac6: String::new(), lease_key, ns, proxy: Default::default() }),
            Err(e) => Err((ns, e)),
        }
    }
}
