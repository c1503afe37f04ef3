//! The lifecycle ends of a lease: deleted under a running weftd (it claims the
//! same subnet again and traffic keeps flowing), and `--cleanup-on-exit`
//! (SIGTERM removes the lease, the overlay device, the programs and the pins,
//! and the peers drop the node).
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, subnet_env::Ipv4Subnet, traffic, Cluster, Wiring};

#[test]
fn own_lease_deleted_is_reclaimed() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let key = c.lease_key(2)?;
    ensure!(c.etcd()?.del(&key)? == 1, "deleting {key}: etcd deleted nothing");
    let etcd = c.etcd()?;
    let value = cmd::poll(&format!("weftd on node 2 to claim {key} again"), Duration::from_secs(10), Duration::from_millis(100), || match etcd.get(&key) {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) => Err("still absent".into()),
        Err(e) => Err(format!("{e:#}")),
    })?;
    ensure!(value.contains(&format!("\"{}\"", c.node_ip(2)?)), "reclaimed lease does not carry node 2's PublicIP: {value}");
    ensure!(c.weft_node(2)?.log_tail(20).contains("claiming it again"), "weftd did not log the lost lease");
    c.wait_converged()?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p2].ip(), 3).context("after the lease was reclaimed")?;
    c.pass();
    Ok(())
}

#[test]
fn cleanup_on_exit_removes_everything() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).weftd_args(&["--cleanup-on-exit"]).build()?;
    c.wait_converged()?;
    let key = c.lease_key(2)?;
    let gone = c.node_env(2)?.cidr();
    let pins = c.weft_node(2)?.vteps_pin().parent().expect("pin has a parent").to_path_buf();
    ensure!(pins.exists(), "{} missing while weftd runs", pins.display());
    c.weft_node_mut(2)?.stop(); // SIGTERM
    ensure!(c.etcd()?.get(&key)?.is_none(), "{key} still in etcd after --cleanup-on-exit");
    let links = c.node_ns(2)?.ip(&["-o", "link", "show"])?;
    ensure!(!links.contains("weft.1"), "weft.1 still exists on node 2:\n{links}");
    ensure!(!c.node_ns(2)?.ip(&["link", "show", "dev", "eth0"])?.contains("xdp"), "XDP left on node 2");
    ensure!(!pins.exists(), "{} still pinned after --cleanup-on-exit", pins.display());
    let node1 = c.weft_node(1)?;
    cmd::poll("node 1 to drop node 2's subnet", Duration::from_secs(10), Duration::from_millis(100), || {
        let routes = node1.overlay_routes().map_err(|e| format!("{e:#}"))?;
        if routes.lines().any(|l| l.split_whitespace().next() == Some(gone.as_str())) {
            Err(routes)
        } else {
            Ok(Some(()))
        }
    })?;
    c.pass();
    Ok(())
}

/// flannel's second reuse rule: with no lease carrying our PublicIP left (it
/// was deleted while weftd was down), a restarted weftd takes the subnet of its
/// previous subnet file again, if still free, instead of a random one.
#[test]
fn previous_subnet_file_is_reused() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).embedded_store().build()?;
    c.wait_converged()?;
    let before = c.node_env(2)?.cidr();
    c.weft_node_mut(2)?.kill();
    ensure!(c.delete_lease(2)?, "node 2's lease was not in the store");
    c.start_weftd(2)?;
    let node = c.weft_node(2)?;
    cmd::poll("restarted weftd to claim a subnet", Duration::from_secs(15), Duration::from_millis(100), || {
        let log = node.log_tail(20);
        if log.contains("acquired lease") && log.matches("datapath attached").count() >= 2 {
            Ok(Some(()))
        } else {
            Err(log)
        }
    })?;
    let log = c.weft_node(2)?.log_tail(20);
    ensure!(log.contains(&format!("acquired lease {before} (the subnet of our previous subnet file)")), "expected {before} from the subnet file:\n{log}");
    c.wait_node_ready(2)?;
    c.wait_converged()?;
    c.pass();
    Ok(())
}
