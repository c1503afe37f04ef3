//! A cluster on Kubernetes instead of a lease store (flannel's
//! `--kube-subnet-mgr`): the harness's API server ([`KubeApi`]) in the
//! switch namespace, one Node per weft node, net-conf.json in the run's temp
//! dir. weftd gets the FLANNEL token's kubeconfig; tests act as an admin.
//!
//! A "lease" here is what flannel's kube subnet manager reads from a Node:
//! a Node annotated `kube-subnet-manager: "true"` with a podCIDR holds the
//! lease named after that podCIDR (`10.244.5.0-24`), its value built from the
//! annotations as flannel's lease JSON (`PublicIP`, `BackendType`,
//! `BackendData`), so the harness's lease helpers read Nodes unchanged.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context, Result};
use k8s_openapi::{
    api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use serde_json::{json, Value};

use crate::{
    kube_api::{Client, KubeApi, ADMIN, FLANNEL},
    netns::Netns,
};

/// flannel's annotation prefix.
pub const PREFIX: &str = "flannel.alpha.coreos.com/";
/// The port the API server listens on (on the switch's address).
pub const PORT: u16 = 6443;
/// Content type of a strategic merge patch.
pub const SMP: &str = "application/strategic-merge-patch+json";
/// Content type of a JSON merge patch (RFC 7386).
pub const MERGE: &str = "application/merge-patch+json";

/// `flannel.alpha.coreos.com/<short>`.
pub fn annotation(short: &str) -> String {
    format!("{PREFIX}{short}")
}

/// The Node's first IPv4 podCIDR: `spec.podCIDRs[0]`, else `spec.podCIDR`.
pub fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs.as_ref().and_then(|v| v.first().cloned()).or_else(|| spec.pod_cidr.clone())
}

/// Node `name`'s annotations (empty if it has none).
pub fn annotations_of(node: &Node) -> BTreeMap<String, String> {
    node.metadata.annotations.clone().unwrap_or_default()
}

/// The lease flannel's kube subnet manager reads from `node`, if it holds
/// one: (lease name `10.244.5.0-24`, flannel's lease JSON). `BackendData`
/// is the annotation parsed as JSON, or its raw text if it is not JSON.
pub fn lease_of(node: &Node) -> Option<(String, String)> {
    let a = annotations_of(node);
    if a.get(&annotation("kube-subnet-manager")).map(String::as_str) != Some("true") {
        return None;
    }
    let cidr = pod_cidr(node)?;
    let data = a.get(&annotation("backend-data")).map(|d| serde_json::from_str::<Value>(d).unwrap_or_else(|_| Value::String(d.clone())));
    let v = json!({
        "PublicIP": a.get(&annotation("public-ip")),
        "PublicIPv6": null,
        "BackendType": a.get(&annotation("backend-type")),
        "BackendData": data.unwrap_or(Value::Null),
    });
    Some((cidr.replace('/', "-"), v.to_string()))
}

/// A condition timestamp: now + `offset_s` seconds (whole seconds, as the
/// API serializes them; distinct offsets give distinct values).
pub fn heartbeat_time(offset_s: i64) -> Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(now + offset_s).unwrap_or_default())
}

