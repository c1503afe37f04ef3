//! The lease store a test cluster runs on: the harness's etcd, or weftd's
//! embedded store (a directory in the run's temp dir with `store.json`,
//! replaced atomically under an exclusive `flock` on `store.lock`).
//!
//! Leases are named by flannel's key suffix (`10.244.5.0-24`) here; the etcd
//! variant maps names to `<prefix>/subnets/<name>`. The third variant is no
//! lease store but Kubernetes (flannel's `--kube-subnet-mgr`): leases are
//! read from the Nodes' annotations ([`crate::kube_store`]).
use std::{
    fs::OpenOptions,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{etcd::EtcdServer, kube_store::KubeStore};

/// TTL of leases the harness writes itself (flannel-programmed nodes, operators).
pub const HARNESS_LEASE_TTL_S: u64 = 3600;

pub enum LeaseStore {
    Etcd {
        server: EtcdServer,
        prefix: String,
    },
    Embedded(EmbeddedStore),
    /// The tests' Kubernetes API server: leases are Nodes.
    Kube(KubeStore),
}

impl LeaseStore {
    /// weftd's lease-store flags for this store.
    pub fn weftd_args(&self) -> Vec<String> {
        match self {
            LeaseStore::Etcd { server, prefix } => vec!["--etcd-endpoints".into(), server.endpoint().into(), "--etcd-prefix".into(), prefix.clone()],
            LeaseStore::Embedded(e) => vec!["--store-dir".into(), e.dir.display().to_string(), "--net-config-path".into(), e.net_conf.display().to_string()],
            LeaseStore::Kube(k) => k.weftd_args(),
        }
    }

    /// Writes the network config (`<prefix>/config`, or net-conf.json).
    pub fn write_config(&self, json: &str) -> Result<()> {
        match self {
            LeaseStore::Etcd { server, prefix } => server.put(&format!("{prefix}/config"), json),
            LeaseStore::Embedded(e) => e.write_config(json),
            LeaseStore::Kube(k) => k.write_config(json),
        }
    }

    /// The store's own key for a lease name (the full etcd key, or the name).
    pub fn key(&self, name: &str) -> String {
        match self {
            LeaseStore::Etcd { prefix, .. } => format!("{prefix}/subnets/{name}"),
            LeaseStore::Embedded(_) | LeaseStore::Kube(_) => name.to_string(),
        }
    }

    /// The lease JSON of `name` (`10.244.5.0-24`), if held (and not expired).
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        match self {
            LeaseStore::Etcd { server, .. } => server.get(&self.key(name)),
            LeaseStore::Embedded(e) => e.get(name),
            LeaseStore::Kube(k) => Ok(k.list()?.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)),
        }
    }

    /// All leases: (name, lease JSON).
    pub fn list(&self) -> Result<Vec<(String, String)>> {
        match self {
            LeaseStore::Etcd { server, prefix } => {
                let p = format!("{prefix}/subnets/");
                Ok(server.get_prefix(&p)?.into_iter().map(|(k, v)| (k.strip_prefix(&p).unwrap_or(&k).to_string(), v)).collect())
            }
            LeaseStore::Embedded(e) => e.list(),
            LeaseStore::Kube(k) => k.list(),
        }
    }

    /// The lease (name, JSON) whose IPv4 part is `subnet` (`10.244.5.0`),
    /// whatever its IPv6 part: `10.244.5.0-24` or `10.244.5.0-24&fd44:0:0:5::-64`.
    pub fn find_by_subnet(&self, subnet: std::net::Ipv4Addr) -> Result<Option<(String, String)>> {
        Ok(self.list()?.into_iter().find(|(k, _)| crate::subnet_env::parse_lease_name(k).is_some_and(|(s, _)| s == subnet)))
    }

    /// Deletes a lease as an operator would; true if it existed.
    pub fn delete(&self, name: &str) -> Result<bool> {
        match self {
            LeaseStore::Etcd { server, .. } => Ok(server.del(&self.key(name))? == 1),
            LeaseStore::Embedded(e) => e.delete(name),
            LeaseStore::Kube(k) => k.delete(name),
        }
    }

    /// Writes a lease (as flanneld does) valid for [`HARNESS_LEASE_TTL_S`].
    pub fn put(&self, name: &str, value: &str) -> Result<()> {
        match self {
            LeaseStore::Etcd { server, .. } => {
                let lease = server.grant(HARNESS_LEASE_TTL_S)?;
                server.put_with_lease(&self.key(name), value, &lease)
            }
            LeaseStore::Embedded(e) => e.put(name, value, HARNESS_LEASE_TTL_S),
            LeaseStore::Kube(k) => k.put(name, value),
        }
    }

    /// Writes many leases (name, value) as fast as the store takes them: etcd
    /// transactions of 125 puts, or one locked write of the embedded store.
    pub fn put_many(&self, kvs: &[(String, String)]) -> Result<()> {
        match self {
            LeaseStore::Etcd { server, .. } => {
                let full: Vec<(String, String)> = kvs.iter().map(|(k, v)| (self.key(k), v.clone())).collect();
                server.put_many(&full, 125)
            }
            LeaseStore::Embedded(e) => e.put_many(kvs, HARNESS_LEASE_TTL_S),
            LeaseStore::Kube(k) => kvs.iter().try_for_each(|(n, v)| k.put(n, v)),
        }
    }

    pub fn etcd(&self) -> Result<&EtcdServer> {
        match self {
            LeaseStore::Etcd { server, .. } => Ok(server),
            LeaseStore::Embedded(_) => bail!("this cluster runs on the embedded lease store, not etcd"),
            LeaseStore::Kube(_) => bail!("this cluster runs on Kubernetes (--kube-subnet-mgr), not etcd"),
        }
    }

    pub fn etcd_mut(&mut self) -> Result<&mut EtcdServer> {
        match self {
            LeaseStore::Etcd { server, .. } => Ok(server),
            LeaseStore::Embedded(_) => bail!("this cluster runs on the embedded lease store, not etcd"),
            LeaseStore::Kube(_) => bail!("this cluster runs on Kubernetes (--kube-subnet-mgr), not etcd"),
        }
    }

    pub fn embedded(&self) -> Result<&EmbeddedStore> {
        match self {
            LeaseStore::Embedded(e) => Ok(e),
            LeaseStore::Etcd { .. } => bail!("this cluster runs on etcd, not the embedded lease store"),
            LeaseStore::Kube(_) => bail!("this cluster runs on Kubernetes (--kube-subnet-mgr), not the embedded lease store"),
        }
    }

    /// The Kubernetes API server (an error on etcd or the embedded store).
    pub fn kube(&self) -> Result<&KubeStore> {
        match self {
            LeaseStore::Kube(k) => Ok(k),
            _ => bail!("this cluster does not run on Kubernetes (--kube-subnet-mgr)"),
        }
    }

    /// [`LeaseStore::kube`], mutable (for `go_down`/`come_back`).
    pub fn kube_mut(&mut self) -> Result<&mut KubeStore> {
        match self {
            LeaseStore::Kube(k) => Ok(k),
            _ => bail!("this cluster does not run on Kubernetes (--kube-subnet-mgr)"),
        }
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            LeaseStore::Etcd { server, prefix } => format!("etcd {} prefix {prefix}, log {}", server.endpoint(), server.log.display()),
            LeaseStore::Embedded(e) => format!("embedded store {}, config {}", e.dir.display(), e.net_conf.display()),
            LeaseStore::Kube(k) => k.describe(),
        }
    }

    /// The etcd server's pid (for lab --keep), if any.
    pub fn pid(&self) -> Option<u32> {
        match self {
            LeaseStore::Etcd { server, .. } => server.pid(),
            LeaseStore::Embedded(_) | LeaseStore::Kube(_) => None,
        }
    }

    /// Leaves etcd running on drop (lab --keep); the embedded store lives in
    /// the run's temp dir, which has its own guard; the API server runs in
    /// this process and cannot outlive it.
    pub fn disarm(&mut self) {
        if let LeaseStore::Etcd { server, .. } = self {
            server.disarm();
        }
    }
}

