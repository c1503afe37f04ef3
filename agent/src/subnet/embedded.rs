//! The embedded lease store: the default when no etcd endpoint is given, for
//! single machines and labs. Same semantics as the etcd store: atomic create,
//! TTL, a revisioned watch that never misses an event.
//!
//! One directory, shared by every weftd on the machine: `store.json` holds the
//! leases, a revision counter and a bounded log of events; every operation
//! takes an exclusive `flock(2)` on `store.lock`, expires what is due, applies
//! itself, and replaces `store.json` atomically (temporary file + rename), so
//! a reader never sees half a file and two writers never interleave. Watchers
//! poll the file's metadata and read events after their revision; one that
//! fell behind the log's start relists, as after an etcd compaction.
use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{lease::LeaseAttrs, registry::Registry, LeaseEvent, Subnets};

/// Events kept for watchers; older ones are compacted away.
const MAX_EVENTS: usize = 10_000;
/// How often a watcher looks at the file's metadata.
const POLL: Duration = Duration::from_millis(100);
/// How often a watcher takes the lock anyway, to expire leases that are due.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
struct Db {
    revision: i64,
    compact_revision: i64,
    leases: BTreeMap<String, Entry>,
    events: Vec<Event>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Entry {
    value: String,
    expires_ms: u64,
    mod_revision: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Event {
    revision: i64,
    kind: String,
    key: String,
    value: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Db {
    fn record(&mut self, kind: &str, key: &str, value: Option<String>) {
        self.revision += 1;
        self.events.push(Event { revision: self.revision, kind: kind.into(), key: key.into(), value });
        if self.events.len() > MAX_EVENTS {
            let cut = self.events.len() - MAX_EVENTS;
            self.compact_revision = self.events[cut - 1].revision;
            self.events.drain(..cut);
        }
    }

    /// Removes leases that are due; true if anything changed.
    fn expire(&mut self, now: u64) -> bool {
        let due: Vec<String> = self.leases.iter().filter(|(_, e)| e.expires_ms <= now).map(|(k, _)| k.clone()).collect();
        for k in &due {
            self.leases.remove(k);
            self.record("delete", k, None);
        }
        !due.is_empty()
    }

    fn put(&mut self, key: &str, value: String, ttl: i64, now: u64) {
        self.record("put", key, Some(value.clone()));
        let e = Entry { value, expires_ms: now + ttl.max(1) as u64 * 1000, mod_revision: self.revision };
        self.leases.insert(key.to_string(), e);
    }

    /// Events after `rev`, or None when the log no longer reaches back that far.
    fn events_after(&self, rev: i64) -> Option<Vec<LeaseEvent>> {
        if rev < self.compact_revision {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.revision > rev)
                .map(|e| match (&*e.kind, &e.value) {
                    ("put", Some(v)) => LeaseEvent::Put(e.key.clone(), v.clone().into_bytes()),
                    _ => LeaseEvent::Delete(e.key.clone()),
                })
                .collect(),
        )
    }

    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.leases.iter().map(|(k, e)| (k.clone(), e.value.clone().into_bytes())).collect()
    }
}

#[derive(Clone, Debug)]
pub struct LocalStore {
    dir: PathBuf,
    /// flannel's net-conf.json: the network config, as a file beside the store.
    net_config: PathBuf,
}

impl LocalStore {
    pub fn open(dir: &Path, net_config: &Path) -> Result<LocalStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the store directory {}", dir.display()))?;
        Ok(LocalStore { dir: dir.to_path_buf(), net_config: net_config.to_path_buf() })
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("store.json")
    }

