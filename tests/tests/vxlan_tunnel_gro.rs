//! Tunnel GRO on a NIC-like underlay: the sender puts MTU-sized VXLAN
//! frames on the wire (TSO/GSO off on its eth0 and the switch), the
//! receiving eth0 has GRO on, as NIC drivers ship. The overlay device is a
//! kernel vxlan device, so its socket's gro_receive merges VXLAN segments
//! of one flow before `weft_decap` runs: the registered pod receives merged
//! packets (weft's `decap_to_pod` counter: bytes per packet well above one
//! segment's 1,450), and so does an unregistered pod, whose traffic weft
//! validates and leaves to the kernel's decapsulation (`decap_kernel`).
//! With `--overlay-kind ifb` (no socket) each segment arrives alone: the
//! test says so rather than passing on it.
//! A change of overlay kind at a restart replaces the device and keeps the
//! VtepMAC the lease announces.
use anyhow::{ensure, Context, Result};
use weft_common::stat;
use weft_tests::{traffic, Cluster, NodeRef, Wiring};

/// The NIC-like offloads `cargo xtask bench dataplanes --mode nic` uses.
fn nic_like(c: &Cluster) -> Result<()> {
    for n in c.nodes() {
        c.node_ns(n)?.exec("ethtool", &["-K", "eth0", "tso", "off", "gso", "off", "gro", "on"]).context("ethtool on a node's eth0")?;
        c.sw.exec("ethtool", &["-K", &format!("vn{n}"), "tso", "off", "gso", "off", "gro", "off"]).context("ethtool on a switch port")?;
    }
    Ok(())
}

/// Bytes per packet node `n` counted under `idx` while `f` ran.
fn per_packet(c: &Cluster, n: NodeRef, idx: u32, f: impl FnOnce() -> Result<()>) -> Result<(u64, f64)> {
    let (p0, b0) = c.stat_counter(n, idx)?;
    f()?;
    let (p1, b1) = c.stat_counter(n, idx)?;
    let packets = p1 - p0;
    Ok((packets, (b1 - b0) as f64 / packets.max(1) as f64))
}

fn link_mac(c: &Cluster, n: NodeRef) -> Result<String> {
    let j: serde_json::Value = serde_json::from_str(&c.weft_node(n)?.ns.ip(&["-d", "-j", "link", "show", "weft.1"])?)?;
    Ok(j[0]["address"].as_str().context("weft.1 has no MAC")?.to_string())
}

fn link_kind(c: &Cluster, n: NodeRef) -> Result<String> {
    let j: serde_json::Value = serde_json::from_str(&c.weft_node(n)?.ns.ip(&["-d", "-j", "link", "show", "weft.1"])?)?;
    Ok(j[0]["linkinfo"]["info_kind"].as_str().unwrap_or("").to_string())
}

