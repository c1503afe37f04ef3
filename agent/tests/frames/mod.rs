//! Frames, nodes and runners shared by the BPF_PROG_TEST_RUN test files.
#![allow(dead_code)]
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use weft_agent::{dataplane::Datapath, subnet::Ipv4Net};
use weft_common::{DatapathConfig, VtepEntry, VXLAN_PORT};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const MAC_A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
pub const NODE_A: [u8; 4] = [192, 168, 77, 1];
pub const NODE_B: [u8; 4] = [192, 168, 77, 2];
pub const OVERLAY_IFINDEX: u32 = 1;

pub fn csum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet (no Ethernet) with a valid header checksum.
pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8, payload: usize) -> Vec<u8> {
    let tot = 20 + 8 + payload;
    let mut p = vec![0x45, 0x00];
    p.extend((tot as u16).to_be_bytes());
    p.extend([0x12, 0x34, 0x40, 0x00, ttl, 17, 0, 0]);
    p.extend(src);
    p.extend(dst);
    let c = csum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend(((8 + payload) as u16).to_be_bytes());
    p.extend([0, 0]);
    p.extend((0..payload).map(|i| (i * 7) as u8));
    p
}

pub fn eth(dst: [u8; 6], src: [u8; 6], proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend(src);
    f.extend(proto.to_be_bytes());
    f.extend(payload);
    f
}

pub fn pod_packet(dst_pod: [u8; 4], sport: u16) -> Vec<u8> {
    ipv4_udp([10, 244, 1, 2], dst_pod, sport, 5201, 63, 200)
}

/// A datapath as node A sees it: peer B owns 10.244.2.0/24. Its overlay
/// device is an ifb (weft decapsulates everything itself).
pub fn node(local: [u8; 4], mac: [u8; 6], mtu: u32) -> Datapath {
    node_with_flags(local, mac, mtu, 0)
}

/// [`node`] with a kernel vxlan overlay device (weft's default).
pub fn node_kernel_vxlan(local: [u8; 4], mac: [u8; 6], mtu: u32) -> Datapath {
    node_with_flags(local, mac, mtu, weft_common::cfg_flags::KERNEL_VXLAN)
}

fn node_with_flags(local: [u8; 4], mac: [u8; 6], mtu: u32, flags: u32) -> Datapath {
    let mut dp = Datapath::load(None).expect("load the eBPF object (are we root?)");
    dp.set_config(&DatapathConfig {
        vni: 1,
        local_ip: local,
        underlay_ifindex: 1,
        overlay_ifindex: OVERLAY_IFINDEX,
        vtep_mac: mac,
        port: VXLAN_PORT,
        flags,
        underlay_mtu: mtu,
    })
    .unwrap();
    dp.set_vtep(&"10.244.2.0/24".parse::<Ipv4Net>().unwrap(), &VtepEntry { ip: NODE_B, mac: MAC_B, _pad: [0; 2] }).unwrap();
    // Both nodes hold leases: A owns 10.244.1.0/24 (decap on B checks senders).
    dp.set_vtep(&"10.244.1.0/24".parse::<Ipv4Net>().unwrap(), &VtepEntry { ip: NODE_A, mac: MAC_A, _pad: [0; 2] }).unwrap();
    dp.add_vtep_ip(NODE_A.into()).unwrap();
    dp.add_vtep_ip(NODE_B.into()).unwrap();
    dp
}

pub fn run_tc(dp: &mut Datapath, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let p: &mut SchedClassifier = dp.program_mut(prog).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let r = p
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() })
        .unwrap_or_else(|e| panic!("test_run of {prog} on {} bytes {:02x?}: {e:?}", frame.len(), &frame[..frame.len().min(40)]));
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// [`run_tc`] with the skb's mark set to `mark` going in: (return code,
/// frame out, mark out). The mark is the third u32 of `struct __sk_buff`.
pub fn run_tc_mark(dp: &mut Datapath, prog: &str, frame: &[u8], mark: u32) -> (u32, Vec<u8>, u32) {
    let p: &mut SchedClassifier = dp.program_mut(prog).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx_in = [0u8; 12];
    ctx_in[8..12].copy_from_slice(&mark.to_ne_bytes());
    // At least the kernel's whole struct __sk_buff (192 bytes on 6.x), or
    // the test run fails with ENOSPC.
    let mut ctx_out = [0u8; 256];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("test_run of {prog} with mark {mark:#x}: {e:?}"));
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap()))
}

pub fn counter(dp: &Datapath, idx: u32) -> u64 {
    dp.stats().unwrap()[idx as usize].packets
}

/// A VXLAN frame to node B as flannel's kernel vxlan would send it.
pub fn vxlan_frame(dst: [u8; 4], dport: u16, vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    let inner_eth = eth(MAC_B, MAC_A, 0x0800, inner);
    let mut vx = vec![flags, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    vx.extend(&inner_eth);
    let mut udp = 33333u16.to_be_bytes().to_vec();
    udp.extend(dport.to_be_bytes());
    udp.extend(((8 + vx.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(&vx);
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + udp.len()) as u16).to_be_bytes());
    ip.extend([0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend(NODE_A);
    ip.extend(dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend(&udp);
    eth([0x02, 0xee, 0, 0, 0, 2], [0x02, 0xee, 0, 0, 0, 1], 0x0800, &ip)
}
