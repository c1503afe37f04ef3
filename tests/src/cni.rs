//! Driving CNI plugins exactly as a container runtime does: the `CNI_*`
//! environment, the configuration on stdin, the result or the error object
//! on stdout, the exit status; the plugin runs in the node's network
//! namespace (`nsenter --net`, as kubelet's runtime runs it in the host's).
//! [`Runtime`] executes a whole conflist the way the spec's section 3 says
//! (ADD in order feeding each plugin the previous result, CHECK with the
//! final result, DEL in reverse order; `runtimeConfig` from capabilities).
//! [`WeftCni`] is weft-cni's configuration for one node with its state
//! directories in the cluster's temp dir (never /var/lib/cni or /run/weft).
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cmd, netns::Netns, Cluster, NodeRef};

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// How long one plugin run may take (100 concurrent runs on 2 busy cores).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(90);

/// weft-cni's binary: `$WEFT_CNI_BIN`, else next to weftd's.
pub fn weft_cni_bin() -> Result<PathBuf> {
    let p = match std::env::var_os("WEFT_CNI_BIN") {
        Some(p) => PathBuf::from(p),
        None => cmd::weftd_bin()?.with_file_name("weft-cni"),
    };
    if !p.exists() {
        bail!("weft-cni binary {} does not exist: build it (`cargo build -p weft-cni`) or set WEFT_CNI_BIN", p.display());
    }
    Ok(p)
}

/// A reference plugin from Debian's containernetworking-plugins.
pub fn debian_plugin(name: &str) -> Result<PathBuf> {
    let p = Path::new(DEBIAN_PLUGINS).join(name);
    if !p.exists() {
        bail!("{} does not exist: install Debian's containernetworking-plugins (`cargo xtask bootstrap`)", p.display());
    }
    Ok(p)
}

/// The parameters a runtime passes in the environment.
#[derive(Clone, Debug, Default)]
pub struct CniArgs {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// `CNI_PATH`.
    pub path: String,
}

impl CniArgs {
    /// `command` for an attachment: container ID, namespace, interface name.
    pub fn new(command: &str, container_id: &str, netns: Option<&Path>, ifname: &str) -> CniArgs {
        CniArgs {
            command: command.into(),
            container_id: Some(container_id.into()),
            netns: netns.map(Path::to_path_buf),
            ifname: Some(ifname.into()),
            args: None,
            path: DEBIAN_PLUGINS.into(),
        }
    }

    /// A command without an attachment (VERSION, STATUS, GC).
    pub fn bare(command: &str) -> CniArgs {
        CniArgs { command: command.into(), path: DEBIAN_PLUGINS.into(), ..Default::default() }
    }
}

/// What a plugin run printed and how it exited.
#[derive(Clone, Debug)]
pub struct PluginOutput {
    pub what: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    fn describe(&self) -> String {
        format!("{} exited {:?}\nstdout: {}\nstderr: {}", self.what, self.status, self.stdout.trim(), self.stderr.trim())
    }

    /// Requires exit 0; returns stdout as JSON.
    pub fn result(&self) -> Result<Value> {
        if !self.success() {
            bail!("{}", self.describe());
        }
        serde_json::from_str(&self.stdout).with_context(|| format!("{}: stdout is not JSON", self.describe()))
    }

    /// Requires exit 0 and nothing on stdout (DEL, CHECK, STATUS, GC).
    pub fn empty_success(&self) -> Result<()> {
        if !self.success() || !self.stdout.trim().is_empty() {
            bail!("expected success with empty stdout: {}", self.describe());
        }
        Ok(())
    }

    /// Requires the spec's failure: a non-zero exit and an error object on
    /// stdout with `code` and a message; returns the error object.
    pub fn error(&self, code: u64) -> Result<Value> {
        if self.success() || self.status.is_none() {
            bail!("expected error code {code}: {}", self.describe());
        }
        let v: Value = serde_json::from_str(&self.stdout).with_context(|| format!("expected an error object on stdout: {}", self.describe()))?;
        if v["code"].as_u64() != Some(code) || v["msg"].as_str().unwrap_or("").is_empty() || v["cniVersion"].as_str().is_none() {
            bail!("expected error code {code} with cniVersion and msg: {}", self.describe());
        }
        Ok(v)
    }
}

