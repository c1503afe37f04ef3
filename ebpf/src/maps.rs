//! The maps, all BTF-typed so `bpftool map dump name weft_...` prints fields.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use weft_common::{
    stat, Counter, Datapath6Config, DatapathConfig, HostGw6Entry, HostGwEntry, PodEntry, Subnet6Addr, SubnetAddr, Vtep6Entry, VtepEntry, MAX_PODS, MAX_VTEPS,
    MAX_VTEP_IPS,
};

/// Remote pod subnet -> peer VTEP. Written by the agent from the leases.
#[btf_map]
pub static weft_vteps: LpmTrie<SubnetAddr, VtepEntry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Remote pod subnet -> next hop, for the subnets routed host-gw style.
/// Written by the agent with the routes; read by the host-gw fast path.
#[btf_map]
pub static weft_hostgw: LpmTrie<SubnetAddr, HostGwEntry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Local pod IPv4 -> endpoint. Written by the agent from weft-cni's records.
#[btf_map]
pub static weft_pods: HashMap<[u8; 4], PodEntry, { MAX_PODS as usize }> = HashMap::new();

/// Every vxlan peer's PublicIP: the only VTEPs decap accepts VXLAN from.
#[btf_map]
pub static weft_vtep_ips: HashMap<[u8; 4], u32, { MAX_VTEP_IPS as usize }> = HashMap::new();

/// Remote pod IPv6 subnet -> peer's IPv6 VTEP. Written by the agent from
/// the leases' IPv6 half (PublicIPv6, BackendV6Data's VtepMAC).
#[btf_map]
pub static weft_vteps6: LpmTrie<Subnet6Addr, Vtep6Entry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Local pod IPv6 -> endpoint (the record's `ip6`).
#[btf_map]
pub static weft_pods6: HashMap<[u8; 16], PodEntry, { MAX_PODS as usize }> = HashMap::new();

/// Every vxlan peer's PublicIPv6: the only IPv6 VTEPs decap accepts VXLAN from.
#[btf_map]
pub static weft_vtep_ips6: HashMap<[u8; 16], u32, { MAX_VTEP_IPS as usize }> = HashMap::new();

/// Remote pod IPv6 subnet -> next hop, for the IPv6 subnets routed host-gw
/// style (`via` the peer's PublicIPv6). Written by the agent with those
/// routes; read by the host-gw fast path's IPv6 half.
#[btf_map]
pub static weft_hostgw6: LpmTrie<Subnet6Addr, HostGw6Entry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Element 0: this node's IPv6 overlay configuration.
#[btf_map]
pub static weft_config6: Array<Datapath6Config, 1> = Array::new();

#[inline(always)]
pub fn is_vtep6(ip: &[u8; 16]) -> bool {
    weft_vtep_ips6.get_ptr(ip).is_some()
}

/// The IPv6 configuration once the agent wrote it (our PublicIPv6 set).
#[inline(always)]
pub fn config6() -> Option<&'static Datapath6Config> {
    match weft_config6.get(0) {
        Some(c) if !crate::hdr::is_zero16(&c.local_ip) => Some(c),
        _ => None,
    }
}

#[inline(always)]
pub fn vtep6_for(addr: [u8; 16]) -> Option<&'static Vtep6Entry> {
    weft_vteps6.get(&Key::new(128, addr))
}

#[inline(always)]
pub fn hostgw6_for(addr: [u8; 16]) -> Option<&'static HostGw6Entry> {
    weft_hostgw6.get(&Key::new(128, addr))
}

/// The endpoint of local pod `ip` (IPv6), copied.
#[inline(always)]
pub fn pod6(ip: &[u8; 16]) -> Option<PodEntry> {
    // SAFETY: the pointer comes from a successful lookup and is read at once.
    weft_pods6.get_ptr(ip).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn is_vtep(ip: [u8; 4]) -> bool {
    weft_vtep_ips.get_ptr(&ip).is_some()
}

/// Element 0: this node's configuration. Written by the agent at start.
#[btf_map]
pub static weft_config: Array<DatapathConfig, 1> = Array::new();

/// Element 0: weftd's deadline (`weft_common::map_names::DEADLINE`).
#[btf_map]
pub static weft_deadline: Array<u64, 1> = Array::new();

/// Whether weftd has been gone past its deadline: every program then
/// passes packets to the kernel untouched. One lookup and one clock read;
/// no deadline (0, or an agent that never wrote one) never stands aside.
#[inline(always)]
pub fn stood_aside() -> bool {
    match weft_deadline.get(0) {
        // SAFETY: a helper without arguments.
        Some(&d) if d != 0 => (unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }) > d,
        _ => false,
    }
}

/// Per-CPU counters, indexed by `weft_common::stat`.
#[btf_map]
pub static weft_stats: PerCpuArray<Counter, { stat::SLOTS as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    match weft_config.get(0) {
        Some(c) if c.vni != 0 => Some(c),
        _ => None,
    }
}

/// The configuration's flags, also before it is complete (host-gw nodes
/// never set a VNI).
#[inline(always)]
pub fn flags() -> u32 {
    weft_config.get(0).map_or(0, |c| c.flags)
}

#[inline(always)]
pub fn vtep_for(daddr: [u8; 4]) -> Option<&'static VtepEntry> {
    weft_vteps.get(&Key::new(32, daddr))
}

#[inline(always)]
pub fn hostgw_for(daddr: [u8; 4]) -> Option<&'static HostGwEntry> {
    weft_hostgw.get(&Key::new(32, daddr))
}

/// The endpoint of local pod `ip`, copied (a hash entry may be deleted
/// under us by the agent).
#[inline(always)]
pub fn pod(ip: [u8; 4]) -> Option<PodEntry> {
    // SAFETY: the pointer comes from a successful lookup and is read at once.
    weft_pods.get_ptr(&ip).map(|p| unsafe { *p })
}

/// Adds one packet of `bytes` to counter `idx` on this CPU.
#[inline(always)]
pub fn count(idx: u32, bytes: u32) {
    if let Some(c) = weft_stats.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
