//! weft's programs stand aside once weftd has been gone past its deadline
//! (`weft_deadline`, see `agent/src/dataplane/deadline.rs`): every program
//! then passes the packet to the kernel untouched (TC_ACT_OK, no redirect,
//! no mark) and counts it as `stood_aside`; before the deadline (or
//! without one) each does its work. Through BPF_PROG_TEST_RUN; needs root.
mod frames;

use std::time::Duration;

use frames::*;
use weft_agent::dataplane::Datapath;
use weft_common::{prog_names, stat, subnet_env::Ipv6Cidr, Datapath6Config, PodEntry, Vtep6Entry, OVERLAY_MARK};

const NODE6_A: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NODE6_B: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const MAC6_A: [u8; 6] = [0x02, 0xa6, 0, 0, 0, 1];
const MAC6_B: [u8; 6] = [0x02, 0xb6, 0, 0, 0, 2];
const POD_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 2, 3];
const GW_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 1];

/// An IPv6/UDP packet from fd10:0:0:2::3 to fd10:0:0:1::9 (no Ethernet).
fn ipv6_udp() -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 18, 17, 64];
    p.extend([0xfd, 0x10, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
    p.extend([0xfd, 0x10, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]);
    p.extend([0x9c, 0x40, 0x14, 0x51, 0, 18, 0x12, 0x34]);
    p.extend([7u8; 10]);
    p
}

/// Node A with a kernel vxlan overlay and the IPv6 half, pod 10.244.1.2
/// registered.
fn node_a() -> Datapath {
    let mut a = node_kernel_vxlan(NODE_A, MAC_A, 1500);
    a.set_config6(&Datapath6Config { local_ip: NODE6_A, overlay_ifindex: 7, vtep_mac: MAC6_A, _pad: [0; 2] }).unwrap();
    a.set_vtep6(&Ipv6Cidr::parse("fd10:0:0:1::/64").unwrap(), &Vtep6Entry { ip: NODE6_B, mac: MAC6_B, _pad: [0; 2] }).unwrap();
    a.add_vtep_ip6(NODE6_B.into()).unwrap();
    a.set_pod([10, 244, 1, 2].into(), &PodEntry { host_ifindex: 42, pod_mac: POD_MAC, gw_mac: GW_MAC }).unwrap();
    a
}

/// Each program with a packet it acts on (redirects, drops, marks or
/// rewrites) while weftd's deadline lies ahead; `acts`: false for the
/// host-gw programs, which this node (no host-gw peers) passes anyway.
fn cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    let to_b = pod_packet([10, 244, 2, 3], 4242);
    vec![
        (prog_names::ENCAP, eth(MAC_A, MAC_A, 0x0800, &to_b), true),
        // VXLAN for us from a VTEP, inner source in its subnet: validated
        // and marked for the kernel's socket.
        (prog_names::DECAP, vxlan_frame(NODE_A, 8472, 1, 0x08, &ipv4_udp([10, 244, 1, 3], [10, 244, 1, 9], 1, 2, 64, 10)), true),
        // Unmarked on the overlay's ingress: dropped.
        (prog_names::OVERLAY_IN, eth(MAC_A, MAC_B, 0x0800, &pod_packet([10, 244, 1, 9], 1)), true),
        (prog_names::FROM_POD, eth(GW_MAC, POD_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 10)), true),
        (prog_names::ENCAP6, eth(MAC6_A, [0x02, 0, 0, 0, 0, 9], 0x86dd, &ipv6_udp()), true),
        (prog_names::OVERLAY_IN6, eth(MAC6_A, MAC6_B, 0x86dd, &ipv6_udp()), true),
        (prog_names::FWD, eth(GW_MAC, POD_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 10)), false),
        (prog_names::TO_POD, eth(MAC_A, MAC_B, 0x0800, &ipv4_udp([10, 244, 2, 3], [10, 244, 1, 2], 1, 2, 64, 10)), false),
    ]
}

fn stood_aside(dp: &Datapath) -> u64 {
    counter(dp, stat::STOOD_ASIDE)
}

#[test]
fn past_the_deadline_every_program_passes_packets_untouched_and_counts_them() {
    let mut a = node_a();
    // 1 ns after boot: long past.
    a.deadline(Duration::from_secs(30)).unwrap().set(1).unwrap();
    for (i, (prog, frame, _)) in cases().into_iter().enumerate() {
        let (rc, out, mark) = run_tc_mark(&mut a, prog, &frame, 0);
        assert_eq!((rc, &out, mark), (TC_ACT_OK, &frame, 0), "{prog}: to the kernel untouched, no mark");
        assert_eq!(stood_aside(&a), i as u64 + 1, "{prog}: counted as stood aside");
    }
    // Also a marked packet on the overlay's ingress: accepted, mark left.
    let f = eth(MAC_A, MAC_B, 0x0800, &pod_packet([10, 244, 1, 9], 1));
    assert_eq!(run_tc_mark(&mut a, prog_names::OVERLAY_IN, &f, OVERLAY_MARK).0, TC_ACT_OK);
    let others: u64 = (0..stat::COUNT).filter(|i| *i != stat::STOOD_ASIDE).map(|i| counter(&a, i)).sum();
    assert_eq!(others, 0, "nothing else counted: {:?}", a.stats().unwrap());
}

#[test]
fn before_the_deadline_or_without_one_every_program_does_its_work() {
    let mut a = node_a();
    let mut deadline = a.deadline(Duration::from_secs(30)).unwrap();
    for (what, set) in [("a deadline ahead", Some(())), ("no deadline (0)", None)] {
        match set {
            Some(()) => deadline.refresh().unwrap(),
            None => deadline.set(0).unwrap(),
        }
        for (prog, frame, acts) in cases() {
            let (rc, out, mark) = run_tc_mark(&mut a, prog, &frame, 0);
            if acts {
                assert_ne!((rc, &out, mark), (TC_ACT_OK, &frame, 0), "{what}: {prog} must act on the packet");
            }
            assert_eq!(stood_aside(&a), 0, "{what}: {prog} must not stand aside");
        }
    }
    assert_eq!(
        (counter(&a, stat::ENCAP), counter(&a, stat::DECAP_KERNEL)),
        (6, 2),
        "encap, from_pod and encap6 (each counted as encap) and decap did their work twice"
    );
}
