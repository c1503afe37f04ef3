//! `--xdp-decap` is deprecated: XDP decapsulation was removed because TC
//! decapsulation after tunnel GRO measured faster (README, "XDP decap was
//! removed"). The flag is still accepted (a DaemonSet that passes it keeps
//! starting), attaches nothing, and traffic goes through TC decap.
use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{traffic, Cluster, Wiring};

#[test]
fn xdp_decap_flag_is_accepted_and_attaches_nothing() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&["--xdp-decap"]).build()?;
    c.wait_converged()?;
    for n in [1, 2] {
        let link = c.node_ns(n)?.ip(&["link", "show", "dev", "eth0"])?;
        ensure!(!link.contains("xdp"), "node {n}: an XDP program is on eth0:\n{link}");
        ensure!(!c.weft_node(n)?.link_pinned("weft_xdp_decap"), "node {n}: an XDP link is pinned");
    }
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p2)?;
    let k0 = c.stat_counter(2, stat::DECAP_KERNEL)?.0;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 5).context("pod 1 -> pod 2 with --xdp-decap")?;
    let (xdp, tc) = (c.stat_counter(2, stat::DECAP_XDP)?.0, c.stat_counter(2, stat::DECAP_TO_POD)?.0 + c.stat_counter(2, stat::DECAP_KERNEL)?.0 - k0);
    ensure!(xdp == 0 && tc >= 5, "node 2: {xdp} packets decapsulated in XDP and {tc} in TC; TC must do all of it");
    c.pass();
    Ok(())
}
