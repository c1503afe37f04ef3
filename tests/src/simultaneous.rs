//! Several weftd starting at the same instant on fresh nodes must end with
//! distinct leases: one round of that race, on etcd or on the embedded store,
//! shared by `etcd_faults` and `embedded_store`.
use std::{collections::BTreeSet, os::unix::fs::MetadataExt, time::Duration, time::Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{cmd, subnet_env::Ipv4Subnet, Cluster};

/// Every weft node's lease is in the store (exactly one per node, found by
/// its PublicIP, named as its subnet.env says) and the subnets are
/// distinct; returns them. `what` names the moment for failure messages.
pub fn check_leases(c: &Cluster, what: &str) -> Result<BTreeSet<String>> {
    let leases = c.store.list()?;
    ensure!(leases.len() == c.weft.len(), "{what}: {} leases in the store, want {}: {leases:#?}", leases.len(), c.weft.len());
    let mut subnets = BTreeSet::new();
    for w in &c.weft {
        let env = w.subnet_env()?;
        let mine: Vec<&(String, String)> = leases.iter().filter(|(_, v)| v.contains(&format!("\"PublicIP\":\"{}\"", w.ip))).collect();
        ensure!(
            mine.len() == 1 && mine[0].0 == env.lease_name(),
            "{what}: node {} (subnet.env {}) has leases {mine:?} ({})",
            w.n,
            env.cidr(),
            c.store.describe()
        );
        ensure!(subnets.insert(env.cidr()), "{what}: subnet {} is in two subnet.env files", env.cidr());
    }
    Ok(subnets)
}

/// Number of processes blocked waiting for a flock on inode `ino`
/// (/proc/locks lists waiters as `N: -> FLOCK ... <maj:min:ino> ...`).
fn flock_waiters(ino: u64) -> usize {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("->") && l.contains("FLOCK"))
        .filter(|l| l.split_whitespace().any(|f| f.rsplit(':').next().and_then(|i| i.parse::<u64>().ok()) == Some(ino) && f.matches(':').count() == 2))
        .count()
}

/// One round on a fresh cluster of `nodes` weft nodes (network config
/// `config`, or the default): all weftd start at once, then each must be
/// ready with its own lease and all converge, none exiting. On etcd they are
/// started back to back; on the embedded store (`embedded`) the harness holds
/// the store's lock until all of them are blocked on it, then releases it,
/// so they contend at the same instant.
pub fn start_round(round: u32, nodes: u32, embedded: bool, config: Option<&str>) -> Result<()> {
    let mut b = Cluster::builder().weft_nodes(nodes).embedded_store_if(embedded).no_start();
    if let Some(cfg) = config {
        b = b.config_json(cfg);
    }
    let mut c = b.build()?;
    let ns: Vec<u32> = c.weft.iter().map(|w| w.n).collect();
    let lock = if embedded { Some((c.embedded()?.lock()?, std::fs::metadata(c.embedded()?.dir.join("store.lock"))?.ino())) } else { None };
    for &n in &ns {
        c.start_weftd(n)?;
    }
    let mut released = Instant::now();
    if let Some((lock, ino)) = lock {
        let waiting = cmd::poll(&format!("round {round}: {nodes} weftd blocked on the store lock"), Duration::from_secs(20), Duration::from_millis(50), || {
            for w in c.weft.iter_mut() {
                if let Some(why) = w.exit_status() {
                    return Err(why);
                }
            }
            match flock_waiters(ino) {
                n if n >= nodes as usize => Ok(Some(n)),
                n => Err(format!("{n} waiters on inode {ino}; /proc/locks:\n{}", std::fs::read_to_string("/proc/locks").unwrap_or_default())),
            }
        });
        released = Instant::now();
        drop(lock);
        eprintln!("round {round}: {} weftd released together", waiting?);
    }
    for &n in &ns {
        c.wait_node_ready(n).with_context(|| format!("round {round}"))?;
    }
    c.wait_converged().with_context(|| format!("round {round}"))?;
    for w in c.weft.iter_mut() {
        if let Some(why) = w.exit_status() {
            bail!("round {round}: {why}");
        }
    }
    let subnets = check_leases(&c, &format!("round {round}"))?;
    let collisions: usize = c.weft.iter().map(|w| w.log_count("was taken by another node")).sum();
    eprintln!("round {round}: {nodes} distinct leases {subnets:?}, converged {:?} after the start; {collisions} claim collisions logged", released.elapsed());
    c.pass();
    Ok(())
}

/// The race in 3 rounds, each on a fresh cluster of `nodes` nodes: round 1
/// with the default network config, rounds 2 and 3 offering exactly `nodes`
/// subnets (10.244.1.0 .. 10.244.<nodes>.0), so the nodes must collide and
/// choose again. See [`start_round`].
pub fn three_rounds(nodes: u32, embedded: bool) -> Result<()> {
    let tight = format!(r#"{{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.{nodes}.0","Backend":{{"Type":"vxlan"}}}}"#);
    start_round(1, nodes, embedded, None)?;
    start_round(2, nodes, embedded, Some(&tight))?;
    start_round(3, nodes, embedded, Some(&tight))
}
