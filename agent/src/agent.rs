//! weftd's life: read the config, pick the underlay, claim a subnet, set up
//! the overlay device and the datapath, write subnet.env, then reconcile the
//! dataplane with the leases on every change (and every 10 s, to heal what
//! someone changed by hand), renewing our lease in time.
use std::{collections::{BTreeMap, HashMap, HashSet}, net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;

use anyhow::{bail, Context, Result};
use aya::programs::TcAttachType;
use tokio::{signal::unix::{signal, SignalKind}, sync::mpsc, time::Instant};
use weft_common::{prog_names, DatapathConfig, VXLAN_OVERHEAD};

use crate::{
    acquire, bpffs, datapath,
    cli::Args,
    datapath::Datapath,
    fast_path::FastPath,
    health::{self, Health},
    iface, kernel_vxlan,
    lease::{format_mac, LeaseAttrs},
    netconfig::{Backend, NetConfig},
    netlink::{self, Netlink},
    reconcile,
    local_store::{self, LocalStore},
    store::{self, EtcdStore, LeaseEvent, Store},
    subnet::Ipv4Net,
    subnet_env,
};

const RESYNC: Duration = Duration::from_secs(10);

fn random_mac() -> [u8; 6] {
    let mut m: [u8; 6] = rand::random();
    m[0] = (m[0] & 0xfe) | 0x02; // unicast, locally administered
    m
}

pub async fn run(args: Args) -> Result<()> {
    store::check_prefix(&args.etcd_prefix)?;
    let health = Arc::new(Health::default());
    if args.healthz_port != 0 {
        health::spawn(SocketAddr::new(args.healthz_ip, args.healthz_port), health.clone()).await?;
    }
    let (store, cfg_json, cfg_source) = if args.etcd_endpoints.is_empty() {
        let local = LocalStore::open(&args.store_dir)?;
        log::info!("no --etcd-endpoints: using the embedded lease store in {}", args.store_dir.display());
        health.stage(format!("waiting for the network config file {}", args.net_config_path.display()));
        let cfg = local_store::wait_for_config_file(&args.net_config_path).await?;
        (Store::Local(local), cfg, args.net_config_path.display().to_string())
    } else {
        let auth = store::EtcdAuth {
            cafile: args.etcd_cafile.clone(),
            certfile: args.etcd_certfile.clone(),
            keyfile: args.etcd_keyfile.clone(),
            username: args.etcd_username.clone(),
            password: args.etcd_password.clone(),
        };
        health.stage("connecting to etcd");
        let etcd = EtcdStore::connect(&args.etcd_endpoints, &args.etcd_prefix, &auth).await?;
        health.stage(format!("waiting for the network config {}/config", args.etcd_prefix));
        let cfg = store::wait_for_config(&etcd).await?;
        (Store::Etcd(etcd), cfg, format!("{}/config", args.etcd_prefix))
    };
    health.stage("setting up the node");
    let cfg = NetConfig::parse(&cfg_json).with_context(|| cfg_source.clone())?;

    let nl = Netlink::new()?;
    let selector = iface::Selector {
        ifaces: args.iface.clone(),
        regexes: args.iface_regex.clone(),
        can_reach: args.iface_can_reach,
        public_ip: args.public_ip,
    };
    let underlay = iface::select(&nl, &selector).await?;
    log::info!("underlay {} (#{}, MTU {}), address {}, public IP {}", underlay.link.name, underlay.link.index, underlay.link.mtu, underlay.iface_ip, underlay.public_ip);

    let bpf = matches!(cfg.backend, Backend::Vxlan { .. } | Backend::HostGw) && use_bpf(&args)?;
    let (attrs, mtu, setup) = match cfg.backend {
        Backend::Vxlan { vni, port, direct_routing } => {
            // The overlay device first: its MAC is the VtepMAC our lease announces.
            let overlay_name = format!("weft.{vni}");
            let overlay_mtu = underlay.link.mtu - VXLAN_OVERHEAD;
            let overlay = if bpf {
                bpffs::ensure_mounted(&args.bpf_pin_dir)?;
                nl.ensure_overlay(&overlay_name, args.overlay_kind == "veth", overlay_mtu, random_mac()).await?
            } else {
                kernel_vxlan::ensure_device(&nl, &kernel_vxlan::VxlanDev {
                    name: &overlay_name, vni, port, underlay: underlay.link.index, local: underlay.iface_ip, mtu: overlay_mtu, mac: random_mac(),
                }).await?
            };
            let vtep_mac = overlay.mac.context("overlay device has no MAC")?;
            netlink::disable_ipv6(&overlay_name);
            (LeaseAttrs::vxlan(underlay.public_ip, vni, &vtep_mac), overlay_mtu, Some((vni, port, overlay, vtep_mac, direct_routing)))
        }
        Backend::HostGw => {
            // flannel's rule: host-gw routes to PublicIPs, so they must be
            // the addresses the peers' packets really arrive at.
            if underlay.public_ip != underlay.iface_ip {
                bail!("the host-gw backend needs PublicIP {} on interface {} (it has {}): behind NAT host-gw cannot work; use vxlan",
                    underlay.public_ip, underlay.link.name, underlay.iface_ip);
            }
            (LeaseAttrs::host_gw(underlay.public_ip), underlay.link.mtu, None)
        }
        Backend::Udp { .. } => (LeaseAttrs::udp(underlay.public_ip), underlay.link.mtu - crate::udp::UDP_OVERHEAD, None),
    };

    health.stage("claiming a subnet");
    let own = acquire::acquire(&store, &cfg, &attrs, subnet_env::previous_subnet(&args.subnet_file), args.subnet_lease_ttl).await?;
    health.lease_held(true);
    health.metrics.lease_renewed();

    if !bpf && datapath::release_all_links(&args.bpf_pin_dir)? {
        log::info!("kernel datapath: released the BPF links an earlier run pinned in {}", args.bpf_pin_dir.display());
    }
    let dataplane = match setup {
        _ if matches!(cfg.backend, Backend::Udp { .. }) => {
            let Backend::Udp { port } = cfg.backend else { unreachable!("matched above") };
            start_udp(&nl, &args, &cfg, &own, std::net::SocketAddrV4::new(underlay.iface_ip, port), mtu, &health).await?
        }
        Some((vni, _, overlay, _, direct_routing)) if !bpf => {
            nl.set_only_addr(overlay.index, own.network_addr()).await?;
            log::info!("kernel vxlan device {} programmed per peer as flanneld does (neighbour, FDB, route)", overlay.name);
            Dataplane::KernelVxlan { dev: overlay, vni, direct: direct_routing.then_some(underlay.link.index) }
        }
        Some((vni, port, overlay, vtep_mac, direct_routing)) => {
            nl.set_only_addr(overlay.index, own.network_addr()).await?;
            let mut dp = Datapath::load(Some(&args.bpf_pin_dir))?;
            spawn_kernel_logs(&mut dp);
            health.metrics.set_pin_dir(args.bpf_pin_dir.join(crate::datapath::PIN_LAYOUT));
            dp.set_config(&DatapathConfig {
                vni,
                local_ip: underlay.iface_ip.octets(),
                underlay_ifindex: underlay.link.index,
                overlay_ifindex: overlay.index,
                vtep_mac,
                port,
                flags: if args.vxlan_udp_csum { weft_common::cfg_flags::UDP_CSUM } else { 0 },
                underlay_mtu: underlay.link.mtu,
            })?;
            dp.attach_tc(prog_names::ENCAP, &overlay.name, overlay.index, TcAttachType::Egress)?;
            dp.attach_tc(prog_names::DECAP, &underlay.link.name, underlay.link.index, TcAttachType::Ingress)?;
            if args.xdp_decap {
                dp.attach_xdp(&underlay.link.name, underlay.link.index)?;
            } else if dp.release_links(prog_names::XDP_DECAP)? {
                log::info!("detached the XDP decap an earlier run left on {} (no --xdp-decap now)", underlay.link.name);
            }
            log::info!("datapath attached: encap on {} egress, decap on {} ingress{}; VNI {vni}, port {port}, VtepMAC {}",
                overlay.name, underlay.link.name, if args.xdp_decap { " (XDP + TC)" } else { " (TC)" }, format_mac(&vtep_mac));
            if direct_routing {
                log::info!("DirectRouting: peers on this L2 segment are routed via their PublicIP on {}, the others through VXLAN", underlay.link.name);
            }
            let direct = direct_routing.then_some(underlay.link.index);
            let fast = fast_path_setting(&args, &mut dp, direct_routing)?;
            // weft_decap delivers routed peer-pod packets itself here.
            if dp.release_links(prog_names::TO_POD)? {
                log::info!("released the weft_to_pod link an earlier host-gw run left on {}", underlay.link.name);
            }
            Dataplane::Vxlan { dp, vni, overlay, direct, fast }
        }
        None => {
            log::info!("host-gw: peers on this L2 segment are routed via their PublicIP on {}", underlay.link.name);
            let (dp, fast) = if bpf {
                bpffs::ensure_mounted(&args.bpf_pin_dir)?;
                let mut dp = Datapath::load(Some(&args.bpf_pin_dir))?;
                spawn_kernel_logs(&mut dp);
                health.metrics.set_pin_dir(args.bpf_pin_dir.join(crate::datapath::PIN_LAYOUT));
                // No VXLAN here: only the flags matter (kernel logs off at start).
                dp.set_config(&DatapathConfig::default())?;
                let fast = fast_path_setting(&args, &mut dp, true)?;
                receiving_fast_path(&mut dp, fast.is_some(), &underlay.link)?;
                (Some(dp), fast)
            } else {
                (None, None)
            };
            Dataplane::HostGw { underlay: underlay.link.index, skipped: HashSet::new(), dp, fast }
        }
    };

    subnet_env::write(&args.subnet_file, cfg.network, own, mtu)?;
    log::info!("wrote {} (subnet {own}, MTU {mtu})", args.subnet_file.display());
    health.subnet_env_written();

    let mut node = Node { store, nl, dataplane, cfg, own, attrs, leases: BTreeMap::new(), warned: HashMap::new(), synced: false, health };
    let res = node.event_loop(&args).await;
    if args.cleanup_on_exit {
        node.cleanup().await;
    } else {
        log::info!("leaving lease {own}, routes and programs in place (pass --cleanup-on-exit to remove them)");
    }
    res
}

/// The udp backend: the TUN and its workers, the TUN's address (our
/// subnet's network address /32), MTU and one route for the whole network,
/// as flannel sets up `flannel0`.
async fn start_udp(nl: &Netlink, args: &Args, cfg: &NetConfig, own: &Ipv4Net, bind: std::net::SocketAddrV4, mtu: u32, health: &Health) -> Result<Dataplane> {
    let path = crate::udp::UdpPath::start(&crate::udp::UdpConfig { bind, tun_mtu: mtu, workers: args.udp_workers, offload: !args.udp_no_offload, pin: args.udp_per_cpu })?;
    let dev = nl.link_by_name(&path.name).await?.with_context(|| format!("TUN {} vanished", path.name))?;
    nl.set_only_addr(dev.index, own.network_addr()).await?;
    nl.set_link_up(dev.index, &path.name, mtu).await?;
    netlink::disable_ipv6(&path.name);
    nl.replace_dev_route(&cfg.network, dev.index).await?;
    health.metrics.set_udp_stats(path.stats.clone());
    log::info!("udp: {} up (address {}/32, MTU {mtu}, route {} dev {}); peers reached at their PublicIP, port {}",
        path.name, own.network_addr(), cfg.network, path.name, bind.port());
    Ok(Dataplane::Udp { path, dev: dev.index, peers: BTreeMap::new() })
}

/// Prints what the kernel programs log (aya-log), when `weftd log-level
/// debug` has switched them on; idle otherwise.
fn spawn_kernel_logs(dp: &mut Datapath) {
    let Some(logger) = dp.take_logger() else { return };
    // SAFETY: the logger owns its ring buffer's fd, open and unchanged for
    // as long as the AsyncFd (which owns the logger) lives.
    let mut fd = match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => return log::warn!("kernel-side logs unavailable: {}", e.into_parts().1),
    };
    tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => return log::warn!("kernel-side logs stopped: {e}"),
            }
        }
    });
}

