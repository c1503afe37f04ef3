//! IPv6-only networks in kube mode (`--kube-subnet-mgr` with flannel's
//! `"EnableIPv4": false`): the underlay is fd77::/64 alone, the tests' API
//! server listens on `[fd77::fe]:6443` (kubectl and weftd reach it over
//! IPv6), and each Node has one IPv6 podCIDR (`spec.podCIDR` and
//! `spec.podCIDRs`), as kube-controller-manager assigns them with an IPv6
//! `--cluster-cidr`.
//!
//! - `kube_ipv6_only_vxlan`: three weftd nodes. Each subnet.env has only
//!   the IPv6 keys, its subnet its Node's podCIDR; each Node (read with
//!   kubectl) carries flanneld's IPv6-only vxlan annotations:
//!   `kube-subnet-manager`, `backend-type` vxlan, `public-ipv6` (fd77::N),
//!   `backend-v6-data` (`{"VNI":1,"VtepMAC":<weft-v6.1's MAC>}`) and no
//!   `public-ip` or `backend-data`; no weft.1 and no IPv4 pod route. A
//!   Node annotated by hand as flanneld annotates an IPv6-only vxlan node
//!   becomes a peer (route on weft-v6.1, FDB entry to its public-ipv6) and
//!   leaves when deleted. A flannel-programmed IPv6-only node (its Node
//!   written by the harness in the same forms) joins; ping and TCP over
//!   IPv6 between pods on every node, the flannel node's too.
//! - `kube_ipv6_only_host_gw`: the same on host-gw: `backend-data` null,
//!   `public-ip` 0.0.0.0 (flanneld's forms), `backend-v6-data` null; routes
//!   `<v6 subnet> via fd77::M dev eth0`, a hand-made host-gw Node's too;
//!   ping and TCP over IPv6 between all pods.
use std::{collections::BTreeMap, net::Ipv6Addr, time::Duration};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_tests::{
    cluster::{ipv6_only_config, node_ip6, IPV6_NETWORK, SWITCH_IP6},
    cmd,
    kube_store::{annotation, node_object_cidrs, pod_cidr, pod_cidr6, PORT},
    metrics::ARGS,
    pod::Family,
    subnet_env::{parse_lease_name6, Ipv6Cidr},
    weft_node::OVERLAY6_DEV,
    Cluster, NodeRef, Wiring,
};

const PINGS: u32 = 3;
const TCP_BYTES: u64 = 1 << 20;

/// Node `n`'s Node as `kubectl get node -o json` shows it (kubectl talking
/// to `https://[fd77::fe]:6443`).
fn kubectl_node(c: &Cluster, n: NodeRef) -> Result<Value> {
    let name = c.node_name(n)?;
    let out = c.kube()?.kubectl(&["get", "node", &name, "-o", "json"])?;
    serde_json::from_str(&out).with_context(|| format!("kubectl get node {name}: {out}"))
}

/// The MAC address of `dev` in node `n`.
fn mac_of(c: &Cluster, n: NodeRef, dev: &str) -> Result<String> {
    let out = c.node_ns(n)?.ip(&["-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -j link: {out}"))?;
    v[0]["address"].as_str().map(str::to_string).with_context(|| format!("no address: {out}"))
}

/// The API server listens on the switch's IPv6 address, and weftd was
/// given that URL.
fn api_is_on_ipv6(c: &Cluster) -> Result<()> {
    let k = c.kube()?;
    let want = format!("https://[{SWITCH_IP6}]:{PORT}");
    ensure!(k.api.url() == want, "the API server of an IPv6-only cluster is at {}, want {want}", k.api.url());
    let cfg: Value = serde_json::from_slice(&std::fs::read(&k.kubeconfig)?)?;
    ensure!(cfg.pointer("/clusters/0/cluster/server") == Some(&Value::String(want.clone())), "weftd's kubeconfig: {cfg}");
    Ok(())
}

