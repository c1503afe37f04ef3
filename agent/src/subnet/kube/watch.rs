//! The Node watch: every Node's podCIDR and annotations become lease
//! events; our own Node's annotations and its NetworkUnavailable condition
//! are kept as they should be.
use std::{collections::BTreeMap, sync::atomic::Ordering::Relaxed, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{Patch, PatchParams},
    runtime::{watcher, WatchStreamExt},
};
use tokio::sync::mpsc;

use super::{annotations, KubeManager};
use crate::{
    metrics,
    subnet::{lease::LeaseAttrs, LeaseEvent},
};

/// What a Node last meant for the leases: its lease (key, value), or none.
type NodeLeases = BTreeMap<String, (String, Vec<u8>)>;

impl KubeManager {
    /// Watches every Node (list, then watch from its resourceVersion; on
    /// 410 Expired or a broken stream kube's watcher relists, with backoff)
    /// and turns them into lease events: a snapshot after each (re)list, then
    /// a Put or Delete only for a Node whose lease changed. Our own Node's
    /// annotations are put back when someone removes or changes them.
    pub(super) async fn watch_nodes(&self, attrs: LeaseAttrs, tx: mpsc::Sender<LeaseEvent>) {
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
                    self.restore_own(&node, &attrs, &mut last_restore).await;
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
                    give_back_freed_memory();
                }
                watcher::Event::Apply(node) => {
                    self.restore_own(&node, &attrs, &mut last_restore).await;
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
        match annotations::lease_of(node, &self.prefix, self.ipv6_only()) {
            Ok(Some((s, a))) => {
                warned.remove(&name);
                Some((s.to_key(), serde_json::to_vec(&a).ok()?))
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
    async fn restore_own(&self, node: &Node, attrs: &LeaseAttrs, last: &mut Option<tokio::time::Instant>) {
        if node.metadata.name.as_deref() != Some(&self.node_name) {
            return;
        }
        let Some(patch) = annotations::patch_for(node, attrs, &self.prefix) else { return };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        match self.patch_annotations(patch).await {
            Ok(()) => log::warn!("node {}: our annotations {}/* were removed or changed; put them back", self.node_name, self.prefix),
            Err(e) => log::warn!("{e:#}"),
        }
    }

    /// NetworkUnavailable=False on our Node once weft runs (with
    /// --set-node-network-unavailable), retried until the API server takes it.
    pub(super) async fn network_available(&self) {
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

/// Returns the heap a (re)list freed to the kernel. A list of every Node
/// is weftd's one large transient allocation (5,000 Nodes: a 3.7 MB body
/// and its decoded objects); glibc keeps freed memory in each thread's
/// arena, so without this weftd's RSS stays at the list's peak.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        let s = super::rfc3339_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z') && &s[10..11] == "T", "{s}");
    }
}
