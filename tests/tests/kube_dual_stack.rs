//! Dual stack in kube mode (`--kube-subnet-mgr` with `"EnableIPv6":true`),
//! as flanneld v0.2x's kube subnet manager: each Node has an IPv4 and an
//! IPv6 podCIDR (spec.podCIDRs), the IPv6 underlay is fd77::/64.
//!
//! - `kube_dual_stack_vxlan`: three weftd nodes and a flannel-programmed
//!   dual-stack node whose Node carries flanneld's annotations. Each weftd's
//!   subnet.env is its Node's two podCIDRs; its Node (read with kubectl)
//!   carries `public-ipv6` (the address) and `backend-v6-data` (Go's JSON of
//!   weft-v6.1's VNI and MAC) beside the IPv4 annotations; every lease is
//!   `&`-keyed with PublicIPv6; `weftd status` lists the IPv6 subnets; ping
//!   and TCP over both families between all pods, the flannel node's too.
//! - `kube_dual_stack_waits_for_ipv6_pod_cidr`: a Node with only an IPv4
//!   podCIDR keeps its weftd waiting (not ready, naming the IPv6 podCIDR,
//!   nothing announced, no subnet.env); once the IPv6 podCIDR is set it comes
//!   up with it, and IPv6 reaches its pods. `--cleanup-on-exit` then removes
//!   all six annotations, and the other node drops its IPv6 subnet.
//! - `kube_dual_stack_restart_keeps_v6_mac_and_takes_overwrite`: weftd
//!   restarted with weft-v6.1 deleted (a reboot) and `public-ipv6-overwrite`
//!   set: the new weft-v6.1 takes the VtepMAC of our `backend-v6-data`,
//!   `public-ipv6` becomes the overwrite, the peer's weft-v6.1 FDB entry
//!   follows, and IPv6 still reaches the pods.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use weft_tests::{
    cluster::node_ip6,
    cmd,
    kube_store::{annotation, default_pod_cidr6, pod_cidr, pod_cidr6, MERGE},
    metrics::{self, ARGS},
    pod::Family,
    subnet_env::{parse_lease_name6, Ipv4Subnet},
    weft_node::OVERLAY6_DEV,
    Cluster, NodeRef, Wiring,
};

const PINGS: u32 = 3;
const TCP_BYTES: u64 = 1 << 20;

/// Node `n`'s Node as `kubectl get node -o json` shows it.
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

