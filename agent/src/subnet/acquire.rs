//! Choosing and claiming our subnets, in flannel's order: (1) the lease that
//! already carries our PublicIP (our PublicIPv6 on an IPv6-only network), (2) the subnets of our previous subnet.env
//! if still free, (3) a random one among the first 100 free. On a dual-stack
//! network a lease holds an IPv4 and an IPv6 subnet, named together by its
//! key (`10.244.5.0-24&fd44:0:0:5::-64`); each is chosen among those no
//! other lease holds. Creation is an etcd transaction; on a collision
//! (another node won the race) we try again with a fresh view instead of
//! exiting as flanneld does.
use anyhow::{bail, Context, Result};
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
        // What of our own lease (from before the network gained or lost a
        // family) is kept in the lease that replaces it.
        let mut ours = None;
        for (k, v) in &kvs {
            let Ok(nets) = Subnets::from_key(k) else { continue };
            if Lease::parse(k, v).is_ok_and(|l| same_node(&l.attrs, attrs)) {
                if fits(cfg, &nets) {
                    log::info!("reusing lease {nets}: it carries our {}", public_address(attrs));
                    store.renew(&nets, attrs, ttl).await?;
                    return Ok(nets);
                }
                let kept = fitting_parts(cfg, &nets);
                if kept.v4.is_some() || kept.v6.is_some() {
                    // A lease of the network's form is made below with the
                    // same subnets, so that pods keep their addresses.
                    log::info!("replacing our lease {nets}: the network's address families changed; keeping {kept}");
                    store.delete(&nets).await?;
                    ours = Some(kept);
                    continue;
                }
            }
            taken.extend(nets.v4);
            taken6.extend(nets.v6);
        }
        let free = |n: &Ipv4Net| !taken.iter().any(|t| t.contains_net(n) || n.contains_net(t));
        let free6 = |n: &Ipv6Net| !taken6.iter().any(|t| t.contains_net(n) || n.contains_net(t));
        let free_both = |s: &Subnets| s.v4.is_none_or(|v4| free(&v4)) && s.v6.is_none_or(|v6| free6(&v6));
        if let Some(prev) = previous.filter(|p| fits(cfg, p) && free_both(p)) {
            if store.create(&prev, attrs, ttl).await? {
                log::info!("acquired lease {prev} (the subnet of our previous subnet file)");
                return Ok(prev);
            }
        }
        // Each family's subnet of our replaced lease, else of our previous
        // subnet file, is kept when it still fits and is free (the network
        // just gained or lost a family): pods keep their addresses.
        let keep = ours.or(previous.map(|p| fitting_parts(cfg, &p)));
        let v4 = match &cfg.ipv4 {
            None => None,
            Some(c4) => Some(match keep.and_then(|k| k.v4).filter(&free) {
                Some(v4) => v4,
                None => {
                    let candidates: Vec<Ipv4Net> = c4.candidate_subnets().filter(&free).take(100).collect();
                    *candidates.choose(&mut rand::thread_rng()).with_context(|| {
                        format!("no free subnet left in {} between {} and {} (/{})", c4.network, c4.subnet_min, c4.subnet_max, c4.subnet_len)
                    })?
                }
            }),
        };
        let v6 = match &cfg.ipv6 {
            None => None,
            Some(c6) => Some(match keep.and_then(|k| k.v6).filter(&free6) {
                Some(v6) => v6,
                None => {
                    let candidates: Vec<Ipv6Net> = c6.candidate_subnets().filter(&free6).take(100).collect();
                    *candidates.choose(&mut rand::thread_rng()).with_context(|| {
                        format!("no free IPv6 subnet left in {} between {} and {} (/{})", c6.network, c6.subnet_min, c6.subnet_max, c6.subnet_len)
                    })?
                }
            }),
        };
        let pick = Subnets { v4, v6 };
        if store.create(&pick, attrs, ttl).await? {
            log::info!("acquired lease {pick}");
            return Ok(pick);
        }
        log::warn!("subnets {pick} were taken by another node while we claimed them (attempt {attempt}/{ATTEMPTS}); choosing again");
    }
    bail!("could not claim a subnet after {ATTEMPTS} attempts: every choice collided with another node")
}

