//! weftd's command line: flanneld's flag names where flanneld has the flag,
//! each also readable from the environment as `WEFTD_<FLAG>`.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use clap::Parser;

/// flanneld's flags that weftd shares, by their environment suffix. flanneld
/// reads `FLANNELD_<FLAG>`; weftd reads `WEFTD_<FLAG>` and falls back to the
/// flanneld name, so a flanneld DaemonSet's environment keeps working.
pub const FLANNELD_ENV: [&str; 24] = [
    "NET_CONFIG_PATH",
    "KUBE_SUBNET_MGR",
    "KUBE_API_URL",
    "KUBECONFIG_FILE",
    "KUBE_ANNOTATION_PREFIX",
    "SET_NODE_NETWORK_UNAVAILABLE",
    "ETCD_ENDPOINTS",
    "ETCD_PREFIX",
    "ETCD_CAFILE",
    "ETCD_CERTFILE",
    "ETCD_KEYFILE",
    "ETCD_USERNAME",
    "ETCD_PASSWORD",
    "IFACE",
    "IFACE_REGEX",
    "IFACE_CAN_REACH",
    "PUBLIC_IP",
    "SUBNET_FILE",
    "SUBNET_LEASE_RENEW_MARGIN",
    "HEALTHZ_IP",
    "HEALTHZ_PORT",
    "IP_MASQ",
    "IP_MASQ_FULLY_RANDOM_DISABLE",
    "IPTABLES_FORWARD_RULES",
];

/// For each flag flanneld also has: if `WEFTD_X` is unset and `FLANNELD_X` is
/// set, returns `(WEFTD_X, value)` to set before parsing.
pub fn flanneld_env_fallbacks(get: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    FLANNELD_ENV
        .iter()
        .filter_map(|f| {
            let ours = format!("WEFTD_{f}");
            if get(&ours).is_some() {
                return None;
            }
            get(&format!("FLANNELD_{f}")).map(|v| (ours, v))
        })
        .collect()
}

#[derive(Parser, Debug, Clone)]
#[command(name = "weftd", version, about = "weft: flannel-compatible overlay network with an eBPF datapath")]
pub struct Args {
    /// etcd endpoints, comma separated. Without any, weftd uses its embedded
    /// store (--store-dir) and reads the network config from --net-config-path.
    #[arg(long, env = "WEFTD_ETCD_ENDPOINTS", value_delimiter = ',', help_heading = "Lease store")]
    pub etcd_endpoints: Vec<String>,

    /// Leases are Kubernetes Nodes (flannel's kube subnet manager): our subnet
    /// is our Node's podCIDR, our lease attributes flannel's Node annotations,
    /// every annotated Node a peer. No etcd. The network config comes from
    /// --net-config-path.
    #[arg(long, env = "WEFTD_KUBE_SUBNET_MGR", conflicts_with = "etcd_endpoints", help_heading = "Kubernetes")]
    pub kube_subnet_mgr: bool,

    /// The API server's URL (overrides the kubeconfig's; neither: in-cluster).
    #[arg(long, env = "WEFTD_KUBE_API_URL", help_heading = "Kubernetes")]
    pub kube_api_url: Option<String>,

    /// kubeconfig file (default: the service account's in-cluster config).
    #[arg(long, env = "WEFTD_KUBECONFIG_FILE", help_heading = "Kubernetes")]
    pub kubeconfig_file: Option<PathBuf>,

    /// Prefix of the Node annotations (flannel's, so flannel and weft nodes see each other).
    #[arg(long, env = "WEFTD_KUBE_ANNOTATION_PREFIX", default_value = "flannel.alpha.coreos.com", help_heading = "Kubernetes")]
    pub kube_annotation_prefix: String,

