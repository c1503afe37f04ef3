//! A cluster on Kubernetes instead of a lease store (flannel's
//! `--kube-subnet-mgr`): the harness's API server ([`KubeApi`]) in the
//! switch namespace, one Node per weft node, net-conf.json in the run's temp
//! dir. weftd gets the FLANNEL token's kubeconfig; tests act as an admin.
//!
//! A "lease" here is what flannel's kube subnet manager reads from a Node:
//! a Node annotated `kube-subnet-manager: "true"` with a podCIDR holds the
//! lease named after that podCIDR (`10.244.5.0-24`), its value built from the
//! annotations as flannel's lease JSON (`PublicIP`, `BackendType`,
//! `BackendData`), so the harness's lease helpers read Nodes unchanged. In
//! dual stack a Node with an IPv6 podCIDR (spec.podCIDRs) and `public-ipv6`
//! holds `10.244.5.0-24&fd44:0:0:5::-64`, whose JSON adds `PublicIPv6` and
//! `BackendV6Data` (from `backend-v6-data`). On an IPv6-only network a
//! Node with only an IPv6 podCIDR (`spec.podCIDR` itself may be IPv6) and
//! `public-ipv6` holds `0.0.0.0-0&fd44:0:0:5::-64`, `"PublicIP":"0.0.0.0"`
//! unless it carries `public-ip` (flanneld's host-gw writes 0.0.0.0 there).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
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
    subnet_env::Ipv6Cidr,
};

/// flannel's annotation prefix.
pub const PREFIX: &str = "flannel.alpha.coreos.com/";
/// The port the API server listens on (on the switch's address, IPv6 on an
/// IPv6-only cluster).
pub const PORT: u16 = 6443;
/// Content type of a strategic merge patch.
pub const SMP: &str = "application/strategic-merge-patch+json";
/// Content type of a JSON merge patch (RFC 7386).
pub const MERGE: &str = "application/merge-patch+json";

/// `flannel.alpha.coreos.com/<short>`.
pub fn annotation(short: &str) -> String {
    format!("{PREFIX}{short}")
}

/// The Node's IPv4 podCIDR: the first IPv4 entry of `spec.podCIDRs`, else
/// `spec.podCIDR`.
pub fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs.as_ref().and_then(|v| v.iter().find(|c| !c.contains(':')).cloned()).or_else(|| spec.pod_cidr.clone().filter(|c| !c.contains(':')))
}

/// The Node's IPv6 podCIDR: the IPv6 entry of `spec.podCIDRs`, else
/// `spec.podCIDR` if it is IPv6 (an IPv6-only Node's).
pub fn pod_cidr6(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs.as_ref().and_then(|v| v.iter().find(|c| c.contains(':')).cloned()).or_else(|| spec.pod_cidr.clone().filter(|c| c.contains(':')))
}

/// The IPv6 podCIDR kube mode gives node `n` in dual stack and on an
/// IPv6-only network: the n-th /64 of `network6` (`fd44::/48` ->
/// `fd44:0:0:n::/64`), as kube-controller-manager assigns them with a
/// dual-stack or IPv6 `--cluster-cidr`.
pub fn default_pod_cidr6(network6: Ipv6Cidr, n: u32) -> String {
    let a = Ipv6Addr::from(u128::from(network6.trunc().addr) | (u128::from(n) << 64));
    format!("{a}/64")
}

/// Node `name`'s annotations (empty if it has none).
pub fn annotations_of(node: &Node) -> BTreeMap<String, String> {
    node.metadata.annotations.clone().unwrap_or_default()
}

/// The lease flannel's kube subnet manager reads from `node`, if it holds
/// one: (lease name `10.244.5.0-24`, flannel's lease JSON). `BackendData`
/// is the annotation parsed as JSON, or its raw text if it is not JSON. A
/// Node with no IPv4 podCIDR but an IPv6 one and `public-ipv6` is an
/// IPv6-only node's: `0.0.0.0-0&fd44:0:0:5::-64`, as flannel names it.
pub fn lease_of(node: &Node) -> Option<(String, String)> {
    let a = annotations_of(node);
    if a.get(&annotation("kube-subnet-manager")).map(String::as_str) != Some("true") {
        return None;
    }
    let json_of = |k: &str| a.get(&annotation(k)).map(|d| serde_json::from_str::<Value>(d).unwrap_or_else(|_| Value::String(d.clone())));
    let Some(cidr) = pod_cidr(node) else {
        let (c6, ip6) = (pod_cidr6(node)?, a.get(&annotation("public-ipv6"))?);
        let mut v = json!({
            "PublicIP": a.get(&annotation("public-ip")).map(String::as_str).unwrap_or("0.0.0.0"),
            "PublicIPv6": ip6,
            "BackendType": a.get(&annotation("backend-type")),
        });
        for (k, field) in [("backend-data", "BackendData"), ("backend-v6-data", "BackendV6Data")] {
            if let Some(d) = json_of(k).filter(|d| !d.is_null()) {
                v[field] = d;
            }
        }
        return Some((format!("0.0.0.0-0&{}", c6.replace('/', "-")), v.to_string()));
    };
    let mut v = json!({
        "PublicIP": a.get(&annotation("public-ip")),
        "PublicIPv6": null,
        "BackendType": a.get(&annotation("backend-type")),
        "BackendData": json_of("backend-data").unwrap_or(Value::Null),
    });
    let mut name = cidr.replace('/', "-");
    if let (Some(c6), Some(ip6)) = (pod_cidr6(node), a.get(&annotation("public-ipv6"))) {
        name = format!("{name}&{}", c6.replace('/', "-"));
        v["PublicIPv6"] = Value::String(ip6.clone());
        if let Some(d6) = json_of("backend-v6-data").filter(|d| !d.is_null()) {
            v["BackendV6Data"] = d6;
        }
    }
    Some((name, v.to_string()))
}

