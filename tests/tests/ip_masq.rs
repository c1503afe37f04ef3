//! Pod egress with `--ip-masq` (flannel's masquerade and forward rules in
//! weft's nftables table `inet weft`), against an outside host beyond a
//! router that routes back only to the underlay (`weft_tests::outside`):
//! a pod reaches it only because its traffic leaves with the node's address
//! (captured at the outside host), with the fast path on and off, while pod
//! to pod keeps pod addresses on vxlan, host-gw and udp; the rules equal
//! flannel's list; rules removed by someone else come back within a second
//! (netfilter notifications), a kill -9 restart leaves them (an established
//! TCP connection to the outside survives), 100 restarts leave one copy,
//! `--cleanup-on-exit` removes them; without nft weftd says so and pods
//! still talk; an iptables `FORWARD` chain with policy drop does not stop
//! pod traffic.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_tests::{
    cmd, metrics,
    netns::Netns,
    outside::{self, Outside},
    subnet_env::Ipv4Subnet,
    traffic, Cluster, NodeRef, Wiring,
};

const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;
const UDP: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#;

fn nft_table(ns: &Netns) -> Result<Option<Value>> {
    let o = ns.exec_output("nft", &["-j", "list", "table", "inet", "weft"])?;
    if !o.status.success() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&o.stdout)?))
}

/// An nft JSON prefix or address as `a/len`.
fn prefix(v: &Value) -> String {
    match v.get("prefix") {
        Some(p) => format!("{}/{}", p["addr"].as_str().unwrap_or("?"), p["len"]),
        None => v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
    }
}

/// The listed rules of one chain of `inet weft`, written as flannel writes
/// its iptables rules (the test's own translation of nft's JSON).
fn as_iptables(table: &Value, chain: &str) -> Vec<String> {
    let mut out = vec![];
    for o in table["nftables"].as_array().into_iter().flatten() {
        let Some(r) = o.get("rule") else { continue };
        if r["chain"] != chain {
            continue;
        }
        let mut parts = vec![];
        for s in r["expr"].as_array().into_iter().flatten() {
            if let Some(m) = s.get("match") {
                let neg = if m["op"] == "!=" { "! " } else { "" };
                if let Some(and) = m["left"].get("&") {
                    parts.push(format!("-m mark --mark {:#x}/{:#x}", m["right"].as_u64().unwrap_or(0), and[1].as_u64().unwrap_or(0)));
                } else if m["left"]["payload"]["field"] == "saddr" {
                    parts.push(format!("{neg}-s {}", prefix(&m["right"])));
                } else if m["left"]["payload"]["field"] == "daddr" {
                    parts.push(format!("{neg}-d {}", prefix(&m["right"])));
                } else {
                    parts.push(format!("?{m}"));
                }
            } else if s.get("return").is_some() {
                parts.push("-j RETURN".into());
            } else if s.get("accept").is_some() {
                parts.push("-j ACCEPT".into());
            } else if let Some(m) = s.get("masquerade") {
                let fully = m["flags"] == "fully-random" || m["flags"].as_array().is_some_and(|a| a.iter().any(|f| f == "fully-random"));
                parts.push(if fully { "-j MASQUERADE --random-fully".into() } else { "-j MASQUERADE".into() });
            } else {
                parts.push(format!("?{s}"));
            }
        }
        out.push(parts.join(" "));
    }
    out
}

/// flannel-compat.md's "Masquerade" list for a node holding `subnet`.
fn flannel_postrouting(subnet: &str) -> Vec<String> {
    let net = "10.244.0.0/16";
    vec![
        "-m mark --mark 0x4000/0x4000 -j RETURN".into(),
        format!("-s {subnet} -d {net} -j RETURN"),
        format!("-s {net} -d {subnet} -j RETURN"),
        format!("! -s {net} -d {subnet} -j RETURN"),
        format!("-s {net} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully"),
        format!("! -s {net} -d {net} -j MASQUERADE --random-fully"),
    ]
}