/// weftd's embedded store directory as the harness sees it. The directory
/// lives in the run's temp dir (removed with it).
pub struct EmbeddedStore {
    pub dir: PathBuf,
    pub net_conf: PathBuf,
}

/// An exclusive flock on `store.lock`, released on drop (closing the fd).
pub struct StoreLock {
    _file: std::fs::File,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl EmbeddedStore {
    /// `dir` is created (empty: weftd creates store.json on its first write).
    pub fn new(dir: &Path, net_conf: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(EmbeddedStore { dir: dir.to_path_buf(), net_conf: net_conf.to_path_buf() })
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("store.json")
    }

    /// Writes net-conf.json atomically (weftd rereads it while it runs).
    pub fn write_config(&self, json: &str) -> Result<()> {
        weft_common::fs::write_atomic(&self.net_conf, json.as_bytes(), None).with_context(|| format!("writing {}", self.net_conf.display()))
    }

    /// Takes the store's exclusive lock (blocks while a weftd holds it).
    pub fn lock(&self) -> Result<StoreLock> {
        let p = self.dir.join("store.lock");
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&p).with_context(|| format!("opening {}", p.display()))?;
        // SAFETY: flock on an fd we own; released when `f` is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {}: {}", p.display(), std::io::Error::last_os_error());
        }
        Ok(StoreLock { _file: f })
    }

    /// store.json as JSON (an empty store if the file does not exist yet).
    /// Reads without the lock: the file is only ever replaced by rename.
    pub fn read_db(&self) -> Result<Value> {
        let p = self.db_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}: {}", p.display(), String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({"revision": 0, "compact_revision": 0, "leases": {}, "events": []})),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// store.json's text (for failure evidence).
    pub fn raw(&self) -> String {
        std::fs::read_to_string(self.db_path()).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.db_path().display()))
    }

    /// Replaces store.json as weftd does (under the lock, atomically).
    fn write_db(&self, db: &Value) -> Result<()> {
        weft_common::fs::write_atomic(&self.db_path(), serde_json::to_string(db)?.as_bytes(), None)
            .with_context(|| format!("replacing {}", self.db_path().display()))
    }

    /// Under the lock: read, let `f` change the leases and return the events
    /// to record (it advances the revision once per event), write atomically.
    /// True if anything changed.
    fn modify(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>, &mut i64) -> Result<Vec<Value>>) -> Result<bool> {
        let _lock = self.lock()?;
        let mut db = self.read_db()?;
        let mut rev = db.get("revision").and_then(Value::as_i64).context("store.json has no revision")?;
        let leases = db.get_mut("leases").and_then(Value::as_object_mut).context("store.json has no leases object")?;
        let events = f(leases, &mut rev)?;
        if events.is_empty() {
            return Ok(false);
        }
        db["revision"] = json!(rev);
        db.get_mut("events").and_then(Value::as_array_mut).context("store.json has no events array")?.extend(events);
        self.write_db(&db)?;
        Ok(true)
    }

    /// Unexpired leases: (name, lease JSON), sorted by name.
    pub fn list(&self) -> Result<Vec<(String, String)>> {
        let db = self.read_db()?;
        let now = now_ms();
        let mut v = Vec::new();
        for (k, e) in db.get("leases").and_then(Value::as_object).into_iter().flatten() {
            let exp = e.get("expires_ms").and_then(Value::as_u64).unwrap_or(0);
            if exp > now {
                v.push((k.clone(), e.get("value").and_then(Value::as_str).unwrap_or_default().to_string()));
            }
        }
        v.sort();
        Ok(v)
    }

    pub fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(self.list()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
    }

    /// The entry of `name` as stored (value, expires_ms, mod_revision), expired or not.
    pub fn entry(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.read_db()?.get("leases").and_then(|l| l.get(name)).cloned())
    }

    /// Removes `name` (an operator's delete); true if it was there.
    pub fn delete(&self, name: &str) -> Result<bool> {
        self.modify(|leases, rev| {
            Ok(match leases.remove(name) {
                Some(_) => {
                    *rev += 1;
                    vec![json!({"revision": *rev, "kind": "delete", "key": name, "value": null})]
                }
                None => vec![],
            })
        })
    }

    /// Writes `name` = `value`, expiring in `ttl_s`.
    pub fn put(&self, name: &str, value: &str, ttl_s: u64) -> Result<()> {
        self.put_many(&[(name.to_string(), value.to_string())], ttl_s)
    }

    /// Writes many leases in one locked write (one event each), as a burst of
    /// nodes joining would.
    pub fn put_many(&self, kvs: &[(String, String)], ttl_s: u64) -> Result<()> {
        self.modify(|leases, rev| {
            let expires = now_ms() + ttl_s * 1000;
            Ok(kvs
                .iter()
                .map(|(name, value)| {
                    *rev += 1;
                    leases.insert(name.clone(), json!({"value": value, "expires_ms": expires, "mod_revision": *rev}));
                    json!({"revision": *rev, "kind": "put", "key": name, "value": value})
                })
                .collect())
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod t {
    use super::*;

    #[test]
    fn put_list_delete() {
        let d = std::env::temp_dir().join(format!("weft-harness-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = EmbeddedStore::new(&d, &d.join("net-conf.json")).unwrap();
        assert!(s.list().unwrap().is_empty());
        s.put("10.244.5.0-24", r#"{"PublicIP":"192.168.77.9"}"#, 60).unwrap();
        s.put("10.244.6.0-24", "{}", 60).unwrap();
        assert_eq!(s.get("10.244.5.0-24").unwrap().as_deref(), Some(r#"{"PublicIP":"192.168.77.9"}"#));
        assert!(s.delete("10.244.6.0-24").unwrap());
        assert!(!s.delete("10.244.6.0-24").unwrap(), "second delete finds nothing");
        let db = s.read_db().unwrap();
        assert_eq!(db["revision"], 3);
        assert_eq!(db["events"].as_array().unwrap().len(), 3);
        assert_eq!(db["events"][2], json!({"revision": 3, "kind": "delete", "key": "10.244.6.0-24", "value": null}));
        assert_eq!(db["leases"]["10.244.5.0-24"]["mod_revision"], 1);
        assert_eq!(s.list().unwrap().len(), 1);
        // Dual-stack names (flannel's `&` keys) are names like any other.
        let dual = "10.244.8.0-24&fd44:0:0:8::-64";
        s.put(dual, r#"{"PublicIP":"192.168.77.8","PublicIPv6":"fd77::8"}"#, 60).unwrap();
        assert_eq!(s.get(dual).unwrap().as_deref(), Some(r#"{"PublicIP":"192.168.77.8","PublicIPv6":"fd77::8"}"#));
        assert!(s.list().unwrap().iter().any(|(k, _)| k == dual));
        assert!(s.delete(dual).unwrap());
        // An expired entry counts as absent.
        s.put("10.244.7.0-24", "{}", 0).unwrap();
        assert!(s.get("10.244.7.0-24").unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
