//! Local pod endpoints, from the records weft-cni writes (one JSON file per
//! pod interface in `--endpoints-dir`, written at ADD, removed at DEL), into
//! the datapath: `weft_pods` for a record with `ip`, `weft_pods6` for a
//! record with `ip6` (an IPv6-only node's pods have only `ip6`)
//! (decapsulated traffic goes straight into the
//! pod) and `weft_from_pod` on each pod's host-side veth (its traffic is
//! encapsulated or forwarded where it leaves the pod). Reconciled like
//! everything else, from the records and the devices that exist: after a
//! restart, a pod deleted meanwhile leaves the map, a new one enters it.
//! Pods flannel's CNI plugin attached come from [`super::adopted_pods`] as
//! records of the same form and go through the same code (weft-cni's
//! record for an address wins).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::programs::TcAttachType;
/// One pod interface, as weft-cni records it (the contract between the two,
/// defined once with its reader and writer in `weft_common::endpoint`).
pub use weft_common::endpoint::EndpointRecord;
use weft_common::{prog_names, PodEntry};

use super::{adopted_pods::AdoptedPods, Datapath};
use crate::{backend::Changes, net::netlink::Netlink, subnet::lease::parse_mac};

/// The pod endpoint map's entry for a record.
fn entry(r: &EndpointRecord) -> Result<PodEntry> {
    Ok(PodEntry {
        host_ifindex: r.host_ifindex,
        pod_mac: parse_mac(&r.pod_mac).with_context(|| format!("podMac {:?}", r.pod_mac))?,
        gw_mac: parse_mac(&r.bridge_mac).with_context(|| format!("bridgeMac {:?}", r.bridge_mac))?,
    })
}

/// Reads every `*.json` record in `dir` (a missing or unreadable directory
/// holds none). Bad records are returned as errors naming the file, never fatal.
pub fn read_records(dir: &Path) -> Vec<(PathBuf, Result<EndpointRecord>)> {
    let all = weft_common::endpoint::list(dir).unwrap_or_default();
    all.into_iter().map(|(p, r)| (p, r.map_err(anyhow::Error::from))).collect()
}

/// A cheap fingerprint of the directory (names and modification times), so
/// the agent notices a record added or removed within a second.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut v: Vec<_> = entries.flatten().filter_map(|e| Some((e.file_name(), e.metadata().ok()?.modified().ok()?))).collect();
        v.sort();
        v.hash(&mut h);
    }
    h.finish()
}

/// What a live record is known by: its IPv4 address, or for a pod of an
/// IPv6-only node (no `ip`) its IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PodKey {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl PodKey {
    /// None for a record with neither address (the reader refuses those).
    fn of(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> Option<PodKey> {
        ip.map(PodKey::V4).or(ip6.map(PodKey::V6))
    }

    fn ip(self) -> std::net::IpAddr {
        match self {
            PodKey::V4(ip) => ip.into(),
            PodKey::V6(ip) => ip.into(),
        }
    }

    fn v4(&self) -> Option<Ipv4Addr> {
        match self {
            PodKey::V4(ip) => Some(*ip),
            PodKey::V6(_) => None,
        }
    }
}

/// Live records: pod (IPv4, else IPv6) -> (endpoint, host veth, pod IPv6 if any).
type Live = BTreeMap<PodKey, (PodEntry, String, Option<Ipv6Addr>)>;

pub struct PodEndpoints {
    dir: PathBuf,
    /// flannel-CNI pods, registered beside weft-cni's (None: not looked
    /// for); boxed, as the backends keep the fast path inline.
    adopted: Option<Box<AdoptedPods>>,
    /// Host veths `weft_from_pod` is attached to (by this process).
    attached: HashSet<u32>,
    /// Record file -> the problem last logged for it.
    warned: HashMap<PathBuf, String>,
}