fn flannel_forward() -> Vec<String> {
    vec!["-s 10.244.0.0/16 -j ACCEPT".into(), "-d 10.244.0.0/16 -j ACCEPT".into()]
}

/// `weftd status` on node `n` with its flags and `extra` (e.g. `--ip-masq`),
/// optionally with another PATH: the "egress rules:" line.
fn status_egress(c: &Cluster, n: NodeRef, extra: &[&str], path: Option<&str>) -> Result<String> {
    let w = c.weft_node(n)?;
    let mut cmd = w.ns.nsenter(&cmd::weftd_bin()?);
    cmd.arg("status").args(c.store.weftd_args()).arg("--subnet-file").arg(&w.subnet_file).arg("--bpf-pin-dir").arg(&w.pin_dir).args(extra);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd::run(&mut cmd)?;
    out.lines().find(|l| l.starts_with("egress rules:")).map(str::to_string).with_context(|| format!("no egress line in:\n{out}"))
}

fn counter(ns: &Netns, name: &str) -> Result<u64> {
    Ok(metrics::sample(&metrics::scrape(ns)?, name) as u64)
}

/// Waits until node `n`'s weftd serves /metrics and its egress rules are in place.
fn wait_egress_ok(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    cmd::poll(&format!("node {n}: egress rules in place"), Duration::from_secs(20), Duration::from_millis(50), || {
        let m = metrics::scrape(&w.ns).map_err(|e| format!("{e:#}"))?;
        if metrics::sample(&m, "weft_egress_rules_ok") == 1.0 {
            Ok(Some(()))
        } else {
            Err(format!("weft_egress_rules_ok {}; log:\n{}", metrics::sample(&m, "weft_egress_rules_ok"), w.log_tail(5)))
        }
    })
}

/// The source address pod `b` sees for a TCP connection from pod `a`: `a`'s own.
fn pod_to_pod_keeps_address(c: &Cluster, a: usize, b: usize, port: u16) -> Result<()> {
    let (_, peer) = traffic::tcp_exchange(&c.pods[a].ns, &c.pods[b].ns, port, SocketAddr::from((c.pods[b].ip(), port)))?;
    ensure!(peer.ip() == std::net::IpAddr::V4(c.pods[a].ip()), "pod {} -> pod {}: the server saw {peer}, not the pod's address {}", a, b, c.pods[a].ip());
    Ok(())
}

