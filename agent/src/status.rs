//! `weftd status [--json]`: what a node holds and does, for people and
//! scripts. Reads the lease store, the node's subnet.env, its routes and the
//! pinned maps (no running weftd needed, nothing written): every lease with
//! the datapath that carries its traffic from this node, the registered pod
//! endpoints (IPv4 and IPv6), the IPv6 VTEPs and host-gw fast-path peers,
//! each lease's IPv6 datapath, whether the egress rules (`--ip-masq`) are in place, and the
//! datapath's counters. Takes weftd's own flags and
//! environment, so `weftd status` in the DaemonSet's container just works.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use weft_common::{stat, subnet_env::Ipv6Cidr, Counter, HostGw6Entry, HostGwEntry, PodEntry, Vtep6Entry, VtepEntry};

use crate::{
    cli::Args,
    dataplane::pinned,
    net::netlink::{Netlink, Route, Route6},
    subnet::{
        self,
        lease::{format_mac, Lease},
        Ipv4Net,
    },
    subnet_env,
};

#[derive(Parser, Debug)]
#[command(name = "weftd status", about = "Leases, peers and the datapath each uses, pod endpoints and counters of this node")]
pub struct StatusArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: Args,
}

/// The pinned maps' contents (empty where a map is not pinned: a node on
/// the kernel datapath or the udp backend has none).
struct Maps {
    vteps: BTreeMap<Ipv4Net, VtepEntry>,
    hostgw: BTreeMap<Ipv4Net, HostGwEntry>,
    pods: BTreeMap<Ipv4Addr, PodEntry>,
    /// Dual stack: the IPv6 VTEPs, the host-gw fast path's IPv6 peers and
    /// the pods' IPv6 addresses.
    vteps6: Vec<(Ipv6Cidr, Vtep6Entry)>,
    hostgw6: Vec<(Ipv6Cidr, HostGw6Entry)>,
    pods6: BTreeMap<Ipv6Addr, PodEntry>,
    counters: Option<Vec<Counter>>,
}

fn read_maps(dir: &Path) -> Maps {
    Maps {
        vteps: pinned::vteps(dir),
        hostgw: pinned::hostgw(dir),
        pods: pinned::pods(dir),
        vteps6: pinned::vteps6(dir),
        hostgw6: pinned::hostgw6(dir),
        pods6: pinned::pods6(dir),
        counters: pinned::counters(dir),
    }
}

/// A pod endpoint as status shows it (`ip`: its IPv4 or IPv6 address).
fn pod_json(ip: String, e: &PodEntry, names: &BTreeMap<u32, String>) -> Value {
    json!({
        "ip": ip, "host_ifindex": e.host_ifindex,
        "host_veth": names.get(&e.host_ifindex), "pod_mac": format_mac(&e.pod_mac), "gateway_mac": format_mac(&e.gw_mac),
    })
}

/// The datapath that carries this node's traffic to `l`, from the routes
/// and the maps: what the kernel will really do, not what the lease says.
fn datapath_of(l: &Lease, routes: &[Route], names: &BTreeMap<u32, String>, maps: &Maps) -> String {
    let Some(subnet) = l.subnet else { return "IPv6 only".into() };
    let best = routes.iter().filter(|r| r.dst.contains_net(&subnet)).max_by_key(|r| r.dst.prefix_len());
    let Some(r) = best else { return "none (no route)".into() };
    if r.unreachable {
        return "none (unreachable: no route of its own)".into();
    }
    let dev = r.oif.and_then(|i| names.get(&i)).cloned().unwrap_or_default();
    if dev.starts_with("weft.") {
        return if maps.vteps.contains_key(&subnet) { "vxlan (bpf)".into() } else { "vxlan (kernel)".into() };
    }
    // The udp path's TUN: weft's `weft<N>` or flannel's `flannel<N>`.
    if (dev.starts_with("flannel") || (dev.starts_with("weft") && !dev.starts_with("weft."))) && r.gateway.is_none() {
        return "udp".into();
    }
    if r.gateway == Some(l.attrs.public_ip) {
        return if maps.hostgw.contains_key(&subnet) { "host-gw (fast path)".into() } else { "host-gw (routes)".into() };
    }
    format!("other: route via {} dev {dev}", r.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into()))
}