/// A Node as a kubelet registers it (and the node controller fills in
/// podCIDR): InternalIP `ip`, condition Ready True, `spec.podCIDR` and
/// `spec.podCIDRs` = `pod_cidr` (none if `None`).
pub fn node_object(name: &str, ip: Ipv4Addr, pod_cidr: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()), ..Default::default() },
        spec: Some(NodeSpec { pod_cidr: pod_cidr.map(str::to_string), pod_cidrs: pod_cidr.map(|c| vec![c.to_string()]), ..Default::default() }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: ip.to_string() }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                last_heartbeat_time: Some(heartbeat_time(0)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A Node as another flannel-compatible node leaves it: `node_object` plus
/// the four annotations, each given verbatim (so tests can make them
/// malformed). `backend_data` is the annotation's text.
pub fn annotated_node(name: &str, ip: &str, pod_cidr: &str, backend_type: &str, backend_data: &str) -> Node {
    let mut n = node_object(name, Ipv4Addr::UNSPECIFIED, Some(pod_cidr));
    n.metadata.annotations = Some(
        [("kube-subnet-manager", "true"), ("backend-type", backend_type), ("backend-data", backend_data), ("public-ip", ip)]
            .iter()
            .map(|(k, v)| (annotation(k), v.to_string()))
            .collect(),
    );
    n
}

/// The API server of a kube-mode cluster and what weftd needs to use it.
pub struct KubeStore {
    pub api: KubeApi,
    /// flannel's net-conf.json (`--net-config-path`).
    pub net_conf: PathBuf,
    /// The FLANNEL token's kubeconfig (`--kubeconfig-file`).
    pub kubeconfig: PathBuf,
    /// The ADMIN token's kubeconfig (what the tests' own requests use).
    pub admin_kubeconfig: PathBuf,
    /// The switch namespace: clients must run there to reach the server.
    netns: PathBuf,
}

impl KubeStore {
    /// Starts the API server on `ip`:[`PORT`] inside `sw` (its files under
    /// `/tmp/<name>`), writes both kubeconfigs; net-conf.json goes to `net_conf`.
    pub fn start(sw: &Netns, ip: Ipv4Addr, name: &str, net_conf: &Path) -> Result<KubeStore> {
        let api = KubeApi::start_in(name, SocketAddr::from((ip, PORT)), Some(&sw.path())).context("starting the tests' Kubernetes API server")?;
        let kubeconfig = api.kubeconfig(FLANNEL)?;
        let admin_kubeconfig = api.kubeconfig(ADMIN)?;
        Ok(KubeStore { api, net_conf: net_conf.to_path_buf(), kubeconfig, admin_kubeconfig, netns: sw.path() })
    }

    /// weftd's flags for kube mode (NODE_NAME comes from the node's environment).
    pub fn weftd_args(&self) -> Vec<String> {
        vec![
            "--kube-subnet-mgr".into(),
            "--kubeconfig-file".into(),
            self.kubeconfig.display().to_string(),
            "--net-config-path".into(),
            self.net_conf.display().to_string(),
        ]
    }

    /// Writes net-conf.json atomically.
    pub fn write_config(&self, json: &str) -> Result<()> {
        weft_common::fs::write_atomic(&self.net_conf, json.as_bytes(), None).with_context(|| format!("writing {}", self.net_conf.display()))
    }

    /// Every lease the Nodes hold (see [`lease_of`]), sorted by name.
    pub fn list(&self) -> Result<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = self.api.node_names().iter().filter_map(|n| self.api.node(n)).filter_map(|n| lease_of(&n)).collect();
        v.sort();
        Ok(v)
    }

    /// The name of the Node holding lease `name` (`10.244.5.0-24`), if any.
    pub fn node_of_lease(&self, name: &str) -> Option<String> {
        self.api.node_names().into_iter().find(|n| self.api.node(n).and_then(|n| lease_of(&n)).is_some_and(|(l, _)| l == name))
    }

    /// Deletes the Node holding lease `name` (an admin's `kubectl delete
    /// node`); true if there was one.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let Some(node) = self.node_of_lease(name) else { return Ok(false) };
        let (code, body) = self.admin("DELETE", &format!("/api/v1/nodes/{node}"), "application/json", &Value::Null)?;
        ensure!(code == 200, "DELETE node {node}: {code} {body}");
        Ok(true)
    }

    /// Writes flannel lease JSON `value` for subnet `name` as a Node named
    /// `lease-<name>` (created, or its annotations replaced): how a node
    /// that is not a weft node of the cluster appears in kube mode.
    pub fn put(&self, name: &str, value: &str) -> Result<()> {
        let v: Value = serde_json::from_str(value).with_context(|| format!("lease value {value}"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let data = v.get("BackendData").cloned().unwrap_or(Value::Null).to_string();
        let node = annotated_node(&format!("lease-{name}"), &s("PublicIP"), &name.replace('-', "/"), &s("BackendType"), &data);
        let node_name = node.metadata.name.clone().unwrap_or_default();
        if self.api.node(&node_name).is_some() {
            let ann = node.metadata.annotations.clone();
            self.api.update_node(&node_name, |n| n.metadata.annotations = ann)?;
        } else {
            self.api.create_node(node)?;
        }
        Ok(())
    }

    /// One request with the ADMIN token, made from the switch namespace:
    /// (status code, JSON body).
    pub fn admin(&self, method: &str, path: &str, ctype: &str, body: &Value) -> Result<(u16, Value)> {
        let client = Client::new(&self.admin_kubeconfig)?;
        let (method, path, ctype, body) = (method.to_string(), path.to_string(), ctype.to_string(), body.clone());
        let ns = self.netns.clone();
        let h = std::thread::spawn(move || -> Result<(u16, Value)> {
            crate::traffic::enter(&ns)?;
            client.req(&method, &path, &ctype, &body)
        });
        crate::traffic::join(h).with_context(|| "a request to the tests' API server")
    }

    /// Many ADMIN requests (method, path, content type, body) on one helper
    /// thread in the switch namespace, in order; each must answer 200.
    pub fn admin_all(&self, reqs: Vec<(String, String, String, Value)>) -> Result<()> {
        let client = Client::new(&self.admin_kubeconfig)?;
        let ns = self.netns.clone();
        let h = std::thread::spawn(move || -> Result<()> {
            crate::traffic::enter(&ns)?;
            for (m, p, ct, b) in &reqs {
                let (code, body) = client.req(m, p, ct, b)?;
                ensure!(code == 200, "{m} {p}: {code} {body}");
            }
            Ok(())
        });
        crate::traffic::join(h)
    }

    /// An ADMIN PATCH of node `name` (`status`: of its status subresource)
    /// with content type `ctype`; the node as the server returned it.
    pub fn patch_node(&self, name: &str, status: bool, ctype: &str, patch: &Value) -> Result<Value> {
        let path = format!("/api/v1/nodes/{name}{}", if status { "/status" } else { "" });
        let (code, body) = self.admin("PATCH", &path, ctype, patch)?;
        ensure!(code == 200, "PATCH {path}: {code} {body}");
        Ok(body)
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!("Kubernetes API {} (kubeconfig {}, net-conf {})", self.api.url(), self.kubeconfig.display(), self.net_conf.display())
    }

    /// Every Node as stored (for failure reports).
    pub fn dump(&self) -> String {
        self.api.node_names().iter().filter_map(|n| self.api.node(n)).map(|n| serde_json::to_string(&n).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }
}
