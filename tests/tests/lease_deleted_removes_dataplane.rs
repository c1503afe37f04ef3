//! Node 3's weftd dies (SIGKILL) and its lease is deleted from etcd: within
//! 10 s nodes 1 and 2 drop both the route and the BPF VTEP entry.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weft_tests::{bpf, subnet_env::Ipv4Subnet, traffic, Cluster, Wiring};

#[test]
fn lease_deleted_removes_dataplane() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(3).build()?;
    c.wait_converged()?;
    let gone = c.node_env(3)?;
    let key = c.lease_key(3)?;
    // The checks below must be able to see the entry before it goes.
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        let dump = bpf::map_dump(&w.vteps_pin())?;
        if !bpf::vteps_contains(&dump, gone.v4().addr) {
            bail!("{}: weft_vteps lacks {} before the deletion: {dump}", w.ns.name(), gone.cidr());
        }
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p3 = c.add_pod(3, Wiring::Bridge)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p3].ip(), 2)?;

    c.weft_node_mut(3)?.kill();
    if c.etcd()?.del(&key)? != 1 {
        bail!("deleting {key}: etcd deleted nothing");
    }
    let start = Instant::now();
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        weft_tests::cmd::poll(
            &format!("{} to forget {}", w.ns.name(), gone.cidr()),
            Duration::from_secs(10).saturating_sub(start.elapsed()),
            Duration::from_millis(200),
            || {
                let routes = w.overlay_routes().map_err(|e| format!("{e:#}"))?;
                let has_route = routes.lines().any(|l| l.split_whitespace().next() == Some(gone.cidr().as_str()));
                let dump = bpf::map_dump(&w.vteps_pin()).map_err(|e| format!("{e:#}"))?;
                let has_vtep = bpf::vteps_contains(&dump, gone.v4().addr);
                match (has_route, has_vtep) {
                    (false, false) => Ok(Some(())),
                    _ => Err(format!("route present: {has_route}, weft_vteps entry present: {has_vtep}\nroutes:\n{routes}\nweft_vteps: {dump}")),
                }
            },
        )
        .with_context(|| format!("after deleting {key}"))?;
    }
    eprintln!("peers forgot {} {:?} after the lease was deleted", gone.cidr(), start.elapsed());
    traffic::ping_fails(&c.pods[p1].ns, c.pods[p3].ip(), 2).context("pod on node 3 after its lease is gone")?;
    c.pass();
    Ok(())
}
