//! `--xdp-decap`: decapsulation in XDP (native mode on the veth underlay),
//! steered into the overlay by the TC program through the XDP metadata mark.
//! ICMP is checked end to end; see the README for TCP over veth.
use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{bpf, traffic, Cluster, Wiring};

#[test]
fn xdp_decap() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&["--xdp-decap"]).build()?;
    c.wait_converged()?;
    for n in [1, 2] {
        let link = c.node_ns(n)?.ip(&["link", "show", "dev", "eth0"])?;
        ensure!(link.contains("xdp"), "node {n}: no XDP program on eth0:\n{link}");
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip, 5).context("pod 1 -> pod 2 through XDP decap")?;
    traffic::ping_ok(&c.pods[p2].ns, c.pods[p1].ip, 5).context("pod 2 -> pod 1 through XDP decap")?;
    for n in [1, 2] {
        let pin = c.weft_node(n)?.stats_pin();
        let (xdp, tc) = (bpf::stat_packets(&pin, stat::DECAP_XDP)?, bpf::stat_packets(&pin, stat::DECAP)?);
        ensure!(xdp >= 10 && tc == 0, "node {n}: XDP decapsulated {xdp} packets and TC {tc}; XDP must do all of it");
    }
    c.pass();
    Ok(())
}
