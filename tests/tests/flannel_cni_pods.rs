//! Pods flannel's CNI plugin attached (bridge + host-local, the harness's
//! `add_flannel_cni_pod`) get weft's fast path (issue 24's "registers the
//! pods already on cni0"): weftd finds them in host-local's store
//! (`--cni-store`) and on cni0's veths, and registers them as weft-cni's
//! pods (`weft_pods`: the pod's address -> its host veth's ifindex, its MAC,
//! cni0's MAC; `weft_from_pod` on the veth).
//!
//! On a flannel-programmed node swapped to weftd (vxlan and host-gw: the
//! receiving halves differ, `weft_decap` and `weft_to_pod`): the pod made
//! before the swap is registered, a peer's echo requests go straight into
//! it (`decap_to_pod` or `routed_to_pod` counts them), one made after the
//! swap is registered within [`EVENT`] (an event, not the 10 s resync), and
//! one deleted by the bridge plugin's DEL leaves the map with its link.
//! On a weft node whose weftd starts with such a pod already there, the
//! pod is registered at start, and the pod's address removed and added
//! back inside the pod (no link event on the node) takes it out of the
//! map and back in within [`EVENT`].
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_common::{prog_names, stat};
use weft_tests::{
    bpf, cmd,
    cni::{self, CniArgs},
    flannel_node::FlannelBackend,
    swap::WeftdStart,
    traffic, Cluster, NodeRef, Wiring,
};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// How long a wait for the map may take (scaled by the harness's patience).
const WAIT: Duration = Duration::from_secs(15);
/// A change found by an event is in the map within this, not scaled: half
/// weftd's 10 s resync, which would find it too (an event takes milliseconds).
const EVENT: Duration = Duration::from_secs(5);

/// A `weft_pods` entry: (host veth ifindex, pod MAC, gateway MAC).
type Entry = (u64, Vec<u64>, Vec<u64>);

/// A number of bpftool's JSON: a number or a "0x.." string.
fn num(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()))
}

fn nums(v: &Value) -> Vec<u64> {
    v.as_array().into_iter().flatten().filter_map(num).collect()
}

/// Node `n`'s `weft_pods`, by pod address.
fn pods_map(c: &Cluster, n: NodeRef) -> Result<Vec<(Ipv4Addr, Entry)>> {
    let dump = bpf::map_dump(&c.weft_node(n)?.pods_pin())?;
    let mut out = Vec::new();
    for e in dump.as_array().into_iter().flatten() {
        let f = &e["formatted"];
        let k = nums(&f["key"]);
        ensure!(k.len() == 4, "weft_pods key {}", f["key"]);
        let v = &f["value"];
        let ifindex = num(&v["host_ifindex"]).with_context(|| format!("weft_pods value {v}"))?;
        out.push((Ipv4Addr::new(k[0] as u8, k[1] as u8, k[2] as u8, k[3] as u8), (ifindex, nums(&v["pod_mac"]), nums(&v["gw_mac"]))));
    }
    out.sort();
    Ok(out)
}

/// (ifindex, MAC) of `dev` in `ns`, from `ip -j link`.
fn link(ns: &weft_tests::netns::Netns, dev: &str) -> Result<(u64, Vec<u64>)> {
    let v = cni::ip_json(ns, &["link", "show", "dev", dev])?;
    let idx = v.pointer("/0/ifindex").and_then(Value::as_u64).with_context(|| format!("no ifindex for {dev}: {v}"))?;
    let mac = v.pointer("/0/address").and_then(Value::as_str).with_context(|| format!("no MAC for {dev}: {v}"))?;
    Ok((idx, mac.split(':').filter_map(|b| u64::from_str_radix(b, 16).ok()).collect()))
}