/// [`datapath_of`] for a lease's IPv6 subnet (None: it has none).
fn datapath6_of(l: &Lease, routes: &[Route6], names: &BTreeMap<u32, String>, maps: &Maps) -> Option<String> {
    let subnet6 = l.subnet6?;
    let best = routes.iter().filter(|r| r.dst.contains_net(&subnet6)).max_by_key(|r| r.dst.prefix_len());
    let Some(r) = best else { return Some("none (no route)".into()) };
    if r.unreachable {
        return Some("none (unreachable: no route of its own)".into());
    }
    let key = Ipv6Cidr { addr: subnet6.network_addr(), prefix_len: subnet6.prefix_len() };
    let dev = r.oif.and_then(|i| names.get(&i)).cloned().unwrap_or_default();
    Some(if dev.starts_with("weft-v6.") {
        if maps.vteps6.iter().any(|(c, _)| *c == key) { "vxlan (bpf)" } else { "vxlan (kernel)" }.into()
    } else if r.gateway.is_some() && r.gateway == l.attrs.public_ipv6 {
        if maps.hostgw6.iter().any(|(c, _)| *c == key) { "host-gw (fast path)" } else { "host-gw (routes)" }.into()
    } else {
        format!("other: route via {} dev {dev}", r.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into()))
    })
}

/// Why a restart of this node's weftd would drop traffic, if it would: as
/// seen from here (pins on a bpffs other than the host's), else as the
/// running weftd says on /readyz (`--healthz-port`): only weftd knows that
/// it had to mount a bpffs of its own, e.g. in a container without the
/// host's /sys/fs/bpf.
fn pins_warning(n: &Args) -> Option<String> {
    if let Some(w) = crate::dataplane::bpffs::persistence(&n.bpf_pin_dir).warning() {
        return Some(w.to_string());
    }
    if n.healthz_port == 0 {
        return None;
    }
    let ip = if n.healthz_ip.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { n.healthz_ip };
    let body = crate::health::get(std::net::SocketAddr::new(ip, n.healthz_port), "/readyz").ok()?;
    body.lines().find_map(|l| l.strip_prefix("warning: ")).map(str::to_string)
}

