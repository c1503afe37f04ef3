//! Choosing the underlay interface and our public address, as flanneld does:
//! `--iface` (name or address, repeatable, first match wins), then
//! `--iface-regex` (matched against names and addresses), then
//! `--iface-can-reach` (the interface of the route to that address), else the
//! interface of the default route. The choice itself is a pure function of
//! what netlink reports, so it is unit-tested without a network. On an
//! IPv6-only network the interface needs no IPv4 address (our PublicIP is
//! then 0.0.0.0, as flanneld's lease says) and the default route is IPv6's.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::netlink::{Link, Netlink};
use crate::subnet::Ipv4Net;

#[derive(Debug, Clone)]
pub struct Underlay {
    pub link: Link,
    /// Address on the interface (the outer source of VXLAN packets);
    /// 0.0.0.0 on an IPv6-only network.
    pub iface_ip: Ipv4Addr,
    /// Address other nodes reach us at (`--public-ip`, else `iface_ip`);
    /// 0.0.0.0 on an IPv6-only network.
    pub public_ip: Ipv4Addr,
    /// Our IPv6 address on a dual-stack network (PublicIPv6): also the
    /// outer source of IPv6 VXLAN.
    pub public_ipv6: Option<Ipv6Addr>,
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub ifaces: Vec<String>,
    pub regexes: Vec<String>,
    pub can_reach: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
    /// The network carries IPv6 only: no IPv4 address is needed or used.
    pub ipv6_only: bool,
}

/// What the kernel has: links, IPv4 addresses (ifindex, address), and IPv4
/// routes of the main table (destination, output ifindex).
pub struct Inventory {
    pub links: Vec<Link>,
    pub addrs: Vec<(u32, Ipv4Addr)>,
    pub routes: Vec<(Ipv4Net, u32)>,
    /// The output interface of the IPv6 default route, if there is one.
    pub default6: Option<u32>,
}

impl Inventory {
    fn first_addr(&self, index: u32) -> Option<Ipv4Addr> {
        self.addrs.iter().find(|(i, a)| *i == index && !a.is_loopback()).map(|(_, a)| *a)
    }
    fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    /// Longest-prefix match in the main table.
    fn route_to(&self, ip: Ipv4Addr) -> Option<u32> {
        self.routes.iter().filter(|(n, _)| n.contains(ip)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, i)| *i)
    }
}

/// The pure choice: (link, address on it).
/// On an IPv6-only network the address is 0.0.0.0.
pub fn choose(inv: &Inventory, sel: &Selector) -> Result<(Link, Ipv4Addr)> {
    if sel.ipv6_only {
        return choose_ipv6_only(inv, sel).map(|l| (l, Ipv4Addr::UNSPECIFIED));
    }
    let with_addr = |l: &Link, ip: Option<Ipv4Addr>| -> Option<(Link, Ipv4Addr)> { Some((l.clone(), ip.or_else(|| inv.first_addr(l.index))?)) };
    if !sel.ifaces.is_empty() {
        for spec in &sel.ifaces {
            let found = match spec.parse::<Ipv4Addr>() {
                Ok(ip) => inv.addrs.iter().find(|(_, a)| *a == ip).and_then(|(i, _)| inv.link(*i)).and_then(|l| with_addr(l, Some(ip))),
                Err(_) => inv.links.iter().find(|l| l.name == *spec).and_then(|l| with_addr(l, None)),
            };
            if let Some(f) = found {
                return Ok(f);
            }
            log::warn!("--iface {spec}: no such interface with an IPv4 address; trying the next");
        }
        bail!("none of --iface {} names an interface with an IPv4 address", sel.ifaces.join(", "));
    }
    if !sel.regexes.is_empty() {
        for r in &sel.regexes {
            let re = Regex::new(r).with_context(|| format!("--iface-regex {r:?} is not a valid regular expression"))?;
            for (index, ip) in &inv.addrs {
                if ip.is_loopback() {
                    continue;
                }
                let Some(l) = inv.link(*index) else { continue };
                if re.is_match(&ip.to_string()) || re.is_match(&l.name) {
                    return Ok((l.clone(), *ip));
                }
            }
        }
        bail!("no interface name or IPv4 address matches --iface-regex {}", sel.regexes.join(", "));
    }
    if let Some(dst) = sel.can_reach {
        let index = inv.route_to(dst).with_context(|| format!("--iface-can-reach {dst}: no route to it"))?;
        let l = inv.link(index).with_context(|| format!("--iface-can-reach {dst}: route via unknown link #{index}"))?;
        return with_addr(l, None).with_context(|| format!("--iface-can-reach {dst}: interface {} has no IPv4 address", l.name));
    }
    let index = inv
        .route_to(Ipv4Addr::UNSPECIFIED)
        .filter(|_| inv.routes.iter().any(|(n, _)| n.prefix_len() == 0))
        .context("no --iface given and no default route to take the interface from; pass --iface")?;
    let l = inv.link(index).with_context(|| format!("default route via unknown link #{index}"))?;
    with_addr(l, None).with_context(|| format!("interface {} (default route) has no IPv4 address", l.name))
}

