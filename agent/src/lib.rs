//! weftd, the node agent of weft. See the README's ARCHITECTURE section.
pub mod acquire;
pub mod agent;
pub mod bpffs;
pub mod cli;
pub mod datapath;
pub mod fast_path;
pub mod health;
pub mod iface;
pub mod kernel_vxlan;
pub mod lease;
pub mod local_store;
pub mod netconfig;
pub mod netlink;
pub mod reconcile;
pub mod store;
pub mod subnet;
pub mod subnet_env;
