//! What `cargo xtask lab --keep` leaves running, and removing exactly that.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::{bpf, netns};

#[derive(Clone, Debug)]
pub struct LabState {
    pub prefix: String,
    pub temp_dir: PathBuf,
    pub netns: Vec<String>,
    /// (pid, expected process name)
    pub pids: Vec<(u32, String)>,
    pub pin_dirs: Vec<PathBuf>,
}

impl LabState {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "prefix": self.prefix,
            "temp_dir": self.temp_dir,
            "netns": self.netns,
            "pids": self.pids.iter().map(|(p, n)| json!({"pid": p, "name": n})).collect::<Vec<_>>(),
            "pin_dirs": self.pin_dirs,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<LabState> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string).with_context(|| format!("state lacks {k}"));
        let list =
            |k: &str| -> Vec<String> { v.get(k).and_then(|x| x.as_array()).into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect() };
        Ok(LabState {
            prefix: s("prefix")?,
            temp_dir: PathBuf::from(s("temp_dir")?),
            netns: list("netns"),
            pids: v
                .get("pids")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p.get("pid")?.as_u64()? as u32, p.get("name")?.as_str()?.to_string())))
                .collect(),
            pin_dirs: list("pin_dirs").into_iter().map(PathBuf::from).collect(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.to_json())?).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<LabState> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        LabState::from_json(&serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?)
    }

    /// Kills the listed processes (only if /proc/<pid>/comm still names the
    /// expected program), deletes the listed namespaces (pods first), pin
    /// dirs and the temp dir. Returns what it did, one line each.
    pub fn teardown(&self) -> Vec<String> {
        let mut log = Vec::new();
        for (pid, name) in &self.pids {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != name.as_str() {
                log.push(format!("pid {pid} ({name}) is not running"));
                continue;
            }
            // SAFETY: kill(2) on a pid whose comm we just checked.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
            let mut gone = false;
            for _ in 0..40 {
                if !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
                {
                    gone = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if !gone {
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
            log.push(format!("stopped {name} (pid {pid})"));
        }
        for ns in self.netns.iter().rev() {
            if ns.starts_with(&self.prefix) {
                netns::delete(ns);
                log.push(format!("deleted netns {ns}"));
            }
        }
        for d in &self.pin_dirs {
            bpf::remove_pin_dir(d);
            log.push(format!("removed {}", d.display()));
        }
        if self.temp_dir.starts_with(std::env::temp_dir()) && self.temp_dir.to_string_lossy().contains(&self.prefix) {
            let _ = std::fs::remove_dir_all(&self.temp_dir);
            log.push(format!("removed {}", self.temp_dir.display()));
        }
        log
    }
}