/// The interface on an IPv6-only network: `--iface` by name, `--iface-regex`
/// on names, else the IPv6 default route's (IPv4 addresses and routes play
/// no part).
fn choose_ipv6_only(inv: &Inventory, sel: &Selector) -> Result<Link> {
    if !sel.ifaces.is_empty() {
        if let Some(l) = sel.ifaces.iter().find_map(|spec| inv.links.iter().find(|l| l.name == *spec)) {
            return Ok(l.clone());
        }
        bail!("none of --iface {} names an interface (on an IPv6-only network --iface takes interface names)", sel.ifaces.join(", "));
    }
    if !sel.regexes.is_empty() {
        for r in &sel.regexes {
            let re = Regex::new(r).with_context(|| format!("--iface-regex {r:?} is not a valid regular expression"))?;
            if let Some(l) = inv.links.iter().find(|l| l.name != "lo" && re.is_match(&l.name)) {
                return Ok(l.clone());
            }
        }
        bail!("no interface name matches --iface-regex {} (on an IPv6-only network it matches names)", sel.regexes.join(", "));
    }
    if let Some(dst) = sel.can_reach {
        bail!("--iface-can-reach {dst}: an IPv4 address, and the network is IPv6-only; pass --iface");
    }
    let index = inv.default6.context("no --iface given and no IPv6 default route to take the interface from (IPv6-only network); pass --iface")?;
    inv.link(index).cloned().with_context(|| format!("IPv6 default route via unknown link #{index}"))
}

pub async fn select(nl: &Netlink, sel: &Selector) -> Result<Underlay> {
    let inv = Inventory {
        links: nl.links().await?,
        addrs: nl.ipv4_addrs(None).await?.into_iter().map(|(i, a, _)| (i, a)).collect(),
        routes: nl.main_routes().await?,
        default6: if sel.ipv6_only { nl.default_route6_oif().await? } else { None },
    };
    let (link, iface_ip) = choose(&inv, sel)?;
    if link.mtu < 576 + weft_common::VXLAN_OVERHEAD {
        bail!("interface {} has MTU {}, too small for VXLAN", link.name, link.mtu);
    }
    let public_ip = if sel.ipv6_only { Ipv4Addr::UNSPECIFIED } else { sel.public_ip.unwrap_or(iface_ip) };
    Ok(Underlay { iface_ip, public_ip, public_ipv6: None, link })
}

