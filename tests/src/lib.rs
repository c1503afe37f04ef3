//! weft's network-namespace test harness, shared by the integration tests
//! (`tests/tests/*.rs`) and `cargo xtask lab`.
//!
//! Safety rules this crate keeps: nothing is ever changed in the root network
//! namespace (every `ip` command runs with `-n <ns>` or inside `ip netns exec`),
//! every namespace, process, temp dir (with the embedded lease store in it)
//! and bpffs pin directory it creates is owned by an RAII guard that removes
//! it on drop (also while panicking), and every traffic generator is bounded
//! in packets and time.

pub mod bpf;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod etcd;
pub mod flannel_kube;
pub mod flannel_node;
pub mod held_tcp;
pub mod metrics;
pub mod netns;
pub mod outside;
pub mod perf;
pub mod pod;
pub mod report;
pub mod simultaneous;
pub mod state;
pub mod store;
pub mod subnet_env;
pub mod swap;
pub mod swap_measure;
pub mod tempdir;
pub mod traffic;
pub mod weft_node;

pub use cluster::{Cluster, ClusterBuilder, NodeRef};
pub use pod::{Pod, Wiring};

/// Fails with a clear message unless running as root (the tests create
/// namespaces, run etcd and load BPF programs).
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("weft's integration tests need root (network namespaces, bpffs)");
    }
    Ok(())
}
pub mod kube_api;
pub mod kube_store;
