//! A network namespace owned by the harness: created by name, deleted on drop.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// `ip netns add <name>`, then brings `lo` up inside it.
    pub fn create(name: &str) -> Result<Netns> {
        if name.len() > 40 || name.contains('/') {
            bail!("bad netns name {name:?}");
        }
        cmd::sh("ip", &["netns", "add", name]).with_context(|| format!("creating netns {name}"))?;
        let ns = Netns { name: name.to_string(), keep: false };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns (never deleted by this
    /// handle): for threads that need their own `Netns` value.
    pub fn borrowed(name: &str) -> Netns {
        Netns { name: name.to_string(), keep: true }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: for nsenter and setns(2).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// The ifindex of device `dev` in this namespace (`ip -j link show`):
    /// weftd names its link pins by it, so tests find a device's pins.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.ip(&["-j", "link", "show", "dev", dev])?;
        let j: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("ip -j link show {dev}: {out}"))?;
        j[0]["ifindex"].as_u64().map(|i| i as u32).with_context(|| format!("no ifindex for {dev}: {out}"))
    }

    /// A `Command` that runs `prog args` inside the namespace (`ip netns exec`).
    /// Note: `ip netns exec` remounts /sys and hides /sys/fs/bpf; use
    /// [`Netns::nsenter`] for programs that need bpffs.
    pub fn command(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]).args(args);
        c
    }

    /// A `Command` that runs `prog` inside the namespace via
    /// `nsenter --net=/var/run/netns/<name> --` (keeps /sys/fs/bpf visible).
    pub fn nsenter(&self, prog: &std::path::Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(prog);
        c
    }

    /// Runs `prog args` in the namespace; stdout, or an error naming the
    /// namespace, the command and its stderr.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<String> {
        cmd::run(&mut self.command(prog, args)).with_context(|| format!("in netns {}", self.name))
    }

    /// Runs `prog args` in the namespace; raw output whatever the status.
    pub fn exec_output(&self, prog: &str, args: &[&str]) -> Result<Output> {
        cmd::output(&mut self.command(prog, args))
    }

    /// `ip -n <name> args...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        cmd::run(&mut c).with_context(|| format!("in netns {}", self.name))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(|_| ())
    }

    /// Leaves the namespace in place on drop (lab --keep).
    pub fn disarm(&mut self) {
        self.keep = true;
    }
}

/// Deletes a namespace by exact name (no-op if it is already gone).
pub fn delete(name: &str) {
    if std::path::Path::new("/var/run/netns").join(name).exists() {
        if let Err(e) = cmd::sh("ip", &["netns", "del", name]) {
            eprintln!("weft-tests: deleting netns {name}: {e:#}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            delete(&self.name);
        }
    }
}
