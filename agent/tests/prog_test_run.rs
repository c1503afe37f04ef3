//! The kernel programs run on crafted packets through BPF_PROG_TEST_RUN: no
//! network, real verifier, real helpers (redirects only set the return code).
//! Needs root (CAP_BPF + CAP_NET_ADMIN), as CI runs.
mod frames;

use frames::*;
use weft_agent::{dataplane::Datapath, subnet::Ipv4Net};
use weft_common::{prog_names, stat};

#[test]
fn encap_writes_every_outer_field_like_flannels_vxlan() {
    let mut a = node(NODE_A, MAC_A, 1500);
    let inner = pod_packet([10, 244, 2, 3], 40000);
    let frame = eth(MAC_A, [0x02, 0, 0, 0, 0, 9], 0x0800, &inner);
    let (rc, out) = run_tc(&mut a, prog_names::ENCAP, &frame);
    assert_eq!(rc, TC_ACT_REDIRECT, "encap must redirect out of the underlay");
    assert_eq!(out.len(), frame.len() + 50);
    // Outer Ethernet: MACs are left to bpf_redirect_neigh; type IPv4.
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45, "version 4, IHL 5");
    assert_eq!(ip[1], 0, "TOS: ECN bits of the inner packet only");
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, inner.len() + 50, "outer total length");
    assert_eq!(&ip[6..8], &[0x40, 0x00], "DF set, no fragment offset");
    assert_eq!(ip[8], 64, "outer TTL");
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(csum(ip), 0, "outer IPv4 header checksum must verify");
    assert_eq!(&ip[12..16], &NODE_A, "outer source = our address");
    assert_eq!(&ip[16..20], &NODE_B, "outer destination = peer's PublicIP");
    let udp = &out[34..42];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!((32768..61000).contains(&sport), "source port {sport} outside the kernel's range");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 8472);
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, inner.len() + 30, "UDP length");
    assert_eq!(&udp[6..8], &[0, 0], "outer UDP checksum 0, as the kernel's vxlan sends");
    assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0, 0, 1, 0], "VXLAN: I flag, VNI 1");
    assert_eq!(&out[50..56], &MAC_B, "inner destination MAC = peer VtepMAC");
    assert_eq!(&out[56..62], &MAC_A, "inner source MAC = our VtepMAC");
    assert_eq!(&out[62..64], &[0x08, 0x00]);
    assert_eq!(&out[64..], &inner[..], "inner packet untouched (TTL and checksum included)");
    assert_eq!(counter(&a, stat::ENCAP), 1);
}

#[test]
fn encap_source_port_is_a_flow_hash() {
    let mut a = node(NODE_A, MAC_A, 1500);
    let sport_of = |dp: &mut Datapath, p: u16| {
        let (_, out) = run_tc(dp, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &pod_packet([10, 244, 2, 3], p)));
        u16::from_be_bytes([out[34], out[35]])
    };
    assert_eq!(sport_of(&mut a, 1000), sport_of(&mut a, 1000), "same flow, same port");
    let ports: std::collections::BTreeSet<u16> = (1000..1016).map(|p| sport_of(&mut a, p)).collect();
    assert!(ports.len() > 8, "16 flows spread over only {} source ports", ports.len());
}

#[test]
fn encap_drops_what_it_cannot_carry_and_counts_why() {
    let mut a = node(NODE_A, MAC_A, 1500);
    let (rc, _) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &pod_packet([10, 244, 9, 3], 1)));
    assert_eq!(rc, TC_ACT_SHOT);
    assert_eq!(counter(&a, stat::DROP_NO_LEASE), 1);
    let (rc, _) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0806, &[0u8; 28]));
    assert_eq!(rc, TC_ACT_SHOT);
    assert_eq!(counter(&a, stat::DROP_NOT_IPV4), 1);
    let mut bad_version = pod_packet([10, 244, 2, 3], 1);
    bad_version[0] = 0x65; // "IPv6" inside an IPv4 ethertype
    let (rc, _) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &bad_version));
    assert_eq!(rc, TC_ACT_SHOT);
    assert_eq!(counter(&a, stat::DROP_MALFORMED), 1);
    // 1451-byte inner packet + 50 > 1500: must not leave as an oversize frame.
    let big = ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 1451 - 28);
    let (rc, _) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &big));
    assert_eq!(rc, TC_ACT_SHOT);
    assert_eq!(counter(&a, stat::DROP_TOO_BIG), 1);
    let fits = ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 1450 - 28);
    assert_eq!(run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &fits)).0, TC_ACT_REDIRECT);
    assert_eq!(counter(&a, stat::ENCAP), 1);
}

