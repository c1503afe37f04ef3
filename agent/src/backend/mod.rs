//! Backends: how pod traffic crosses to other nodes (flannel's
//! `pkg/backend`). A backend reads its part of net-conf's `Backend` section,
//! says what our lease announces and the pods' MTU, starts once our subnet
//! is known, and makes the dataplane match the peers' leases on every
//! reconcile. vxlan ([`vxlan`]: BPF, or the kernel's vxlan device where BPF
//! cannot run), host-gw ([`host_gw`]: routes plus the BPF fast path; its
//! routed part, [`routed`], also serves vxlan's DirectRouting) and udp
//! ([`udp`]: TUN + UDP workers, no BPF).
//!
//! Adding a backend: a module implementing [`Backend`] with a `Config`, and
//! its line in each of the three registrations below ([`Config`]'s variant,
//! [`Config::parse`], [`build`]), all in this file.
pub mod host_gw;
pub mod kernel_vxlan;
pub mod peers;
pub mod peers6;
pub mod routed;
pub mod udp;
pub mod vxlan;
pub mod vxlan6;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use serde::Deserialize;

pub use peers::{Changes, Warned};

use crate::{
    cli::Args,
    health::Health,
    net::{iface::Underlay, netlink::Netlink},
    netconfig::NetConfig,
    subnet::{lease::LeaseAttrs, Ipv4Net, Ipv6Net, Leases, Subnets},
};

/// What one reconcile did: the peers it programs and the entries it changed.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub peers: usize,
    pub changes: Changes,
}

/// What a backend may use of the node.
#[derive(Clone)]
pub struct Node {
    pub args: Arc<Args>,
    pub nl: Netlink,
    pub underlay: Underlay,
    pub health: Arc<Health>,
    /// The IPv4 pod network (None: the network is IPv6-only).
    pub network: Option<Ipv4Net>,
    /// The IPv6 pod network of a dual-stack or IPv6-only cluster (our
    /// PublicIPv6 is in `underlay`).
    pub network6: Option<Ipv6Net>,
    /// Our previous lease, where the subnet manager knows it: a backend
    /// keeps what it announced (vxlan: the VtepMAC) when it must make its
    /// device again.
    pub previous: Option<LeaseAttrs>,
}

/// One backend on one node (flannel's `backend.Backend` + `Network`).
/// Futures are boxed so weftd holds any backend as `Box<dyn Backend>`.
pub trait Backend: Send {
    /// What our lease announces (PublicIP, BackendType, BackendData).
    fn lease_attrs(&self) -> &LeaseAttrs;
    /// The pods' MTU (subnet.env's FLANNEL_MTU).
    fn mtu(&self) -> u32;
    /// Whether weft's BPF programs carry this backend's traffic (if not,
    /// links an earlier run pinned are released before `start`).
    fn uses_bpf(&self) -> bool;
    /// Our subnets are ours: addresses, programs, the fast path.
    fn start<'a>(&'a mut self, own: Subnets) -> BoxFuture<'a, Result<()>>;
    /// Makes the dataplane match the peers in `leases` (ours among them,
    /// skipped); idempotent. One bad lease never affects the others.
    fn reconcile<'a>(&'a mut self, leases: &'a Leases, warned: &'a mut Warned) -> BoxFuture<'a, Result<Reconciled>>;
    /// Removes what this backend made (`--cleanup-on-exit`).
    fn cleanup(&mut self) -> BoxFuture<'_, ()>;
}

/// net-conf's `Backend` section as flannel writes it; each backend reads
/// the fields it knows.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Section {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    #[serde(rename = "VNI")]
    pub vni: Option<u32>,
    pub port: Option<u32>,
    pub direct_routing: Option<bool>,
    #[serde(rename = "GBP")]
    pub gbp: Option<bool>,
}

impl Section {
    /// `Backend.Port`, or `default` when absent or 0.
    pub fn port(&self, default: u16) -> Result<u16> {
        match self.port {
            None | Some(0) => Ok(default),
            Some(p) if p <= 65535 => Ok(p as u16),
            Some(p) => bail!("config field Backend.Port: {p} is not a UDP port"),
        }
    }
}

/// The backend the config names, with its settings (registration 1 of 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    Vxlan(vxlan::Config),
    HostGw,
    Udp(udp::backend::Config),
}

impl Config {
    /// Reads net-conf's `Backend` (flannel's default when absent: udp)
    /// (registration 2 of 3). Errors name the field.
    pub fn parse(v: Option<serde_json::Value>) -> Result<Config> {
        let raw: Section = match v {
            None | Some(serde_json::Value::Null) => Section::default(),
            Some(v) => serde_json::from_value(v).context("config field Backend: not an object of flannel's backend shape")?,
        };
        match raw.kind.as_deref().unwrap_or("udp") {
            "vxlan" => Ok(Config::Vxlan(vxlan::Config::parse(&raw)?)),
            "host-gw" => Ok(Config::HostGw),
            "udp" => Ok(Config::Udp(udp::backend::Config::parse(&raw)?)),
            other => bail!("config field Backend.Type: unknown backend {other:?} (known: vxlan, host-gw, udp)"),
        }
    }
}

/// The backend of `cfg`, set up as far as it can be before our subnet is
/// known (vxlan: the overlay device, whose MAC our lease announces)
/// (registration 3 of 3).
pub async fn build(cfg: &NetConfig, node: Node) -> Result<Box<dyn Backend>> {
    let keep: Vec<String> = match &cfg.backend {
        Config::Vxlan(c) if cfg.ipv6.is_some() => vec![vxlan::overlay_name(c.vni), crate::net::overlay6::name(c.vni)],
        Config::Vxlan(c) => vec![vxlan::overlay_name(c.vni)],
        _ => vec![],
    };
    if cfg.ipv6.is_some() && matches!(cfg.backend, Config::Udp(_)) {
        bail!("config field EnableIPv6: the udp backend carries IPv4 only (as flannel's); use vxlan or host-gw for dual stack");
    }
    remove_stale_overlays(&node.nl, &keep).await;
    Ok(match &cfg.backend {
        Config::Vxlan(c) => Box::new(vxlan::VxlanBackend::new(c, node).await?),
        Config::HostGw => Box::new(host_gw::HostGwBackend::new(node)?),
        Config::Udp(c) => {
            let network = node.network.context("the udp backend carries IPv4 only")?;
            Box::new(udp::backend::UdpBackend::new(c, node, network))
        }
    })
}

/// Removes weft's overlay devices (`weft.<VNI>`, `weft-v6.<VNI>`) that the configured backend
/// does not use, left by a run with another backend or VNI: a vxlan one
/// would keep a socket on the VXLAN port that no weft program guards. Best
/// effort: a failure is logged, and nothing the new backend needs depends
/// on it.
async fn remove_stale_overlays(nl: &Netlink, keep: &[String]) {
    let links = match nl.links().await {
        Ok(l) => l,
        Err(e) => return log::warn!("looking for overlay devices an earlier run left: {e:#}"),
    };
    let ours = |n: &str| vxlan::is_overlay_name(n) || vxlan6::is_overlay6_name(n);
    for l in links.iter().filter(|l| ours(&l.name) && !keep.contains(&l.name)) {
        match nl.delete_link(l.index).await {
            Ok(()) => log::info!("removed {} ({:?}), which an earlier run with another backend or VNI left", l.name, l.kind),
            Err(e) => log::warn!("removing {}, which an earlier run left: {e:#}", l.name),
        }
    }
}
