//! Choosing and claiming our subnet, in flannel's order: (1) the lease that
//! already carries our PublicIP, (2) the subnet of our previous subnet.env if
//! still free, (3) a random one among the first 100 free. Creation is an etcd
//! transaction; on a collision (another node won the race) we try again with
//! a fresh view instead of exiting as flanneld does.
use anyhow::{bail, Result};
use rand::seq::SliceRandom;

use super::{
    lease::{Lease, LeaseAttrs},
    registry::Registry,
    Ipv4Net,
};
use crate::netconfig::NetConfig;

const ATTEMPTS: usize = 20;

pub async fn acquire(store: &impl Registry, cfg: &NetConfig, attrs: &LeaseAttrs, previous: Option<Ipv4Net>, ttl: i64) -> Result<Ipv4Net> {
    for attempt in 1..=ATTEMPTS {
        let (_rev, kvs) = store.list().await?;
        let mut taken: Vec<Ipv4Net> = vec![];
        for (k, v) in &kvs {
            let Ok(net) = Ipv4Net::from_key(k) else { continue };
            taken.push(net);
            if let Ok(l) = Lease::parse(k, v) {
                if l.attrs.public_ip == attrs.public_ip && fits(cfg, &net) {
                    log::info!("reusing lease {net}: it carries our PublicIP {}", attrs.public_ip);
                    store.renew(&net, attrs, ttl).await?;
                    return Ok(net);
                }
            }
        }
        let free = |n: &Ipv4Net| !taken.iter().any(|t| t.contains_net(n) || n.contains_net(t));
        if let Some(prev) = previous.filter(|p| fits(cfg, p) && free(p)) {
            if store.create(&prev, attrs, ttl).await? {
                log::info!("acquired lease {prev} (the subnet of our previous subnet file)");
                return Ok(prev);
            }
        }
        let candidates: Vec<Ipv4Net> = cfg.candidate_subnets().filter(|n| free(n)).take(100).collect();
        let Some(pick) = candidates.choose(&mut rand::thread_rng()).copied() else {
            bail!("no free subnet left in {} between {} and {} (/{})", cfg.network, cfg.subnet_min, cfg.subnet_max, cfg.subnet_len);
        };
        if store.create(&pick, attrs, ttl).await? {
            log::info!("acquired lease {pick}");
            return Ok(pick);
        }
        log::warn!("subnet {pick} was taken by another node while we claimed it (attempt {attempt}/{ATTEMPTS}); choosing again");
    }
    bail!("could not claim a subnet after {ATTEMPTS} attempts: every choice collided with another node")
}

/// A subnet of the configured size inside the configured range.
pub fn fits(cfg: &NetConfig, n: &Ipv4Net) -> bool {
    n.prefix_len() == cfg.subnet_len
        && cfg.network.contains_net(n)
        && u32::from(n.addr()) >= u32::from(cfg.subnet_min)
        && u32::from(n.addr()) <= u32::from(cfg.subnet_max)
}
