//! The IPv6 overlay's kernel programs (`ebpf/src/v6.rs`) on crafted frames
//! through BPF_PROG_TEST_RUN: no network, real verifier, real helpers
//! (redirects only set the return code). Needs root, as CI runs.
//!
//! Node B (the `frames` helpers' node, kernel vxlan overlay) gets the IPv6
//! half: our PublicIPv6 NODE6_B, peer A owns fd10:0:0:1::/64 behind
//! NODE6_A, B owns fd10:0:0:2::/64.
//!
//! The kernel's test run refuses a frame of type IPv6 shorter than an IPv6
//! header (EINVAL, bpf_prog_test_run_skb), so the programs' "cut IPv6
//! header" branches are reached here only through the underlay (an outer
//! IPv6 header whole, the inner one cut).
mod frames;

use frames::*;
use weft_agent::dataplane::Datapath;
use weft_common::{prog_names, stat, subnet_env::Ipv6Cidr, Datapath6Config, PodEntry, Vtep6Entry, OVERLAY_MARK};

const NODE6_A: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NODE6_B: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const MAC6_A: [u8; 6] = [0x02, 0xa6, 0, 0, 0, 1];
const MAC6_B: [u8; 6] = [0x02, 0xb6, 0, 0, 0, 2];
const POD_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 2, 3];
const GW_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 1];
const POD_VETH: u32 = 42;
const OVERLAY6_IFINDEX: u32 = 7;

/// fd10:0:0:<subnet>::<host>
fn pod6(subnet: u8, host: u8) -> [u8; 16] {
    [0xfd, 0x10, 0, 0, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, host]
}

/// An IPv6/UDP packet (no Ethernet), `payload` bytes of UDP payload.
fn ipv6_udp(src: [u8; 16], dst: [u8; 16], hop: u8, payload: usize) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(((8 + payload) as u16).to_be_bytes());
    p.extend([17, hop]);
    p.extend(src);
    p.extend(dst);
    p.extend(40000u16.to_be_bytes());
    p.extend(5201u16.to_be_bytes());
    p.extend(((8 + payload) as u16).to_be_bytes());
    p.extend([0x12, 0x34]);
    p.extend((0..payload).map(|i| (i * 3) as u8));
    p
}

/// A pod packet from A's subnet to B's.
fn a_to_b(hop: u8) -> Vec<u8> {
    ipv6_udp(pod6(1, 2), pod6(2, 3), hop, 100)
}

/// IPv6 VXLAN from NODE6_A to `dst` as the kernel's vxlan device sends
/// it (checksum left as any value: the kernel checked it before TC).
fn vxlan6_frame(dst: [u8; 16], dport: u16, vni: u32, flags: u8, inner_proto: u16, inner: &[u8]) -> Vec<u8> {
    let mut vx = vec![flags, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    vx.extend(eth(MAC6_B, MAC6_A, inner_proto, inner));
    let mut udp = 33333u16.to_be_bytes().to_vec();
    udp.extend(dport.to_be_bytes());
    udp.extend(((8 + vx.len()) as u16).to_be_bytes());
    udp.extend([0xab, 0xcd]);
    udp.extend(&vx);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((udp.len() as u16).to_be_bytes());
    ip.extend([17, 64]);
    ip.extend(NODE6_A);
    ip.extend(dst);
    ip.extend(&udp);
    eth([0x02, 0xee, 0, 0, 0, 2], [0x02, 0xee, 0, 0, 0, 1], 0x86dd, &ip)
}

fn net(s: &str) -> Ipv6Cidr {
    Ipv6Cidr::parse(s).unwrap()
}

/// Node B with the IPv6 half configured.
fn node6() -> Datapath {
    let mut b = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    b.set_config6(&Datapath6Config { local_ip: NODE6_B, overlay_ifindex: OVERLAY6_IFINDEX, vtep_mac: MAC6_B, _pad: [0; 2] }).unwrap();
    b.set_vtep6(&net("fd10:0:0:1::/64"), &Vtep6Entry { ip: NODE6_A, mac: MAC6_A, _pad: [0; 2] }).unwrap();
    // Host bits are cleared on the way in.
    b.set_vtep6(&net("fd10:0:0:2::1/64"), &Vtep6Entry { ip: NODE6_B, mac: MAC6_B, _pad: [0; 2] }).unwrap();
    b.add_vtep_ip6(NODE6_A.into()).unwrap();
    b.add_vtep_ip6(NODE6_B.into()).unwrap();
    b
}

fn register_pod6(dp: &mut Datapath, ip: [u8; 16]) {
    dp.set_pod6(ip.into(), &PodEntry { host_ifindex: POD_VETH, pod_mac: POD_MAC, gw_mac: GW_MAC }).unwrap();
}

#[test]
fn typed_access_round_trips() {
    let b = node6();
    let v = b.vteps6().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].0, net("fd10:0:0:2::/64"), "stored as the network address");
    assert_eq!(b.vtep_ips6().unwrap().len(), 2);
    assert_eq!(b.config6().unwrap().overlay_ifindex, OVERLAY6_IFINDEX);
}

