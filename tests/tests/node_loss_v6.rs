//! Node loss in dual stack, over IPv6: node 3's weftd is killed and its
//! lease (TTL 10 s) runs out. Every other node drops node 3's IPv6 subnet
//! from weft-v6.1's routes within seconds; IPv6 traffic to its pods is
//! answered unreachable (weft's `unreachable <IPv6Network>` catch-all)
//! instead of leaving the node; a 200/s IPv6 ping between pods on nodes 1
//! and 2 loses nothing meanwhile.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cluster::dual_stack_config, cmd, traffic::PingFlood, Cluster, Wiring};

const TTL: u64 = 10;

#[test]
fn a_lost_node_leaves_every_ipv6_peer() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder()
        .dual_stack()
        .config_json(&dual_stack_config("10.244.0.0/16", "vxlan"))
        .weft_nodes(3)
        .weftd_args(&["--subnet-lease-ttl", &TTL.to_string()])
        .build()?;
    c.wait_converged()?;
    let pods: Vec<usize> = (1..=3).map(|n| c.add_pod(n, Wiring::Bridge)).collect::<Result<_>>()?;
    let ip6 = |p: usize| c.pods[pods[p]].ip6.context("pod without an IPv6 address");
    let (to2, to3) = (ip6(1)?, ip6(2)?);
    let lost = c.node_env(3)?.ipv6_subnet.context("node 3 has no IPv6 subnet")?;
    // 2,000 echo requests at 200/s (10 s; bounded by count and 30 s).
    let flood = PingFlood::start6(&c.pods[pods[0]].ns, to2, 2000, 30, 200)?;
    std::thread::sleep(Duration::from_secs(1));
    c.weft_node_mut(3)?.kill();
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n} forgetting node 3's {lost}"), Duration::from_secs(TTL + 10), Duration::from_millis(200), || {
            let r = w.overlay6_routes().map_err(|e| format!("{e:#}"))?;
            if r.lines().any(|l| l.starts_with(&lost.to_string())) {
                Err(format!("still routed:\n{r}"))
            } else {
                Ok(Some(()))
            }
        })?;
    }
    // The catch-all that answers for the lost subnet on a node with a default route.
    let unreachable = c.node_ns(1)?.ip(&["-6", "route", "show", "type", "unreachable"])?;
    ensure!(
        unreachable.lines().any(|l| l.split_whitespace().any(|w| w == "fd44::/48") && l.contains("proto 254")),
        "node 1: no `unreachable fd44::/48 proto 254`:\n{unreachable}"
    );
    let out = c.pods[pods[0]].ns.exec_output("timeout", &["5", "ping", "-6", "-n", "-c", "2", "-W", "1", &to3.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.to_lowercase().contains("unreachable") && text.contains(" 0 received"),
        "ping -6 to {to3} on a lost node should be answered unreachable:\n{text}"
    );
    flood.all_answered("IPv6 pod traffic between the nodes that stayed")?;
    c.pass();
    Ok(())
}
