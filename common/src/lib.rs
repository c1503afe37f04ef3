//! Types shared by weft's kernel programs (`ebpf/`) and its agent (`agent/`),
//! and (feature `std`) the contracts between weftd, weft-cni and the test
//! harness that cross crates: [`subnet_env`], [`endpoint`] records, the
//! [`pins`] layout, [`mac`] formatting and atomic file replacement ([`fs`]).
//!
//! Every map key and value is defined here once, `#[repr(C)]`, with explicit
//! padding so that the layout is the same on both sides and the verifier never
//! sees an unaligned stack access. Addresses are kept in network byte order as
//! `[u8; 4]` (what the packet holds, so the datapath compares without swapping);
//! other integers are host order.
// no_std for the kernel programs; `std` (the userspace contracts) links std.
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
pub mod endpoint;
#[cfg(feature = "std")]
pub mod fs;
pub mod mac;
pub mod pins;
#[cfg(feature = "std")]
pub mod subnet_env;

/// UDP port of flannel's vxlan backend (the Linux default, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes added in front of the inner IPv4 packet: outer IPv4 (20) + UDP (8) +
/// VXLAN (8) + inner Ethernet (14). The outer Ethernet header replaces the
/// original one, so the frame grows by exactly this much.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Names of the pinned maps. The kernel keeps 15 characters of a map name.
pub mod map_names {
    /// LPM trie: remote pod subnet -> VTEP (every vxlan peer, also those
    /// DirectRouting reaches by route: decap checks senders against it).
    pub const VTEPS: &str = "weft_vteps";
    /// Array with one element: this node's datapath configuration.
    pub const CONFIG: &str = "weft_config";
    /// Per-CPU array of packet/byte counters, indexed by [`super::stat`].
    pub const STATS: &str = "weft_stats";
    /// LPM trie: remote pod subnet reached by plain routing (host-gw, or a
    /// DirectRouting peer) -> its next hop, for the host-gw fast path.
    pub const HOSTGW: &str = "weft_hostgw";
    /// Hash: local pod IPv4 -> its endpoint (host-side veth, MACs).
    pub const PODS: &str = "weft_pods";
    /// Hash: PublicIP of every vxlan peer -> 1: the VTEPs decap accepts.
    pub const VTEP_IPS: &str = "weft_vtep_ips";
    /// LPM trie: remote pod IPv6 subnet -> VTEP on the IPv6 underlay
    /// ([`super::Vtep6Entry`]): encap6's peers, decap's anti-spoofing.
    pub const VTEPS6: &str = "weft_vteps6";
    /// Array with one element: this node's IPv6 overlay configuration
    /// ([`super::Datapath6Config`]; the VNI and port are `weft_config`'s).
    pub const CONFIG6: &str = "weft_config6";
    /// Hash: local pod IPv6 -> its endpoint ([`super::PodEntry`]).
    pub const PODS6: &str = "weft_pods6";
    /// Hash: PublicIPv6 of every vxlan peer -> 1: the IPv6 VTEPs decap accepts.
    pub const VTEP_IPS6: &str = "weft_vtep_ips6";
    /// LPM trie: remote pod IPv6 subnet routed host-gw style (`via` the
    /// peer's PublicIPv6) -> its next hop ([`super::HostGw6Entry`]), for the
    /// host-gw fast path over IPv6.
    pub const HOSTGW6: &str = "weft_hostgw6";
    /// Array with one `u64`: weftd's deadline, in `bpf_ktime_get_ns`'s clock
    /// (CLOCK_MONOTONIC, ns); 0: none. weftd moves it on while it runs;
    /// once the clock passes it every program stands aside (passes packets
    /// to the kernel untouched, counted as [`super::stat::STOOD_ASIDE`]).
    /// A map of its own, not a field of [`super::DatapathConfig`], so that
    /// the pinned maps of an earlier weftd keep their layout.
    pub const DEADLINE: &str = "weft_deadline";
    pub const ALL: [&str; 12] = [VTEPS, CONFIG, STATS, HOSTGW, PODS, VTEP_IPS, VTEPS6, CONFIG6, PODS6, VTEP_IPS6, HOSTGW6, DEADLINE];
}