    /// Runs `f` on the database under the exclusive lock, after expiring what
    /// is due; writes the database back if anything changed.
    fn locked_sync<T>(&self, f: impl FnOnce(&mut Db, u64) -> Result<(T, bool)>) -> Result<T> {
        let lock_path = self.dir.join("store.lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock on an fd we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {}: {}", lock_path.display(), std::io::Error::last_os_error());
        }
        let path = self.db_path();
        let mut db: Db = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is not a weft store file (remove it to start afresh)", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Db::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let now = now_ms();
        let expired = db.expire(now);
        let (out, changed) = f(&mut db, now)?;
        if changed || expired {
            // Readers without the lock (`weftd status`, the harness) see
            // the old file or the new one, never half of one.
            weft_common::fs::write_atomic(&path, &serde_json::to_vec(&db)?, None).with_context(|| format!("replacing {}", path.display()))?;
        }
        drop(lock);
        Ok(out)
    }

    async fn locked<T: Send + 'static>(&self, f: impl FnOnce(&mut Db, u64) -> Result<(T, bool)> + Send + 'static) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.locked_sync(f)).await.context("store task")?
    }
}

impl Registry for LocalStore {
    fn describe(&self) -> String {
        format!("the embedded lease store in {} (network config {})", self.dir.display(), self.net_config.display())
    }

    async fn network_config(&self) -> Result<(String, String)> {
        Ok((wait_for_config_file(&self.net_config).await?, self.net_config.display().to_string()))
    }

    async fn list(&self) -> Result<(i64, Vec<(String, Vec<u8>)>)> {
        self.locked(|db, _| Ok(((db.revision, db.snapshot()), false))).await
    }

