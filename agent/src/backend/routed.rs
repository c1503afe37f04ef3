//! Peers reached by plain routes via their PublicIP on the underlay: the
//! host-gw backend, and vxlan's DirectRouting peers on our L2 segment. Both
//! use [`Routed`], so DirectRouting reuses host-gw's code rather than a copy.
//! host-gw's IPv6 peers (and vxlan's DirectRouting IPv6 peers) are routed
//! the same way via their PublicIPv6 ([`apply_host_gw6`]), with the fast
//! path's `weft_hostgw6`.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use weft_common::{subnet_env::Ipv6Cidr, HostGw6Entry, HostGwEntry, VtepEntry};

use super::{peers::Changes, peers6::sync_routes6};
use crate::{
    dataplane::Datapath,
    net::netlink::{self, Netlink, Route, Route6, RTPROT_WEFT},
    subnet::{Ipv4Net, Ipv6Net},
};

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

/// [`on_link`] for IPv6: the best route to `ip` (weft's own aside) has no
/// gateway and leaves by the underlay.
pub fn on_link6(routes: &[Route6], ip: Ipv6Addr, underlay: u32) -> bool {
    let best = routes.iter().filter(|r| r.protocol != RTPROT_WEFT && r.dst.contains(ip)).max_by_key(|r| r.dst.prefix_len());
    best.is_some_and(|r| r.gateway.is_none() && r.oif == Some(underlay))
}

/// vxlan with DirectRouting: peers on our L2 segment are reached host-gw
/// style (returned second), the others through VXLAN (returned first).
pub async fn split_direct(
    nl: &Netlink,
    underlay: u32,
    want: BTreeMap<Ipv4Net, VtepEntry>,
) -> Result<(BTreeMap<Ipv4Net, VtepEntry>, BTreeMap<Ipv4Net, Ipv4Addr>)> {
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
async fn apply_host_gw(
    nl: &Netlink,
    underlay: u32,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    skipped: &mut HashSet<Ipv4Net>,
    fast: Option<&mut Datapath>,
) -> Result<Changes> {
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
    let have: HashMap<Ipv4Net, Option<Ipv4Addr>> =
        routes.iter().filter(|r| r.protocol == RTPROT_WEFT && r.oif == Some(underlay)).map(|r| (r.dst, r.gateway)).collect();
    // Owned lists: a closure over borrowed items in this Send future trips
    // the compiler's higher-ranked lifetime check.
    let add: Vec<(Ipv4Net, Ipv4Addr)> = reachable.iter().filter(|(net, pip)| have.get(*net) != Some(&Some(**pip))).map(|(n, p)| (*n, *p)).collect();
    ch.tally_all(netlink::pipelined(add, |(net, pip)| async move { nl.replace_gw_route(&net, pip, underlay).await }).await, true);
    let stale: Vec<Ipv4Net> = have.keys().filter(|net| !reachable.contains_key(*net)).copied().collect();
    ch.tally_all(netlink::pipelined(stale, |net| async move { nl.delete_weft_route(&net, underlay).await }).await, false);
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

/// host-gw over IPv6: `<v6 subnet> via <PublicIPv6> dev <underlay>` for
/// exactly `want` ([`sync_routes6`]) and, with `fast` (the fast path is
/// on), `weft_hostgw6` kept with those routes: entries that no longer match
/// a wanted route leave before the routes change, entries for the routes
/// that exist afterwards go in after them, so the map never names a peer
/// without its route. Only peers actually routed get entries: the kernel
/// takes an IPv6 route via a global gateway only if that gateway is reached
/// by a gateway-less route out of the same device (ip6_route_check_nh), the
/// rule [`on_link`] applies for IPv4; a route it refused is counted as an
/// error and gets no entry.
pub async fn apply_host_gw6(nl: &Netlink, underlay: u32, want: &BTreeMap<Ipv6Net, Option<Ipv6Addr>>, fast: Option<&mut Datapath>) -> Result<Changes> {
    let Some(dp) = fast else {
        return sync_routes6(nl, underlay, want).await;
    };
    let mut ch = Changes::default();
    let entry = |gw: Ipv6Addr| HostGw6Entry { gateway: gw.octets(), ifindex: underlay };
    let have = hostgw6_entries(dp)?;
    for (net, e) in &have {
        if want.get(net).copied().flatten().map(entry) != Some(*e) {
            if let Err(err) = dp.remove_hostgw6(&cidr6(net)) {
                ch.tally(Err(err), false);
            }
        }
    }
    ch.merge(sync_routes6(nl, underlay, want).await?);
    let have = hostgw6_entries(dp)?;
    for (net, gw) in nl.routes6_via(underlay).await? {
        let Some(gw) = gw else { continue };
        if want.get(&net) != Some(&Some(gw)) || have.get(&net) == Some(&entry(gw)) {
            continue;
        }
        if let Err(err) = dp.set_hostgw6(&cidr6(&net), &entry(gw)) {
            ch.tally(Err(err), true);
        }
    }
    Ok(ch)
}

/// Empties `weft_hostgw6` (`--no-fast-path`, cleanup, IPv6 off); how many
/// entries it held.
pub fn clear_hostgw6(dp: &mut Datapath) -> Result<usize> {
    let have = dp.hostgw6()?;
    for (net, _) in &have {
        dp.remove_hostgw6(net)?;
    }
    Ok(have.len())
}

fn hostgw6_entries(dp: &Datapath) -> Result<BTreeMap<Ipv6Net, HostGw6Entry>> {
    Ok(dp.hostgw6()?.into_iter().filter_map(|(c, e)| Some((Ipv6Net::new(c.addr, c.prefix_len).ok()?, e))).collect())
}

fn cidr6(n: &Ipv6Net) -> Ipv6Cidr {
    Ipv6Cidr { addr: n.network_addr(), prefix_len: n.prefix_len() }
}

/// The routed peers of one underlay, and those skipped (warned about once).
pub struct Routed {
    pub underlay: u32,
    skipped: HashSet<Ipv4Net>,
}

impl Routed {
    pub fn new(underlay: u32) -> Routed {
        Routed { underlay, skipped: HashSet::new() }
    }

    /// Routes (and with `fast`, the fast path's `weft_hostgw`) for exactly `want`.
    pub async fn apply(&mut self, nl: &Netlink, want: &BTreeMap<Ipv4Net, Ipv4Addr>, fast: Option<&mut Datapath>) -> Result<Changes> {
        apply_host_gw(nl, self.underlay, want, &mut self.skipped, fast).await
    }

    /// Removes every weft route on the underlay (`--cleanup-on-exit`).
    pub async fn cleanup(&self, nl: &Netlink) {
        match nl.routes_via(self.underlay).await {
            Ok(routes) => {
                for (net, _) in routes {
                    if let Err(e) = nl.delete_weft_route(&net, self.underlay).await {
                        log::warn!("{e:#}");
                    }
                }
            }
            Err(e) => log::warn!("{e:#}"),
        }
    }
}

/// Every backend but udp (whose TUN route covers the network): a subnet
/// nobody holds is unreachable, not routed out of the node.
pub async fn ensure_unreachable(nl: &Netlink, network: &Ipv4Net, ch: &mut Changes) {
    match nl.ensure_unreachable(network).await {
        Ok(added) => ch.added += added as usize,
        Err(e) => ch.tally(Err(e), true),
    }
}
