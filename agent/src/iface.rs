//! Choosing the underlay interface and our public address, as flanneld does:
//! `--iface` by name or address, else the interface of the default route.
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use crate::netlink::{Link, Netlink};

#[derive(Debug, Clone)]
pub struct Underlay {
    pub link: Link,
    /// Address on the interface (the outer source of VXLAN packets).
    pub iface_ip: Ipv4Addr,
    /// Address other nodes reach us at (`--public-ip`, else `iface_ip`).
    pub public_ip: Ipv4Addr,
}

pub async fn select(nl: &Netlink, iface: Option<&str>, public_ip: Option<Ipv4Addr>) -> Result<Underlay> {
    let addrs = nl.ipv4_addrs(None).await?;
    let link = match iface {
        Some(spec) => match spec.parse::<Ipv4Addr>() {
            Ok(ip) => {
                let (idx, _, _) = addrs.iter().find(|(_, a, _)| *a == ip)
                    .with_context(|| format!("--iface {spec}: no interface has this address"))?;
                nl.link_by_index(*idx).await?
            }
            Err(_) => nl.link_by_name(spec).await?.with_context(|| format!("--iface {spec}: no such interface"))?,
        },
        None => {
            let idx = nl.default_route_link().await?
                .context("no --iface given and no default route to take the interface from; pass --iface")?;
            nl.link_by_index(idx).await?
        }
    };
    let iface_ip = match iface.and_then(|s| s.parse::<Ipv4Addr>().ok()) {
        Some(ip) => ip,
        None => addrs.iter().find(|(i, a, _)| *i == link.index && !a.is_loopback()).map(|(_, a, _)| *a)
            .with_context(|| format!("interface {} has no IPv4 address", link.name))?,
    };
    if link.mtu < 576 + weft_common::VXLAN_OVERHEAD {
        bail!("interface {} has MTU {}, too small for VXLAN", link.name, link.mtu);
    }
    Ok(Underlay { iface_ip, public_ip: public_ip.unwrap_or(iface_ip), link })
}
