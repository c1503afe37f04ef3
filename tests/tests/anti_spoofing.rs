//! Anti-spoofing on the wire (flannel has none): VXLAN that a plain kernel
//! vxlan device would accept and deliver is dropped and counted when it
//! comes from an address that holds no lease, or from a lease holder but
//! with an inner source outside that holder's subnet. The pod never sees it;
//! genuine traffic keeps flowing.
use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{
    bpf,
    netns::Netns,
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

#[test]
fn spoofed_vxlan_is_dropped_and_counted() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let pod_ip = c.pods[p1].ip;
    let (node1, node2_subnet) = (c.node_ip(1)?, c.node_env(2)?.subnet);
    let mac = c.weft_node(1)?.ns.ip(&["-j", "link", "show", "weft.1"])?;
    let mac: serde_json::Value = serde_json::from_str(&mac)?;
    let vtep: Vec<u8> = mac[0]["address"].as_str().context("weft.1 MAC")?.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>()?;
    let vtep: [u8; 6] = vtep.try_into().map_err(|_| anyhow::anyhow!("odd MAC"))?;
    // The pod listens on UDP 9999 and reports what arrives.
    let listener = spawn_in_ns(&c.pods[p1].ns, move || -> Result<Vec<Vec<u8>>> {
        let s = UdpSocket::bind((pod_ip, 9999))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut got = vec![];
        let mut buf = [0u8; 256];
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        Ok(got)
    });
    std::thread::sleep(Duration::from_millis(200));
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