    /// Set our Node's NetworkUnavailable condition to False once the network is up.
    #[arg(long, env = "WEFTD_SET_NODE_NETWORK_UNAVAILABLE", default_value_t = true, action = clap::ArgAction::Set,
          help_heading = "Kubernetes")]
    pub set_node_network_unavailable: bool,

    /// Embedded store directory, shared by every weftd on this machine.
    #[arg(long, env = "WEFTD_STORE_DIR", default_value = "/var/lib/weft/store", help_heading = "Lease store")]
    pub store_dir: PathBuf,

    /// flannel's net-conf.json, the network config with the embedded store and --kube-subnet-mgr.
    #[arg(long, env = "WEFTD_NET_CONFIG_PATH", default_value = "/etc/kube-flannel/net-conf.json", help_heading = "Lease store")]
    pub net_config_path: PathBuf,

    /// etcd key prefix holding the network config and the subnet leases.
    #[arg(long, env = "WEFTD_ETCD_PREFIX", default_value = "/coreos.com/network", help_heading = "Lease store")]
    pub etcd_prefix: String,

    /// CA certificate (PEM) to verify etcd's server certificate; enables TLS.
    #[arg(long, env = "WEFTD_ETCD_CAFILE", help_heading = "Lease store")]
    pub etcd_cafile: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's client-certificate auth (with --etcd-keyfile).
    #[arg(long, env = "WEFTD_ETCD_CERTFILE", requires = "etcd_keyfile", help_heading = "Lease store")]
    pub etcd_certfile: Option<PathBuf>,

    /// Private key (PEM) of --etcd-certfile.
    #[arg(long, env = "WEFTD_ETCD_KEYFILE", requires = "etcd_certfile", help_heading = "Lease store")]
    pub etcd_keyfile: Option<PathBuf>,

    /// etcd user name (etcd's own authentication, with --etcd-password).
    #[arg(long, env = "WEFTD_ETCD_USERNAME", requires = "etcd_password", help_heading = "Lease store")]
    pub etcd_username: Option<String>,

    /// etcd password.
    #[arg(long, env = "WEFTD_ETCD_PASSWORD", requires = "etcd_username", hide_env_values = true, help_heading = "Lease store")]
    pub etcd_password: Option<String>,

    /// Lifetime of our subnet lease in seconds (flannel: 24 h).
    #[arg(long, env = "WEFTD_SUBNET_LEASE_TTL", default_value_t = 86_400,
          value_parser = clap::value_parser!(i64).range(10..), help_heading = "Lease store")]
    pub subnet_lease_ttl: i64,

    /// Renew the lease this many minutes before it expires.
    #[arg(long, env = "WEFTD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=1439), help_heading = "Lease store")]
    pub subnet_lease_renew_margin: u32,

    /// Interface (name or IPv4 address) carrying overlay traffic; repeatable,
    /// the first that exists wins. Default: the interface of the default route.
    #[arg(long, env = "WEFTD_IFACE", value_delimiter = ',', help_heading = "Node")]
    pub iface: Vec<String>,

    /// Regular expression matched against interface names and IPv4 addresses
    /// (used when no --iface is given); repeatable.
    #[arg(long, env = "WEFTD_IFACE_REGEX", value_delimiter = ',', help_heading = "Node")]
    pub iface_regex: Vec<String>,

    /// Use the interface of the route to this address (when no --iface or
    /// --iface-regex is given).
    #[arg(long, env = "WEFTD_IFACE_CAN_REACH", help_heading = "Node")]
    pub iface_can_reach: Option<Ipv4Addr>,

    /// Address other nodes reach us at. Default: the interface's first IPv4 address.
    #[arg(long, env = "WEFTD_PUBLIC_IP", help_heading = "Node")]
    pub public_ip: Option<Ipv4Addr>,

    /// IPv6 address other nodes reach us at, on a dual-stack network
    /// (EnableIPv6). Default: the interface's first global IPv6 address.
    #[arg(long, env = "WEFTD_PUBLIC_IPV6", help_heading = "Node")]
    pub public_ipv6: Option<Ipv6Addr>,

    /// Where to write FLANNEL_NETWORK/SUBNET/MTU for the CNI plugin.
    #[arg(long, env = "WEFTD_SUBNET_FILE", default_value = "/run/flannel/subnet.env", help_heading = "Node")]
    pub subnet_file: PathBuf,

    /// Address of the /healthz and /readyz server.
    #[arg(long, env = "WEFTD_HEALTHZ_IP", default_value = "0.0.0.0", help_heading = "Health")]
    pub healthz_ip: std::net::IpAddr,

    /// Port of the /healthz and /readyz server (0 disables it, as in flanneld).
    #[arg(long, env = "WEFTD_HEALTHZ_PORT", default_value_t = 0, help_heading = "Health")]
    pub healthz_port: u16,

    /// bpffs directory for weft's pinned maps and links (one per node).
    #[arg(long, env = "WEFTD_BPF_PIN_DIR", default_value = "/sys/fs/bpf/weft", help_heading = "Datapath")]
    pub bpf_pin_dir: PathBuf,

    /// Deprecated, does nothing (weftd warns): XDP decapsulation was removed
    /// because TC decapsulation after tunnel GRO measured faster (README).
    /// An XDP program an earlier weftd left on the underlay is detached.
    #[arg(long, env = "WEFTD_XDP_DECAP", help_heading = "Datapath")]
    pub xdp_decap: bool,

    /// Fill in the outer UDP checksum of VXLAN packets (default 0, as the
    /// kernel's vxlan and flannel send). Computed for non-GSO TCP, UDP and ICMP.
    #[arg(long, env = "WEFTD_VXLAN_UDP_CSUM", help_heading = "Datapath")]
    pub vxlan_udp_csum: bool,

    /// Which datapath carries vxlan and host-gw traffic: `bpf` (weft's
    /// programs), `kernel` (the kernel's vxlan device and routes, programmed
    /// as flanneld does), or `auto` (bpf where the kernel can run it, else
    /// kernel; the log says which and why).
    #[arg(long, env = "WEFTD_DATAPATH", default_value = "auto", value_parser = ["auto", "bpf", "kernel"], help_heading = "Datapath")]
    pub datapath: String,

    /// Turn off the host-gw fast path (on by default for host-gw and for
    /// vxlan with DirectRouting): pod traffic to peers then takes the host's
    /// forwarding path, netfilter's FORWARD chain included.
    #[arg(long, env = "WEFTD_NO_FAST_PATH", help_heading = "Datapath")]
    pub no_fast_path: bool,

    /// The pod-facing bridge the fast path attaches to (flannel's CNI
    /// bridge); it may appear after weftd starts.
    #[arg(long, env = "WEFTD_POD_BRIDGE", default_value = "cni0", help_heading = "Datapath")]
    pub pod_bridge: String,

    /// Directory of weft-cni's endpoint records (one JSON file per pod
    /// interface): the pods the fast path delivers to and sends from directly.
    #[arg(long, env = "WEFTD_ENDPOINTS_DIR", default_value = "/run/weft/endpoints", help_heading = "Datapath")]
    pub endpoints_dir: PathBuf,

    /// host-local's address store of flannel's CNI network (one file per
    /// pod address): pods flannel's CNI plugin attached (bridge +
    /// host-local) whose address is there and on a veth of --pod-bridge
    /// get the fast path as weft-cni's pods do.
    #[arg(long, env = "WEFTD_CNI_STORE", default_value = "/var/lib/cni/networks/cbr0", help_heading = "Datapath")]
    pub cni_store: PathBuf,

    /// Kind of overlay device for the BPF datapath: `vxlan` (default: a
    /// kernel vxlan device on the VXLAN port, whose socket gives GRO for
    /// VXLAN and decapsulates what is not for a registered pod), `ifb` or
    /// `veth` (weft decapsulates everything itself; kept for measuring, see
    /// the README).
    #[arg(long, env = "WEFTD_OVERLAY_KIND", default_value = "vxlan", value_parser = ["vxlan", "ifb", "veth"], help_heading = "Datapath")]
    pub overlay_kind: String,

    /// Seconds weft's programs keep carrying traffic after weftd is gone
    /// (killed, stopped, or rolled back to flanneld): weftd moves a deadline
    /// on every few seconds while it runs, and once it has passed every
    /// program stands aside, passing packets to the kernel's own vxlan
    /// device (programmed alongside: neighbours, FDB, routes), so that no
    /// traffic is carried from maps nobody updates. A restart or upgrade
    /// within the grace period replaces the programs with nothing lost.
    /// 0: never stand aside.
    #[arg(long, env = "WEFTD_DATAPATH_GRACE_SECS", default_value_t = 30, help_heading = "Datapath")]
    pub datapath_grace_secs: u64,

    /// udp backend: worker threads, each with its own TUN queue and socket
    /// (0: one per core).
    #[arg(long, env = "WEFTD_UDP_WORKERS", default_value_t = 0, help_heading = "Datapath")]
    pub udp_workers: usize,

    /// udp backend: no offloads (TSO on the TUN, GSO/GRO on the sockets);
    /// every packet then costs syscalls of its own. For measuring.
    #[arg(long, env = "WEFTD_UDP_NO_OFFLOAD", help_heading = "Datapath")]
    pub udp_no_offload: bool,

    /// udp backend: per-CPU workers: worker i pinned on the i-th CPU weftd
    /// may use, each received datagram handed to the worker of the CPU that
    /// received it (more throughput with several flows; a single flow may
    /// end up sharing one CPU with its own endpoints).
    /// Default: workers unpinned, datagrams spread by the kernel's hash.
    #[arg(long, env = "WEFTD_UDP_PER_CPU", help_heading = "Datapath")]
    pub udp_per_cpu: bool,

    /// Masquerade pod traffic leaving the pod network (flanneld's --ip-masq):
    /// flannel's rules in weft's nftables table `inet weft`, kept as they
    /// are against deletions and firewall reloads; subnet.env then says
    /// FLANNEL_IPMASQ=true.
    #[arg(long, env = "WEFTD_IP_MASQ", help_heading = "Egress")]
    pub ip_masq: bool,

    /// Masquerade without `fully-random` port allocation (flanneld's
    /// --ip-masq-fully-random-disable).
    #[arg(long, env = "WEFTD_IP_MASQ_FULLY_RANDOM_DISABLE", help_heading = "Egress")]
    pub ip_masq_fully_random_disable: bool,

    /// Accept forwarded traffic from and to the pod network (flanneld's
    /// --iptables-forward-rules, default true; `--iptables-forward-rules=false`
    /// turns it off), also where iptables' FORWARD policy is DROP.
    #[arg(long, env = "WEFTD_IPTABLES_FORWARD_RULES", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", help_heading = "Egress")]
    pub iptables_forward_rules: bool,

    /// Remove the lease, devices, routes, programs and pins on exit
    /// (default: leave them so pods keep talking across a restart).
    #[arg(long, env = "WEFTD_CLEANUP_ON_EXIT")]
    pub cleanup_on_exit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flanneld_names_fill_in_but_never_override() {
        let env = |k: &str| match k {
            "FLANNELD_ETCD_ENDPOINTS" => Some("http://10.0.0.1:2379".to_string()),
            "FLANNELD_IFACE" => Some("eth1".to_string()),
            "WEFTD_IFACE" => Some("eth0".to_string()),
            _ => None,
        };
        assert_eq!(flanneld_env_fallbacks(env), vec![("WEFTD_ETCD_ENDPOINTS".to_string(), "http://10.0.0.1:2379".to_string())]);
    }

    #[test]
    fn flags_parse_like_flanneld() {
        let a = Args::try_parse_from(["weftd", "--iface", "eth0", "--iface", "10.0.0.1", "--iface-regex", "^ens", "--healthz-port", "10256"]).unwrap();
        assert_eq!(a.iface, ["eth0", "10.0.0.1"]);
        assert_eq!(a.iface_regex, ["^ens"]);
        assert_eq!(a.healthz_port, 10256);
        assert!(a.etcd_endpoints.is_empty(), "no endpoint given: the embedded store");
        let e = Args::try_parse_from(["weftd", "--subnet-lease-renew-margin", "1440"]).unwrap_err().to_string();
        assert!(e.contains("subnet-lease-renew-margin"), "{e}");
        assert!(!a.ip_masq && !a.ip_masq_fully_random_disable && a.iptables_forward_rules, "flanneld's defaults");
        let m = Args::try_parse_from(["weftd", "--ip-masq", "--iptables-forward-rules=false", "--ip-masq-fully-random-disable"]).unwrap();
        assert!(m.ip_masq && m.ip_masq_fully_random_disable && !m.iptables_forward_rules);
        assert!(Args::try_parse_from(["weftd", "--iptables-forward-rules"]).unwrap().iptables_forward_rules);
        let e = Args::try_parse_from(["weftd", "--public-ip", "10.0.0.300"]).unwrap_err().to_string();
        assert!(e.contains("public-ip"), "{e}");
    }
}
