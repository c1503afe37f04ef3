//! The udp backend on a node: flannel's udp lease (no BackendType), the
//! TUN and its workers ([`super::UdpPath`]) started on our subnet, and the
//! peers table replaced whole on every reconcile. No BPF.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;

use super::{PeerMap, UdpConfig, UdpPath, DEFAULT_PORT, UDP_OVERHEAD};
use crate::{
    backend::{
        peers::{desired, Changes, Warned},
        Backend, Node, Reconciled, Section,
    },
    net::netlink,
    subnet::{lease::LeaseAttrs, Ipv4Net, Leases, Subnets},
};

/// The `Backend` section of a udp network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
}

impl Config {
    pub fn parse(raw: &Section) -> Result<Config> {
        Ok(Config { port: raw.port(DEFAULT_PORT)? })
    }
}

/// The running path: the TUN (its ifindex) and the peers last given to it.
struct Running {
    path: UdpPath,
    dev: u32,
    peers: BTreeMap<Ipv4Net, Ipv4Addr>,
}

pub struct UdpBackend {
    cfg: Config,
    node: Node,
    attrs: LeaseAttrs,
    running: Option<Running>,
    own: Option<Ipv4Net>,
    /// The IPv4 pod network (udp carries no other).
    network: Ipv4Net,
}

impl UdpBackend {
    pub fn new(cfg: &Config, node: Node, network: Ipv4Net) -> UdpBackend {
        let attrs = LeaseAttrs::udp(node.underlay.public_ip);
        UdpBackend { cfg: *cfg, node, attrs, running: None, own: None, network }
    }
}

/// udp peers: remote subnet -> the peer's PublicIP, for flannel's udp
/// leases (no BackendType).
pub fn desired_udp(leases: &Leases, own: &Ipv4Net, network: &Ipv4Net, warned: &mut Warned) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    desired(leases, own, network, warned, |l| {
        if l.attrs.is_udp() {
            Ok(l.attrs.public_ip)
        } else {
            anyhow::bail!("BackendType is {:?}, not udp's (none)", l.attrs.backend_type.as_deref().unwrap_or_default())
        }
    })
}

impl Backend for UdpBackend {
    fn lease_attrs(&self) -> &LeaseAttrs {
        &self.attrs
    }
    fn mtu(&self) -> u32 {
        self.node.underlay.link.mtu - UDP_OVERHEAD
    }
    fn uses_bpf(&self) -> bool {
        false
    }
    /// The TUN and its workers, the TUN's address (our subnet's network
    /// address /32), MTU and one route for the whole network, as flannel
    /// sets up `flannel0`.
    fn start<'a>(&'a mut self, own: Subnets) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let own = own.v4.context("the udp backend carries IPv4 only: our lease has no IPv4 subnet")?;
            let (args, nl, mtu) = (&self.node.args, &self.node.nl, self.mtu());
            let bind = SocketAddrV4::new(self.node.underlay.iface_ip, self.cfg.port);
            let path = UdpPath::start(&UdpConfig { bind, tun_mtu: mtu, workers: args.udp_workers, offload: !args.udp_no_offload, pin: args.udp_per_cpu })?;
            let dev = nl.link_by_name(&path.name).await?.with_context(|| format!("TUN {} vanished", path.name))?;
            nl.set_only_addr(dev.index, own.network_addr()).await?;
            nl.set_link_up(dev.index, &path.name, mtu).await?;
            netlink::disable_ipv6(&path.name);
            nl.replace_dev_route(&self.network, dev.index).await?;
            self.node.health.metrics.set_udp_stats(path.stats.clone());
            log::info!(
                "udp: {} up (address {}/32, MTU {mtu}, route {} dev {}); peers reached at their PublicIP, port {}",
                path.name,
                own.network_addr(),
                self.network,
                path.name,
                bind.port()
            );
            self.running = Some(Running { path, dev: dev.index, peers: BTreeMap::new() });
            self.own = Some(own);
            Ok(())
        })
    }
    fn reconcile<'a>(&'a mut self, leases: &'a Leases, warned: &'a mut Warned) -> BoxFuture<'a, Result<Reconciled>> {
        Box::pin(async move {
            let (Some(own), Some(r)) = (self.own, self.running.as_mut()) else { bail!("udp backend not started") };
            let want = desired_udp(leases, &own, &self.network, warned);
            let mut ch = Changes {
                added: want.iter().filter(|(k, v)| r.peers.get(k) != Some(v)).count(),
                removed: r.peers.keys().filter(|k| !want.contains_key(k)).count(),
                errors: 0,
            };
            let list: Vec<_> = want.iter().map(|(net, ip)| (*net, SocketAddrV4::new(*ip, r.path.port))).collect();
            r.path.peers.store(PeerMap::new(&list));
            let peers = want.len();
            r.peers = want;
            // The one route for the network: put back if someone removed it.
            let nl = &self.node.nl;
            let have = nl.routes_via(r.dev).await?;
            if !have.iter().any(|(d, g)| *d == self.network && g.is_none()) {
                ch.tally(nl.replace_dev_route(&self.network, r.dev).await, true);
            }
            Ok(Reconciled { peers, changes: ch })
        })
    }
    /// Closing the TUN (when the path drops) removes it and its route.
    fn cleanup(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
