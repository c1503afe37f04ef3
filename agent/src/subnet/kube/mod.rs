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
pub mod annotations;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures::{future::BoxFuture, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::{Api, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Client, Config,
};
use tokio::sync::mpsc;

use super::{embedded::wait_for_config_file, lease::LeaseAttrs, Ipv4Net, LeaseEvent, LeaseList, LeaseWatch, SubnetManager};
use crate::{cli::Args, health::Health, metrics, netconfig::NetConfig};

pub struct KubeManager {
    nodes: Api<Node>,
    node_name: String,
    prefix: String,
    net_config: PathBuf,
    set_network_unavailable: bool,
    describe: String,
}

/// A client from `--kubeconfig-file` (its server replaced by
/// `--kube-api-url` if given), else the in-cluster service account, else
/// `--kube-api-url` alone.
async fn client(args: &Args) -> Result<Client> {
    let mut config = match &args.kubeconfig_file {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).with_context(|| format!("--kubeconfig-file {}", p.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.with_context(|| format!("--kubeconfig-file {}", p.display()))?
        }
        None => match (Config::incluster(), &args.kube_api_url) {
            (Ok(c), _) => c,
            (Err(_), Some(u)) => Config::new(u.parse().with_context(|| format!("--kube-api-url {u:?}"))?),
            (Err(e), None) => bail!("--kube-subnet-mgr: no --kubeconfig-file and no in-cluster service account ({e}); pass --kubeconfig-file or run in a pod"),
        },
    };
    if let Some(u) = &args.kube_api_url {
        config.cluster_url = u.parse().with_context(|| format!("--kube-api-url {u:?}"))?;
    }
    Client::try_from(config).context("building the Kubernetes client")
}

/// Our Node's name: NODE_NAME, else the spec.nodeName of POD_NAME in
/// POD_NAMESPACE (flannel's order; needs RBAC `pods get`).
async fn node_name(client: &Client) -> Result<String> {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
            return Ok(n);
        }
    }
    let (Ok(pod), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        bail!("--kube-subnet-mgr needs the node's name: set NODE_NAME (or POD_NAME and POD_NAMESPACE)");
    };
    let p = Api::<Pod>::namespaced(client.clone(), &ns).get(&pod).await.with_context(|| format!("reading pod {ns}/{pod} for its node"))?;
    p.spec.and_then(|s| s.node_name).with_context(|| format!("pod {ns}/{pod} has no spec.nodeName"))
}