#[test]
fn encap6_writes_the_peers_vtep_macs_and_leaves_the_rest_to_the_device() {
    let mut b = node6();
    let inner = ipv6_udp(pod6(2, 3), pod6(1, 9), 64, 200);
    let f = eth(MAC6_B, [0x02, 0, 0, 0, 0, 9], 0x86dd, &inner);
    let (rc, out) = run_tc(&mut b, prog_names::ENCAP6, &f);
    assert_eq!(rc, TC_ACT_OK, "on to the vxlan device, which adds outer IPv6/UDP/VXLAN");
    assert_eq!(&out[0..6], &MAC6_A, "inner destination MAC = the peer's v6 VtepMAC (its FDB key)");
    assert_eq!(&out[6..12], &MAC6_B, "inner source MAC = our v6 VtepMAC");
    assert_eq!(&out[12..], &f[12..], "type and packet untouched (hop limit included: the host routed it)");
    assert_eq!(counter(&b, stat::ENCAP), 1);
}

#[test]
fn encap6_drops_what_it_cannot_carry_and_counts_why() {
    let mut b = node6();
    let ok = ipv6_udp(pod6(2, 3), pod6(1, 9), 64, 20);
    let mut v4_in_v6 = ok.clone();
    v4_in_v6[0] = 0x45;
    let mut long_claim = ok.clone();
    long_claim[4..6].copy_from_slice(&2000u16.to_be_bytes());
    for (why, f, reason) in [
        ("no lease covers the destination", eth(MAC6_B, MAC6_B, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(9, 9), 64, 20)), stat::DROP_NO_LEASE),
        (
            "multicast (the device's own MLD/RS)",
            eth(MAC6_B, MAC6_B, 0x86dd, &ipv6_udp(pod6(2, 3), [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1, 8)),
            stat::DROP_NO_LEASE,
        ),
        ("IPv4 on the IPv6 device", eth(MAC6_B, MAC6_B, 0x0800, &pod_packet([10, 244, 1, 2], 1)), stat::DROP_NOT_IPV6),
        ("version 4 in an IPv6 frame", eth(MAC6_B, MAC6_B, 0x86dd, &v4_in_v6), stat::DROP_MALFORMED),
        ("payload length beyond the frame", eth(MAC6_B, MAC6_B, 0x86dd, &long_claim), stat::DROP_MALFORMED),
    ] {
        let before = counter(&b, reason);
        let (rc, _) = run_tc(&mut b, prog_names::ENCAP6, &f);
        assert_eq!(rc, TC_ACT_SHOT, "{why}: dropped");
        assert_eq!(counter(&b, reason), before + 1, "{why}: counted");
    }
    assert_eq!(counter(&b, stat::ENCAP), 0);
    // Not configured: nothing goes out.
    let mut dp = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    assert_eq!(run_tc(&mut dp, prog_names::ENCAP6, &eth(MAC6_B, MAC6_B, 0x86dd, &ok)).0, TC_ACT_SHOT);
    assert_eq!(counter(&dp, stat::DROP_NO_CONFIG), 1);
}

