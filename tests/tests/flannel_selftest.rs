//! Self-test of the harness without weftd: two nodes programmed as flanneld
//! programs the kernel talk through the kernel's vxlan; a subnet without a
//! lease must not answer, and an unprogrammed node must not be reachable.
//! If this fails, the harness (not weftd) is broken.
use anyhow::Result;
use weft_tests::{traffic, Cluster, Wiring};

#[test]
fn flannel_selftest() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(0).build()?;
    let a = c.add_flannel_node()?;
    let b = c.add_flannel_node()?;
    let pa = c.add_pod(a, Wiring::Bridge)?;
    let pb = c.add_pod(b, Wiring::Bridge)?;
    // Not programmed yet: no route between the nodes' subnets.
    traffic::ping_fails(&c.pods[pa].ns, c.pods[pb].ip(), 2)?;
    c.program_flannel_nodes()?;
    traffic::ping_ok(&c.pods[pa].ns, c.pods[pb].ip(), 3)?;
    traffic::ping_ok(&c.pods[pb].ns, c.pods[pa].ip(), 3)?;
    // Host-originated.
    traffic::ping_ok(c.node_ns(a)?, c.pods[pb].ip(), 2)?;
    // No lease for 10.244.250.0/24: nothing may answer.
    traffic::ping_fails(&c.pods[pa].ns, "10.244.250.2".parse()?, 2)?;
    let t = traffic::tcp_transfer(&c.pods[pa].ns, &c.pods[pb].ns, c.pods[pb].ip(), 4 << 20)?;
    eprintln!("flannel->flannel tcp: {} bytes, {:.0} Mbit/s", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}
