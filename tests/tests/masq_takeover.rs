//! Issue 24, taking over flanneld's masquerading: weftd, once its own
//! nftables rules are in place, removes flanneld's iptables chains
//! FLANNEL-POSTRTG (with `--ip-masq`) and FLANNEL-FWD (with its forward
//! accepts) and their jumps, iptables-nft's and legacy, IPv4 and IPv6
//! (agent/src/egress/flannel_rules.rs).
//!
//! - `swap_takes_over_masquerading_and_rollback_keeps_egress` (host-gw):
//!   a flannel node with flanneld's `--ip-masq` rules (iptables-nft) and a
//!   pod streaming to a host outside the cluster (its NAT binding made by
//!   flanneld's rules) is swapped to weftd: no FLANNEL-* chain or jump is
//!   left, the stream keeps flowing, new connections are masqueraded (by
//!   weft's rules, the only ones left); a restart removes nothing; after a
//!   rollback flanneld's rules and weft's table coexist and egress still
//!   works, masqueraded once.
//! - `legacy_and_ipv6_chains_follow_the_flags` (dual stack, host-gw): a
//!   weft node prepared with flanneld's rules in legacy iptables (IPv4) and
//!   ip6tables-nft (IPv6): without nft (weft's rules missing) nothing is
//!   removed; without `--ip-masq` only FLANNEL-FWD goes (flanneld's
//!   FLANNEL-POSTRTG keeps masquerading); with it the rest goes.
//!
//! The count of removed objects is weftd's
//! `weft_egress_flannel_rules_removed_total`; what is left is read from
//! the kernel (`nft list ruleset`, `iptables-legacy-save`,
//! `ip6tables-legacy-save` in the node's namespace).
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{
    cluster::dual_stack_config,
    cmd,
    flannel_node::FlannelBackend,
    held_tcp::HeldConnection,
    metrics,
    netns::Netns,
    outside::{self, Outside},
    subnet_env::Ipv4Subnet,
    swap::{self, FlanneldStart, WeftdStart},
    Cluster, NodeRef, Wiring,
};

