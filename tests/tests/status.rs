//! `weftd status`: run in a node's namespace with the node's own flags, it
//! agrees with the lease store (every lease, ours marked), with the kernel
//! (the datapath each peer really takes: BPF vxlan to weft and flannel
//! nodes; host-gw routes to a host-gw peer are not in a vxlan cluster), with
//! the pinned maps (pod endpoints, counters equal to bpftool's), as JSON and
//! as text; in dual stack also the IPv6 VTEPs (a peer's IPv6 subnet, its
//! PublicIPv6 and v6 VtepMAC, as its lease says) and a registered pod's
//! IPv6 address.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_common::{map_names, pins};
use weft_tests::{
    bpf,
    cluster::node_ip6,
    cmd,
    subnet_env::{parse_lease_name, Ipv4Subnet, Ipv6Cidr},
    traffic, Cluster, NodeRef, Wiring,
};

fn status(c: &Cluster, n: NodeRef, json: bool) -> Result<String> {
    let w = c.weft_node(n)?;
    let mut cmd = w.ns.nsenter(&cmd::weftd_bin()?);
    cmd.arg("status");
    if json {
        cmd.arg("--json");
    }
    cmd.args(c.store.weftd_args()).arg("--subnet-file").arg(&w.subnet_file).arg("--bpf-pin-dir").arg(&w.pin_dir);
    cmd::run(&mut cmd)
}

#[test]
fn status_agrees_with_store_kernel_and_maps() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let f = c.add_flannel_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(f, Wiring::Bridge)?];
    c.register_endpoint(pods[0])?;
    c.ping_across_nodes(&pods, 2)?;
    let pod_ip = c.pods[pods[0]].ip().to_string();
    let w1 = c.weft_node(1)?;
    cmd::poll("node 1 to register its pod", Duration::from_secs(10), Duration::from_millis(100), || {
        let d = bpf::map_dump(&w1.pods_pin()).map_err(|e| format!("{e:#}"))?;
        if d.as_array().is_some_and(|a| a.len() == 1) {
            Ok(Some(()))
        } else {
            Err(d.to_string())
        }
    })?;

    let doc: serde_json::Value = serde_json::from_str(&status(&c, 1, true)?).context("status --json is not JSON")?;
    let own = c.node_env(1)?.cidr();
    ensure!(doc["subnet"] == own.as_str(), "status says subnet {}, subnet.env {own}", doc["subnet"]);
    let leases = doc["leases"].as_array().context("no leases array")?;
    let store = c.leases()?;
    ensure!(leases.len() == store.len() && leases.len() == 3, "status lists {} leases, the store holds {}", leases.len(), store.len());
    for n in [1, 2, f] {
        let subnet = c.node_env(n)?.cidr();
        let l = leases.iter().find(|l| l["subnet"] == subnet.as_str()).with_context(|| format!("status lacks {subnet}: {doc}"))?;
        ensure!(l["public_ip"] == c.node_ip(n)?.to_string().as_str(), "{subnet}: public_ip {}", l["public_ip"]);
        let want = if n == 1 { "this node" } else { "vxlan (bpf)" };
        ensure!(l["datapath"] == want, "{subnet} (node {n}): datapath {}, want {want}", l["datapath"]);
        ensure!(l["this_node"] == (n == 1), "{subnet}: this_node {}", l["this_node"]);
    }
    let p = doc["pods"].as_array().context("no pods array")?;
    ensure!(p.len() == 1 && p[0]["ip"] == pod_ip.as_str() && p[0]["host_veth"] == c.pods[pods[0]].host_veth.as_str(), "pods: {}", doc["pods"]);
    // Quiet now: the counters equal bpftool's reading of the same map.
    for (idx, name) in [(stat::ENCAP, "encap"), (stat::DECAP, "decap"), (stat::DECAP_TO_POD, "decap_to_pod")] {
        let (packets, bytes) = bpf::stat_counter(&w1.stats_pin(), idx)?;
        ensure!(packets > 0, "{name}: no traffic counted");
        ensure!(
            doc["counters"][name]["packets"] == packets && doc["counters"][name]["bytes"] == bytes,
            "{name}: status {} vs bpftool {packets} packets {bytes} bytes",
            doc["counters"][name]
        );
    }
    let text = status(&c, 1, false)?;
    for n in [1, 2, f] {
        let subnet = c.node_env(n)?.cidr();
        ensure!(
            text.lines().any(|l| l.contains(&subnet) && l.contains(if n == 1 { "this node" } else { "vxlan (bpf)" })),
            "text status lacks {subnet}:\n{text}"
        );
    }
    ensure!(text.contains(&pod_ip) && text.contains("decap_to_pod"), "text status lacks the pod or the counters:\n{text}");
    eprintln!("{text}");
    c.pass();
    Ok(())
}