pub async fn run(a: &StatusArgs) -> Result<String> {
    let n = &a.node;
    let manager =
        tokio::time::timeout(std::time::Duration::from_secs(10), subnet::from_args(n)).await.context("connecting to the lease store: timed out")??;
    let raw = manager.leases().await.context("listing the leases")?;
    let own = subnet_env::previous_subnet(&n.subnet_file);
    let nl = Netlink::new()?;
    let routes = nl.main_routes_full().await?;
    let routes6 = nl.main_routes6_full().await?;
    let names: BTreeMap<u32, String> = nl.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
    let maps = read_maps(&n.bpf_pin_dir);

    let mut leases = vec![];
    for (k, v) in &raw {
        match Lease::parse(k, v) {
            Ok(l) => {
                let mine = Some(l.subnets()) == own;
                let vtep = l.attrs.vxlan_data().ok().map(|d| format_mac(&d.vtep_mac));
                leases.push(json!({
                    "subnet": l.subnet.map(|s| s.to_string()),
                    "subnet6": l.subnet6.map(|s| s.to_string()),
                    "public_ip": l.attrs.public_ip.to_string(),
                    "public_ipv6": l.attrs.public_ipv6.map(|a| a.to_string()),
                    "backend": l.attrs.backend_type.clone().unwrap_or_else(|| "udp".into()),
                    "vtep_mac": vtep,
                    "this_node": mine,
                    "datapath": if mine { "this node".to_string() } else { datapath_of(&l, &routes, &names, &maps) },
                    "datapath6": if mine { l.subnet6.map(|_| "this node".to_string()) } else { datapath6_of(&l, &routes6, &names, &maps) },
                }));
            }
            Err(e) => leases.push(json!({ "key": k, "error": format!("{e:#}") })),
        }
    }
    let pods: Vec<Value> = maps.pods.iter().map(|(ip, e)| pod_json(ip.to_string(), e, &names)).collect();
    let pods6: Vec<Value> = maps.pods6.iter().map(|(ip, e)| pod_json(ip.to_string(), e, &names)).collect();
    let vteps6: Vec<Value> = maps
        .vteps6
        .iter()
        .map(|(net, v)| json!({ "subnet6": net.to_string(), "public_ipv6": Ipv6Addr::from(v.ip).to_string(), "vtep_mac": format_mac(&v.mac) }))
        .collect();
    let hostgw6: Vec<Value> = maps
        .hostgw6
        .iter()
        .map(|(net, e)| json!({ "subnet6": net.to_string(), "gateway": Ipv6Addr::from(e.gateway).to_string(), "ifindex": e.ifindex, "dev": names.get(&e.ifindex) }))
        .collect();
    let counters: Option<serde_json::Map<String, Value>> = maps
        .counters
        .as_ref()
        .map(|c| c.iter().enumerate().map(|(i, c)| (stat::NAMES[i].to_string(), json!({ "packets": c.packets, "bytes": c.bytes }))).collect());
    let env = std::fs::read_to_string(&n.subnet_file).ok().and_then(|t| weft_common::subnet_env::SubnetEnv::parse(&t).ok());
    let net4 = env.as_ref().and_then(|e| e.network).and_then(|c| Ipv4Net::new(c.addr, c.prefix_len).ok());
    let net6 = env.as_ref().and_then(|e| e.ipv6_network).and_then(|c| crate::subnet::Ipv6Net::new(c.addr, c.prefix_len).ok());
    let (v4, v6) = (net4.zip(own.and_then(|s| s.v4)), net6.zip(own.and_then(|s| s.v6)));
    let egress = if v4.is_none() && v6.is_none() {
        "unknown (no subnet.env with a network and a subnet of either family)".into()
    } else {
        crate::egress::status(n, v4, v6)
    };
    let doc = json!({
        "subnet": own.and_then(|s| s.v4).map(|s| s.to_string()),
        "subnet6": own.and_then(|s| s.v6).map(|s| s.to_string()),
        "egress": egress,
        "subnet_file": n.subnet_file.display().to_string(),
        "bpf_pins": weft_common::pins::dir(&n.bpf_pin_dir).display().to_string(),
        "bpf_pins_warning": pins_warning(n),
        "leases": leases, "pods": pods, "pods6": pods6, "vteps6": vteps6, "hostgw6": hostgw6, "counters": counters,
    });
    if a.json {
        return Ok(serde_json::to_string_pretty(&doc)?);
    }
    let mut out = format!(
        "node: subnet {} (from {})\n\nleases ({}):\n  {:<18} {:<15} {:<8} {:<17} {}\n",
        own.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
        n.subnet_file.display(),
        leases.len(),
        "SUBNET",
        "PUBLIC IP",
        "BACKEND",
        "VTEP MAC",
        "DATAPATH"
    );
    for l in &leases {
        if let Some(e) = l.get("error") {
            out += &format!("  {:<18} {e}\n", l["key"].as_str().unwrap_or(""));
            continue;
        }
        let s = |k: &str| l[k].as_str().unwrap_or("-").to_string();
        out += &format!("  {:<18} {:<15} {:<8} {:<17} {}\n", s("subnet"), s("public_ip"), s("backend"), s("vtep_mac"), s("datapath"));
    }
    let leases6: Vec<&Value> = leases.iter().filter(|l| l["subnet6"].is_string()).collect();
    if !leases6.is_empty() {
        out += &format!("\nIPv6 ({}):\n  {:<24} {:<39} {}\n", leases6.len(), "SUBNET6", "PUBLIC IPv6", "DATAPATH");
        for l in leases6 {
            let s = |k: &str| l[k].as_str().unwrap_or("-").to_string();
            out += &format!("  {:<24} {:<39} {}\n", s("subnet6"), s("public_ipv6"), s("datapath6"));
        }
    }
    out += &format!("\negress rules: {egress}\n");
    if let Some(w) = doc["bpf_pins_warning"].as_str() {
        out += &format!("\nWARNING: {w}\n");
    }
    if !vteps6.is_empty() {
        out += &format!("\nIPv6 VTEPs ({}):\n  {:<24} {:<39} {}\n", vteps6.len(), "SUBNET6", "PUBLIC IPv6", "VTEP MAC");
        for v in &vteps6 {
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
            out += &format!("  {:<24} {:<39} {}\n", s("subnet6"), s("public_ipv6"), s("vtep_mac"));
        }
    }
    if !hostgw6.is_empty() {
        out += &format!("\nIPv6 host-gw fast path ({}):\n  {:<24} {:<39} {}\n", hostgw6.len(), "SUBNET6", "GATEWAY", "DEV");
        for h in &hostgw6 {
            let s = |k: &str| h[k].as_str().unwrap_or("-").to_string();
            out += &format!("  {:<24} {:<39} {}\n", s("subnet6"), s("gateway"), s("dev"));
        }
    }
    out += &format!("\npod endpoints ({}):\n", pods.len() + pods6.len());
    for p in pods.iter().chain(&pods6) {
        out += &format!(
            "  {:<24} {} (#{}) pod MAC {}\n",
            p["ip"].as_str().unwrap_or(""),
            p["host_veth"].as_str().unwrap_or("?"),
            p["host_ifindex"],
            p["pod_mac"].as_str().unwrap_or("")
        );
    }
    match &maps.counters {
        Some(c) => {
            out += "\ncounters (packets, bytes):\n";
            for (i, v) in c.iter().enumerate() {
                out += &format!("  {:<16} {:>12} {:>16}\n", stat::NAMES[i], v.packets, v.bytes);
            }
        }
        None => out += &format!("\nno pinned counters in {} (kernel datapath, or weftd never ran here)\n", n.bpf_pin_dir.display()),
    }
    Ok(out)
}
