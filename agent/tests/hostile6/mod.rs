//! The IPv6 half of the hostile-packet test (`hostile_packets.rs`): node B
//! in dual stack, IPv6 frames for every program that looks at IPv6, and
//! independent models of what each program must do with them, written from
//! the wire format and the maps' contents (not from `ebpf/src/v6.rs`).
//!
//! Node B6 is node B (kernel vxlan overlay, VNI 1, port 8472) with the
//! IPv6 half: our PublicIPv6 NODE6_B, peer A owns fd10:0:0:1::/64 behind
//! NODE6_A, B owns fd10:0:0:2::/64 (both PublicIPv6s are VTEPs), and one
//! registered pod, POD6 = fd10:0:0:2::3.
//!
//! Kinds in the corpus: `d` weft_decap (outer IPv6 here; IPv4 in the
//! main file), `E` weft_encap6, `o` weft_overlay_in6, `p` weft_from_pod.
#![allow(dead_code)]
use weft_agent::dataplane::Datapath;
use weft_common::{stat, subnet_env::Ipv6Cidr, Datapath6Config, PodEntry, Vtep6Entry, OVERLAY_MARK};

use crate::frames::{eth, node_kernel_vxlan, MAC_B, NODE_B};

pub const NODE6_A: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const NODE6_B: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const STRANGER6: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
pub const MAC6_A: [u8; 6] = [0x02, 0xa6, 0, 0, 0, 1];
pub const MAC6_B: [u8; 6] = [0x02, 0xb6, 0, 0, 0, 2];
pub const POD_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 2, 3];
pub const GW_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 1];
pub const POD_VETH: u32 = 42;
pub const OVERLAY6_IFINDEX: u32 = 7;
pub const POD6: [u8; 16] = pod6(2, 3);
pub const LINK_LOCAL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const UNSPECIFIED: [u8; 16] = [0; 16];
const VXLAN: u16 = 8472;

/// fd10:0:0:<subnet>::<host>
pub const fn pod6(subnet: u8, host: u8) -> [u8; 16] {
    [0xfd, 0x10, 0, 0, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, host]
}

/// Addresses a mutation may write into an address field: each one sits on
/// a side of some check.
pub const ADDRS: [[u8; 16]; 10] = [NODE6_A, NODE6_B, STRANGER6, pod6(1, 2), pod6(2, 3), pod6(2, 9), pod6(9, 9), LINK_LOCAL, ALL_NODES, UNSPECIFIED];

/// Node B in dual stack (see the module's doc).
pub fn node6() -> Datapath {
    let mut b = node_kernel_vxlan(NODE_B, MAC_B, 1500);
    b.set_config6(&Datapath6Config { local_ip: NODE6_B, overlay_ifindex: OVERLAY6_IFINDEX, vtep_mac: MAC6_B, _pad: [0; 2] }).unwrap();
    let net = |s: &str| Ipv6Cidr::parse(s).unwrap();
    b.set_vtep6(&net("fd10:0:0:1::/64"), &Vtep6Entry { ip: NODE6_A, mac: MAC6_A, _pad: [0; 2] }).unwrap();
    b.set_vtep6(&net("fd10:0:0:2::/64"), &Vtep6Entry { ip: NODE6_B, mac: MAC6_B, _pad: [0; 2] }).unwrap();
    b.add_vtep_ip6(NODE6_A.into()).unwrap();
    b.add_vtep_ip6(NODE6_B.into()).unwrap();
    b.set_pod6(POD6.into(), &PodEntry { host_ifindex: POD_VETH, pod_mac: POD_MAC, gw_mac: GW_MAC }).unwrap();
    b
}

// ---- The models ----

/// What a program must do with a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// TC_ACT_OK, frame and mark unchanged, counted under this index (or
    /// under none).
    Untouched(Option<u32>),
    /// weft_decap: validated IPv6 VXLAN: TC_ACT_OK, frame unchanged,
    /// marked OVERLAY_MARK, counted decap_kernel.
    Marked,
    /// TC_ACT_OK with exactly this frame out, counted under the index.
    Rewritten(Vec<u8>, u32),
    /// TC_ACT_REDIRECT with exactly this frame out, counted under the
    /// index (or under none).
    Redirect(Vec<u8>, Option<u32>),
    /// TC_ACT_SHOT, counted under one of these reasons (every check the
    /// frame fails names its reason; the program may find any of them
    /// first).
    Dropped(Vec<u32>),
}