/// Weft node `n`: subnet.env has only the IPv6 keys (as flanneld writes an
/// IPv6-only node's), its FLANNEL_IPV6_SUBNET is its Node's IPv6 podCIDR
/// (the Node's only one), and no IPv4 pod route or weft.1 exists.
fn check_subnet(c: &Cluster, n: NodeRef) -> Result<Ipv6Cidr> {
    let w = c.weft_node(n)?;
    let text = std::fs::read_to_string(&w.subnet_file).with_context(|| format!("node {n}: {}", w.subnet_file.display()))?;
    let mut keys: Vec<&str> = text.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    keys.sort();
    ensure!(
        keys == ["FLANNEL_IPMASQ", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU"],
        "node {n}: subnet.env of an IPv6-only node has keys {keys:?}:\n{text}"
    );
    let env = w.subnet_env()?;
    let net6 = Ipv6Cidr::parse(IPV6_NETWORK).context("IPV6_NETWORK")?;
    ensure!(env.ipv6_network == Some(net6), "node {n}: FLANNEL_IPV6_NETWORK {:?}, want {net6}:\n{text}", env.ipv6_network);
    let s6 = env.ipv6_subnet.with_context(|| format!("node {n}: no FLANNEL_IPV6_SUBNET:\n{text}"))?.trunc();
    let name = c.node_name(n)?;
    let node = c.kube()?.api.node(&name).with_context(|| format!("no Node {name}"))?;
    let spec = node.spec.clone().unwrap_or_default();
    ensure!(
        pod_cidr(&node).is_none() && spec.pod_cidrs.as_ref().map(Vec::len) == Some(1),
        "node {n}: the Node of an IPv6-only cluster has podCIDR {:?}, podCIDRs {:?}",
        spec.pod_cidr,
        spec.pod_cidrs
    );
    ensure!(
        pod_cidr6(&node) == Some(s6.to_string()) && spec.pod_cidr == Some(s6.to_string()),
        "node {n}: FLANNEL_IPV6_SUBNET {s6}, but the Node's podCIDR {:?}, podCIDRs {:?}",
        spec.pod_cidr,
        spec.pod_cidrs
    );
    let v4 = w.ns.ip(&["-4", "route", "show"])?;
    ensure!(v4.trim().is_empty(), "node {n}: IPv4 routes on an IPv6-only node:\n{v4}");
    ensure!(!w.has_link("weft.1"), "node {n}: weft.1 on an IPv6-only node");
    Ok(s6)
}

/// Weft node `n`'s flannel annotations (all of them, by short name), read
/// with kubectl.
fn flannel_annotations(c: &Cluster, n: NodeRef) -> Result<BTreeMap<String, String>> {
    let k = kubectl_node(c, n)?;
    let a = k["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    Ok(a.into_iter().filter_map(|(key, v)| Some((key.strip_prefix(&annotation(""))?.to_string(), v.as_str().unwrap_or_default().to_string()))).collect())
}

/// Weft node `n`'s Node carries exactly flanneld's IPv6-only annotations
/// for `backend`: vxlan `kube-subnet-manager`, `backend-type`,
/// `public-ipv6`, `backend-v6-data` (weft-v6.1's VNI and MAC) and nothing
/// for IPv4; host-gw also `backend-data` null and `public-ip` 0.0.0.0, and
/// `backend-v6-data` null.
fn check_annotations(c: &Cluster, n: NodeRef, backend: &str) -> Result<()> {
    let have = flannel_annotations(c, n)?;
    let mut want: BTreeMap<String, String> =
        [("kube-subnet-manager", "true".to_string()), ("backend-type", backend.to_string()), ("public-ipv6", node_ip6(n).to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    if backend == "vxlan" {
        let mac6 = mac_of(c, n, OVERLAY6_DEV)?;
        want.insert("backend-v6-data".into(), format!(r#"{{"VNI":1,"VtepMAC":"{mac6}"}}"#));
    } else {
        want.insert("backend-v6-data".into(), "null".into());
        want.insert("backend-data".into(), "null".into());
        want.insert("public-ip".into(), "0.0.0.0".into());
    }
    ensure!(have == want, "node {n}: flannel annotations on an IPv6-only {backend} node\n have {have:#?}\n want {want:#?}");
    Ok(())
}

/// Every Node lease is flannel's IPv6-only form `0.0.0.0-0&<v6>-64` with
/// PublicIP 0.0.0.0 and PublicIPv6 fd77::N.
fn check_leases(c: &Cluster) -> Result<()> {
    let leases = c.leases()?;
    ensure!(leases.len() == c.weft.len(), "{} leases for {} weft nodes: {leases:#?}", leases.len(), c.weft.len());
    for w in &c.weft {
        let s6 = c.node_env(w.n)?.ipv6_subnet.context("no IPv6 subnet")?.trunc();
        let name = format!("0.0.0.0-0&{}-64", s6.addr);
        let (k, v) = leases.iter().find(|(k, _)| *k == name).with_context(|| format!("node {}: no lease {name} in {leases:#?}", w.n))?;
        let j: Value = serde_json::from_str(v)?;
        ensure!(parse_lease_name6(k).map(Ipv6Cidr::trunc) == Some(s6), "lease {k}");
        ensure!(j["PublicIP"] == "0.0.0.0" && j["PublicIPv6"] == node_ip6(w.n).to_string().as_str(), "node {}: lease {k} = {v}", w.n);
    }
    Ok(())
}

/// Three weftd nodes on `backend`, IPv6-only, kube mode; the checks every
/// test shares.
fn cluster(backend: &str) -> Result<Cluster> {
    let c = Cluster::builder().kube().ipv6_only().config_json(&ipv6_only_config(backend)).weft_nodes(3).weftd_args(&ARGS).build()?;
    api_is_on_ipv6(&c)?;
    let mut subnets = Vec::new();
    for n in c.nodes() {
        subnets.push(check_subnet(&c, n)?.to_string());
    }
    subnets.sort();
    subnets.dedup();
    ensure!(subnets.len() == 3, "three nodes share IPv6 subnets: {subnets:?}");
    c.wait_converged().context("weft nodes programming every peer's IPv6 subnet")?;
    for n in c.nodes() {
        check_annotations(&c, n, backend)?;
    }
    check_leases(&c)?;
    Ok(c)
}

/// A Node that is not a weft node of the cluster, annotated by hand as
/// flanneld annotates an IPv6-only node of `backend` at PublicIPv6 `ip6`
/// with `cidr6`; vxlan with VtepMAC `mac`. Returns its name.
fn foreign_node(c: &Cluster, ip6: Ipv6Addr, cidr6: &str, backend: &str, mac: &str) -> Result<String> {
    let name = "flanneld-v6only".to_string();
    let mut node = node_object_cidrs(&name, ip6, &[cidr6]);
    let mut a = vec![("kube-subnet-manager", "true".to_string()), ("backend-type", backend.to_string()), ("public-ipv6", ip6.to_string())];
    if backend == "vxlan" {
        a.push(("backend-v6-data", format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)));
    } else {
        a.extend([("backend-v6-data", "null".to_string()), ("backend-data", "null".to_string()), ("public-ip", "0.0.0.0".to_string())]);
    }
    node.metadata.annotations = Some(a.into_iter().map(|(k, v)| (annotation(k), v)).collect());
    c.kube()?.api.create_node(node)?;
    Ok(name)
}

/// Waits (20 s) until every weft node has (or, `present` false, lacks) an
/// IPv6 route whose line starts with `want` (`ip -6 route show` [dev `dev`]).
fn wait_v6_route(c: &Cluster, dev: Option<&str>, want: &str, present: bool) -> Result<()> {
    for w in &c.weft {
        let what = format!("node {} to {} `{want}`", w.n, if present { "have" } else { "drop" });
        cmd::poll(&what, Duration::from_secs(20), Duration::from_millis(200), || {
            let routes = match dev {
                Some(d) => w.ns.ip(&["-6", "route", "show", "dev", d]),
                None => w.ns.ip(&["-6", "route", "show"]),
            }
            .map_err(|e| format!("{e:#}"))?;
            if routes.lines().any(|l| l.starts_with(want)) == present {
                Ok(Some(()))
            } else {
                Err(routes)
            }
        })?;
    }
    Ok(())
}

#[test]
fn kube_ipv6_only_vxlan() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = cluster("vxlan")?;
    // A Node as flanneld leaves an IPv6-only vxlan node: IPv6 podCIDR only,
    // public-ipv6 and backend-v6-data, no public-ip, no backend-data. Its
    // datapath is not programmed: only the weft nodes' side is checked.
    let (ip6, cidr6, mac) = (node_ip6(99), "fd44:0:0:f0::/64", "0e:2a:3b:4c:5d:6f");
    let name = foreign_node(&c, ip6, cidr6, "vxlan", mac)?;
    wait_v6_route(&c, Some(OVERLAY6_DEV), cidr6, true).context("weft nodes taking the hand-annotated IPv6-only Node as a peer")?;
    for w in &c.weft {
        let fdb = cmd::sh("bridge", &["-n", w.ns.name(), "fdb", "show", "dev", OVERLAY6_DEV])?;
        ensure!(fdb.lines().any(|l| l.starts_with(mac) && l.contains(&format!("dst {ip6} "))), "node {}: no FDB entry {mac} dst {ip6}:\n{fdb}", w.n);
    }
    ensure!(c.kube()?.api.delete_node(&name), "no Node {name}");
    wait_v6_route(&c, Some(OVERLAY6_DEV), cidr6, false).context("weft nodes forgetting the deleted Node")?;
    // A node programmed as flanneld programs an IPv6-only vxlan node
    // (flannel-v6.1 only), its Node in flanneld's forms.
    let f = c.add_flannel_node()?;
    let fname = c.kube()?.node_of_lease(&weft_tests::subnet_env::lease_name(&c.node_env(f)?)).context("no Node for the flannel node's lease")?;
    let fa = c.kube()?.api.node(&fname).and_then(|n| n.metadata.annotations).unwrap_or_default();
    ensure!(
        !fa.contains_key(&annotation("public-ip")) && !fa.contains_key(&annotation("backend-data")) && fa.contains_key(&annotation("backend-v6-data")),
        "the flannel node's Node {fname}: {fa:?}"
    );
    c.program_flannel_nodes()?;
    c.wait_converged().context("weft nodes programming the flannel node's IPv6 subnet")?;
    let mut pods = vec![c.add_pod(1, Wiring::Cni)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::Bridge)?, c.add_pod(3, Wiring::VethRoute)?];
    pods.push(c.add_pod(f, Wiring::Bridge)?);
    for &p in &pods {
        let pod = &c.pods[p];
        ensure!(pod.ip6.is_some() && pod.ip4.is_none(), "pod {} on node {}: {:?} {:?}", pod.ns.name(), pod.node, pod.ip4, pod.ip6);
    }
    c.traffic_across_nodes(&pods, Family::V6, PINGS, TCP_BYTES)?;
    c.pass();
    Ok(())
}

#[test]
fn kube_ipv6_only_host_gw() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = cluster("host-gw")?;
    for w in &c.weft {
        ensure!(!w.has_link(OVERLAY6_DEV), "node {}: {OVERLAY6_DEV} on a host-gw node", w.n);
    }
    let (ip6, cidr6) = (node_ip6(99), "fd44:0:0:f1::/64");
    let name = foreign_node(&c, ip6, cidr6, "host-gw", "")?;
    wait_v6_route(&c, None, &format!("{cidr6} via {ip6} dev eth0"), true).context("weft nodes routing the hand-annotated host-gw Node")?;
    ensure!(c.kube()?.api.delete_node(&name), "no Node {name}");
    wait_v6_route(&c, None, cidr6, false).context("weft nodes forgetting the deleted Node")?;
    let pods = vec![c.add_pod(1, Wiring::Cni)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::VethRoute)?];
    c.traffic_across_nodes(&pods, Family::V6, PINGS, TCP_BYTES)?;
    c.pass();
    Ok(())
}
