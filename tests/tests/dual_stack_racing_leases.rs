//! Nodes that start together in a dual-stack network never share a subnet
//! of either family. The store's atomic create guards one key, and a
//! dual-stack key (`10.244.1.0-24&fd44:0:0:2::-64`) names two subnets: two
//! nodes that picked the same IPv4 subnet with different IPv6 ones would
//! both succeed without weftd's check (etcd: the younger of two overlapping
//! leases gives way; the embedded store: create refuses an overlap).
//!
//! A /22 and a /62 hold three subnets each, and three nodes choose among
//! them at the same moment: collisions are the rule, so the check is
//! exercised on every run.
use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use weft_tests::{
    subnet_env::{parse_lease_name6, Ipv4Subnet},
    Cluster,
};

const TINY: &str = r#"{"Network":"10.244.0.0/22","EnableIPv6":true,"IPv6Network":"fd44::/62","Backend":{"Type":"host-gw"}}"#;

fn race(embedded: bool) -> Result<()> {
    let b = Cluster::builder().dual_stack().config_json(TINY).weft_nodes(3);
    let c = if embedded { b.embedded_store() } else { b }.build()?;
    let envs: Vec<_> = c.nodes().into_iter().map(|n| c.node_env(n)).collect::<Result<_>>()?;
    let v4: BTreeSet<_> = envs.iter().map(|e| e.cidr()).collect();
    let v6: BTreeSet<_> = envs.iter().map(|e| e.ipv6_subnet.map(|s| s.to_string())).collect();
    ensure!(v4.len() == 3 && v6.len() == 3 && !v6.contains(&None), "three nodes share subnets: IPv4 {v4:?}, IPv6 {v6:?}");
    let leases = c.leases()?;
    ensure!(leases.len() == 3, "the store holds {} leases, not one per node: {leases:#?}", leases.len());
    for (k, _) in &leases {
        ensure!(parse_lease_name6(k).is_some(), "lease {k} has no IPv6 part");
    }
    c.pass();
    Ok(())
}

#[test]
fn racing_nodes_on_etcd_never_share_a_subnet() -> Result<()> {
    weft_tests::require_root()?;
    race(false)
}

#[test]
fn racing_nodes_on_the_embedded_store_never_share_a_subnet() -> Result<()> {
    weft_tests::require_root()?;
    race(true)
}
