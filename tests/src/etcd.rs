//! An etcd server for one run, started inside the switch namespace, killed
//! (and its data dir removed) on drop; plus etcdctl helpers.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, netns::Netns};

pub struct EtcdServer {
    /// Namespace etcdctl runs in (the switch namespace).
    ns_name: String,
    endpoint: String,
    child: Option<Child>,
    data_dir: PathBuf,
    pub log: PathBuf,
    /// etcd's command line (after `etcd`), reused by [`EtcdServer::restart`].
    args: Vec<String>,
    keep: bool,
}

impl EtcdServer {
    /// Starts `etcd` inside `ns`, listening on `ip`:2379/2380, with its data
    /// dir and log under `dir`; waits until `endpoint health` passes.
    pub fn start(ns: &Netns, ip: &str, dir: &Path) -> Result<EtcdServer> {
        let data_dir = dir.join("etcd-data");
        let log = dir.join("etcd.log");
        let client = format!("http://{ip}:2379");
        let peer = format!("http://{ip}:2380");
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let args: Vec<String> = [
            "--name",
            "default",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("default={peer}"),
            "--initial-cluster-state",
            "new",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut srv = EtcdServer { ns_name: ns.name().to_string(), endpoint: client, child: None, data_dir, log, args, keep: false };
        srv.spawn_and_wait()?;
        Ok(srv)
    }

    /// Spawns etcd with `self.args` (log appended) and waits (15 s) for health.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let logf = std::fs::OpenOptions::new().append(true).create(true).open(&self.log).with_context(|| format!("opening {}", self.log.display()))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, "etcd"]).args(&self.args);
        c.stdin(Stdio::null()).stdout(logf.try_clone()?).stderr(logf);
        let child = c.spawn().with_context(|| format!("starting etcd in netns {}: `{}`", self.ns_name, cmd::describe(&c)))?;
        // Owned before waiting: dropped (killed) with `self` if it never gets healthy.
        self.child = Some(child);
        let r = cmd::poll("etcd to become healthy", Duration::from_secs(15), Duration::from_millis(200), || {
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    return Err(format!("etcd exited ({st}); log {}:\n{}", self.log.display(), cmd::tail(&self.log, 20)));
                }
            }
            match self.ctl(&["endpoint", "health"]) {
                Ok(_) => Ok(Some(())),
                Err(e) => Err(format!("{e:#}")),
            }
        });
        if let Err(e) = r {
            bail!("{e:#}\netcd log {}:\n{}", self.log.display(), cmd::tail(&self.log, 20));
        }
        Ok(())
    }

    /// Kills etcd with SIGKILL (a crash: no graceful shutdown) and reaps it;
    /// the data dir stays, so [`EtcdServer::restart`] brings the same
    /// cluster back (same data, same URLs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops etcd with SIGTERM (SIGKILL after 2 s); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            cmd::terminate(&mut c, Duration::from_secs(2));
        }
    }

    /// Starts etcd again after [`EtcdServer::stop`]/[`EtcdServer::kill`] with the
    /// same arguments, data dir and URLs; waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        if self.running() {
            bail!("etcd is still running");
        }
        self.spawn_and_wait()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `etcdctl <args>` (v3 API) against this server from its namespace.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, "etcdctl", "--endpoints", &self.endpoint, &dial_timeout(), &command_timeout(5)])
            .args(args)
            .env("ETCDCTL_API", "3");
        cmd::run(&mut c).with_context(|| format!("etcdctl in netns {}", self.ns_name))
    }

    /// Runs `etcdctl <args>` with `input` on its stdin (e.g. `txn`).
    pub fn ctl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        use std::io::Write;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, "etcdctl", "--endpoints", &self.endpoint, &dial_timeout(), &command_timeout(10)])
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().with_context(|| format!("spawning `{}`", cmd::describe(&c)))?;
        {
            let mut stdin = child.stdin.take().context("etcdctl stdin")?;
            stdin.write_all(input.as_bytes()).with_context(|| format!("writing to `{}`", cmd::describe(&c)))?;
        }
        let out = child.wait_with_output().with_context(|| format!("waiting for `{}`", cmd::describe(&c)))?;
        if !out.status.success() {
            bail!("`{}` failed ({}) in netns {}: {}", cmd::describe(&c), out.status, self.ns_name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Puts every (key, value) in one transaction per `chunk` pairs (etcd's
    /// default --max-txn-ops is 128). Keys must not contain whitespace,
    /// values no newlines.
    pub fn put_many(&self, kvs: &[(String, String)], chunk: usize) -> Result<()> {
        for part in kvs.chunks(chunk.max(1)) {
            // etcdctl txn on stdin: compares, blank line, success ops, blank line, failure ops.
            let mut input = String::from("\n");
            for (k, v) in part {
                if v.contains('\n') || k.contains(char::is_whitespace) {
                    bail!("put_many: cannot quote {k:?} = {v:?} for etcdctl txn");
                }
                // A Go double-quoted string (etcdctl 3.4 mangles '...' values:
                // it keeps only their first character).
                let q = v.replace('\\', "\\\\").replace('"', "\\\"");
                input += &format!("put {k} \"{q}\"\n");
            }
            input += "\n\n";
            let out = self.ctl_stdin(&["txn"], &input)?;
            if !out.starts_with("SUCCESS") {
                bail!("etcdctl txn did not succeed: {out}");
            }
        }
        Ok(())
    }

    /// The store's current revision (from a `get` response header).
    pub fn revision(&self) -> Result<i64> {
        let out = self.ctl(&["get", "-w", "json", "/"])?;
        let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("parsing etcdctl json {out:?}"))?;
        v.pointer("/header/revision").and_then(|r| r.as_i64()).with_context(|| format!("no header.revision in {out}"))
    }

    /// `etcdctl compact <rev>`.
    pub fn compact(&self, rev: i64) -> Result<()> {
        self.ctl(&["compact", &rev.to_string()]).map(|_| ())
    }

    /// The etcd lease id a key is attached to (None: no key, or no lease).
    pub fn lease_of(&self, key: &str) -> Result<Option<i64>> {
        let out = self.ctl(&["get", "-w", "json", key])?;
        let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("parsing etcdctl json {out:?}"))?;
        Ok(v.pointer("/kvs/0/lease").and_then(|l| l.as_i64()).filter(|l| *l != 0))
    }

    /// The revision that created `key` (None: no key). A key deleted (or
    /// expired) and written again gets a new one, so an unchanged create
    /// revision proves the key was never lost in between.
    pub fn create_revision(&self, key: &str) -> Result<Option<i64>> {
        let out = self.ctl(&["get", "-w", "json", key])?;
        let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("parsing etcdctl json {out:?}"))?;
        Ok(v.pointer("/kvs/0/create_revision").and_then(|l| l.as_i64()))
    }

    /// Deletes the keys in [`from`, `to`) in one request; returns how many.
    pub fn del_range(&self, from: &str, to: &str) -> Result<u32> {
        let out = self.ctl(&["del", from, to])?;
        out.trim().parse().with_context(|| format!("etcdctl del printed {out:?}"))
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        self.ctl(&["put", key, value]).map(|_| ())
    }

    /// Grants a lease of `ttl` seconds; returns its id (hex, as etcdctl prints it).
    pub fn grant(&self, ttl: u64) -> Result<String> {
        let out = self.ctl(&["lease", "grant", &ttl.to_string()])?;
        // "lease 694d8b3f1a2c0c0a granted with TTL(3600s)"
        let id =
            out.split_whitespace().nth(1).filter(|_| out.starts_with("lease ")).with_context(|| format!("unexpected `etcdctl lease grant` output {out:?}"))?;
        Ok(id.to_string())
    }

    pub fn put_with_lease(&self, key: &str, value: &str, lease: &str) -> Result<()> {
        self.ctl(&["put", &format!("--lease={lease}"), key, value]).map(|_| ())
    }

    pub fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get_prefix_raw(key, false)?.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    /// All keys under `prefix` with their values.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        self.get_prefix_raw(prefix, true)
    }

    fn get_prefix_raw(&self, key: &str, prefix: bool) -> Result<Vec<(String, String)>> {
        let mut args = vec!["get", "-w", "json", key];
        if prefix {
            args.push("--prefix");
        }
        let out = self.ctl(&args)?;
        let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("parsing etcdctl json {out:?}"))?;
        let mut kvs = Vec::new();
        for kv in v.get("kvs").and_then(|k| k.as_array()).into_iter().flatten() {
            let k = kv.get("key").and_then(|k| k.as_str()).map(b64).transpose()?.unwrap_or_default();
            let val = kv.get("value").and_then(|k| k.as_str()).map(b64).transpose()?.unwrap_or_default();
            kvs.push((k, val));
        }
        Ok(kvs)
    }

    /// Deletes `key`; returns how many keys were deleted.
    pub fn del(&self, key: &str) -> Result<u32> {
        let out = self.ctl(&["del", key])?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// Leaves etcd running on drop (lab --keep).
    pub fn disarm(&mut self) {
        self.keep = true;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(mut c) = self.child.take() {
            cmd::terminate(&mut c, Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Standard base64 decoding (etcdctl's JSON output encodes keys and values).
fn b64(s: &str) -> Result<String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("bad base64 {s:?}"),
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).context("etcd key/value is not UTF-8")
}

/// etcdctl's `--dial-timeout`, 2 s scaled by the harness's patience.
fn dial_timeout() -> String {
    format!("--dial-timeout={}s", 2 * cmd::patience())
}

/// etcdctl's `--command-timeout`, `secs` scaled by the harness's patience
/// (a loaded CI machine's etcd has missed 5 s).
fn command_timeout(secs: u32) -> String {
    format!("--command-timeout={}s", secs * cmd::patience())
}

#[cfg(test)]
mod t {
    #[test]
    fn b64() {
        assert_eq!(super::b64("L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc=").unwrap(), "/coreos.com/network/config");
        assert_eq!(super::b64("YWI=").unwrap(), "ab");
        assert_eq!(super::b64("YWJj").unwrap(), "abc");
    }
}