/// Whether a lease was written by this node: it carries our PublicIP, or on
/// an IPv6-only network (where every PublicIP is 0.0.0.0) our PublicIPv6.
fn same_node(theirs: &LeaseAttrs, ours: &LeaseAttrs) -> bool {
    if ours.public_ip.is_unspecified() {
        ours.public_ipv6.is_some() && theirs.public_ipv6 == ours.public_ipv6
    } else {
        theirs.public_ip == ours.public_ip
    }
}

/// The address that names this node in the log.
fn public_address(attrs: &LeaseAttrs) -> String {
    match attrs.public_ipv6.filter(|_| attrs.public_ip.is_unspecified()) {
        Some(a) => format!("PublicIPv6 {a}"),
        None => format!("PublicIP {}", attrs.public_ip),
    }
}

/// Subnets of the configured sizes inside the configured ranges, with a
/// part of each family the network carries and of no other.
pub fn fits(cfg: &NetConfig, s: &Subnets) -> bool {
    let v4 = match (&cfg.ipv4, &s.v4) {
        (None, None) => true,
        (Some(c4), Some(n4)) => c4.fits(n4),
        _ => false,
    };
    let v6 = match (&cfg.ipv6, &s.v6) {
        (None, None) => true,
        (Some(c6), Some(n6)) => c6.fits(n6),
        _ => false,
    };
    v4 && v6
}

/// The parts of `s` that fit the network's configuration of their family.
fn fitting_parts(cfg: &NetConfig, s: &Subnets) -> Subnets {
    Subnets { v4: s.v4.filter(|n| cfg.ipv4.as_ref().is_some_and(|c| c.fits(n))), v6: s.v6.filter(|n| cfg.ipv6.as_ref().is_some_and(|c| c.fits(n))) }
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
        let v4: BTreeSet<_> = got.iter().map(|s| s.v4.unwrap()).collect();
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
    async fn ipv6_only_leases_are_told_apart_by_public_ipv6() {
        let (s, d) = store("v6only");
        let cfg = NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/62","Backend":{"Type":"host-gw"}}"#).unwrap();
        let v6only = |n: u8| LeaseAttrs::ipv6_only("host-gw", format!("fd77::{n}").parse().unwrap(), None);
        let mut got = vec![];
        for n in 1..=3 {
            let own = acquire(&s, &cfg, &v6only(n), None, 60).await.unwrap();
            assert!(own.v4.is_none() && fits(&cfg, &own), "{own}");
            got.push(own);
        }
        let v6: BTreeSet<_> = got.iter().map(|s| s.v6.unwrap()).collect();
        assert_eq!(v6.len(), 3, "every PublicIP is 0.0.0.0, yet no subnet is handed out twice: {got:?}");
        let keys: Vec<String> = s.list().await.unwrap().1.into_iter().map(|(k, _)| k).collect();
        assert!(keys.iter().all(|k| k.starts_with("0.0.0.0-0&fd44:")), "{keys:?}");
        // The lease with our PublicIPv6 is ours again.
        assert_eq!(acquire(&s, &cfg, &v6only(2), None, 60).await.unwrap(), got[1]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_dual_stack_network_turned_ipv6_only_keeps_the_ipv6_subnet() {
        let (s, d) = store("to-v6only");
        let ds = NetConfig::parse(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        let before = acquire(&s, &ds, &attrs(1), None, 60).await.unwrap();
        let cfg = NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd44::/48"}"#).unwrap();
        let v6only = LeaseAttrs::ipv6_only("host-gw", "fd77::1".parse().unwrap(), None);
        // From the previous subnet file's IPv6 part.
        let after = acquire(&s, &cfg, &v6only, Some(before), 60).await.unwrap();
        assert_eq!((after.v4, after.v6), (None, before.v6));
        let keys: Vec<String> = s.list().await.unwrap().1.into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&after.to_key()), "{keys:?}");
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