/// `--datapath`: whether weft's BPF programs carry the traffic. `auto`
/// probes the kernel and falls back to the kernel's own datapath, saying why.
fn use_bpf(args: &Args) -> Result<bool> {
    match (args.datapath.as_str(), datapath::probe()) {
        ("kernel", _) => {
            log::info!("datapath: kernel (--datapath kernel): the kernel's vxlan device and routes, as flanneld programs them");
            Ok(false)
        }
        ("bpf", Err(why)) => bail!("--datapath bpf, but this kernel cannot run weft's BPF datapath: {why}"),
        (_, Ok(())) => {
            log::info!("datapath: bpf (the kernel passed the probe: TCX links, programs verified)");
            Ok(true)
        }
        (_, Err(why)) => {
            log::warn!("datapath: kernel fallback, because {why}; traffic is carried as flanneld carries it");
            Ok(false)
        }
    }
}

/// The fast path, unless --no-fast-path: pod endpoints always, the bridge
/// program where peers are routed host-gw style (the host-gw backend, vxlan
/// with DirectRouting). What is off is released, so the flags say what runs.
fn fast_path_setting(args: &Args, dp: &mut Datapath, routed_peers: bool) -> Result<Option<FastPath>> {
    if !(routed_peers && !args.no_fast_path) && dp.release_links(prog_names::FWD)? {
        log::info!("released the weft_fwd link an earlier run left on the pod bridge");
    }
    if args.no_fast_path {
        let n = crate::endpoints::PodEndpoints::clear(dp)?;
        if n > 0 {
            log::info!("fast path off: removed {n} pod endpoints an earlier run registered");
        }
        return Ok(None);
    }
    let fast = FastPath::new(routed_peers.then_some(args.pod_bridge.as_str()), &args.endpoints_dir);
    log::info!("fast path on: pod endpoints from {}{}", fast.endpoints_dir().display(),
        if routed_peers { format!(", weft_fwd on {}", args.pod_bridge) } else { String::new() });
    Ok(Some(fast))
}