impl KubeManager {
    pub async fn from_args(args: &Args) -> Result<KubeManager> {
        annotations::check_prefix(&args.kube_annotation_prefix).map_err(anyhow::Error::msg)?;
        let client = client(args).await?;
        let node_name = node_name(&client).await?;
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

/// RFC 3339 UTC time for conditions (`2026-12-04T03:52:26Z`).
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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

    fn public_ip_overwrite<'a>(&'a self, health: &'a Health) -> BoxFuture<'a, Result<Option<Ipv4Addr>>> {
        Box::pin(async move {
            let node = self.own_node(health).await;
            match annotations::get(&node, &self.prefix, annotations::PUBLIC_IP_OVERWRITE) {
                None | Some("") => Ok(None),
                Some(ip) => ip.parse().map(Some).map_err(|_| {
                    anyhow::anyhow!("node {}: annotation {}/{} = {ip:?} is not an IPv4 address", self.node_name, self.prefix, annotations::PUBLIC_IP_OVERWRITE)
                }),
            }
        })
    }

    /// Waits for our Node's podCIDR (not ready meanwhile), then announces
    /// our attributes on the Node if it does not carry them already.
    fn acquire<'a>(&'a self, cfg: &'a NetConfig, attrs: &'a LeaseAttrs, _previous: Option<Ipv4Net>, health: &'a Health) -> BoxFuture<'a, Result<Ipv4Net>> {
        Box::pin(async move {
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
            Ok(own)
        })
    }

    fn run(self: Arc<Self>, _own: Ipv4Net, attrs: LeaseAttrs, _health: Arc<Health>) -> LeaseWatch {
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
    fn release<'a>(&'a self, _own: &'a Ipv4Net) -> BoxFuture<'a, Result<()>> {
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

/// What a Node last meant for the leases: its lease (key, value), or none.
type NodeLeases = BTreeMap<String, (String, Vec<u8>)>;

impl KubeManager {
    /// Watches every Node (list, then watch from its resourceVersion; on
    /// 410 Expired or a broken stream kube's watcher relists, with backoff)
    /// and turns them into lease events: a snapshot after each (re)list, then
    /// a Put or Delete only for a Node whose lease changed. Our own Node's
    /// annotations are put back when someone removes or changes them.
    async fn watch_nodes(&self, attrs: LeaseAttrs, tx: mpsc::Sender<LeaseEvent>) {
        let want = annotations::of_attrs(&attrs, &self.prefix);
        let mut known = NodeLeases::new();
        let mut listing: Option<NodeLeases> = None;
        let mut warned: BTreeMap<String, String> = BTreeMap::new();
        let mut last_restore = None::<tokio::time::Instant>;
        let mut stream = watcher(self.nodes.clone(), watcher::Config::default()).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    log::warn!("watching Nodes (retrying): {e}");
                    metrics::STORE_ERRORS.fetch_add(1, Relaxed);
                    continue;
                }
            };
            match ev {
                watcher::Event::Init => listing = Some(NodeLeases::new()),
                watcher::Event::InitApply(node) => {
                    self.restore_own(&node, &want, &mut last_restore).await;
                    if let (Some(l), Some(name)) = (listing.as_mut(), node.metadata.name.clone()) {
                        if let Some(lease) = self.lease(&node, &mut warned) {
                            l.insert(name, lease);
                        }
                    }
                }
                watcher::Event::InitDone => {
                    known = listing.take().unwrap_or_default();
                    let snap = known.values().cloned().collect();
                    if tx.send(LeaseEvent::Snapshot(snap)).await.is_err() {
                        return;
                    }
                }
                watcher::Event::Apply(node) => {
                    self.restore_own(&node, &want, &mut last_restore).await;
                    let Some(name) = node.metadata.name.clone() else { continue };
                    let now = self.lease(&node, &mut warned);
                    if known.get(&name) == now.as_ref() {
                        metrics::KUBE_NODE_UPDATES_NONE.fetch_add(1, Relaxed);
                        continue;
                    }
                    metrics::KUBE_NODE_UPDATES_LEASE.fetch_add(1, Relaxed);
                    let ev = match (&now, known.get(&name)) {
                        (Some((k, v)), _) => LeaseEvent::Put(k.clone(), v.clone()),
                        (None, Some((k, _))) => LeaseEvent::Delete(k.clone()),
                        (None, None) => continue,
                    };
                    match now {
                        Some(l) => known.insert(name, l),
                        None => known.remove(&name),
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                watcher::Event::Delete(node) => {
                    let Some(name) = node.metadata.name.clone() else { continue };
                    warned.remove(&name);
                    if let Some((k, _)) = known.remove(&name) {
                        metrics::KUBE_NODE_UPDATES_LEASE.fetch_add(1, Relaxed);
                        if tx.send(LeaseEvent::Delete(k)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A Node's lease as a lease event's key and value; a bad Node is
    /// warned about once per distinct problem and counts as no lease.
    fn lease(&self, node: &Node, warned: &mut BTreeMap<String, String>) -> Option<(String, Vec<u8>)> {
        let name = annotations::name(node).to_string();
        match annotations::lease_of(node, &self.prefix) {
            Ok(Some((net, a))) => {
                warned.remove(&name);
                Some((net.to_key(), serde_json::to_vec(&a).ok()?))
            }
            Ok(None) => None,
            Err(e) => {
                if name != self.node_name && warned.get(&name) != Some(&e) {
                    log::warn!("ignoring {e}");
                    warned.insert(name, e);
                }
                None
            }
        }
    }

    /// Puts our annotations back when our Node lacks them (at most once a
    /// second: the patch's own update comes back through the watch).
    async fn restore_own(&self, node: &Node, want: &BTreeMap<String, String>, last: &mut Option<tokio::time::Instant>) {
        if node.metadata.name.as_deref() != Some(&self.node_name) || annotations::carries(node, want) {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        match serde_json::to_value(want).map_err(anyhow::Error::from) {
            Ok(v) => match self.patch_annotations(v).await {
                Ok(()) => log::warn!("node {}: our annotations {}/* were removed or changed; put them back", self.node_name, self.prefix),
                Err(e) => log::warn!("{e:#}"),
            },
            Err(e) => log::warn!("{e:#}"),
        }
    }

    /// NetworkUnavailable=False on our Node once weft runs (with
    /// --set-node-network-unavailable), retried until the API server takes it.
    async fn network_available(&self) {
        if !self.set_network_unavailable {
            return;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let now = rfc3339_now();
            let patch = serde_json::json!({ "status": { "conditions": [{
                "type": "NetworkUnavailable", "status": "False", "reason": "WeftIsUp",
                "message": "weft is running on this node", "lastTransitionTime": now, "lastHeartbeatTime": now,
            }]}});
            match self.nodes.patch_status(&self.node_name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                Ok(_) => return log::info!("node {}: condition NetworkUnavailable set to False", self.node_name),
                Err(e) => log::warn!("node {}: setting NetworkUnavailable=False (retrying in {backoff:?}): {e}", self.node_name),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        let s = super::rfc3339_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z') && &s[10..11] == "T", "{s}");
    }
}
