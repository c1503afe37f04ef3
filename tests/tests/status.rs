//! `weftd status`: run in a node's namespace with the node's own flags, it
//! agrees with the lease store (every lease, ours marked), with the kernel
//! (the datapath each peer really takes: BPF vxlan to weft and flannel
//! nodes; host-gw routes to a host-gw peer are not in a vxlan cluster), with
//! the pinned maps (pod endpoints, counters equal to bpftool's), as JSON and
//! as text.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, Cluster, NodeRef, Wiring};

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
    let pod_ip = c.pods[pods[0]].ip.to_string();
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
