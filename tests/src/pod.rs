//! Pod namespaces wired to a node: by weft-cni as a runtime runs it, or by
//! hand the two ways CNI plugins do it.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::{
    cni::{self, WeftCni},
    netns::Netns,
    subnet_env::SubnetEnv,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wiring {
    /// flannel's usual CNI: node bridge `cni0` holding <subnet>.1/24, pod
    /// veth enslaved, pod address /24, default route via <subnet>.1.
    Bridge,
    /// Calico style: pod address /32 with `default dev eth0`, node-side veth
    /// with proxy_arp and a /32 route to the pod.
    VethRoute,
    /// weft-cni's ADD, run as a container runtime runs it (what the lab
    /// uses): cni0, a veth pair, an address from the node's subnet.env.
    /// Its addresses come from weft-cni's store, so do not mix it with
    /// `Bridge` pods (numbered by the harness) on one node.
    Cni,
}

pub struct Pod {
    pub ip: Ipv4Addr,
    pub wiring: Wiring,
    /// Node number the pod lives on.
    pub node: u32,
    /// Node-side veth name (in the node's namespace).
    pub host_veth: String,
    /// For `Wiring::Cni`: the container ID and weft-cni's ADD result.
    pub cni: Option<(String, serde_json::Value)>,
    pub ns: Netns,
}

/// Creates `cni0` in the node with <subnet>.1/<len> if it is not there yet.
fn ensure_bridge(node: &Netns, env: &SubnetEnv) -> Result<()> {
    if node.ip(&["link", "show", "cni0"]).is_ok() {
        return Ok(());
    }
    let mtu = env.mtu.to_string();
    node.ip(&["link", "add", "cni0", "mtu", &mtu, "type", "bridge"])?;
    node.ip(&["addr", "add", &format!("{}/{}", env.host(1), env.prefix_len), "dev", "cni0"])?;
    node.ip(&["link", "set", "cni0", "up"])?;
    Ok(())
}

impl Pod {
    /// Creates pod namespace `pod_ns` as pod number `k` (address <subnet>.(k+1))
    /// of node `n` (namespace `node`), MTU = FLANNEL_MTU.
    pub fn create(node: &Netns, n: u32, env: &SubnetEnv, k: u32, wiring: Wiring, pod_ns: &str) -> Result<Pod> {
        let ns = Netns::create(pod_ns)?;
        let ip = env.host(k + 1);
        let host_veth = format!("vp{k}");
        let mtu = env.mtu.to_string();
        let r = (|| -> Result<()> {
            node.ip(&["link", "add", &host_veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu, "netns", pod_ns])?;
            match wiring {
                Wiring::Bridge => {
                    ensure_bridge(node, env)?;
                    node.ip(&["link", "set", &host_veth, "master", "cni0", "up"])?;
                    ns.ip(&["addr", "add", &format!("{ip}/{}", env.prefix_len), "dev", "eth0"])?;
                    ns.ip(&["link", "set", "eth0", "up"])?;
                    ns.ip(&["route", "add", "default", "via", &env.host(1).to_string()])?;
                }
                Wiring::Cni => anyhow::bail!("Wiring::Cni pods are made by Pod::create_cni"),
                Wiring::VethRoute => {
                    node.sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp"), "1")?;
                    // Answer at once (default: a random delay up to 0.8 s), as Calico does.
                    node.sysctl(&format!("net.ipv4.neigh.{host_veth}.proxy_delay"), "0")?;
                    node.ip(&["link", "set", &host_veth, "up"])?;
                    node.ip(&["route", "add", &format!("{ip}/32"), "dev", &host_veth])?;
                    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
                    ns.ip(&["link", "set", "eth0", "up"])?;
                    ns.ip(&["route", "add", "default", "dev", "eth0"])?;
                }
            }
            Ok(())
        })();
        r.with_context(|| format!("wiring pod {pod_ns} ({wiring:?}) to node netns {}", node.name()))?;
        Ok(Pod { ip, wiring, node: n, host_veth, cni: None, ns })
    }

    /// Creates pod namespace `pod_ns` on node `n` and runs weft-cni's ADD
    /// for it (container ID = the namespace's name, interface eth0).
    pub fn create_cni(node: &Netns, n: u32, cni: &WeftCni, pod_ns: &str) -> Result<Pod> {
        let ns = Netns::create(pod_ns)?;
        let result = cni.add(node, pod_ns, &ns)?.result().with_context(|| format!("weft-cni ADD for pod {pod_ns} on node netns {}", node.name()))?;
        let ip = cni::result_ip(&result)?;
        let host_veth = result["interfaces"][1]["name"].as_str().with_context(|| format!("no host veth in {result}"))?.to_string();
        Ok(Pod { ip, wiring: Wiring::Cni, node: n, host_veth, cni: Some((pod_ns.to_string(), result)), ns })
    }
}
