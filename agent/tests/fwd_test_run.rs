//! The host-gw fast path (`weft_fwd`) on crafted packets through
//! BPF_PROG_TEST_RUN. Its answers come from the kernel's FIB, so each test
//! runs its thread inside a fresh network namespace holding exactly the
//! routes and neighbours the case needs (never the machine's own). Needs
//! root, as CI runs.
mod frames;
mod testns;

use frames::{csum, TC_ACT_OK, TC_ACT_REDIRECT};
use testns::{ifindex, Ns};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use weft_agent::{dataplane::Datapath, subnet::Ipv4Net};
use weft_common::{prog_names, stat, HostGwEntry};

const PEER: [u8; 4] = [192, 168, 77, 2];
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const UNDER_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

/// A node: underlay `under0` 192.168.77.1/24 (MAC UNDER_MAC, MTU 1500),
/// forwarding on, weft's route to the peer subnet 10.244.2.0/24 via
/// 192.168.77.2, and the same entry in weft_hostgw.
fn node(tag: &str, with_neigh: bool) -> (Ns, Datapath, u32) {
    let ns = Ns::new("fwd", tag);
    ns.ip("link set lo up");
    ns.ip("link add under0 address 02:aa:00:00:00:01 type veth peer name under1");
    ns.ip("addr add 192.168.77.1/24 dev under0");
    ns.ip("link set under0 up");
    ns.ip("link set under1 up");
    ns.sysctl("net.ipv4.ip_forward=1");
    ns.ip("route add 10.244.2.0/24 via 192.168.77.2 dev under0 proto 254");
    if with_neigh {
        ns.ip("neigh add 192.168.77.2 lladdr 02:bb:00:00:00:02 dev under0 nud permanent");
    }
    ns.enter();
    let idx = ifindex("under0");
    assert_ne!(idx, 0, "under0 not found in the test namespace");
    let mut dp = Datapath::load(None).expect("load the eBPF object (are we root?)");
    dp.set_hostgw(&"10.244.2.0/24".parse::<Ipv4Net>().unwrap(), &HostGwEntry { gateway: PEER, ifindex: idx }).unwrap();
    (ns, dp, idx)
}

/// A pod's frame to the host (destination MAC 0 = the test device's own,
/// so the kernel marks it PACKET_HOST): IPv4/UDP with `payload` bytes.
fn pod_frame(dst: [u8; 4], ttl: u8, payload: usize) -> Vec<u8> {
    let tot = 20 + 8 + payload;
    let mut f = vec![0u8; 6];
    f.extend([0x02, 0xcc, 0, 0, 0, 7, 0x08, 0x00]);
    f.extend([0x45, 0x00]);
    f.extend((tot as u16).to_be_bytes());
    f.extend([0x12, 0x34, 0x40, 0x00, ttl, 17, 0, 0, 10, 244, 1, 2]);
    f.extend(dst);
    let c = csum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend([0x9c, 0x40, 0x14, 0x51]);
    f.extend(((8 + payload) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

fn run(dp: &mut Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let p: &mut SchedClassifier = dp.program_mut(prog_names::FWD).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 64];
    let r = p.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() }).expect("test_run weft_fwd");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn count(dp: &Datapath, idx: u32) -> u64 {
    dp.stats().unwrap()[idx as usize].packets
}

#[test]
fn forwards_to_the_fib_next_hop_like_ip_forward() {
    let (_ns, mut dp, _) = node("ok", true);
    let frame = pod_frame([10, 244, 2, 3], 64, 100);
    let (rc, out) = run(&mut dp, &frame);
    assert_eq!(rc, TC_ACT_REDIRECT, "a peer's packet leaves by the underlay");
    assert_eq!(&out[0..6], &PEER_MAC, "destination MAC = the next hop's, from the neighbour table");
    assert_eq!(&out[6..12], &UNDER_MAC, "source MAC = the underlay's");
    assert_eq!(out[22], 63, "TTL decremented once");
    assert_eq!(csum(&out[14..34]), 0, "IPv4 header checksum still verifies");
    assert_eq!(&out[12..22], &frame[12..22]);
    assert_eq!(&out[23..24], &frame[23..24]);
    assert_eq!(&out[26..], &frame[26..], "addresses and payload untouched");
    assert_eq!(count(&dp, stat::FWD), 1);
    assert_eq!(count(&dp, stat::FWD_STACK), 0);
}

#[test]
fn without_a_neighbour_the_kernel_resolves_it() {
    let (_ns, mut dp, _) = node("nn", false);
    let (rc, out) = run(&mut dp, &pod_frame([10, 244, 2, 3], 64, 100));
    assert_eq!(rc, TC_ACT_REDIRECT, "bpf_redirect_neigh: the kernel does the ARP");
    assert_eq!(out[22], 63);
    assert_eq!(csum(&out[14..34]), 0);
    assert_eq!(count(&dp, stat::FWD), 1);
}

#[test]
fn hands_the_stack_whatever_it_should_decide() {
    let (ns, mut dp, _) = node("st", true);
    let mut declined = 0;
    let mut check = |dp: &mut Datapath, frame: Vec<u8>, why: &str, counted: bool| {
        let (rc, out) = run(dp, &frame);
        assert_eq!(rc, TC_ACT_OK, "{why}: must go to the stack");
        assert_eq!(out, frame, "{why}: handed on unchanged");
        declined += counted as u64;
        assert_eq!(count(dp, stat::FWD_STACK), declined, "{why}");
    };
    check(&mut dp, pod_frame([10, 244, 9, 3], 64, 100), "not a peer subnet", false);
    check(&mut dp, pod_frame([8, 8, 8, 8], 64, 100), "outside the network", false);
    check(&mut dp, pod_frame([10, 244, 2, 3], 1, 100), "TTL 1 (the stack sends time-exceeded)", true);
    check(&mut dp, pod_frame([10, 244, 2, 3], 64, 1600), "bigger than the underlay MTU, not GSO", true);
    let mut arp = pod_frame([10, 244, 2, 3], 64, 100);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    check(&mut dp, arp, "not IPv4", false);
    let mut other_mac = pod_frame([10, 244, 2, 3], 64, 100);
    other_mac[0..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 1]);
    check(&mut dp, other_mac, "multicast frame (not PACKET_HOST)", false);
    // (A truncated IPv4 header cannot be crafted here: the kernel refuses a
    // test frame whose IPv4 header is short.)
    let mut bad_ihl = pod_frame([10, 244, 2, 3], 64, 100);
    bad_ihl[14] = 0x44;
    check(&mut dp, bad_ihl, "IHL below 5", false);

    // Someone routed the subnet elsewhere by hand: the kernel's route wins.
    ns.ip("route replace 10.244.2.0/24 via 192.168.77.3 dev under0 proto 254");
    check(&mut dp, pod_frame([10, 244, 2, 3], 64, 100), "the FIB's gateway is not the lease's", true);
    ns.ip("route del 10.244.2.0/24");
    check(&mut dp, pod_frame([10, 244, 2, 3], 64, 100), "no route at all", true);
    ns.ip("route add 10.244.2.0/24 via 192.168.77.2 dev under0 proto 254");
    ns.sysctl("net.ipv4.ip_forward=0");
    check(&mut dp, pod_frame([10, 244, 2, 3], 64, 100), "forwarding turned off", true);
    assert_eq!(count(&dp, stat::FWD), 0, "nothing was forwarded");
}