/// What node `n`'s `weft_pods` must hold for pods `pods`: each pod's host
/// veth's ifindex, its eth0's MAC and cni0's MAC.
fn expected(c: &Cluster, n: NodeRef, pods: &[usize]) -> Result<Vec<(Ipv4Addr, Entry)>> {
    let node = c.node_ns(n)?;
    let (_, gw) = link(node, "cni0")?;
    let mut out = Vec::new();
    for &p in pods {
        let pod = &c.pods[p];
        let (ifindex, _) = link(node, &pod.host_veth)?;
        let (_, mac) = link(&pod.ns, "eth0")?;
        out.push((pod.ip(), (ifindex, mac, gw.clone())));
    }
    out.sort();
    Ok(out)
}

/// Waits up to [`WAIT`] for node `n`'s `weft_pods` to be exactly
/// [`expected`] for `pods`; how long it took.
fn wait_registered(c: &Cluster, n: NodeRef, pods: &[usize]) -> Result<Duration> {
    let want = expected(c, n, pods)?;
    let t0 = std::time::Instant::now();
    cmd::poll(&format!("node {n}: weft_pods = {want:?}"), WAIT, Duration::from_millis(20), || match pods_map(c, n) {
        Ok(have) if have == want => Ok(Some(())),
        Ok(have) => Err(format!("have {have:?}")),
        Err(e) => Err(format!("{e:#}")),
    })?;
    Ok(t0.elapsed())
}

/// As [`wait_registered`], and within [`EVENT`]: an event's doing, not the resync's.
fn on_event(c: &Cluster, n: NodeRef, pods: &[usize], what: &str) -> Result<()> {
    let took = wait_registered(c, n, pods).with_context(|| what.to_string())?;
    eprintln!("{what}: weft_pods right {took:?} after");
    ensure!(took < EVENT, "{what}: weft_pods took {took:?} to be right, as long as weftd's resync takes to notice");
    Ok(())
}

/// Whether node `n` has `weft_from_pod` pinned on the device `ifindex`.
fn from_pod_on(c: &Cluster, n: NodeRef, ifindex: u64) -> Result<bool> {
    let dir = weft_common::pins::links_dir(&c.weft_node(n)?.pin_dir);
    let name = weft_common::pins::link_name(prog_names::FROM_POD, ifindex as u32);
    Ok(dir.join(name).exists())
}

/// The bridge plugin's DEL for flannel-CNI pod `p` of node `n`, with the
/// configuration flannel's plugin cached at ADD (as its DEL runs it).
fn flannel_cni_del(c: &Cluster, n: NodeRef, p: usize) -> Result<()> {
    let pod = &c.pods[p];
    let (name, _) = pod.cni.as_ref().context("not a CNI pod")?;
    let delegate = std::fs::read(c.dir().join(format!("n{n}")).join("var/lib/cni/flannel").join(name)).context("flannel's cached delegate")?;
    let out = cni::exec(c.node_ns(n)?, &cni::debian_plugin("bridge")?, &CniArgs::new("DEL", name, Some(&pod.ns.path()), "eth0"), &delegate)?;
    out.empty_success().with_context(|| format!("bridge DEL of pod {name}"))
}

/// The counter of node `n` that counts a peer's packets delivered straight
/// into a registered pod.
fn delivered(c: &Cluster, n: NodeRef, backend: FlannelBackend) -> Result<u64> {
    let idx = if backend == FlannelBackend::Vxlan { stat::DECAP_TO_POD } else { stat::ROUTED_TO_POD };
    Ok(c.stat_counter(n, idx)?.0)
}

