//! Desired state (the leases) -> actual state (VTEP map entries and routes on
//! the overlay device). One function, idempotent: it reads what exists, adds
//! what is missing, removes what is stale, and can run any number of times.
use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use weft_common::VtepEntry;

use crate::{datapath::Datapath, lease::Lease, netconfig::NetConfig, netlink::Netlink, subnet::Ipv4Net};

/// The peers we should reach, from the raw leases. Bad leases are skipped
/// with a warning (once per distinct problem) and never affect other peers.
pub fn desired(
    leases: &BTreeMap<String, Vec<u8>>,
    own: &Ipv4Net,
    cfg: &NetConfig,
    vni: u32,
    warned: &mut HashMap<String, String>,
) -> BTreeMap<Ipv4Net, VtepEntry> {
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
            let d = l.attrs.vxlan_data()?;
            if d.vni != vni {
                anyhow::bail!("VNI {} differs from ours ({vni})", d.vni);
            }
            Ok(Some((l.subnet, VtepEntry { ip: l.attrs.public_ip.octets(), mac: d.vtep_mac, _pad: [0; 2] })))
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

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
    pub errors: usize,
}

/// Makes the map and the routes match `want`. Errors on one peer are logged
/// and counted; the others are still programmed.
pub async fn apply(dp: &mut Datapath, nl: &Netlink, overlay_index: u32, want: &BTreeMap<Ipv4Net, VtepEntry>) -> Result<Changes> {
    let mut ch = Changes::default();
    let have = dp.vteps()?;
    // Map entries before routes on the way in, routes before entries on the
    // way out: a route never points at a missing entry.
    for (net, e) in want {
        if have.get(net) != Some(e) {
            match dp.set_vtep(net, e) {
                Ok(()) => ch.added += 1,
                Err(err) => {
                    log::error!("{err:#}");
                    ch.errors += 1;
                }
            }
        }
    }
    let routes = nl.routes_via(overlay_index).await?;
    let have_routes: HashSet<(Ipv4Net, Option<std::net::Ipv4Addr>)> = routes.iter().copied().collect();
    for net in want.keys() {
        if !have_routes.contains(&(*net, Some(net.network_addr()))) {
            if let Err(err) = nl.replace_route(net, overlay_index).await {
                log::error!("{err:#}");
                ch.errors += 1;
            }
        }
    }
    for (net, _) in &routes {
        if !want.contains_key(net) {
            match nl.delete_route(net, overlay_index).await {
                Ok(()) => ch.removed += 1,
                Err(err) => {
                    log::error!("{err:#}");
                    ch.errors += 1;
                }
            }
        }
    }
    for net in have.keys() {
        if !want.contains_key(net) {
            match dp.remove_vtep(net) {
                Ok(()) => ch.removed += 1,
                Err(err) => {
                    log::error!("{err:#}");
                    ch.errors += 1;
                }
            }
        }
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
        let d = desired(&leases, &own, &cfg, 1, &mut warned);
        assert_eq!(d.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.2.0/24"]);
        assert_eq!(d.values().next().unwrap().ip, [192, 168, 77, 2]);
        assert_eq!(warned.len(), 6, "{warned:?}");
        assert!(warned["10.244.5.0-24"].contains("VNI"));
    }
}
