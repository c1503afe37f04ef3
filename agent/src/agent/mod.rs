//! `weftd` (the daemon): a list of named steps that bring a node up, as
//! flanneld's main does, then the event loop ([`event_loop`]) that keeps
//! the dataplane equal to the leases until a signal. Which subnet manager
//! and which backend run is decided in [`crate::subnet::from_args`] and
//! [`crate::backend::build`]; nothing here knows their kinds.
mod event_loop;
mod stop;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Result;

use crate::{
    backend::{self, Backend},
    cli::Args,
    dataplane, egress,
    health::{self, Health},
    net::{iface, netlink::Netlink},
    subnet::{self, SubnetManager, Subnets},
    subnet_env,
};

pub async fn run(args: Args) -> Result<()> {
    let args = Arc::new(args);
    let mut stop = stop::Stop::install()?;
    // Until we hold a lease a signal just ends weftd (nothing of ours to
    // remove but the overlay device, which a restart reuses).
    let signalled = |s: &str| -> Result<()> {
        log::info!("{s} while starting: exiting");
        Ok(())
    };
    let health = serve_health(&args).await?;
    let manager = tokio::select! {
        m = subnet_manager(&args, &health) => m?,
        s = stop.signalled() => return signalled(s),
    };
    let cfg = tokio::select! {
        c = manager.network_config(&health) => c?,
        s = stop.signalled() => return signalled(s),
    };
    health.stage("setting up the node");
    let nl = Netlink::new()?;
    let hints = tokio::select! {
        h = manager.node_hints(&health) => h?,
        s = stop.signalled() => return signalled(s),
    };
    let public_ipv6 = args.public_ipv6.or(hints.public_ipv6);
    let underlay = underlay(&args, &nl, args.public_ip.or(hints.public_ip), cfg.ipv4.is_none(), cfg.ipv6.is_some().then_some(public_ipv6)).await?;
    let node = backend::Node {
        args: args.clone(),
        nl: nl.clone(),
        underlay,
        health: health.clone(),
        network: cfg.network4(),
        network6: cfg.network6(),
        previous: hints.previous,
    };
    let mut backend = backend::build(&cfg, node).await?;
    let own = tokio::select! {
        o = acquire_lease(&args, manager.as_ref(), &cfg, backend.as_ref(), &health) => o?,
        s = stop.signalled() => return signalled(s),
    };
    // From here a signal goes through the shutdown path below.
    let started = async {
        start_backend(&args, backend.as_mut(), own).await?;
        write_subnet_env(&args, &cfg, own, backend.mtu(), &health)
    };
    let started = tokio::select! {
        r = started => r.map(|()| true),
        s = stop.signalled() => signalled(s).map(|()| false),
    };
    let (v4, v6) = (cfg.network4().zip(own.v4), cfg.network6().zip(own.v6));
    let egress = if matches!(started, Ok(true)) { start_egress(&args, v4, v6) } else { None };
    let mut node = event_loop::EventLoop::new(backend, health.clone(), egress);
    let res = match started {
        Ok(true) => {
            let watch = manager.clone().run(own, node.lease_attrs().clone(), health);
            node.run(&args, watch, &mut stop).await
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    if args.cleanup_on_exit {
        log::info!("--cleanup-on-exit: removing lease {own}, routes, devices, programs, pins and egress rules");
        if let Err(e) = manager.release(&own).await {
            log::warn!("{e:#}");
        }
        if let Some(Err(e)) = match cfg.network4() {
            Some(net4) => Some(nl.delete_unreachable(&net4).await),
            None => None,
        } {
            log::warn!("{e:#}");
        }
        if let Some(c6) = &cfg.ipv6 {
            if let Err(e) = nl.delete_unreachable6(&c6.network).await {
                log::warn!("{e:#}");
            }
        }
        node.cleanup(args.ip_masq || args.iptables_forward_rules).await;
    } else {
        log::info!("leaving lease {own}, routes, programs and egress rules in place (pass --cleanup-on-exit to remove them)");
    }
    res
}

/// `/healthz`, `/readyz` and `/metrics` on `--healthz-port` (0: none).
async fn serve_health(args: &Args) -> Result<Arc<Health>> {
    let health = Arc::new(Health::default());
    if args.healthz_port != 0 {
        health::spawn(SocketAddr::new(args.healthz_ip, args.healthz_port), health.clone()).await?;
    }
    Ok(health)
}

/// Where the leases live (etcd, or the embedded store).
async fn subnet_manager(args: &Args, health: &Health) -> Result<Arc<dyn SubnetManager>> {
    health.stage("connecting to the lease store");
    let manager = subnet::from_args(args).await?;
    log::info!("leases: {}", manager.describe());
    Ok(manager)
}

/// The underlay interface and our PublicIP (`--iface`, ...; `public_ip`:
/// `--public-ip`, else what the subnet manager dictates; 0.0.0.0 on an
/// IPv6-only network); on a network that carries IPv6 (`ipv6` Some) also
/// our PublicIPv6 (the address inside: `--public-ipv6`, else the
/// manager's; else the interface's).
async fn underlay(
    args: &Args,
    nl: &Netlink,
    public_ip: Option<std::net::Ipv4Addr>,
    ipv6_only: bool,
    ipv6: Option<Option<std::net::Ipv6Addr>>,
) -> Result<iface::Underlay> {
    if ipv6_only && public_ip.is_some() {
        log::warn!("--public-ip is ignored: the network is IPv6-only (EnableIPv4 false); our lease's PublicIP is 0.0.0.0 as flanneld's");
    }
    let selector = iface::Selector { ifaces: args.iface.clone(), regexes: args.iface_regex.clone(), can_reach: args.iface_can_reach, public_ip, ipv6_only };
    let mut u = iface::select(nl, &selector).await?;
    if let Some(public_ipv6) = ipv6 {
        u.public_ipv6 = Some(iface::public_ipv6(nl, &u.link, public_ipv6).await?);
    }
    let v6 = u.public_ipv6.map(|a| format!(", public IPv6 {a}")).unwrap_or_default();
    log::info!("underlay {} (#{}, MTU {}), address {}, public IP {}{v6}", u.link.name, u.link.index, u.link.mtu, u.iface_ip, u.public_ip);
    Ok(u)
}

/// Our subnet, held under a lease that announces the backend's attributes
/// (the subnet of the last subnet.env is preferred).
async fn acquire_lease(args: &Args, manager: &dyn SubnetManager, cfg: &crate::netconfig::NetConfig, backend: &dyn Backend, health: &Health) -> Result<Subnets> {
    health.stage("claiming a subnet");
    let own = manager.acquire(cfg, backend.lease_attrs(), subnet_env::previous_subnet(&args.subnet_file), health).await?;
    health.lease_held(true);
    health.metrics.lease_renewed();
    Ok(own)
}

/// The backend on our subnet; without BPF, no program an earlier run
/// pinned stays attached.
async fn start_backend(args: &Args, backend: &mut dyn Backend, own: Subnets) -> Result<()> {
    if !backend.uses_bpf() && dataplane::release_all_links(&args.bpf_pin_dir)? {
        log::info!("kernel datapath: released the BPF links an earlier run pinned in {}", args.bpf_pin_dir.display());
    }
    backend.start(own).await
}

/// flannel's subnet.env, which the CNI plugin reads.
fn write_subnet_env(args: &Args, cfg: &crate::netconfig::NetConfig, own: Subnets, mtu: u32, health: &Health) -> Result<()> {
    subnet_env::write(&args.subnet_file, cfg, own, mtu, args.ip_masq)?;
    log::info!("wrote {} (subnet {own}, MTU {mtu})", args.subnet_file.display());
    health.subnet_env_written();
    Ok(())
}

/// flannel's masquerade and forward rules in weft's nftables table, put in
/// place once before the event loop (which keeps them). Failing (no nft,
/// no nf_tables/NAT in the kernel) is logged naming what is missing and
/// leaves the rest of weft running.
fn start_egress(args: &Args, v4: egress::V4, v6: egress::V6) -> Option<egress::Egress> {
    let mut e = egress::Egress::new(args, v4, v6)?;
    e.ensure();
    Some(e)
}
