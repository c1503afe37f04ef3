//! The host-gw fast path over IPv6 (dual stack) in a live cluster: two
//! weftd host-gw nodes with an IPv6 underlay (fd77::/64) and IPv6 pod
//! subnets (fd44:0:0:N::/64). Each node's `weft_hostgw6` holds the other's
//! IPv6 subnet via its PublicIPv6, kept with the route; IPv6 pod-to-pod
//! traffic leaves the sender through the fast path (`fwd`: `weft_from_pod`
//! for a registered pod, `weft_fwd` on the bridge for an unregistered one)
//! and enters a registered pod on the receiver straight from the underlay
//! (`routed_to_pod`), with the counters growing by the IPv6 traffic sent
//! (no IPv4 crosses while they are read); hop limits expire where the
//! kernel's forwarding would expire them; the node's own traffic and
//! unregistered pods take the host path; with `--no-fast-path` the links
//! are released, `weft_hostgw6` is emptied and the same traffic flows
//! through the routes.
use std::{net::Ipv6Addr, path::PathBuf, time::Duration};

use anyhow::{ensure, Context, Result};
use weft_common::{map_names, pins, stat};
use weft_tests::{
    bpf,
    cluster::{dual_stack_config, node_ip6},
    cmd, traffic, Cluster, NodeRef, Wiring,
};

const PINGS: u32 = 5;
const TCP_BYTES: u64 = 4 << 20;

fn hostgw6_pin(c: &Cluster, n: NodeRef) -> Result<PathBuf> {
    Ok(pins::dir(&c.weft_node(n)?.pin_dir).join(map_names::HOSTGW6))
}

/// `weft_hostgw6` of node `n`, as bpftool prints it.
fn hostgw6(c: &Cluster, n: NodeRef) -> Result<Vec<serde_json::Value>> {
    let v = bpf::map_dump(&hostgw6_pin(c, n)?)?;
    v.as_array().cloned().with_context(|| format!("node {n}: weft_hostgw6 dump is not a list: {v}"))
}

/// (fwd, routed_to_pod, fwd_stack) packets, and fwd and routed_to_pod bytes, of node `n`.
fn counts(c: &Cluster, n: NodeRef) -> Result<[u64; 5]> {
    let (f, fb) = c.stat_counter(n, stat::FWD)?;
    let (r, rb) = c.stat_counter(n, stat::ROUTED_TO_POD)?;
    Ok([f, r, c.stat_counter(n, stat::FWD_STACK)?.0, fb, rb])
}

fn ip6(c: &Cluster, p: usize) -> Result<Ipv6Addr> {
    c.pods[p].ip6.with_context(|| format!("pod {} has no IPv6 address", c.pods[p].ns.name()))
}