#[test]
fn encap_then_decap_round_trips() {
    let mut a = node(NODE_A, MAC_A, 1500);
    let inner = pod_packet([10, 244, 2, 3], 4242);
    let (_, mut wire) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &inner));
    // What bpf_redirect_neigh would have written: underlay MACs.
    wire[0..6].copy_from_slice(&[0x02, 0xee, 0, 0, 0, 2]);
    wire[6..12].copy_from_slice(&[0x02, 0xee, 0, 0, 0, 1]);

    let mut b = node(NODE_B, MAC_B, 1500);
    let (rc, out) = run_tc(&mut b, prog_names::DECAP, &wire);
    assert_eq!(rc, TC_ACT_REDIRECT, "decap must redirect into the overlay device");
    assert_eq!(out, eth(MAC_B, MAC_A, 0x0800, &inner), "decap yields our VtepMAC <- peer VtepMAC + the inner packet");
    assert_eq!(counter(&b, stat::DECAP), 1);
}

/// With a kernel vxlan overlay device (the default), VXLAN for us that is
/// not for a registered pod is validated, marked and left encapsulated for
/// the device's socket; what is for a registered pod is still decapsulated
/// straight into it; what fails validation is dropped as before.
#[test]
fn decap_leaves_validated_vxlan_to_the_kernel_vxlan_socket() {
    let mut b = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    let inner = pod_packet([10, 244, 2, 3], 4242);
    let wire = vxlan_frame(NODE_B, 8472, 1, 0x08, &inner);
    let (rc, out, mark) = run_tc_mark(&mut b, prog_names::DECAP, &wire, 0);
    assert_eq!((rc, &out), (TC_ACT_OK, &wire), "left to the stack, untouched");
    assert_eq!(mark, weft_common::OVERLAY_MARK, "marked for weft_overlay_in");
    assert_eq!((counter(&b, stat::DECAP_KERNEL), counter(&b, stat::DECAP)), (1, 0));
    // Spoofed inner source: dropped, not marked, not left to the kernel.
    let spoofed = vxlan_frame(NODE_B, 8472, 1, 0x08, &ipv4_udp([10, 99, 0, 1], [10, 244, 2, 3], 1, 5201, 63, 100));
    assert_eq!(run_tc_mark(&mut b, prog_names::DECAP, &spoofed, 0).0, TC_ACT_SHOT);
    assert_eq!((counter(&b, stat::DROP_SPOOFED), counter(&b, stat::DECAP_KERNEL)), (1, 1));
    // A registered pod: straight into it, as with any overlay.
    register_pod(&mut b, [10, 244, 2, 3]);
    assert_into_pod(run_tc(&mut b, prog_names::DECAP, &wire), &inner, "decap, kernel vxlan overlay");
    assert_eq!(counter(&b, stat::DECAP_TO_POD), 1);
}

/// `weft_overlay_in` lets in only what weft_decap marked, clearing the mark.
#[test]
fn overlay_in_admits_only_what_decap_marked() {
    let mut b = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    let f = eth(MAC_B, MAC_A, 0x0800, &pod_packet([10, 244, 2, 3], 1));
    let (rc, out, mark) = run_tc_mark(&mut b, prog_names::OVERLAY_IN, &f, weft_common::OVERLAY_MARK);
    assert_eq!((rc, &out, mark), (TC_ACT_OK, &f, 0), "marked: passed, mark cleared");
    for other in [0, 0x4000, weft_common::OVERLAY_MARK | 1] {
        let (rc, _, _) = run_tc_mark(&mut b, prog_names::OVERLAY_IN, &f, other);
        assert_eq!(rc, TC_ACT_SHOT, "mark {other:#x} must be dropped");
    }
    assert_eq!(counter(&b, stat::DROP_UNVALIDATED), 3);
}