    /// Creates the lease only if no lease holds either of its subnets
    /// (a dual-stack key names two). False when taken.
    async fn create(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<bool> {
        let (key, value, want) = (subnet.to_key(), serde_json::to_string(attrs)?, *subnet);
        self.locked(move |db, now| {
            if db.leases.keys().any(|k| *k == key || Subnets::from_key(k).is_ok_and(|s| s.overlaps(&want))) {
                return Ok((false, false));
            }
            db.put(&key, value, ttl, now);
            Ok((true, true))
        })
        .await
    }

    /// Writes our lease with a fresh TTL.
    async fn renew(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<()> {
        let (key, value) = (subnet.to_key(), serde_json::to_string(attrs)?);
        self.locked(move |db, now| {
            db.put(&key, value, ttl, now);
            Ok(((), true))
        })
        .await
    }

    async fn delete(&self, subnet: &Subnets) -> Result<()> {
        let key = subnet.to_key();
        self.locked(move |db, _| {
            let had = db.leases.remove(&key).is_some();
            if had {
                db.record("delete", &key, None);
            }
            Ok(((), had))
        })
        .await
    }

    /// Streams lease changes into `tx`: a snapshot, then every event, polling
    /// the file's metadata; relists when the event log no longer reaches back
    /// to our revision. Returns only when the receiver is gone.
    async fn watch(self, tx: tokio::sync::mpsc::Sender<LeaseEvent>) {
        let mut rev: Option<i64> = None;
        let mut last_stamp = None;
        let mut last_lock = Instant::now() - EXPIRE_EVERY;
        loop {
            let stamp = self.stamp();
            if rev.is_none() || stamp != last_stamp || last_lock.elapsed() >= EXPIRE_EVERY {
                last_lock = Instant::now();
                let since = rev;
                let r = self
                    .locked(move |db, _| {
                        let evs = since.and_then(|r| db.events_after(r));
                        Ok(((db.revision, evs, since.is_some(), db.snapshot()), false))
                    })
                    .await;
                match r {
                    Ok((now_rev, evs, had_rev, snap)) => {
                        let msgs = match evs {
                            Some(evs) => evs,
                            None => {
                                if had_rev {
                                    log::warn!("lease watch fell behind the store's event log; relisting");
                                }
                                vec![LeaseEvent::Snapshot(snap)]
                            }
                        };
                        for m in msgs {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                        rev = Some(now_rev);
                        last_stamp = self.stamp();
                    }
                    Err(e) => {
                        crate::metrics::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        log::warn!("reading the lease store {}: {e:#}", self.dir.display())
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl LocalStore {
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(self.db_path()).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

/// Reads flannel's net-conf.json for the embedded store, waiting for it to
/// appear (as flanneld waits for its config).
pub async fn wait_for_config_file(path: &Path) -> Result<String> {
    let mut logged = false;
    loop {
        match std::fs::read_to_string(path) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !logged {
                    log::warn!("network config file {} does not exist yet; waiting for it", path.display());
                    logged = true;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-local-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn attrs(n: u8) -> LeaseAttrs {
        LeaseAttrs::vxlan(std::net::Ipv4Addr::new(192, 168, 1, n), 1, &[2, 0, 0, 0, 0, n])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn create_is_atomic_across_handles() {
        let d = dir("atomic");
        let net = Subnets::from_key("10.244.7.0-24&fd44:0:0:7::-64").unwrap();
        let mut tasks = vec![];
        for n in 0..16u8 {
            // Separate handles: separate open file descriptions, as separate processes have.
            let s = LocalStore::open(&d, Path::new("/nonexistent/net-conf.json")).unwrap();
            tasks.push(tokio::spawn(async move { s.create(&net, &attrs(n), 60).await.unwrap() }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1, "exactly one create may win");
        let (rev, kvs) = LocalStore::open(&d, Path::new("/nonexistent/net-conf.json")).unwrap().list().await.unwrap();
        assert_eq!((rev, kvs.len()), (1, 1));
        assert_eq!(kvs[0].0, "10.244.7.0-24&fd44:0:0:7::-64", "a dual-stack lease is stored under flannel's & key");
        std::fs::remove_dir_all(&d).unwrap();
    }

    async fn next(rx: &mut tokio::sync::mpsc::Receiver<LeaseEvent>) -> LeaseEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event within 5 s").unwrap()
    }

    #[tokio::test]
    async fn watch_sees_every_event_and_expiry() {
        let d = dir("watch");
        let s = LocalStore::open(&d, Path::new("/nonexistent/net-conf.json")).unwrap();
        let a = Subnets::v4("10.244.1.0/24".parse().unwrap());
        let b = Subnets::v4("10.244.2.0/24".parse().unwrap());
        assert!(s.create(&a, &attrs(1), 3600).await.unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(s.clone().watch(tx));
        assert!(matches!(next(&mut rx).await, LeaseEvent::Snapshot(kvs) if kvs.len() == 1));
        assert!(s.create(&b, &attrs(2), 1).await.unwrap());
        assert!(!s.create(&b, &attrs(3), 1).await.unwrap(), "taken");
        s.renew(&a, &attrs(1), 3600).await.unwrap();
        s.delete(&a).await.unwrap();
        assert!(matches!(next(&mut rx).await, LeaseEvent::Put(k, _) if k == "10.244.2.0-24"));
        assert!(matches!(next(&mut rx).await, LeaseEvent::Put(k, _) if k == "10.244.1.0-24"));
        assert!(matches!(next(&mut rx).await, LeaseEvent::Delete(k) if k == "10.244.1.0-24"));
        // b had a 1 s TTL: the watcher's periodic pass expires it.
        assert!(matches!(next(&mut rx).await, LeaseEvent::Delete(k) if k == "10.244.2.0-24"));
        assert_eq!(s.list().await.unwrap().1.len(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_watcher_behind_the_log_relists() {
        let mut db = Db::default();
        for i in 0..(MAX_EVENTS + 5) {
            db.put(&format!("10.{}.{}.0-24", i / 256, i % 256), "{}".into(), 60, 0);
        }
        assert_eq!(db.events.len(), MAX_EVENTS);
        assert_eq!(db.compact_revision, 5);
        assert!(db.events_after(4).is_none(), "behind the log: relist");
        assert_eq!(db.events_after(5).unwrap().len(), MAX_EVENTS);
        assert_eq!(db.events_after(db.revision).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_corrupt_store_is_named() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("store.json"), "{garbage").unwrap();
        let e = format!("{:#}", LocalStore::open(&d, Path::new("/nonexistent/net-conf.json")).unwrap().list().await.unwrap_err());
        assert!(e.contains("store.json") && e.contains("not a weft store file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
