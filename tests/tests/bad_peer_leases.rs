//! Junk written into the lease store by someone else (bad JSON, a bad MAC,
//! another backend, another VNI, a key that is no subnet, a subnet outside the
//! network): every weftd keeps running, warns naming the key and what is
//! wrong, and the good peers keep talking.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, traffic, Cluster, Wiring};

#[test]
fn bad_peer_leases_touch_nothing_else() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let junk = [
        ("10.244.240.0-24", "{not json", "not flannel's lease JSON"),
        ("10.244.241.0-24", r#"{"PublicIP":"192.168.77.241","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz:zz"}}"#, "VtepMAC"),
        ("10.244.242.0-24", r#"{"PublicIP":"192.168.77.242","BackendType":"host-gw"}"#, "host-gw"),
        ("10.244.243.0-24", r#"{"PublicIP":"192.168.77.243","BackendType":"vxlan","BackendData":{"VNI":7,"VtepMAC":"02:00:00:00:00:07"}}"#, "VNI 7"),
        ("bogus-key", r#"{"PublicIP":"192.168.77.244"}"#, "bogus-key"),
        ("10.99.0.0-24", r#"{"PublicIP":"192.168.77.245","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:08"}}"#, "outside Network"),
    ];
    for (k, v, _) in &junk {
        c.store.put(k, v)?;
    }
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n} to warn about every junk lease"), Duration::from_secs(10), Duration::from_millis(100), || {
            let log = w.log_tail(80);
            let missing: Vec<&str> = junk
                .iter()
                .filter(|(k, _, why)| !log.lines().any(|l| l.contains("ignoring lease") && l.contains(k) && l.contains(why)))
                .map(|(k, _, _)| *k)
                .collect();
            if missing.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("no warning yet for {missing:?}:\n{log}"))
            }
        })?;
    }
    for n in [1, 2] {
        let w = c.weft_node_mut(n)?;
        ensure!(w.running(), "weftd on node {n} stopped after junk leases");
        let routes = w.overlay_routes()?;
        ensure!(routes.lines().count() == 1, "node {n} must still route exactly its one good peer:\n{routes}");
    }
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("good peers after the junk")?;
    c.pass();
    Ok(())
}
