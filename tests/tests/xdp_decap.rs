//! `--xdp-decap`: decapsulation in XDP (native mode on the veth underlay),
//! steered into the overlay by the TC program through the XDP metadata mark.
//! ICMP and TCP between weft nodes are checked end to end.
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
    let t = traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, c.pods[p2].ip, 4 << 20).context("tcp through XDP decap")?;
    eprintln!("tcp through XDP decap: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    c.pass();
    Ok(())
}

/// A kernel vxlan sender (flannel's) into weft's XDP decap: the inner TCP
/// arrives intact (XDP passes the frame on; no XDP_REDIRECT into the pod).
#[test]
fn xdp_decap_from_kernel_vxlan() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(1).weftd_args(&["--xdp-decap"]).build()?;
    let f = c.add_flannel_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    let pw = c.add_pod(1, Wiring::Bridge)?;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    traffic::ping_ok(&c.pods[pf].ns, c.pods[pw].ip, 3).context("flannel pod -> weft pod (XDP decap)")?;
    let t = traffic::tcp_transfer(&c.pods[pf].ns, &c.pods[pw].ns, c.pods[pw].ip, 2 << 20).context("tcp flannel -> weft (XDP decap)")?;
    eprintln!("tcp flannel -> weft through XDP decap: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    let xdp = bpf::stat_packets(&c.weft_node(1)?.stats_pin(), stat::DECAP_XDP)?;
    ensure!(xdp > 100, "XDP decapsulated only {xdp} packets");
    c.pass();
    Ok(())
}

/// A restart without --xdp-decap releases the XDP program an earlier run
/// pinned: the flag says what runs. Traffic keeps flowing through TC decap.
#[test]
fn restart_without_flag_detaches_xdp() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&["--xdp-decap"]).build()?;
    c.wait_converged()?;
    ensure!(c.node_ns(2)?.ip(&["link", "show", "dev", "eth0"])?.contains("xdp"), "XDP not attached at first");
    c.weft_node_mut(2)?.kill();
    let plain: Vec<String> = c.store.weftd_args();
    c.weft_node_mut(2)?.start(&plain)?;
    let ns = c.node_ns(2)?;
    weft_tests::cmd::poll("XDP to leave eth0 on node 2", std::time::Duration::from_secs(15), std::time::Duration::from_millis(100), || {
        let link = ns.ip(&["link", "show", "dev", "eth0"]).map_err(|e| format!("{e:#}"))?;
        if link.contains("xdp") {
            Err(link)
        } else {
            Ok(Some(()))
        }
    })?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip, 3).context("after XDP was detached")?;
    let tc = bpf::stat_packets(&c.weft_node(2)?.stats_pin(), stat::DECAP)?;
    ensure!(tc >= 3, "TC decap on node 2 counted only {tc} packets after XDP left");
    c.pass();
    Ok(())
}