const HOST_GW: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// flanneld's chains and the jumps into them in node namespace `ns`, one
/// line each, labelled by where they are: "nft ip nat: chain
/// FLANNEL-POSTRTG", "nft ip filter: jump FLANNEL-FWD", "iptables-legacy
/// nat: jump FLANNEL-POSTRTG", ...
fn flannel_objects(ns: &Netns) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut table = String::new();
    for l in ns.exec("nft", &["list", "ruleset"])?.lines().map(str::trim) {
        if let Some(t) = l.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_string();
        } else if let Some(c) = l.strip_prefix("chain FLANNEL") {
            out.push(format!("nft {table}: chain FLANNEL{}", c.trim_end_matches(" {")));
        } else if let Some((_, j)) = l.split_once("jump FLANNEL").or(l.split_once("goto FLANNEL")) {
            out.push(format!("nft {table}: jump FLANNEL{j}"));
        }
    }
    for bin in ["iptables-legacy", "ip6tables-legacy"] {
        let mut table = String::new();
        for l in ns.exec(&format!("{bin}-save"), &[])?.lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(c) = l.strip_prefix(":FLANNEL") {
                out.push(format!("{bin} {table}: chain FLANNEL{}", c.split(' ').next().unwrap_or_default()));
            } else if let Some((_, j)) = l.split_once("-j FLANNEL").or(l.split_once("-g FLANNEL")) {
                out.push(format!("{bin} {table}: jump FLANNEL{j}"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn removed(ns: &Netns) -> Result<u64> {
    Ok(metrics::sample(&metrics::scrape(ns)?, "weft_egress_flannel_rules_removed_total") as u64)
}

/// Waits until weftd on node `n` has its egress rules in place
/// (`weft_egress_rules_ok` 1).
fn wait_egress_ok(c: &Cluster, n: NodeRef) -> Result<()> {
    let w = c.weft_node(n)?;
    cmd::poll(&format!("node {n}: egress rules in place"), Duration::from_secs(20), Duration::from_millis(50), || {
        let m = metrics::scrape(&w.ns).map_err(|e| format!("{e:#}"))?;
        let v = metrics::sample(&m, "weft_egress_rules_ok");
        if v == 1.0 {
            Ok(Some(()))
        } else {
            Err(format!("weft_egress_rules_ok {v}; log:\n{}", w.log_tail(5)))
        }
    })
}

/// Waits (5 s) until flanneld's objects in `ns` are exactly `want`, and
/// weftd's removal count is `count`.
fn wait_left(c: &Cluster, n: NodeRef, want: &[String], count: u64) -> Result<()> {
    let w = c.weft_node(n)?;
    cmd::poll(&format!("node {n}: flanneld's objects left {want:?}, {count} removed"), Duration::from_secs(5), Duration::from_millis(50), || {
        let (left, got) = (flannel_objects(&w.ns).map_err(|e| format!("{e:#}"))?, removed(&w.ns).map_err(|e| format!("{e:#}"))?);
        if left == want && got == count {
            Ok(Some(()))
        } else {
            Err(format!("left {left:?}, weft_egress_flannel_rules_removed_total {got}; log:\n{}", w.log_tail(8)))
        }
    })
}

/// weftd's log lines on node `n` about flanneld's rules (what it took
/// over, removed and kept), for the test's output.
fn print_takeover_log(c: &Cluster, n: NodeRef) -> Result<()> {
    let log = std::fs::read_to_string(&c.weft_node(n)?.log).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("flanneld's")) {
        eprintln!("  weftd: {l}");
    }
    Ok(())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What flanneld's `--ip-masq` leaves through iptables-nft, IPv4.
fn flanneld_v4_nft() -> Vec<String> {
    strings(&["nft ip filter: chain FLANNEL-FWD", "nft ip filter: jump FLANNEL-FWD", "nft ip nat: chain FLANNEL-POSTRTG", "nft ip nat: jump FLANNEL-POSTRTG"])
}

#[test]
fn swap_takes_over_masquerading_and_rollback_keeps_egress() -> Result<()> {
    weft_tests::require_root()?;
    let t0 = Instant::now();
    let mut c = Cluster::builder().config_json(HOST_GW).weft_nodes(1).build()?;
    let s = c.add_flannel_node_with(FlannelBackend::HostGw, 0)?;
    c.program_flannel_nodes()?;
    c.start_flanneld(s, true)?;
    c.wait_converged()?;
    let out = Outside::attach(&c)?;
    let p = c.add_flannel_cni_pod(s)?;
    let ns = Netns::borrowed(c.node_ns(s)?.name());
    ensure!(flannel_objects(&ns)? == flanneld_v4_nft(), "flanneld's rules as the harness installs them: {:?}", flannel_objects(&ns)?);
    outside::masqueraded(&c, &out, p).context("under flanneld's rules")?;
    // Opened under flanneld's rules: its NAT binding is theirs (the
    // outside host routes nothing back to pod addresses).
    let mut held = HeldConnection::open(&c.pods[p].ns, &out.host, IpAddr::V4(outside::HOST), Duration::from_millis(20), Duration::from_secs(120))?;

    match c.swap_to_weftd(s, &[])? {
        WeftdStart::Ready { after } => eprintln!("weftd ready after {after:?}"),
        WeftdStart::Refused { exit, error } => bail!("weftd refused to start ({exit}): {error}"),
    }
    // Two chains and their two jumps, iptables-nft's.
    wait_left(&c, s, &[], 4)?;
    ensure!(ns.exec_output("nft", &["list", "table", "inet", "weft"])?.status.success(), "no table inet weft after the takeover");
    held.flowing(25, Duration::from_secs(10)).context("the pod's connection to the outside across the takeover")?;
    outside::masqueraded(&c, &out, p).context("after the takeover: weft's rules are the only ones")?;
    let problems = c.weftd_log_problems(s)?;
    let bad: Vec<&String> = problems.iter().filter(|l| !l.contains(" WARN ") || l.contains("iptables") || l.contains("FLANNEL")).collect();
    ensure!(bad.is_empty(), "weftd logged:\n{bad:#?}");

    // A restart finds nothing to remove.
    c.weft_node_mut(s)?.kill();
    c.start_weftd_with(s, &[&["--ip-masq"], metrics::ARGS.as_slice()].concat())?;
    wait_egress_ok(&c, s)?;
    std::thread::sleep(Duration::from_millis(500));
    wait_left(&c, s, &[], 0)?;
    print_takeover_log(&c, s)?;
    held.flowing(25, Duration::from_secs(10)).context("across weftd's restart")?;

    // Rollback: flanneld puts its rules back next to weft's table. NAT is
    // decided once per connection by the first masquerade that matches, so
    // egress still leaves with the node's address, once.
    let back = c.swap_to_flanneld(s)?;
    if let FlanneldStart::Refused { error } = &back.start {
        bail!("flanneld would not start again: {error}");
    }
    ensure!(back.weftd_exit.is_some_and(|e| e.success()), "weftd's exit on SIGTERM: {:?}", back.weftd_exit);
    ensure!(flannel_objects(&ns)? == flanneld_v4_nft(), "after the rollback: {:?}", flannel_objects(&ns)?);
    ensure!(ns.exec_output("nft", &["list", "table", "inet", "weft"])?.status.success(), "weft's table went with weftd (no --cleanup-on-exit)");
    held.flowing(25, Duration::from_secs(10)).context("across the rollback")?;
    outside::masqueraded(&c, &out, p).context("after the rollback: flanneld's rules and weft's table together")?;
    let n = held.close()?;
    eprintln!("held connection: {n} messages, longest round trip {:?}; test took {:?}", held.stats().max_rtt, t0.elapsed());
    drop(back.pins);
    drop(out);
    c.pass();
    Ok(())
}

/// flanneld's rules for `network` and `subnet` as an iptables-restore
/// input (`--noflush`): its chains, their rules, the jumps; IPv6 with
/// ff00::/8 for multicast.
fn restore_input(network: &str, subnet: &str) -> String {
    let rules = swap::flannel_masq_rules(network, subnet);
    let v6 = network.contains(':');
    let mut s = String::new();
    for (table, chain) in [("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD")] {
        s += &format!("*{table}\n:{chain} - [0:0]\n");
        for (_, _, r) in rules.iter().filter(|(_, ch, _)| *ch == chain) {
            let r = if v6 { r.replace("224.0.0.0/4", "ff00::/8") } else { r.clone() };
            s += &format!("-A {chain} {r}\n");
        }
        for (_, base, r) in swap::flannel_masq_jumps().iter().filter(|(t, _, _)| *t == table) {
            s += &format!("-A {base} {r}\n");
        }
        s += "COMMIT\n";
    }
    s
}

fn restore(c: &Cluster, ns: &Netns, bin: &str, input: &str) -> Result<()> {
    let f = c.dir().join(format!("{bin}.rules"));
    std::fs::write(&f, input)?;
    ns.exec(bin, &["--noflush", &f.to_string_lossy()]).with_context(|| format!("{bin} with:\n{input}"))?;
    Ok(())
}

#[test]
fn legacy_and_ipv6_chains_follow_the_flags() -> Result<()> {
    weft_tests::require_root()?;
    let t0 = Instant::now();
    let config = dual_stack_config("10.244.0.0/16", "host-gw");
    let mut c = Cluster::builder().dual_stack().config_json(&config).weft_nodes(1).weftd_args(&metrics::ARGS).no_start().build()?;
    // A first run with no egress rules at all (nothing of flanneld's to
    // replace) gives the node its subnets and a pod.
    c.start_weftd_with(1, &["--iptables-forward-rules=false"])?;
    let env = c.wait_node_ready(1)?;
    let out = Outside::attach(&c)?;
    let p = c.add_pod(1, Wiring::Bridge)?;
    c.weft_node_mut(1)?.terminate()?;
    let ns = Netns::borrowed(c.weft_node(1)?.ns.name());
    let (net4, sub4) = (env.network.context("no FLANNEL_NETWORK")?.to_string(), env.cidr());
    let (net6, sub6) = (env.ipv6_network.context("no FLANNEL_IPV6_NETWORK")?.to_string(), env.ipv6_subnet.context("no FLANNEL_IPV6_SUBNET")?.to_string());
    // flanneld's rules: IPv4 through iptables-legacy, IPv6 through ip6tables-nft.
    restore(&c, &ns, "iptables-legacy-restore", &restore_input(&net4, &sub4))?;
    restore(&c, &ns, "ip6tables-nft-restore", &restore_input(&net6, &sub6))?;
    let all = strings(&[
        "iptables-legacy filter: chain FLANNEL-FWD",
        "iptables-legacy filter: jump FLANNEL-FWD",
        "iptables-legacy nat: chain FLANNEL-POSTRTG",
        "iptables-legacy nat: jump FLANNEL-POSTRTG",
        "nft ip6 filter: chain FLANNEL-FWD",
        "nft ip6 filter: jump FLANNEL-FWD",
        "nft ip6 nat: chain FLANNEL-POSTRTG",
        "nft ip6 nat: jump FLANNEL-POSTRTG",
    ]);
    ensure!(flannel_objects(&ns)? == all, "flanneld's rules installed: {:?}", flannel_objects(&ns)?);
    outside::masqueraded(&c, &out, p).context("under flanneld's legacy rules")?;

    // weft's own rules missing (no nft in PATH; the legacy iptables
    // binaries there): flanneld's stay.
    let bin = c.dir().join("no-nft");
    std::fs::create_dir_all(&bin)?;
    for b in ["iptables-legacy", "ip6tables-legacy"] {
        std::os::unix::fs::symlink(format!("/usr/sbin/{b}"), bin.join(b))?;
    }
    c.weft_node_mut(1)?.env.push(("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())));
    c.start_weftd_with(1, &["--ip-masq"])?;
    c.wait_node_ready(1)?;
    let w = c.weft_node(1)?;
    cmd::poll("weftd says its rules are missing", Duration::from_secs(10), Duration::from_millis(50), || {
        let m = metrics::scrape(&w.ns).map_err(|e| format!("{e:#}"))?;
        if metrics::sample(&m, "weft_egress_rules_ok") == 0.0 && metrics::sample(&m, "weft_egress_checks_total") >= 1.0 {
            Ok(Some(()))
        } else {
            Err(w.log_tail(5))
        }
    })?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(flannel_objects(&ns)? == all, "without weft's rules flanneld's must stay: {:?}", flannel_objects(&ns)?);
    ensure!(removed(&ns)? == 0, "removed {} without weft's rules", removed(&ns)?);
    c.weft_node_mut(1)?.terminate()?;
    c.weft_node_mut(1)?.env.pop();

    // Without --ip-masq: forward accepts only, so FLANNEL-FWD goes (both
    // families) and flanneld's FLANNEL-POSTRTG keeps masquerading.
    c.start_weftd(1)?;
    wait_egress_ok(&c, 1)?;
    let postrtg: Vec<String> = all.iter().filter(|l| l.contains("POSTRTG")).cloned().collect();
    wait_left(&c, 1, &postrtg, 4)?;
    outside::masqueraded(&c, &out, p).context("weftd without --ip-masq: flanneld's FLANNEL-POSTRTG masquerades")?;

    // With --ip-masq: the rest goes.
    c.weft_node_mut(1)?.terminate()?;
    c.start_weftd_with(1, &["--ip-masq"])?;
    wait_egress_ok(&c, 1)?;
    wait_left(&c, 1, &[], 4)?;
    outside::masqueraded(&c, &out, p).context("weft's masquerading")?;
    let problems = c.weftd_log_problems(1)?;
    let bad: Vec<&String> = problems.iter().filter(|l| !l.contains("NOT masqueraded")).collect();
    ensure!(bad.is_empty(), "weftd logged (beyond the run without nft):\n{bad:#?}");
    print_takeover_log(&c, 1)?;
    eprintln!("legacy and IPv6: {:?}", t0.elapsed());
    drop(out);
    c.pass();
    Ok(())
}
