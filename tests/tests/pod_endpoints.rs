//! Pod endpoints in the datapath (weft-cni's records, written here by the
//! harness exactly as weft-cni writes them): decapsulated traffic goes
//! straight into a registered pod (bpf_redirect_peer; `decap_to_pod`
//! counts it), the pod's traffic is encapsulated at its own veth (it flows
//! with weft.1 down, the unregistered pod's does not), TTL behaves as with the host's two routing hops, a
//! removed record takes the pod out, and after a kill -9 restart the map
//! holds exactly the pods that exist.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, cmd, traffic, Cluster, NodeRef, Wiring};

/// Waits until node `n`'s weft_pods holds exactly `ips`.
fn wait_pods(c: &Cluster, n: NodeRef, ips: &[std::net::Ipv4Addr]) -> Result<()> {
    let w = c.weft_node(n)?;
    let mut want: Vec<String> = ips.iter().map(|ip| ip.octets().iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",")).collect();
    want.sort();
    cmd::poll(&format!("node {n}: weft_pods = {ips:?}"), Duration::from_secs(10), Duration::from_millis(100), || {
        let dump = bpf::map_dump(&w.pods_pin()).map_err(|e| format!("{e:#}"))?;
        let mut have: Vec<String> = dump
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["formatted"]["key"].as_array().map(|k| k.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default())
            .collect();
        have.sort();
        if have == want {
            Ok(Some(()))
        } else {
            Err(format!("have {have:?}, want {want:?}"))
        }
    })
}

#[test]
fn registered_pods_skip_the_host_path() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2, p3) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(1, Wiring::Bridge)?);
    let rec1 = c.register_endpoint(p1)?;
    let rec2 = c.register_endpoint(p2)?;
    wait_pods(&c, 1, &[c.pods[p1].ip()])?;
    wait_pods(&c, 2, &[c.pods[p2].ip()])?;
    let (ip2, ip3) = (c.pods[p2].ip(), c.pods[p3].ip());

    // Echo requests go straight into pod 2 on node 2, replies into pod 1 on node 1.
    let (d1, d2) = (c.stat_counter(1, stat::DECAP_TO_POD)?.0, c.stat_counter(2, stat::DECAP_TO_POD)?.0);
    weft_tests::traffic::ping_ok(&c.pods[p1].ns, ip2, 5)?;
    ensure!(c.stat_counter(2, stat::DECAP_TO_POD)?.0 >= d2 + 5, "node 2 delivered no echo requests straight into pod 2");
    ensure!(c.stat_counter(1, stat::DECAP_TO_POD)?.0 >= d1 + 5, "node 1 delivered no echo replies straight into pod 1");
    // Node 1 encapsulates at pod 1's veth: with weft.1 down (and its routes
    // gone with it) pod 1 still reaches pod 2, the unregistered pod 3 does not.
    let ns1 = c.node_ns(1)?;
    ns1.ip(&["link", "set", "weft.1", "down"])?;
    let with_weft1_down = (|| -> Result<()> {
        weft_tests::traffic::ping_ok(&c.pods[p1].ns, ip2, 3).context("registered pod with weft.1 down")?;
        weft_tests::traffic::ping_fails(&c.pods[p3].ns, ip2, 2).context("unregistered pod with weft.1 down")
    })();
    ns1.ip(&["link", "set", "weft.1", "up"])?;
    with_weft1_down?;
    cmd::poll("node 1 to restore its routes on weft.1", Duration::from_secs(15), Duration::from_millis(100), || {
        match weft_tests::traffic::ping(&c.pods[p3].ns, ip2, 1) {
            Ok(st) if st.all_received() => Ok(Some(())),
            Ok(st) => Err(st.output),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    let (_, b2) = c.stat_counter(2, stat::DECAP_TO_POD)?;
    let t = weft_tests::traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, ip2, 4 << 20).context("tcp pod 1 -> pod 2")?;
    ensure!(c.stat_counter(2, stat::DECAP_TO_POD)?.1 - b2 >= 4 << 20, "the 4 MiB did not go straight into pod 2");
    eprintln!("tcp registered pod -> registered pod: {:.0} Mbit/s", t.mbit_per_s());

    // Two routing hops, as without weft: TTL 2 expires at node 2, 3 arrives.
    ensure!(!traffic::ping_ttl(&c.pods[p1].ns, ip2, 2)?, "TTL 2 reached the pod on the other node");
    ensure!(traffic::ping_ttl(&c.pods[p1].ns, ip2, 3)?, "TTL 3 did not reach the pod on the other node");

    // An unregistered pod on node 1 still works through the host path:
    // node 1 validates its 10 echo requests and leaves them to weft.1's
    // kernel vxlan socket, not into a pod (a stray segment of the closed
    // TCP connection may still reach pod 1).
    let (d1, k1) = (c.stat_counter(1, stat::DECAP_TO_POD)?.0, c.stat_counter(1, stat::DECAP_KERNEL)?.0);
    weft_tests::traffic::ping_ok(&c.pods[p2].ns, ip3, 10)?;
    let (to_pod, kernel) = (c.stat_counter(1, stat::DECAP_TO_POD)?.0 - d1, c.stat_counter(1, stat::DECAP_KERNEL)?.0 - k1);
    ensure!(kernel >= 10 && to_pod < 10, "traffic to an unregistered pod: {kernel} left to the kernel's vxlan socket, {to_pod} straight into a pod");

    // DEL removes the record: pod 2 leaves node 2's map and keeps working.
    std::fs::remove_file(&rec2)?;
    wait_pods(&c, 2, &[])?;
    ensure!(!c.weft_node(2)?.link_pinned("weft_from_pod"), "node 2 kept weft_from_pod on the removed pod's veth");
    weft_tests::traffic::ping_ok(&c.pods[p1].ns, ip2, 3).context("after pod 2's record went")?;

    // kill -9; while weftd is away pod 1's veth goes (its record stays, as
    // if DEL never ran) and pod 3 is registered: the restarted weftd holds
    // exactly the pods that exist.
    c.weft_node_mut(1)?.kill();
    c.register_endpoint(p3)?;
    c.node_ns(1)?.ip(&["link", "del", &c.pods[p1].host_veth.clone()])?;
    c.start_weftd(1)?;
    wait_pods(&c, 1, &[ip3])?;
    let log = std::fs::read_to_string(&c.weft_node(1)?.log)?;
    ensure!(log.contains(&rec1.display().to_string()) && log.contains("does not exist"), "no warning about the stale record {}:\n{log}", rec1.display());
    weft_tests::traffic::ping_ok(&c.pods[p2].ns, ip3, 3).context("to pod 3 after the restart")?;
    c.pass();
    Ok(())
}
