//! The host-gw fast path over IPv6 (dual stack) on crafted frames through
//! BPF_PROG_TEST_RUN: `weft_fwd` (the pod bridge), `weft_from_pod` (a
//! registered pod's veth) and `weft_to_pod` (the underlay, receiving half).
//! Their answers come from the kernel's FIB and devices, so each test runs
//! its thread inside a fresh network namespace holding exactly the routes,
//! neighbours and devices the case needs (never the machine's own). Needs
//! root, as CI runs.
//!
//! The node: underlay `under0` fd77::1/64 (MAC UNDER_MAC, MTU 1500), IPv6
//! forwarding on, weft's route `fd44:0:0:2::/64 via fd77::2 dev under0
//! proto 254` and the same entry in weft_hostgw6. Our pods live in
//! fd44:0:0:1::/64. The test run delivers every frame on `lo`.
mod frames;
mod testns;

use frames::{counter, eth, run_tc, TC_ACT_OK, TC_ACT_REDIRECT};
use testns::{ifindex, Ns};

use weft_agent::dataplane::Datapath;
use weft_common::{prog_names, stat, subnet_env::Ipv6Cidr, HostGw6Entry, PodEntry};

const PEER6: [u8; 16] = addr(0xfd77, 0, 2);
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const UNDER_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const POD_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 1, 2];
const GW_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 1];
/// Our registered pod, and a peer's pod.
const POD: [u8; 16] = addr(0xfd44, 1, 2);
const PEER_POD: [u8; 16] = addr(0xfd44, 2, 3);
const NEXT_UDP: u8 = 17;
const NEXT_ICMP6: u8 = 58;

/// `<a>:0:0:<subnet>::<host>`
const fn addr(a: u16, subnet: u16, host: u16) -> [u8; 16] {
    let (a, s, h) = (a.to_be_bytes(), subnet.to_be_bytes(), host.to_be_bytes());
    [a[0], a[1], 0, 0, 0, 0, s[0], s[1], 0, 0, 0, 0, 0, 0, h[0], h[1]]
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn cidr(s: &str) -> Ipv6Cidr {
    Ipv6Cidr::parse(s).unwrap()
}

/// An IPv6 packet (no Ethernet): fixed header, then `l4` as it is.
fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0x0a, 0xbc, 0xde]; // traffic class 0, a flow label
    p.extend((l4.len() as u16).to_be_bytes());
    p.extend([next, hop]);
    p.extend(src);
    p.extend(dst);
    p.extend(l4);
    p
}

/// A UDP datagram with `payload` bytes (checksum left as any value).
fn udp(payload: usize) -> Vec<u8> {
    let mut u = 40000u16.to_be_bytes().to_vec();
    u.extend(5201u16.to_be_bytes());
    u.extend(((8 + payload) as u16).to_be_bytes());
    u.extend([0x12, 0x34]);
    u.extend((0..payload).map(|i| (i * 3) as u8));
    u
}

/// An ICMPv6 message of type `typ` (and 20 more bytes).
fn icmp6(typ: u8) -> Vec<u8> {
    let mut m = vec![typ, 0, 0xab, 0xcd];
    m.extend([0u8; 20]);
    m
}

/// A frame to the host (destination MAC 0: the test device's own, so the
/// kernel marks it PACKET_HOST).
fn to_host(pkt: &[u8]) -> Vec<u8> {
    eth([0; 6], [0x02, 0xcc, 0, 0, 0, 7], 0x86dd, pkt)
}

/// A pod's UDP packet to the peer's pod, `payload` bytes, hop limit `hop`.
fn pod_to_peer(hop: u8, payload: usize) -> Vec<u8> {
    ipv6(POD, PEER_POD, NEXT_UDP, hop, &udp(payload))
}

