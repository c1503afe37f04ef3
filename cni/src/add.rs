//! ADD: an address from the node's subnet, the node bridge, a veth pair
//! into the pod with address, MTU and routes, the endpoint record, the
//! result. On any failure everything this ADD made is removed again (the
//! bridge, shared by all pods, stays), so a failed ADD leaves nothing.
use std::{fs::File, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use serde_json::Value;
use weft_common::mac::format_mac;

use crate::{
    config::NetConf,
    endpoint::{self, EndpointRecord},
    env::Attachment,
    error::{code, CniError, Result},
    ipam::{Range, Store},
    link::{self, in_netns, mac_for, Netlink},
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
/// route, both via the bridge, as flannel's CNI plugin sets them up.
pub fn pod_routes(conf: &NetConf, env: &SubnetEnv) -> Vec<Route> {
    let gw = Some(env.gateway());
    let mut v = Vec::new();
    if let Some(net) = env.network {
        if net.prefix_len > 0 && net.prefix_len < env.prefix_len {
            v.push(Route { dst: net.addr, prefix_len: net.prefix_len, gw });
        }
    }
    if conf.is_default_gateway {
        v.push(Route { dst: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gw });
    }
    v
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
    let (ip, _reused) = store.allocate(&Range::of(&env), &att.container_id, &att.ifname)?;
    let mut undo = Undo { store: &store, att, endpoints_dir: &conf.endpoints_dir, host_veth: None, record: false };
    match wire(conf, att, &ns, &env, ip, &mut undo) {
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

fn wire(conf: &NetConf, att: &Attachment, ns: &File, env: &SubnetEnv, ip: Ipv4Addr, undo: &mut Undo) -> Result<Value> {
    let netns = att.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let nl = Netlink::new()?;
    let bridge = nl.ensure_bridge(&conf.bridge, env.gateway(), env.prefix_len, env.mtu)?;

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
    let pod_mac = mac_for(ip);
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
        p.add_addr(l.index, ip, env.prefix_len)?;
        p.set_up(l.index)?;
        for r in &routes {
            p.add_route(r.dst, r.prefix_len, r.gw.unwrap_or(env.gateway()), l.index)?;
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
        ip6: None,
    };
    undo.record = true;
    endpoint::write(&conf.endpoints_dir, &rec)?;

    let result = CniResult {
        interfaces: vec![
            Interface { name: bridge.name.clone(), mac: mac(bridge.mac), mtu: Some(bridge.mtu), sandbox: None },
            Interface { name: host, mac: mac(hv.mac), mtu: Some(hv.mtu), sandbox: None },
            Interface { name: att.ifname.clone(), mac: mac(pod.mac), mtu: Some(pod.mtu), sandbox: Some(netns) },
        ],
        ips: vec![IpConfig { address: ip, prefix_len: env.prefix_len, gateway: Some(env.gateway()), interface: Some(2) }],
        routes,
        dns: conf.dns.clone(),
    };
    Ok(match &conf.prev_result {
        Some(prev) => result.appended_to(prev, &conf.cni_version),
        None => result.to_json(&conf.cni_version),
    })
}
