//! weft's shortcuts past the host's forwarding path, on unless
//! `--no-fast-path`: per registered pod (`endpoints.rs`, weft-cni's and
//! `adopted_pods.rs`, flannel's CNI plugin's: decap straight into
//! the pod, encap or forward right at its veth), and for pods without a
//! record, the host-gw fast path (`weft_fwd`, see `ebpf/src/fwd.rs`) on TC
//! ingress of the pod bridge (flannel's CNI bridge, `cni0` by default),
//! where every pod packet bound for another node enters the host. The
//! bridge appears when the first pod is created, usually after weftd
//! started, and is recreated if someone deletes it, so the attachments are
//! checked on every reconcile (link and route events, records, the resync).
use std::path::Path;

use aya::programs::TcAttachType;
use weft_common::prog_names;

use anyhow::Result;

use super::{adopted_pods::AdoptedPods, endpoints::PodEndpoints, Datapath};
use crate::{
    cli::Args,
    net::netlink::{self, Netlink},
};

pub struct FastPath {
    /// `weft_fwd` on the bridge, where peers are routed host-gw style.
    bridge: Option<BridgeAttach>,
    pods: PodEndpoints,
}

impl FastPath {
    /// The fast path, unless --no-fast-path: pod endpoints always, the bridge
    /// program where peers are routed host-gw style (the host-gw backend, vxlan
    /// with DirectRouting). What is off is released, so the flags say what runs.
    pub fn from_args(args: &Args, dp: &mut Datapath, routed_peers: bool) -> Result<Option<FastPath>> {
        if (!routed_peers || args.no_fast_path) && dp.release_links(prog_names::FWD)? {
            log::info!("released the weft_fwd link an earlier run left on the pod bridge");
        }
        if args.no_fast_path {
            let n = PodEndpoints::clear(dp)?;
            if n > 0 {
                log::info!("fast path off: removed {n} pod endpoints an earlier run registered");
            }
            return Ok(None);
        }
        // Without it only flannel-CNI pods miss the fast path (the stack carries them).
        let adopted = AdoptedPods::new(&args.cni_store, &args.pod_bridge, &args.subnet_file)
            .map_err(|e| log::warn!("fast path: flannel-CNI pods will not be registered: {e:#}"))
            .ok();
        let adopting = adopted.as_ref().map(|a| format!(" and flannel-CNI pods (host-local's {}, veths on {})", a.store().display(), args.pod_bridge));
        let fast = FastPath::new(routed_peers.then_some(args.pod_bridge.as_str()), &args.endpoints_dir, adopted);
        log::info!(
            "fast path on: pod endpoints from {}{}{}",
            fast.endpoints_dir().display(),
            adopting.unwrap_or_default(),
            if routed_peers { format!(", weft_fwd on {}", args.pod_bridge) } else { String::new() }
        );
        Ok(Some(fast))
    }

    pub fn new(bridge: Option<&str>, endpoints_dir: &Path, adopted: Option<AdoptedPods>) -> FastPath {
        FastPath { bridge: bridge.map(BridgeAttach::new), pods: PodEndpoints::new(endpoints_dir, adopted) }
    }

    pub fn endpoints_dir(&self) -> &Path {
        self.pods.dir()
    }

    /// Brings both up to date; failures are logged, never fatal (the stack
    /// carries the same traffic without them).
    pub async fn ensure(&mut self, dp: &mut Datapath, nl: &Netlink) {
        if let Some(b) = &mut self.bridge {
            b.ensure(dp, nl).await;
        }
        match self.pods.reconcile(dp, nl).await {
            Ok(ch) if ch != Default::default() => {
                log::info!("pod endpoints: {} added/updated, {} removed, {} errors", ch.added, ch.removed, ch.errors)
            }
            Ok(_) => {}
            Err(e) => log::warn!("pod endpoints: {e:#}"),
        }
    }
}

struct BridgeAttach {
    bridge: String,
    /// The bridge's ifindex while `weft_fwd` is attached to it.
    attached: Option<u32>,
    /// The last problem logged, so a lasting one is logged once.
    reported: Option<String>,
}

impl BridgeAttach {
    fn new(bridge: &str) -> BridgeAttach {
        BridgeAttach { bridge: bridge.to_string(), attached: None, reported: None }
    }

    fn report(&mut self, msg: String) {
        if self.reported.as_ref() != Some(&msg) {
            log::warn!("{msg}");
            self.reported = Some(msg);
        }
    }

    /// Attaches `weft_fwd` to the bridge if the bridge exists and the
    /// program is not on it yet. Failures are logged, never fatal: without
    /// the fast path the stack forwards the same packets.
    async fn ensure(&mut self, dp: &mut Datapath, nl: &Netlink) {
        let link = match nl.link_by_name(&self.bridge).await {
            Ok(l) => l,
            Err(e) => return self.report(format!("fast path: looking up the pod bridge {}: {e:#}", self.bridge)),
        };
        match link {
            None => {
                if self.attached.take().is_some() {
                    log::info!("fast path: pod bridge {} is gone; waiting for it to come back", self.bridge);
                } else if self.reported.is_none() {
                    log::info!("fast path: waiting for the pod bridge {} (created with the first pod)", self.bridge);
                    self.reported = Some(String::new());
                }
            }
            Some(l) if self.attached == Some(l.index) => {}
            Some(l) => match dp.attach_tc(prog_names::FWD, &l.name, l.index, TcAttachType::Ingress) {
                Ok(()) => {
                    log::info!(
                        "fast path: weft_fwd attached to {} (#{}) ingress: pod traffic to host-gw peers leaves by the FIB's next hop directly",
                        l.name,
                        l.index
                    );
                    self.attached = Some(l.index);
                    self.reported = None;
                }
                Err(e) => self.report(format!("fast path: cannot attach weft_fwd to {}; the stack forwards instead: {e:#}", l.name)),
            },
        }
    }
}

/// host-gw's receiving half of the fast path: `weft_to_pod` on the
/// underlay's ingress while the fast path is on (a peer pod's packet for a
/// registered local pod goes straight into it), released when it is off.
/// Attaching is not fatal: without it the stack delivers the same packets.
pub fn receiving_half(dp: &mut Datapath, on: bool, underlay: &netlink::Link) -> Result<()> {
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