fn udp_to_b_without_udp_header() -> Vec<u8> {
    let mut ip = ipv4_udp(NODE_A, NODE_B, 1, 8472, 64, 0);
    ip.truncate(20);
    ip
}

#[test]
fn decap_passes_everything_that_is_not_ours_untouched() {
    let mut b = node(NODE_B, MAC_B, 1500);
    let inner = pod_packet([10, 244, 2, 3], 7);
    let mut icmp = ipv4_udp(NODE_A, NODE_B, 0, 0, 64, 40);
    icmp[9] = 1;
    let not_ours = [
        vxlan_frame(NODE_B, 4789, 1, 0x08, &inner),                // another UDP port
        vxlan_frame([192, 168, 77, 3], 8472, 1, 0x08, &inner),     // another host
        eth(MAC_B, MAC_A, 0x0800, &icmp),                          // not UDP
        eth(MAC_B, MAC_A, 0x0806, &[0u8; 28]),                     // ARP
        eth(MAC_B, MAC_A, 0x86dd, &[0u8; 60]),                     // IPv6
        eth(MAC_B, MAC_A, 0x0800, &udp_to_b_without_udp_header()), // cut before the UDP header
    ];
    for (i, f) in not_ours.iter().enumerate() {
        let (rc, out) = run_tc(&mut b, prog_names::DECAP, f);
        assert_eq!(rc, TC_ACT_OK, "frame {i} must go to the stack");
        assert_eq!(&out, f, "frame {i} must be untouched");
    }
    assert_eq!(counter(&b, stat::PASS), not_ours.len() as u64);
    assert_eq!(counter(&b, stat::DECAP), 0);
}

#[test]
fn decap_drops_bad_vxlan_to_our_port_and_counts_why() {
    let mut b = node(NODE_B, MAC_B, 1500);
    let inner = pod_packet([10, 244, 2, 3], 7);
    for (f, reason) in [
        (vxlan_frame(NODE_B, 8472, 2, 0x08, &inner), stat::DROP_WRONG_VNI),
        (vxlan_frame(NODE_B, 8472, 1, 0x00, &inner), stat::DROP_WRONG_VNI),
        (vxlan_frame(NODE_B, 8472, 1, 0x08, &inner)[..14 + 20 + 8 + 8 + 10].to_vec(), stat::DROP_MALFORMED),
        (vxlan_frame(NODE_B, 8472, 1, 0x08, &[0x60; 40]), stat::DROP_MALFORMED),
    ] {
        let before = counter(&b, reason);
        assert_eq!(run_tc(&mut b, prog_names::DECAP, &f).0, TC_ACT_SHOT);
        assert_eq!(counter(&b, reason), before + 1);
    }
    // A well-formed frame from flannel's kernel vxlan is accepted.
    assert_eq!(run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &inner)).0, TC_ACT_REDIRECT);
}

#[test]
fn unconfigured_datapath_touches_nothing_on_the_underlay() {
    let mut dp = Datapath::load(None).unwrap();
    let f = vxlan_frame(NODE_B, 8472, 1, 0x08, &pod_packet([10, 244, 2, 3], 7));
    assert_eq!(run_tc(&mut dp, prog_names::DECAP, &f), (TC_ACT_OK, f.clone()));
    assert_eq!(run_tc(&mut dp, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &pod_packet([10, 244, 2, 3], 7))).0, TC_ACT_SHOT);
    assert_eq!(counter(&dp, stat::DROP_NO_CONFIG), 1);
}

/// Ones' complement sum check of a whole outer UDP datagram with its pseudo-header.
fn outer_udp_csum_verifies(frame: &[u8]) -> bool {
    let ip = &frame[14..34];
    let udp = &frame[34..];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend([0, 17]);
    pseudo.extend((udp.len() as u16).to_be_bytes());
    pseudo.extend(udp);
    csum(&pseudo) == 0
}

