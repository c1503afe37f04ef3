//! `cargo xtask lab`: a weft cluster in network namespaces, shown working.
use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};
use weft_tests::{bpf, kube_store, pod::Family, state::LabState, traffic, Cluster, Wiring};

const STATE: &str = "/run/weft-lab/state.json";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C sets a flag the lab checks between steps, so everything built so
/// far is torn down by the guards (a handler, unlike SIG_IGN, is not inherited
/// by the programs the lab starts).
fn catch_sigint() {
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: tearing down");
    }
    Ok(())
}

pub fn refuse_if_running() -> Result<()> {
    if Path::new(STATE).exists() {
        bail!("a lab is still up ({STATE}): `cargo xtask lab --down` first");
    }
    Ok(())
}

pub fn down() -> Result<()> {
    let p = Path::new(STATE);
    if !p.exists() {
        println!("lab: nothing to tear down ({STATE} does not exist)");
        return Ok(());
    }
    let st = LabState::load(p)?;
    for line in st.teardown() {
        println!("lab: {line}");
    }
    std::fs::remove_file(p).with_context(|| format!("removing {STATE}"))?;
    println!("lab: {} is down", st.prefix);
    Ok(())
}

/// Where the lab's weftds keep their leases.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// weftd's embedded store, one directory shared by every node's weftd.
    Embedded,
    /// etcd in the switch namespace (`--etcd`).
    Etcd,
    /// Kubernetes Nodes (`--kube`): the tests' API server in the switch
    /// namespace, weftd `--kube-subnet-mgr` on every node.
    Kube,
}