fn swapped(config: &str, backend: FlannelBackend) -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(config).weft_nodes(1).build()?;
    let s = c.add_flannel_node_with(backend, 0)?;
    c.program_flannel_nodes()?;
    c.start_flanneld(s, false)?;
    c.wait_converged()?;
    let pw = c.add_pod(1, Wiring::Cni)?;
    let p1 = c.add_flannel_cni_pod(s)?;
    c.ping_across_nodes(&[pw, p1], 2).context("before the swap")?;
    match c.swap_to_weftd(s, &[])? {
        WeftdStart::Ready { .. } => {}
        WeftdStart::Refused { exit, error } => anyhow::bail!("weftd did not start ({exit}):\n{error}"),
    }

    // The pod made before the swap is registered, and the peer's traffic
    // goes straight into it.
    wait_registered(&c, s, &[p1]).context("the pod made before the swap")?;
    let d0 = delivered(&c, s, backend)?;
    traffic::ping_ok(&c.pods[pw].ns, c.pods[p1].ip(), 5)?;
    let d = delivered(&c, s, backend)? - d0;
    ensure!(d >= 5, "{d} of 5 echo requests to the adopted pod went straight into it");

    // A pod flannel's CNI plugin makes after the swap: registered on an event.
    let p2 = c.add_flannel_cni_pod(s)?;
    on_event(&c, s, &[p1, p2], "the ADD of a pod after the swap")?;
    let d0 = delivered(&c, s, backend)?;
    traffic::ping_ok(&c.pods[pw].ns, c.pods[p2].ip(), 5)?;
    ensure!(delivered(&c, s, backend)? >= d0 + 5, "echo requests to the pod made after the swap did not go straight into it");

    // The bridge plugin's DEL: the pod leaves the map, its veth's link goes.
    let gone = expected(&c, s, &[p1])?[0].1 .0;
    flannel_cni_del(&c, s, p1)?;
    on_event(&c, s, &[p2], "the DEL of the pod made before the swap")?;
    ensure!(!from_pod_on(&c, s, gone)?, "weft_from_pod is still pinned for the deleted pod's veth #{gone}");
    traffic::ping_ok(&c.pods[pw].ns, c.pods[p2].ip(), 2).context("the remaining pod")?;
    let problems = c.weftd_log_problems(s)?;
    ensure!(!problems.iter().any(|l| l.contains(" ERROR ") || l.contains("panicked")), "weftd logged:\n{problems:#?}");
    c.pass();
    Ok(())
}

#[test]
fn swapped_vxlan_node() -> Result<()> {
    swapped(VXLAN, FlannelBackend::Vxlan)
}

#[test]
fn swapped_host_gw_node() -> Result<()> {
    swapped(HOST_GW, FlannelBackend::HostGw)
}

/// A weftd that starts (no swap) on a node where flannel's CNI plugin
/// attached a pod while no weftd ran registers it at start, beside a
/// weft-cni pod on the same bridge.
#[test]
fn registered_at_start() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(VXLAN).weft_nodes(2).build()?;
    c.wait_converged()?;
    let p2 = c.add_pod(2, Wiring::Cni)?;
    // A weft-cni pod beside it on cni0: registered from its record. On a
    // node the two plugins share host-local's store; the harness keeps
    // weft-cni's apart, so its address is entered in flannel's as weft-cni
    // would have written it there.
    let pc = c.add_pod(1, Wiring::Cni)?;
    let store = c.flannel_cni_store(1);
    std::fs::create_dir_all(&store)?;
    let cid = c.pods[pc].cni.as_ref().context("weft-cni pod without a container ID")?.0.clone();
    std::fs::write(store.join(c.pods[pc].ip().to_string()), format!("{cid}\r\neth0"))?;
    c.weft_node_mut(1)?.kill();
    let p1 = c.add_flannel_cni_pod(1)?;
    c.start_weftd(1)?;
    wait_registered(&c, 1, &[pc, p1])?;
    let d0 = c.stat_counter(1, stat::DECAP_TO_POD)?.0;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip(), 5)?;
    ensure!(c.stat_counter(1, stat::DECAP_TO_POD)?.0 >= d0 + 5, "echo requests to the pod did not go straight into it");
    // The pod's address taken away and given back inside the pod (no link
    // event in the node's namespace): the address events of the pod's
    // namespace unregister and register it, well before the resync.
    let cidr = format!("{}/24", c.pods[p1].ip());
    c.pods[p1].ns.ip(&["addr", "del", &cidr, "dev", "eth0"])?;
    on_event(&c, 1, &[pc], "the pod's address removed")?;
    c.pods[p1].ns.ip(&["addr", "add", &cidr, "dev", "eth0"])?;
    on_event(&c, 1, &[pc, p1], "the pod's address back")?;
    c.pass();
    Ok(())
}