/// Names of the kernel programs (their function names in `ebpf/`).
pub mod prog_names {
    /// TC egress on the overlay device: encapsulate in VXLAN.
    pub const ENCAP: &str = "weft_encap";
    /// TC ingress on the underlay: decapsulate VXLAN for us.
    pub const DECAP: &str = "weft_decap";
    /// XDP on the underlay: the same decapsulation, earlier. Removed (TC
    /// after tunnel GRO measured faster); the name stays so that a link an
    /// earlier weftd pinned is found and released.
    pub const XDP_DECAP: &str = "weft_xdp_decap";
    /// TC ingress on the pod-facing bridge: the host-gw fast path.
    pub const FWD: &str = "weft_fwd";
    /// TC ingress on a pod's host-side veth: encapsulate or forward the
    /// pod's traffic to peers right where it leaves the pod.
    pub const FROM_POD: &str = "weft_from_pod";
    /// TC ingress on the underlay with host-gw: a peer pod's packet for a
    /// registered local pod goes straight into it.
    pub const TO_POD: &str = "weft_to_pod";
    /// TC ingress on the overlay device when it is a kernel vxlan device:
    /// only what `weft_decap` validated may enter the stack there.
    pub const OVERLAY_IN: &str = "weft_overlay_in";
    /// TC egress on the IPv6 overlay device (`weft-v6.<VNI>`): finds the
    /// peer in `weft_vteps6` and writes the inner Ethernet header; the
    /// kernel's vxlan device adds outer IPv6/UDP/VXLAN (real checksum, GSO).
    pub const ENCAP6: &str = "weft_encap6";
    /// TC ingress on the IPv6 overlay device: only what `weft_decap`
    /// validated (IPv6 VXLAN from a peer, inner source in its subnet)
    /// enters; registered pods get it straight.
    pub const OVERLAY_IN6: &str = "weft_overlay_in6";
}

/// Maximum number of peers' VTEP addresses.
pub const MAX_VTEP_IPS: u32 = 65536;

/// Maximum number of remote subnets (peers) the VTEP map holds.
pub const MAX_VTEPS: u32 = 65536;

/// Key data of the VTEP LPM trie: an IPv4 address in network byte order.
/// (The trie key is `{ prefix_len: u32, data: SubnetAddr }`.)
pub type SubnetAddr = [u8; 4];

/// Where to send a remote subnet's traffic: the peer node's VTEP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VtepEntry {
    /// The peer's PublicIP: outer destination address.
    pub ip: [u8; 4],
    /// The peer's VtepMAC: inner destination MAC.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// A remote subnet reached host-gw style: the fast path forwards its traffic
/// only when the kernel's own route agrees (same next hop, same interface),
/// so a route changed by hand always wins over the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct HostGwEntry {
    /// The peer's PublicIP: the gateway of weft's route to the subnet.
    pub gateway: [u8; 4],
    /// The underlay: the interface that route leaves by.
    pub ifindex: u32,
}

/// Key data of the IPv6 VTEP LPM trie: an IPv6 address in network byte order.
pub type Subnet6Addr = [u8; 16];

/// A remote IPv6 subnet reached host-gw style (`<v6 subnet> via <PublicIPv6>
/// dev <underlay>`): as [`HostGwEntry`], the fast path forwards only when
/// the kernel's own IPv6 route agrees (same next hop, same interface).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct HostGw6Entry {
    /// The peer's PublicIPv6: the gateway of weft's route to the subnet.
    pub gateway: [u8; 16],
    /// The underlay: the interface that route leaves by.
    pub ifindex: u32,
}

/// Where a remote IPv6 subnet's traffic goes: the peer node's IPv6 VTEP
/// (`flannel-v6.<VNI>` or `weft-v6.<VNI>` on the peer).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Vtep6Entry {
    /// The peer's PublicIPv6: outer destination address.
    pub ip: [u8; 16],
    /// The peer's IPv6 VtepMAC (its `BackendV6Data`): inner destination MAC.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// This node's IPv6 overlay configuration, element 0 of `weft_config6`.
/// All zero ("not configured"): the IPv6 paths touch nothing (decap leaves
/// IPv6 to the stack, encap6 drops, counted `drop_no_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Datapath6Config {
    /// Our PublicIPv6: the outer destination decap accepts IPv6 VXLAN for.
    pub local_ip: [u8; 16],
    /// The IPv6 overlay device (`weft-v6.<VNI>`): where `weft_from_pod`
    /// sends a registered pod's IPv6 traffic to peers.
    pub overlay_ifindex: u32,
    /// Our IPv6 VtepMAC (the device's MAC): inner source MAC on encap.
    pub vtep_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Maximum number of local pod endpoints.
pub const MAX_PODS: u32 = 4096;

/// A local pod endpoint, registered from weft-cni's endpoint records: where
/// decapsulated traffic for the pod goes (`bpf_redirect_peer` through the
/// host-side veth, straight into the pod) and the MACs its frames carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PodEntry {
    /// The pod's host-side veth.
    pub host_ifindex: u32,
    /// The pod's own MAC: destination of frames delivered to it.
    pub pod_mac: [u8; 6],
    /// The pod's gateway MAC (the bridge's): source of frames delivered to
    /// it, and destination of the pod's routed traffic.
    pub gw_mac: [u8; 6],
}