pub fn run(weftd: &Path, nodes: u32, keep: bool, store: Store, dual_stack: bool) -> Result<()> {
    catch_sigint();
    std::env::set_var("WEFTD_BIN", weftd);
    let t0 = std::time::Instant::now();
    match store {
        Store::Etcd => println!("lab: lease store: etcd in the switch namespace (--etcd)"),
        Store::Embedded => {
            println!("lab: lease store: weftd's embedded store (one directory shared by every node's weftd; `--etcd` for etcd, `--kube` for Kubernetes Nodes)")
        }
        Store::Kube => println!(
            "lab: leases are Kubernetes Nodes (--kube): the tests' API server in the switch namespace (in this process), \
             a Node with a podCIDR per node, weftd --kube-subnet-mgr on every node"
        ),
    }
    if keep && store == Store::Kube {
        println!("lab: --keep --kube: the API server lives in this process, so the lab stays up in the foreground once shown; Ctrl-C tears it down");
    }
    if dual_stack {
        println!(
            "lab: dual stack (--dual-stack): IPv6 underlay fd77::/64 (node N fd77::N), network config {}",
            weft_tests::cluster::dual_stack_config("10.244.0.0/16", "vxlan")
        );
    }
    println!("lab: {nodes} weft nodes in network namespaces...");
    let mut b = Cluster::builder().weft_nodes(nodes);
    if dual_stack {
        b = b.dual_stack();
    }
    let mut c = match store {
        Store::Kube => b.kube(),
        s => b.embedded_store_if(s == Store::Embedded),
    }
    .build()?;
    println!("lab: prefix {}, temp dir {}", c.prefix, c.dir().display());
    println!("lab: {}", c.store.describe());
    check_interrupt()?;
    if dual_stack {
        // Before waiting for IPv6 routes: a weftd without dual stack says so here.
        println!("\nsubnet.env, IPv6 keys:");
        for n in c.nodes() {
            let env = c.node_env(n)?;
            match (env.ipv6_network, env.ipv6_subnet) {
                (Some(net), Some(sub)) => println!("  node {n}: FLANNEL_IPV6_NETWORK={net} FLANNEL_IPV6_SUBNET={}/{}", sub.host(1), sub.prefix_len),
                _ => bail!(
                    "node {n}: weftd did not take the dual-stack config: its subnet.env has no FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET (weftd's log: {})",
                    c.weft_node(n)?.log.display()
                ),
            }
        }
    }
    c.wait_converged()?;
    println!("lab: routes converged after {:.1?}", t0.elapsed());
    let mut failed = 0;
    // Every pod through weft-cni, run as a container runtime runs it (its
    // address store and endpoint records in the lab's temp dir): one per
    // node, two on every third node.
    for n in 1..=nodes {
        c.add_pod(n, Wiring::Cni)?;
        if n % 3 == 0 {
            c.add_pod(n, Wiring::Cni)?;
        }
    }
    check_interrupt()?;
    println!("\npods (weft-cni ADD: cni0, a veth pair, an address from the node's subnet.env):");
    for p in &c.pods {
        let v6 = match (dual_stack, p.ip6) {
            (false, _) => String::new(),
            (true, Some(ip6)) => format!(" {:<22}", ip6.to_string()),
            (true, None) => format!(" {:<22}", "(no IPv6 address)"),
        };
        println!("  {:<18} {:<14}{v6} on node {}, host veth {}", p.ns.name(), p.ip().to_string(), p.node, p.host_veth);
    }
    let cni = c.weft_cni(1)?;
    println!("\nendpoint records weft-cni wrote for weftd on node 1 ({}):", cni.endpoints_dir.display());
    for (name, rec) in cni.records()? {
        println!("  {name}: {rec}");
    }

    let families: &[Family] = if dual_stack { &Family::BOTH } else { &[Family::V4] };
    let pairs: Vec<(usize, usize)> =
        (0..c.pods.len()).flat_map(|a| (0..c.pods.len()).map(move |b| (a, b))).filter(|&(a, b)| c.pods[a].node != c.pods[b].node).collect();
    for &family in families {
        if dual_stack {
            println!("\nping (3 packets) between pods on different nodes, {family}:");
        } else {
            println!("\nping (3 packets) between pods on different nodes:");
        }
        let results: Vec<Result<traffic::PingStats>> = std::thread::scope(|s| {
            let hs: Vec<_> = pairs
                .iter()
                .map(|&(a, b)| {
                    s.spawn({
                        let c = &c;
                        move || match family {
                            Family::V4 => traffic::ping(&c.pods[a].ns, c.pods[b].ip(), 3),
                            Family::V6 => traffic::ping6(&c.pods[a].ns, c.pods[b].ip6.context("no IPv6 address")?, 3),
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("ping thread panicked")))).collect()
        });
        for (&(a, b), r) in pairs.iter().zip(&results) {
            let (pa, pb) = (&c.pods[a], &c.pods[b]);
            let (ipa, ipb) = match family {
                Family::V4 => (pa.ip().to_string(), pb.ip().to_string()),
                Family::V6 => {
                    (pa.ip6.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into()), pb.ip6.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into()))
                }
            };
            let line = match r {
                Ok(st) if st.all_received() => format!("✓ {}/{}  rtt {:.3} ms", st.received, st.transmitted, st.rtt_avg_ms.unwrap_or(0.0)),
                Ok(st) => {
                    failed += 1;
                    format!("✗ {}/{} replies, {} duplicates", st.received, st.transmitted, st.duplicates)
                }
                Err(e) => {
                    failed += 1;
                    format!("✗ {e:#}")
                }
            };
            let w = if dual_stack { 22 } else { 12 };
            println!("  n{} {:<w$} -> n{} {:<w$} {line}", pa.node, ipa, pb.node, ipb);
        }
        check_interrupt()?;
    }

    let (a, b) = (0, c.pods.len() - 1);
    let mb = 8u64;
    use std::io::Write as _;
    for &family in families {
        let (from, to) = match family {
            Family::V4 => (c.pods[a].ip().to_string(), c.pods[b].ip().to_string()),
            Family::V6 => (
                c.pods[a].ip6.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into()),
                c.pods[b].ip6.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into()),
            ),
        };
        print!("\ntcp {} MB n{} {} -> n{} {}: ", mb, c.pods[a].node, from, c.pods[b].node, to);
        let _ = std::io::stdout().flush();
        let r = c.pods[b].addr(family).and_then(|to| traffic::tcp_transfer_any(&c.pods[a].ns, &c.pods[b].ns, to, mb << 20));
        match r {
            Ok(t) => println!("✓ arrived intact (same length and hash), {:.0} Mbit/s", t.mbit_per_s()),
            Err(e) => {
                failed += 1;
                println!("✗ {e:#}");
            }
        }
    }

    match store {
        Store::Kube => print_nodes(&c)?,
        s => {
            println!("\nleases in {}:", if s == Store::Etcd { "etcd" } else { "the embedded store" });
            for (k, v) in c.leases()? {
                println!("  {k}\n    {v}");
            }
        }
    }
    for w in &c.weft {
        println!("\nnode {} ({}): bpftool map dump pinned {}", w.n, w.ns.name(), w.vteps_pin().display());
        match bpf::map_dump_text(&w.vteps_pin()) {
            Ok(t) => println!("{}", t.trim_end()),
            Err(e) => println!("  ({e:#})"),
        }
    }
    if failed > 0 {
        bail!("{failed} checks failed (weftd logs above)");
    }
    if keep && store == Store::Kube {
        check_interrupt()?;
        let k = c.kube()?;
        println!("\nlab: up, in the foreground (--keep --kube): Ctrl-C tears it down");
        for p in &c.pods {
            println!("  ip netns exec {} bash", p.ns.name());
        }
        println!("  weftd logs: {}/n*/weftd.log", c.dir().display());
        println!("  ip netns exec {} kubectl --kubeconfig {} get nodes -o wide   (kubectl, if installed)", c.sw.name(), k.admin_kubeconfig.display());
        println!("  lease store: {}", c.store.describe());
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        println!("\nlab: Ctrl-C: tearing down");
        c.pass();
        println!("lab: torn down ({:.1?} in all)", t0.elapsed());
    } else if keep {
        check_interrupt()?;
        let pods: Vec<String> = c.pods.iter().map(|p| p.ns.name().to_string()).collect();
        let store = c.store.describe();
        let st = c.keep();
        st.save(Path::new(STATE))?;
        println!("\nlab: left running; state in {STATE}");
        for p in pods {
            println!("  ip netns exec {p} bash");
        }
        println!("  weftd logs: {}/n*/weftd.log", st.temp_dir.display());
        println!("  lease store: {store}");
        println!("tear down with: cargo xtask lab --down");
    } else {
        c.pass();
        println!("\nlab: torn down ({:.1?} in all)", t0.elapsed());
    }
    Ok(())
}

/// The "leases" of a kube lab: every Node's podCIDR and its flannel
/// annotations (what weftd's kube subnet manager reads and writes).
fn print_nodes(c: &Cluster) -> Result<()> {
    let api = &c.kube()?.api;
    println!("\nNodes in the API server (podCIDR, flannel annotations):");
    for name in api.node_names() {
        let Some(node) = api.node(&name) else { continue };
        println!("  {name}  podCIDR {}", kube_store::pod_cidr(&node).unwrap_or_else(|| "(none)".into()));
        for (k, v) in kube_store::annotations_of(&node).iter().filter(|(k, _)| k.starts_with(kube_store::PREFIX)) {
            println!("    {k}: {v}");
        }
    }
    Ok(())
}
