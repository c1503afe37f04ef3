//! The maps, all BTF-typed so `bpftool map dump name weft_...` prints fields.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use weft_common::{stat, Counter, DatapathConfig, HostGwEntry, SubnetAddr, VtepEntry, MAX_VTEPS};

/// Remote pod subnet -> peer VTEP. Written by the agent from the leases.
#[btf_map]
pub static weft_vteps: LpmTrie<SubnetAddr, VtepEntry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Remote pod subnet -> next hop, for the subnets routed host-gw style.
/// Written by the agent with the routes; read by the host-gw fast path.
#[btf_map]
pub static weft_hostgw: LpmTrie<SubnetAddr, HostGwEntry, { MAX_VTEPS as usize }> = LpmTrie::new();

/// Element 0: this node's configuration. Written by the agent at start.
#[btf_map]
pub static weft_config: Array<DatapathConfig, 1> = Array::new();

/// Per-CPU counters, indexed by `weft_common::stat`.
#[btf_map]
pub static weft_stats: PerCpuArray<Counter, { stat::COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    match weft_config.get(0) {
        Some(c) if c.vni != 0 => Some(c),
        _ => None,
    }
}

#[inline(always)]
pub fn vtep_for(daddr: [u8; 4]) -> Option<&'static VtepEntry> {
    weft_vteps.get(&Key::new(32, daddr))
}

#[inline(always)]
pub fn hostgw_for(daddr: [u8; 4]) -> Option<&'static HostGwEntry> {
    weft_hostgw.get(&Key::new(32, daddr))
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
