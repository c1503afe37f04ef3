//! The host-gw backend: no encapsulation, each peer's subnet routed `via
//! <its PublicIP> dev <underlay>` as flanneld routes it ([`super::routed`]),
//! plus, where BPF runs and unless `--no-fast-path`, the fast path: pod
//! endpoints, `weft_fwd` on the pod bridge and `weft_to_pod` on the underlay.
//! Its programs stand aside once weftd has been gone past its deadline
//! (`--datapath-grace-secs`): the routes alone carry every peer then.
//! On a dual-stack network the IPv6 subnets are routed `via <PublicIPv6>`
//! the same way ([`super::peers6`], [`routed::apply_host_gw6`]), and the
//! fast path carries them too (`weft_hostgw6`). An IPv6-only network has
//! only the IPv6 half.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{bail, Result};
use futures::future::BoxFuture;
use weft_common::DatapathConfig;

use super::{
    peers::{desired, Warned},
    peers6::{desired6, sync_routes6},
    routed::{self, Routed},
    Backend, Node, Reconciled,
};
use crate::{
    dataplane::{
        self,
        fast_path::{self, FastPath},
        Datapath,
    },
    subnet::{lease::LeaseAttrs, Ipv4Net, Leases, Subnets},
};

pub struct HostGwBackend {
    node: Node,
    bpf: bool,
    attrs: LeaseAttrs,
    routed: Routed,
    /// The fast path's map and programs (none on the kernel datapath).
    dp: Option<Datapath>,
    fast: Option<FastPath>,
    own: Option<Subnets>,
}

impl HostGwBackend {
    pub fn new(node: Node) -> Result<HostGwBackend> {
        let u = &node.underlay;
        // flannel's rule: host-gw routes to PublicIPs, so they must be
        // the addresses the peers' packets really arrive at.
        if u.public_ip != u.iface_ip {
            bail!(
                "the host-gw backend needs PublicIP {} on interface {} (it has {}): behind NAT host-gw cannot work; use vxlan",
                u.public_ip,
                u.link.name,
                u.iface_ip
            );
        }
        let bpf = dataplane::choose_bpf(&node.args)?;
        let attrs = match (node.network, u.public_ipv6) {
            (None, Some(pip6)) => LeaseAttrs::ipv6_only("host-gw", pip6, None),
            (_, pip6) => {
                let attrs = LeaseAttrs::host_gw(u.public_ip);
                if let Some(pip6) = pip6 {
                    attrs.with_ipv6(pip6, None)
                } else {
                    attrs
                }
            }
        };
        let routed = Routed::new(u.link.index);
        Ok(HostGwBackend { node, bpf, attrs, routed, dp: None, fast: None, own: None })
    }
}

/// host-gw peers: remote subnet -> the peer's PublicIP (the next hop).
pub fn desired_host_gw(leases: &Leases, own: &Ipv4Net, network: &Ipv4Net, warned: &mut Warned) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    desired(leases, own, network, warned, |l| match l.attrs.backend_type.as_deref() {
        Some("host-gw") => Ok(l.attrs.public_ip),
        other => anyhow::bail!("BackendType is {:?}, not \"host-gw\"", other.unwrap_or("(none: udp)")),
    })
}

impl Backend for HostGwBackend {
    fn lease_attrs(&self) -> &LeaseAttrs {
        &self.attrs
    }
    fn mtu(&self) -> u32 {
        self.node.underlay.link.mtu
    }
    fn uses_bpf(&self) -> bool {
        self.bpf
    }
    fn start<'a>(&'a mut self, own: Subnets) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (args, underlay) = (&self.node.args, &self.node.underlay);
            log::info!("host-gw: peers on this L2 segment are routed via their PublicIP on {}", underlay.link.name);
            if self.bpf {
                let mut dp = dataplane::start(args, &self.node.health)?;
                // No VXLAN here: only the flags matter (kernel logs off at start).
                dp.set_config(&DatapathConfig::default())?;
                // Past weftd's deadline the fast path's programs stand aside
                // for the routes, which carry every peer alone.
                dp.keep_deadline(Duration::from_secs(args.datapath_grace_secs))?;
                self.fast = FastPath::from_args(args, &mut dp, true)?;
                if self.fast.is_none() {
                    let n = routed::clear_hostgw6(&mut dp)?;
                    if n > 0 {
                        log::info!("fast path off: removed {n} IPv6 host-gw entries an earlier run left in weft_hostgw6");
                    }
                }
                fast_path::receiving_half(&mut dp, self.fast.is_some(), &underlay.link)?;
                self.dp = Some(dp);
            }
            self.own = Some(own);
            Ok(())
        })
    }
    fn reconcile<'a>(&'a mut self, leases: &'a Leases, warned: &'a mut Warned) -> BoxFuture<'a, Result<Reconciled>> {
        Box::pin(async move {
            let Some(own) = self.own else { bail!("host-gw backend not started") };
            let nl = &self.node.nl;
            // IPv4 peers, unless the network is IPv6-only (then none: any
            // IPv4 route an earlier run made goes).
            let want = match (own.v4, self.node.network) {
                (Some(own4), Some(net4)) => desired_host_gw(leases, &own4, &net4, warned),
                _ => BTreeMap::new(),
            };
            let mut dp = match (self.dp.as_mut(), self.fast.as_mut()) {
                (Some(dp), Some(f)) => {
                    f.ensure(dp, nl).await;
                    Some(dp)
                }
                _ => None,
            };
            let mut changes = self.routed.apply(nl, &want, dp.as_deref_mut()).await?;
            if let Some(net4) = &self.node.network {
                routed::ensure_unreachable(nl, net4, &mut changes).await;
            }
            let mut peers = want.len();
            if let (Some(own6), Some(net6)) = (own.v6, self.node.network6) {
                // IPv6 peers: `<v6 subnet> via <PublicIPv6> dev <underlay>`, flannel's routes,
                // and with the fast path on, weft_hostgw6 kept with them.
                let want6 = desired6(leases, &own6, &net6, warned, |l, pip6| match l.attrs.backend_type.as_deref() {
                    Some("host-gw") => Ok(Some(pip6)),
                    other => anyhow::bail!("BackendType is {:?}, not \"host-gw\"", other.unwrap_or("(none: udp)")),
                });
                changes.merge(routed::apply_host_gw6(nl, self.node.underlay.link.index, &want6, dp).await?);
                peers = peers.max(want6.len());
            } else if let Some(dp) = dp {
                // No IPv6 here (any more): nothing for the fast path to forward.
                routed::clear_hostgw6(dp)?;
            }
            Ok(Reconciled { peers, changes })
        })
    }
    fn cleanup(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The fast path's IPv6 entries leave before their routes.
            if let Some(Err(e)) = self.dp.as_mut().map(routed::clear_hostgw6) {
                log::warn!("clearing weft_hostgw6: {e:#}");
            }
            self.routed.cleanup(&self.node.nl).await;
            if let Err(e) = sync_routes6(&self.node.nl, self.node.underlay.link.index, &BTreeMap::new()).await {
                log::warn!("removing host-gw's IPv6 routes: {e:#}");
            }
            // Unpinning the links detaches the fast path.
            if let Some(Err(e)) = self.dp.as_ref().map(|d| d.remove_pins()) {
                log::warn!("{e:#}");
            }
        })
    }
}
