//! The udp backend end to end: weftd's TUN set up as flannel sets up
//! flannel0, pods talking both ways between weft nodes and with a node
//! running the reference one-packet-per-syscall peer (flannel's udp wire
//! format), the bare inner packet on the wire at port 8285, ICMP net
//! unreachable for addresses no lease covers, flannel's TTL rule on both
//! sides, the offloads really taking part, and hostile datagrams dropped and
//! counted while traffic goes on.
use std::net::Ipv4Addr;

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{
    metrics::{udp_packets, ARGS},
    netns::Netns,
    subnet_env::Ipv4Subnet,
    traffic::{self, inet_csum},
    Cluster, NodeRef, Wiring,
};

const UDP: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#;

/// weft0 is a TUN with MTU 1500 - 28, the subnet's network address /32 and
/// one route for the whole network; subnet.env and the lease are flannel's udp ones.
fn check_node_shape(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    let env = w.subnet_env()?;
    let link = w.ns.ip(&["-d", "link", "show", "weft0"]).context("weft0 must exist")?;
    ensure!(link.contains("mtu 1472") && link.contains("tun"), "node {n}: weft0 is not a TUN with MTU 1472:\n{link}");
    let addr = w.ns.ip(&["-4", "addr", "show", "dev", "weft0"])?;
    ensure!(addr.contains(&format!("inet {}/32", env.v4().addr)), "node {n}: weft0 should carry {}/32:\n{addr}", env.v4().addr);
    let routes = w.ns.ip(&["-4", "route", "show", "dev", "weft0"])?;
    ensure!(routes.lines().any(|l| l.starts_with("10.244.0.0/16")), "node {n}: no route for the network on weft0:\n{routes}");
    ensure!(env.mtu == 1472, "node {n}: FLANNEL_MTU={}, want 1472", env.mtu);
    let lease = c.lease(n)?.with_context(|| format!("node {n} has no lease"))?;
    let j: serde_json::Value = serde_json::from_str(&lease)?;
    ensure!(j.get("BackendType").is_none() && j.get("BackendData").is_none(), "node {n}: flannel's udp lease has no BackendType/Data: {lease}");
    Ok(())
}

/// `ping -t ttl` from `from`: whether all replies came.
fn ping_ttl(from: &Netns, to: Ipv4Addr, ttl: u8) -> Result<bool> {
    let out = from.exec_output("timeout", &["5", "ping", "-n", "-c", "2", "-W", "1", "-i", "0.2", "-t", &ttl.to_string(), &to.to_string()])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("2 received"))
}

#[test]
fn udp_backend_end_to_end_and_with_flannels_format() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(UDP).weft_nodes(2).weftd_args(&ARGS).build()?;
    let f = c.add_flannel_udp_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    for n in [1, 2] {
        check_node_shape(&c, n)?;
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::VethRoute)?;
    let p3 = c.add_pod(f, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2, p3], 3)?;
    traffic::ping_ok(c.node_ns(1)?, c.pods[p2].ip(), 3).context("host-originated: node 1 -> pod on node 2")?;
    // Full-size packets: the pod MTU 1472 fits one datagram in the underlay's 1500.
    let st = traffic::ping_sized(&c.pods[p1].ns, c.pods[p3].ip(), 2, Some(1444))?;
    ensure!(st.all_received(), "1472-byte DF ping weft pod -> flannel udp pod:\n{}", st.output);

    // TCP both ways, weft <-> weft and weft <-> the reference peer, intact.
    let (n1, n2) = (Netns::borrowed(c.node_ns(1)?.name()), Netns::borrowed(c.node_ns(2)?.name()));
    let (tso0, gro0) = (udp_packets(&n1, "tso_reads")?, udp_packets(&n2, "gro_writes")?);
    for (a, b, what) in [(p1, p2, "weft -> weft"), (p2, p1, "weft -> weft, back"), (p1, p3, "weft -> flannel udp"), (p3, p2, "flannel udp -> weft")] {
        let t = traffic::tcp_transfer(&c.pods[a].ns, &c.pods[b].ns, c.pods[b].ip(), 8 << 20).with_context(|| format!("tcp {what}"))?;
        eprintln!("udp tcp {what}: {} bytes in {:?} ({:.0} Mbit/s)", t.bytes, t.elapsed, t.mbit_per_s());
    }
    // The offloads carried it: the TUN handed node 1 TSO packets, and node 2
    // wrote merged TSO packets into its TUN.
    let (tso, gro) = (udp_packets(&n1, "tso_reads")? - tso0, udp_packets(&n2, "gro_writes")? - gro0);
    ensure!(tso > 0 && gro > 0, "offloads unused: node 1 read {tso} TSO packets, node 2 wrote {gro} merged ones");

    // On the wire: UDP 8285 -> 8285 whose payload is the bare inner IPv4
    // packet (first byte 0x45, length = the 84-byte ICMP echo).
    let cap = traffic::Capture::start(&c.sw, "vn1", "udp port 8285 and udp[8] = 0x45", 100, 10)?;
    traffic::ping_ok(&c.pods[p1].ns, c.pods[p3].ip(), 3).context("ping during the capture")?;
    let lines = cap.finish();
    let (me, them) = (c.node_ip(1)?, c.node_ip(f)?);
    let out = lines.iter().filter(|l| l.contains(&format!("{me}.8285 > {them}.8285: UDP, length 84"))).count();
    let back = lines.iter().filter(|l| l.contains(&format!("{them}.8285 > {me}.8285: UDP, length 84"))).count();
    ensure!(out >= 3 && back >= 3, "want >= 3 bare 84-byte IPv4 payloads each way on port 8285, captured:\n{}", lines.join("\n"));

    // No lease for the destination: ICMP net unreachable from weft0.
    let before = udp_packets(&n1, "icmp_sent")?;
    let out = c.pods[p1].ns.exec_output("timeout", &["5", "ping", "-n", "-c", "2", "-W", "1", "-i", "0.2", "10.244.250.9"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("Destination Net Unreachable"), "ping to a subnet without a lease should be answered net unreachable:\n{text}");
    ensure!(udp_packets(&n1, "icmp_sent")? >= before + 2, "icmp_sent did not count the answers");

    // flannel's TTL rule: pod -> pod costs 4 (node 1 forwards, weft sends,
    // weft receives, node 2 forwards). TTL 5 arrives; 3 dies at node 2's
    // receive, 2 at node 1's send, each counted where it dies.
    ensure!(ping_ttl(&c.pods[p1].ns, c.pods[p2].ip(), 5)?, "TTL 5 must arrive (4 hops)");
    let (t1, t2) = (udp_packets(&n1, "drop_ttl")?, udp_packets(&n2, "drop_ttl")?);
    ensure!(!ping_ttl(&c.pods[p1].ns, c.pods[p2].ip(), 3)?, "TTL 3 must not arrive");
    ensure!(udp_packets(&n2, "drop_ttl")? >= t2 + 2, "node 2 did not count TTL drops on receive");
    ensure!(!ping_ttl(&c.pods[p1].ns, c.pods[p2].ip(), 2)?, "TTL 2 must not arrive");
    ensure!(udp_packets(&n1, "drop_ttl")? >= t1 + 2, "node 1 did not count TTL drops on send");
    c.pass();
    Ok(())
}