/// Weft node `n`: subnet.env is its Node's two podCIDRs, and its Node
/// carries flanneld's dual-stack vxlan annotations in flanneld's exact forms.
fn check_node(c: &Cluster, n: NodeRef) -> Result<()> {
    let name = c.node_name(n)?;
    let node = c.kube()?.api.node(&name).with_context(|| format!("no Node {name}"))?;
    let env = c.node_env(n)?;
    let s6 = env.ipv6_subnet.with_context(|| format!("node {n}: subnet.env has no FLANNEL_IPV6_SUBNET"))?;
    ensure!(pod_cidr(&node).as_deref() == Some(env.cidr().as_str()), "node {n}: subnet.env {} but IPv4 podCIDR {:?}", env.cidr(), pod_cidr(&node));
    ensure!(pod_cidr6(&node) == Some(s6.to_string()), "node {n}: FLANNEL_IPV6_SUBNET {s6} but IPv6 podCIDR {:?}", pod_cidr6(&node));
    let k = kubectl_node(c, n)?;
    let a = &k["metadata"]["annotations"];
    let get = |short: &str| a[annotation(short)].as_str().map(str::to_string).with_context(|| format!("node {n}: no annotation {short} in {a}"));
    ensure!(get("kube-subnet-manager")? == "true" && get("backend-type")? == "vxlan", "node {n}: {a}");
    ensure!(get("public-ip")? == c.node_ip(n)?.to_string(), "node {n}: public-ip {:?}", get("public-ip")?);
    ensure!(
        get("public-ipv6")? == node_ip6(n).to_string(),
        "node {n}: public-ipv6 {:?}, want {} (eth0's global IPv6 address)",
        get("public-ipv6")?,
        node_ip6(n)
    );
    let (mac4, mac6) = (mac_of(c, n, "weft.1")?, mac_of(c, n, OVERLAY6_DEV)?);
    ensure!(get("backend-data")? == format!(r#"{{"VNI":1,"VtepMAC":"{mac4}"}}"#), "node {n}: backend-data {:?}, weft.1 has {mac4}", get("backend-data")?);
    ensure!(
        get("backend-v6-data")? == format!(r#"{{"VNI":1,"VtepMAC":"{mac6}"}}"#),
        "node {n}: backend-v6-data {:?} is not flanneld's form for {OVERLAY6_DEV} (MAC {mac6})",
        get("backend-v6-data")?
    );
    ensure!(mac4 != mac6, "node {n}: weft.1 and {OVERLAY6_DEV} share MAC {mac4}");
    Ok(())
}

#[test]
fn kube_dual_stack_vxlan() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().dual_stack().weft_nodes(3).weftd_args(&ARGS).build()?;
    // A node programmed as flanneld programs the kernel, its Node as flanneld
    // v0.2x leaves it in dual stack (both podCIDRs, public-ipv6, backend-v6-data).
    let f = c.add_flannel_node()?;
    c.wait_converged().context("weft nodes programming every peer, IPv4 and IPv6")?;
    for n in [1, 2, 3] {
        check_node(&c, n)?;
    }
    // Every Node's lease is dual stack: weft nodes' and the flannel node's.
    let leases = c.leases()?;
    ensure!(leases.len() == 4, "{} leases, want 4: {leases:#?}", leases.len());
    for (k, v) in &leases {
        let j: Value = serde_json::from_str(v)?;
        ensure!(parse_lease_name6(k).is_some() && j["PublicIPv6"].is_string(), "lease {k} = {v} is not dual stack");
    }
    // The flannel node programs itself from the weft nodes' Nodes: both
    // subnets of each.
    let mut programmed = c.flannel_node(f)?.reprogram(&c.store)?;
    let mut want = Vec::new();
    for n in [1, 2, 3] {
        let env = c.node_env(n)?;
        want.push(env.cidr());
        want.push(env.ipv6_subnet.context("no IPv6 subnet")?.to_string());
    }
    programmed.sort();
    want.sort();
    ensure!(programmed == want, "the flannel node programmed {programmed:?} from the weft nodes' Nodes, want {want:?}");
    // weftd status reads the same Nodes: the IPv6 subnet and PublicIPv6 of each.
    let w = c.weft_node(1)?;
    let mut st = w.ns.nsenter(&cmd::weftd_bin()?);
    st.args(["status", "--json"]).args(c.store.weftd_args()).arg("--subnet-file").arg(&w.subnet_file).arg("--bpf-pin-dir").arg(&w.pin_dir);
    st.envs(w.env.iter().map(|(k, v)| (k, v)));
    let out = cmd::run(&mut st)?;
    let doc: Value = serde_json::from_str(&out).with_context(|| format!("status --json: {out}"))?;
    for n in [1, 2, 3, f] {
        let env = c.node_env(n)?;
        let s6 = env.ipv6_subnet.with_context(|| format!("node {n} has no IPv6 subnet"))?.to_string();
        let l = doc["leases"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["subnet"] == env.cidr().as_str()))
            .with_context(|| format!("status lacks {}: {doc}", env.cidr()))?;
        ensure!(l["subnet6"] == s6.as_str() && l["public_ipv6"] == node_ip6(n).to_string().as_str(), "status for node {n}: {l}");
    }
    let mut pods = Vec::new();
    for n in c.nodes() {
        pods.push(c.add_pod(n, Wiring::Bridge)?);
    }
    pods.push(c.add_pod(2, Wiring::VethRoute)?);
    for &p in &pods {
        ensure!(c.pods[p].ip6.is_some(), "pod {} on node {} has no IPv6 address", c.pods[p].ns.name(), c.pods[p].node);
    }
    for family in Family::BOTH {
        c.traffic_across_nodes(&pods, family, PINGS, TCP_BYTES)?;
    }
    c.pass();
    Ok(())
}

#[test]
fn kube_dual_stack_waits_for_ipv6_pod_cidr() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().dual_stack().weft_nodes(2).weftd_args(&ARGS).no_start().build()?;
    let name2 = c.node_name(2)?;
    let (cidr4, cidr6) = (c.default_pod_cidr(2), default_pod_cidr6(c.ipv6_network.context("no IPv6Network")?, 2));
    c.kube()?.api.update_node(&name2, |n| {
        if let Some(s) = n.spec.as_mut() {
            s.pod_cidrs = Some(vec![cidr4.clone()]);
        }
    })?;
    c.start_weftd(1)?;
    c.start_weftd_with(2, &["--cleanup-on-exit"])?;
    c.wait_node_ready(1)?;
    let waiting = cmd::poll("node 2's /readyz to say it waits for an IPv6 podCIDR", Duration::from_secs(15), Duration::from_millis(200), || {
        let r = metrics::get(c.node_ns(2).map_err(|e| format!("{e:#}"))?, "/readyz").map_err(|e| format!("{e:#}"))?;
        if r.starts_with("HTTP/1.1 503") && r.contains("IPv6 podCIDR") {
            Ok(Some(r))
        } else {
            Err(r)
        }
    })?;
    eprintln!("without an IPv6 podCIDR: {}", waiting.lines().last().unwrap_or_default());
    std::thread::sleep(Duration::from_secs(1));
    ensure!(c.weft_node_mut(2)?.exit_status().is_none(), "weftd on node 2 exited while waiting for an IPv6 podCIDR");
    ensure!(c.weft_node(2)?.subnet_env().is_err(), "node 2 wrote subnet.env without an IPv6 podCIDR");
    let ann = c.kube()?.api.node(&name2).and_then(|n| n.metadata.annotations).unwrap_or_default();
    ensure!(!ann.contains_key(&annotation("kube-subnet-manager")), "node 2 announced a lease without an IPv6 podCIDR: {ann:?}");
    // The node controller's job, done by an admin.
    c.kube()?.patch_node(&name2, false, MERGE, &json!({"spec": {"podCIDRs": [cidr4, cidr6]}}))?;
    let env = c.wait_node_ready(2)?;
    ensure!(
        env.ipv6_subnet.map(|s| s.to_string()).as_deref() == Some(cidr6.as_str()),
        "node 2 took IPv6 subnet {:?} after {cidr6} was assigned",
        env.ipv6_subnet
    );
    c.wait_converged()?;
    check_node(&c, 2)?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    c.traffic_across_nodes(&[p1, p2], Family::V6, PINGS, TCP_BYTES)?;
    // --cleanup-on-exit gives the lease up: every annotation weftd wrote goes.
    let st = c.weft_node_mut(2)?.terminate()?;
    ensure!(st.success(), "weftd on node 2, SIGTERM: {st}");
    let ann = c.kube()?.api.node(&name2).and_then(|n| n.metadata.annotations).unwrap_or_default();
    for k in ["kube-subnet-manager", "backend-type", "backend-data", "public-ip", "public-ipv6", "backend-v6-data"] {
        ensure!(!ann.contains_key(&annotation(k)), "node 2 still has {k} after --cleanup-on-exit: {ann:?}");
    }
    // Node 1 drops node 2's IPv6 subnet.
    let s6 = env.ipv6_subnet.context("no v6")?.to_string();
    cmd::poll("node 1 to drop node 2's IPv6 route", Duration::from_secs(10), Duration::from_millis(200), || {
        let r = c.node_ns(1).and_then(|ns| ns.ip(&["-6", "route", "show", "dev", OVERLAY6_DEV])).map_err(|e| format!("{e:#}"))?;
        if r.lines().any(|l| l.starts_with(&s6)) {
            Err(r)
        } else {
            Ok(Some(()))
        }
    })?;
    c.pass();
    Ok(())
}

