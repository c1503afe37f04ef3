//! Pods that flannel's CNI plugin attached (its delegate: `bridge` +
//! `host-local`), found so that the fast path applies to them as to
//! weft-cni's pods: on a node weftd took over from flanneld they keep
//! running, and until the node's CNI configuration changes new ones are
//! still made this way.
//!
//! A pod is adopted when both of flannel's records of it agree: host-local's
//! store (`--cni-store`, flannel's `/var/lib/cni/networks/cbr0`: one file
//! per allocated address, named by it, holding `<containerID>\r\n<ifname>`)
//! holds an address of our subnet (subnet.env, the range flannel's plugin
//! gives host-local), and that address is on the peer of a veth port of the
//! pod bridge (`--pod-bridge`, cni0) under the store's ifname. The peer is
//! read in its namespace by the id our namespace has for it
//! ([`crate::net::peer_netns`]), so no traffic is needed and no pod namespace
//! entered. A stale store file (a pod that died with the node) has no veth,
//! and an address on a veth that host-local did not hand out is not ours to
//! take: neither is adopted. Nor is an address two veths claim.
//!
//! The result is an [`EndpointRecord`] per pod, in memory, which
//! [`super::endpoints`] merges with weft-cni's records (a record of
//! weft-cni's for the same address wins) and registers through the same
//! code. weftd does not write these records to `--endpoints-dir`: that
//! directory is weft-cni's contract (written at ADD, removed at DEL), and
//! flannel's DEL would never remove a record weftd wrote there. The
//! store and the bridge are the truth here; reading them again on every
//! reconcile costs two netlink requests per pod without a record of
//! weft-cni's, and a pod whose store
//! file or veth is gone leaves the map at the next one (the veth's link
//! event, or the resync).
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use weft_common::{mac::format_mac, subnet_env::SubnetEnv};

use super::endpoints::EndpointRecord;
use crate::net::peer_netns::{Bridge, Peer, PeerNetns, Port};

/// One address of host-local's store: who it was handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub container_id: String,
    /// CNI_IFNAME (empty in host-local's old ID-only files).
    pub ifname: String,
}

/// host-local's store in `dir`, the addresses in subnet.env's subnets only
/// (other files: `lock`, `last_reserved_ip.N`, addresses of another subnet
/// this node held before, are left out). A missing directory holds none.
pub fn read_store(dir: &Path, env: &SubnetEnv) -> Result<BTreeMap<IpAddr, Allocation>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading host-local's store {}", dir.display())),
    };
    let mut out = BTreeMap::new();
    for e in entries.flatten() {
        let Some(ip) = e.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
        let ours = match ip {
            IpAddr::V4(v4) => env.subnet.is_some_and(|s| s.contains(v4)),
            IpAddr::V6(v6) => env.ipv6_subnet.is_some_and(|s| s.contains(v6)),
        };
        if !ours {
            continue;
        }
        // Removed since the listing: the pod is being deleted.
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        out.insert(ip, parse_allocation(&text));
    }
    Ok(out)
}

/// A store file's contents: `<containerID>\r\n<ifname>` (a bare `\n`, and
/// the ID alone, read too).
pub fn parse_allocation(text: &str) -> Allocation {
    let mut lines = text.lines().map(str::trim);
    let container_id = lines.next().unwrap_or_default().to_string();
    let ifname = lines.next().unwrap_or_default().to_string();
    Allocation { container_id, ifname }
}

/// The pods `store` and the bridge's ports agree on (see the module's
/// doc), each with the store file it came from; and why the others that
/// have an address of the store were left out.
pub fn match_pods(
    store_dir: &Path,
    store: &BTreeMap<IpAddr, Allocation>,
    bridge_name: &str,
    bridge: &Bridge,
    peers: &[(Port, Peer)],
) -> (Vec<(PathBuf, EndpointRecord)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut claims: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for (port, peer) in peers {
        for ip in peer.addrs.iter().filter(|ip| store.contains_key(ip)) {
            claims.entry(*ip).or_default().push(&port.name);
        }
    }
    for (ip, ports) in claims.iter().filter(|(_, p)| p.len() > 1) {
        problems.push(format!("{ip} is on the peers of {}: adopting none of them", ports.join(", ")));
    }
    let mut out = Vec::new();
    for (port, peer) in peers {
        let mut mine = peer.addrs.iter().filter(|ip| claims.get(ip).is_some_and(|p| p.len() == 1)).filter_map(|ip| {
            let a = &store[ip];
            if !a.ifname.is_empty() && a.ifname != peer.name {
                problems.push(format!("{ip}: host-local gave it to {} of {}, but it is on {} behind {}", a.ifname, a.container_id, peer.name, port.name));
                return None;
            }
            Some((*ip, a))
        });
        let first = mine.next();
        let rest: Vec<_> = mine.collect();
        let Some((key_ip, alloc)) = first else { continue };
        let v4 = std::iter::once(key_ip).chain(rest.iter().map(|(ip, _)| *ip)).find_map(|ip| match ip {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        });
        let v6 = std::iter::once(key_ip).chain(rest.iter().map(|(ip, _)| *ip)).find_map(|ip| match ip {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        });
        let file = store_dir.join(v4.map(IpAddr::V4).unwrap_or(key_ip).to_string());
        out.push((
            file,
            EndpointRecord {
                container_id: alloc.container_id.clone(),
                ifname: peer.name.clone(),
                netns: String::new(),
                ip: v4,
                pod_mac: format_mac(&peer.mac),
                host_veth: port.name.clone(),
                host_ifindex: port.index,
                bridge: bridge_name.to_string(),
                bridge_mac: format_mac(&bridge.mac),
                mtu: 0,
                ip6: v6,
            },
        ));
    }
    (out, problems)
}