#[test]
fn status_shows_ipv6_vteps_and_pods() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p1)?;
    let w1 = c.weft_node(1)?;
    let pods6_pin = pins::dir(&w1.pin_dir).join(map_names::PODS6);
    cmd::poll("node 1 to register its pod's IPv6 address", Duration::from_secs(10), Duration::from_millis(100), || {
        let d = bpf::map_dump(&pods6_pin).map_err(|e| format!("{e:#}"))?;
        if d.as_array().is_some_and(|a| a.len() == 1) {
            Ok(Some(()))
        } else {
            Err(d.to_string())
        }
    })?;
    let ip6 = c.pods[p1].ip6.context("pod 1 has no IPv6 address")?;
    traffic::ping6_ok(&c.pods[p2].ns, ip6, 2).context("IPv6: pod 2 -> pod 1")?;

    let doc: serde_json::Value = serde_json::from_str(&status(&c, 1, true)?).context("status --json is not JSON")?;
    let own6 = c.node_env(1)?.ipv6_subnet.context("node 1's subnet.env has no IPv6 subnet")?;
    ensure!(
        doc["subnet6"].as_str().and_then(Ipv6Cidr::parse).map(Ipv6Cidr::trunc) == Some(own6.trunc()),
        "status says subnet6 {}, subnet.env {own6}",
        doc["subnet6"]
    );
    // Node 2's IPv6 VTEP as its lease announces it.
    let env2 = c.node_env(2)?;
    let subnet6 = env2.ipv6_subnet.context("node 2's subnet.env has no IPv6 subnet")?.trunc().to_string();
    let leases = c.leases()?;
    let (_, v) = leases.iter().find(|(k, _)| parse_lease_name(k).is_some_and(|(s, _)| s == env2.v4().addr)).context("no lease of node 2")?;
    let lease: serde_json::Value = serde_json::from_str(v)?;
    let mac6 = lease["BackendV6Data"]["VtepMAC"].as_str().with_context(|| format!("node 2's lease has no BackendV6Data: {v}"))?;
    let vteps6 = doc["vteps6"].as_array().with_context(|| format!("status has no vteps6: {doc}"))?;
    let peer =
        vteps6.iter().find(|e| e["subnet6"] == subnet6.as_str()).with_context(|| format!("status lacks node 2's IPv6 VTEP {subnet6}: {}", doc["vteps6"]))?;
    ensure!(
        peer["public_ipv6"] == node_ip6(2).to_string().as_str() && peer["vtep_mac"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(mac6)),
        "node 2's IPv6 VTEP: status {peer}, lease PublicIPv6 {} VtepMAC {mac6}",
        lease["PublicIPv6"]
    );
    let p = doc["pods6"].as_array().with_context(|| format!("status has no pods6: {doc}"))?;
    ensure!(
        p.len() == 1 && p[0]["ip"] == ip6.to_string().as_str() && p[0]["host_veth"] == c.pods[p1].host_veth.as_str(),
        "pods6: {}, want {ip6} on {}",
        doc["pods6"],
        c.pods[p1].host_veth
    );
    let text = status(&c, 1, false)?;
    ensure!(
        text.lines().any(|l| l.contains(&subnet6) && l.contains(&node_ip6(2).to_string())),
        "text status lacks node 2's IPv6 VTEP {subnet6} -> {}:\n{text}",
        node_ip6(2)
    );
    ensure!(text.lines().any(|l| l.contains(&ip6.to_string()) && l.contains(&c.pods[p1].host_veth)), "text status lacks the pod's IPv6 address {ip6}:\n{text}");
    // Each lease's IPv6 datapath, from the routes and maps: node 2's IPv6
    // subnet goes through weft-v6.1 with a weft_vteps6 entry, ours is ours.
    let ls = doc["leases"].as_array().with_context(|| format!("status has no leases: {doc}"))?;
    let of = |s6: &str| ls.iter().find(|l| l["subnet6"].as_str().and_then(Ipv6Cidr::parse).map(|c| c.trunc().to_string()).as_deref() == Some(s6));
    let l2 = of(&subnet6).with_context(|| format!("status lacks node 2's lease {subnet6}: {}", doc["leases"]))?;
    ensure!(l2["datapath6"] == "vxlan (bpf)", "node 2's IPv6 datapath: {}, want vxlan (bpf)", l2["datapath6"]);
    let l1 = of(&own6.trunc().to_string()).with_context(|| format!("status lacks our lease: {}", doc["leases"]))?;
    ensure!(l1["datapath6"] == "this node", "our lease's IPv6 datapath: {}", l1["datapath6"]);
    ensure!(text.lines().any(|l| l.contains(&subnet6) && l.contains("vxlan (bpf)")), "text status lacks node 2's IPv6 datapath:\n{text}");
    eprintln!("{text}");
    c.pass();
    Ok(())
}