/// Flags of [`DatapathConfig::flags`].
pub mod cfg_flags {
    /// Compute the outer UDP checksum (default off, as the kernel's vxlan), from
    /// headers alone for non-GSO TCP, UDP and ICMP; other packets keep 0.
    pub const UDP_CSUM: u32 = 1 << 0;
    /// Kernel-side debug logs (aya-log) on: off by default, switched at run
    /// time by `weftd log-level`, which flips this bit in the pinned map.
    pub const LOG_DEBUG: u32 = 1 << 1;
    /// The overlay device is a kernel vxlan device on our port (the
    /// default): VXLAN for us whose inner packet is not for a registered
    /// local pod is validated (VNI, lengths, anti-spoofing), marked with
    /// [`super::OVERLAY_MARK`] and left encapsulated, for the device's
    /// socket to decapsulate. Its socket is also what lets GRO merge VXLAN
    /// on the underlay, and the kernel's decapsulation clears the tunnel
    /// GSO state that a forwarded packet must not keep.
    pub const KERNEL_VXLAN: u32 = 1 << 2;
}

/// skb mark `weft_decap` gives what it hands to the overlay device (the
/// kernel vxlan socket keeps the mark through decapsulation within the
/// namespace); `weft_overlay_in` lets only marked packets in and clears the
/// mark, so VXLAN that reached the socket another way (sent by a local pod,
/// or to another local address) is dropped. Set only on packets addressed
/// to this node, and only between the underlay's and the overlay's TC
/// ingress hooks (the outer packet's trip through the host's INPUT hooks).
/// The low 16 bits are clear: kube-proxy's marks are 0x4000 (masquerade)
/// and 0x8000 (drop, matched in INPUT by older versions).
pub const OVERLAY_MARK: u32 = 0x7765_0000; // "we"

/// This node's datapath configuration, element 0 of the config array.
/// `vni == 0` means "not configured yet": the programs then touch nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DatapathConfig {
    /// VXLAN network identifier (24 bits), host order.
    pub vni: u32,
    /// Our PublicIP: outer source address, and the address decap accepts.
    pub local_ip: [u8; 4],
    /// Underlay interface: where encapsulated packets leave.
    pub underlay_ifindex: u32,
    /// Overlay device: where decapsulated packets enter the stack.
    pub overlay_ifindex: u32,
    /// Our VtepMAC: inner source on encap, overlay device MAC.
    pub vtep_mac: [u8; 6],
    /// VXLAN UDP destination port, host order.
    pub port: u16,
    /// [`cfg_flags`].
    pub flags: u32,
    /// Underlay MTU: non-GSO packets that would exceed it are dropped and counted.
    pub underlay_mtu: u32,
}

