//! flannel's masquerade and forward rules (pkg/trafficmngr) as data: what
//! weft's nftables table must hold for a node, rule for rule, before any
//! nftables syntax. Pure, so the list is checked against flannel's here.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// kube-proxy marks packets it masquerades itself with 0x4000/0x4000;
/// flannel leaves them alone so they are not translated twice.
pub const KUBE_PROXY_MARK: u32 = 0x4000;

/// An address prefix of either family (the rules are IPv6 ready: the v6 list
/// is the same with ff00::/8 for multicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// The multicast range of the prefix's family (never masqueraded).
    pub fn multicast(&self) -> Cidr {
        match self.addr {
            IpAddr::V4(_) => Cidr { addr: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), len: 4 },
            IpAddr::V6(_) => Cidr { addr: IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), len: 8 },
        }
    }
}

/// One address match: `negated` is iptables' `!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrMatch {
    pub negated: bool,
    pub cidr: Cidr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Return,
    Accept,
    Masquerade { fully_random: bool },
}

/// The two chains of weft's table: nat postrouting (flannel's
/// FLANNEL-POSTRTG) and filter forward (FLANNEL-FWD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Postrouting,
    Forward,
}

impl Chain {
    pub fn name(self) -> &'static str {
        match self {
            Chain::Postrouting => "postrouting",
            Chain::Forward => "forward",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    /// `meta mark & m == m` (iptables `-m mark --mark m/m`).
    pub mark: Option<u32>,
    pub saddr: Option<AddrMatch>,
    pub daddr: Option<AddrMatch>,
    pub verdict: Verdict,
}

/// What a node's rules are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The whole pod network (FLANNEL_NETWORK).
    pub network: Cidr,
    /// This node's lease (FLANNEL_SUBNET's prefix).
    pub subnet: Cidr,
    /// `--ip-masq`.
    pub masquerade: bool,
    /// Not `--ip-masq-fully-random-disable`.
    pub fully_random: bool,
    /// `--iptables-forward-rules`.
    pub forward: bool,
}

/// flannel's rules for `p`, in flannel's order: masquerade (postrouting)
/// when `--ip-masq`, then forward accepts when `--iptables-forward-rules`.
pub fn rules(p: &Params) -> Vec<Rule> {
    let is = |cidr| Some(AddrMatch { negated: false, cidr });
    let not = |cidr| Some(AddrMatch { negated: true, cidr });
    let post = |mark, saddr, daddr, verdict| Rule { chain: Chain::Postrouting, mark, saddr, daddr, verdict };
    let masq = Verdict::Masquerade { fully_random: p.fully_random };
    let (net, sub) = (p.network, p.subnet);
    let mut v = Vec::new();
    if p.masquerade {
        // 1. kube-proxy masquerades what it marked itself.
        v.push(post(Some(KUBE_PROXY_MARK), None, None, Verdict::Return));
        // 2. pod to pod keeps its addresses, both ways.
        v.push(post(None, is(sub), is(net), Verdict::Return));
        v.push(post(None, is(net), is(sub), Verdict::Return));
        // 3. the outside reaching our pods keeps its address.
        v.push(post(None, not(net), is(sub), Verdict::Return));
        // 4. pods to the outside leave with the node's address (not multicast).
        v.push(post(None, is(net), not(net.multicast()), masq));
        // 5. the node or the outside to remote pods.
        v.push(post(None, not(net), is(net), masq));
    }
    if p.forward {
        v.push(Rule { chain: Chain::Forward, mark: None, saddr: is(net), daddr: None, verdict: Verdict::Accept });
        v.push(Rule { chain: Chain::Forward, mark: None, saddr: None, daddr: is(net), verdict: Verdict::Accept });
    }
    v
}