#[test]
fn from_pod_sends_a_registered_pods_ipv6_to_the_overlay_device() {
    let mut b = node6();
    register_pod6(&mut b, pod6(2, 3));
    let f = eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(1, 9), 64, 50));
    let (rc, out) = run_tc(&mut b, prog_names::FROM_POD, &f);
    assert_eq!(rc, TC_ACT_REDIRECT, "to weft-v6's egress (weft_encap6 runs there)");
    assert_eq!(out[14 + 7], 63, "hop limit - 1: the hop the host would have made");
    let mut expect = f.clone();
    expect[14 + 7] = 63;
    assert_eq!(out, expect, "nothing else changes (IPv6 has no header checksum)");

    let untouched = [
        ("hop limit 1 (the stack sends time-exceeded)", eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(1, 9), 1, 50))),
        ("hop limit 0", eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(1, 9), 0, 50))),
        ("not to the gateway MAC", eth(MAC6_A, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(1, 9), 64, 50))),
        ("source not a registered pod", eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 4), pod6(1, 9), 64, 50))),
        ("destination in no peer subnet", eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(pod6(2, 3), pod6(9, 9), 64, 50))),
    ];
    for (why, f) in untouched {
        let (rc, out) = run_tc(&mut b, prog_names::FROM_POD, &f);
        assert_eq!((rc, &out), (TC_ACT_OK, &f), "{why}: on to the bridge and the stack, unchanged");
    }
    // Without the IPv6 overlay configured, the pod's IPv6 takes the host path.
    let mut dp = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    dp.set_vtep6(&net("fd10:0:0:1::/64"), &Vtep6Entry { ip: NODE6_A, mac: MAC6_A, _pad: [0; 2] }).unwrap();
    register_pod6(&mut dp, pod6(2, 3));
    assert_eq!(run_tc(&mut dp, prog_names::FROM_POD, &f), (TC_ACT_OK, f.clone()));
    // No counter moves in weft_from_pod for IPv6 (weft_encap6 counts on the device).
    assert!(b.stats().unwrap().iter().all(|c| c.packets == 0));
}

#[test]
fn decap_validates_ipv6_vxlan_and_leaves_it_to_the_devices_socket() {
    let mut b = node6();
    let inner = a_to_b(63);
    let wire = vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x86dd, &inner);
    let (rc, out, mark) = run_tc_mark(&mut b, prog_names::DECAP, &wire, 0);
    assert_eq!((rc, &out), (TC_ACT_OK, &wire), "left to the stack (weft-v6's socket), untouched");
    assert_eq!(mark, OVERLAY_MARK, "marked for weft_overlay_in6");
    assert_eq!(counter(&b, stat::DECAP_KERNEL), 1);

    let mut stranger = wire.clone();
    stranger[14 + 8 + 15] = 0x99; // outer source: no peer's PublicIPv6
    let mut long_inner = a_to_b(63);
    long_inner[4..6].copy_from_slice(&3000u16.to_be_bytes());
    let mut udp_len_off = wire.clone();
    udp_len_off[14 + 40 + 5] ^= 1;
    let hdrs = 14 + 40 + 8 + 8 + 14 + 40;
    for (why, f, reason) in [
        ("another VNI", vxlan6_frame(NODE6_B, 8472, 2, 0x08, 0x86dd, &inner), stat::DROP_WRONG_VNI),
        ("no I flag", vxlan6_frame(NODE6_B, 8472, 1, 0x00, 0x86dd, &inner), stat::DROP_WRONG_VNI),
        ("sender is no peer's PublicIPv6", stranger, stat::DROP_UNKNOWN_VTEP),
        ("inner source in B's own subnet", vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x86dd, &ipv6_udp(pod6(2, 9), pod6(2, 3), 63, 10)), stat::DROP_SPOOFED),
        ("inner source in no subnet", vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x86dd, &ipv6_udp(pod6(9, 9), pod6(2, 3), 63, 10)), stat::DROP_SPOOFED),
        ("IPv4 inside IPv6 VXLAN", vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x0800, &pod_packet([10, 244, 2, 3], 1)), stat::DROP_NOT_IPV6),
        ("cut inside the inner IPv6 header", wire[..hdrs - 10].to_vec(), stat::DROP_MALFORMED),
        ("inner length beyond the datagram", vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x86dd, &long_inner), stat::DROP_MALFORMED),
        ("UDP length disagrees with IPv6's", udp_len_off, stat::DROP_MALFORMED),
        ("inner version 4 with the IPv6 type", vxlan6_frame(NODE6_B, 8472, 1, 0x08, 0x86dd, &[0x45; 40]), stat::DROP_MALFORMED),
    ] {
        let before = counter(&b, reason);
        let (rc, _, mark) = run_tc_mark(&mut b, prog_names::DECAP, &f, 0);
        assert_eq!(rc, TC_ACT_SHOT, "{why}: dropped");
        assert_eq!(mark, 0, "{why}: not marked");
        assert_eq!(counter(&b, reason), before + 1, "{why}: counted");
    }
    assert_eq!(counter(&b, stat::DECAP_KERNEL), 1);

    let mut tcp = wire.clone();
    tcp[14 + 6] = 6;
    let not_ours = [
        ("to another address", vxlan6_frame([0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 8472, 1, 0x08, 0x86dd, &inner)),
        ("to another port", vxlan6_frame(NODE6_B, 4789, 1, 0x08, 0x86dd, &inner)),
        ("not UDP", tcp),
        ("a plain IPv6 packet", eth(MAC_B, MAC_A, 0x86dd, &inner)),
        ("cut before the UDP header", wire[..14 + 40].to_vec()),
    ];
    for (why, f) in not_ours {
        let (rc, out, mark) = run_tc_mark(&mut b, prog_names::DECAP, &f, 0);
        assert_eq!((rc, &out, mark), (TC_ACT_OK, &f, 0), "{why}: to the stack, untouched");
    }
    assert_eq!(counter(&b, stat::PASS), 5, "weft_decap counts what it hands on");
    // Without the IPv6 half configured, IPv6 VXLAN is not weft's business.
    let mut v4only = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    assert_eq!(run_tc_mark(&mut v4only, prog_names::DECAP, &wire, 0), (TC_ACT_OK, wire.clone(), 0));
}

