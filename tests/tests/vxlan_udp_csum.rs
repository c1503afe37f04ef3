//! `--vxlan-udp-csum`: weft fills in the outer UDP checksum, and a kernel
//! vxlan receiver (flannel's), which verifies non-zero checksums before
//! decapsulating, accepts the packets: tcpdump on its underlay reports
//! "udp sum ok" and its UdpInCsumErrors counter stays 0.
use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use weft_tests::{traffic, Cluster, Wiring};

fn udp_csum_errors(c: &Cluster, n: u32) -> Result<u64> {
    let out = c.node_ns(n)?.exec("nstat", &["-az", "UdpInCsumErrors"])?;
    Ok(out.lines().find_map(|l| l.strip_prefix("UdpInCsumErrors")?.split_whitespace().next()?.parse().ok()).unwrap_or(0))
}

#[test]
fn vxlan_udp_csum() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(1).weftd_args(&["--vxlan-udp-csum"]).build()?;
    let f = c.add_flannel_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    let pw = c.add_pod(1, Wiring::Bridge)?;
    let pf = c.add_pod(f, Wiring::Bridge)?;
    let weft_ip = c.node_ip(1)?.to_string();
    let filter = format!("udp dst port 8472 and src host {weft_ip}");
    let dump = c
        .node_ns(f)?
        .command("timeout", &["10", "tcpdump", "-c", "3", "-nn", "-vv", "-i", "eth0", &filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tcpdump on the flannel node")?;
    std::thread::sleep(std::time::Duration::from_millis(800));
    traffic::ping_ok(&c.pods[pw].ns, c.pods[pf].ip(), 5).context("weft pod -> flannel pod with outer UDP checksums")?;
    let out = dump.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.matches("udp sum ok").count() >= 3, "kernel vxlan side did not see good outer UDP checksums:\n{text}");
    ensure!(udp_csum_errors(&c, f)? == 0, "flannel node counted UDP checksum errors");
    let t = traffic::tcp_transfer(&c.pods[pw].ns, &c.pods[pf].ns, c.pods[pf].ip(), 2 << 20).context("tcp weft -> flannel with outer UDP checksums")?;
    eprintln!("tcp weft->flannel with udp csum: {} bytes ({:.0} Mbit/s)", t.bytes, t.mbit_per_s());
    ensure!(udp_csum_errors(&c, f)? == 0, "flannel node counted UDP checksum errors after TCP");
    c.pass();
    Ok(())
}
