//! Node loss, both ways a node goes: node 3's weftd is killed (SIGKILL) and
//! its lease runs out (TTL 10 s), node 4 is stopped and its lease deleted by
//! hand. Each leaves the routes and weft_vteps of every other node within
//! seconds; traffic to a lost node's pods is answered with ICMP unreachable
//! (weft's catch-all route for the network) instead of leaving the node;
//! and a 250/s ping between pods on nodes 1 and 2 loses nothing meanwhile.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_tests::{report, subnet_env::Ipv4Subnet, traffic::PingFlood, Cluster, Wiring};

const TTL: u64 = 10;

#[test]
fn lost_nodes_leave_every_peer_and_nothing_else() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(4).weftd_args(&["--subnet-lease-ttl", &TTL.to_string()]).build()?;
    c.wait_converged()?;
    let pods: Vec<usize> = (1..=4).map(|n| c.add_pod(n, Wiring::Bridge)).collect::<Result<_>>()?;
    c.ping_across_nodes(&pods, 2)?;
    let subnets: Vec<_> = (1..=4).map(|n| c.node_env(n).map(|e| e.v4().addr)).collect::<Result<_>>()?;
    let (ip2, ip3, ip4) = (c.pods[pods[1]].ip(), c.pods[pods[2]].ip(), c.pods[pods[3]].ip());
    // 250 echo requests a second between nodes 1 and 2 for the whole test
    // (bounded: 7,500 requests, 60 s).
    let flood = PingFlood::start(&c.pods[pods[0]].ns, ip2, 7500, 60)?;
    std::thread::sleep(Duration::from_secs(1));

    // Node 3 crashes: no one deletes its lease; it expires.
    let t0 = Instant::now();
    c.weft_node_mut(3)?.kill();
    for n in [1, 2, 4] {
        let others: Vec<_> = [1, 2, 4].iter().filter(|&&m| m != n).map(|&m| subnets[m as usize - 1]).collect();
        c.wait_exact_vxlan_peers(n, &others, Duration::from_secs(TTL + 10)).with_context(|| format!("node {n} forgetting node 3"))?;
    }
    let expiry = t0.elapsed();
    ensure!(c.lease(3)?.is_none(), "node 3's lease is still in etcd");
    report::figure("node_loss", "killed node's lease (TTL 10 s) expired and left every peer", expiry.as_secs_f64(), "s");

    // Node 4 is stopped (its lease stays, as flanneld leaves it) and its lease deleted.
    c.weft_node_mut(4)?.stop();
    let t1 = Instant::now();
    ensure!(c.delete_lease(4)?, "node 4 had no lease to delete");
    for n in [1, 2] {
        let other = subnets[if n == 1 { 1 } else { 0 }];
        c.wait_exact_vxlan_peers(n, &[other], Duration::from_secs(10)).with_context(|| format!("node {n} forgetting node 4"))?;
    }
    let deletion = t1.elapsed();
    report::figure("node_loss", "deleted lease left every peer", deletion.as_secs_f64(), "s");
    ensure!(deletion < Duration::from_secs(5), "a deleted lease took {deletion:?} to leave the peers");

    // Traffic to the lost nodes' pods: ICMP unreachable from node 1, nothing else.
    for ip in [ip3, ip4] {
        let out = c.pods[pods[0]].ns.exec_output("timeout", &["5", "ping", "-n", "-c", "2", "-W", "1", &ip.to_string()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("Unreachable") && text.contains(" 0 received"), "ping to {ip} on a lost node should be answered unreachable:\n{text}");
    }
    flood.all_answered("pod traffic between the nodes that stayed")?;
    report::figure("node_loss", "echo requests lost between the remaining nodes (of 7,500 at 250/s)", 0.0, "packets");
    c.pass();
    Ok(())
}