#[test]
fn overlay_in6_admits_only_what_decap_marked_and_delivers_registered_pods() {
    let mut b = node6();
    let f = eth(MAC6_B, MAC6_A, 0x86dd, &a_to_b(63));
    let (rc, out, mark) = run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &f, OVERLAY_MARK);
    assert_eq!((rc, &out, mark), (TC_ACT_OK, &f, 0), "marked: to the stack, mark cleared");
    assert_eq!(counter(&b, stat::DECAP), 1);
    for other in [0, 0x4000, OVERLAY_MARK | 1] {
        assert_eq!(run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &f, other).0, TC_ACT_SHOT, "mark {other:#x}");
    }
    assert_eq!(counter(&b, stat::DROP_UNVALIDATED), 3);
    // Marked, but not an IPv6 packet, or a cut one.
    let v4 = eth(MAC6_B, MAC6_A, 0x0800, &pod_packet([10, 244, 2, 3], 1));
    assert_eq!(run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &v4, OVERLAY_MARK).0, TC_ACT_SHOT);
    assert_eq!(counter(&b, stat::DROP_NOT_IPV6), 1);
    let mut v4_version = f.clone();
    v4_version[14] = 0x45;
    assert_eq!(run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &v4_version, OVERLAY_MARK).0, TC_ACT_SHOT);
    assert_eq!(counter(&b, stat::DROP_MALFORMED), 1);

    // A registered pod: straight into it.
    register_pod6(&mut b, pod6(2, 3));
    let (rc, out, _) = run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &f, OVERLAY_MARK);
    assert_eq!(rc, TC_ACT_REDIRECT, "into the pod (bpf_redirect_peer)");
    assert_eq!(&out[0..6], &POD_MAC);
    assert_eq!(&out[6..12], &GW_MAC, "from its gateway's MAC");
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    assert_eq!(out[14 + 7], 62, "hop limit - 1");
    assert_eq!(&out[14 + 8..], &f[14 + 8..], "addresses and payload untouched");
    assert_eq!(counter(&b, stat::DECAP_TO_POD), 1);
    // Hop limit 1: the stack answers time-exceeded.
    let last = eth(MAC6_B, MAC6_A, 0x86dd, &a_to_b(1));
    assert_eq!(run_tc_mark(&mut b, prog_names::OVERLAY_IN6, &last, OVERLAY_MARK), (TC_ACT_OK, last.clone(), 0));
    assert_eq!((counter(&b, stat::DECAP_TO_POD), counter(&b, stat::DECAP)), (1, 2));
}
