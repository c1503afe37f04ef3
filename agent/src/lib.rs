//! weftd, the node agent of weft. See the README's ARCHITECTURE section.
//!
//! - [`agent`]: `weftd run`, a list of named steps, then the event loop.
//! - [`subnet`]: subnet managers (etcd, the embedded store), leases.
//! - [`backend`]: backends (vxlan, host-gw, udp) and their reconciles.
//! - [`dataplane`]: the BPF programs and their pinned maps, the fast path.
//! - [`net`]: netlink, and the choice of the underlay interface.
//! - the rest: flags, net-conf, subnet.env, health and metrics, and the
//!   subcommands (`status`, `log-level`, `install-cni`).
pub mod agent;
pub mod backend;
pub mod cli;
pub mod dataplane;
pub mod egress;
pub mod health;
pub mod install_cni;
pub mod log_level;
pub mod metrics;
pub mod net;
pub mod netconfig;
pub mod status;
pub mod subnet;
pub mod subnet_env;