#[test]
fn kube_dual_stack_restart_keeps_v6_mac_and_takes_overwrite() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().kube().dual_stack().weft_nodes(2).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    check_node(&c, 1)?;
    let before = mac_of(&c, 1, OVERLAY6_DEV)?;
    let name = c.node_name(1)?;
    // A reboot, as far as weft-v6.1 goes; and a second IPv6 address on eth0
    // that the admin says is node 1's PublicIPv6.
    c.weft_node_mut(1)?.stop();
    c.node_ns(1)?.ip(&["link", "del", OVERLAY6_DEV])?;
    let overwrite = "fd77::101";
    let ns1 = c.node_ns(1)?;
    ns1.ip(&["-6", "addr", "add", &format!("{overwrite}/64"), "dev", "eth0", "nodad"])?;
    // fd77::1 added again comes first: the address weftd takes from eth0
    // without the overwrite.
    let own = format!("{}/64", node_ip6(1));
    ns1.ip(&["-6", "addr", "del", &own, "dev", "eth0"])?;
    ns1.ip(&["-6", "addr", "add", &own, "dev", "eth0", "nodad"])?;
    let first = ns1.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])?;
    ensure!(
        first.lines().next().is_some_and(|l| l.contains(&own)),
        "eth0's first global IPv6 address is not {own}, so the overwrite would not be told apart:\n{first}"
    );
    let patch = json!({ "metadata": { "annotations": { annotation("public-ipv6-overwrite"): overwrite } } });
    c.kube()?.patch_node(&name, false, MERGE, &patch)?;
    c.start_weftd(1)?;
    cmd::poll("node 1's public-ipv6 to follow public-ipv6-overwrite", Duration::from_secs(20), Duration::from_millis(200), || {
        let node = c.kube().map_err(|e| format!("{e:#}"))?.api.node(&name).ok_or("no Node")?;
        let got = node.metadata.annotations.unwrap_or_default().get(&annotation("public-ipv6")).cloned().unwrap_or_default();
        if got == overwrite {
            Ok(Some(()))
        } else {
            Err(format!("public-ipv6 {got:?}"))
        }
    })?;
    let after = cmd::poll("node 1's weftd to make weft-v6.1 again", Duration::from_secs(15), Duration::from_millis(100), || {
        mac_of(&c, 1, OVERLAY6_DEV).map(Some).map_err(|e| format!("{e:#}"))
    })?;
    ensure!(after == before, "the new {OVERLAY6_DEV} has MAC {after}, not the VtepMAC {before} of our backend-v6-data");
    let k = kubectl_node(&c, 1)?;
    let d6 = k["metadata"]["annotations"][annotation("backend-v6-data")].as_str().unwrap_or_default().to_string();
    ensure!(d6 == format!(r#"{{"VNI":1,"VtepMAC":"{before}"}}"#), "node 1's backend-v6-data {d6:?} after the restart");
    cmd::poll("node 2's FDB entry for node 1 to point at the overwrite", Duration::from_secs(20), Duration::from_millis(200), || {
        let fdb =
            cmd::sh("bridge", &["-n", c.node_ns(2).map_err(|e| format!("{e:#}"))?.name(), "fdb", "show", "dev", OVERLAY6_DEV]).map_err(|e| format!("{e:#}"))?;
        if fdb.lines().any(|l| l.starts_with(&before) && l.contains(&format!("dst {overwrite} "))) {
            Ok(Some(()))
        } else {
            Err(fdb)
        }
    })?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.traffic_across_nodes(&[p1, p2], Family::V6, PINGS, TCP_BYTES)?;
    c.pass();
    Ok(())
}
