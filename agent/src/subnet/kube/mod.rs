//! The Kubernetes subnet manager (flannel's `--kube-subnet-mgr`,
//! pkg/subnet/kube): no etcd; the lease is the Node. Our subnet is our
//! Node's podCIDR (assigned by kube-controller-manager), our lease
//! attributes go out as flannel's annotations ([`annotations`]) through a
//! strategic-merge patch of `nodes/NAME/status` (flannel's RBAC allows
//! nothing else), and every Node carrying `kube-subnet-manager: "true"` is
//! a peer whose podCIDR and annotations become a lease event for the same
//! reconcile etcd leases feed. It chooses no subnet itself.
//!
//! Better than flannel where it fails: no podCIDR yet means waiting (not
//! ready, saying so), not a crash loop; a bad Node is skipped with a
//! message naming it; our annotations come back if someone removes them;
//! Node updates that change no lease (heartbeats) cause no reconcile and
//! are counted (`weft_kube_node_updates_total`).
//!
//! Files: this one the manager ([`SubnetManager`]: config, podCIDR,
//! announcing our annotations); [`annotations`] flannel's annotations <->
//! leases; `client.rs` the client and our Node's name; `watch.rs` the Node
//! watch, our annotations and condition kept.
pub mod annotations;
mod client;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;

use super::{embedded::wait_for_config_file, lease::LeaseAttrs, LeaseList, LeaseWatch, NodeHints, SubnetManager, Subnets};
use crate::{cli::Args, health::Health, metrics, netconfig::NetConfig};

pub struct KubeManager {
    nodes: Api<Node>,
    node_name: String,
    prefix: String,
    net_config: PathBuf,
    set_network_unavailable: bool,
    describe: String,
}

impl KubeManager {
    pub async fn from_args(args: &Args) -> Result<KubeManager> {
        annotations::check_prefix(&args.kube_annotation_prefix).map_err(anyhow::Error::msg)?;
        let client = client::client(args).await?;
        let node_name = client::node_name(&client).await?;
        let describe = format!("Kubernetes Nodes (this node: {node_name}, annotations {}/*)", args.kube_annotation_prefix);
        Ok(KubeManager {
            nodes: Api::all(client),
            node_name,
            prefix: args.kube_annotation_prefix.clone(),
            net_config: args.net_config_path.clone(),
            set_network_unavailable: args.set_node_network_unavailable,
            describe,
        })
    }

    /// Writes `annotations` onto our Node (a strategic-merge patch of its
    /// status, as flannel does; null values remove keys).
    async fn patch_annotations(&self, ann: serde_json::Value) -> Result<()> {
        let patch = serde_json::json!({ "metadata": { "annotations": ann } });
        self.nodes
            .patch_status(&self.node_name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .with_context(|| format!("patching node {}'s annotations", self.node_name))?;
        Ok(())
    }

    /// Our Node, retried while the API server cannot be reached.
    async fn own_node(&self, health: &Health) -> Node {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.nodes.get(&self.node_name).await {
                Ok(n) => return n,
                Err(e) => {
                    health.stage(format!("reading node {}: {e}", self.node_name));
                    log::warn!("reading node {} (retrying in {backoff:?}): {e}", self.node_name);
                    metrics::STORE_ERRORS.fetch_add(1, Relaxed);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

impl SubnetManager for KubeManager {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn network_config<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<NetConfig>> {
        Box::pin(async move {
            health.stage(format!("waiting for the network config file {}", self.net_config.display()));
            let json = wait_for_config_file(&self.net_config).await?;
            NetConfig::parse(&json).with_context(|| self.net_config.display().to_string())
        })
    }

    /// `public-ip-overwrite` and the lease our annotations describe (its
    /// VtepMAC is reused if weft.1 has to be made again, e.g. after a reboot).
    fn node_hints<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<NodeHints>> {
        Box::pin(async move {
            let node = self.own_node(health).await;
            let public_ip = match annotations::get(&node, &self.prefix, annotations::PUBLIC_IP_OVERWRITE) {
                None | Some("") => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    anyhow::anyhow!("node {}: annotation {}/{} = {ip:?} is not an IPv4 address", self.node_name, self.prefix, annotations::PUBLIC_IP_OVERWRITE)
                })?),
            };
            let previous = annotations::lease_of(&node, &self.prefix).ok().flatten().map(|(_, a)| a);
            Ok(NodeHints { public_ip, previous })
        })
    }

    /// Waits for our Node's podCIDR (not ready meanwhile), then announces
    /// our attributes on the Node if it does not carry them already.
    fn acquire<'a>(&'a self, cfg: &'a NetConfig, attrs: &'a LeaseAttrs, _previous: Option<Subnets>, health: &'a Health) -> BoxFuture<'a, Result<Subnets>> {
        Box::pin(async move {
            if cfg.ipv6.is_some() {
                anyhow::bail!("config field EnableIPv6: dual stack with --kube-subnet-mgr is not built yet (etcd and the embedded store carry it)");
            }
            let mut said = None;
            let own = loop {
                let node = self.own_node(health).await;
                let problem = match annotations::pod_cidr(&node) {
                    Ok(Some(net)) if cfg.network.contains_net(&net) => break net,
                    Ok(Some(net)) => format!("node {}: spec.podCIDR {net} is outside Network {}; waiting for a podCIDR inside it", self.node_name, cfg.network),
                    Ok(None) => format!("node {} has no podCIDR yet (kube-controller-manager --allocate-node-cidrs assigns it); waiting", self.node_name),
                    Err(e) => format!("{e}; waiting"),
                };
                if said.as_ref() != Some(&problem) {
                    log::warn!("{problem}");
                    said = Some(problem.clone());
                }
                health.stage(problem);
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            let want = annotations::of_attrs(attrs, &self.prefix);
            if !annotations::carries(&self.own_node(health).await, &want) {
                self.patch_annotations(serde_json::to_value(&want)?).await?;
                log::info!("node {}: annotations {}/* set for subnet {own}", self.node_name, self.prefix);
            }
            Ok(Subnets::v4(own))
        })
    }

    fn run(self: Arc<Self>, _own: Subnets, attrs: LeaseAttrs, _health: Arc<Health>) -> LeaseWatch {
        let (tx, events) = mpsc::channel(4096);
        let (_fatal_tx, fatal) = mpsc::channel(1);
        let me = self.clone();
        let watch = tokio::spawn(async move { me.watch_nodes(attrs, tx).await });
        let me = self.clone();
        let condition = tokio::spawn(async move { me.network_available().await });
        LeaseWatch { events, fatal, tasks: vec![watch, condition] }
    }

    fn leases(&self) -> BoxFuture<'_, Result<LeaseList>> {
        Box::pin(async move {
            let list = self.nodes.list(&Default::default()).await.context("listing Nodes")?;
            Ok(list
                .items
                .iter()
                .filter_map(|n| annotations::lease_of(n, &self.prefix).ok().flatten())
                .filter_map(|(net, a)| Some((net.to_key(), serde_json::to_vec(&a).ok()?)))
                .collect())
        })
    }

    /// Removes our annotations, so other nodes drop us.
    fn release<'a>(&'a self, _own: &'a Subnets) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let gone: BTreeMap<String, Option<String>> =
                [annotations::KUBE_SUBNET_MANAGER, annotations::BACKEND_TYPE, annotations::BACKEND_DATA, annotations::PUBLIC_IP]
                    .iter()
                    .map(|k| (format!("{}/{k}", self.prefix), None))
                    .collect();
            self.patch_annotations(serde_json::to_value(gone)?).await
        })
    }
}
