//! Desired state (the leases) -> actual state (VTEP map entries and routes on
//! the overlay device). One function, idempotent: it reads what exists, adds
//! what is missing, removes what is stale, and can run any number of times.
use std::{collections::{BTreeMap, HashMap, HashSet}, net::Ipv4Addr};

use anyhow::Result;
use weft_common::{HostGwEntry, VtepEntry};

use crate::{datapath::Datapath, lease::Lease, netconfig::NetConfig, netlink::{Netlink, Route, RTPROT_WEFT}, subnet::Ipv4Net};

/// The peers we should reach, from the raw leases: every lease that passes
/// the checks all backends share (parses, is not ours, lies inside the
/// network, does not overlap ours) and the backend's own `check`. Bad leases
/// are skipped with a warning (once per distinct problem) and never affect
/// other peers.
pub fn desired<T>(
    leases: &BTreeMap<String, Vec<u8>>,
    own: &Ipv4Net,
    cfg: &NetConfig,
    warned: &mut HashMap<String, String>,
    mut check: impl FnMut(&Lease) -> anyhow::Result<T>,
) -> BTreeMap<Ipv4Net, T> {
    let mut out = BTreeMap::new();
    let mut problems = HashMap::new();
    for (k, v) in leases {
        let res = Lease::parse(k, v).and_then(|l| {
            if l.subnet == *own {
                return Ok(None);
            }
            if !cfg.network.contains_net(&l.subnet) {
                anyhow::bail!("subnet {} is outside Network {}", l.subnet, cfg.network);
            }
            if l.subnet.contains_net(own) || own.contains_net(&l.subnet) {
                anyhow::bail!("subnet {} overlaps our own {own}", l.subnet);
            }
            Ok(Some((l.subnet, check(&l)?)))
        });
        match res {
            Ok(Some((net, e))) => {
                out.insert(net, e);
            }
            Ok(None) => {}
            Err(e) => {
                problems.insert(k.clone(), format!("{e:#}"));
            }
        }
    }
    for (k, msg) in &problems {
        if warned.get(k) != Some(msg) {
            log::warn!("ignoring lease {k}: {msg}");
        }
    }
    *warned = problems;
    out
}

/// vxlan peers: remote subnet -> VTEP, for leases of our VNI.
pub fn desired_vxlan(leases: &BTreeMap<String, Vec<u8>>, own: &Ipv4Net, cfg: &NetConfig, vni: u32, warned: &mut HashMap<String, String>) -> BTreeMap<Ipv4Net, VtepEntry> {
    desired(leases, own, cfg, warned, |l| {
        let d = l.attrs.vxlan_data()?;
        if d.vni != vni {
            anyhow::bail!("VNI {} differs from ours ({vni})", d.vni);
        }
        Ok(VtepEntry { ip: l.attrs.public_ip.octets(), mac: d.vtep_mac, _pad: [0; 2] })
    })
}

/// host-gw peers: remote subnet -> the peer's PublicIP (the next hop).
pub fn desired_host_gw(leases: &BTreeMap<String, Vec<u8>>, own: &Ipv4Net, cfg: &NetConfig, warned: &mut HashMap<String, String>) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    desired(leases, own, cfg, warned, |l| match l.attrs.backend_type.as_deref() {
        Some("host-gw") => Ok(l.attrs.public_ip),
        other => anyhow::bail!("BackendType is {:?}, not \"host-gw\"", other.unwrap_or("(none: udp)")),
    })
}

/// udp peers: remote subnet -> the peer's PublicIP, for flannel's udp
/// leases (no BackendType).
pub fn desired_udp(leases: &BTreeMap<String, Vec<u8>>, own: &Ipv4Net, cfg: &NetConfig, warned: &mut HashMap<String, String>) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    desired(leases, own, cfg, warned, |l| {
        if l.attrs.is_udp() {
            Ok(l.attrs.public_ip)
        } else {
            anyhow::bail!("BackendType is {:?}, not udp's (none)", l.attrs.backend_type.as_deref().unwrap_or_default())
        }
    })
}