/// Two nodes on `config`: node 1 with `--ip-masq`, node 2 without; pods on
/// both; the outside host. `fast_path`: run node 1 also with the fast path
/// off (after a restart) and check again.
fn egress_on(config: &str, fast_path_variants: bool) -> Result<()> {
    weft_tests::require_root()?;
    let t0 = Instant::now();
    let mut c = Cluster::builder().config_json(config).weft_nodes(2).weftd_args(&metrics::ARGS).no_start().build()?;
    c.start_weftd_with(1, &["--ip-masq"])?;
    c.start_weftd(2)?;
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    ensure!(c.weft_node(1)?.subnet_env()?.ipmasq == Some(true), "node 1 (--ip-masq): subnet.env should say FLANNEL_IPMASQ=true");
    ensure!(c.weft_node(2)?.subnet_env()?.ipmasq == Some(false), "node 2: subnet.env should say FLANNEL_IPMASQ=false");
    let out = Outside::attach(&c)?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    if c.backend_type() != "udp" {
        c.register_endpoint(p1)?;
        c.register_endpoint(p2)?;
        // The shortcuts in place before egress is checked: the pod's
        // `weft_from_pod` (vxlan and host-gw) and host-gw's `weft_fwd`.
        let w = c.weft_node(1)?;
        let host_gw = c.is_host_gw();
        cmd::poll("node 1's fast path attached", Duration::from_secs(10), Duration::from_millis(50), || {
            if w.link_pinned("weft_from_pod") && (!host_gw || w.fast_path_attached()) {
                Ok(Some(()))
            } else {
                Err(w.log_tail(5))
            }
        })?;
    }
    wait_egress_ok(&c, 1)?;
    outside::masqueraded(&c, &out, p1)?;
    c.ping_across_nodes(&[p1, p2], 2)?;
    pod_to_pod_keeps_address(&c, p1, p2, 5301)?;
    pod_to_pod_keeps_address(&c, p2, p1, 5302)?;
    if fast_path_variants {
        c.weft_node_mut(1)?.stop();
        c.start_weftd_with(1, &["--ip-masq", "--no-fast-path"])?;
        wait_egress_ok(&c, 1)?;
        c.wait_converged()?;
        outside::masqueraded(&c, &out, p1)?;
        pod_to_pod_keeps_address(&c, p1, p2, 5303)?;
    }
    // The rules, rule for rule, against flannel's list.
    let table = nft_table(&c.weft_node(1)?.ns)?.context("node 1 has no table inet weft")?;
    let subnet = c.node_env(1)?.cidr();
    ensure!(
        as_iptables(&table, "postrouting") == flannel_postrouting(&subnet),
        "postrouting {:?}\nflannel {:?}",
        as_iptables(&table, "postrouting"),
        flannel_postrouting(&subnet)
    );
    ensure!(as_iptables(&table, "forward") == flannel_forward(), "forward {:?}", as_iptables(&table, "forward"));
    // Without --ip-masq no nat chain exists and the outside host cannot answer.
    let t2 = nft_table(&c.weft_node(2)?.ns)?.context("node 2 has no table inet weft (forward rules are on by default)")?;
    ensure!(as_iptables(&t2, "postrouting").is_empty() && as_iptables(&t2, "forward") == flannel_forward(), "node 2's table: {t2}");
    traffic::ping_fails(&c.pods[p2].ns, outside::HOST, 2).context("without --ip-masq the outside host must not answer a pod")?;
    eprintln!("egress on {config}: {:?}", t0.elapsed());
    c.pass();
    Ok(())
}

#[test]
fn egress_masqueraded_vxlan_fast_path_on_and_off() -> Result<()> {
    egress_on(VXLAN, true)
}

#[test]
fn egress_masqueraded_host_gw_fast_path_on_and_off() -> Result<()> {
    egress_on(HOST_GW, true)
}

#[test]
fn egress_masqueraded_udp() -> Result<()> {
    egress_on(UDP, false)
}

/// A TCP stream from a pod to the outside host: `chunk` bytes every 20 ms
/// until told to stop; the server counts. Both ends report errors (a reset
/// shows as one).
struct Stream {
    stop: std::sync::mpsc::Sender<()>,
    client: std::thread::JoinHandle<Result<u64>>,
    server: std::thread::JoinHandle<Result<u64>>,
}

impl Stream {
    fn start(pod: &Netns, host: &Netns) -> Result<Stream> {
        let (hpath, ppath) = (host.path(), pod.path());
        let timeout = cmd::patient(Duration::from_secs(10));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || -> Result<u64> {
            traffic::enter(&hpath)?;
            let l = TcpListener::bind((outside::HOST, 5400))?;
            l.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            let deadline = Instant::now() + timeout;
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Err(e).context("stream server accept"),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(timeout))?;
            let (mut n, mut buf) = (0u64, [0u8; 4096]);
            loop {
                let k = s.read(&mut buf).with_context(|| format!("server read after {n} bytes"))?;
                if k == 0 {
                    return Ok(n);
                }
                n += k as u64;
            }
        });
        ready_rx.recv_timeout(timeout).context("stream server did not start")?;
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || -> Result<u64> {
            traffic::enter(&ppath)?;
            let mut s = TcpStream::connect_timeout(&SocketAddr::from((outside::HOST, 5400)), timeout)?;
            s.set_write_timeout(Some(timeout))?;
            let mut n = 0u64;
            // Bounded: at most 120 s of 20 ms ticks.
            for _ in 0..6000 {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                s.write_all(&[7u8; 1000]).with_context(|| format!("client write after {n} bytes"))?;
                n += 1000;
                std::thread::sleep(Duration::from_millis(20));
            }
            s.shutdown(std::net::Shutdown::Write)?;
            Ok(n)
        });
        Ok(Stream { stop, client, server })
    }

    fn finish(self) -> Result<(u64, u64)> {
        let _ = self.stop.send(());
        let sent = self.client.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        let got = self.server.join().map_err(|_| anyhow::anyhow!("server panicked"))??;
        Ok((sent, got))
    }
}

