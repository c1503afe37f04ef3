//! weftd holds its lease under an etcd lease and renews it before expiry:
//! with a 10 s TTL the key must still be there (and carry our PublicIP) 15 s
//! later, and the log must show the renewals.
use std::time::Duration;

use anyhow::{ensure, Result};
use weft_tests::Cluster;

#[test]
fn lease_is_renewed() -> Result<()> {
    weft_tests::require_root()?;
    let c = Cluster::builder().weft_nodes(1).weftd_args(&["--subnet-lease-ttl", "10"]).build()?;
    let key = c.lease_key(1)?;
    std::thread::sleep(Duration::from_secs(15));
    let v = c.etcd()?.get(&key)?;
    ensure!(v.as_deref().is_some_and(|v| v.contains(&format!("\"{}\"", c.node_ip(1).unwrap()))), "{key} expired or changed after 15 s with a 10 s TTL: {v:?}");
    let log = c.weft_node(1)?.log_tail(30);
    ensure!(log.matches("renewed lease").count() >= 2, "expected at least two renewals in 15 s:\n{log}");
    c.pass();
    Ok(())
}