/// Whether `ip` is on our L2 segment: the best route to it (weft's own routes
/// aside) has no gateway and leaves by the underlay. Else says why not.
pub fn on_link(routes: &[Route], ip: Ipv4Addr, underlay: u32) -> std::result::Result<(), String> {
    let best = routes.iter().filter(|r| r.protocol != RTPROT_WEFT && r.dst.contains(ip)).max_by_key(|r| r.dst.prefix_len());
    match best {
        Some(r) if r.gateway.is_none() && r.oif == Some(underlay) => Ok(()),
        Some(r) if r.gateway.is_some() => Err(format!("its route goes via {}", r.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED))),
        Some(_) => Err("its route leaves by another interface".into()),
        None => Err("there is no route to it".into()),
    }
}

/// vxlan with DirectRouting: peers on our L2 segment are reached host-gw
/// style (returned second), the others through VXLAN (returned first).
pub async fn split_direct(nl: &Netlink, underlay: u32, want: BTreeMap<Ipv4Net, VtepEntry>) -> Result<(BTreeMap<Ipv4Net, VtepEntry>, BTreeMap<Ipv4Net, Ipv4Addr>)> {
    let routes = nl.main_routes_full().await?;
    let (mut tunnel, mut direct) = (BTreeMap::new(), BTreeMap::new());
    for (net, e) in want {
        let pip = Ipv4Addr::from(e.ip);
        if on_link(&routes, pip, underlay).is_ok() {
            direct.insert(net, pip);
        } else {
            tunnel.insert(net, e);
        }
    }
    Ok((tunnel, direct))
}

/// host-gw: makes `<subnet> via <PublicIP> dev <underlay>` exist for every
/// peer on our L2 segment (the best route to its PublicIP has no gateway),
/// and no weft route for anything else. A peer across a router cannot be
/// reached this way: it is skipped with a warning (once while it stays so).
/// With `fast` (the fast path is on), `weft_hostgw` is made to hold exactly
/// the routed peers, after their routes.
pub async fn apply_host_gw(nl: &Netlink, underlay: u32, want: &BTreeMap<Ipv4Net, Ipv4Addr>, skipped: &mut HashSet<Ipv4Net>, fast: Option<&mut Datapath>) -> Result<Changes> {
    let mut ch = Changes::default();
    let routes = nl.main_routes_full().await?;
    let mut reachable = BTreeMap::new();
    let mut now_skipped = HashSet::new();
    for (net, pip) in want {
        match on_link(&routes, *pip, underlay) {
            Ok(()) => {
                reachable.insert(*net, *pip);
            }
            Err(how) => {
                if !skipped.contains(net) {
                    log::warn!("host-gw: peer {net} (PublicIP {pip}) is not on the same L2 segment ({how}); skipping it");
                }
                now_skipped.insert(*net);
            }
        }
    }
    *skipped = now_skipped;
    let have: HashMap<Ipv4Net, Option<Ipv4Addr>> = routes.iter().filter(|r| r.protocol == RTPROT_WEFT && r.oif == Some(underlay)).map(|r| (r.dst, r.gateway)).collect();
    for (net, pip) in &reachable {
        if have.get(net) != Some(&Some(*pip)) {
            ch.tally(nl.replace_gw_route(net, *pip, underlay).await, true);
        }
    }
    for net in have.keys() {
        if !reachable.contains_key(net) {
            ch.tally(nl.delete_weft_route(net, underlay).await, false);
        }
    }
    if let Some(dp) = fast {
        sync_hostgw_map(dp, underlay, &reachable, &mut ch)?;
    }
    Ok(ch)
}