/// Rules `inet weft` of node 1 in the iptables form, both chains.
fn rules_of(c: &Cluster) -> Result<Vec<String>> {
    let t = nft_table(&c.weft_node(1)?.ns)?.context("no table inet weft")?;
    Ok([as_iptables(&t, "postrouting"), as_iptables(&t, "forward")].concat())
}

#[test]
fn rules_restored_kept_across_restarts_and_cleaned_up() -> Result<()> {
    weft_tests::require_root()?;
    let t0 = Instant::now();
    let args: Vec<&str> = metrics::ARGS.iter().copied().chain(["--ip-masq"]).collect();
    let mut c = Cluster::builder().config_json(VXLAN).weft_nodes(1).weftd_args(&args).build()?;
    let out = Outside::attach(&c)?;
    let p = c.add_pod(1, Wiring::Bridge)?;
    wait_egress_ok(&c, 1)?;
    let ns = Netns::borrowed(c.weft_node(1)?.ns.name());
    let want = [flannel_postrouting(&c.node_env(1)?.cidr()), flannel_forward()].concat();
    ensure!(rules_of(&c)? == want, "rules {:?}", rules_of(&c)?);
    let st = status_egress(&c, 1, &["--ip-masq"], None)?;
    ensure!(st.contains("in place") && st.contains("8 rules, masquerading"), "weftd status: {st}");
    let restored = |ns: &Netns| counter(ns, "weft_egress_rules_restored_total");

    // Someone deletes our table, then a firewall reload flushes everything:
    // back within a second each (notifications, not the 10 s resync).
    for (i, how) in [["delete", "table", "inet", "weft"].as_slice(), ["flush", "ruleset"].as_slice()].iter().enumerate() {
        let before = restored(&ns)?;
        ns.exec("nft", how)?;
        let t = Instant::now();
        cmd::poll(&format!("rules back after `nft {}`", how.join(" ")), Duration::from_secs(1), Duration::from_millis(20), || {
            let r = rules_of(&c).map_err(|e| format!("{e:#}"))?;
            if r == want {
                Ok(Some(()))
            } else {
                Err(format!("rules {r:?}"))
            }
        })?;
        eprintln!("restored after `nft {}` in {:?}", how.join(" "), t.elapsed());
        ensure!(restored(&ns)? == before + 1, "restore #{i}: weft_egress_rules_restored_total {} -> {}", before, restored(&ns)?);
    }
    // A firewall reload dropped the node's route? No: only netfilter. The pod still gets out.
    traffic::ping_ok(&c.pods[p].ns, outside::HOST, 2)?;

    // kill -9 while a pod streams to the outside host: the rules stay (the
    // new weftd finds them in place: no transaction), the connection lives on.
    let stream = Stream::start(&c.pods[p].ns, &out.host)?;
    std::thread::sleep(Duration::from_millis(500));
    c.weft_node_mut(1)?.kill();
    ensure!(rules_of(&c)? == want, "rules after kill -9: {:?}", rules_of(&c)?);
    c.start_weftd(1)?;
    wait_egress_ok(&c, 1)?;
    ensure!(counter(&ns, "weft_egress_rules_applied_total")? == 0, "the restarted weftd re-applied rules that were in place");
    std::thread::sleep(Duration::from_secs(1));
    let (sent, got) = stream.finish().context("the pod's TCP connection to the outside host across a kill -9 restart")?;
    ensure!(sent == got && sent > 0, "sent {sent} bytes, the outside host got {got}");

    // 100 restarts: exactly one copy of each rule, one table.
    let t = Instant::now();
    for i in 0..100 {
        c.weft_node_mut(1)?.kill();
        c.start_weftd(1)?;
        wait_egress_ok(&c, 1).with_context(|| format!("restart {i}"))?;
    }
    eprintln!("100 restarts in {:?}", t.elapsed());
    ensure!(rules_of(&c)? == want, "rules after 100 restarts: {:?}", rules_of(&c)?);
    let all = ns.exec("nft", &["list", "ruleset"])?;
    ensure!(all.matches("table inet weft").count() == 1, "ruleset:\n{all}");
    ensure!(all.matches("masquerade").count() == 2, "two masquerade rules in the whole ruleset:\n{all}");

    // --cleanup-on-exit removes them.
    c.weft_node_mut(1)?.kill();
    c.start_weftd_with(1, &["--cleanup-on-exit"])?;
    wait_egress_ok(&c, 1)?;
    let st = c.weft_node_mut(1)?.terminate()?;
    ensure!(st.success(), "weftd exit {st}");
    ensure!(nft_table(&ns)?.is_none(), "table inet weft still there after --cleanup-on-exit");
    let st = status_egress(&c, 1, &["--ip-masq"], None)?;
    ensure!(st.contains("MISSING") && st.contains("masquerading is off"), "weftd status without the table: {st}");
    eprintln!("restore/restart/cleanup: {:?}", t0.elapsed());
    drop(out);
    c.pass();
    Ok(())
}

