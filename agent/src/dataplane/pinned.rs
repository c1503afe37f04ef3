//! A node's pinned maps read without loading the programs: `weftd status`,
//! `/metrics` and `weftd log-level` open them by path, so they work beside a
//! running weftd (and after it stopped) without disturbing it.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{lpm_trie::LpmTrie, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use weft_common::{map_names, stat, subnet_env::Ipv6Cidr, Counter, HostGw6Entry, HostGwEntry, PodEntry, Vtep6Entry, VtepEntry};

use crate::subnet::Ipv4Net;

/// The pinned map `name` of the node whose `--bpf-pin-dir` is `pin_root`.
pub fn map(pin_root: &Path, name: &str) -> Result<MapData> {
    let p = weft_common::pins::dir(pin_root).join(name);
    MapData::from_pin(&p).with_context(|| format!("opening {}", p.display()))
}

/// One counter summed over the CPUs.
pub fn sum(per_cpu: &PerCpuValues<Counter>) -> Counter {
    per_cpu.iter().fold(Counter::default(), |s, c| Counter { packets: s.packets + c.packets, bytes: s.bytes + c.bytes })
}

/// Every counter of `weft_stats`, indexed by `weft_common::stat` (None: not pinned).
pub fn counters(pin_root: &Path) -> Option<Vec<Counter>> {
    let a = PerCpuArray::<_, Counter>::try_from(Map::PerCpuArray(map(pin_root, map_names::STATS).ok()?)).ok()?;
    (0..stat::COUNT).map(|i| a.get(&i, 0).ok().map(|v| sum(&v))).collect()
}

/// An LPM map of subnets (`weft_vteps`, `weft_hostgw`); empty if not pinned.
pub fn subnets<V: aya::Pod>(pin_root: &Path, name: &str) -> BTreeMap<Ipv4Net, V> {
    map(pin_root, name)
        .ok()
        .and_then(|m| LpmTrie::<_, [u8; 4], V>::try_from(Map::LpmTrie(m)).ok())
        .map(|t| t.iter().filter_map(|kv| kv.ok()).filter_map(|(k, v)| Some((Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).ok()?, v))).collect())
        .unwrap_or_default()
}

pub fn vteps(pin_root: &Path) -> BTreeMap<Ipv4Net, VtepEntry> {
    subnets(pin_root, map_names::VTEPS)
}

pub fn hostgw(pin_root: &Path) -> BTreeMap<Ipv4Net, HostGwEntry> {
    subnets(pin_root, map_names::HOSTGW)
}

/// Registered pod endpoints; empty if not pinned.
pub fn pods(pin_root: &Path) -> BTreeMap<Ipv4Addr, PodEntry> {
    map(pin_root, map_names::PODS)
        .ok()
        .and_then(|m| HashMap::<_, [u8; 4], PodEntry>::try_from(Map::HashMap(m)).ok())
        .map(|h| h.iter().filter_map(|kv| kv.ok()).map(|(k, v)| (Ipv4Addr::from(k), v)).collect())
        .unwrap_or_default()
}

/// The IPv6 VTEPs (`weft_vteps6`: a peer's IPv6 subnet -> its PublicIPv6
/// and IPv6 VtepMAC), sorted by subnet; empty if not pinned (no dual stack,
/// or an older weftd's pins).
pub fn vteps6(pin_root: &Path) -> Vec<(Ipv6Cidr, Vtep6Entry)> {
    subnets6(pin_root, map_names::VTEPS6)
}

/// An IPv6 LPM map of subnets (`weft_vteps6`, `weft_hostgw6`), sorted by
/// subnet; empty if not pinned.
fn subnets6<V: aya::Pod>(pin_root: &Path, name: &str) -> Vec<(Ipv6Cidr, V)> {
    let mut v: Vec<(Ipv6Cidr, V)> = map(pin_root, name)
        .ok()
        .and_then(|m| LpmTrie::<_, [u8; 16], V>::try_from(Map::LpmTrie(m)).ok())
        .map(|t| t.iter().filter_map(|kv| kv.ok()).map(|(k, v)| (Ipv6Cidr { addr: Ipv6Addr::from(k.data()), prefix_len: k.prefix_len() as u8 }, v)).collect())
        .unwrap_or_default();
    v.sort_by_key(|(n, _)| (n.addr, n.prefix_len));
    v
}

/// The host-gw fast path's IPv6 peers (`weft_hostgw6`: a peer's IPv6
/// subnet -> its PublicIPv6 and the underlay), sorted by subnet.
pub fn hostgw6(pin_root: &Path) -> Vec<(Ipv6Cidr, HostGw6Entry)> {
    subnets6(pin_root, map_names::HOSTGW6)
}

/// Registered pod endpoints' IPv6 addresses (`weft_pods6`); empty if not pinned.
pub fn pods6(pin_root: &Path) -> BTreeMap<Ipv6Addr, PodEntry> {
    map(pin_root, map_names::PODS6)
        .ok()
        .and_then(|m| HashMap::<_, [u8; 16], PodEntry>::try_from(Map::HashMap(m)).ok())
        .map(|h| h.iter().filter_map(|kv| kv.ok()).map(|(k, v)| (Ipv6Addr::from(k), v)).collect())
        .unwrap_or_default()
}
