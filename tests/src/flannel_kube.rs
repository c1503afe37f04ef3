//! flanneld's kube subnet manager (`--kube-subnet-mgr`) on a
//! flannel-programmed node: its lease is its host's own Node, not the
//! `lease-<subnet>` Node [`crate::kube_store::KubeStore::put`] makes for a
//! node that has none.
//!
//! A flanneld host has a Node a kubelet registered (named after the host,
//! its InternalIP) with the podCIDR kube-controller-manager assigned, and
//! flanneld writes its annotations there (kube.go's
//! `AcquireLease`: `kube-subnet-manager`, `backend-type`, `backend-data`,
//! `public-ip`, through a patch of the Node's status) and, with
//! `--set-node-network-unavailable` (its default), sets the Node's
//! NetworkUnavailable condition to False (reason `FlannelIsUp`).
//! [`Cluster::flanneld_kube_node`] makes a flannel node's Node so, which a
//! weftd started there with `NODE_NAME` finds as flanneld left it.
use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::{
    flannel_node::FlannelBackend,
    kube_store::{annotation, annotations_of, node_object, SMP},
    subnet_env::Ipv4Subnet,
    Cluster, NodeRef,
};

/// The annotations flanneld's kube subnet manager writes, by short name.
pub const FLANNELD_ANNOTATIONS: [&str; 4] = ["kube-subnet-manager", "backend-type", "backend-data", "public-ip"];

impl Cluster {
    /// What flanneld's kube subnet manager writes on flannel node `f`'s
    /// Node, by short name: backend-data is Go's `json.Marshal` of
    /// vxlanLeaseAttrs (`{"VNI":1,"VtepMAC":"<flannel.1's MAC>"}`), or
    /// `null` for host-gw.
    pub fn flanneld_annotations(&self, f: NodeRef) -> Result<BTreeMap<String, String>> {
        let fl = self.flannel_node(f)?;
        let (t, data) = match fl.backend {
            FlannelBackend::HostGw => ("host-gw", "null".to_string()),
            FlannelBackend::Vxlan | FlannelBackend::VxlanDirect => ("vxlan", format!(r#"{{"VNI":1,"VtepMAC":"{}"}}"#, fl.mac)),
            FlannelBackend::Udp => ("", "null".to_string()),
        };
        Ok([("kube-subnet-manager", "true".to_string()), ("backend-type", t.to_string()), ("backend-data", data), ("public-ip", fl.ip.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect())
    }

    /// The flannel annotations ([`FLANNELD_ANNOTATIONS`]) on node `n`'s
    /// own Node, by short name (missing ones absent).
    pub fn node_flannel_annotations(&self, n: NodeRef) -> Result<BTreeMap<String, String>> {
        let name = self.node_name(n)?;
        let node = self.kube()?.api.node(&name).with_context(|| format!("no Node {name}"))?;
        let a = annotations_of(&node);
        Ok(FLANNELD_ANNOTATIONS.iter().filter_map(|k| a.get(&annotation(k)).map(|v| (k.to_string(), v.clone()))).collect())
    }

    /// flanneld's kube subnet manager at start on flannel node `f`: its
    /// host's Node (named as the node, its InternalIP, its podCIDR) carries
    /// [`Cluster::flanneld_annotations`] and NetworkUnavailable=False. The
    /// first time, the harness's `lease-<subnet>` Node of that lease is
    /// deleted before the host's Node is made (in that order: weftd nodes
    /// watching see the lease go and come back, never two Nodes holding
    /// it, whose second's deletion would take the lease away). Returns the
    /// annotations written.
    pub fn flanneld_kube_node(&self, f: NodeRef) -> Result<BTreeMap<String, String>> {
        let want = self.flanneld_annotations(f)?;
        let fl = self.flannel_node(f)?;
        let k = self.kube()?;
        let name = self.node_name(f)?;
        let ann: BTreeMap<String, String> = want.iter().map(|(k, v)| (annotation(k), v.clone())).collect();
        ensure!(fl.env.subnet.is_some() && fl.env.ipv6_subnet.is_none(), "the harness makes IPv4 flanneld nodes' Nodes only");
        if k.api.node(&name).is_none() {
            let lease_node = format!("lease-{}", fl.env.lease_name());
            ensure!(k.api.delete_node(&lease_node), "flannel node {f} has neither its host's Node {name} nor a lease Node {lease_node}");
            let mut node = node_object(&name, fl.ip, Some(&fl.env.cidr()));
            node.metadata.annotations = Some(ann);
            k.api.create_node(node)?;
        } else {
            k.api.update_node(&name, |n| n.metadata.annotations.get_or_insert_with(Default::default).extend(ann))?;
        }
        let now = condition_time();
        let cond = json!({"status": {"conditions": [{
            "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node", "lastTransitionTime": now, "lastHeartbeatTime": now,
        }]}});
        k.patch_node(&name, true, SMP, &cond)?;
        Ok(want)
    }

    /// Node `n`'s NetworkUnavailable condition: (status, reason), if it has one.
    pub fn network_unavailable(&self, n: NodeRef) -> Result<Option<(String, String)>> {
        let name = self.node_name(n)?;
        let node = self.kube()?.api.node(&name).with_context(|| format!("no Node {name}"))?;
        let conds = node.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conds.into_iter().find(|c| c.type_ == "NetworkUnavailable").map(|c| (c.status, c.reason.unwrap_or_default())))
    }
}

/// Now as the API serializes condition times (RFC 3339, whole seconds).
fn condition_time() -> serde_json::Value {
    serde_json::to_value(crate::kube_store::heartbeat_time(0)).unwrap_or(serde_json::Value::Null)
}
