//! Three weft nodes; both pod wirings; all pod pairs across nodes ping,
//! host-originated traffic reaches a remote pod, a 4 MB TCP transfer arrives
//! intact, and a subnet without a lease does not answer.
use anyhow::{Context, Result};
use weft_tests::{traffic, Cluster, Wiring};

#[test]
fn three_weft_nodes() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(3).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let p3a = c.add_pod(3, Wiring::Bridge)?;
    let p3b = c.add_pod(3, Wiring::VethRoute)?;
    let pods = [p1, p2, p3a, p3b];
    c.ping_across_nodes(&pods, 3)?;
    // Host of node 1 -> pod on node 2.
    traffic::ping_ok(c.node_ns(1)?, c.pods[p2].ip(), 3).context("host-originated: node 1 -> pod on node 2")?;
    // Harness negative check: nobody holds 10.244.250.0/24 ... unless a node leased it.
    if !c.leased_subnets()?.contains(&"10.244.250.0".parse()?) {
        traffic::ping_fails(&c.pods[p1].ns, "10.244.250.2".parse()?, 2).context("ping to a subnet without a lease")?;
    }
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3b].ns, c.pods[p3b].ip(), 4 << 20).context("tcp node1 bridge pod -> node3 veth pod")?;
    eprintln!("weft tcp n1->n3: {} bytes in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    let t = traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p3a].ns, c.pods[p3a].ip(), 4 << 20).context("tcp node2 veth pod -> node3 bridge pod")?;
    eprintln!("weft tcp n2->n3: {} bytes in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    c.pass();
    Ok(())
}