/// Restarts node `n`'s weftd with `flags` and waits until weft.1 is a
/// `kind` device (subnet.env and the lease are there from the run before).
fn restart_with_overlay(c: &mut Cluster, n: NodeRef, flags: &[&str], kind: &str) -> Result<()> {
    c.weft_node_mut(n)?.stop();
    c.start_weftd_with(n, flags)?;
    c.wait_node_ready(n)?;
    weft_tests::cmd::poll(
        &format!("weft.1 on node {n} to be a {kind} device"),
        std::time::Duration::from_secs(15),
        std::time::Duration::from_millis(100),
        || match link_kind(c, n) {
            Ok(k) if k == kind => Ok(Some(())),
            Ok(k) => Err(format!("weft.1 is a {k:?}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    c.wait_converged()
}

#[test]
fn pods_receive_merged_packets_on_a_nic_like_underlay() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(2).build()?;
    c.wait_converged()?;
    nic_like(&c)?;
    let (p1, p2, p3) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p2)?;
    let (ip2, ip3) = (c.pods[p2].ip(), c.pods[p3].ip());
    weft_tests::cmd::poll("node 2 to deliver straight into pod 2", std::time::Duration::from_secs(30), std::time::Duration::from_millis(200), || {
        let (n, _) = per_packet(&c, 2, stat::DECAP_TO_POD, || traffic::ping(&c.pods[p1].ns, ip2, 1).map(|_| ())).map_err(|e| format!("{e:#}"))?;
        Ok((n > 0).then_some(()))
    })?;
    let (n, registered) = per_packet(&c, 2, stat::DECAP_TO_POD, || traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p2].ns, ip2, 16 << 20).map(|_| ()))?;
    eprintln!("registered pod: {n} packets, {registered:.0} B/packet");
    let (n, unregistered) = per_packet(&c, 2, stat::DECAP_KERNEL, || traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3].ns, ip3, 16 << 20).map(|_| ()))?;
    eprintln!("unregistered pod: {n} packets, {unregistered:.0} B/packet");
    // One segment is 1,450 B of inner frame at most; merging is visible as
    // several segments per packet on average (measured: tens of KB).
    ensure!(registered > 4000.0, "the registered pod got {registered:.0} B per packet: VXLAN was not merged by GRO before weft_decap");
    ensure!(unregistered > 4000.0, "the unregistered pod's traffic came {unregistered:.0} B per packet: VXLAN was not merged by GRO");

    // The earlier overlay kind (an ifb, no socket): no merging, and the
    // device is replaced with the VtepMAC kept, both ways.
    let mac = link_mac(&c, 2)?;
    restart_with_overlay(&mut c, 2, &["--overlay-kind", "ifb"], "ifb")?;
    ensure!(link_mac(&c, 2)? == mac, "the ifb weft.1 has MAC {}, want {mac}", link_mac(&c, 2)?);
    traffic::ping_ok(&c.pods[p1].ns, ip3, 3).context("to the unregistered pod over the ifb overlay")?;
    let (_, ifb) = per_packet(&c, 2, stat::DECAP, || traffic::tcp_transfer(&c.pods[p1].ns, &c.pods[p3].ns, ip3, 4 << 20).map(|_| ()))?;
    eprintln!("unregistered pod, ifb overlay: {ifb:.0} B/packet");
    ensure!(ifb < 2000.0, "with an ifb overlay the segments arrived {ifb:.0} B per packet: this test could not tell GRO from its absence");
    restart_with_overlay(&mut c, 2, &[], "vxlan")?;
    ensure!(link_mac(&c, 2)? == mac, "the vxlan weft.1 has MAC {}, want {mac}", link_mac(&c, 2)?);
    traffic::ping_ok(&c.pods[p1].ns, ip3, 3).context("to the unregistered pod over the vxlan overlay again")?;
    c.pass();
    Ok(())
}

/// A restart with another backend removes the vxlan overlay device, and
/// with it the kernel socket on the VXLAN port that nothing would guard.
#[test]
fn a_backend_change_removes_the_overlay_device() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(1).build()?;
    c.wait_converged()?;
    let listening =
        |c: &Cluster| -> Result<bool> { Ok(c.node_ns(1)?.exec_output("ss", &["-Huln", "sport", "= :8472"])?.stdout.iter().any(|b| !b.is_ascii_whitespace())) };
    ensure!(link_kind(&c, 1)? == "vxlan" && listening(&c)?, "no vxlan weft.1 listening on 8472 at first");
    c.weft_node_mut(1)?.stop();
    c.store.write_config(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)?;
    c.start_weftd_with(1, &[])?;
    weft_tests::cmd::poll("weft.1 to go (host-gw now)", std::time::Duration::from_secs(15), std::time::Duration::from_millis(100), || {
        match c.weft_node(1).map(|w| w.ns.ip(&["link", "show", "weft.1"])) {
            Ok(Err(_)) => Ok(Some(())),
            Ok(Ok(l)) => Err(l),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    ensure!(!listening(&c)?, "a socket still listens on 8472 after weft.1 went");
    c.pass();
    Ok(())
}