fn with_l4_csum(mut p: Vec<u8>) -> Vec<u8> {
    let l4_len = p.len() - 20;
    let off = if p[9] == 17 { 26 } else { 22 }; // UDP or ICMP checksum offset
    p[off..off + 2].copy_from_slice(&[0, 0]);
    let c = if p[9] == 17 {
        let mut ph = p[12..20].to_vec();
        ph.extend([0, 17]);
        ph.extend((l4_len as u16).to_be_bytes());
        ph.extend(&p[20..]);
        csum(&ph)
    } else {
        csum(&p[20..])
    };
    p[off..off + 2].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn outer_udp_checksum_when_configured() {
    let mut a = node(NODE_A, MAC_A, 1500);
    let mut cfg = a.config().unwrap();
    cfg.flags = weft_common::cfg_flags::UDP_CSUM;
    a.set_config(&cfg).unwrap();
    let udp_inner = with_l4_csum(pod_packet([10, 244, 2, 3], 999));
    let (rc, out) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &udp_inner));
    assert_eq!(rc, TC_ACT_REDIRECT);
    assert_ne!(&out[40..42], &[0, 0], "a checksum must be filled in");
    assert!(outer_udp_csum_verifies(&out), "outer UDP checksum over the whole datagram must verify");
    let mut icmp = ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 0x0800, 0x0001, 64, 56);
    icmp[9] = 1;
    let c = csum(&icmp[..10].iter().chain(&[0u8, 0]).chain(&icmp[12..20]).copied().collect::<Vec<_>>());
    icmp[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = with_l4_csum(icmp);
    let (_, out) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &icmp));
    assert!(outer_udp_csum_verifies(&out), "ICMP inner: outer checksum must verify");
    // Inner UDP without checksum: nothing to lean on, so the outer stays 0.
    let (_, out) = run_tc(&mut a, prog_names::ENCAP, &eth(MAC_A, MAC_A, 0x0800, &pod_packet([10, 244, 2, 3], 999)));
    assert_eq!(&out[40..42], &[0, 0]);
}

const POD_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 2, 3];
const GW_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 1];
const POD_VETH: u32 = 42;

fn register_pod(dp: &mut Datapath, ip: [u8; 4]) {
    dp.set_pod(ip.into(), &weft_common::PodEntry { host_ifindex: POD_VETH, pod_mac: POD_MAC, gw_mac: GW_MAC }).unwrap();
}

/// A program's answer `(rc, out)` delivers IPv4 packet `inner` straight
/// into the registered pod, as the pod's gateway would have.
fn assert_into_pod((rc, out): (u32, Vec<u8>), inner: &[u8], who: &str) {
    assert_eq!(rc, TC_ACT_REDIRECT, "{who}: into the pod (bpf_redirect_peer)");
    assert_eq!(&out[0..6], &POD_MAC, "{who}: to the pod's MAC");
    assert_eq!(&out[6..12], &GW_MAC, "{who}: from its gateway's MAC, as the bridge would deliver it");
    assert_eq!(out[22], inner[8] - 1, "{who}: TTL - 1, the hop the host would have made");
    assert_eq!(csum(&out[14..34]), 0, "{who}: IPv4 header checksum still verifies");
    assert_eq!(&out[34..], &inner[20..], "{who}: payload untouched");
}