/// The fast path's map follows the routes. Its changes are not counted as
/// peers added or removed (the routes are); their errors are.
fn sync_hostgw_map(dp: &mut Datapath, underlay: u32, routed: &BTreeMap<Ipv4Net, Ipv4Addr>, ch: &mut Changes) -> Result<()> {
    let have = dp.hostgw()?;
    for net in have.keys() {
        if !routed.contains_key(net) {
            if let Err(e) = dp.remove_hostgw(net) {
                ch.tally(Err(e), false);
            }
        }
    }
    for (net, pip) in routed {
        let e = HostGwEntry { gateway: pip.octets(), ifindex: underlay };
        if have.get(net) != Some(&e) {
            if let Err(err) = dp.set_hostgw(net, &e) {
                ch.tally(Err(err), true);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
    pub errors: usize,
}

impl Changes {
    /// Counts one change, or logs and counts its error (one peer's failure
    /// never stops the others).
    pub fn tally(&mut self, r: Result<()>, added: bool) {
        match r {
            Ok(()) if added => self.added += 1,
            Ok(()) => self.removed += 1,
            Err(e) => {
                log::error!("{e:#}");
                self.errors += 1;
            }
        }
    }
}

/// Makes the maps and the routes match `want`: every vxlan peer goes into
/// `weft_vteps` and its PublicIP into `weft_vtep_ips` (decap accepts VXLAN
/// from it, for its subnet's sources), and those in `routed` (all but the
/// peers DirectRouting reaches by plain route) get a route on the overlay
/// device. Errors on one peer are logged and counted; the others are still
/// programmed.
pub async fn apply(dp: &mut Datapath, nl: &Netlink, overlay_index: u32, want: &BTreeMap<Ipv4Net, VtepEntry>, routed: &HashSet<Ipv4Net>) -> Result<Changes> {
    let mut ch = Changes::default();
    let have = dp.vteps()?;
    let ips: std::collections::BTreeSet<Ipv4Addr> = want.values().map(|e| Ipv4Addr::from(e.ip)).collect();
    let have_ips = dp.vtep_ips()?;
    // Map entries before routes on the way in, routes before entries on the
    // way out: a route never points at a missing entry.
    for ip in ips.difference(&have_ips) {
        ch.tally(dp.add_vtep_ip(*ip), true);
    }
    for (net, e) in want {
        if have.get(net) != Some(e) {
            ch.tally(dp.set_vtep(net, e), true);
        }
    }
    let routes = nl.routes_via(overlay_index).await?;
    let have_routes: HashSet<(Ipv4Net, Option<std::net::Ipv4Addr>)> = routes.iter().copied().collect();
    for net in want.keys().filter(|n| routed.contains(n)) {
        if !have_routes.contains(&(*net, Some(net.network_addr()))) {
            if let Err(err) = nl.replace_route(net, overlay_index).await {
                ch.tally(Err(err), true);
            }
        }
    }
    for (net, _) in &routes {
        if !routed.contains(net) || !want.contains_key(net) {
            ch.tally(nl.delete_route(net, overlay_index).await, false);
        }
    }
    for net in have.keys() {
        if !want.contains_key(net) {
            ch.tally(dp.remove_vtep(net), false);
        }
    }
    for ip in have_ips.difference(&ips) {
        ch.tally(dp.remove_vtep_ip(*ip), false);
    }
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_leases_are_skipped_alone() {
        let cfg = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let mut leases = BTreeMap::new();
        let good = br#"{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}"#;
        leases.insert("10.244.1.0-24".to_string(), good.to_vec());
        leases.insert("10.244.2.0-24".to_string(), good.to_vec());
        leases.insert("10.244.3.0-24".to_string(), b"{junk".to_vec());
        leases.insert("10.244.4.0-24".to_string(), br#"{"PublicIP":"192.168.77.4","BackendType":"host-gw"}"#.to_vec());
        leases.insert("10.244.5.0-24".to_string(), br#"{"PublicIP":"192.168.77.5","BackendType":"vxlan","BackendData":{"VNI":2,"VtepMAC":"02:00:00:00:00:05"}}"#.to_vec());
        leases.insert("10.99.0.0-24".to_string(), good.to_vec());
        leases.insert("10.244.0.0-16".to_string(), good.to_vec());
        leases.insert("not-a-key".to_string(), good.to_vec());
        let mut warned = HashMap::new();
        let d = desired_vxlan(&leases, &own, &cfg, 1, &mut warned);
        assert_eq!(d.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.2.0/24"]);
        assert_eq!(d.values().next().unwrap().ip, [192, 168, 77, 2]);
        assert_eq!(warned.len(), 6, "{warned:?}");
        assert!(warned["10.244.5.0-24"].contains("VNI"));
        let hg = desired_host_gw(&leases, &own, &cfg, &mut warned);
        assert_eq!(hg.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.4.0/24"]);
        assert!(warned["10.244.2.0-24"].contains("not \"host-gw\""), "{warned:?}");
        leases.insert("10.244.6.0-24".to_string(), br#"{"PublicIP":"192.168.77.6","PublicIPv6":null}"#.to_vec());
        let udp = desired_udp(&leases, &own, &cfg, &mut warned);
        assert_eq!(udp.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.6.0/24"]);
        assert!(warned["10.244.2.0-24"].contains("not udp's"), "{warned:?}");
    }
}