/// A datagram builder for the hostile cases, run by python3 inside a namespace:
/// each case is sent `count` times to `dst`:8285 (from an ephemeral port:
/// weft judges senders by address).
fn send_datagrams(ns: &Netns, dst: Ipv4Addr, cases: &[(&str, String)], count: u32) -> Result<()> {
    let list: Vec<String> = cases.iter().map(|(_, hex)| format!("bytes.fromhex('{hex}')")).collect();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP,10,0)\n\
         for p in [{}]:\n    for _ in range({count}):\n        s.sendto(p,('{dst}',8285))\n",
        list.join(",")
    );
    ns.exec("timeout", &["10", "python3", "-c", &script]).map(|_| ())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An ICMP echo request `src -> dst` with `ttl`, `extra` payload bytes, valid checksums.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, extra: usize) -> Vec<u8> {
    let len = 28 + extra;
    let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 1, 0, 0, ttl, 1, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
    p.resize(len, 0xab);
    let c = inet_csum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let c = inet_csum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `a` lies in the /24 that starts at `net` (the nodes' subnets here).
fn same_24(a: Ipv4Addr, net: Ipv4Addr) -> bool {
    u32::from(a) >> 8 == u32::from(net) >> 8
}

#[test]
fn udp_hostile_datagrams_are_dropped_and_counted() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(UDP).embedded_store().weft_nodes(2).weftd_args(&ARGS).build()?;
    c.wait_converged()?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2], 2)?;
    let n1 = Netns::borrowed(c.node_ns(1)?.name());
    let (node1, node2_sub) = (c.node_ip(1)?, c.node_env(2)?.v4().addr);
    let from2 = Ipv4Addr::from(u32::from(node2_sub) + 5);
    let pod1 = c.pods[p1].ip();
    // A source inside the network but outside node 2's subnet (and node 1's):
    // subnets are chosen at random, so a fixed address could be node 2's own.
    let node1_sub = c.node_env(1)?.v4().addr;
    let foreign = (1..=254u8)
        .map(|x| Ipv4Addr::new(10, 244, x, 1))
        .find(|a| !same_24(*a, node2_sub) && !same_24(*a, node1_sub))
        .context("no foreign /24 in 10.244.0.0/16")?;
    let good = echo(from2, pod1, 64, 8);
    let mut bad_len = good.clone();
    bad_len[3] += 4; // total length says 4 more than the datagram holds
    let mut v6 = vec![0x60u8; 48];
    v6[4..6].copy_from_slice(&8u16.to_be_bytes());
    let cases: Vec<(&str, &str, String)> = vec![
        ("drop_malformed", "truncated", hex(&good[..2])),
        ("drop_malformed", "truncated", hex(&good[..19])),
        ("drop_malformed", "IPv6", hex(&v6)),
        ("drop_malformed", "bad length", hex(&bad_len)),
        ("drop_malformed", "empty", String::new()),
        ("drop_too_big", "3000 bytes", hex(&echo(from2, pod1, 64, 2972))),
        ("drop_spoofed", "foreign source", hex(&echo(foreign, pod1, 64, 8))),
        ("drop_ttl", "TTL 1", hex(&echo(from2, pod1, 1, 8))),
        ("drop_ttl", "TTL 0", hex(&echo(from2, pod1, 0, 8))),
    ];
    let kinds = ["drop_malformed", "drop_too_big", "drop_spoofed", "drop_ttl", "drop_unknown_peer"];
    let before: Vec<u64> = kinds.iter().map(|k| udp_packets(&n1, k)).collect::<Result<_>>()?;
    const COUNT: u32 = 50;
    let list: Vec<(&str, String)> = cases.iter().map(|(_, what, h)| (*what, h.clone())).collect();
    // From node 2, a lease holder: each is judged by what it carries.
    send_datagrams(c.node_ns(2)?, node1, &list, COUNT)?;
    // From the switch (192.168.77.254), which holds no lease: even a good packet is refused.
    send_datagrams(&c.sw, node1, &[("good packet, no lease", hex(&good))], COUNT)?;
    let want = |k: &str| cases.iter().filter(|(kind, _, _)| *kind == k).count() as u64 * COUNT as u64 + if k == "drop_unknown_peer" { COUNT as u64 } else { 0 };
    let mut got = Vec::new();
    weft_tests::cmd::poll("every hostile datagram counted", std::time::Duration::from_secs(5), std::time::Duration::from_millis(200), || {
        got = kinds.iter().zip(&before).map(|(k, b)| udp_packets(&n1, k).map(|v| (*k, v - b))).collect::<Result<Vec<_>>>().map_err(|e| format!("{e:#}"))?;
        if got.iter().all(|(k, v)| *v == want(k)) {
            Ok(Some(()))
        } else {
            Err(format!("counted {got:?}"))
        }
    })
    .with_context(|| format!("want exactly {:?}", kinds.iter().map(|k| (*k, want(k))).collect::<Vec<_>>()))?;
    if !c.weft_node_mut(1)?.running() {
        bail!("weftd on node 1 died on hostile input");
    }
    // Nothing that worked is lost.
    c.ping_across_nodes(&[p1, p2], 3)?;
    traffic::tcp_transfer(&c.pods[p2].ns, &c.pods[p1].ns, pod1, 2 << 20).context("tcp after the hostile datagrams")?;
    c.pass();
    Ok(())
}

