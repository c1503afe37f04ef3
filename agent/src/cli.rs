//! weftd's command line: flanneld's flag names where flanneld has the flag,
//! each also readable from the environment as `WEFTD_<FLAG>`.
use std::{net::Ipv4Addr, path::PathBuf};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "weftd", version, about = "weft: flannel-compatible overlay network with an eBPF datapath")]
pub struct Args {
    /// etcd endpoints, comma separated.
    #[arg(long, env = "WEFTD_ETCD_ENDPOINTS", value_delimiter = ',',
          default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379", help_heading = "Lease store")]
    pub etcd_endpoints: Vec<String>,

    /// etcd key prefix holding the network config and the subnet leases.
    #[arg(long, env = "WEFTD_ETCD_PREFIX", default_value = "/coreos.com/network", help_heading = "Lease store")]
    pub etcd_prefix: String,

    /// Lifetime of our subnet lease in seconds (flannel: 24 h).
    #[arg(long, env = "WEFTD_SUBNET_LEASE_TTL", default_value_t = 86_400,
          value_parser = clap::value_parser!(i64).range(10..), help_heading = "Lease store")]
    pub subnet_lease_ttl: i64,

    /// Renew the lease this many minutes before it expires.
    #[arg(long, env = "WEFTD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=1439), help_heading = "Lease store")]
    pub subnet_lease_renew_margin: u32,

    /// Interface (name or IPv4 address) carrying overlay traffic. Default: the
    /// interface of the default route.
    #[arg(long, env = "WEFTD_IFACE", help_heading = "Node")]
    pub iface: Option<String>,

    /// Address other nodes reach us at. Default: the interface's first IPv4 address.
    #[arg(long, env = "WEFTD_PUBLIC_IP", help_heading = "Node")]
    pub public_ip: Option<Ipv4Addr>,

    /// Where to write FLANNEL_NETWORK/SUBNET/MTU for the CNI plugin.
    #[arg(long, env = "WEFTD_SUBNET_FILE", default_value = "/run/flannel/subnet.env", help_heading = "Node")]
    pub subnet_file: PathBuf,

    /// bpffs directory for weft's pinned maps and links (one per node).
    #[arg(long, env = "WEFTD_BPF_PIN_DIR", default_value = "/sys/fs/bpf/weft", help_heading = "Datapath")]
    pub bpf_pin_dir: PathBuf,

    /// Also decapsulate in XDP on the underlay (native mode). Serves real NICs;
    /// on veth it needs NAPI on the peer and breaks TCP from offloading senders.
    #[arg(long, env = "WEFTD_XDP_DECAP", help_heading = "Datapath")]
    pub xdp_decap: bool,

    /// Fill in the outer UDP checksum of VXLAN packets (default 0, as the
    /// kernel's vxlan and flannel send). Computed for non-GSO TCP, UDP and ICMP.
    #[arg(long, env = "WEFTD_VXLAN_UDP_CSUM", help_heading = "Datapath")]
    pub vxlan_udp_csum: bool,

    /// Kind of overlay device: `ifb` (default) or `veth` (a pair, for
    /// comparing the two; see the README for the measurement).
    #[arg(long, env = "WEFTD_OVERLAY_KIND", default_value = "ifb", value_parser = ["ifb", "veth"], help_heading = "Datapath")]
    pub overlay_kind: String,

    /// Remove the lease, devices, routes, programs and pins on exit
    /// (default: leave them so pods keep talking across a restart).
    #[arg(long, env = "WEFTD_CLEANUP_ON_EXIT")]
    pub cleanup_on_exit: bool,
}