/// Runs `plugin` in the node's namespace as a runtime does: the inherited
/// environment without any `CNI_*`, then `args`'s, `stdin` on stdin; killed
/// after 90 s.
pub fn exec(node: &Netns, plugin: &Path, args: &CniArgs, stdin: &[u8]) -> Result<PluginOutput> {
    let mut c = node.nsenter(plugin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            c.env_remove(k);
        }
    }
    c.env("CNI_COMMAND", &args.command).env("CNI_PATH", &args.path);
    if let Some(v) = &args.container_id {
        c.env("CNI_CONTAINERID", v);
    }
    if let Some(v) = &args.netns {
        c.env("CNI_NETNS", v);
    }
    if let Some(v) = &args.ifname {
        c.env("CNI_IFNAME", v);
    }
    if let Some(v) = &args.args {
        c.env("CNI_ARGS", v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!(
        "{} {} (CNI_CONTAINERID={} CNI_IFNAME={} CNI_NETNS={}) in {}",
        plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        args.command,
        args.container_id.as_deref().unwrap_or("-"),
        args.ifname.as_deref().unwrap_or("-"),
        args.netns.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into()),
        node.name()
    );
    let mut child = c.spawn().with_context(|| format!("spawning {what}"))?;
    let mut sin = child.stdin.take().context("stdin")?;
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let (mut so, mut se) = (child.stdout.take().context("stdout")?, child.stderr.take().context("stderr")?);
    let ro = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + PLUGIN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {PLUGIN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = ro.join().unwrap_or_default();
    let stderr = re.join().unwrap_or_default();
    Ok(PluginOutput { what, status: status.code(), stdout, stderr })
}

/// weft-cni's plugin configuration for one node, with its state in a
/// directory of the cluster's temp dir.
#[derive(Clone, Debug)]
pub struct WeftCni {
    pub bin: PathBuf,
    /// What weft-cni gets on stdin (a runtime adds prevResult and the like).
    pub conf: Value,
    pub data_dir: PathBuf,
    pub endpoints_dir: PathBuf,
}

impl WeftCni {
    /// weft-cni for node `n`: its subnet.env, `dataDir` under
    /// `<cluster temp dir>/n<N>/<tag>/`, and the node's weftd
    /// `--endpoints-dir` as `endpointsDir` (so weftd registers the pods, as
    /// on a real node); network "weft", cniVersion 1.0.0.
    pub fn for_node(c: &Cluster, n: NodeRef, tag: &str) -> Result<WeftCni> {
        let node = c.weft_node(n).context("weft-cni needs a weft node (its subnet.env)")?;
        let dir = c.dir().join(format!("n{n}")).join(tag);
        Ok(WeftCni::new(&node.subnet_file, &dir)?.with_endpoints_dir(&node.endpoints_dir))
    }

    /// A copy writing its endpoint records into `dir`.
    pub fn with_endpoints_dir(mut self, dir: &Path) -> WeftCni {
        self.conf["endpointsDir"] = json!(dir);
        self.endpoints_dir = dir.to_path_buf();
        self
    }

    /// weft-cni reading `subnet_file`, with its state under `dir`.
    pub fn new(subnet_file: &Path, dir: &Path) -> Result<WeftCni> {
        let (data_dir, endpoints_dir) = (dir.join("data"), dir.join("endpoints"));
        Ok(WeftCni {
            bin: weft_cni_bin()?,
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "weft",
                "type": "weft-cni",
                "subnetFile": subnet_file,
                "dataDir": data_dir,
                "endpointsDir": endpoints_dir,
            }),
            data_dir,
            endpoints_dir,
        })
    }

    /// A copy with `key` set to `value` in the configuration.
    pub fn with(&self, key: &str, value: Value) -> WeftCni {
        let mut w = self.clone();
        w.conf[key] = value;
        w
    }

    /// The configuration plus `extra` keys (prevResult, ...), as bytes.
    pub fn stdin(&self, extra: &[(&str, &Value)]) -> Vec<u8> {
        let mut c = self.conf.clone();
        for (k, v) in extra {
            c[*k] = (*v).clone();
        }
        serde_json::to_vec(&c).unwrap_or_default()
    }

    /// `<dataDir>/<network name>`: the address store.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join(self.conf["name"].as_str().unwrap_or("weft"))
    }

    /// The store's reservations: (address, file contents).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let rd = match std::fs::read_dir(self.store_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.store_dir().display())),
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            if let Some(ip) = e.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) {
                v.push((ip, std::fs::read_to_string(e.path())?));
            }
        }
        v.sort();
        Ok(v)
    }

    /// The store's IPv6 reservations (a dual-stack node's): (address, file contents).
    pub fn allocations6(&self) -> Result<Vec<(Ipv6Addr, String)>> {
        let rd = match std::fs::read_dir(self.store_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.store_dir().display())),
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            if let Some(ip) = e.file_name().to_str().and_then(|n| n.parse::<Ipv6Addr>().ok()) {
                v.push((ip, std::fs::read_to_string(e.path())?));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Every file of the store but `lock`: (name, contents), sorted by name.
    pub fn store_files(&self) -> Result<Vec<(String, String)>> {
        store_files(&self.store_dir())
    }

    /// The endpoint records: (file name, JSON).
    pub fn records(&self) -> Result<Vec<(String, Value)>> {
        let rd = match std::fs::read_dir(&self.endpoints_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.endpoints_dir.display())),
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path())?;
            v.push((name.clone(), serde_json::from_str(&text).with_context(|| format!("record {name}: {text}"))?));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Runs weft-cni in `node` with `args` and this configuration plus `extra`.
    pub fn run(&self, node: &Netns, args: &CniArgs, extra: &[(&str, &Value)]) -> Result<PluginOutput> {
        exec(node, &self.bin, args, &self.stdin(extra))
    }

    pub fn add(&self, node: &Netns, container_id: &str, pod: &Netns) -> Result<PluginOutput> {
        self.run(node, &CniArgs::new("ADD", container_id, Some(&pod.path()), "eth0"), &[])
    }

    pub fn check(&self, node: &Netns, container_id: &str, pod: &Netns, prev: &Value) -> Result<PluginOutput> {
        self.run(node, &CniArgs::new("CHECK", container_id, Some(&pod.path()), "eth0"), &[("prevResult", prev)])
    }

    pub fn del(&self, node: &Netns, container_id: &str, pod: Option<&Netns>, prev: Option<&Value>) -> Result<PluginOutput> {
        let p = pod.map(|p| p.path());
        let args = CniArgs::new("DEL", container_id, p.as_deref(), "eth0");
        match prev {
            Some(prev) => self.run(node, &args, &[("prevResult", prev)]),
            None => self.run(node, &args, &[]),
        }
    }
}