/// Node 1 has no nft in PATH; node 2's "kernel" refuses the nat chain (an
/// nft that fails as nft does where nf_tables' NAT is missing). Both say
/// what is missing, at start, and the pods still reach each other.
#[test]
fn without_nft_or_nat_weftd_says_so_and_pods_still_talk() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().config_json(VXLAN).weft_nodes(2).weftd_args(&metrics::ARGS).no_start().build()?;
    // nft lives in /usr/sbin on Debian: a PATH without it.
    c.weft_node_mut(1)?.env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let fake = c.dir().join("fake-nft");
    std::fs::create_dir_all(&fake)?;
    std::fs::write(
        fake.join("nft"),
        "#!/bin/sh\ncase \"$*\" in *'-f -'*) cat >/dev/null; echo 'Error: Could not process rule: No such file or directory' >&2; echo 'add chain inet weft postrouting { type nat hook postrouting priority 100; }' >&2; exit 1;; esac\necho 'Error: No such file or directory' >&2\nexit 1\n",
    )?;
    std::fs::set_permissions(fake.join("nft"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    c.weft_node_mut(2)?.env.push(("PATH".into(), format!("{}:/usr/bin:/bin", fake.display())));
    for n in [1, 2] {
        c.start_weftd_with(n, &["--ip-masq"])?;
    }
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    for (n, missing) in [(1, "the nft binary was not found in PATH"), (2, "nft_chain_nat")] {
        let w = c.weft_node(n)?;
        cmd::poll(&format!("node {n} reports {missing:?}"), Duration::from_secs(10), Duration::from_millis(100), || {
            let m = metrics::scrape(&w.ns).map_err(|e| format!("{e:#}"))?;
            let named = w.log_count(missing) > 0 && w.log_count("--ip-masq: pods' traffic to the outside is NOT masqueraded") > 0;
            if m.contains("weft_egress_rules_ok 0") && named {
                Ok(Some(()))
            } else {
                Err(format!("log:\n{}", w.log_tail(10)))
            }
        })?;
    }
    let st = status_egress(&c, 1, &["--ip-masq"], Some("/usr/bin:/bin"))?;
    ensure!(st.contains("masquerading is off") && st.contains("the nft binary was not found in PATH"), "weftd status: {st}");
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    c.ping_across_nodes(&[p1, p2], 2)?;
    c.pass();
    Ok(())
}

/// iptables-nft's `ip filter FORWARD` with policy drop (as docker sets it):
/// weft keeps its accepts there too (tagged, one copy each), so pod traffic
/// through the host's forwarding path still flows.
#[test]
fn forward_policy_drop_still_forwards_pods() -> Result<()> {
    weft_tests::require_root()?;
    let t0 = Instant::now();
    let args: Vec<&str> = metrics::ARGS.iter().copied().chain(["--no-fast-path", "--ip-masq"]).collect();
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(2).weftd_args(&args).no_start().build()?;
    let drop_chain = "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }";
    // Node 1 has the drop policy before weftd starts (iptables-nft, as
    // docker sets it); node 2 gets it while weftd runs (docker started
    // later): noticed by notification.
    c.weft_node(1)?.ns.exec("iptables", &["-P", "FORWARD", "DROP"])?;
    for n in [1, 2] {
        c.start_weftd(n)?;
    }
    for n in [1, 2] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    c.weft_node(2)?.ns.exec("nft", &[drop_chain])?;
    let out = Outside::attach(&c)?;
    let p1 = c.add_pod(1, Wiring::Bridge)?;
    let p2 = c.add_pod(2, Wiring::Bridge)?;
    let (ns1, ns2) = (Netns::borrowed(c.weft_node(1)?.ns.name()), Netns::borrowed(c.weft_node(2)?.ns.name()));
    let tagged =
        |ns: &Netns| -> Result<usize> { Ok(ns.exec("nft", &["list", "chain", "ip", "filter", "FORWARD"])?.matches("comment \"weft forward\"").count()) };
    // Traffic first: it passes both nodes' FORWARD (the fast path is off).
    cmd::poll("pods across the drop policy", Duration::from_secs(2), Duration::from_millis(100), || match c.ping_across_nodes(&[p1, p2], 1) {
        Ok(()) => Ok(Some(())),
        Err(e) => Err(format!("{e:#}")),
    })?;
    traffic::ping_ok(&c.pods[p1].ns, outside::HOST, 2)?;
    ensure!((tagged(&ns1)?, tagged(&ns2)?) == (2, 2), "weft's tagged accepts in ip filter FORWARD: {} and {}", tagged(&ns1)?, tagged(&ns2)?);
    // iptables-nft reads weft's rules as its own (no "incompatible table").
    let listed = ns1.exec("iptables", &["-S", "FORWARD"])?;
    for want in [
        "-P FORWARD DROP",
        "-A FORWARD -s 10.244.0.0/16 -m comment --comment \"weft forward\" -j ACCEPT",
        "-A FORWARD -d 10.244.0.0/16 -m comment --comment \"weft forward\" -j ACCEPT",
    ] {
        ensure!(listed.lines().any(|l| l == want), "`iptables -S FORWARD` lacks {want:?}:\n{listed}");
    }
    c.weft_node_mut(1)?.kill();
    c.start_weftd(1)?;
    c.wait_node_ready(1)?;
    ensure!(tagged(&ns1)? == 2, "after a restart: {} tagged rules", tagged(&ns1)?);
    // --cleanup-on-exit takes weft's accepts out of iptables' chain too.
    c.weft_node_mut(1)?.kill();
    c.start_weftd_with(1, &["--cleanup-on-exit"])?;
    c.wait_node_ready(1)?;
    wait_egress_ok(&c, 1)?;
    ensure!(tagged(&ns1)? == 2, "with --cleanup-on-exit running: {} tagged rules", tagged(&ns1)?);
    let st = c.weft_node_mut(1)?.terminate()?;
    ensure!(st.success(), "weftd exit {st}");
    ensure!(tagged(&ns1)? == 0, "{} tagged rules left in ip filter FORWARD after --cleanup-on-exit", tagged(&ns1)?);
    ensure!(ns1.exec_output("nft", &["list", "table", "inet", "weft"])?.status.code() == Some(1), "table inet weft left after --cleanup-on-exit");
    ensure!(ns1.exec("iptables", &["-S", "FORWARD"])?.lines().next() == Some("-P FORWARD DROP"), "iptables' own policy must stay");
    eprintln!("forward policy drop: {:?}", t0.elapsed());
    drop(out);
    c.pass();
    Ok(())
}