impl PodEndpoints {
    pub fn new(dir: &Path, adopted: Option<AdoptedPods>) -> PodEndpoints {
        PodEndpoints { dir: dir.to_path_buf(), adopted: adopted.map(Box::new), attached: HashSet::new(), warned: HashMap::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records (weft-cni's, then the adopted pods') whose host veth exists
    /// with the recorded name and index: the pods that exist. The others
    /// are skipped (a pod deleted while weftd was away, a record being
    /// written) with one warning each.
    async fn live(&mut self, nl: &Netlink) -> Result<Live> {
        let links: HashMap<u32, String> = nl.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
        let mut want = BTreeMap::new();
        let mut problems = HashMap::new();
        // weft-cni's records first: theirs is the pod's record where both
        // know an address (a weft-cni pod's address is in the same store).
        let mut sources: Vec<(PathBuf, Result<EndpointRecord>, bool)> = read_records(&self.dir).into_iter().map(|(p, r)| (p, r, false)).collect();
        if let Some(a) = &mut self.adopted {
            let recorded = sources.iter().filter_map(|(_, r, _)| Some(r.as_ref().ok()?.host_ifindex)).collect();
            sources.extend(a.scan(&recorded).await.iter().map(|(p, r)| (p.clone(), Ok(r.clone()), true)));
        }
        let mut adopted = BTreeSet::new();
        for (path, rec, is_adopted) in sources {
            if let (true, Ok(Some(k))) = (is_adopted, rec.as_ref().map(|r| PodKey::of(r.ip, r.ip6))) {
                if want.contains_key(&k) {
                    continue;
                }
                adopted.insert(k);
            }
            let r = rec.and_then(|r| {
                match links.get(&r.host_ifindex) {
                    Some(name) if *name == r.host_veth => {}
                    Some(name) => bail!("device #{} is {name}, not {}", r.host_ifindex, r.host_veth),
                    None => bail!("its host veth {} (#{}) does not exist", r.host_veth, r.host_ifindex),
                }
                let key = PodKey::of(r.ip, r.ip6).context("the record has neither ip nor ip6")?;
                Ok((key, r.ip6, entry(&r)?, r.host_veth))
            });
            match r {
                Ok((key, ip6, e, veth)) => {
                    want.insert(key, (e, veth, ip6));
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.warned.get(&path) != Some(&msg) {
                        let what = if is_adopted { "flannel-CNI pod of" } else { "endpoint record" };
                        log::warn!("{what} {}: {msg}; skipping it", path.display());
                    }
                    problems.insert(path, msg);
                }
            }
        }
        self.warned = problems;
        if let Some(a) = &mut self.adopted {
            let kept = adopted.into_iter().filter(|k| want.contains_key(k)).map(PodKey::ip).collect();
            a.log_adopted(kept);
        }
        Ok(want)
    }

    /// Makes `weft_pods` and the per-pod links match the live records.
    pub async fn reconcile(&mut self, dp: &mut Datapath, nl: &Netlink) -> Result<Changes> {
        let mut ch = Changes::default();
        let want = self.live(nl).await?;
        let have = dp.pods()?;
        // Links first, then the entry: decap into a pod never precedes the
        // program on its veth (and the reverse on the way out).
        let want_links: HashSet<u32> = want.values().map(|(e, _, _)| e.host_ifindex).collect();
        for (e, veth, _) in want.values() {
            if !self.attached.contains(&e.host_ifindex) {
                let r = dp.attach_tc_many(prog_names::FROM_POD, veth, e.host_ifindex, TcAttachType::Ingress);
                if r.is_ok() {
                    self.attached.insert(e.host_ifindex);
                }
                ch.tally(r, true);
            }
        }
        // The records' IPv4 addresses (none for an IPv6-only pod).
        let want4: BTreeMap<Ipv4Addr, PodEntry> = want.iter().filter_map(|(k, (e, _, _))| Some((k.v4()?, *e))).collect();
        for (ip, e) in &want4 {
            if have.get(ip) != Some(e) {
                ch.tally(dp.set_pod(*ip, e), true);
            }
        }
        for ip in have.keys() {
            if !want4.contains_key(ip) {
                ch.tally(dp.remove_pod(*ip), false);
            }
        }
        // The records' IPv6 addresses (dual stack, IPv6-only), the same way.
        let want6: BTreeMap<Ipv6Addr, PodEntry> = want.values().filter_map(|(e, _, ip6)| Some(((*ip6)?, *e))).collect();
        let have6 = dp.pods6()?;
        for (ip, e) in &want6 {
            if have6.get(ip) != Some(e) {
                ch.tally(dp.set_pod6(*ip, e), true);
            }
        }
        for ip in have6.keys() {
            if !want6.contains_key(ip) {
                ch.tally(dp.remove_pod6(*ip), false);
            }
        }
        for idx in dp.pinned_links(prog_names::FROM_POD) {
            if !want_links.contains(&idx) {
                ch.tally(dp.release_link(prog_names::FROM_POD, idx), false);
                self.attached.remove(&idx);
            }
        }
        self.attached.retain(|i| want_links.contains(i));
        Ok(ch)
    }

    /// `--no-fast-path`: nothing of an earlier run's pod shortcuts stays.
    pub fn clear(dp: &mut Datapath) -> Result<usize> {
        let pods = dp.pods()?;
        for ip in pods.keys() {
            dp.remove_pod(*ip)?;
        }
        for ip in dp.pods6()?.keys() {
            dp.remove_pod6(*ip)?;
        }
        for idx in dp.pinned_links(prog_names::FROM_POD) {
            dp.release_link(prog_names::FROM_POD, idx)?;
        }
        Ok(pods.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<EndpointRecord> {
        Ok(EndpointRecord::parse(b)?)
    }

    #[test]
    fn records_parse_as_weft_cni_writes_them() {
        let r = parse(br#"{"containerID":"abc","ifname":"eth0","netns":"/var/run/netns/x","ip":"10.244.1.5","podMac":"0a:58:0a:f4:01:05","hostVeth":"veth1a2b3c4d","hostIfindex":17,"bridge":"cni0","bridgeMac":"02:00:00:00:00:01","mtu":1450}"#).unwrap();
        assert_eq!(r.ip, Some(Ipv4Addr::new(10, 244, 1, 5)));
        assert_eq!(r.container_id, "abc");
        assert_eq!(entry(&r).unwrap(), PodEntry { host_ifindex: 17, pod_mac: [0x0a, 0x58, 0x0a, 0xf4, 1, 5], gw_mac: [2, 0, 0, 0, 0, 1] });
        for bad in [
            &b"{"[..],
            br#"{"ip":"10.0.0.1"}"#,
            br#"{"ifname":"eth0","ip":"10.244.1.5","podMac":"zz","hostVeth":"v","hostIfindex":3,"bridgeMac":"02:00:00:00:00:01"}"#,
        ] {
            assert!(parse(bad).and_then(|r| entry(&r)).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Only what weftd needs is required (no containerID, netns, bridge, mtu here).
        let minimal = br#"{"ifname":"eth0","ip":"10.244.1.5","podMac":"02:00:00:00:00:02","hostVeth":"v","hostIfindex":3,"bridgeMac":"02:00:00:00:00:01"}"#;
        assert_eq!(entry(&parse(minimal).unwrap()).unwrap().host_ifindex, 3);
        let zero = br#"{"ifname":"eth0","ip":"10.244.1.5","podMac":"02:00:00:00:00:02","hostVeth":"v","hostIfindex":0,"bridgeMac":"02:00:00:00:00:01"}"#;
        assert!(parse(zero).is_err());
    }

    /// A pod of an IPv6-only node: known by its IPv6 address, no IPv4 entry.
    #[test]
    fn an_ipv6_only_record_is_keyed_by_ip6() {
        let r =
            parse(br#"{"ifname":"eth0","ip6":"fd44:0:0:5::2","podMac":"0a:58:00:00:00:02","hostVeth":"v","hostIfindex":3,"bridgeMac":"02:00:00:00:00:01"}"#)
                .unwrap();
        let ip6: Ipv6Addr = "fd44:0:0:5::2".parse().unwrap();
        assert_eq!((r.ip, r.ip6), (None, Some(ip6)));
        let k = PodKey::of(r.ip, r.ip6).unwrap();
        assert_eq!((k, k.v4()), (PodKey::V6(ip6), None));
        let v4 = Ipv4Addr::new(10, 244, 1, 5);
        assert_eq!(PodKey::of(Some(v4), Some(ip6)).and_then(|k| k.v4()), Some(v4), "a dual-stack record stays keyed by its IPv4 address");
        assert_eq!(PodKey::of(None, None), None);
    }
}