/// host-gw's receiving half of the fast path: `weft_to_pod` on the
/// underlay's ingress while the fast path is on (a peer pod's packet for a
/// registered local pod goes straight into it), released when it is off.
/// Attaching is not fatal: without it the stack delivers the same packets.
fn receiving_fast_path(dp: &mut Datapath, on: bool, underlay: &netlink::Link) -> Result<()> {
    if !on {
        if dp.release_links(prog_names::TO_POD)? {
            log::info!("fast path off: released the weft_to_pod link an earlier run left on {}", underlay.name);
        }
        return Ok(());
    }
    match dp.attach_tc(prog_names::TO_POD, &underlay.name, underlay.index, TcAttachType::Ingress) {
        Ok(()) => log::info!("fast path: weft_to_pod on {} ingress: peer pods' packets for registered local pods go straight into them", underlay.name),
        Err(e) => log::warn!("fast path: cannot attach weft_to_pod to {}; the stack delivers peer pods' packets instead: {e:#}", underlay.name),
    }
    Ok(())
}

/// What carries our traffic, per backend.
enum Dataplane {
    /// BPF VXLAN: the programs' maps, and the overlay device the routes use.
    /// `direct`: with DirectRouting, the underlay for peers on our segment;
    /// `fast`: the fast path for those peers.
    Vxlan { dp: Datapath, vni: u32, overlay: netlink::Link, direct: Option<u32>, fast: Option<FastPath> },
    /// The kernel's vxlan device programmed as flanneld does (the fallback).
    KernelVxlan { dev: netlink::Link, vni: u32, direct: Option<u32> },
    /// Plain routes via the peers' PublicIPs on the underlay; `skipped`
    /// holds the peers off our L2 segment (warned about once). `dp` holds
    /// the fast path's map and program (none with the kernel datapath).
    HostGw { underlay: u32, skipped: HashSet<Ipv4Net>, dp: Option<Datapath>, fast: Option<FastPath> },
    /// The udp path (TUN + UDP workers; no BPF); `peers` as last given to it.
    Udp { path: crate::udp::UdpPath, dev: u32, peers: BTreeMap<Ipv4Net, std::net::Ipv4Addr> },
}