/// The node described in the module's doc; `with_neigh`: the peer's
/// neighbour entry is known (permanent).
fn node6(tag: &str, with_neigh: bool) -> (Ns, Datapath, u32) {
    let ns = Ns::new("fwd6", tag);
    ns.ip("link set lo up");
    ns.ip("link add under0 address 02:aa:00:00:00:01 type veth peer name under1");
    ns.ip("-6 addr add fd77::1/64 dev under0 nodad");
    ns.ip("link set under0 up");
    ns.ip("link set under1 up");
    ns.sysctl("net.ipv6.conf.all.forwarding=1");
    ns.ip("-6 route add fd44:0:0:2::/64 via fd77::2 dev under0 proto 254");
    if with_neigh {
        ns.ip("-6 neigh add fd77::2 lladdr 02:bb:00:00:00:02 dev under0 nud permanent");
    }
    ns.enter();
    let idx = ifindex("under0");
    assert_ne!(idx, 0, "under0 not found in the test namespace");
    let mut dp = Datapath::load(None).expect("load the eBPF object (are we root?)");
    dp.set_hostgw6(&cidr("fd44:0:0:2::/64"), &HostGw6Entry { gateway: PEER6, ifindex: idx }).unwrap();
    (ns, dp, idx)
}

/// `out` is `frame` forwarded: MACs from the neighbour table, hop limit - 1,
/// nothing else changed (IPv6 has no header checksum).
fn assert_forwarded(out: &[u8], frame: &[u8], why: &str) {
    assert_eq!(&out[0..6], &PEER_MAC, "{why}: destination MAC = the next hop's, from the neighbour table");
    assert_eq!(&out[6..12], &UNDER_MAC, "{why}: source MAC = the underlay's");
    assert_eq!(&out[12..14], &[0x86, 0xdd], "{why}");
    assert_eq!(out[14 + 7], frame[14 + 7] - 1, "{why}: hop limit decremented once");
    assert_eq!(&out[14..21], &frame[14..21], "{why}");
    assert_eq!(&out[22..], &frame[22..], "{why}: addresses and payload untouched");
}

#[test]
fn fwd6_forwards_to_the_fib_next_hop_like_ip6_forward() {
    let (_ns, mut dp, _) = node6("ok", true);
    let mut frag = vec![NEXT_UDP, 0, 0, 1, 0, 0, 0, 9]; // Fragment header, first fragment, more follow
    frag.extend(udp(40));
    let mut dstopts = vec![NEXT_UDP, 0, 1, 4, 0, 0, 0, 0]; // Destination Options: PadN
    dstopts.extend(udp(40));
    let cases = [
        ("UDP", to_host(&pod_to_peer(64, 100))),
        ("ICMPv6 echo request", to_host(&ipv6(POD, PEER_POD, NEXT_ICMP6, 64, &icmp6(128)))),
        ("a Fragment header (routers do not parse it)", to_host(&ipv6(POD, PEER_POD, 44, 64, &frag))),
        ("Destination Options (for the destination only)", to_host(&ipv6(POD, PEER_POD, 60, 64, &dstopts))),
        ("hop limit 2 (one hop left after this one)", to_host(&pod_to_peer(2, 100))),
    ];
    for (i, (why, frame)) in cases.iter().enumerate() {
        let (rc, out) = run_tc(&mut dp, prog_names::FWD, frame);
        assert_eq!(rc, TC_ACT_REDIRECT, "{why}: a peer's packet leaves by the underlay");
        assert_forwarded(&out, frame, why);
        assert_eq!(counter(&dp, stat::FWD), i as u64 + 1, "{why}");
    }
    assert_eq!(counter(&dp, stat::FWD_STACK), 0);
}

#[test]
fn fwd6_without_a_neighbour_the_kernel_resolves_it() {
    let (_ns, mut dp, _) = node6("nn", false);
    let frame = to_host(&pod_to_peer(64, 100));
    let (rc, out) = run_tc(&mut dp, prog_names::FWD, &frame);
    assert_eq!(rc, TC_ACT_REDIRECT, "bpf_redirect_neigh: the kernel does the ND");
    assert_eq!(out[14 + 7], 63, "hop limit decremented");
    assert_eq!(&out[..21], &frame[..21], "MACs left for the neighbour subsystem");
    assert_eq!(counter(&dp, stat::FWD), 1);
    // Without a neighbour the FIB skips its MTU check; the program does it.
    let big = to_host(&pod_to_peer(64, 1600));
    assert_eq!(run_tc(&mut dp, prog_names::FWD, &big), (TC_ACT_OK, big.clone()), "too big: the stack sends Packet Too Big");
    assert_eq!((counter(&dp, stat::FWD), counter(&dp, stat::FWD_STACK)), (1, 1));
}

