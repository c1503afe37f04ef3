//! A node running weftd inside its own namespace. Drop kills weftd (SIGTERM,
//! SIGKILL after 2 s) and removes its bpffs pin directory; the namespace goes
//! with the `Netns` field.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use weft_common::{map_names, pins};

use crate::{bpf, cmd, netns::Netns, subnet_env::SubnetEnv};

/// weftd's IPv6 overlay device on a dual-stack vxlan node (VNI 1).
pub const OVERLAY6_DEV: &str = "weft-v6.1";

/// One pinned link of a node: the pin's file name (`weft_encap-7`), the
/// kernel's link id and the id of the program the link runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLink {
    pub pin: String,
    pub link_id: u64,
    pub prog_id: u64,
}

pub struct WeftNode {
    /// Node number N: netns `<prefix>-nN`, underlay address 192.168.77.N.
    pub n: u32,
    /// The node's IPv4 underlay address; 0.0.0.0 on an IPv6-only cluster,
    /// whose nodes have none (as their leases' PublicIP says).
    pub ip: Ipv4Addr,
    /// Dual stack, IPv6-only: the node's IPv6 underlay address (fd77::N).
    pub ip6: Option<Ipv6Addr>,
    pub subnet_file: PathBuf,
    pub pin_dir: PathBuf,
    /// weftd's `--endpoints-dir`: pod endpoint records, as weft-cni writes them.
    pub endpoints_dir: PathBuf,
    /// weftd's `--cni-store`: host-local's store of the pods flannel's CNI
    /// plugin attaches ([`crate::Cluster::flannel_cni_store`]'s directory).
    pub cni_store: PathBuf,
    pub log: PathBuf,
    /// Extra environment for weftd (kube mode: `NODE_NAME`).
    pub env: Vec<(String, String)>,
    weftd: Option<Child>,
    keep: bool,
    // Last: the namespace is deleted after weftd is gone.
    pub ns: Netns,
}

impl WeftNode {
    pub fn new(n: u32, ip: Ipv4Addr, ns: Netns, dir: &Path, prefix: &str) -> Result<WeftNode> {
        let ndir = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&ndir).with_context(|| format!("creating {}", ndir.display()))?;
        Ok(WeftNode {
            n,
            ip,
            ip6: None,
            subnet_file: ndir.join("subnet.env"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-n{n}")),
            endpoints_dir: ndir.join("endpoints"),
            cni_store: ndir.join("var/lib/cni/networks").join(crate::swap::CNI_NETWORK),
            log: ndir.join("weftd.log"),
            env: Vec::new(),
            weftd: None,
            keep: false,
            ns,
        })
    }

    /// Starts weftd in the node's namespace via nsenter (keeps /sys/fs/bpf
    /// visible), stdout+stderr appended to `self.log`. `args` carry the lease
    /// store's flags ([`crate::store::LeaseStore::weftd_args`]) and any others.
    pub fn start(&mut self, args: &[String]) -> Result<()> {
        self.start_wrapped(&[], args)
    }

