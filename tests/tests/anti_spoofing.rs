//! Anti-spoofing on the wire (flannel has none): VXLAN that a plain kernel
//! vxlan device would accept and deliver is dropped and counted when it
//! comes from an address that holds no lease, or from a lease holder but
//! with an inner source outside that holder's subnet. The pod never sees it;
//! genuine traffic keeps flowing. VXLAN that reaches the overlay device's
//! kernel socket without passing `weft_decap` (a local pod sending to the
//! node's own address) is dropped and counted too.
use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{
    bpf,
    netns::Netns,
    subnet_env::Ipv4Subnet,
    traffic::{in_ns, inet_csum, join, spawn_in_ns},
    Cluster, Wiring,
};

/// VXLAN payload (VNI 1) carrying Ethernet + IPv4/UDP from `src` to `dst:9999`.
fn vxlan_payload(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, tag: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    p.extend(dst_mac);
    p.extend([0x02, 0x66, 0, 0, 0, 6, 0x08, 0x00]);
    let tot = (20 + 8 + tag.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(tot.to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    let c = inet_csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(ip);
    p.extend(4444u16.to_be_bytes());
    p.extend(9999u16.to_be_bytes());
    p.extend((8 + tag.len() as u16).to_be_bytes());
    p.extend([0, 0]);
    p.extend(tag);
    p
}

/// Node `n`'s VtepMAC: weft.1's MAC.
fn vtep_mac(c: &Cluster, n: weft_tests::NodeRef) -> Result<[u8; 6]> {
    let mac = c.weft_node(n)?.ns.ip(&["-j", "link", "show", "weft.1"])?;
    let mac: serde_json::Value = serde_json::from_str(&mac)?;
    let vtep: Vec<u8> = mac[0]["address"].as_str().context("weft.1 MAC")?.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>()?;
    vtep.try_into().map_err(|_| anyhow::anyhow!("odd MAC"))
}

/// A listener on `ip`:9999 in `ns` that reports what arrives within 1.5 s
/// of its last datagram.
fn listen(ns: &Netns, ip: Ipv4Addr) -> std::thread::JoinHandle<Result<Vec<Vec<u8>>>> {
    let h = spawn_in_ns(ns, move || -> Result<Vec<Vec<u8>>> {
        let s = UdpSocket::bind((ip, 9999))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut got = vec![];
        let mut buf = [0u8; 256];
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        Ok(got)
    });
    std::thread::sleep(Duration::from_millis(200));
    h
}

#[test]
fn spoofed_vxlan_is_dropped_and_counted() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let pod_ip = c.pods[p1].ip();
    let (node1, node2_subnet) = (c.node_ip(1)?, c.node_env(2)?.v4().addr);
    let vtep = vtep_mac(&c, 1)?;
    let listener = listen(&c.pods[p1].ns, pod_ip);
    let stats = c.weft_node(1)?.stats_pin();
    let (unknown0, spoofed0) = (bpf::stat_packets(&stats, stat::DROP_UNKNOWN_VTEP)?, bpf::stat_packets(&stats, stat::DROP_SPOOFED)?);
    let send = |ns: &Netns, payload: Vec<u8>| {
        in_ns(ns, move || -> Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(&payload, (node1, 8472))?;
            Ok(())
        })
    };
    // The switch (192.168.77.254) holds no lease.
    send(
        &c.sw,
        vxlan_payload(vtep, Ipv4Addr::new(node2_subnet.octets()[0], node2_subnet.octets()[1], node2_subnet.octets()[2], 5), pod_ip, b"from-a-stranger"),
    )?;
    // Node 2 holds a lease, but claims a source outside its subnet.
    send(c.node_ns(2)?, vxlan_payload(vtep, Ipv4Addr::new(10, 99, 0, 1), pod_ip, b"spoofed-source"))?;
    // Node 2 with a source inside its subnet: genuine.
    send(
        c.node_ns(2)?,
        vxlan_payload(vtep, Ipv4Addr::new(node2_subnet.octets()[0], node2_subnet.octets()[1], node2_subnet.octets()[2], 5), pod_ip, b"genuine"),
    )?;
    let got = join(listener)?;
    let got: Vec<String> = got.iter().map(|g| String::from_utf8_lossy(g).into_owned()).collect();
    ensure!(got == ["genuine"], "the pod received {got:?}; only the genuine datagram may arrive");
    ensure!(bpf::stat_packets(&stats, stat::DROP_UNKNOWN_VTEP)? == unknown0 + 1, "the stranger's VXLAN was not counted as drop_unknown_vtep");
    ensure!(bpf::stat_packets(&stats, stat::DROP_SPOOFED)? == spoofed0 + 1, "the spoofed source was not counted as drop_spoofed");
    c.pass();
    Ok(())
}

/// The overlay device is a kernel vxlan device whose socket listens on
/// 8472 on every local address; `weft_decap` sees only what arrives on the
/// underlay. A pod sending VXLAN to its node's bridge address reaches that
/// socket directly: `weft_overlay_in` drops what decapsulates there
/// without `weft_decap`'s mark, and counts it.
#[test]
fn vxlan_past_weft_decap_is_dropped_and_counted() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let (p1, p2) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(1, Wiring::Bridge)?);
    let (pod_ip, gw) = (c.pods[p1].ip(), c.node_env(1)?.v4().addr);
    let gw = Ipv4Addr::from(u32::from(gw) + 1);
    let node2_pod = Ipv4Addr::from(u32::from(c.node_env(2)?.v4().addr) + 5);
    let vtep = vtep_mac(&c, 1)?;
    let stats = c.weft_node(1)?.stats_pin();
    let unvalidated0 = bpf::stat_packets(&stats, stat::DROP_UNVALIDATED)?;
    let listener = listen(&c.pods[p1].ns, pod_ip);
    // Pod 2 claims, inside VXLAN to its gateway, to be node 2's pod.
    in_ns(&c.pods[p2].ns, move || -> Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..3 {
            s.send_to(&vxlan_payload(vtep, node2_pod, pod_ip, b"past-weft-decap"), (gw, 8472))?;
        }
        Ok(())
    })?;
    let got = join(listener)?;
    ensure!(got.is_empty(), "pod 1 received {} datagrams injected through node 1's vxlan socket", got.len());
    let dropped = bpf::stat_packets(&stats, stat::DROP_UNVALIDATED)? - unvalidated0;
    ensure!(dropped == 3, "weft_overlay_in counted {dropped} drop_unvalidated, want 3");
    // Genuine traffic through the same socket (an unregistered pod: left
    // to the kernel's decapsulation) still arrives.
    let p3 = c.add_pod(2, Wiring::Bridge)?;
    weft_tests::traffic::ping_ok(&c.pods[p3].ns, pod_ip, 3).context("node 2's pod -> pod 1")?;
    ensure!(bpf::stat_packets(&stats, stat::DECAP_KERNEL)? >= 3, "node 1 left no VXLAN to its kernel socket");
    c.pass();
    Ok(())
}
