//! ADD: an address from the node's subnet (and on a dual-stack node one
//! from its IPv6 subnet; on an IPv6-only node only that one), the node
//! bridge, a veth pair into the pod with addresses, MTU and routes, the endpoint record, the result. On any
//! failure everything this ADD made is removed again (the bridge, shared by
//! all pods, stays), so a failed ADD leaves nothing: also when one family
//! has no free address, the other's is released.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::Path,
};

use serde_json::Value;
use weft_common::mac::format_mac;

use crate::{
    config::NetConf,
    endpoint::{self, EndpointRecord},
    env::Attachment,
    error::{code, CniError, Result},
    ipam::{Range, Store},
    link::{self, in_netns, mac_for, mac_for6, Netlink},
    naming,
    result::{CniResult, Interface, IpConfig, Route},
    subnet_env::{self, SubnetEnv},
};

/// Opens `CNI_NETNS`: 3 when it does not exist, 4 when it is no network
/// namespace or is weft-cni's own (the node's: never configure it as a pod).
pub fn open_pod_netns(path: &Path) -> Result<File> {
    let ns = link::open_netns(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS {} does not exist", path.display())),
        std::io::ErrorKind::InvalidInput => CniError::new(code::INVALID_ENV, format!("invalid CNI_NETNS: {e}")),
        _ => CniError::io(format!("opening CNI_NETNS {}", path.display()), &e),
    })?;
    if link::is_own_netns(&ns) {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("invalid CNI_NETNS: {} is weft-cni's own network namespace (the node's), not a pod's", path.display()),
        ));
    }
    Ok(ns)
}

/// The routes a pod gets: the cluster network (FLANNEL_NETWORK, when it is
/// wider than the node's subnet) and, with `isDefaultGateway`, the default
/// route, both via the bridge, as flannel's CNI plugin sets them up; on a
/// dual-stack node the same for IPv6 (FLANNEL_IPV6_NETWORK, `::/0`) via the
/// IPv6 gateway, after the IPv4 ones; on an IPv6-only node only those.
pub fn pod_routes(conf: &NetConf, env: &SubnetEnv) -> Vec<Route> {
    let mut v = Vec::new();
    if let Some(s4) = env.subnet {
        let gw = Some(IpAddr::V4(s4.host(1)));
        if let Some(net) = env.network {
            if net.prefix_len > 0 && net.prefix_len < s4.prefix_len {
                v.push(Route { dst: IpAddr::V4(net.addr), prefix_len: net.prefix_len, gw });
            }
        }
        if conf.is_default_gateway {
            v.push(Route { dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix_len: 0, gw });
        }
    }
    if let (Some(s6), Some(gw6)) = (env.ipv6_subnet, env.ipv6_gateway()) {
        let gw = Some(IpAddr::V6(gw6));
        if let Some(net) = env.ipv6_network {
            if net.prefix_len > 0 && net.prefix_len < s6.prefix_len {
                v.push(Route { dst: IpAddr::V6(net.addr), prefix_len: net.prefix_len, gw });
            }
        }
        if conf.is_default_gateway {
            v.push(Route { dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix_len: 0, gw });
        }
    }
    v
}

/// The pod's addresses: IPv4 from FLANNEL_SUBNET (a node with IPv4), IPv6
/// from FLANNEL_IPV6_SUBNET (dual stack, IPv6-only); at least one of them,
/// as subnet.env has at least one subnet. If the second cannot be had, the
/// first is released again.
fn allocate(store: &Store, env: &SubnetEnv, att: &Attachment) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let ip = match Range::of(env) {
        Some(r4) => match store.allocate(&r4, &att.container_id, &att.ifname)?.0 {
            IpAddr::V4(ip) => Some(ip),
            other => return Err(CniError::internal(format!("the IPv4 range gave {other}"))),
        },
        None => None,
    };
    let Some(r6) = Range::of_v6(env) else {
        return match ip {
            Some(ip) => Ok((Some(ip), None)),
            None => Err(CniError::internal("subnet.env has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET")),
        };
    };
    match store.allocate(&r6, &att.container_id, &att.ifname) {
        Ok((IpAddr::V6(ip6), _)) => Ok((ip, Some(ip6))),
        Ok((other, _)) => Err(CniError::internal(format!("the IPv6 range gave {other}"))),
        // An IPv6-only node's failed allocation reserved nothing to take back.
        Err(e) => match ip {
            None => Err(e),
            Some(ip) => match store.release(&att.container_id, &att.ifname) {
                Ok(_) => Err(e),
                Err(e2) => Err(e.with_details(format!("releasing {ip} again: {}", e2.msg))),
            },
        },
    }
}

