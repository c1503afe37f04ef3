//! A subnet manager on a [`Registry`] (flannel's etcd `LocalManager`): it
//! chooses our subnet ([`super::acquire`]), and once weftd runs, one task
//! keeps our lease alive (renewal at TTL minus the margin, re-claim of the
//! same subnet when the lease is deleted or expired) while passing every
//! lease event on to the event loop, which thus never waits on the store.
use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use tokio::{sync::mpsc, time::Instant};

use super::{acquire, lease::LeaseAttrs, registry::Registry, LeaseEvent, LeaseList, LeaseWatch, SubnetManager, Subnets};
use crate::{cli::Args, health::Health, netconfig::NetConfig};

/// Our lease's TTL and when to renew it.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl_s: i64,
    pub renew_every: Duration,
}

impl Timing {
    /// `--subnet-lease-ttl`, renewed `--subnet-lease-renew-margin` minutes
    /// before it expires (at most half the TTL, so a short TTL still renews).
    pub fn from_args(args: &Args) -> Timing {
        let ttl = args.subnet_lease_ttl;
        let margin = (args.subnet_lease_renew_margin as i64 * 60).min(ttl / 2);
        Timing { ttl_s: ttl, renew_every: Duration::from_secs((ttl - margin) as u64) }
    }
}

pub struct RegistryManager<R: Registry> {
    registry: R,
    timing: Timing,
}

impl<R: Registry> RegistryManager<R> {
    pub fn new(registry: R, timing: Timing) -> Self {
        RegistryManager { registry, timing }
    }
}

impl<R: Registry> SubnetManager for RegistryManager<R> {
    fn describe(&self) -> String {
        self.registry.describe()
    }

    fn network_config<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<NetConfig>> {
        Box::pin(async move {
            health.stage(format!("waiting for the network config in {}", self.registry.describe()));
            let (json, source) = self.registry.network_config().await?;
            NetConfig::parse(&json).with_context(|| source)
        })
    }

    fn acquire<'a>(&'a self, cfg: &'a NetConfig, attrs: &'a LeaseAttrs, previous: Option<Subnets>, _health: &'a Health) -> BoxFuture<'a, Result<Subnets>> {
        Box::pin(acquire::acquire(&self.registry, cfg, attrs, previous, self.timing.ttl_s))
    }

    fn run(self: Arc<Self>, own: Subnets, attrs: LeaseAttrs, health: Arc<Health>) -> LeaseWatch {
        let (watch_tx, watch_rx) = mpsc::channel(4096);
        let (tx, events) = mpsc::channel(4096);
        let (fatal_tx, fatal) = mpsc::channel(1);
        let watcher = tokio::spawn(self.registry.clone().watch(watch_tx));
        let keeper = KeepAlive { registry: self.registry.clone(), timing: self.timing, own, attrs, health };
        let keeper = tokio::spawn(async move {
            if let Err(e) = keeper.run(watch_rx, tx).await {
                let _ = fatal_tx.send(e).await;
            }
        });
        LeaseWatch { events, fatal, tasks: vec![watcher, keeper] }
    }

    fn leases(&self) -> BoxFuture<'_, Result<LeaseList>> {
        Box::pin(async move { Ok(self.registry.list().await?.1) })
    }

    fn release<'a>(&'a self, own: &'a Subnets) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.registry.delete(own))
    }
}

/// The task that owns our lease while weftd runs.
struct KeepAlive<R: Registry> {
    registry: R,
    timing: Timing,
    own: Subnets,
    attrs: LeaseAttrs,
    health: Arc<Health>,
}

impl<R: Registry> KeepAlive<R> {
    /// Renews on time and forwards every event; an event that says our
    /// lease is gone makes it claim the same subnet again first. Returns
    /// an error only when our lease cannot be had back (or the watch ended).
    async fn run(self, mut watch: mpsc::Receiver<LeaseEvent>, tx: mpsc::Sender<LeaseEvent>) -> Result<()> {
        let own_key = self.own.to_key();
        let mut renew_at = Instant::now() + self.timing.renew_every;
        loop {
            tokio::select! {
                ev = watch.recv() => {
                    let Some(ev) = ev else { bail!("lease watch ended") };
                    let own_gone = match &ev {
                        LeaseEvent::Snapshot(kvs) => !kvs.iter().any(|(k, _)| *k == own_key),
                        LeaseEvent::Put(..) => false,
                        LeaseEvent::Delete(k) => *k == own_key,
                    };
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                    if own_gone {
                        self.reclaim().await?;
                        renew_at = Instant::now() + self.timing.renew_every;
                        let _ = tx.send(LeaseEvent::Put(own_key.clone(), serde_json::to_vec(&self.attrs)?)).await;
                    }
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    let ttl = self.timing.ttl_s;
                    match self.registry.renew(&self.own, &self.attrs, ttl).await {
                        Ok(()) => {
                            log::info!("renewed lease {} for {ttl} s", self.own);
                            self.health.metrics.lease_renewal_counted();
                            renew_at = Instant::now() + self.timing.renew_every;
                        }
                        Err(e) => {
                            let retry = Duration::from_secs(60).min(Duration::from_secs((ttl / 10).max(1) as u64));
                            log::warn!("renewing lease {} failed, retrying in {retry:?}: {e:#}", self.own);
                            crate::metrics::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
            }
        }
    }

    /// Our lease was deleted (by an operator, or it expired while the store
    /// was away): claim the same subnet again so our pods keep their addresses.
    async fn reclaim(&self) -> Result<()> {
        log::warn!("our lease {} is gone from the store (deleted or expired); claiming it again", self.own);
        self.health.lease_held(false);
        self.health.stage(format!("our lease {} was lost; claiming it again", self.own));
        if self.registry.create(&self.own, &self.attrs, self.timing.ttl_s).await? {
            log::info!("re-acquired lease {}", self.own);
            self.health.lease_held(true);
            self.health.metrics.lease_renewed();
            Ok(())
        } else {
            bail!("subnet {} was taken by another node after our lease was lost; restart weftd to choose a new subnet", self.own)
        }
    }
}