/// The rule as flannel writes it for iptables (without its comment): the
/// form the reference lists, for comparing rule for rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = self.mark {
            parts.push(format!("-m mark --mark {m:#x}/{m:#x}"));
        }
        for (flag, a) in [("-s", self.saddr), ("-d", self.daddr)] {
            if let Some(a) = a {
                parts.push(format!("{}{flag} {}", if a.negated { "! " } else { "" }, a.cidr));
            }
        }
        parts.push(match self.verdict {
            Verdict::Return => "-j RETURN".into(),
            Verdict::Accept => "-j ACCEPT".into(),
            Verdict::Masquerade { fully_random: true } => "-j MASQUERADE --random-fully".into(),
            Verdict::Masquerade { fully_random: false } => "-j MASQUERADE".into(),
        });
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(masquerade: bool, fully_random: bool, forward: bool) -> Params {
        let c = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            Cidr { addr: a.parse().unwrap(), len: l.parse().unwrap() }
        };
        Params { network: c("10.244.0.0/16"), subnet: c("10.244.73.0/24"), masquerade, fully_random, forward }
    }

    fn text(p: &Params, chain: Chain) -> Vec<String> {
        rules(p).iter().filter(|r| r.chain == chain).map(|r| r.to_string()).collect()
    }

    /// flannel-compat.md, "Masquerade", with Network 10.244.0.0/16 and Subnet 10.244.73.0/24.
    #[test]
    fn flannels_list_rule_for_rule() {
        let p = params(true, true, true);
        assert_eq!(
            text(&p, Chain::Postrouting),
            [
                "-m mark --mark 0x4000/0x4000 -j RETURN",
                "-s 10.244.73.0/24 -d 10.244.0.0/16 -j RETURN",
                "-s 10.244.0.0/16 -d 10.244.73.0/24 -j RETURN",
                "! -s 10.244.0.0/16 -d 10.244.73.0/24 -j RETURN",
                "-s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
                "! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE --random-fully",
            ]
        );
        assert_eq!(text(&p, Chain::Forward), ["-s 10.244.0.0/16 -j ACCEPT", "-d 10.244.0.0/16 -j ACCEPT"]);
    }

    #[test]
    fn flags_select_the_parts() {
        let no_random = text(&params(true, false, true), Chain::Postrouting);
        assert!(no_random.iter().filter(|r| r.contains("MASQUERADE")).all(|r| r.ends_with("-j MASQUERADE")), "{no_random:?}");
        assert!(text(&params(false, true, true), Chain::Postrouting).is_empty(), "no --ip-masq: no nat rules");
        assert!(text(&params(true, true, false), Chain::Forward).is_empty(), "--iptables-forward-rules=false: no forward rules");
        assert!(rules(&params(false, true, false)).is_empty());
    }

    /// flannel's ip6tables list for a dual-stack node: the same shape.
    #[test]
    fn ipv6_list_rule_for_rule() {
        let c = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            Cidr { addr: a.parse().unwrap(), len: l.parse().unwrap() }
        };
        let p = Params { network: c("fd44::/48"), subnet: c("fd44:0:0:49::/64"), masquerade: true, fully_random: true, forward: true };
        assert_eq!(
            text(&p, Chain::Postrouting),
            [
                "-m mark --mark 0x4000/0x4000 -j RETURN",
                "-s fd44:0:0:49::/64 -d fd44::/48 -j RETURN",
                "-s fd44::/48 -d fd44:0:0:49::/64 -j RETURN",
                "! -s fd44::/48 -d fd44:0:0:49::/64 -j RETURN",
                "-s fd44::/48 ! -d ff00::/8 -j MASQUERADE --random-fully",
                "! -s fd44::/48 -d fd44::/48 -j MASQUERADE --random-fully",
            ]
        );
    }

    #[test]
    fn ipv6_multicast_is_ff00() {
        let c = Cidr { addr: "fc00::".parse().unwrap(), len: 48 };
        assert_eq!(c.multicast().to_string(), "ff00::/8");
    }
}