/// What a failed ADD has to take back.
struct Undo<'a> {
    store: &'a Store,
    att: &'a Attachment,
    endpoints_dir: &'a Path,
    host_veth: Option<u32>,
    record: bool,
}

impl Undo<'_> {
    /// Removes what was made; returns what could not be removed.
    fn run(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self.record {
            if let Err(e) = endpoint::remove(self.endpoints_dir, &self.att.container_id, &self.att.ifname) {
                left.push(e.msg);
            }
        }
        if let Some(i) = self.host_veth {
            if let Err(e) = Netlink::new().and_then(|nl| nl.delete(i)) {
                left.push(e.msg);
            }
        }
        if let Err(e) = self.store.release(&self.att.container_id, &self.att.ifname) {
            left.push(e.msg);
        }
        left
    }
}

pub fn add(conf: &NetConf, att: &Attachment) -> Result<Value> {
    let netns = att.netns.as_ref().ok_or_else(|| CniError::new(code::INVALID_ENV, "required environment variable CNI_NETNS is missing"))?;
    let ns = open_pod_netns(netns)?;
    let env = subnet_env::read(&conf.subnet_file)?;
    // The spec: an interface of that name in the pod is an error. Checked
    // before anything is made.
    if in_netns(&ns, |nl| nl.link_by_name(&att.ifname))?.is_some() {
        return Err(CniError::internal(format!("interface {} already exists in {}", att.ifname, netns.display())));
    }
    let store = Store::open(&conf.data_dir, &conf.name, true)?.ok_or_else(|| CniError::internal("address store missing"))?;
    let (ip, ip6) = allocate(&store, &env, att)?;
    let mut undo = Undo { store: &store, att, endpoints_dir: &conf.endpoints_dir, host_veth: None, record: false };
    match wire(conf, att, &ns, &env, ip, ip6, &mut undo) {
        Ok(v) => Ok(v),
        Err(e) => {
            let left = undo.run();
            if left.is_empty() {
                Err(e)
            } else {
                let details = format!("{}{}cleaning up after the failure: {}", e.details, if e.details.is_empty() { "" } else { "; " }, left.join("; "));
                Err(e.with_details(details))
            }
        }
    }
}