fn be16(f: &[u8], i: usize) -> usize {
    u16::from_be_bytes([f[i], f[i + 1]]) as usize
}

fn addr(f: &[u8], i: usize) -> [u8; 16] {
    f[i..i + 16].try_into().unwrap()
}

/// The peer subnets node B6 holds: the PublicIPv6 and v6 VtepMAC of the
/// node whose /64 holds `a`.
fn vtep_of(a: &[u8; 16]) -> Option<([u8; 16], [u8; 6])> {
    match a[..8] {
        [0xfd, 0x10, 0, 0, 0, 0, 0, 1] => Some((NODE6_A, MAC6_A)),
        [0xfd, 0x10, 0, 0, 0, 0, 0, 2] => Some((NODE6_B, MAC6_B)),
        _ => None,
    }
}

/// weft_decap on a frame of Ethernet type IPv6. `v6`: the node has the
/// IPv6 half configured (else IPv6 is never weft's business).
///
/// Ours: outer IPv6 (version 6) whose next header is UDP (no extension
/// header: the kernel's vxlan sends none), to our PublicIPv6, UDP to
/// 8472. Acceptable: every one of
/// - the VXLAN header: I flag, VNI 1;
/// - an IPv6 inner frame (type 0x86DD, version 6) whose headers are whole;
/// - lengths: UDP's = IPv6 payload's, the inner packet fits the UDP
///   datagram, the datagram fits the frame;
/// - the sender is a peer's PublicIPv6 and the inner source lies in that
///   very peer's /64.
pub fn decap6(f: &[u8], v6: bool) -> Expect {
    let (ip, udp, vx, ieth, iip) = (14, 54, 62, 70, 84);
    let ours = v6 && f.len() >= udp + 8 && f[ip] >> 4 == 6 && f[ip + 6] == 17 && addr(f, ip + 24) == NODE6_B && be16(f, udp + 2) == VXLAN as usize;
    if !ours {
        return Expect::Untouched(Some(stat::PASS));
    }
    if f.len() < iip + 40 {
        return Expect::Dropped(vec![stat::DROP_MALFORMED]);
    }
    let mut why = vec![];
    if f[vx] & 0x08 == 0 || f[vx + 4..vx + 7] != [0, 0, 1] {
        why.push(stat::DROP_WRONG_VNI);
    }
    if be16(f, ieth + 12) != 0x86dd {
        why.push(stat::DROP_NOT_IPV6);
    }
    let (payload, udp_len, inner_payload) = (be16(f, ip + 4), be16(f, udp + 4), be16(f, iip + 4));
    if f[iip] >> 4 != 6 || udp_len != payload || inner_payload + 40 + 8 + 8 + 14 > udp_len || 14 + 40 + payload > f.len() {
        why.push(stat::DROP_MALFORMED);
    }
    let src = addr(f, ip + 8);
    if src != NODE6_A && src != NODE6_B {
        why.push(stat::DROP_UNKNOWN_VTEP);
    }
    if vtep_of(&addr(f, iip + 8)).map(|v| v.0) != Some(src) {
        why.push(stat::DROP_SPOOFED);
    }
    if why.is_empty() {
        Expect::Marked
    } else {
        Expect::Dropped(why)
    }
}

/// What the kernel's vxlan socket hands the IPv6 overlay device for an
/// IPv6 VXLAN frame decap marked: the inner Ethernet frame, up to the end
/// of the UDP datagram.
pub fn decapsulated(f: &[u8]) -> Vec<u8> {
    f[70..54 + be16(f, 58)].to_vec()
}