/// A condition timestamp: now + `offset_s` seconds (whole seconds, as the
/// API serializes them; distinct offsets give distinct values).
pub fn heartbeat_time(offset_s: i64) -> Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(now + offset_s).unwrap_or_default())
}

/// A Node as a kubelet registers it (and the node controller fills in
/// podCIDR): InternalIP `ip`, condition Ready True, `spec.podCIDR` and
/// `spec.podCIDRs` = `pod_cidr` (none if `None`; an IPv6 one on an
/// IPv6-only cluster).
pub fn node_object(name: &str, ip: Ipv4Addr, pod_cidr: Option<&str>) -> Node {
    node_object_cidrs(name, ip, &pod_cidr.into_iter().collect::<Vec<_>>())
}

/// [`node_object`] with `spec.podCIDRs` = `cidrs` (a dual-stack Node: the
/// IPv4 one and the IPv6 one; an IPv6-only Node: the IPv6 one) and
/// `spec.podCIDR` the first of them; InternalIP `ip` (IPv6 on an IPv6-only
/// cluster).
pub fn node_object_cidrs(name: &str, ip: impl Into<IpAddr>, cidrs: &[&str]) -> Node {
    let ip: IpAddr = ip.into();
    let all: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()), ..Default::default() },
        spec: Some(NodeSpec { pod_cidr: all.first().cloned(), pod_cidrs: (!all.is_empty()).then_some(all), ..Default::default() }),
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
    /// `/tmp/<name>`; an IPv6 `ip` goes into the certificate's SAN and the
    /// kubeconfigs' `https://[ip]:PORT`), writes both kubeconfigs;
    /// net-conf.json goes to `net_conf`.
    pub fn start(sw: &Netns, ip: IpAddr, name: &str, net_conf: &Path) -> Result<KubeStore> {
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
    /// that is not a weft node of the cluster appears in kube mode. A
    /// dual-stack name (`10.244.5.0-24&fd44:0:0:5::-64`) gives the Node both
    /// podCIDRs and, as flanneld writes them, `public-ipv6` and
    /// `backend-v6-data` (the JSON text, or `null`). An IPv6-only name
    /// (`0.0.0.0-0&fd44:0:0:5::-64`) gives it the IPv6 podCIDR alone (as
    /// `spec.podCIDR` too) and flanneld's IPv6-only annotations: no
    /// `public-ip` and `backend-data` for vxlan (its BackendData is null),
    /// `0.0.0.0` and `null` for host-gw.
    ///
    /// A lease a host's own Node already holds (a name not `lease-*`: a
    /// flanneld node's, [`crate::flannel_kube`]) is written onto that Node
    /// instead, as flanneld's kube subnet manager writes its annotations
    /// onto its own Node: the annotations above merged in, the rest of the
    /// Node (its podCIDR, other annotations) left alone. IPv4 leases only.
    pub fn put(&self, name: &str, value: &str) -> Result<()> {
        let v: Value = serde_json::from_str(value).with_context(|| format!("lease value {value}"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let data = v.get("BackendData").cloned().unwrap_or(Value::Null).to_string();
        if let Some(host) = self.node_of_lease(name).filter(|n| !n.starts_with("lease-")) {
            ensure!(!name.contains('&'), "lease {name} is held by Node {host}: the harness rewrites a host's Node for IPv4 leases only");
            let ann =
                [("kube-subnet-manager", "true".to_string()), ("backend-type", s("BackendType")), ("backend-data", data.clone()), ("public-ip", s("PublicIP"))];
            self.api
                .update_node(&host, |n| n.metadata.annotations.get_or_insert_with(Default::default).extend(ann.into_iter().map(|(k, v)| (annotation(k), v))))?;
            return Ok(());
        }
        let (v4, v6) = match name.split_once('&') {
            Some((a, b)) => (a, Some(b)),
            None => (name, None),
        };
        let ipv6_only = v4 == "0.0.0.0-0";
        let mut node = annotated_node(&format!("lease-{name}"), &s("PublicIP"), &v4.replace('-', "/"), &s("BackendType"), &data);
        if let Some(v6) = v6 {
            let (a, len) = v6.rsplit_once('-').with_context(|| format!("lease name {name}: IPv6 part {v6}"))?;
            let cidr6 = format!("{a}/{len}");
            if let Some(spec) = node.spec.as_mut() {
                if ipv6_only {
                    spec.pod_cidr = Some(cidr6.clone());
                    spec.pod_cidrs = Some(vec![cidr6]);
                } else {
                    spec.pod_cidrs = Some(vec![v4.replace('-', "/"), cidr6]);
                }
            }
            let ann = node.metadata.annotations.get_or_insert_with(Default::default);
            if ipv6_only && s("BackendType") == "vxlan" && data == "null" {
                ann.remove(&annotation("public-ip"));
                ann.remove(&annotation("backend-data"));
            }
            ann.insert(annotation("public-ipv6"), s("PublicIPv6"));
            ann.insert(annotation("backend-v6-data"), v.get("BackendV6Data").cloned().unwrap_or(Value::Null).to_string());
        }
        // A Node's name is a DNS subdomain: no '&' or ':'.
        let node_name = format!("lease-{}", name.replace(['&', ':'], "-"));
        node.metadata.name = Some(node_name.clone());
        if self.api.node(&node_name).is_some() {
            let (ann, spec) = (node.metadata.annotations.clone(), node.spec.clone());
            self.api.update_node(&node_name, |n| {
                n.metadata.annotations = ann;
                n.spec = spec;
            })?;
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

    /// `kubectl <args>` with the ADMIN kubeconfig, run in the switch
    /// namespace (where the server listens); its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let home = self.api.dir().join("kubectl-home");
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let bin = std::env::var("WEFT_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(bin)
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--cache-dir={}", home.join("cache").display()))
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", &home)
            .env_remove("KUBECONFIG");
        let out = c.output().context("running kubectl (is it installed?)")?;
        ensure!(out.status.success(), "kubectl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

#[cfg(test)]
mod t {
    use super::*;

    fn node6(ann: &[(&str, &str)], cidr6: &str) -> Node {
        let mut n = node_object_cidrs("v6", "fd77::3".parse::<Ipv6Addr>().unwrap(), &[cidr6]);
        n.metadata.annotations = Some(ann.iter().map(|(k, v)| (annotation(k), v.to_string())).collect());
        n
    }

    #[test]
    fn ipv6_only_nodes_hold_flannels_ipv6_only_leases() {
        let vx = [
            ("kube-subnet-manager", "true"),
            ("backend-type", "vxlan"),
            ("public-ipv6", "fd77::3"),
            ("backend-v6-data", r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6f"}"#),
        ];
        let n = node6(&vx, "fd44:0:0:3::/64");
        assert_eq!(n.spec.as_ref().unwrap().pod_cidr.as_deref(), Some("fd44:0:0:3::/64"));
        assert_eq!((pod_cidr(&n), pod_cidr6(&n).as_deref()), (None, Some("fd44:0:0:3::/64")));
        let (name, v) = lease_of(&n).unwrap();
        assert_eq!(name, "0.0.0.0-0&fd44:0:0:3::-64");
        let j: Value = serde_json::from_str(&v).unwrap();
        assert_eq!(j, json!({"PublicIP":"0.0.0.0","PublicIPv6":"fd77::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6f"}}));
        // host-gw: public-ip 0.0.0.0 and the null data, as flanneld writes them.
        let hg = [
            ("kube-subnet-manager", "true"),
            ("backend-type", "host-gw"),
            ("public-ipv6", "fd77::4"),
            ("backend-v6-data", "null"),
            ("backend-data", "null"),
            ("public-ip", "0.0.0.0"),
        ];
        let j: Value = serde_json::from_str(&lease_of(&node6(&hg, "fd44:0:0:4::/64")).unwrap().1).unwrap();
        assert_eq!(j, json!({"PublicIP":"0.0.0.0","PublicIPv6":"fd77::4","BackendType":"host-gw"}));
        // No public-ipv6: no lease.
        assert_eq!(lease_of(&node6(&vx[..2], "fd44:0:0:5::/64")), None);
        assert_eq!(default_pod_cidr6(Ipv6Cidr::parse("fd44::/48").unwrap(), 5), "fd44:0:0:5::/64");
    }
}