/// The first IPv4 address of a result and its host veth (the first
/// interface without a sandbox that is not the bridge, as weft-cni lists them).
pub fn result_ip(result: &Value) -> Result<Ipv4Addr> {
    let a = result["ips"][0]["address"].as_str().with_context(|| format!("no ips[0].address in {result}"))?;
    a.split('/').next().unwrap_or_default().parse().with_context(|| format!("ips[0].address {a:?}"))
}

/// The IPv6 address of a result (a dual-stack pod's).
pub fn result_ip6(result: &Value) -> Result<Ipv6Addr> {
    let ips = result["ips"].as_array().with_context(|| format!("no ips in {result}"))?;
    let a = ips.iter().filter_map(|i| i["address"].as_str()).find(|a| a.contains(':')).with_context(|| format!("no IPv6 address in {result}"))?;
    a.split('/').next().unwrap_or_default().parse().with_context(|| format!("IPv6 address {a:?}"))
}

/// Every file of a host-local-format store directory but `lock`: (name,
/// contents), sorted by name.
pub fn store_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "lock" {
            v.push((name, std::fs::read_to_string(e.path())?));
        }
    }
    v.sort();
    Ok(v)
}

/// One attachment as a runtime tracks it.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
}

/// A container runtime's CNI side: runs a network configuration list
/// (section 3 of the spec) with plugins from `cni_path`.
pub struct Runtime<'a> {
    pub node: &'a Netns,
    pub cni_path: Vec<PathBuf>,
}

