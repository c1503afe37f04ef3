//! Choosing and claiming our subnets, in flannel's order: (1) the lease that
//! already carries our PublicIP, (2) the subnets of our previous subnet.env
//! if still free, (3) a random one among the first 100 free. On a dual-stack
//! network a lease holds an IPv4 and an IPv6 subnet, named together by its
//! key (`10.244.5.0-24&fd44:0:0:5::-64`); each is chosen among those no
//! other lease holds. Creation is an etcd transaction; on a collision
//! (another node won the race) we try again with a fresh view instead of
//! exiting as flanneld does.
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
#[cfg(test)]
use std::collections::BTreeSet;

use super::{
    lease::{Lease, LeaseAttrs},
    registry::Registry,
    Ipv4Net, Ipv6Net, Subnets,
};
use crate::netconfig::NetConfig;

const ATTEMPTS: usize = 20;

pub async fn acquire(store: &impl Registry, cfg: &NetConfig, attrs: &LeaseAttrs, previous: Option<Subnets>, ttl: i64) -> Result<Subnets> {
    for attempt in 1..=ATTEMPTS {
        let (_rev, kvs) = store.list().await?;
        let (mut taken, mut taken6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (vec![], vec![]);
        let mut ours_v4 = None;
        for (k, v) in &kvs {
            let Ok(nets) = Subnets::from_key(k) else { continue };
            if Lease::parse(k, v).is_ok_and(|l| l.attrs.public_ip == attrs.public_ip) {
                if fits(cfg, &nets) {
                    log::info!("reusing lease {nets}: it carries our PublicIP {}", attrs.public_ip);
                    store.renew(&nets, attrs, ttl).await?;
                    return Ok(nets);
                }
                if fits_v4(cfg, &nets.v4) {
                    // Ours from before the network gained (or lost) IPv6: a
                    // lease of the other form is made below with the same
                    // IPv4 subnet, so that pods keep their addresses.
                    log::info!("replacing our lease {nets}: the network's IPv6 setting changed; keeping {}", nets.v4);
                    store.delete(&nets).await?;
                    ours_v4 = Some(nets.v4);
                    continue;
                }
            }
            taken.push(nets.v4);
            taken6.extend(nets.v6);
        }
        let free = |n: &Ipv4Net| !taken.iter().any(|t| t.contains_net(n) || n.contains_net(t));
        let free6 = |n: &Ipv6Net| !taken6.iter().any(|t| t.contains_net(n) || n.contains_net(t));
        let free_both = |s: &Subnets| free(&s.v4) && s.v6.is_none_or(|v6| free6(&v6));
        if let Some(prev) = previous.filter(|p| fits(cfg, p) && free_both(p)) {
            if store.create(&prev, attrs, ttl).await? {
                log::info!("acquired lease {prev} (the subnet of our previous subnet file)");
                return Ok(prev);
            }
        }
        let pick = |v4: Option<Ipv4Net>| -> Result<Subnets> {
            let v4 = match v4 {
                Some(v4) => v4,
                None => {
                    let candidates: Vec<Ipv4Net> = cfg.candidate_subnets().filter(|n| free(n)).take(100).collect();
                    let Some(v4) = candidates.choose(&mut rand::thread_rng()).copied() else {
                        bail!("no free subnet left in {} between {} and {} (/{})", cfg.network, cfg.subnet_min, cfg.subnet_max, cfg.subnet_len);
                    };
                    v4
                }
            };
            let Some(c6) = &cfg.ipv6 else { return Ok(Subnets::v4(v4)) };
            let candidates: Vec<Ipv6Net> = c6.candidate_subnets().filter(|n| free6(n)).take(100).collect();
            let Some(v6) = candidates.choose(&mut rand::thread_rng()).copied() else {
                bail!("no free IPv6 subnet left in {} between {} and {} (/{})", c6.network, c6.subnet_min, c6.subnet_max, c6.subnet_len);
            };
            Ok(Subnets { v4, v6: Some(v6) })
        };
        // The previous IPv4 subnet is kept when only its IPv6 part is new
        // (the network just became dual-stack): pods keep their addresses.
        let keep_v4 = ours_v4.or(previous.map(|p| p.v4)).filter(|v4| fits_v4(cfg, v4) && free(v4));
        let pick = pick(keep_v4)?;
        if store.create(&pick, attrs, ttl).await? {
            log::info!("acquired lease {pick}");
            return Ok(pick);
        }
        log::warn!("subnets {pick} were taken by another node while we claimed them (attempt {attempt}/{ATTEMPTS}); choosing again");
    }
    bail!("could not claim a subnet after {ATTEMPTS} attempts: every choice collided with another node")
}

/// Subnets of the configured sizes inside the configured ranges, with an
/// IPv6 part exactly when the network is dual-stack.
pub fn fits(cfg: &NetConfig, s: &Subnets) -> bool {
    let v6 = match (&cfg.ipv6, &s.v6) {
        (None, None) => true,
        (Some(c6), Some(n6)) => c6.fits(n6),
        _ => false,
    };
    fits_v4(cfg, &s.v4) && v6
}

/// An IPv4 subnet of the configured size inside the configured range.
pub fn fits_v4(cfg: &NetConfig, n: &Ipv4Net) -> bool {
    n.prefix_len() == cfg.subnet_len
        && cfg.network.contains_net(n)
        && u32::from(n.addr()) >= u32::from(cfg.subnet_min)
        && u32::from(n.addr()) <= u32::from(cfg.subnet_max)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::subnet::embedded::LocalStore;

    fn store(tag: &str) -> (LocalStore, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("weft-acquire-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        (LocalStore::open(&d, Path::new("/nonexistent/net-conf.json")).unwrap(), d)
    }

    fn attrs(n: u8) -> LeaseAttrs {
        LeaseAttrs::host_gw(std::net::Ipv4Addr::new(192, 168, 1, n)).with_ipv6(format!("fd77::{n}").parse().unwrap(), None)
    }

    #[tokio::test]
    async fn dual_stack_leases_take_free_subnets_of_both_families() {
        let (s, d) = store("ds");
        let cfg = NetConfig::parse(r#"{"Network":"10.244.0.0/22","EnableIPv6":true,"IPv6Network":"fd44::/62","Backend":{"Type":"host-gw"}}"#).unwrap();
        // /22 and /62 hold three usable /24 and /64 each (the first is skipped).
        let mut got = vec![];
        for n in 1..=3 {
            let own = acquire(&s, &cfg, &attrs(n), None, 60).await.unwrap();
            assert!(fits(&cfg, &own), "{own}");
            got.push(own);
        }
        let v4: BTreeSet<_> = got.iter().map(|s| s.v4).collect();
        let v6: BTreeSet<_> = got.iter().map(|s| s.v6.unwrap()).collect();
        assert_eq!((v4.len(), v6.len()), (3, 3), "no subnet of either family handed out twice: {got:?}");
        let keys: Vec<String> = s.list().await.unwrap().1.into_iter().map(|(k, _)| k).collect();
        assert!(keys.iter().all(|k| k.contains('&')), "{keys:?}");
        // Our PublicIP's lease is ours again; a fourth node finds nothing free.
        assert_eq!(acquire(&s, &cfg, &attrs(2), None, 60).await.unwrap(), got[1]);
        let e = format!("{:#}", acquire(&s, &cfg, &attrs(4), None, 60).await.unwrap_err());
        assert!(e.contains("no free subnet"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_network_turned_dual_stack_keeps_the_ipv4_subnet() {
        let (s, d) = store("turned");
        let cfg = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        let prev = Subnets::v4("10.244.9.0/24".parse().unwrap());
        let own = acquire(&s, &cfg, &attrs(1), Some(prev), 60).await.unwrap();
        assert_eq!(own.v4, prev.v4);
        assert!(own.v6.is_some_and(|v6| cfg.ipv6.as_ref().unwrap().fits(&v6)), "{own}");
        // A node whose IPv4-only lease (with its PublicIP) is still in the
        // store, without a subnet.env: the lease is replaced, its subnet kept.
        let old = Subnets::v4("10.244.20.0/24".parse().unwrap());
        assert!(s.create(&old, &attrs(2), 60).await.unwrap());
        let own = acquire(&s, &cfg, &attrs(2), None, 60).await.unwrap();
        assert_eq!(own.v4, old.v4);
        let keys: Vec<String> = s.list().await.unwrap().1.into_iter().map(|(k, _)| k).collect();
        assert!(!keys.contains(&old.to_key()) && keys.contains(&own.to_key()), "{keys:?}");
        // And back: IPv6 turned off again keeps the IPv4 subnet too.
        let v4only = NetConfig::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap();
        assert_eq!(acquire(&s, &v4only, &attrs(2), None, 60).await.unwrap(), old);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
