//! Subnet managers: where this node's lease and its peers' leases come from
//! (flannel's `pkg/subnet`). A manager gives weftd the network config, our
//! subnet, keeps our lease alive on its own (renewal, re-claim after a loss)
//! and streams every peer lease as it changes. Two today, both on a
//! [`registry::Registry`] of flannel's key schema: etcd ([`etcd`]) and the
//! embedded single-machine store ([`embedded`]). The Kubernetes manager
//! ([`kube`]) chooses no subnet (the Node's podCIDR is ours) and implements
//! [`SubnetManager`] directly: allocation is not part of the seam.
//!
//! Adding a manager: a module implementing [`SubnetManager`] and one arm in
//! [`from_args`], the one place weftd (`run` and `status`) chooses.
pub mod acquire;
pub mod embedded;
pub mod etcd;
pub mod ipv4net;
pub mod ipv6net;
pub mod kube;
pub mod lease;
pub mod manager;
pub mod registry;
pub mod subnets;

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Result;
use futures::future::BoxFuture;
use tokio::{sync::mpsc, task::JoinHandle};

pub use ipv4net::Ipv4Net;
pub use ipv6net::Ipv6Net;
pub use subnets::Subnets;

use crate::{cli::Args, health::Health, netconfig::NetConfig};
use lease::LeaseAttrs;

/// One change to the set of leases.
#[derive(Debug, Clone)]
pub enum LeaseEvent {
    /// The full set as of a revision: replaces whatever was known.
    Snapshot(LeaseList),
    Put(String, Vec<u8>),
    Delete(String),
}

/// Leases as a store lists them: (key, raw value).
pub type LeaseList = Vec<(String, Vec<u8>)>;

/// See [`SubnetManager::node_hints`].
#[derive(Debug, Default, Clone)]
pub struct NodeHints {
    /// Our PublicIP, ahead of the interface's address (`--public-ip` still wins).
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// Our PublicIPv6 on a dual-stack network, ahead of the interface's
    /// address (`--public-ipv6` still wins): kube's `public-ipv6-overwrite`.
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// Our lease as the store last held it.
    pub previous: Option<LeaseAttrs>,
}

/// Every lease as last seen: key (flannel's `10.244.1.0-24`) -> raw value.
pub type Leases = BTreeMap<String, Vec<u8>>;

/// What a running manager hands the event loop: lease events, and the one
/// kind of news it cannot repair by itself. Its tasks stop when this drops.
pub struct LeaseWatch {
    pub events: mpsc::Receiver<LeaseEvent>,
    /// Our lease is lost for good (our subnet was taken by another node
    /// while we had no lease): weftd must exit and choose again.
    pub fatal: mpsc::Receiver<anyhow::Error>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A source of leases (flannel's `subnet.Manager`). Futures are boxed so
/// that weftd holds any manager as `Arc<dyn SubnetManager>`.
pub trait SubnetManager: Send + Sync {
    /// What this is, for the log: "etcd at https://...", "the embedded store in ...".
    fn describe(&self) -> String;
    /// The network config, validated; waits until it exists (as flanneld does).
    fn network_config<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<NetConfig>>;
    /// What the manager knows of this node before it starts: a PublicIP
    /// it dictates and our previous lease's attributes (kube: our Node's
    /// `public-ip-overwrite` and annotations), so that a node keeps its
    /// VtepMAC across a reboot as flannel's does. None by default.
    fn node_hints<'a>(&'a self, _health: &'a Health) -> BoxFuture<'a, Result<NodeHints>> {
        Box::pin(async { Ok(NodeHints::default()) })
    }
    /// Our subnets (IPv4, and IPv6 on a dual-stack network), holding a
    /// lease with `attrs` (`previous`: the subnets of the last subnet.env,
    /// preferred if still free). Says in `health` what
    /// it waits for.
    fn acquire<'a>(&'a self, cfg: &'a NetConfig, attrs: &'a LeaseAttrs, previous: Option<Subnets>, health: &'a Health) -> BoxFuture<'a, Result<Subnets>>;
    /// From now on: keep our lease alive (renew in time, claim it again if
    /// it is lost) and stream every lease change, a snapshot first.
    fn run(self: Arc<Self>, own: Subnets, attrs: LeaseAttrs, health: Arc<Health>) -> LeaseWatch;
    /// Every lease now (for `weftd status`).
    fn leases(&self) -> BoxFuture<'_, Result<LeaseList>>;
    /// Gives our lease up (`--cleanup-on-exit`).
    fn release<'a>(&'a self, own: &'a Subnets) -> BoxFuture<'a, Result<()>>;
}

/// The subnet manager weftd's flags ask for: Kubernetes Nodes with
/// `--kube-subnet-mgr`, etcd with `--etcd-endpoints`, else the embedded
/// store. The one place the choice is made.
pub async fn from_args(args: &Args) -> Result<Arc<dyn SubnetManager>> {
    if args.kube_subnet_mgr {
        return Ok(Arc::new(kube::KubeManager::from_args(args).await?));
    }
    let timing = manager::Timing::from_args(args);
    if args.etcd_endpoints.is_empty() {
        let store = embedded::LocalStore::open(&args.store_dir, &args.net_config_path)?;
        return Ok(Arc::new(manager::RegistryManager::new(store, timing)));
    }
    etcd::check_prefix(&args.etcd_prefix)?;
    let auth = etcd::EtcdAuth {
        cafile: args.etcd_cafile.clone(),
        certfile: args.etcd_certfile.clone(),
        keyfile: args.etcd_keyfile.clone(),
        username: args.etcd_username.clone(),
        password: args.etcd_password.clone(),
    };
    let store = etcd::EtcdStore::connect(&args.etcd_endpoints, &args.etcd_prefix, &auth).await?;
    Ok(Arc::new(manager::RegistryManager::new(store, timing)))
}