fn wire(conf: &NetConf, att: &Attachment, ns: &File, env: &SubnetEnv, ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>, undo: &mut Undo) -> Result<Value> {
    let netns = att.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let nl = Netlink::new()?;
    // (address, gateway, prefix length) per family: with an IPv4 address
    // the node has FLANNEL_SUBNET, with an IPv6 one FLANNEL_IPV6_SUBNET.
    let v4 = ip.zip(env.subnet).map(|(a, s)| (a, s.host(1), s.prefix_len));
    let v6 = ip6.zip(env.ipv6_subnet).zip(env.ipv6_gateway()).map(|((a, s), g)| (a, g, s.prefix_len));
    let bridge = nl.ensure_bridge(&conf.bridge, v4.map(|(_, g, l)| (g, l)), v6.map(|(_, g, l)| (g, l)), env.mtu)?;

    let host = naming::host_veth(&att.container_id, &att.ifname);
    let alias = naming::alias(&conf.name, &att.container_id, &att.ifname);
    if let Some(old) = nl.link_by_name(&host)? {
        // This attachment's, left by an ADD that died half-way (no alias
        // yet, or ours): replace it. Anyone else's: refuse.
        let ours = old.alias.as_deref() == Some(alias.as_str()) || (old.alias.is_none() && old.kind.as_deref() == Some("veth"));
        if !ours {
            return Err(CniError::internal(format!("host veth name {host} is taken by another interface ({})", old.alias.as_deref().unwrap_or("no alias"))));
        }
        nl.delete(old.index)?;
    }
    // From the IPv4 address; an IPv6-only pod's from its IPv6 address.
    let pod_mac = match (ip, ip6) {
        (Some(a), _) => mac_for(a),
        (None, Some(a)) => mac_for6(a),
        (None, None) => return Err(CniError::internal("the pod has no address")),
    };
    nl.create_veth(&host, &att.ifname, pod_mac, env.mtu, ns.as_raw_fd()).map_err(|(errno, msg)| {
        if errno == Some(libc::EEXIST) {
            CniError::internal(format!("{msg} (a device named {host} on the node or {} in the pod appeared meanwhile)", att.ifname))
        } else {
            CniError::internal(msg)
        }
    })?;
    let hv = nl.link_by_name(&host)?.ok_or_else(|| CniError::internal(format!("host veth {host} vanished right after it was created")))?;
    undo.host_veth = Some(hv.index);
    nl.set_alias(hv.index, &alias)?;
    nl.enslave(hv.index, bridge.index, conf.hairpin_mode)?;

    let routes = pod_routes(conf, env);
    let pod = in_netns(ns, |p| {
        let l = p.link_by_name(&att.ifname)?.ok_or_else(|| CniError::internal(format!("{} did not appear in {netns}", att.ifname)))?;
        if let Some((a, _, len)) = v4 {
            p.add_addr(l.index, IpAddr::V4(a), len)?;
        }
        if let Some((a, _, len)) = v6 {
            // Before it is up: its link-local address skips DAD too.
            link::disable_dad(&att.ifname)?;
            p.add_addr(l.index, IpAddr::V6(a), len)?;
        }
        p.set_up(l.index)?;
        for r in &routes {
            let gw = match (r.gw, r.dst, v4, v6) {
                (Some(g), ..) => g,
                (None, IpAddr::V6(_), _, Some((_, g, _))) => IpAddr::V6(g),
                (None, IpAddr::V4(_), Some((_, g, _)), _) => IpAddr::V4(g),
                _ => return Err(CniError::internal(format!("no gateway of the family of route {}/{}", r.dst, r.prefix_len))),
            };
            p.add_route(r.dst, r.prefix_len, gw, l.index)?;
        }
        p.link_by_index(l.index)?.ok_or_else(|| CniError::internal(format!("{} vanished in {netns}", att.ifname)))
    })?;
    let hv = nl.link_by_index(hv.index)?.ok_or_else(|| CniError::internal(format!("host veth {host} vanished")))?;
    let bridge = nl.link_by_index(bridge.index)?.ok_or_else(|| CniError::internal(format!("bridge {} vanished", conf.bridge)))?;
    let mac = |m: Option<[u8; 6]>| m.map(|m| format_mac(&m));

    let rec = EndpointRecord {
        container_id: att.container_id.clone(),
        ifname: att.ifname.clone(),
        netns: netns.clone(),
        ip,
        pod_mac: format_mac(&pod.mac.unwrap_or(pod_mac)),
        host_veth: host.clone(),
        host_ifindex: hv.index,
        bridge: conf.bridge.clone(),
        bridge_mac: mac(bridge.mac).unwrap_or_default(),
        mtu: env.mtu,
        ip6,
    };
    undo.record = true;
    endpoint::write(&conf.endpoints_dir, &rec)?;

    let result = CniResult {
        interfaces: vec![
            Interface { name: bridge.name.clone(), mac: mac(bridge.mac), mtu: Some(bridge.mtu), sandbox: None },
            Interface { name: host, mac: mac(hv.mac), mtu: Some(hv.mtu), sandbox: None },
            Interface { name: att.ifname.clone(), mac: mac(pod.mac), mtu: Some(pod.mtu), sandbox: Some(netns) },
        ],
        ips: v4
            .map(|(a, g, len)| IpConfig { address: IpAddr::V4(a), prefix_len: len, gateway: Some(IpAddr::V4(g)), interface: Some(2) })
            .into_iter()
            .chain(v6.map(|(a, g, len)| IpConfig { address: IpAddr::V6(a), prefix_len: len, gateway: Some(IpAddr::V6(g)), interface: Some(2) }))
            .collect(),
        routes,
        dns: conf.dns.clone(),
    };
    Ok(match &conf.prev_result {
        Some(prev) => result.appended_to(prev, &conf.cni_version),
        None => result.to_json(&conf.cni_version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> NetConf {
        NetConf::parse(br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}"#).unwrap()
    }

    fn routes(env: &str) -> Vec<String> {
        let env = SubnetEnv::parse(env).unwrap();
        pod_routes(&conf(), &env).iter().map(|r| format!("{}/{} via {}", r.dst, r.prefix_len, r.gw.map(|g| g.to_string()).unwrap_or_default())).collect()
    }

    /// IPv4, dual stack, IPv6-only: each family's routes via its own gateway,
    /// and none of a family the node lacks.
    #[test]
    fn routes_per_family() {
        let v4 = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n";
        assert_eq!(routes(v4), ["10.244.0.0/16 via 10.244.5.1", "0.0.0.0/0 via 10.244.5.1"]);
        let v6 = "FLANNEL_IPV6_NETWORK=fd44::/48\nFLANNEL_IPV6_SUBNET=fd44:0:0:5::1/64\nFLANNEL_MTU=1430\n";
        assert_eq!(routes(v6), ["fd44::/48 via fd44:0:0:5::1", "::/0 via fd44:0:0:5::1"]);
        let dual = format!("{v4}{v6}");
        assert_eq!(routes(&dual), ["10.244.0.0/16 via 10.244.5.1", "0.0.0.0/0 via 10.244.5.1", "fd44::/48 via fd44:0:0:5::1", "::/0 via fd44:0:0:5::1"]);
    }
}