#[test]
fn fwd6_hands_the_stack_whatever_it_should_decide() {
    let (ns, mut dp, _) = node6("st", true);
    let mut declined = 0;
    let mut check = |dp: &mut Datapath, frame: Vec<u8>, why: &str, counted: bool| {
        let (rc, out) = run_tc(dp, prog_names::FWD, &frame);
        assert_eq!(rc, TC_ACT_OK, "{why}: must go to the stack");
        assert_eq!(out, frame, "{why}: handed on unchanged");
        declined += counted as u64;
        assert_eq!(counter(dp, stat::FWD_STACK), declined, "{why}: counted fwd_stack = {counted}");
    };
    // Peer traffic the stack must decide: counted fwd_stack.
    check(&mut dp, to_host(&pod_to_peer(1, 100)), "hop limit 1 (the stack sends time-exceeded)", true);
    check(&mut dp, to_host(&pod_to_peer(0, 100)), "hop limit 0", true);
    check(&mut dp, to_host(&pod_to_peer(64, 1600)), "bigger than the underlay MTU, not GSO (Packet Too Big)", true);
    let mut hbh = vec![NEXT_UDP, 0, 5, 2, 0, 0, 1, 0]; // Hop-by-Hop: Router Alert
    hbh.extend(udp(40));
    check(&mut dp, to_host(&ipv6(POD, PEER_POD, 0, 64, &hbh)), "Hop-by-Hop Options (every router reads them)", true);
    // Never weft's to forward: untouched, uncounted.
    check(&mut dp, to_host(&ipv6(POD, addr(0xfd44, 9, 3), NEXT_UDP, 64, &udp(100))), "not a peer subnet", false);
    check(&mut dp, to_host(&ipv6(POD, ip6("2001:db8::1"), NEXT_UDP, 64, &udp(100))), "outside the network", false);
    check(&mut dp, to_host(&ipv6(POD, ip6("ff02::1"), NEXT_UDP, 64, &udp(10))), "multicast destination", false);
    let mut mcast_mac = to_host(&pod_to_peer(64, 100));
    mcast_mac[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    check(&mut dp, mcast_mac, "multicast frame (not PACKET_HOST)", false);
    check(&mut dp, to_host(&ipv6(ip6("fe80::1"), PEER_POD, NEXT_UDP, 64, &udp(10))), "link-local source (ip6_forward answers unreachable)", false);
    check(&mut dp, to_host(&ipv6(POD, ip6("fe80::2"), NEXT_UDP, 64, &udp(10))), "link-local destination", false);
    check(&mut dp, to_host(&ipv6([0; 16], PEER_POD, NEXT_UDP, 64, &udp(10))), "unspecified source", false);
    check(&mut dp, to_host(&ipv6(ip6("::1"), PEER_POD, NEXT_UDP, 64, &udp(10))), "loopback source", false);
    for (typ, name) in [(133, "router solicitation"), (135, "neighbour solicitation"), (136, "neighbour advertisement"), (137, "redirect")] {
        check(&mut dp, to_host(&ipv6(POD, PEER_POD, NEXT_ICMP6, 255, &icmp6(typ))), &format!("ND {name} to a peer's address"), false);
    }
    let mut v4_in_v6 = to_host(&pod_to_peer(64, 10));
    v4_in_v6[14] = 0x45;
    check(&mut dp, v4_in_v6, "version 4 in an IPv6 frame", false);
    check(&mut dp, eth([0; 6], [0x02, 0xcc, 0, 0, 0, 7], 0x0806, &[0u8; 28]), "ARP", false);

    // The kernel's route wins over the map: routed elsewhere by hand, gone, forwarding off.
    ns.ip("-6 route replace fd44:0:0:2::/64 via fd77::3 dev under0 proto 254");
    check(&mut dp, to_host(&pod_to_peer(64, 100)), "the FIB's gateway is not the lease's", true);
    ns.ip("-6 route del fd44:0:0:2::/64");
    check(&mut dp, to_host(&pod_to_peer(64, 100)), "no route at all", true);
    ns.ip("-6 route add fd44:0:0:2::/64 via fd77::2 dev under0 proto 254");
    ns.sysctl("net.ipv6.conf.all.forwarding=0");
    check(&mut dp, to_host(&pod_to_peer(64, 100)), "forwarding turned off", true);
    assert_eq!(counter(&dp, stat::FWD), 0, "nothing was forwarded");
}

fn register_pod6(dp: &mut Datapath, ip: [u8; 16], host_ifindex: u32) {
    dp.set_pod6(ip.into(), &PodEntry { host_ifindex, pod_mac: POD_MAC, gw_mac: GW_MAC }).unwrap();
}

/// A registered pod's frame as its veth receives it: to its gateway's MAC.
fn from_pod(pkt: &[u8]) -> Vec<u8> {
    eth(GW_MAC, POD_MAC, 0x86dd, pkt)
}

#[test]
fn from_pod6_forwards_a_registered_pods_ipv6_to_a_host_gw_peer() {
    let (_ns, mut dp, _) = node6("fp", true);
    register_pod6(&mut dp, POD, 42);
    let frame = from_pod(&pod_to_peer(64, 100));
    let (rc, out) = run_tc(&mut dp, prog_names::FROM_POD, &frame);
    assert_eq!(rc, TC_ACT_REDIRECT, "out of the underlay, past the bridge and the host's routing");
    assert_forwarded(&out, &frame, "registered pod -> host-gw peer");
    assert_eq!(counter(&dp, stat::FWD), 1);

    let mut counted = 0;
    for (why, f, to_stack) in [
        ("hop limit 1 (the stack sends time-exceeded)", from_pod(&pod_to_peer(1, 100)), true),
        ("too big (Packet Too Big)", from_pod(&pod_to_peer(64, 1600)), true),
        ("not to the gateway MAC (bridged to a local pod)", eth(PEER_MAC, POD_MAC, 0x86dd, &pod_to_peer(64, 100)), false),
        ("source not a registered pod", from_pod(&ipv6(addr(0xfd44, 1, 9), PEER_POD, NEXT_UDP, 64, &udp(10))), false),
        ("destination in no peer subnet", from_pod(&ipv6(POD, addr(0xfd44, 9, 3), NEXT_UDP, 64, &udp(10))), false),
        ("ND to a peer's address", from_pod(&ipv6(POD, PEER_POD, NEXT_ICMP6, 255, &icmp6(135))), false),
        ("multicast", from_pod(&ipv6(POD, ip6("ff02::2"), NEXT_ICMP6, 255, &icmp6(133))), false),
    ] {
        let (rc, out) = run_tc(&mut dp, prog_names::FROM_POD, &f);
        assert_eq!((rc, &out), (TC_ACT_OK, &f), "{why}: on to the bridge and the stack, unchanged");
        counted += to_stack as u64;
        assert_eq!(counter(&dp, stat::FWD_STACK), counted, "{why}");
    }
    assert_eq!(counter(&dp, stat::FWD), 1);
}

/// The receiving node: a registered pod behind the host veth `podh0`
/// (MTU 1400, its peer `podp0` standing in for the pod's eth0), the peer's
/// IPv6 subnet fd44:0:0:2::/64 routed through the interface the test run
/// delivers on (`lo`), fd44:0:0:5::/64 through another.
fn receiver(tag: &str) -> (Ns, Datapath, u32) {
    let ns = Ns::new("to6", tag);
    ns.ip("link set lo up");
    ns.ip("link add podh0 mtu 1400 type veth peer name podp0 mtu 1400");
    ns.ip("link set podh0 up");
    ns.ip("link set podp0 up");
    ns.enter();
    let (lo, podh) = (ifindex("lo"), ifindex("podh0"));
    assert!(lo != 0 && podh != 0);
    let mut dp = Datapath::load(None).expect("load the eBPF object (are we root?)");
    // Host bits are cleared on the way in.
    dp.set_hostgw6(&cidr("fd44:0:0:2::1/64"), &HostGw6Entry { gateway: PEER6, ifindex: lo }).unwrap();
    dp.set_hostgw6(&cidr("fd44:0:0:5::/64"), &HostGw6Entry { gateway: addr(0xfd77, 0, 5), ifindex: lo + 1000 }).unwrap();
    register_pod6(&mut dp, POD, podh);
    (ns, dp, podh)
}

#[test]
fn to_pod6_delivers_a_routed_peer_pods_ipv6_into_a_registered_pod() {
    let (_ns, mut dp, _) = receiver("ok");
    let entries = dp.hostgw6().unwrap();
    assert_eq!(entries.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(), ["fd44:0:0:2::/64", "fd44:0:0:5::/64"], "stored as network addresses");
    let from_peer = |next: u8, hop: u8, l4: &[u8]| to_host(&ipv6(PEER_POD, POD, next, hop, l4));
    // 1352 bytes of UDP payload: an IPv6 packet of exactly the pod link's 1400.
    for (i, (why, frame)) in [
        ("UDP", from_peer(NEXT_UDP, 63, &udp(100))),
        ("ICMPv6 echo reply", from_peer(NEXT_ICMP6, 63, &icmp6(129))),
        ("exactly the pod link's MTU", from_peer(NEXT_UDP, 63, &udp(1352))),
    ]
    .into_iter()
    .enumerate()
    {
        let (rc, out) = run_tc(&mut dp, prog_names::TO_POD, &frame);
        assert_eq!(rc, TC_ACT_REDIRECT, "{why}: into the pod (bpf_redirect_peer)");
        assert_eq!(&out[0..6], &POD_MAC, "{why}: to the pod's MAC");
        assert_eq!(&out[6..12], &GW_MAC, "{why}: from its gateway's");
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert_eq!(out[14 + 7], 62, "{why}: hop limit - 1 (the hop the host would have made)");
        assert_eq!(&out[14..21], &frame[14..21]);
        assert_eq!(&out[22..], &frame[22..], "{why}: addresses and payload untouched");
        assert_eq!(counter(&dp, stat::ROUTED_TO_POD), i as u64 + 1, "{why}");
    }

    let mut mcast_mac = from_peer(NEXT_UDP, 63, &udp(10));
    mcast_mac[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    let mut hbh = vec![NEXT_UDP, 0, 5, 2, 0, 0, 1, 0];
    hbh.extend(udp(10));
    let mut v4_in_v6 = from_peer(NEXT_UDP, 63, &udp(10));
    v4_in_v6[14] = 0x45;
    let untouched = [
        ("unregistered destination", to_host(&ipv6(PEER_POD, addr(0xfd44, 1, 9), NEXT_UDP, 63, &udp(10)))),
        ("source outside every routed peer subnet (a node address)", to_host(&ipv6(PEER6, POD, NEXT_UDP, 63, &udp(10)))),
        ("peer routed through another interface", to_host(&ipv6(addr(0xfd44, 5, 2), POD, NEXT_UDP, 63, &udp(10)))),
        ("hop limit 1 (the stack sends time-exceeded)", from_peer(NEXT_UDP, 1, &udp(10))),
        ("hop limit 0", from_peer(NEXT_UDP, 0, &udp(10))),
        ("Hop-by-Hop Options (the forwarding path's job)", from_peer(0, 63, &hbh)),
        ("bigger than the pod's link (the stack sends Packet Too Big)", from_peer(NEXT_UDP, 63, &udp(1353))),
        ("not addressed to this host (multicast MAC)", mcast_mac),
        ("ND neighbour solicitation", from_peer(NEXT_ICMP6, 255, &icmp6(135))),
        ("ND redirect", from_peer(NEXT_ICMP6, 255, &icmp6(137))),
        ("link-local source", to_host(&ipv6(ip6("fe80::1"), POD, NEXT_UDP, 63, &udp(10)))),
        ("version 4 in an IPv6 frame", v4_in_v6),
        ("ARP", eth([0; 6], PEER_MAC, 0x0806, &[0u8; 28])),
    ];
    for (why, f) in untouched {
        let (rc, out) = run_tc(&mut dp, prog_names::TO_POD, &f);
        assert_eq!((rc, &out), (TC_ACT_OK, &f), "{why}: to the stack, unchanged");
    }
    assert_eq!(counter(&dp, stat::ROUTED_TO_POD), 3);
    assert!(dp.stats().unwrap().iter().enumerate().all(|(i, c)| i == stat::ROUTED_TO_POD as usize || c.packets == 0), "nothing else counted");
    // Without its weft_hostgw6 entry the peer's pod takes the host path.
    dp.remove_hostgw6(&cidr("fd44:0:0:2::/64")).unwrap();
    let f = from_peer(NEXT_UDP, 63, &udp(100));
    assert_eq!(run_tc(&mut dp, prog_names::TO_POD, &f), (TC_ACT_OK, f.clone()));
    assert_eq!(counter(&dp, stat::ROUTED_TO_POD), 3);
}