impl Runtime<'_> {
    fn find(&self, ty: &str) -> Result<PathBuf> {
        self.cni_path.iter().map(|d| d.join(ty)).find(|p| p.exists()).with_context(|| format!("plugin {ty:?} not found in CNI_PATH {:?}", self.cni_path))
    }

    /// The execution configuration of one plugin of `list`: its own keys,
    /// `cniVersion` and `name` from the list, `runtimeConfig` from the
    /// capabilities it declares and `cap_args` provides, `capabilities`
    /// removed, `prevResult` when given.
    pub fn plugin_config(list: &Value, plugin: &Value, cap_args: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["cniVersion"] = list["cniVersion"].clone();
        c["name"] = list["name"].clone();
        let mut rc = serde_json::Map::new();
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            for (k, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = cap_args.get(k) {
                        rc.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(o) = c.as_object_mut() {
            o.remove("capabilities");
            if !rc.is_empty() {
                o.insert("runtimeConfig".into(), Value::Object(rc));
            }
            if let Some(p) = prev {
                o.insert("prevResult".into(), p.clone());
            }
        }
        c
    }

    fn args(&self, command: &str, a: &Attachment) -> CniArgs {
        CniArgs {
            command: command.into(),
            container_id: Some(a.container_id.clone()),
            netns: Some(a.netns.clone()),
            ifname: Some(a.ifname.clone()),
            // What containerd passes for a Kubernetes pod.
            args: Some(format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={0};K8S_POD_INFRA_CONTAINER_ID={0}", a.container_id)),
            path: self.cni_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
        }
    }

    fn plugins(list: &Value) -> Result<Vec<Value>> {
        list["plugins"].as_array().cloned().with_context(|| format!("conflist without plugins: {list}"))
    }

    fn step(&self, command: &str, list: &Value, plugin: &Value, a: &Attachment, cap_args: &Value, prev: Option<&Value>) -> Result<PluginOutput> {
        let ty = plugin["type"].as_str().with_context(|| format!("plugin without type: {plugin}"))?;
        let conf = Runtime::plugin_config(list, plugin, cap_args, prev);
        exec(self.node, &self.find(ty)?, &self.args(command, a), &serde_json::to_vec(&conf)?)
    }

    /// ADD: every plugin in order, each given the previous one's result;
    /// returns the last result.
    pub fn add(&self, list: &Value, a: &Attachment, cap_args: &Value) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for p in Runtime::plugins(list)? {
            let out = self.step("ADD", list, &p, a, cap_args, prev.as_ref())?;
            prev = Some(out.result().context("conflist ADD")?);
        }
        prev.context("empty conflist")
    }

    /// CHECK: every plugin in order with the final ADD result; all must succeed.
    pub fn check(&self, list: &Value, a: &Attachment, cap_args: &Value, result: &Value) -> Result<()> {
        for (_, out) in self.check_each(list, a, cap_args, result)? {
            out.empty_success().context("conflist CHECK")?;
        }
        Ok(())
    }

    /// CHECK of every plugin in order (not stopping at a failure, which a
    /// runtime may do): (type, output) per plugin.
    pub fn check_each(&self, list: &Value, a: &Attachment, cap_args: &Value, result: &Value) -> Result<Vec<(String, PluginOutput)>> {
        let mut v = Vec::new();
        for p in Runtime::plugins(list)? {
            let out = self.step("CHECK", list, &p, a, cap_args, Some(result))?;
            v.push((p["type"].as_str().unwrap_or_default().to_string(), out));
        }
        Ok(v)
    }

    /// DEL: every plugin in reverse order with the final ADD result.
    pub fn del(&self, list: &Value, a: &Attachment, cap_args: &Value, result: &Value) -> Result<()> {
        for p in Runtime::plugins(list)?.iter().rev() {
            self.step("DEL", list, p, a, cap_args, Some(result))?.empty_success().context("conflist DEL")?;
        }
        Ok(())
    }
}

/// `ip -j <args>` in `ns`, parsed.
pub fn ip_json(ns: &Netns, args: &[&str]) -> Result<Value> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let out = ns.ip(&a)?;
    if out.trim().is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_str(&out).with_context(|| format!("`ip -j {}` in {}: {out}", args.join(" "), ns.name()))
}

/// The veths in `ns` whose master is `bridge`.
pub fn bridge_ports(ns: &Netns, bridge: &str) -> Result<Vec<String>> {
    if ns.ip(&["link", "show", "dev", bridge]).is_err() {
        return Ok(Vec::new());
    }
    let links = ip_json(ns, &["link", "show", "master", bridge])?;
    Ok(links.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect())
}

/// Every link name in `ns` starting with "veth".
pub fn veths(ns: &Netns) -> Result<Vec<String>> {
    let links = ip_json(ns, &["link", "show"])?;
    Ok(links.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str()).filter(|n| n.starts_with("veth")).map(str::to_string).collect())
}