/// Finds flannel-CNI pods on every reconcile (see the module's doc).
pub struct AdoptedPods {
    store: PathBuf,
    bridge: String,
    subnet_file: PathBuf,
    nl: PeerNetns,
    /// The last successful scan's pods: kept while a scan fails (the
    /// endpoints' own check still drops a pod whose veth is gone).
    last: Vec<(PathBuf, EndpointRecord)>,
    /// The problems last logged, so each is logged once.
    reported: BTreeSet<String>,
    /// The addresses last logged as adopted (None: nothing logged yet).
    logged: Option<BTreeSet<IpAddr>>,
}

impl AdoptedPods {
    pub fn new(store: &Path, bridge: &str, subnet_file: &Path) -> Result<AdoptedPods> {
        Ok(AdoptedPods {
            store: store.to_path_buf(),
            bridge: bridge.to_string(),
            subnet_file: subnet_file.to_path_buf(),
            nl: PeerNetns::new()?,
            last: Vec::new(),
            reported: BTreeSet::new(),
            logged: None,
        })
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The pods flannel's CNI plugin attached, as endpoint records keyed by
    /// their store file; the veths in `recorded` (weft-cni's pods, whose
    /// addresses are in the same store) are not looked at. Problems are
    /// logged once each, never fatal.
    pub async fn scan(&mut self, recorded: &HashSet<u32>) -> &[(PathBuf, EndpointRecord)] {
        match self.try_scan(recorded).await {
            Ok((pods, problems)) => {
                self.last = pods;
                self.report(problems);
            }
            Err(e) => self.report(vec![format!("{e:#}; keeping the {} pods found before", self.last.len())]),
        }
        &self.last
    }

    async fn try_scan(&self, recorded: &HashSet<u32>) -> Result<(Vec<(PathBuf, EndpointRecord)>, Vec<String>)> {
        let text = std::fs::read_to_string(&self.subnet_file).with_context(|| format!("reading {}", self.subnet_file.display()))?;
        let env = SubnetEnv::parse(&text).with_context(|| format!("parsing {}", self.subnet_file.display()))?;
        let store = read_store(&self.store, &env)?;
        if store.is_empty() {
            return Ok(Default::default());
        }
        let Some(bridge) = self.nl.bridge(&self.bridge).await? else { return Ok(Default::default()) };
        let mut peers = Vec::new();
        for port in bridge.ports.iter().filter(|p| !recorded.contains(&p.index)) {
            if let Some(peer) = self.nl.peer(port).await? {
                peers.push((port.clone(), peer));
            }
        }
        Ok(match_pods(&self.store, &store, &self.bridge, &bridge, &peers))
    }

    fn report(&mut self, problems: Vec<String>) {
        let now: BTreeSet<String> = problems.into_iter().collect();
        for p in now.difference(&self.reported) {
            log::warn!("flannel-CNI pods: {p}");
        }
        self.reported = now;
    }

    /// Logs the adopted pods' addresses when they change: all of them the
    /// first time, then what came and went.
    pub fn log_adopted(&mut self, now: BTreeSet<IpAddr>) {
        let list = |s: &mut dyn Iterator<Item = &IpAddr>| s.map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
        match &self.logged {
            Some(before) if *before == now => return,
            Some(before) => {
                let (came, went): (Vec<_>, Vec<_>) = (now.difference(before).collect(), before.difference(&now).collect());
                log::info!(
                    "flannel-CNI pods: {} adopted now{}{}",
                    now.len(),
                    if came.is_empty() { String::new() } else { format!("; new: {}", list(&mut came.into_iter())) },
                    if went.is_empty() { String::new() } else { format!("; gone: {}", list(&mut went.into_iter())) },
                );
            }
            None if now.is_empty() => {}
            None => log::info!(
                "flannel-CNI pods: adopted {} (host-local's store {}, veths on {}): {}",
                now.len(),
                self.store.display(),
                self.bridge,
                list(&mut now.iter())
            ),
        }
        self.logged = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> SubnetEnv {
        SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_SUBNET=fd44:0:0:1::1/64\n").unwrap()
    }

    #[test]
    fn the_store_holds_our_subnets_addresses() {
        let dir = std::env::temp_dir().join(format!("weft-adopted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read_store(&dir, &env()).unwrap().is_empty(), "a missing store holds none");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("10.244.1.2", "c1\r\neth0"),
            ("10.244.1.3", "c2\neth1\n"),
            ("10.244.1.4", "c3"),
            ("fd44:0:0:1::2", "c1\r\neth0"),
            ("10.244.9.2", "old\r\neth0"),
            ("lock", ""),
            ("last_reserved_ip.0", "10.244.1.4"),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let s = read_store(&dir, &env()).unwrap();
        let got: Vec<_> = s.iter().map(|(ip, a)| (ip.to_string(), a.container_id.as_str(), a.ifname.as_str())).collect();
        assert_eq!(
            got,
            [
                ("10.244.1.2".to_string(), "c1", "eth0"),
                ("10.244.1.3".to_string(), "c2", "eth1"),
                ("10.244.1.4".to_string(), "c3", ""),
                ("fd44:0:0:1::2".to_string(), "c1", "eth0")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn port(name: &str, index: u32) -> Port {
        Port { name: name.into(), index, nsid: index as i32, peer_index: 2 }
    }

    fn peer(addrs: &[&str]) -> Peer {
        Peer { name: "eth0".into(), mac: [0x0a, 0x58, 10, 244, 1, 2], addrs: addrs.iter().map(|a| a.parse().unwrap()).collect() }
    }

    #[test]
    fn a_pod_is_adopted_where_store_and_veth_agree() {
        let store: BTreeMap<IpAddr, Allocation> = [
            ("10.244.1.2", "c1", "eth0"),
            ("fd44:0:0:1::2", "c1", "eth0"),
            ("10.244.1.3", "c2", "eth0"),
            ("10.244.1.4", "c3", "eth0"),
            ("10.244.1.5", "c5", "net1"),
        ]
        .iter()
        .map(|(ip, c, i)| (ip.parse().unwrap(), Allocation { container_id: c.to_string(), ifname: i.to_string() }))
        .collect();
        let bridge = Bridge { index: 3, mac: [2, 0, 0, 0, 0, 1], ports: vec![] };
        let peers = vec![
            (port("veth1", 10), peer(&["10.244.1.2", "fd44:0:0:1::2"])),
            // Two veths with one address: neither.
            (port("veth2", 11), peer(&["10.244.1.3"])),
            (port("veth3", 12), peer(&["10.244.1.3"])),
            // Not in the store: not host-local's, not adopted.
            (port("veth4", 13), peer(&["10.244.1.99"])),
            // The store says another interface.
            (port("veth5", 14), peer(&["10.244.1.5"])),
        ];
        let dir = Path::new("/s");
        let (pods, problems) = match_pods(dir, &store, "cni0", &bridge, &peers);
        assert_eq!(pods.len(), 1, "{pods:?}");
        let (file, r) = &pods[0];
        assert_eq!(file, &dir.join("10.244.1.2"));
        assert_eq!((r.ip, r.ip6), (Some("10.244.1.2".parse().unwrap()), Some("fd44:0:0:1::2".parse().unwrap())));
        assert_eq!((r.host_veth.as_str(), r.host_ifindex, r.container_id.as_str(), r.ifname.as_str()), ("veth1", 10, "c1", "eth0"));
        assert_eq!((r.pod_mac.as_str(), r.bridge_mac.as_str(), r.bridge.as_str()), ("0a:58:0a:f4:01:02", "02:00:00:00:00:01", "cni0"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("10.244.1.3") && problems[0].contains("veth2, veth3"), "{problems:?}");
        assert!(problems[1].contains("net1"), "{problems:?}");
        // The record is one weftd's endpoint code takes.
        assert!(EndpointRecord::parse(&r.to_json()).is_ok());
        // An IPv6-only pod: keyed by its IPv6 file.
        let (pods, _) = match_pods(dir, &store, "cni0", &bridge, &[(port("veth6", 15), peer(&["fd44:0:0:1::2"]))]);
        assert_eq!((pods[0].1.ip, pods[0].0.clone()), (None, dir.join("fd44:0:0:1::2")));
    }
}
