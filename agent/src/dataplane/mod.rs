//! weft's BPF dataplane: loads the kernel programs, pins their maps,
//! attaches them, and gives typed access to the maps ([`Datapath`]). Pins
//! live under `weft_common::pins::dir(<pin-dir>)`: the version is part of the path
//! because aya reopens a pinned map without checking its layout, so a
//! change to a map's key or value must bump it. The layout is
//! `weft_common::pins` (the test harness finds the pins through it too).
//! Beside it: the bpffs mount ([`bpffs`]), reading pinned maps without
//! loading ([`pinned`]: status, metrics, log-level), the programs' logs
//! ([`kernel_logs`]), and the shortcuts past the host's forwarding path
//! ([`fast_path`], [`endpoints`], [`adopted_pods`]).
pub mod adopted_pods;
pub mod bpffs;
pub mod deadline;
pub mod endpoints;
pub mod fast_path;
pub mod kernel_logs;
pub mod pinned;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use weft_common::{
    map_names, pins, prog_names, stat, subnet_env::Ipv6Cidr, Counter, Datapath6Config, DatapathConfig, HostGw6Entry, HostGwEntry, PodEntry, Vtep6Entry,
    VtepEntry,
};

use crate::{cli::Args, health::Health, subnet::Ipv4Net};
pub use kernel_logs::KernelLogs;

/// Pins a link so it outlives weftd (flannel leaves its dataplane in place on
/// exit, and so does weft). An already pinned link was updated in place and
/// needs nothing more; without a pin directory the link is detached on drop.
fn pin_link(link: FdLink, pin: Option<&Path>) -> Result<()> {
    match pin {
        Some(p) if !p.exists() => {
            std::fs::create_dir_all(p.parent().expect("pin path has a parent"))?;
            link.pin(p).with_context(|| format!("pinning link at {}", p.display()))?;
        }
        Some(_) => {}
        None => std::mem::forget(link),
    }
    Ok(())
}

/// The kernel programs, built by build.rs from `ebpf/`.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft.bpf.o"));

/// Whether this kernel can run weft's BPF datapath: TCX links (Linux 6.6)
/// and a verifier that accepts every program (loaded, then released).
/// `Err` says what is missing, for the log line that explains the fallback.
pub fn probe() -> std::result::Result<(), String> {
    let v = aya::util::KernelVersion::current().map_err(|e| format!("cannot read the kernel version: {e}"))?;
    if v < aya::util::KernelVersion::new(6, 6, 0) {
        return Err(format!("kernel {v} has no TCX links (they came in 6.6)"));
    }
    Datapath::load(None).map(drop).map_err(|e| format!("the kernel refused weft's programs: {e:#}"))
}

