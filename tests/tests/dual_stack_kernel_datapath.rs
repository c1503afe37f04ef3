//! `--datapath kernel` in dual stack: without BPF, weftd programs its IPv6
//! vxlan device `weft-v6.1` exactly as flanneld programs flannel-v6.1 (per
//! peer an FDB entry to its PublicIPv6, a permanent neighbour for its v6
//! subnet's network address with its v6 VtepMAC, and the route `<v6
//! subnet> via <that address> onlink`), and carries both families with a
//! BPF node and a flannel-programmed node.
use anyhow::{ensure, Context, Result};
use weft_tests::{
    cluster::{dual_stack_config, node_ip6},
    cmd,
    pod::Family,
    weft_node::OVERLAY6_DEV,
    Cluster, Wiring,
};

#[test]
fn kernel_datapath_carries_ipv6_as_flanneld_programs_it() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().config_json(&dual_stack_config("10.244.0.0/16", "vxlan")).weft_nodes(2).no_start().build()?;
    c.start_weftd_with(1, &["--datapath", "kernel"])?;
    c.start_weftd(2)?;
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    let f = c.add_flannel_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged().context("both weft nodes programming every IPv4 and IPv6 peer")?;
    let w1 = c.weft_node(1)?;
    ensure!(!w1.vteps_pin().exists(), "node 1 runs the kernel datapath but pinned {}", w1.vteps_pin().display());
    // flanneld's shape for each peer on node 1's weft-v6.1.
    let (routes, neigh) = (w1.ns.ip(&["-6", "route", "show", "dev", OVERLAY6_DEV])?, w1.ns.ip(&["-6", "neigh", "show", "dev", OVERLAY6_DEV])?);
    let fdb = cmd::sh("bridge", &["-n", w1.ns.name(), "fdb", "show", "dev", OVERLAY6_DEV])?;
    for peer in [2, f] {
        let s6 = c.node_env(peer)?.ipv6_subnet.with_context(|| format!("node {peer} has no IPv6 subnet"))?;
        let lease = c.leases()?.into_iter().find(|(k, _)| k.ends_with(&format!("&{}-64", s6.addr))).with_context(|| format!("no lease for {s6}"))?;
        let j: serde_json::Value = serde_json::from_str(&lease.1)?;
        let mac6 = j["BackendV6Data"]["VtepMAC"].as_str().context("BackendV6Data.VtepMAC")?.to_string();
        ensure!(
            routes.lines().any(|l| l.starts_with(&format!("{s6} via {} ", s6.addr)) && l.contains("onlink")),
            "node 1: no `{s6} via {} dev {OVERLAY6_DEV} onlink`:\n{routes}",
            s6.addr
        );
        ensure!(neigh.contains(&format!("{} lladdr {mac6} PERMANENT", s6.addr)), "node 1: no permanent neighbour {} -> {mac6}:\n{neigh}", s6.addr);
        ensure!(fdb.contains(&format!("{mac6} dst {} self permanent", node_ip6(peer))), "node 1: no FDB entry {mac6} dst {}:\n{fdb}", node_ip6(peer));
    }
    let mut pods = vec![];
    for n in c.nodes() {
        pods.push(c.add_pod(n, Wiring::Bridge)?);
    }
    for family in Family::BOTH {
        c.traffic_across_nodes(&pods, family, 3, 1 << 20)?;
    }
    c.pass();
    Ok(())
}
