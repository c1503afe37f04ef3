//! The event loop: reconcile the backend with the leases on every lease
//! event, on route and link changes (someone removed a weft route, a peer
//! moved on or off our segment, the pod bridge appeared), when weft-cni's
//! endpoint records change, when a pod's address is configured (a
//! flannel-CNI pod to adopt), and every 10 s to heal what someone changed by
//! hand; the egress rules (`--ip-masq`) on every netfilter change and on
//! the same resync. Our own lease is kept alive by the subnet manager, not here.
use std::{sync::Arc, time::Duration};

use futures::StreamExt;

use crate::{
    backend::{Backend, Changes, Warned},
    cli::Args,
    dataplane::endpoints,
    egress::Egress,
    health::Health,
    net::{netlink, peer_netns},
    subnet::{LeaseEvent, LeaseWatch, Leases},
};

const RESYNC: Duration = Duration::from_secs(10);

pub struct EventLoop {
    backend: Box<dyn Backend>,
    /// Every lease as last seen in the store.
    leases: Leases,
    warned: Warned,
    /// A snapshot has arrived: before that, "no leases" means "not known yet".
    synced: bool,
    /// Peers the last successful reconcile programmed.
    peers: usize,
    health: Arc<Health>,
    /// flannel's masquerade/forward rules (None: none wanted).
    egress: Option<Egress>,
}

impl EventLoop {
    pub fn new(backend: Box<dyn Backend>, health: Arc<Health>, egress: Option<Egress>) -> EventLoop {
        EventLoop { backend, leases: Leases::new(), warned: Warned::default(), synced: false, peers: 0, health, egress }
    }

    /// What our lease announces (the backend's attributes).
    pub fn lease_attrs(&self) -> &crate::subnet::lease::LeaseAttrs {
        self.backend.lease_attrs()
    }

    pub async fn run(&mut self, args: &Args, mut watch: LeaseWatch, stop: &mut super::stop::Stop) -> anyhow::Result<()> {
        let mut resync = tokio::time::interval(RESYNC);
        // Route changes: put back a weft route someone removed, re-decide
        // on-link peers; link changes: the pod bridge for the fast path.
        let mut routes_changed = netlink::net_changes()?;
        // weft-cni's endpoint records: a pod added or deleted is noticed
        // within a second (its veth's link event may come before its record).
        let mut records = tokio::time::interval(Duration::from_secs(1));
        let mut records_seen = endpoints::fingerprint(&args.endpoints_dir);
        // An address configured in a pod's namespace: a flannel-CNI pod
        // becomes adoptable (its veth's link event came before its address).
        let mut pod_addrs = peer_netns::peer_addr_changes()
            .map_err(|e| log::warn!("no address events from pods' namespaces (flannel-CNI pods are found on link events and the resync): {e:#}"))
            .ok();
        loop {
            tokio::select! {
                ev = watch.events.recv() => {
                    let Some(ev) = ev else { anyhow::bail!("lease watch ended") };
                    self.apply_event(ev);
                    // Take everything already queued, then reconcile once;
                    // not before the first snapshot: a reconcile on part of
                    // the leases would take the others' entries away (and
                    // the backend attaches its programs after its first one).
                    while let Ok(ev) = watch.events.try_recv() {
                        self.apply_event(ev);
                    }
                    if self.synced { self.reconcile().await }
                }
                Some(e) = watch.fatal.recv() => return Err(e),
                _ = resync.tick() => {
                    if self.synced { self.reconcile().await }
                    if let Some(e) = &mut self.egress { e.ensure() }
                }
                // Someone changed netfilter (or we did): put our rules back if they differ.
                () = async { match &mut self.egress { Some(e) => e.changed().await, None => std::future::pending().await } } => {
                    if let Some(e) = &mut self.egress { e.ensure() }
                }
                _ = records.tick() => {
                    let now = endpoints::fingerprint(&args.endpoints_dir);
                    if now != records_seen && self.synced {
                        records_seen = now;
                        self.reconcile().await;
                    }
                }
                Some(()) = async { match &mut pod_addrs { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    if let Some(s) = &mut pod_addrs { while s.try_recv().is_ok() {} }
                    if self.synced { self.reconcile().await }
                }
                Some(()) = routes_changed.next() => {
                    while routes_changed.try_recv().is_ok() {}
                    if self.synced { self.reconcile().await }
                }
                s = stop.signalled() => { log::info!("{s}: exiting"); return Ok(()) }
            }
        }
    }

    fn apply_event(&mut self, ev: LeaseEvent) {
        match ev {
            LeaseEvent::Snapshot(kvs) => {
                self.leases = kvs.into_iter().collect();
                self.synced = true;
            }
            LeaseEvent::Put(k, v) => {
                self.leases.insert(k, v);
            }
            LeaseEvent::Delete(k) => {
                self.leases.remove(&k);
            }
        }
    }

    async fn reconcile(&mut self) {
        let t = std::time::Instant::now();
        let res = self.backend.reconcile(&self.leases, &mut self.warned).await;
        if let Ok(r) = &res {
            self.peers = r.peers;
        }
        let ch = res.as_ref().map(|r| &r.changes);
        let (added, removed) = ch.map(|c| (c.added, c.removed)).unwrap_or_default();
        self.health.metrics.leases(self.leases.len(), self.peers);
        self.health.metrics.reconciled(t.elapsed().as_secs_f64(), matches!(ch, Ok(c) if c.errors == 0), added, removed);
        match ch {
            Ok(ch) => {
                if *ch != Changes::default() {
                    log::info!(
                        "reconciled {} peers in {:?}: {} added/updated, {} removed, {} errors",
                        self.peers,
                        t.elapsed(),
                        ch.added,
                        ch.removed,
                        ch.errors
                    );
                }
                self.health.dataplane((ch.errors > 0).then(|| format!("{} errors in the last reconcile (retried every {RESYNC:?})", ch.errors)));
            }
            Err(e) => {
                log::error!("reconcile failed (will retry): {e:#}");
                self.health.dataplane(Some(format!("reconcile failed: {e:#}")));
            }
        }
    }

    /// The backend's and the egress rules' part of `--cleanup-on-exit`
    /// (`egress_wanted`: the flags ask for egress rules, which an earlier
    /// run may have left even if this one never put them in place).
    pub async fn cleanup(&mut self, egress_wanted: bool) {
        match &mut self.egress {
            Some(e) => e.cleanup(),
            None if egress_wanted => crate::egress::remove(),
            None => {}
        }
        self.backend.cleanup().await;
    }
}
