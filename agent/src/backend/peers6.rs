//! The IPv6 half of a dual-stack lease set: peers by their IPv6 subnet, and
//! the IPv6 routes a backend keeps through one link. Shared by host-gw
//! (`<v6 subnet> via <PublicIPv6> dev <underlay>`) and vxlan
//! (`<v6 subnet> dev weft-v6.<VNI>`), as [`super::peers`] is for IPv4.
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use anyhow::{bail, Result};

use super::{peers::Warned, Changes};
use crate::{
    net::netlink::{self, Netlink},
    subnet::{lease::Lease, Ipv6Net, Leases},
};

/// The IPv6 peers: every lease with an IPv6 subnet that parses, is not ours,
/// lies in the IPv6 network and does not overlap ours, has a PublicIPv6 and
/// passes `check`. Bad leases are warned about once (in `warned.v6`, apart
/// from the IPv4 checks' warnings) and affect no other peer.
pub fn desired6<T>(
    leases: &Leases,
    own: &Ipv6Net,
    network: &Ipv6Net,
    warned: &mut Warned,
    mut check: impl FnMut(&Lease, Ipv6Addr) -> Result<T>,
) -> BTreeMap<Ipv6Net, T> {
    let mut out = BTreeMap::new();
    let mut problems = HashMap::new();
    for (k, v) in leases {
        let res = Lease::parse(k, v).and_then(|l| {
            let Some(net) = l.subnet6 else { bail!("no IPv6 subnet in a network that carries IPv6 (a node without EnableIPv6?)") };
            if net == *own {
                return Ok(None);
            }
            if !network.contains_net(&net) {
                bail!("IPv6 subnet {net} is outside IPv6Network {network}");
            }
            if net.contains_net(own) || own.contains_net(&net) {
                bail!("IPv6 subnet {net} overlaps our own {own}");
            }
            let Some(pip) = l.attrs.public_ipv6 else { bail!("PublicIPv6 is missing") };
            Ok(Some((net, check(&l, pip)?)))
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
        if warned.v6.get(k) != Some(msg) {
            log::warn!("ignoring the IPv6 part of lease {k}: {msg}");
        }
    }
    warned.v6 = problems;
    out
}

/// Makes weft's IPv6 routes through link `index` exactly `want` (subnet ->
/// gateway, None: a device route), replacing what differs and deleting the
/// rest.
pub async fn sync_routes6(nl: &Netlink, index: u32, want: &BTreeMap<Ipv6Net, Option<Ipv6Addr>>) -> Result<Changes> {
    let have: BTreeMap<Ipv6Net, Option<Ipv6Addr>> = nl.routes6_via(index).await?.into_iter().collect();
    let add: Vec<(Ipv6Net, Option<Ipv6Addr>)> = want.iter().filter(|(n, g)| have.get(n) != Some(g)).map(|(n, g)| (*n, *g)).collect();
    let stale: Vec<Ipv6Net> = have.keys().filter(|n| !want.contains_key(n)).copied().collect();
    let mut ch = Changes::default();
    ch.tally_all(netlink::pipelined(add, |(net, gw)| async move { nl.replace_route6(&net, gw, index).await }).await, true);
    ch.tally_all(netlink::pipelined(stale, |net| async move { nl.delete_route6(&net, index).await }).await, false);
    Ok(ch)
}

/// The IPv6 network's `unreachable` catch-all (see
/// [`super::routed::ensure_unreachable`]): a lost node's IPv6 pods are
/// answered unreachable at once.
pub async fn ensure_unreachable6(nl: &Netlink, network: &Ipv6Net, ch: &mut Changes) {
    match nl.ensure_unreachable6(network).await {
        Ok(added) => ch.added += added as usize,
        Err(e) => ch.tally(Err(e), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_and_bad_ipv6_parts() {
        let own: Ipv6Net = "fd44:0:0:1::/64".parse().unwrap();
        let net: Ipv6Net = "fd44::/48".parse().unwrap();
        let mut leases = Leases::new();
        let v = |pip: &str| format!(r#"{{"PublicIP":"192.168.77.9","PublicIPv6":{pip},"BackendType":"host-gw"}}"#).into_bytes();
        leases.insert("10.244.1.0-24&fd44:0:0:1::-64".into(), v(r#""fd77::1""#));
        leases.insert("10.244.2.0-24&fd44:0:0:2::-64".into(), v(r#""fd77::2""#));
        leases.insert("10.244.3.0-24".into(), v("null"));
        leases.insert("10.244.4.0-24&fd45:0:0:4::-64".into(), v(r#""fd77::4""#));
        leases.insert("10.244.5.0-24&fd44:0:0:5::-64".into(), v("null"));
        leases.insert("10.244.6.0-24&fd44::-47".into(), v(r#""fd77::6""#));
        let mut warned = Warned::default();
        warned.v4.insert("10.244.9.0-24".into(), "an IPv4 problem stays".into());
        let d = desired6(&leases, &own, &net, &mut warned, |_, pip| Ok(pip));
        assert_eq!(d.iter().map(|(n, p)| format!("{n} {p}")).collect::<Vec<_>>(), ["fd44:0:0:2::/64 fd77::2"]);
        assert!(warned.v6["10.244.3.0-24"].contains("no IPv6 subnet"), "{warned:?}");
        assert!(warned.v6["10.244.4.0-24&fd45:0:0:4::-64"].contains("outside"), "{warned:?}");
        assert!(warned.v6["10.244.5.0-24&fd44:0:0:5::-64"].contains("PublicIPv6"), "{warned:?}");
        assert!(warned.v6["10.244.6.0-24&fd44::-47"].contains("outside"), "{warned:?}");
        assert!(warned.v4.contains_key("10.244.9.0-24"));
    }
}