/// weft_encap6 (on weft-v6's egress; `v6`: node B6, else a node without
/// the IPv6 half): an IPv6 packet (type, version, whole) to a peer's /64
/// leaves with the inner Ethernet header from our v6 VtepMAC to the
/// peer's; anything else is dropped.
pub fn encap6(f: &[u8], v6: bool) -> Expect {
    if !v6 {
        return Expect::Dropped(vec![stat::DROP_NO_CONFIG]);
    }
    let mut why = vec![];
    if be16(f, 12) != 0x86dd {
        why.push(stat::DROP_NOT_IPV6);
    }
    if f.len() < 54 {
        why.push(stat::DROP_MALFORMED);
        return Expect::Dropped(why);
    }
    if f[14] >> 4 != 6 || be16(f, 18) + 54 > f.len() {
        why.push(stat::DROP_MALFORMED);
    }
    let Some((_, mac)) = vtep_of(&addr(f, 38)) else {
        why.push(stat::DROP_NO_LEASE);
        return Expect::Dropped(why);
    };
    if !why.is_empty() {
        return Expect::Dropped(why);
    }
    let mut out = f.to_vec();
    out[0..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(&MAC6_B);
    Expect::Rewritten(out, stat::ENCAP)
}

/// weft_overlay_in6 on weft-v6's ingress, the skb carrying `mark`
/// (`pod`: POD6 is registered on this node): only what decap marked
/// enters; a registered pod's IPv6 packet whose hop limit does not expire
/// here goes straight into it (its MACs, hop limit - 1), the rest to the
/// stack.
pub fn overlay_in6(f: &[u8], mark: u32, pod: bool) -> Expect {
    if mark != OVERLAY_MARK {
        return Expect::Dropped(vec![stat::DROP_UNVALIDATED]);
    }
    if be16(f, 12) != 0x86dd {
        return Expect::Dropped(vec![stat::DROP_NOT_IPV6]);
    }
    if f.len() < 54 || f[14] >> 4 != 6 {
        return Expect::Dropped(vec![stat::DROP_MALFORMED]);
    }
    let hop = f[21];
    if pod && addr(f, 38) == POD6 && hop > 1 {
        let mut out = f.to_vec();
        out[0..6].copy_from_slice(&POD_MAC);
        out[6..12].copy_from_slice(&GW_MAC);
        out[21] = hop - 1;
        return Expect::Redirect(out, Some(stat::DECAP_TO_POD));
    }
    Expect::Untouched(Some(stat::DECAP))
}

/// weft_from_pod (`v6`: node B6 with POD6 registered; else a node with
/// neither): the registered pod's own IPv6 packet, sent to its gateway's
/// MAC, to a peer's /64, hop limit above 1, goes to weft-v6's egress with
/// hop limit - 1, uncounted (weft_encap6 counts there); every other frame
/// goes on untouched and uncounted. No IPv4 pod is registered anywhere, so
/// IPv4 frames are untouched too.
pub fn from_pod6(f: &[u8], v6: bool) -> Expect {
    let ok = v6
        && f.len() >= 54
        && be16(f, 12) == 0x86dd
        && f[14] >> 4 == 6
        && addr(f, 22) == POD6
        && f[0..6] == GW_MAC
        && f[21] > 1
        && vtep_of(&addr(f, 38)).is_some();
    if !ok {
        return Expect::Untouched(None);
    }
    let mut out = f.to_vec();
    out[21] -= 1;
    Expect::Redirect(out, None)
}

// ---- The frames ----

/// An IPv6/UDP packet (no Ethernet), `payload` bytes of UDP payload.
pub fn ipv6_udp(src: [u8; 16], dst: [u8; 16], hop: u8, payload: usize) -> Vec<u8> {
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

/// IPv6 VXLAN from `src` to `dst` as a kernel vxlan device sends it.
pub fn vxlan6(src: [u8; 16], dst: [u8; 16], vni: u32, flags: u8, inner_proto: u16, inner: &[u8]) -> Vec<u8> {
    let mut vx = vec![flags, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    vx.extend(eth(MAC6_B, MAC6_A, inner_proto, inner));
    let mut udp = 33333u16.to_be_bytes().to_vec();
    udp.extend(VXLAN.to_be_bytes());
    udp.extend(((8 + vx.len()) as u16).to_be_bytes());
    udp.extend([0xab, 0xcd]);
    udp.extend(&vx);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((udp.len() as u16).to_be_bytes());
    ip.extend([17, 64]);
    ip.extend(src);
    ip.extend(dst);
    ip.extend(&udp);
    eth([0x02, 0xee, 0, 0, 0, 2], [0x02, 0xee, 0, 0, 0, 1], 0x86dd, &ip)
}

/// `f` (an IPv6 header at byte 14) with the extension header `ext` (its
/// first byte, the next header, filled in) inserted after the fixed
/// header as `kind`, the payload length grown to match.
pub fn with_ext(f: &[u8], kind: u8, ext: &[u8]) -> Vec<u8> {
    let mut g = f.to_vec();
    let mut e = ext.to_vec();
    e[0] = g[20];
    g[20] = kind;
    g.splice(54..54, e);
    let pl = (be16(&g, 18) + ext.len()) as u16;
    g[18..20].copy_from_slice(&pl.to_be_bytes());
    g
}

/// The extension headers a sender may put before the upper layer: name,
/// next-header value, bytes (8 each).
pub fn extension_headers() -> Vec<(&'static str, u8, Vec<u8>)> {
    vec![
        ("hop-by-hop options", 0, vec![0, 0, 1, 4, 0, 0, 0, 0]),
        ("routing header", 43, vec![0, 0, 0, 0, 0, 0, 0, 0]),
        ("destination options", 60, vec![0, 0, 1, 4, 0, 0, 0, 0]),
        ("fragment header, first fragment", 44, vec![0, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]),
        ("fragment header, a later fragment", 44, vec![0, 0, 0x00, 0xb8, 0, 0, 0x12, 0x34]),
        ("fragment header, atomic", 44, vec![0, 0, 0, 0, 0, 0, 0x12, 0x34]),
    ]
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IPv6 corpus: (name, kind, frame). Names starting with "valid" or
/// naming a hop limit, an extension header or a fragment are mutation seeds.
pub fn generate() -> Vec<(String, char, Vec<u8>)> {
    let mut out: Vec<(String, char, Vec<u8>)> = vec![];
    let mut push = |name: String, kind: char, f: Vec<u8>| out.push((format!("v6 {name}"), kind, f));

    // weft_decap: IPv6 VXLAN on the underlay.
    let inner = |src: [u8; 16], dst: [u8; 16], hop: u8| ipv6_udp(src, dst, hop, 16);
    let v = vxlan6(NODE6_A, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(1, 2), POD6, 64));
    push("valid IPv6 VXLAN from A to the registered pod".into(), 'd', v.clone());
    push("valid IPv6 VXLAN from A to an unregistered pod".into(), 'd', vxlan6(NODE6_A, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(1, 2), pod6(2, 9), 64)));
    push("valid IPv6 VXLAN from B's own PublicIPv6".into(), 'd', vxlan6(NODE6_B, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(2, 7), POD6, 64)));
    for cut in 14..v.len() {
        push(format!("IPv6 VXLAN truncated to {cut}"), 'd', v[..cut].to_vec());
    }
    for (name, kind, ext) in extension_headers() {
        push(format!("IPv6 VXLAN behind an outer {name}"), 'd', with_ext(&v, kind, &ext));
    }
    for (name, at, val) in [
        ("outer payload length larger than the frame", 18usize, be16(&v, 18) as u16 + 1),
        ("outer payload length 0xffff", 18, 0xffff),
        ("outer payload length smaller than the frame", 18, be16(&v, 18) as u16 - 1),
        ("outer payload length 0", 18, 0),
        ("UDP length larger", 58, be16(&v, 58) as u16 + 1),
        ("UDP length smaller", 58, be16(&v, 58) as u16 - 1),
        ("UDP length 0", 58, 0),
        ("UDP length 8", 58, 8),
        ("UDP length 0xffff", 58, 0xffff),
        ("inner payload length larger than the datagram", 88, be16(&v, 88) as u16 + 1),
        ("inner payload length 0xffff", 88, 0xffff),
        ("inner payload length smaller", 88, be16(&v, 88) as u16 - 1),
    ] {
        let mut f = v.clone();
        set16(&mut f, at, val);
        push(name.into(), 'd', f);
    }
    // Both lengths smaller, consistently: trailing bytes (Ethernet padding).
    let mut pad = v.clone();
    pad.extend([0u8; 6]);
    push("valid IPv6 VXLAN with trailing padding".into(), 'd', pad);
    for hop in [0u8, 1] {
        let mut f = v.clone();
        f[21] = hop;
        push(format!("outer hop limit {hop}"), 'd', f);
        push(format!("inner hop limit {hop}"), 'd', vxlan6(NODE6_A, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(1, 2), POD6, hop)));
    }
    let mut v4ver = v.clone();
    v4ver[14] = 0x45;
    push("outer version 4 with type IPv6".into(), 'd', v4ver);
    let mut v6_as_v4 = v.clone();
    v6_as_v4[12..14].copy_from_slice(&[0x08, 0x00]);
    push("outer IPv6 header with type IPv4".into(), 'd', v6_as_v4);
    let mut inner_v4ver = v.clone();
    inner_v4ver[84] = 0x45;
    push("inner version 4 with type IPv6".into(), 'd', inner_v4ver);
    push(
        "inner IPv4 in IPv6 VXLAN".into(),
        'd',
        vxlan6(NODE6_A, NODE6_B, 1, 0x08, 0x0800, &crate::frames::ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 36)),
    );
    let mut inner_type_v4 = v.clone();
    inner_type_v4[82..84].copy_from_slice(&[0x08, 0x00]);
    push("inner IPv6 header with type IPv4".into(), 'd', inner_type_v4);
    for (name, flags, vni) in [("no I flag", 0x00u8, 1u32), ("every VXLAN flag", 0xff, 1), ("VNI 2", 0x08, 2), ("VNI 0", 0x08, 0)] {
        push(format!("IPv6 VXLAN, {name}"), 'd', vxlan6(NODE6_A, NODE6_B, vni, flags, 0x86dd, &inner(pod6(1, 2), POD6, 64)));
    }
    let mut rsvd = v.clone();
    rsvd[63..66].copy_from_slice(&[0xff; 3]);
    rsvd[69] = 0xff;
    push("IPv6 VXLAN with reserved bytes set (valid VNI)".into(), 'd', rsvd);
    for (name, src) in
        [("an unknown VTEP", STRANGER6), ("a link-local sender", LINK_LOCAL), ("a multicast sender", ALL_NODES), ("the unspecified sender", UNSPECIFIED)]
    {
        push(format!("IPv6 VXLAN from {name}"), 'd', vxlan6(src, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(1, 2), POD6, 64)));
    }
    for (name, src, isrc) in [
        ("inner source in B's subnet, from A", NODE6_A, pod6(2, 9)),
        ("inner source in A's subnet, from B", NODE6_B, pod6(1, 2)),
        ("inner source in no subnet", NODE6_A, pod6(9, 9)),
        ("inner source link-local", NODE6_A, LINK_LOCAL),
        ("inner source unspecified", NODE6_A, UNSPECIFIED),
        ("inner source multicast", NODE6_A, ALL_NODES),
        ("inner source the registered pod, from A", NODE6_A, POD6),
    ] {
        push(format!("IPv6 VXLAN spoofed: {name}"), 'd', vxlan6(src, NODE6_B, 1, 0x08, 0x86dd, &inner(isrc, POD6, 64)));
    }
    for (name, dst) in [("all-nodes multicast", ALL_NODES), ("link-local", LINK_LOCAL), ("A's PublicIPv6", NODE6_A)] {
        push(format!("IPv6 VXLAN to {name} (outer)"), 'd', vxlan6(NODE6_A, dst, 1, 0x08, 0x86dd, &inner(pod6(1, 2), POD6, 64)));
        push(format!("valid IPv6 VXLAN, inner destination {name}"), 'd', vxlan6(NODE6_A, NODE6_B, 1, 0x08, 0x86dd, &inner(pod6(1, 2), dst, 64)));
    }
    let mut port = v.clone();
    set16(&mut port, 56, 4789);
    push("IPv6 VXLAN to port 4789".into(), 'd', port);
    let mut tcp = v.clone();
    tcp[20] = 6;
    push("outer next header TCP".into(), 'd', tcp);
    let mut vlan = v.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    push("VLAN tag before IPv6".into(), 'd', vlan);

    // weft_encap6: what the host routed into weft-v6 (pods, the host).
    let p = eth(MAC6_B, [0x02, 0, 0, 0, 0, 9], 0x86dd, &ipv6_udp(POD6, pod6(1, 9), 64, 16));
    push("valid IPv6 packet to A's subnet".into(), 'E', p.clone());
    push("valid IPv6 packet to B's own subnet".into(), 'E', eth(MAC6_B, [0x02, 0, 0, 0, 0, 9], 0x86dd, &ipv6_udp(POD6, pod6(2, 9), 64, 16)));
    for cut in 14..p.len() {
        push(format!("IPv6 packet truncated to {cut}"), 'E', p[..cut].to_vec());
    }
    // weft_overlay_in6: what weft-v6's socket decapsulated.
    let o = eth(MAC6_B, MAC6_A, 0x86dd, &ipv6_udp(pod6(1, 2), POD6, 64, 16));
    push("valid decapsulated IPv6 packet to the registered pod".into(), 'o', o.clone());
    push("valid decapsulated IPv6 packet to an unregistered pod".into(), 'o', eth(MAC6_B, MAC6_A, 0x86dd, &ipv6_udp(pod6(1, 2), pod6(2, 9), 64, 16)));
    for cut in 14..o.len() {
        push(format!("decapsulated IPv6 truncated to {cut}"), 'o', o[..cut].to_vec());
    }
    // weft_from_pod: the registered pod's frames on its veth.
    let q = eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(POD6, pod6(1, 9), 64, 16));
    push("valid pod IPv6 to A's subnet".into(), 'p', q.clone());
    push("valid pod IPv6 to B's own subnet".into(), 'p', eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(POD6, pod6(2, 9), 64, 16)));
    for cut in 14..q.len() {
        push(format!("pod IPv6 truncated to {cut}"), 'p', q[..cut].to_vec());
    }
    push("pod IPv6 not to its gateway MAC".into(), 'p', eth(MAC6_A, POD_MAC, 0x86dd, &ipv6_udp(POD6, pod6(1, 9), 64, 16)));
    for (name, src) in [("another pod's address", pod6(2, 9)), ("a peer's pod's address", pod6(1, 2)), ("link-local", LINK_LOCAL), ("unspecified", UNSPECIFIED)]
    {
        push(format!("pod IPv6 spoofed source {name}"), 'p', eth(GW_MAC, POD_MAC, 0x86dd, &ipv6_udp(src, pod6(1, 9), 64, 16)));
    }
    // The same variations for the three programs that take a plain IPv6
    // frame (the fixed header at 14).
    for (kind, base) in [('E', &p), ('o', &o), ('p', &q)] {
        for (name, k, ext) in extension_headers() {
            push(format!("IPv6 behind a {name}"), kind, with_ext(base, k, &ext));
        }
        for hop in [0u8, 1, 2] {
            let mut f = base.clone();
            f[21] = hop;
            push(format!("IPv6 hop limit {hop}"), kind, f);
        }
        for (name, val) in [("larger than the frame", be16(base, 18) as u16 + 1), ("0xffff", 0xffff), ("smaller than the frame", 8), ("0", 0)] {
            let mut f = base.clone();
            set16(&mut f, 18, val);
            push(format!("IPv6 payload length {name}"), kind, f);
        }
        let mut v4ver = base.clone();
        v4ver[14] = 0x45;
        push("version 4 with type IPv6".into(), kind, v4ver);
        let mut as_v4 = base.clone();
        as_v4[12..14].copy_from_slice(&[0x08, 0x00]);
        push("IPv6 header with type IPv4".into(), kind, as_v4);
        let mut vlan = base.clone();
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        push("VLAN tag before IPv6".into(), kind, vlan);
        for (name, dst) in [("all-nodes multicast", ALL_NODES), ("link-local", LINK_LOCAL), ("in no subnet", pod6(9, 9)), ("unspecified", UNSPECIFIED)] {
            let mut f = base.clone();
            f[38..54].copy_from_slice(&dst);
            push(format!("IPv6 to {name}"), kind, f);
        }
    }
    out
}

/// Offsets of the 16-bit fields a mutation sets to boundary values, and of
/// the addresses it swaps, in frames of this kind.
pub fn fields(kind: char) -> (&'static [usize], &'static [usize]) {
    match kind {
        // Type, payload length, UDP port and length, VXLAN flags+, inner
        // type, inner payload length; outer src/dst, inner src/dst.
        'd' => (&[12, 18, 56, 58, 62, 66, 82, 88, 20], &[22, 38, 92, 108]),
        _ => (&[12, 18, 20], &[22, 38]),
    }
}