/// "0-1" or "0,2-3" (a Cpus_allowed_list) as CPU numbers.
fn cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut v = vec![];
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>()?..=b.parse::<usize>()?),
            None => v.push(part.parse::<usize>()?),
        }
    }
    Ok(v)
}

fn allowed_cpus(status_path: &str) -> Result<Vec<usize>> {
    let status = std::fs::read_to_string(status_path).with_context(|| format!("reading {status_path}"))?;
    cpu_list(status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).context("no Cpus_allowed_list")?)
}

/// `--udp-per-cpu`: worker i runs pinned on the i-th CPU weftd may use,
/// received datagrams are steered to the worker of their CPU, and pods
/// still talk both ways, with a weft node and with the reference peer.
#[test]
fn udp_per_cpu_workers_are_pinned_and_carry_traffic() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(UDP).embedded_store().weft_nodes(2).weftd_args(&[&ARGS[..], &["--udp-per-cpu"]].concat()).build()?;
    let f = c.add_flannel_udp_node()?;
    c.program_flannel_nodes()?;
    c.wait_converged()?;
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        let pid = w.pid().context("weftd is not running")?;
        let allowed = allowed_cpus(&format!("/proc/{pid}/status"))?;
        let mut workers = vec![];
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if let Some(i) = comm.trim().strip_prefix("weft-udp-") {
                let i: usize = i.parse()?;
                let pinned = allowed_cpus(&t.path().join("status").to_string_lossy())?;
                workers.push((i, pinned));
            }
        }
        ensure!(!workers.is_empty(), "node {n}: no weft-udp-N threads in weftd {pid}");
        for (i, pinned) in &workers {
            ensure!(*pinned == vec![allowed[i % allowed.len()]], "node {n}: worker {i} may run on {pinned:?}, want only CPU {}", allowed[i % allowed.len()]);
        }
        ensure!(w.log_tail(400).contains("steered by CPU: true"), "node {n}: weftd did not say it steers datagrams by CPU:\n{}", w.log_tail(30));
    }
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let p3 = c.add_pod(f, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2, p3], 3)?;
    for (a, b, what) in [(p1, p2, "weft -> weft"), (p2, p1, "weft -> weft, back"), (p3, p1, "flannel udp -> weft")] {
        traffic::tcp_transfer(&c.pods[a].ns, &c.pods[b].ns, c.pods[b].ip(), 8 << 20).with_context(|| format!("tcp {what} with --udp-per-cpu"))?;
    }
    c.pass();
    Ok(())
}
