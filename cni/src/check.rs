//! CHECK: everything ADD made and prevResult lists is still there and as
//! ADD left it: the bridge with the gateway address, the host veth (a port
//! of the bridge, up, hairpin as configured), the pod interface (MAC, up,
//! addresses, the routes), the address reservations, the endpoint record,
//! and the addresses still inside the node's subnets; on a dual-stack pod
//! all of it for both families (the bridge's IPv6 gateway, the pod's IPv6
//! address, its IPv6 routes, `ip6` in the record); on an IPv6-only pod for
//! IPv6 alone (and no `ip` in the record). Every problem found is
//! reported at once (error 101, weft-cni's own code: no well-known one
//! means "not as expected").
use std::net::IpAddr;

use weft_common::mac::format_mac;

use crate::{
    add::open_pod_netns,
    config::NetConf,
    del::is_ours,
    endpoint,
    env::Attachment,
    error::{code, CniError, Result},
    ipam::Store,
    link::{in_netns, Netlink},
    naming,
    result::CniResult,
    subnet_env,
};

pub fn check(conf: &NetConf, att: &Attachment) -> Result<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "invalid network config: CHECK needs prevResult (the result of the ADD)"))?;
    let prev = CniResult::parse(prev)?;
    let netns = att.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let failed = |m: String| CniError::new(code::CHECK_FAILED, m);

    let pod_i = prev
        .interfaces
        .iter()
        .position(|i| i.name == att.ifname && i.sandbox.as_deref() == Some(netns.as_str()))
        .ok_or_else(|| failed(format!("prevResult lists no interface {} in {netns}", att.ifname)))?;
    let pod_if = &prev.interfaces[pod_i];
    // The pod's IPv4 address (none on an IPv6-only node), its IPv6 address
    // (dual stack, IPv6-only): at least one.
    let ipc4 = prev.ips.iter().find(|i| i.interface == Some(pod_i) && i.address.is_ipv4());
    let ipc6 = prev.ips.iter().find(|i| i.interface == Some(pod_i) && i.address.is_ipv6());
    let ipcs: Vec<_> = ipc4.into_iter().chain(ipc6).collect();
    if ipcs.is_empty() {
        return Err(failed(format!("prevResult lists no address on {}", att.ifname)));
    }
    let host = naming::host_veth(&att.container_id, &att.ifname);
    let alias = naming::alias(&conf.name, &att.container_id, &att.ifname);
    let ns = open_pod_netns(att.netns.as_deref().unwrap_or(std::path::Path::new("")))?;

    let mut problems: Vec<String> = Vec::new();
    if !prev.interfaces.iter().any(|i| i.name == host && i.sandbox.is_none()) {
        problems.push(format!("prevResult does not list the host veth {host}"));
    }

    // The node side.
    let nl = Netlink::new()?;
    let bridge = nl.link_by_name(&conf.bridge)?;
    match &bridge {
        None => problems.push(format!("bridge {} is missing", conf.bridge)),
        Some(b) => {
            if b.kind.as_deref() != Some("bridge") {
                problems.push(format!("{} is not a bridge", conf.bridge));
            }
            if !b.up {
                problems.push(format!("bridge {} is down", conf.bridge));
            }
            let have = nl.addrs(b.index)?;
            for i in &ipcs {
                if let Some(gw) = i.gateway {
                    if !have.contains(&(gw, i.prefix_len)) {
                        problems.push(format!("bridge {} lacks the gateway address {gw}/{}", conf.bridge, i.prefix_len));
                    }
                }
            }
        }
    }
    let hv = nl.link_by_name(&host)?;
    match &hv {
        None => problems.push(format!("host veth {host} of {} in {netns} is missing (deleted by hand?)", att.ifname)),
        Some(h) => {
            if !is_ours(h, &alias) {
                problems.push(format!("{host} is not this attachment's veth (alias {:?})", h.alias));
            }
            if bridge.as_ref().is_some_and(|b| h.master != Some(b.index)) {
                problems.push(format!("host veth {host} is not a port of {}", conf.bridge));
            }
            if !h.up {
                problems.push(format!("host veth {host} is down"));
            }
            if conf.hairpin_mode && h.hairpin != Some(true) {
                problems.push(format!("host veth {host} lacks hairpin mode"));
            }
            let want = prev.interfaces.iter().find(|i| i.name == host).and_then(|i| i.mac.clone());
            if want.is_some() && h.mac.map(|m| format_mac(&m)) != want {
                problems.push(format!("host veth {host} has MAC {:?}, prevResult says {want:?}", h.mac.map(|m| format_mac(&m))));
            }
        }
    }

    // The pod side.
    let routes = prev.routes.clone();
    let want_addrs: Vec<(IpAddr, u8)> = ipcs.iter().map(|i| (i.address, i.prefix_len)).collect();
    let gw_of = |dst: IpAddr| ipcs.iter().find(|i| i.address.is_ipv6() == dst.is_ipv6()).and_then(|i| i.gateway);
    let pod_problems = in_netns(&ns, |p| {
        let mut v = Vec::new();
        let Some(l) = p.link_by_name(&att.ifname)? else {
            v.push(format!("{} is missing in {netns}", att.ifname));
            return Ok(v);
        };
        if l.kind.as_deref() != Some("veth") {
            v.push(format!("{} in {netns} is not a veth", att.ifname));
        }
        if !l.up {
            v.push(format!("{} in {netns} is down", att.ifname));
        }
        if pod_if.mac.is_some() && l.mac.map(|m| format_mac(&m)) != pod_if.mac {
            v.push(format!("{} in {netns} has MAC {:?}, prevResult says {:?}", att.ifname, l.mac.map(|m| format_mac(&m)), pod_if.mac));
        }
        let have = p.addrs(l.index)?;
        for (a, len) in &want_addrs {
            if !have.contains(&(*a, *len)) {
                v.push(format!("{} in {netns} lacks its address {a}/{len}", att.ifname));
            }
        }
        let have = p.routes()?;
        for r in &routes {
            let via = r.gw.or(gw_of(r.dst));
            if !have.iter().any(|h| h.dst == r.dst && h.prefix_len == r.prefix_len && h.gw == via) {
                v.push(format!("{netns} lacks the route {}/{} via {}", r.dst, r.prefix_len, via.map(|g| g.to_string()).unwrap_or_default()));
            }
        }
        Ok(v)
    })?;
    problems.extend(pod_problems);

    // The reservations, the record, the node's subnets.
    let reserved = match Store::open(&conf.data_dir, &conf.name, false)? {
        Some(s) => s.find(&att.container_id, &att.ifname)?,
        None => Vec::new(),
    };
    for (a, _) in &want_addrs {
        if !reserved.contains(a) {
            problems.push(format!("{a} is not reserved for {}/{} in the address store", att.container_id, att.ifname));
        }
    }
    let addr4 = ipc4.and_then(|i| match i.address {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    });
    let addr6 = ipc6.and_then(|i| match i.address {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    });
    let show4 = |a: Option<std::net::Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or("no IPv4 address".into());
    match endpoint::read(&conf.endpoints_dir, &att.container_id, &att.ifname)? {
        None => problems.push(format!("endpoint record {} is missing", endpoint::path(&conf.endpoints_dir, &att.container_id, &att.ifname).display())),
        Some(r) => {
            // A missing host veth is reported above; its ifindex is compared when it is there.
            let ifindex = hv.as_ref().map(|h| h.index);
            let stale_ifindex = ifindex.is_some_and(|i| i != r.host_ifindex);
            if r.ip != addr4 || r.host_veth != host || stale_ifindex || r.netns != netns {
                problems.push(format!(
                    "endpoint record says {} on {} (#{}) in {}, the pod has {} on {host} (#{})",
                    show4(r.ip),
                    r.host_veth,
                    r.host_ifindex,
                    r.netns,
                    show4(addr4),
                    ifindex.map(|i| i.to_string()).unwrap_or("-".into())
                ));
            }
            if r.ip6 != addr6 {
                let show = |a: Option<std::net::Ipv6Addr>| a.map(|a| a.to_string()).unwrap_or("no IPv6 address".into());
                problems.push(format!("endpoint record says ip6 {}, the pod has {}", show(r.ip6), show(addr6)));
            }
        }
    }
    match subnet_env::read(&conf.subnet_file) {
        Ok(env) => {
            match (addr4, env.subnet) {
                (Some(a), Some(s4)) if !s4.contains(a) => problems.push(format!("{a} is outside the node's subnet {s4} (the node's lease changed)")),
                (Some(a), None) => problems.push(format!("the pod has {a} but {} has no FLANNEL_SUBNET any more", conf.subnet_file.display())),
                _ => {}
            }
            match (addr6, env.ipv6_subnet) {
                (Some(a), Some(s6)) if !s6.contains(a) => problems.push(format!("{a} is outside the node's IPv6 subnet {s6} (the node's lease changed)")),
                (Some(a), None) => problems.push(format!("the pod has {a} but {} has no FLANNEL_IPV6_SUBNET any more", conf.subnet_file.display())),
                _ => {}
            }
        }
        Err(e) => problems.push(e.msg),
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(failed(format!("{}/{} is not as ADD left it: {}", att.container_id, att.ifname, problems.join("; "))))
}
