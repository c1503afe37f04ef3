//! From the raw leases to the peers a backend programs, and the tally of
//! what a reconcile changed: the part every backend shares.
use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

use crate::subnet::{lease::Lease, Ipv4Net, Leases};

/// Lease keys that failed a check -> the problem, as last warned about (a
/// lasting problem is logged once): the IPv4 checks' ([`desired`]) and the
/// IPv6 checks' ([`super::peers6::desired6`]) apart, so that each reconcile
/// of one family keeps the other's.
#[derive(Debug, Default)]
pub struct Warned {
    pub v4: HashMap<String, String>,
    pub v6: HashMap<String, String>,
}

/// The peers we should reach, from the raw leases: every lease that passes
/// the checks all backends share (parses, is not ours, lies inside the
/// network, does not overlap ours) and the backend's own `check`. Bad leases
/// are skipped with a warning (once per distinct problem) and never affect
/// other peers.
pub fn desired<T>(
    leases: &Leases,
    own: &Ipv4Net,
    network: &Ipv4Net,
    warned: &mut Warned,
    mut check: impl FnMut(&Lease) -> anyhow::Result<T>,
) -> BTreeMap<Ipv4Net, T> {
    let mut out = BTreeMap::new();
    let mut problems = HashMap::new();
    for (k, v) in leases {
        let res = Lease::parse(k, v).and_then(|l| {
            let Some(subnet) = l.subnet else {
                anyhow::bail!("it has no IPv4 subnet (a lease of an IPv6-only network), and this network carries IPv4");
            };
            if subnet == *own {
                return Ok(None);
            }
            if !network.contains_net(&subnet) {
                anyhow::bail!("subnet {subnet} is outside Network {network}");
            }
            if subnet.contains_net(own) || own.contains_net(&subnet) {
                anyhow::bail!("subnet {subnet} overlaps our own {own}");
            }
            Ok(Some((subnet, check(&l)?)))
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
        if warned.v4.get(k) != Some(msg) {
            log::warn!("ignoring lease {k}: {msg}");
        }
    }
    warned.v4 = problems;
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
    pub errors: usize,
}

impl Changes {
    /// Adds another part's changes to these.
    pub fn merge(&mut self, other: Changes) {
        self.added += other.added;
        self.removed += other.removed;
        self.errors += other.errors;
    }

    /// Counts one change, or logs and counts its error (one peer's failure
    /// never stops the others).
    /// [`Self::tally`] for every result of a batch.
    pub fn tally_all(&mut self, rs: Vec<Result<()>>, added: bool) {
        for r in rs {
            self.tally(r, added);
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{host_gw::desired_host_gw, udp::backend::desired_udp, vxlan::desired_vxlan};
    use crate::netconfig::NetConfig;

    #[test]
    fn bad_leases_are_skipped_alone() {
        let network = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap().network4().unwrap();
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let mut leases = BTreeMap::new();
        let good = br#"{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}"#;
        leases.insert("10.244.1.0-24".to_string(), good.to_vec());
        leases.insert("10.244.2.0-24".to_string(), good.to_vec());
        leases.insert("10.244.3.0-24".to_string(), b"{junk".to_vec());
        leases.insert("10.244.4.0-24".to_string(), br#"{"PublicIP":"192.168.77.4","BackendType":"host-gw"}"#.to_vec());
        leases.insert(
            "10.244.5.0-24".to_string(),
            br#"{"PublicIP":"192.168.77.5","BackendType":"vxlan","BackendData":{"VNI":2,"VtepMAC":"02:00:00:00:00:05"}}"#.to_vec(),
        );
        leases.insert("10.99.0.0-24".to_string(), good.to_vec());
        leases.insert("10.244.0.0-16".to_string(), good.to_vec());
        leases.insert("not-a-key".to_string(), good.to_vec());
        leases.insert("0.0.0.0-0&fd44:0:0:7::-64".to_string(), good.to_vec());
        let mut warned = Warned::default();
        let d = desired_vxlan(&leases, &own, &network, 1, &mut warned);
        assert_eq!(d.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.2.0/24"]);
        assert_eq!(d.values().next().unwrap().ip, [192, 168, 77, 2]);
        assert_eq!(warned.v4.len(), 7, "{warned:?}");
        assert!(warned.v4["0.0.0.0-0&fd44:0:0:7::-64"].contains("IPv6-only"), "{warned:?}");
        assert!(warned.v4["10.244.5.0-24"].contains("VNI"));
        let hg = desired_host_gw(&leases, &own, &network, &mut warned);
        assert_eq!(hg.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.4.0/24"]);
        assert!(warned.v4["10.244.2.0-24"].contains("not \"host-gw\""), "{warned:?}");
        leases.insert("10.244.6.0-24".to_string(), br#"{"PublicIP":"192.168.77.6","PublicIPv6":null}"#.to_vec());
        let udp = desired_udp(&leases, &own, &network, &mut warned);
        assert_eq!(udp.keys().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.244.6.0/24"]);
        assert!(warned.v4["10.244.2.0-24"].contains("not udp's"), "{warned:?}");
    }
}