/// `ping -6 -t <hop>` once: true if the reply came, false on time-exceeded.
fn ping6_hop(c: &Cluster, from: usize, to: Ipv6Addr, hop: u8) -> Result<bool> {
    let out = c.pods[from].ns.exec_output("timeout", &["5", "ping", "-6", "-n", "-c", "1", "-W", "1", "-t", &hop.to_string(), &to.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains(" 1 received") {
        return Ok(true);
    }
    ensure!(text.contains("Time exceeded"), "ping -6 -t {hop} {to}: neither a reply nor time-exceeded:\n{text}");
    Ok(false)
}

#[test]
fn ipv6_pod_traffic_takes_the_host_gw_fast_path() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().dual_stack().config_json(&dual_stack_config("10.244.0.0/16", "host-gw")).weft_nodes(2).build()?;
    c.wait_converged().context("host-gw routes, IPv4 and IPv6")?;
    // The map follows the routes: the other node's IPv6 subnet via its fd77::M on eth0.
    for (n, m) in [(1, 2), (2, 1)] {
        let s6 = c.node_env(m)?.ipv6_subnet.context("no IPv6 subnet")?;
        let eth0 = c.node_ns(n)?.ip(&["-j", "link", "show", "dev", "eth0"])?;
        let eth0: serde_json::Value = serde_json::from_str(&eth0)?;
        let want_ifindex = eth0[0]["ifindex"].as_u64().context("eth0's ifindex")?;
        let want_gw: Vec<u64> = node_ip6(m).octets().iter().map(|b| *b as u64).collect();
        let (net, len) = (s6.addr.octets(), s6.prefix_len as u64);
        let want_net: Vec<u64> = net.iter().map(|b| *b as u64).collect();
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n}: weft_hostgw6 = {{{s6} -> {} on eth0}}", node_ip6(m)), Duration::from_secs(20), Duration::from_millis(200), || {
            let e = hostgw6(&c, n).map_err(|e| format!("{e:#}"))?;
            let ok = e.len() == 1 && {
                // BTF-typed: bpftool prints the fields under "formatted".
                let (k, v) = (&e[0]["formatted"]["key"], &e[0]["formatted"]["value"]);
                let nums = |v: &serde_json::Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64()).collect::<Vec<_>>());
                k["prefix_len"].as_u64() == Some(len)
                    && nums(&k["data"]) == Some(want_net.clone())
                    && nums(&v["gateway"]) == Some(want_gw.clone())
                    && v["ifindex"].as_u64() == Some(want_ifindex)
            };
            if ok {
                Ok(Some(()))
            } else {
                Err(format!("weft_hostgw6: {}\n{}", serde_json::Value::Array(e), w.log_tail(5)))
            }
        })?;
    }

    // p1, p2 registered (their veths carry weft_from_pod); p3 on node 1 and
    // p4 on node 2 are not (p3's traffic meets weft_fwd on node 1's cni0).
    let (p1, p2, p3, p4) = (c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?);
    c.register_endpoint(p1)?;
    c.register_endpoint(p2)?;
    let (ip6_1, ip6_2, ip6_4) = (ip6(&c, p1)?, ip6(&c, p2)?, ip6(&c, p4)?);
    // Each node reads the records and attaches on its own schedule: wait
    // until a ping -6 is forwarded and delivered by the fast path both ways.
    cmd::poll(
        "both nodes to forward a ping -6 and deliver it (and its reply) straight into the pods",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let get = |n| counts(&c, n).map_err(|e| format!("{e:#}"));
            let (a0, b0) = (get(1)?, get(2)?);
            traffic::ping6(&c.pods[p1].ns, ip6_2, 1).map_err(|e| format!("{e:#}"))?;
            let (a1, b1) = (get(1)?, get(2)?);
            if a1[0] > a0[0] && b1[1] > b0[1] && b1[0] > b0[0] && a1[1] > a0[1] {
                Ok(Some(()))
            } else {
                Err(format!("node 1 fwd/routed_to_pod {:?} -> {:?}, node 2 {:?} -> {:?}", &a0[..2], &a1[..2], &b0[..2], &b1[..2]))
            }
        },
    )?;
    for n in [1, 2] {
        ensure!(c.weft_node(n)?.fast_path_attached(), "node {n}: weft_fwd is not on cni0");
        ensure!(c.weft_node(n)?.link_pinned("weft_to_pod"), "node {n}: weft_to_pod is not on eth0");
    }

    // Only IPv6 crosses from here on: the counters grow by it.
    let (a0, b0) = (counts(&c, 1)?, counts(&c, 2)?);
    traffic::ping6_ok(&c.pods[p1].ns, ip6_2, PINGS).context("ping -6 registered pod 1 -> registered pod 2")?;
    let (a1, b1) = (counts(&c, 1)?, counts(&c, 2)?);
    let n = PINGS as u64;
    ensure!(a1[0] >= a0[0] + n, "node 1 forwarded {} of {n} IPv6 echo requests (fwd)", a1[0] - a0[0]);
    ensure!(b1[1] >= b0[1] + n, "node 2 delivered {} of {n} IPv6 echo requests straight into pod 2 (routed_to_pod)", b1[1] - b0[1]);
    ensure!(
        b1[0] >= b0[0] + n && a1[1] >= a0[1] + n,
        "the replies did not come back through the fast path: node 2 fwd +{}, node 1 routed_to_pod +{}",
        b1[0] - b0[0],
        a1[1] - a0[1]
    );
    let t = traffic::tcp_transfer6(&c.pods[p1].ns, &c.pods[p2].ns, ip6_2, TCP_BYTES).context("tcp -6 pod 1 -> pod 2")?;
    let (a2, b2) = (counts(&c, 1)?, counts(&c, 2)?);
    ensure!(a2[3] - a1[3] >= TCP_BYTES, "node 1's fast path forwarded {} bytes of a {TCP_BYTES}-byte IPv6 transfer", a2[3] - a1[3]);
    ensure!(b2[4] - b1[4] >= TCP_BYTES, "node 2 delivered {} bytes of a {TCP_BYTES}-byte IPv6 transfer straight into pod 2", b2[4] - b1[4]);
    eprintln!(
        "host-gw IPv6 tcp registered pod -> registered pod: {:.0} Mbit/s; fwd {} bytes on node 1, routed_to_pod {} bytes on node 2",
        t.mbit_per_s(),
        a2[3] - a1[3],
        b2[4] - b1[4]
    );

    // An unregistered pod's IPv6 meets weft_fwd on node 1's bridge.
    let (a0, b0) = (counts(&c, 1)?, counts(&c, 2)?);
    traffic::ping6_ok(&c.pods[p3].ns, ip6_2, PINGS).context("ping -6 unregistered pod 3 (node 1) -> pod 2")?;
    let (a1, b1) = (counts(&c, 1)?, counts(&c, 2)?);
    ensure!(a1[0] >= a0[0] + n, "weft_fwd on node 1's cni0 forwarded {} of {n} IPv6 echo requests of the unregistered pod", a1[0] - a0[0]);
    ensure!(b1[1] >= b0[1] + n, "node 2 delivered {} of {n} of pod 3's echo requests straight into pod 2", b1[1] - b0[1]);

    // The host path still carries what is not peer pod -> registered pod:
    // pod 1's requests for the unregistered pod 4 (its replies, a peer
    // pod's for registered pod 1, do go straight in on node 1), and the
    // nodes' own traffic.
    let (a0, b0) = (counts(&c, 1)?, counts(&c, 2)?);
    traffic::ping6_ok(&c.pods[p1].ns, ip6_4, 3).context("ping -6 pod 1 -> unregistered pod 4")?;
    let (a1, b1) = (counts(&c, 1)?, counts(&c, 2)?);
    ensure!(b1[1] == b0[1], "node 2 counted {} packets for the unregistered pod 4 as delivered straight into a pod", b1[1] - b0[1]);
    ensure!(a1[1] >= a0[1] + 3, "node 1 delivered {} of pod 4's 3 replies straight into pod 1", a1[1] - a0[1]);
    traffic::ping6_ok(c.node_ns(1)?, ip6_2, 3).context("ping -6 node 1 itself -> pod 2")?;
    traffic::ping6_ok(c.node_ns(2)?, ip6_1, 3).context("ping -6 node 2 itself -> pod 1")?;
    let (a2, b2) = (counts(&c, 1)?, counts(&c, 2)?);
    ensure!(
        b2[1] == b1[1] && a2[1] == a1[1],
        "a node's own packets counted as delivered straight into a pod: node 1 +{}, node 2 +{}",
        a2[1] - a1[1],
        b2[1] - b1[1]
    );

    // Hop limits: two routing hops, as without weft. 1 expires at node 1, 2
    // at node 2 (both answered by the stack: the fast path declined), 3 arrives.
    let s0 = counts(&c, 1)?[2];
    ensure!(!ping6_hop(&c, p1, ip6_2, 1)?, "hop limit 1 left node 1");
    ensure!(counts(&c, 1)?[2] > s0, "node 1 did not count the hop-limit-1 packet as handed to the stack (fwd_stack)");
    ensure!(!ping6_hop(&c, p1, ip6_2, 2)?, "hop limit 2 reached the pod on the other node");
    ensure!(ping6_hop(&c, p1, ip6_2, 3)?, "hop limit 3 did not reach the pod on the other node");

    // Both nodes restarted with --no-fast-path: links released, weft_hostgw6
    // emptied, the same IPv6 traffic flows through the routes.
    for n in [1, 2] {
        c.weft_node_mut(n)?.stop();
        c.start_weftd_with(n, &["--no-fast-path"])?;
    }
    for n in [1, 2] {
        let w = c.weft_node(n)?;
        cmd::poll(
            &format!("node {n}: --no-fast-path releases the links and empties weft_hostgw6"),
            Duration::from_secs(15),
            Duration::from_millis(100),
            || {
                let e = hostgw6(&c, n).map_err(|e| format!("{e:#}"))?;
                if !w.fast_path_attached() && !w.link_pinned("weft_to_pod") && !w.link_pinned("weft_from_pod") && e.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("weft_hostgw6 {} entries\n{}", e.len(), w.log_tail(5)))
                }
            },
        )?;
        c.wait_node_ready(n)?;
    }
    c.wait_converged().context("routes after the restart")?;
    let (a0, b0) = (counts(&c, 1)?, counts(&c, 2)?);
    traffic::ping6_ok(&c.pods[p1].ns, ip6_2, PINGS).context("ping -6 pod 1 -> pod 2 with --no-fast-path")?;
    traffic::ping6_ok(&c.pods[p3].ns, ip6_2, 2).context("ping -6 pod 3 -> pod 2 with --no-fast-path")?;
    traffic::tcp_transfer6(&c.pods[p2].ns, &c.pods[p1].ns, ip6_1, 1 << 20).context("tcp -6 pod 2 -> pod 1 with --no-fast-path")?;
    let (a1, b1) = (counts(&c, 1)?, counts(&c, 2)?);
    ensure!(a1[..3] == a0[..3] && b1[..3] == b0[..3], "fast-path counters moved with --no-fast-path: node 1 {a0:?} -> {a1:?}, node 2 {b0:?} -> {b1:?}");
    ensure!(ping6_hop(&c, p1, ip6_2, 3)?, "hop limit 3 through the routes");
    c.pass();
    Ok(())
}
