//! weftd holds its lease under an etcd lease and renews it before expiry:
//! with a 10 s TTL the key must still be there (and carry our PublicIP) 15 s
//! later, from the same creation (never lost and claimed again), and
//! /metrics must count at least two renewals.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{metrics, Cluster};

#[test]
fn lease_is_renewed() -> Result<()> {
    weft_tests::require_root()?;
    let c = Cluster::builder().weft_nodes(1).weftd_args(&[&["--subnet-lease-ttl", "10"][..], &metrics::ARGS].concat()).build()?;
    let key = c.lease_key(1)?;
    let etcd = c.etcd()?;
    let created = etcd.create_revision(&key)?.with_context(|| format!("{key} is not in etcd"))?;
    std::thread::sleep(Duration::from_secs(15));
    let v = etcd.get(&key)?;
    ensure!(v.as_deref().is_some_and(|v| v.contains(&format!("\"{}\"", c.node_ip(1).unwrap()))), "{key} expired or changed after 15 s with a 10 s TTL: {v:?}");
    // Renewed, not re-created: a lease that expired and was claimed again is
    // a new key, with a new create revision.
    let created_now = etcd.create_revision(&key)?;
    ensure!(created_now == Some(created), "{key} was lost and re-created (create revision {created} -> {created_now:?}):\n{}", c.weft_node(1)?.log_tail(30));
    let renewals = metrics::lease_renewals(c.node_ns(1)?)?;
    ensure!(renewals >= 2, "expected at least two renewals in 15 s, /metrics counts {renewals}:\n{}", c.weft_node(1)?.log_tail(30));
    c.pass();
    Ok(())
}