#[test]
fn decap_delivers_straight_into_a_registered_pod() {
    let mut b = node(NODE_B, MAC_B, 1500);
    register_pod(&mut b, [10, 244, 2, 3]);
    let inner = pod_packet([10, 244, 2, 3], 9);
    assert_into_pod(run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &inner)), &inner, "decap");
    assert_eq!(counter(&b, stat::DECAP_TO_POD), 1);
    assert_eq!(counter(&b, stat::DECAP), 1);

    // TTL 1 would expire at that hop: the host path answers time-exceeded.
    let mut last_hop = pod_packet([10, 244, 2, 3], 9);
    last_hop[8] = 1;
    last_hop[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&last_hop[..20]);
    last_hop[10..12].copy_from_slice(&c.to_be_bytes());
    let (rc, out) = run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &last_hop));
    assert_eq!(rc, TC_ACT_REDIRECT);
    assert_eq!(out, eth(MAC_B, MAC_A, 0x0800, &last_hop), "TTL 1: into the overlay device, unchanged");
    assert_eq!(counter(&b, stat::DECAP_TO_POD), 1);

    // Unregistered pods go through the overlay device as before.
    let other = pod_packet([10, 244, 2, 4], 9);
    let (_, out) = run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &other));
    assert_eq!(out, eth(MAC_B, MAC_A, 0x0800, &other));
    assert_eq!(counter(&b, stat::DECAP_TO_POD), 1);
}

#[test]
fn from_pod_encapsulates_only_the_registered_pods_routed_traffic() {
    let mut a = node(NODE_A, MAC_A, 1500);
    register_pod(&mut a, [10, 244, 1, 2]);
    let inner = pod_packet([10, 244, 2, 3], 11); // from 10.244.1.2 to node B's subnet
    let (rc, out) = run_tc(&mut a, prog_names::FROM_POD, &eth(GW_MAC, POD_MAC, 0x0800, &inner));
    assert_eq!(rc, TC_ACT_REDIRECT, "encapsulated out of the underlay");
    assert_eq!(out.len(), inner.len() + 14 + 50);
    assert_eq!(&out[36..38], &8472u16.to_be_bytes(), "VXLAN to the peer");
    assert_eq!(&out[30..34], &NODE_B);
    assert_eq!(&out[50..56], &MAC_B, "inner Ethernet: to the peer's VtepMAC");
    let inner_out = &out[64..];
    assert_eq!(inner_out[8], inner[8] - 1, "inner TTL - 1: the hop the host would have made");
    assert_eq!(csum(&inner_out[..20]), 0, "inner header checksum verifies");
    assert_eq!(counter(&a, stat::ENCAP), 1);

    let untouched = [
        ("not to the gateway MAC (bridged to a local pod)", eth(MAC_B, POD_MAC, 0x0800, &inner)),
        ("source not a registered pod", eth(GW_MAC, POD_MAC, 0x0800, &ipv4_udp([10, 244, 1, 9], [10, 244, 2, 3], 1, 2, 64, 10))),
        ("destination not in a peer subnet", eth(GW_MAC, POD_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 9, 3], 1, 2, 64, 10))),
        ("TTL 1 (the stack sends time-exceeded)", eth(GW_MAC, POD_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 1, 10))),
        ("ARP", eth(GW_MAC, POD_MAC, 0x0806, &[0u8; 28])),
    ];
    for (why, f) in untouched {
        let (rc, out) = run_tc(&mut a, prog_names::FROM_POD, &f);
        assert_eq!(rc, TC_ACT_OK, "{why}: to the bridge and the stack");
        assert_eq!(out, f, "{why}: unchanged");
    }
    assert_eq!(counter(&a, stat::ENCAP), 1);
}

#[test]
fn decap_accepts_only_lease_holders_for_their_own_subnets() {
    let mut b = node(NODE_B, MAC_B, 1500);
    // From A, inner source in A's subnet: accepted.
    let ok = pod_packet([10, 244, 2, 3], 1);
    assert_eq!(run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &ok)).0, TC_ACT_REDIRECT);
    // From an address that holds no lease: dropped before anything else.
    let mut stranger = vxlan_frame(NODE_B, 8472, 1, 0x08, &ok);
    stranger[26..30].copy_from_slice(&[192, 168, 77, 99]);
    let c = {
        stranger[24..26].copy_from_slice(&[0, 0]);
        csum(&stranger[14..34])
    };
    stranger[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run_tc(&mut b, prog_names::DECAP, &stranger).0, TC_ACT_SHOT);
    assert_eq!(counter(&b, stat::DROP_UNKNOWN_VTEP), 1);
    // From A, but claiming a source in B's subnet, or outside every lease.
    for (i, src) in [[10, 244, 2, 9], [10, 99, 0, 1]].into_iter().enumerate() {
        let spoofed = ipv4_udp(src, [10, 244, 2, 3], 1, 5201, 63, 100);
        assert_eq!(run_tc(&mut b, prog_names::DECAP, &vxlan_frame(NODE_B, 8472, 1, 0x08, &spoofed)).0, TC_ACT_SHOT, "inner source {src:?}");
        assert_eq!(counter(&b, stat::DROP_SPOOFED), i as u64 + 1);
    }
    assert_eq!(counter(&b, stat::DECAP), 1, "only the genuine packet was decapsulated");
}