    /// As [`WeftNode::start`], with weftd run through `wrapper` (a command
    /// and its arguments that execs what follows, e.g. `setpriv ... --`).
    pub fn start_wrapped(&mut self, wrapper: &[&str], args: &[String]) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        bpf::ensure_bpffs()?;
        let bin = cmd::weftd_bin()?;
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).with_context(|| format!("opening {}", self.log.display()))?;
        let mut c = match wrapper.split_first() {
            None => self.ns.nsenter(&bin),
            Some((prog, rest)) => {
                let mut c = self.ns.nsenter(std::path::Path::new(prog));
                c.args(rest).arg(&bin);
                c
            }
        };
        c.args(["--iface", "eth0"])
            .arg("--subnet-file")
            .arg(&self.subnet_file)
            .arg("--bpf-pin-dir")
            .arg(&self.pin_dir)
            .arg("--endpoints-dir")
            .arg(&self.endpoints_dir)
            .arg("--cni-store")
            .arg(&self.cni_store)
            .args(args)
            .env("RUST_LOG", std::env::var("WEFT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let child = c.spawn().with_context(|| format!("starting weftd in netns {}: `{}`", self.ns.name(), cmd::describe(&c)))?;
        self.weftd = Some(child);
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        matches!(self.weftd.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.weftd.as_ref().map(|c| c.id())
    }

    /// If weftd has exited: a description of how (for error messages).
    pub fn exit_status(&mut self) -> Option<String> {
        match self.weftd.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => Some(format!("weftd on {} exited: {st}", self.ns.name())),
            None => Some(format!("weftd on {} is not started", self.ns.name())),
            _ => None,
        }
    }

    /// SIGTERM, then waits (10 s times the harness's patience) for weftd
    /// to exit by itself: how it exited. An error if it did not (then it is
    /// killed).
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.weftd.take().with_context(|| format!("weftd on {} is not started", self.ns.name()))?;
        cmd::terminate(&mut c, Duration::from_secs(10)).with_context(|| format!("weftd on {} did not exit after SIGTERM (killed)", self.ns.name()))
    }

    /// SIGTERM then SIGKILL after 2 s (times the harness's patience).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.weftd.take() {
            cmd::terminate(&mut c, Duration::from_secs(2));
        }
    }

    /// SIGKILL at once (simulates a crash: no cleanup by weftd).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.weftd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The subnet.env weftd wrote, if it is there and complete.
    pub fn subnet_env(&self) -> Result<SubnetEnv> {
        crate::subnet_env::read(&self.subnet_file)
    }

    /// `ip -4 route show dev weft.1` in the node.
    pub fn overlay_routes(&self) -> Result<String> {
        self.ns.ip(&["-4", "route", "show", "dev", "weft.1"])
    }

    /// `ip -6 route show dev weft-v6.1` in the node (dual stack, vxlan).
    pub fn overlay6_routes(&self) -> Result<String> {
        self.ns.ip(&["-6", "route", "show", "dev", OVERLAY6_DEV])
    }

    /// `ip -4 route show proto 254` in the node: the routes weftd's host-gw
    /// backend installed (`<subnet> via <peer> dev eth0`, any device).
    pub fn host_gw_routes(&self) -> Result<String> {
        self.ns.ip(&["-4", "route", "show", "proto", "254"])
    }

    /// Waits (20 s) until this node routes exactly the `direct` subnets via
    /// their PublicIP on eth0 and exactly the `tunnel` subnets on weft.1:
    /// how DirectRouting splits its peers.
    pub fn wait_route_split(&self, direct: &[(String, std::net::Ipv4Addr)], tunnel: &[String]) -> Result<()> {
        let what = format!("{}: direct {direct:?}, tunnel {tunnel:?}", self.ns.name());
        cmd::poll(&what, std::time::Duration::from_secs(20), std::time::Duration::from_millis(200), || {
            let host = self.host_gw_routes().map_err(|e| format!("{e:#}"))?;
            let overlay = self.overlay_routes().map_err(|e| format!("{e:#}"))?;
            let direct_ok = direct.iter().all(|(s, ip)| host.lines().any(|l| l.starts_with(&format!("{s} via {ip} dev eth0"))))
                && host.lines().filter(|l| l.contains("dev eth0")).count() == direct.len();
            let tunnel_ok = tunnel.iter().all(|s| overlay.lines().any(|l| l.starts_with(s.as_str()))) && overlay.lines().count() == tunnel.len();
            if direct_ok && tunnel_ok {
                Ok(Some(()))
            } else {
                Err(format!("proto 254 routes:\n{host}\nweft.1 routes:\n{overlay}"))
            }
        })
    }

    /// The destinations of the routes on weft.1 ("10.244.7.0/24", ...): the
    /// route half of "which peers does this node program".
    pub fn route_set(&self) -> Result<BTreeSet<String>> {
        Ok(self.overlay_routes()?.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    }

    /// bpftool's JSON dump of weft_vteps: the map half of "which peers".
    pub fn vteps(&self) -> Result<serde_json::Value> {
        bpf::map_dump(&self.vteps_pin())
    }

    /// Whether this node programs `subnet`/24 as a vxlan peer: (route on
    /// weft.1, weft_vteps entry, both as text for a failure message). One
    /// reading for the tests that wait for a peer to come or go.
    pub fn peer_state(&self, subnet: Ipv4Addr) -> Result<(bool, bool, String)> {
        let routes = self.route_set()?;
        let dump = self.vteps()?;
        let has_route = routes.contains(&format!("{subnet}/24"));
        let has_vtep = bpf::vteps_contains(&dump, subnet);
        Ok((has_route, has_vtep, format!("routes {routes:?}\nweft_vteps {dump}")))
    }

    /// Occurrences of `needle` in weftd's whole log (all runs on this node):
    /// evidence for the test's output, or events that only the log records.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches(needle).count()
    }

    /// This node's pinned TC/XDP links (`<pin dir>/v2/links/<prog>-<ifindex>`)
    /// as bpftool reads them: a restarted weftd that replaces its programs
    /// through the pinned links keeps each link id and changes the program id
    /// behind it; state to assert on instead of weftd's log.
    pub fn pinned_links(&self) -> Result<Vec<PinnedLink>> {
        let dir = self.pin_dir.join("v2/links");
        let mut out = vec![];
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            let j: serde_json::Value = serde_json::from_str(&cmd::sh("bpftool", &["link", "show", "pinned", &p.to_string_lossy(), "-j"])?)?;
            out.push(PinnedLink {
                pin: p.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                link_id: j["id"].as_u64().with_context(|| format!("no link id for {}: {j}", p.display()))?,
                prog_id: j["prog_id"].as_u64().with_context(|| format!("no prog_id for {}: {j}", p.display()))?,
            });
        }
        out.sort_by(|a, b| a.pin.cmp(&b.pin));
        Ok(out)
    }

    /// Waits until every link in `before` (an earlier [`WeftNode::pinned_links`])
    /// runs a new program through the same link: same pins, same link ids,
    /// new program ids, as a restarted weftd leaves them when it replaced
    /// its programs through the pinned links. Returns the links then.
    pub fn wait_links_replaced(&self, before: &[PinnedLink], timeout: Duration) -> Result<Vec<PinnedLink>> {
        cmd::poll(&format!("{}: a new program behind every pinned link", self.ns.name()), timeout, Duration::from_millis(50), || {
            let now = self.pinned_links().map_err(|e| format!("{e:#}"))?;
            let replaced = now.len() == before.len() && now.iter().zip(before).all(|(a, b)| a.pin == b.pin && a.link_id == b.link_id && a.prog_id != b.prog_id);
            if replaced {
                Ok(Some(now))
            } else {
                Err(format!("pinned links before {before:?}, now {now:?}"))
            }
        })
    }

    /// Whether the node has a device named `name`.
    pub fn has_link(&self, name: &str) -> bool {
        self.ns.ip(&["link", "show", "dev", name]).is_ok()
    }

    /// Pinned VTEP map of this node.
    pub fn vteps_pin(&self) -> PathBuf {
        pins::dir(&self.pin_dir).join(map_names::VTEPS)
    }

    /// Pinned counters of this node.
    pub fn stats_pin(&self) -> PathBuf {
        pins::dir(&self.pin_dir).join(map_names::STATS)
    }

    /// Pinned pod endpoint map of this node.
    pub fn pods_pin(&self) -> PathBuf {
        pins::dir(&self.pin_dir).join(map_names::PODS)
    }

    /// Pinned host-gw fast-path map of this node.
    pub fn hostgw_pin(&self) -> PathBuf {
        pins::dir(&self.pin_dir).join(map_names::HOSTGW)
    }

    /// Whether weftd has the fast path (`weft_fwd`) attached: its link pin.
    pub fn fast_path_attached(&self) -> bool {
        self.link_pinned("weft_fwd")
    }

    /// Whether weftd holds a pinned link of program `prog` (on any device).
    pub fn link_pinned(&self, prog: &str) -> bool {
        std::fs::read_dir(pins::links_dir(&self.pin_dir))
            .map(|d| d.flatten().any(|e| pins::link_ifindex(&e.file_name().to_string_lossy(), prog).is_some()))
            .unwrap_or(false)
    }

    pub fn log_tail(&self, n: usize) -> String {
        cmd::tail(&self.log, n)
    }

    pub fn disarm(&mut self) {
        self.keep = true;
        self.ns.disarm();
    }
}

impl Drop for WeftNode {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop();
        bpf::remove_pin_dir(&self.pin_dir);
    }
}