/// Our PublicIPv6, as flanneld picks it: `--public-ipv6`, else the first
/// global IPv6 address of the underlay interface.
pub async fn public_ipv6(nl: &Netlink, link: &Link, flag: Option<Ipv6Addr>) -> Result<Ipv6Addr> {
    if let Some(a) = flag {
        return Ok(a);
    }
    let addrs = nl.ipv6_global_addrs(link.index).await?;
    addrs.first().map(|(a, _)| *a).with_context(|| {
        format!(
            "EnableIPv6: interface {} has no global IPv6 address (link-local and tentative ones do not count); give it one or pass --public-ipv6",
            link.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link { name: name.into(), index, mtu: 1500, mac: None, kind: None }
    }

    fn inv() -> Inventory {
        Inventory {
            links: vec![link(1, "lo"), link(2, "eth0"), link(3, "ens5"), link(4, "wg0")],
            addrs: vec![
                (1, "127.0.0.1".parse().unwrap()),
                (2, "192.168.1.10".parse().unwrap()),
                (3, "10.9.0.5".parse().unwrap()),
                (3, "10.9.0.6".parse().unwrap()),
            ],
            routes: vec![
                ("0.0.0.0/0".parse().unwrap(), 2),
                ("192.168.1.0/24".parse().unwrap(), 2),
                ("10.9.0.0/16".parse().unwrap(), 3),
                ("10.9.8.0/24".parse().unwrap(), 4),
            ],
            default6: Some(3),
        }
    }

    fn sel() -> Selector {
        Selector::default()
    }

    fn pick(s: &Selector) -> (String, String) {
        let (l, ip) = choose(&inv(), s).unwrap();
        (l.name, ip.to_string())
    }

    #[test]
    fn default_route_interface() {
        assert_eq!(pick(&sel()), ("eth0".into(), "192.168.1.10".into()));
    }

    #[test]
    fn iface_by_name_or_address_first_match_wins() {
        assert_eq!(pick(&Selector { ifaces: vec!["ens5".into()], ..sel() }), ("ens5".into(), "10.9.0.5".into()));
        assert_eq!(pick(&Selector { ifaces: vec!["10.9.0.6".into()], ..sel() }), ("ens5".into(), "10.9.0.6".into()));
        assert_eq!(pick(&Selector { ifaces: vec!["nope".into(), "wg0".into(), "eth0".into()], ..sel() }), ("eth0".into(), "192.168.1.10".into()));
        let e = choose(&inv(), &Selector { ifaces: vec!["nope".into()], ..sel() }).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn regex_on_names_and_addresses() {
        assert_eq!(pick(&Selector { regexes: vec!["^ens".into()], ..sel() }), ("ens5".into(), "10.9.0.5".into()));
        assert_eq!(pick(&Selector { regexes: vec![r"^192\.168\.".into()], ..sel() }), ("eth0".into(), "192.168.1.10".into()));
        assert!(format!("{:#}", choose(&inv(), &Selector { regexes: vec!["(".into()], ..sel() }).unwrap_err()).contains("not a valid regular expression"));
        assert!(choose(&inv(), &Selector { regexes: vec!["^xyz".into()], ..sel() }).is_err());
    }

    #[test]
    fn can_reach_uses_the_longest_prefix_route() {
        assert_eq!(pick(&Selector { can_reach: Some("10.9.3.3".parse().unwrap()), ..sel() }), ("ens5".into(), "10.9.0.5".into()));
        assert_eq!(pick(&Selector { can_reach: Some("8.8.8.8".parse().unwrap()), ..sel() }), ("eth0".into(), "192.168.1.10".into()));
        // wg0 carries the /24 but has no address: a clear error, not a wrong pick.
        let e = format!("{:#}", choose(&inv(), &Selector { can_reach: Some("10.9.8.1".parse().unwrap()), ..sel() }).unwrap_err());
        assert!(e.contains("wg0") && e.contains("no IPv4 address"), "{e}");
    }

    #[test]
    fn ipv6_only_needs_no_ipv4_address() {
        let v6 = |s: Selector| Selector { ipv6_only: true, ..s };
        // wg0 has no IPv4 address: fine on an IPv6-only network; the address is 0.0.0.0.
        assert_eq!(pick(&v6(Selector { ifaces: vec!["nope".into(), "wg0".into()], ..sel() })), ("wg0".into(), "0.0.0.0".into()));
        assert_eq!(pick(&v6(sel())), ("ens5".into(), "0.0.0.0".into()), "the IPv6 default route's interface");
        assert_eq!(pick(&v6(Selector { regexes: vec!["^wg".into()], ..sel() })), ("wg0".into(), "0.0.0.0".into()));
        let e = choose(&inv(), &v6(Selector { can_reach: Some("10.9.3.3".parse().unwrap()), ..sel() })).unwrap_err().to_string();
        assert!(e.contains("IPv6-only"), "{e}");
        let mut i = inv();
        i.default6 = None;
        assert!(choose(&i, &v6(sel())).unwrap_err().to_string().contains("no IPv6 default route"));
    }

    #[test]
    fn no_default_route_is_a_clear_error() {
        let mut i = inv();
        i.routes.retain(|(n, _)| n.prefix_len() != 0);
        assert!(choose(&i, &sel()).unwrap_err().to_string().contains("no default route"));
    }
}