struct Node {
    store: Store,
    nl: Netlink,
    dataplane: Dataplane,
    cfg: NetConfig,
    own: Ipv4Net,
    attrs: LeaseAttrs,
    /// Every lease as last seen in the store: key suffix -> raw value.
    leases: BTreeMap<String, Vec<u8>>,
    warned: HashMap<String, String>,
    /// A snapshot has arrived: before that, "no leases" means "not known yet".
    synced: bool,
    health: Arc<Health>,
}

impl Node {
    async fn event_loop(&mut self, args: &Args) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(4096);
        let watcher = tokio::spawn(self.store.clone().watch_leases(tx));
        let ttl = args.subnet_lease_ttl;
        let margin = (args.subnet_lease_renew_margin as i64 * 60).min(ttl / 2);
        let renew_every = Duration::from_secs((ttl - margin) as u64);
        let mut renew_at = Instant::now() + renew_every;
        let mut resync = tokio::time::interval(RESYNC);
        // Route changes: put back a weft route someone removed, re-decide
        // on-link peers; link changes: the pod bridge for the fast path.
        let mut routes_changed = netlink::net_changes()?;
        // weft-cni's endpoint records: a pod added or deleted is noticed
        // within a second (its veth's link event may come before its record).
        let mut records = tokio::time::interval(Duration::from_secs(1));
        let mut records_seen = crate::endpoints::fingerprint(&args.endpoints_dir);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let res = loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break Err(anyhow::anyhow!("lease watch ended")) };
                    let mut own_gone = self.apply_event(ev);
                    // Take everything already queued, then reconcile once.
                    while let Ok(ev) = rx.try_recv() {
                        own_gone |= self.apply_event(ev);
                    }
                    if own_gone {
                        if let Err(e) = self.reclaim(ttl).await {
                            break Err(e);
                        }
                    }
                    self.reconcile().await;
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    match self.store.renew(&self.own, &self.attrs, ttl).await {
                        Ok(()) => {
                            log::info!("renewed lease {} for {ttl} s", self.own);
                            self.health.metrics.lease_renewal_counted();
                            renew_at = Instant::now() + renew_every;
                        }
                        Err(e) => {
                            let retry = Duration::from_secs(60).min(Duration::from_secs((ttl / 10).max(1) as u64));
                            log::warn!("renewing lease {} failed, retrying in {retry:?}: {e:#}", self.own);
                            crate::metrics::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
                _ = resync.tick() => if self.synced { self.reconcile().await },
                _ = records.tick() => {
                    let now = crate::endpoints::fingerprint(&args.endpoints_dir);
                    if now != records_seen && self.synced {
                        records_seen = now;
                        self.reconcile().await;
                    }
                }
                Some(()) = routes_changed.next() => {
                    while routes_changed.try_recv().is_ok() {}
                    if self.synced { self.reconcile().await }
                }
                _ = term.recv() => { log::info!("SIGTERM: exiting"); break Ok(()) }
                _ = int.recv() => { log::info!("SIGINT: exiting"); break Ok(()) }
            }
        };
        watcher.abort();
        res
    }

    /// Applies one store event; true when it says our own lease is gone.
    fn apply_event(&mut self, ev: LeaseEvent) -> bool {
        let own_key = self.own.to_key();
        match ev {
            LeaseEvent::Snapshot(kvs) => {
                self.leases = kvs.into_iter().collect();
                self.synced = true;
                !self.leases.contains_key(&own_key)
            }
            LeaseEvent::Put(k, v) => {
                self.leases.insert(k, v);
                false
            }
            LeaseEvent::Delete(k) => {
                self.leases.remove(&k);
                k == own_key
            }
        }
    }

    /// Our lease was deleted (by an operator, or it expired while etcd was
    /// away): claim the same subnet again so our pods keep their addresses.
    async fn reclaim(&mut self, ttl: i64) -> Result<()> {
        log::warn!("our lease {} is gone from the store (deleted or expired); claiming it again", self.own);
        self.health.lease_held(false);
        self.health.stage(format!("our lease {} was lost; claiming it again", self.own));
        if self.store.create(&self.own, &self.attrs, ttl).await? {
            log::info!("re-acquired lease {}", self.own);
            self.health.lease_held(true);
            self.health.metrics.lease_renewed();
            self.leases.insert(self.own.to_key(), serde_json::to_vec(&self.attrs)?);
            Ok(())
        } else {
            bail!("subnet {} was taken by another node after our lease was lost; restart weftd to choose a new subnet", self.own)
        }
    }

    async fn reconcile(&mut self) {
        let t = std::time::Instant::now();
        let (peers, res) = match &mut self.dataplane {
            Dataplane::Vxlan { dp, vni, overlay, direct, fast } => {
                let want = reconcile::desired_vxlan(&self.leases, &self.own, &self.cfg, *vni, &mut self.warned);
                let n = want.len();
                if let Some(f) = fast {
                    f.ensure(dp, &self.nl).await;
                }
                match direct {
                    None => (n, reconcile::apply(dp, &self.nl, overlay.index, &want, &want.keys().copied().collect()).await),
                    Some(underlay) => (n, async {
                        // Decided per peer on every reconcile: a route change moves a peer.
                        let (tunnel, direct) = reconcile::split_direct(&self.nl, *underlay, want.clone()).await?;
                        let mut ch = reconcile::apply(dp, &self.nl, overlay.index, &want, &tunnel.keys().copied().collect()).await?;
                        let d = reconcile::apply_host_gw(&self.nl, *underlay, &direct, &mut HashSet::new(), fast.is_some().then_some(&mut *dp)).await?;
                        ch.added += d.added;
                        ch.removed += d.removed;
                        ch.errors += d.errors;
                        Ok(ch)
                    }.await),
                }
            }
            Dataplane::KernelVxlan { dev, vni, direct } => {
                let want = reconcile::desired_vxlan(&self.leases, &self.own, &self.cfg, *vni, &mut self.warned);
                let n = want.len();
                (n, async {
                    let (tunnel, routed) = match direct {
                        Some(underlay) => reconcile::split_direct(&self.nl, *underlay, want).await?,
                        None => (want, BTreeMap::new()),
                    };
                    let mut ch = kernel_vxlan::apply(&self.nl, dev.index, &tunnel).await?;
                    if let Some(underlay) = direct {
                        let d = reconcile::apply_host_gw(&self.nl, *underlay, &routed, &mut HashSet::new(), None).await?;
                        ch.added += d.added;
                        ch.removed += d.removed;
                        ch.errors += d.errors;
                    }
                    Ok(ch)
                }.await)
            }
            Dataplane::HostGw { underlay, skipped, dp, fast } => {
                let want = reconcile::desired_host_gw(&self.leases, &self.own, &self.cfg, &mut self.warned);
                let dp = match (dp, fast.as_mut()) {
                    (Some(dp), Some(f)) => {
                        f.ensure(dp, &self.nl).await;
                        Some(dp)
                    }
                    _ => None,
                };
                (want.len(), reconcile::apply_host_gw(&self.nl, *underlay, &want, skipped, dp).await)
            }
            Dataplane::Udp { path, dev, peers } => {
                let want = reconcile::desired_udp(&self.leases, &self.own, &self.cfg, &mut self.warned);
                let n = want.len();
                let mut ch = reconcile::Changes {
                    added: want.iter().filter(|(k, v)| peers.get(k) != Some(v)).count(),
                    removed: peers.keys().filter(|k| !want.contains_key(k)).count(),
                    errors: 0,
                };
                let list: Vec<_> = want.iter().map(|(net, ip)| (*net, crate::udp::peer_addr(*ip, path.port))).collect();
                path.peers.store(crate::udp::PeerMap::new(&list));
                *peers = want;
                (n, async {
                    // The one route for the network: put back if someone removed it.
                    let have = self.nl.routes_via(*dev).await?;
                    if !have.iter().any(|(d, g)| *d == self.cfg.network && g.is_none()) {
                        ch.tally(self.nl.replace_dev_route(&self.cfg.network, *dev).await, true);
                    }
                    Ok(ch)
                }.await)
            }
        };
        // Every backend but udp (whose TUN route covers the network): a
        // subnet nobody holds is unreachable, not routed out of the node.
        let res = match (res, &self.dataplane) {
            (Ok(mut ch), Dataplane::Vxlan { .. } | Dataplane::KernelVxlan { .. } | Dataplane::HostGw { .. }) => {
                match self.nl.ensure_unreachable(&self.cfg.network).await {
                    Ok(added) => ch.added += added as usize,
                    Err(e) => ch.tally(Err(e), true),
                }
                Ok(ch)
            }
            (res, _) => res,
        };
        self.health.metrics.leases(self.leases.len(), peers);
        let (added, removed) = res.as_ref().map(|ch| (ch.added, ch.removed)).unwrap_or_default();
        self.health.metrics.reconciled(t.elapsed().as_secs_f64(), matches!(&res, Ok(ch) if ch.errors == 0), added, removed);
        match res {
            Ok(ch) => {
                if ch != reconcile::Changes::default() {
                    log::info!("reconciled {peers} peers in {:?}: {} added/updated, {} removed, {} errors", t.elapsed(), ch.added, ch.removed, ch.errors);
                }
                self.health.dataplane((ch.errors > 0).then(|| format!("{} errors in the last reconcile (retried every {RESYNC:?})", ch.errors)));
            }
            Err(e) => {
                log::error!("reconcile failed (will retry): {e:#}");
                self.health.dataplane(Some(format!("reconcile failed: {e:#}")));
            }
        }
    }

    async fn cleanup(&mut self) {
        log::info!("--cleanup-on-exit: removing lease {}, routes, devices, programs and pins", self.own);
        if let Err(e) = self.store.delete(&self.own).await {
            log::warn!("{e:#}");
        }
        if let Err(e) = self.nl.delete_unreachable(&self.cfg.network).await {
            log::warn!("{e:#}");
        }
        match &self.dataplane {
            Dataplane::KernelVxlan { dev, direct, .. } => {
                if let Some(underlay) = direct {
                    for (net, _) in self.nl.routes_via(*underlay).await.unwrap_or_default() {
                        if let Err(e) = self.nl.delete_weft_route(&net, *underlay).await {
                            log::warn!("{e:#}");
                        }
                    }
                }
                // Deleting the device removes its neighbours, FDB and routes.
                if let Err(e) = self.nl.delete_link(dev.index).await {
                    log::warn!("{e:#}");
                }
            }
            Dataplane::Vxlan { dp, overlay, direct, .. } => {
                if let Some(underlay) = direct {
                    for (net, _) in self.nl.routes_via(*underlay).await.unwrap_or_default() {
                        if let Err(e) = self.nl.delete_weft_route(&net, *underlay).await {
                            log::warn!("{e:#}");
                        }
                    }
                }
                // Deleting the device removes its routes and detaches its links.
                if let Err(e) = self.nl.delete_link(overlay.index).await {
                    log::warn!("{e:#}");
                }
                if let Err(e) = dp.remove_pins() {
                    log::warn!("{e:#}");
                }
            }
            // Closing the TUN (when the path drops) removes it and its route.
            Dataplane::Udp { .. } => {}
            Dataplane::HostGw { underlay, dp, .. } => {
                match self.nl.routes_via(*underlay).await {
                    Ok(routes) => {
                        for (net, _) in routes {
                            if let Err(e) = self.nl.delete_weft_route(&net, *underlay).await {
                                log::warn!("{e:#}");
                            }
                        }
                    }
                    Err(e) => log::warn!("{e:#}"),
                }
                // Unpinning the links detaches the fast path.
                if let Some(Err(e)) = dp.as_ref().map(|d| d.remove_pins()) {
                    log::warn!("{e:#}");
                }
            }
        }
    }
}
