//! The Kubernetes subnet manager (flannel's `--kube-subnet-mgr`,
//! pkg/subnet/kube): no etcd; the lease is the Node. Our subnet is our
//! Node's podCIDR (assigned by kube-controller-manager), our lease
//! attributes go out as flannel's annotations ([`annotations`]) through a
//! strategic-merge patch of `nodes/NAME/status` (flannel's RBAC allows
//! nothing else), and every Node carrying `kube-subnet-manager: "true"` is
//! a peer whose podCIDR and annotations become a lease event for the same
//! reconcile etcd leases feed. It chooses no subnet itself.
//!
//! Dual stack (EnableIPv6): our IPv6 subnet is our Node's IPv6 podCIDR (the
//! IPv6 entry of spec.podCIDRs, inside IPv6Network), announced with
//! `public-ipv6` and `backend-v6-data` as flanneld v0.2x does; a Node with
//! both becomes a `10.244.5.0-24&fd44:0:0:5::-64` lease. `public-ipv6-overwrite`
//! chooses our PublicIPv6 unless `--public-ipv6` is given. On an IPv6-only
//! network (EnableIPv4 false) a Node's lease is its IPv6 podCIDR (spec.podCIDR
//! may be IPv6 then), `public-ipv6` and `backend-v6-data` alone, key
//! `0.0.0.0-0&fd44:0:0:5::-64`, as flanneld reads and writes them.
//!
//! Better than flannel where it fails: no podCIDR yet (or, with EnableIPv6,
//! no IPv6 podCIDR: flannel then runs without an IPv6 subnet) means waiting
//! (not ready, saying so), not a crash loop; a bad Node is skipped with a
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
    sync::{atomic::Ordering::Relaxed, Arc, OnceLock},
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
    /// The network is IPv6-only (EnableIPv4 false): Nodes are read as
    /// flanneld reads them then. Set when the config is read.
    ipv6_only: OnceLock<bool>,
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
            ipv6_only: OnceLock::new(),
        })
    }

    /// Whether the network is IPv6-only: from the config once read, else
    /// (`weftd status`, which reads no config) from the config file as it is
    /// now (IPv4 when it cannot be read).
    fn ipv6_only(&self) -> bool {
        *self.ipv6_only.get_or_init(|| std::fs::read_to_string(&self.net_config).ok().and_then(|j| NetConfig::parse(&j).ok()).is_some_and(|c| c.ipv4.is_none()))
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

    /// Our subnets from our Node's podCIDRs: the IPv4 one inside Network and,
    /// with EnableIPv6, the IPv6 one inside IPv6Network. Err: what is missing
    /// or wrong, as the health stage and the log say it while we wait.
    fn subnets_of(&self, node: &Node, cfg: &NetConfig) -> Result<Subnets, String> {
        let n = &self.node_name;
        let v4 = match cfg.network4() {
            None => None,
            Some(network) => match annotations::pod_cidr(node) {
                Ok(Some(net)) if network.contains_net(&net) => Some(net),
                Ok(Some(net)) => return Err(format!("node {n}: spec.podCIDR {net} is outside Network {network}; waiting for a podCIDR inside it")),
                Ok(None) => return Err(format!("node {n} has no podCIDR yet (kube-controller-manager --allocate-node-cidrs assigns it); waiting")),
                Err(e) => return Err(format!("{e}; waiting")),
            },
        };
        let Some(c6) = &cfg.ipv6 else { return Ok(Subnets { v4, v6: None }) };
        match annotations::pod_cidr6(node) {
            Ok(Some(net)) if c6.network.contains_net(&net) => Ok(Subnets { v4, v6: Some(net) }),
            Ok(Some(net)) => Err(format!("node {n}: IPv6 podCIDR {net} (spec.podCIDRs) is outside IPv6Network {}; waiting for one inside it", c6.network)),
            Ok(None) => Err(format!(
                "node {n} has no IPv6 podCIDR yet (EnableIPv6: spec.podCIDRs needs an IPv6 entry, which kube-controller-manager assigns with a dual-stack or IPv6 --cluster-cidr); waiting"
            )),
            Err(e) => Err(format!("{e}; waiting")),
        }
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
            let cfg = NetConfig::parse(&json).with_context(|| self.net_config.display().to_string())?;
            let _ = self.ipv6_only.set(cfg.ipv4.is_none());
            Ok(cfg)
        })
    }

    /// `public-ip-overwrite`, `public-ipv6-overwrite` and the lease our
    /// annotations describe (its VtepMACs, of weft.1 and weft-v6.1, are reused
    /// if the devices have to be made again, e.g. after a reboot).
    fn node_hints<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<NodeHints>> {
        Box::pin(async move {
            let node = self.own_node(health).await;
            let public_ip = match annotations::get(&node, &self.prefix, annotations::PUBLIC_IP_OVERWRITE) {
                None | Some("") => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    anyhow::anyhow!("node {}: annotation {}/{} = {ip:?} is not an IPv4 address", self.node_name, self.prefix, annotations::PUBLIC_IP_OVERWRITE)
                })?),
            };
            let public_ipv6 = annotations::ipv6_annotation(&node, &self.prefix, annotations::PUBLIC_IPV6_OVERWRITE).map_err(anyhow::Error::msg)?;
            let previous = annotations::lease_of(&node, &self.prefix, self.ipv6_only()).ok().flatten().map(|(_, a)| a);
            Ok(NodeHints { public_ip, public_ipv6, previous })
        })
    }

    /// Waits for our Node's podCIDR (and, with EnableIPv6, its IPv6 podCIDR;
    /// not ready meanwhile), then announces our attributes on the Node if it
    /// does not carry them already.
    fn acquire<'a>(&'a self, cfg: &'a NetConfig, attrs: &'a LeaseAttrs, _previous: Option<Subnets>, health: &'a Health) -> BoxFuture<'a, Result<Subnets>> {
        Box::pin(async move {
            let mut said = None;
            let own = loop {
                let node = self.own_node(health).await;
                let problem = match self.subnets_of(&node, cfg) {
                    Ok(s) => break s,
                    Err(p) => p,
                };
                if said.as_ref() != Some(&problem) {
                    log::warn!("{problem}");
                    said = Some(problem.clone());
                }
                health.stage(problem);
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            if let Some(patch) = annotations::patch_for(&self.own_node(health).await, attrs, &self.prefix) {
                self.patch_annotations(patch).await?;
                log::info!("node {}: annotations {}/* set for subnet {own}", self.node_name, self.prefix);
            }
            Ok(own)
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
                .filter_map(|n| annotations::lease_of(n, &self.prefix, self.ipv6_only()).ok().flatten())
                .filter_map(|(s, a)| Some((s.to_key(), serde_json::to_vec(&a).ok()?)))
                .collect())
        })
    }

    /// Removes our annotations, so other nodes drop us.
    fn release<'a>(&'a self, _own: &'a Subnets) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let gone: BTreeMap<String, Option<String>> = annotations::WRITTEN.iter().map(|k| (format!("{}/{k}", self.prefix), None)).collect();
            self.patch_annotations(serde_json::to_value(gone)?).await
        })
    }
}