/// One counter: packets and bytes (per CPU in the map; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Indexes of the stats map: what happened to a packet.
pub mod stat {
    /// Encapsulated and sent out of the underlay.
    pub const ENCAP: u32 = 0;
    /// Decapsulated and handed to the overlay device.
    pub const DECAP: u32 = 1;
    /// Not overlay traffic: handed to the stack untouched (decap side).
    pub const PASS: u32 = 2;
    /// Encap: no lease covers the destination.
    pub const DROP_NO_LEASE: u32 = 3;
    /// Headers truncated or inconsistent.
    pub const DROP_MALFORMED: u32 = 4;
    /// Encapsulated packet would exceed the underlay MTU.
    pub const DROP_TOO_BIG: u32 = 5;
    /// VXLAN to our port with another VNI, or without the I flag.
    pub const DROP_WRONG_VNI: u32 = 6;
    /// A kernel helper (adjust_room, store, redirect) failed.
    pub const DROP_HELPER: u32 = 7;
    /// The agent has not written the configuration yet.
    pub const DROP_NO_CONFIG: u32 = 8;
    /// Not IPv4 (encap side; weft's overlay is IPv4 only for now).
    pub const DROP_NOT_IPV4: u32 = 9;
    /// Decapsulated by the XDP program, which was removed: no longer
    /// counted. The slot stays so that the pinned map's layout and the
    /// other indexes do not change.
    pub const DECAP_XDP: u32 = 10;
    /// host-gw fast path: a pod's packet to a peer subnet sent straight out
    /// of the underlay (TTL decremented, MACs from the FIB).
    pub const FWD: u32 = 11;
    /// host-gw fast path: a pod's packet to a peer subnet handed to the
    /// stack instead (TTL <= 1, the FIB disagrees or says no, MTU exceeded,
    /// or forwarding is off): the stack does the right thing, slower.
    pub const FWD_STACK: u32 = 12;
    /// Decapsulated and delivered straight into a local pod (bpf_redirect_peer).
    pub const DECAP_TO_POD: u32 = 13;
    /// VXLAN for us from an address that is no vxlan peer's PublicIP.
    pub const DROP_UNKNOWN_VTEP: u32 = 14;
    /// VXLAN from a peer's VTEP whose inner source address lies outside
    /// that peer's subnet (flannel accepts it; weft does not).
    pub const DROP_SPOOFED: u32 = 15;
    /// host-gw fast path, receiving side: a peer pod's packet delivered
    /// straight into a local pod from the underlay (bpf_redirect_peer).
    pub const ROUTED_TO_POD: u32 = 16;
    /// VXLAN for us, validated and passed on encapsulated for the overlay
    /// device's kernel socket to decapsulate (`cfg_flags::KERNEL_VXLAN`).
    pub const DECAP_KERNEL: u32 = 17;
    /// A packet on the overlay device's ingress that weft did not validate
    /// (VXLAN that reached the kernel's socket past `weft_decap`).
    pub const DROP_UNVALIDATED: u32 = 18;
    /// Not IPv6 where only IPv6 may be (the inner frame of IPv6 VXLAN, the
    /// IPv6 overlay device's traffic).
    pub const DROP_NOT_IPV6: u32 = 19;
    /// Passed to the kernel untouched because weftd has been gone past its
    /// deadline ([`super::map_names::DEADLINE`]): the kernel's own path
    /// (the vxlan device's FDB and neighbours) carries it.
    pub const STOOD_ASIDE: u32 = 20;
    pub const COUNT: u32 = 21;
    /// Slots in the stats map: more than [`COUNT`], so that new counters do
    /// not change the pinned map's layout.
    pub const SLOTS: u32 = 32;

    /// Names for people and metrics, indexed like the constants above.
    pub const NAMES: [&str; COUNT as usize] = [
        "encap",
        "decap",
        "pass",
        "drop_no_lease",
        "drop_malformed",
        "drop_too_big",
        "drop_wrong_vni",
        "drop_helper",
        "drop_no_config",
        "drop_not_ipv4",
        "decap_xdp",
        "fwd",
        "fwd_stack",
        "decap_to_pod",
        "drop_unknown_vtep",
        "drop_spoofed",
        "routed_to_pod",
        "decap_kernel",
        "drop_unvalidated",
        "drop_not_ipv6",
        "stood_aside",
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all eight are plain #[repr(C)] data without padding bytes
    // (checked by bytemuck's Pod derive above).
    unsafe impl aya::Pod for super::VtepEntry {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::HostGwEntry {}
    unsafe impl aya::Pod for super::PodEntry {}
    unsafe impl aya::Pod for super::Vtep6Entry {}
    unsafe impl aya::Pod for super::Datapath6Config {}
    unsafe impl aya::Pod for super::HostGw6Entry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(core::mem::size_of::<VtepEntry>(), 12);
        assert_eq!(core::mem::size_of::<DatapathConfig>(), 32);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::size_of::<HostGwEntry>(), 8);
        assert_eq!(core::mem::size_of::<PodEntry>(), 16);
        assert_eq!(core::mem::size_of::<Vtep6Entry>(), 24);
        assert_eq!(core::mem::size_of::<Datapath6Config>(), 28);
        assert_eq!(core::mem::align_of::<Datapath6Config>(), 4);
        assert_eq!(core::mem::size_of::<HostGw6Entry>(), 20);
        assert_eq!(core::mem::align_of::<HostGw6Entry>(), 4);
        assert_eq!(
            map_names::ALL[..10],
            [
                map_names::VTEPS,
                map_names::CONFIG,
                map_names::STATS,
                map_names::HOSTGW,
                map_names::PODS,
                map_names::VTEP_IPS,
                map_names::VTEPS6,
                map_names::CONFIG6,
                map_names::PODS6,
                map_names::VTEP_IPS6
            ],
            "existing map names keep their places"
        );
        assert!(map_names::ALL.iter().all(|n| n.len() <= 15), "the kernel keeps 15 characters of a map name");
        assert_eq!((stat::DROP_UNVALIDATED, stat::DROP_NOT_IPV6, stat::STOOD_ASIDE), (18, 19, 20), "existing indexes never move");
        const { assert!(stat::COUNT <= stat::SLOTS) };
        assert_eq!(stat::NAMES.len(), stat::COUNT as usize);
    }
}