/// With host-gw, node B routes A's subnet via A on the device the test run
/// uses (lo): a frame of A's pod to B's host (destination MAC 0, lo's own,
/// so PACKET_HOST) for a registered pod goes straight into it, through
/// weft_to_pod (host-gw) and weft_decap (DirectRouting) alike.
#[test]
fn a_routed_peer_pods_packet_goes_straight_into_a_registered_pod() {
    let mut b = node(NODE_B, MAC_B, 1500);
    // SAFETY: a valid C string.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    assert_ne!(lo, 0);
    let route = |dp: &mut Datapath, net: &str, ifindex: u32| {
        dp.set_hostgw(&net.parse::<Ipv4Net>().unwrap(), &weft_common::HostGwEntry { gateway: NODE_A, ifindex }).unwrap()
    };
    route(&mut b, "10.244.1.0/24", lo);
    route(&mut b, "10.244.5.0/24", lo + 1000);
    register_pod(&mut b, [10, 244, 2, 3]);
    let inner = pod_packet([10, 244, 2, 3], 9); // from 10.244.1.2
    for (i, prog) in [prog_names::TO_POD, prog_names::DECAP].into_iter().enumerate() {
        assert_into_pod(run_tc(&mut b, prog, &eth([0; 6], MAC_A, 0x0800, &inner)), &inner, prog);
        assert_eq!(counter(&b, stat::ROUTED_TO_POD), i as u64 + 1);
    }

    let mut options = inner.clone();
    options.splice(20..20, [1, 1, 1, 1]); // four NOPs
    options[0] = 0x46;
    let tot = options.len() as u16;
    options[2..4].copy_from_slice(&tot.to_be_bytes());
    options[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&options[..24]);
    options[10..12].copy_from_slice(&c.to_be_bytes());
    let untouched = [
        ("unregistered destination", eth([0; 6], MAC_A, 0x0800, &pod_packet([10, 244, 2, 4], 9))),
        ("source outside every routed peer subnet", eth([0; 6], MAC_A, 0x0800, &ipv4_udp([192, 168, 77, 1], [10, 244, 2, 3], 1, 2, 64, 10))),
        ("peer routed through another interface", eth([0; 6], MAC_A, 0x0800, &ipv4_udp([10, 244, 5, 2], [10, 244, 2, 3], 1, 2, 64, 10))),
        ("TTL 1 (the stack sends time-exceeded)", eth([0; 6], MAC_A, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 1, 10))),
        ("IP options (the forwarding path's job)", eth([0; 6], MAC_A, 0x0800, &options)),
        ("not addressed to this host (multicast MAC)", eth([0x01, 0, 0x5e, 0, 0, 1], MAC_A, 0x0800, &inner)),
        ("ARP", eth([0; 6], MAC_A, 0x0806, &[0u8; 28])),
    ];
    for (why, f) in untouched {
        for prog in [prog_names::TO_POD, prog_names::DECAP] {
            let (rc, out) = run_tc(&mut b, prog, &f);
            assert_eq!(rc, TC_ACT_OK, "{prog}, {why}: to the stack");
            assert_eq!(out, f, "{prog}, {why}: unchanged");
        }
    }
    assert_eq!(counter(&b, stat::ROUTED_TO_POD), 2);
    assert_eq!(counter(&b, stat::PASS), 7, "weft_decap counts what it hands on");
}
