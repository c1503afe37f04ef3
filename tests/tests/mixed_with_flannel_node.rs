//! Two weft nodes and one node programmed as flanneld programs the kernel:
//! weft picks up the flannel lease from its watch, pods talk both ways.
use anyhow::{Context, Result};
use weft_tests::{traffic, Cluster, Wiring};

#[test]
fn mixed_with_flannel_node() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    // Added after the weft nodes hold leases: they must learn it from the watch.
    let f = c.add_flannel_node()?;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    // Before the flannel node is programmed it has no way back: must fail.
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_fails(&c.pods[pf].ns, c.pods[p1].ip(), 2).context("flannel node not programmed yet")?;
    c.program_flannel_nodes()?;
    c.wait_converged().context("weft nodes learning the flannel node's lease")?;
    for &p in &[p1, p2] {
        traffic::ping_ok(&c.pods[pf].ns, c.pods[p].ip(), 3).with_context(|| format!("flannel pod -> {}", c.pods[p].ns.name()))?;
        traffic::ping_ok(&c.pods[p].ns, c.pods[pf].ip(), 3).with_context(|| format!("{} -> flannel pod", c.pods[p].ns.name()))?;
    }
    traffic::ping_ok(c.node_ns(f)?, c.pods[p2].ip(), 2).context("flannel host -> weft veth pod")?;
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[pf].ns, c.pods[pf].ip(), 4 << 20).context("tcp weft -> flannel")?;
    eprintln!("tcp weft->flannel: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    let t = traffic::tcp_transfer(&c.pods[pf].ns, &c.pods[p2].ns, c.pods[p2].ip(), 4 << 20).context("tcp flannel -> weft")?;
    eprintln!("tcp flannel->weft: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    // Without flannel.1 the flannel node cannot decapsulate: pings must fail
    // (proves the traffic above went through the VXLAN tunnel).
    c.node_ns(f)?.ip(&["link", "del", "flannel.1"])?;
    traffic::ping_fails(&c.pods[p1].ns, c.pods[pf].ip(), 2).context("flannel node without flannel.1")?;
    c.pass();
    Ok(())
}
