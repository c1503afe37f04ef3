//! The storage under the etcd and embedded managers (flannel's
//! `subnet/etcd.Registry`): flannel's lease keys and JSON values, with an
//! atomic create, a TTL, and a revisioned watch that never misses an event.
//! [`super::manager::RegistryManager`] turns any of them into a subnet manager.
use std::future::Future;

use anyhow::Result;

use super::{lease::LeaseAttrs, LeaseEvent, LeaseList, Subnets};

pub trait Registry: Clone + Send + Sync + 'static {
    /// What this is, for the log.
    fn describe(&self) -> String;
    /// The raw network config JSON and where it came from, waiting for it to exist.
    fn network_config(&self) -> impl Future<Output = Result<(String, String)>> + Send;
    /// All leases (key, raw value) and the revision they were read at.
    fn list(&self) -> impl Future<Output = Result<(i64, LeaseList)>> + Send;
    /// Creates the lease only if nobody holds the subnet; false when taken.
    fn create(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> impl Future<Output = Result<bool>> + Send;
    /// Writes our lease with a fresh TTL.
    fn renew(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> impl Future<Output = Result<()>> + Send;
    fn delete(&self, subnet: &Subnets) -> impl Future<Output = Result<()>> + Send;
    /// Streams lease changes into `tx` forever (a snapshot, then every
    /// event; relists when it fell behind). Returns when `tx`'s receiver is gone.
    fn watch(self, tx: tokio::sync::mpsc::Sender<LeaseEvent>) -> impl Future<Output = ()> + Send;
}