/// `--datapath`: whether weft's BPF programs carry the traffic. `auto`
/// probes the kernel and falls back to the kernel's own datapath, saying why.
pub fn choose_bpf(args: &Args) -> Result<bool> {
    match (args.datapath.as_str(), probe()) {
        ("kernel", _) => {
            log::info!("datapath: kernel (--datapath kernel): the kernel's vxlan device and routes, as flanneld programs them");
            Ok(false)
        }
        ("bpf", Err(why)) => anyhow::bail!("--datapath bpf, but this kernel cannot run weft's BPF datapath: {why}"),
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

/// The BPF dataplane of a running node: bpffs mounted, programs loaded with
/// their maps pinned under `--bpf-pin-dir` (reused if there), their logs
/// printed, and /metrics told where the counters are.
pub fn start(args: &Args, health: &Health) -> Result<Datapath> {
    let pins = bpffs::ensure_mounted(&args.bpf_pin_dir)?;
    health.pins_warning(pins.warning().map(str::to_string));
    let mut dp = Datapath::load(Some(&args.bpf_pin_dir))?;
    kernel_logs::spawn(&mut dp);
    health.metrics.set_pin_dir(args.bpf_pin_dir.clone());
    Ok(dp)
}

/// Releases every link pinned under `<pin_root>/<layout>/links` (the kernel
/// datapath must not leave a BPF program on the underlay); true if any was.
pub fn release_all_links(pin_root: &Path) -> Result<bool> {
    let dir = pins::links_dir(pin_root);
    let any = std::fs::read_dir(&dir).map(|d| d.count() > 0).unwrap_or(false);
    if any {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(any)
}

pub struct Datapath {
    ebpf: Ebpf,
    vteps: LpmTrie<MapData, [u8; 4], VtepEntry>,
    config: Array<MapData, DatapathConfig>,
    stats: PerCpuArray<MapData, Counter>,
    hostgw: LpmTrie<MapData, [u8; 4], HostGwEntry>,
    pods: HashMap<MapData, [u8; 4], PodEntry>,
    vtep_ips: HashMap<MapData, [u8; 4], u32>,
    vteps6: LpmTrie<MapData, [u8; 16], Vtep6Entry>,
    config6: Array<MapData, Datapath6Config>,
    pods6: HashMap<MapData, [u8; 16], PodEntry>,
    vtep_ips6: HashMap<MapData, [u8; 16], u32>,
    hostgw6: LpmTrie<MapData, [u8; 16], HostGw6Entry>,
    /// weftd's deadline ([`deadline`]).
    deadline: Array<MapData, u64>,
    /// Moving it on while weftd runs, from [`Datapath::keep_deadline`] on.
    deadline_refresher: Option<deadline::Refresher>,
    /// Reader of the programs' aya-log ring buffer, until the agent takes it.
    logger: Option<aya_log::EbpfLogger<KernelLogs>>,
    pin_dir: Option<PathBuf>,
}

impl Datapath {
    /// Loads the programs; with `pin_dir`, maps are pinned there (and reused
    /// if already pinned, so a restart keeps every entry).
    pub fn load(pin_dir: Option<&Path>) -> Result<Datapath> {
        let mut loader = EbpfLoader::new();
        let dir = pin_dir.map(pins::dir);
        let paths: Vec<(&str, PathBuf)> = match &dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                map_names::ALL.iter().map(|n| (*n, d.join(n))).collect()
            }
            None => vec![],
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(BPF_OBJECT).context("loading weft's eBPF object (verifier log above, if any)")?;
        let vteps = LpmTrie::try_from(ebpf.take_map(map_names::VTEPS).context("map weft_vteps missing")?)?;
        let config = Array::try_from(ebpf.take_map(map_names::CONFIG).context("map weft_config missing")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map(map_names::STATS).context("map weft_stats missing")?)?;
        let hostgw = LpmTrie::try_from(ebpf.take_map(map_names::HOSTGW).context("map weft_hostgw missing")?)?;
        let pods = HashMap::try_from(ebpf.take_map(map_names::PODS).context("map weft_pods missing")?)?;
        let vtep_ips = HashMap::try_from(ebpf.take_map(map_names::VTEP_IPS).context("map weft_vtep_ips missing")?)?;
        let vteps6 = LpmTrie::try_from(ebpf.take_map(map_names::VTEPS6).context("map weft_vteps6 missing")?)?;
        let config6 = Array::try_from(ebpf.take_map(map_names::CONFIG6).context("map weft_config6 missing")?)?;
        let pods6 = HashMap::try_from(ebpf.take_map(map_names::PODS6).context("map weft_pods6 missing")?)?;
        let vtep_ips6 = HashMap::try_from(ebpf.take_map(map_names::VTEP_IPS6).context("map weft_vtep_ips6 missing")?)?;
        let hostgw6 = LpmTrie::try_from(ebpf.take_map(map_names::HOSTGW6).context("map weft_hostgw6 missing")?)?;
        let deadline = Array::try_from(ebpf.take_map(map_names::DEADLINE).context("map weft_deadline missing")?)?;
        let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, KernelLogs).map_err(|e| log::warn!("kernel-side logs unavailable: {e}")).ok();
        for name in [
            prog_names::ENCAP,
            prog_names::DECAP,
            prog_names::FWD,
            prog_names::FROM_POD,
            prog_names::TO_POD,
            prog_names::OVERLAY_IN,
            prog_names::ENCAP6,
            prog_names::OVERLAY_IN6,
        ] {
            let p: &mut SchedClassifier = ebpf.program_mut(name).context("program missing")?.try_into()?;
            p.load().with_context(|| format!("loading program {name}"))?;
        }
        Ok(Datapath {
            ebpf,
            vteps,
            config,
            stats,
            hostgw,
            pods,
            vtep_ips,
            vteps6,
            config6,
            pods6,
            vtep_ips6,
            hostgw6,
            deadline,
            deadline_refresher: None,
            logger,
            pin_dir: dir,
        })
    }

    /// A writer of weftd's deadline with `grace` ([`deadline::Deadline`]).
    pub fn deadline(&self, grace: std::time::Duration) -> Result<deadline::Deadline> {
        use aya::maps::IterableMap;
        deadline::Deadline::new(self.deadline.map(), grace)
    }

    /// Moves weftd's deadline to now + `grace` and keeps moving it on while
    /// this datapath lives (every backend with programs calls it, right
    /// before they attach: programs an earlier weftd left standing aside
    /// carry traffic again from here on, with the maps just filled). Once;
    /// later calls change nothing.
    pub fn keep_deadline(&mut self, grace: std::time::Duration) -> Result<()> {
        if self.deadline_refresher.is_some() {
            return Ok(());
        }
        let mut d = self.deadline(grace)?;
        d.refresh()?;
        if grace.is_zero() {
            log::info!("--datapath-grace-secs 0: weft's programs never stand aside, also long after weftd stopped");
        } else {
            log::info!(
                "weft's programs stand aside (the kernel's own path carries the traffic) once weftd has been gone {}s (--datapath-grace-secs)",
                grace.as_secs()
            );
        }
        self.deadline_refresher = Some(d.spawn_refresher());
        Ok(())
    }

    /// The reader of the programs' log records (see `ebpf/src/klog.rs`).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<KernelLogs>> {
        self.logger.take()
    }

    pub fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context("writing weft_config")
    }

    pub fn config(&self) -> Result<DatapathConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Attaches a TC program through a TCX link pinned at
    /// `<pin>/links/<prog>-<ifindex>`; an existing pinned link is updated in
    /// place (atomic program replacement, no window without a program).
    /// The program's pins for other devices are released: it runs on one
    /// device at a time (see [`Datapath::attach_tc_many`] for per-pod ones).
    pub fn attach_tc(&mut self, prog: &str, ifname: &str, ifindex: u32, at: TcAttachType) -> Result<()> {
        self.attach_tc_many(prog, ifname, ifindex, at)?;
        self.unpin_stale_links(prog, ifindex);
        Ok(())
    }

    /// As [`Datapath::attach_tc`], for a program that runs on many devices
    /// (one per pod): other devices' links are left alone.
    pub fn attach_tc_many(&mut self, prog: &str, ifname: &str, ifindex: u32, at: TcAttachType) -> Result<()> {
        let pin = self.pin_dir.as_ref().map(|d| d.join(pins::LINKS).join(pins::link_name(prog, ifindex)));
        let p: &mut SchedClassifier = self.ebpf.program_mut(prog).context("program missing")?.try_into()?;
        let id = match pin.as_ref().map(PinnedLink::from_pin) {
            Some(Ok(old)) => {
                log::info!("replacing {prog} on {ifname} through its pinned link");
                let link = FdLink::from(old).try_into().context("pinned link is not a TC link")?;
                p.attach_to_link(link).with_context(|| format!("replacing {prog} on {ifname}"))?
            }
            _ => p
                .attach_with_options(ifname, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .with_context(|| format!("attaching {prog} to {ifname} ({at:?})"))?,
        };
        let link: FdLink = p.take_link(id)?.try_into().context("TC link is not an fd link (kernel without TCX?)")?;
        pin_link(link, pin.as_deref())
    }

    /// The ifindexes `prog` has pinned links for.
    pub fn pinned_links(&self, prog: &str) -> Vec<u32> {
        let Some(dir) = self.pin_dir.as_ref().map(|d| d.join(pins::LINKS)) else { return vec![] };
        let Ok(entries) = std::fs::read_dir(&dir) else { return vec![] };
        entries.flatten().filter_map(|e| pins::link_ifindex(&e.file_name().to_string_lossy(), prog)).collect()
    }

    /// Releases `prog`'s pinned link on device `ifindex` (detaching it).
    pub fn release_link(&self, prog: &str, ifindex: u32) -> Result<()> {
        if let Some(p) = self.pin_dir.as_ref().map(|d| d.join(pins::LINKS).join(pins::link_name(prog, ifindex))) {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", p.display())),
                _ => {}
            }
        }
        Ok(())
    }

    /// Link pins of `prog` for another ifindex belong to a device that was
    /// deleted and recreated: unpinning releases those defunct links.
    fn unpin_stale_links(&self, prog: &str, ifindex: u32) {
        let Some(dir) = self.pin_dir.as_ref().map(|d| d.join(pins::LINKS)) else { return };
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let Some(idx) = pins::link_ifindex(&e.file_name().to_string_lossy(), prog) else { continue };
            if idx != ifindex {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => log::info!("released stale link pin {} (device #{idx} is gone or replaced)", e.path().display()),
                    Err(err) => log::warn!("removing stale link pin {}: {err}", e.path().display()),
                }
            }
        }
    }

    /// Releases every pinned link of `prog` an earlier run left (so a flag
    /// that is now off says what runs); true if there was one.
    pub fn release_links(&self, prog: &str) -> Result<bool> {
        let Some(dir) = self.pin_dir.as_ref().map(|d| d.join(pins::LINKS)) else { return Ok(false) };
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(false) };
        let mut any = false;
        for e in entries.flatten() {
            if pins::link_ifindex(&e.file_name().to_string_lossy(), prog).is_some() {
                std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                any = true;
            }
        }
        Ok(any)
    }

    pub fn program_mut(&mut self, name: &str) -> Option<&mut aya::programs::Program> {
        self.ebpf.program_mut(name)
    }

    /// Every VTEP entry: remote subnet -> VTEP.
    pub fn vteps(&self) -> Result<BTreeMap<Ipv4Net, VtepEntry>> {
        let mut out = BTreeMap::new();
        for kv in self.vteps.iter() {
            let (k, v) = kv.context("reading weft_vteps")?;
            out.insert(Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8)?, v);
        }
        Ok(out)
    }

    pub fn set_vtep(&mut self, net: &Ipv4Net, v: &VtepEntry) -> Result<()> {
        let key = Key::new(net.prefix_len() as u32, net.network_addr().octets());
        self.vteps.insert(&key, v, 0).with_context(|| format!("writing weft_vteps[{net}]"))
    }

    pub fn remove_vtep(&mut self, net: &Ipv4Net) -> Result<()> {
        let key = Key::new(net.prefix_len() as u32, net.network_addr().octets());
        self.vteps.remove(&key).with_context(|| format!("removing weft_vteps[{net}]"))
    }

    /// Every host-gw fast-path entry: remote subnet -> next hop.
    pub fn hostgw(&self) -> Result<BTreeMap<Ipv4Net, HostGwEntry>> {
        let mut out = BTreeMap::new();
        for kv in self.hostgw.iter() {
            let (k, v) = kv.context("reading weft_hostgw")?;
            out.insert(Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8)?, v);
        }
        Ok(out)
    }

    pub fn set_hostgw(&mut self, net: &Ipv4Net, v: &HostGwEntry) -> Result<()> {
        let key = Key::new(net.prefix_len() as u32, net.network_addr().octets());
        self.hostgw.insert(&key, v, 0).with_context(|| format!("writing weft_hostgw[{net}]"))
    }

    pub fn remove_hostgw(&mut self, net: &Ipv4Net) -> Result<()> {
        let key = Key::new(net.prefix_len() as u32, net.network_addr().octets());
        self.hostgw.remove(&key).with_context(|| format!("removing weft_hostgw[{net}]"))
    }

    /// The VTEP addresses decap accepts VXLAN from.
    pub fn vtep_ips(&self) -> Result<std::collections::BTreeSet<Ipv4Addr>> {
        self.vtep_ips.keys().map(|k| k.map(Ipv4Addr::from).context("reading weft_vtep_ips")).collect()
    }

    pub fn add_vtep_ip(&mut self, ip: Ipv4Addr) -> Result<()> {
        self.vtep_ips.insert(ip.octets(), 1, 0).with_context(|| format!("writing weft_vtep_ips[{ip}]"))
    }

    pub fn remove_vtep_ip(&mut self, ip: Ipv4Addr) -> Result<()> {
        self.vtep_ips.remove(&ip.octets()).with_context(|| format!("removing weft_vtep_ips[{ip}]"))
    }

    /// Every registered local pod: IPv4 -> endpoint.
    pub fn pods(&self) -> Result<BTreeMap<Ipv4Addr, PodEntry>> {
        let mut out = BTreeMap::new();
        for kv in self.pods.iter() {
            let (k, v) = kv.context("reading weft_pods")?;
            out.insert(Ipv4Addr::from(k), v);
        }
        Ok(out)
    }

    pub fn set_pod(&mut self, ip: Ipv4Addr, v: &PodEntry) -> Result<()> {
        self.pods.insert(ip.octets(), v, 0).with_context(|| format!("writing weft_pods[{ip}]"))
    }

    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Result<()> {
        self.pods.remove(&ip.octets()).with_context(|| format!("removing weft_pods[{ip}]"))
    }

    // ---- The IPv6 overlay (dual stack; see `ebpf/src/v6.rs`) ----------
    //
    // What the vxlan backend does for IPv6, in this order:
    // 1. `net::overlay6::ensure_device6` makes `weft-v6.<VNI>` (a kernel
    //    vxlan device over the IPv6 underlay, like flannel-v6.<VNI>); its
    //    MAC is our v6 VtepMAC (the lease's BackendV6Data).
    // 2. `set_config` as for IPv4 (the VNI and port are `weft_config`'s,
    //    also on an IPv6-only node), then [`Datapath::set_config6`] with our
    //    PublicIPv6, the device's ifindex and MAC.
    // 3. [`Datapath::attach_v6`] on the device; `weft_decap` must be on the
    //    underlay's ingress (it validates IPv6 VXLAN too; `attach_tc(DECAP, ..)`
    //    as for IPv4).
    // 4. Per peer with an IPv6 lease: `net::neigh::add_fdb` (its
    //    VtepMAC -> its PublicIPv6), [`Datapath::add_vtep_ip6`],
    //    [`Datapath::set_vtep6`], then the route `<v6 subnet> dev weft-v6.<VNI>`
    //    (no neighbour is needed: the device is NOARP and `weft_encap6`
    //    writes the MACs). Removal in the reverse order.
    // 5. Pod endpoints: `endpoints.rs` registers records' `ip6` in `weft_pods6`.

    /// Writes `weft_config6` (all zero: the IPv6 paths stay off).
    pub fn set_config6(&mut self, cfg: &Datapath6Config) -> Result<()> {
        self.config6.set(0, cfg, 0).context("writing weft_config6")
    }

    pub fn config6(&self) -> Result<Datapath6Config> {
        Ok(self.config6.get(&0, 0)?)
    }

    /// `weft_encap6` on the IPv6 overlay device's egress and
    /// `weft_overlay_in6` on its ingress (pinned links, replaced in place at
    /// a restart, as [`Datapath::attach_tc`]).
    pub fn attach_v6(&mut self, ifname: &str, ifindex: u32) -> Result<()> {
        self.attach_tc(prog_names::ENCAP6, ifname, ifindex, TcAttachType::Egress)?;
        self.attach_tc(prog_names::OVERLAY_IN6, ifname, ifindex, TcAttachType::Ingress)
    }

    /// Releases both IPv6 overlay links (IPv6 turned off); true if any was pinned.
    pub fn release_v6(&self) -> Result<bool> {
        Ok(self.release_links(prog_names::ENCAP6)? | self.release_links(prog_names::OVERLAY_IN6)?)
    }

    fn key6(net: &Ipv6Cidr) -> Key<[u8; 16]> {
        let n = net.trunc();
        Key::new(n.prefix_len as u32, n.addr.octets())
    }

    /// Every IPv6 VTEP entry: remote IPv6 subnet -> VTEP, sorted by subnet.
    pub fn vteps6(&self) -> Result<Vec<(Ipv6Cidr, Vtep6Entry)>> {
        let mut out = vec![];
        for kv in self.vteps6.iter() {
            let (k, v) = kv.context("reading weft_vteps6")?;
            out.push((Ipv6Cidr { addr: Ipv6Addr::from(k.data()), prefix_len: k.prefix_len() as u8 }, v));
        }
        out.sort_by_key(|(n, _)| (n.addr, n.prefix_len));
        Ok(out)
    }

    /// A peer's IPv6 subnet (host bits are cleared) -> its PublicIPv6 and
    /// IPv6 VtepMAC.
    pub fn set_vtep6(&mut self, net: &Ipv6Cidr, v: &Vtep6Entry) -> Result<()> {
        self.vteps6.insert(&Self::key6(net), v, 0).with_context(|| format!("writing weft_vteps6[{net}]"))
    }

    pub fn remove_vtep6(&mut self, net: &Ipv6Cidr) -> Result<()> {
        self.vteps6.remove(&Self::key6(net)).with_context(|| format!("removing weft_vteps6[{net}]"))
    }

    /// The PublicIPv6 addresses decap accepts IPv6 VXLAN from.
    pub fn vtep_ips6(&self) -> Result<std::collections::BTreeSet<Ipv6Addr>> {
        self.vtep_ips6.keys().map(|k| k.map(Ipv6Addr::from).context("reading weft_vtep_ips6")).collect()
    }

    pub fn add_vtep_ip6(&mut self, ip: Ipv6Addr) -> Result<()> {
        self.vtep_ips6.insert(ip.octets(), 1, 0).with_context(|| format!("writing weft_vtep_ips6[{ip}]"))
    }

    pub fn remove_vtep_ip6(&mut self, ip: Ipv6Addr) -> Result<()> {
        self.vtep_ips6.remove(&ip.octets()).with_context(|| format!("removing weft_vtep_ips6[{ip}]"))
    }

    /// Every registered local pod's IPv6 address -> endpoint.
    pub fn pods6(&self) -> Result<BTreeMap<Ipv6Addr, PodEntry>> {
        let mut out = BTreeMap::new();
        for kv in self.pods6.iter() {
            let (k, v) = kv.context("reading weft_pods6")?;
            out.insert(Ipv6Addr::from(k), v);
        }
        Ok(out)
    }

    pub fn set_pod6(&mut self, ip: Ipv6Addr, v: &PodEntry) -> Result<()> {
        self.pods6.insert(ip.octets(), v, 0).with_context(|| format!("writing weft_pods6[{ip}]"))
    }

    pub fn remove_pod6(&mut self, ip: Ipv6Addr) -> Result<()> {
        self.pods6.remove(&ip.octets()).with_context(|| format!("removing weft_pods6[{ip}]"))
    }

    /// Every IPv6 host-gw fast-path entry: remote IPv6 subnet -> next hop
    /// (`weft_hostgw6`, kept with the host-gw backend's IPv6 routes),
    /// sorted by subnet.
    pub fn hostgw6(&self) -> Result<Vec<(Ipv6Cidr, HostGw6Entry)>> {
        let mut out = vec![];
        for kv in self.hostgw6.iter() {
            let (k, v) = kv.context("reading weft_hostgw6")?;
            out.push((Ipv6Cidr { addr: Ipv6Addr::from(k.data()), prefix_len: k.prefix_len() as u8 }, v));
        }
        out.sort_by_key(|(n, _)| (n.addr, n.prefix_len));
        Ok(out)
    }

    /// A peer's IPv6 subnet (host bits are cleared) -> the gateway and
    /// interface of weft's route to it.
    pub fn set_hostgw6(&mut self, net: &Ipv6Cidr, v: &HostGw6Entry) -> Result<()> {
        self.hostgw6.insert(&Self::key6(net), v, 0).with_context(|| format!("writing weft_hostgw6[{net}]"))
    }

    pub fn remove_hostgw6(&mut self, net: &Ipv6Cidr) -> Result<()> {
        self.hostgw6.remove(&Self::key6(net)).with_context(|| format!("removing weft_hostgw6[{net}]"))
    }

    /// Counters summed over CPUs, indexed by `weft_common::stat`.
    pub fn stats(&self) -> Result<Vec<Counter>> {
        (0..stat::COUNT).map(|i| Ok(pinned::sum(&self.stats.get(&i, 0)?))).collect()
    }

    /// Removes the pinned maps and links (`--cleanup-on-exit`).
    pub fn remove_pins(&self) -> Result<()> {
        if let Some(d) = &self.pin_dir {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }
}
