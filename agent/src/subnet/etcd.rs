//! The etcd registry: flannel's etcd v3 key schema. `<prefix>/config` holds the
//! network config, `<prefix>/subnets/<a.b.c.d>-<len>` one lease each, attached
//! to an etcd lease so that it disappears when its holder stops renewing.
//!
//! The watch never loses an event (flannel v0.20 did): it starts at the
//! revision of the list it follows, handles every event of every response,
//! resumes from the last revision after a broken stream, and relists when
//! etcd has compacted past that revision.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream};

use super::{lease::LeaseAttrs, registry::Registry, LeaseEvent, Subnets};

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
}

/// How to authenticate to etcd: TLS (CA, optional client certificate) and/or
/// etcd's user/password.
#[derive(Debug, Clone, Default)]
pub struct EtcdAuth {
    pub cafile: Option<std::path::PathBuf>,
    pub certfile: Option<std::path::PathBuf>,
    pub keyfile: Option<std::path::PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

fn read_pem(flag: &str, p: &std::path::Path) -> Result<Vec<u8>> {
    let b = std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))?;
    if !String::from_utf8_lossy(&b).contains("-----BEGIN ") {
        bail!("{flag} {}: not a PEM file", p.display());
    }
    Ok(b)
}

impl EtcdAuth {
    /// Connection options, with every file read and checked up front so a
    /// wrong path is reported by flag name rather than as a handshake failure.
    pub fn connect_options(&self, endpoints: &[String]) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let tls = self.cafile.is_some() || self.certfile.is_some();
        if tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.cafile {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(read_pem("--etcd-cafile", ca)?));
            }
            if let (Some(c), Some(k)) = (&self.certfile, &self.keyfile) {
                t = t.identity(etcd_client::Identity::from_pem(read_pem("--etcd-certfile", c)?, read_pem("--etcd-keyfile", k)?));
            }
            opts = opts.with_tls(t);
            if let Some(e) = endpoints.iter().find(|e| e.starts_with("http://")) {
                bail!("--etcd-endpoints {e}: TLS options are set, so endpoints must be https://");
            }
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            opts = opts.with_user(u.clone(), p.clone());
        }
        Ok(opts)
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: &[String], prefix: &str, auth: &EtcdAuth) -> Result<EtcdStore> {
        let opts = auth.connect_options(endpoints)?;
        let client = Client::connect(endpoints, Some(opts)).await.with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        Ok(EtcdStore { client, prefix: prefix.trim_end_matches('/').to_string(), endpoints: endpoints.join(",") })
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn lease_key(&self, subnet: &Subnets) -> String {
        format!("{}{}", self.subnets_prefix(), subnet.to_key())
    }

    /// The raw network config JSON, or None when the key does not exist.
    async fn read_network_config(&self) -> Result<Option<String>> {
        let key = format!("{}/config", self.prefix);
        let resp = self.client.clone().get(key.clone(), None).await.with_context(|| format!("reading {key}"))?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(String::from_utf8(kv.value().to_vec()).with_context(|| format!("{key} is not UTF-8"))?)),
        }
    }

    /// All leases (key suffix after `subnets/`, raw value) and the revision they were read at.
    async fn list_leases(&self) -> Result<(i64, Vec<(String, Vec<u8>)>)> {
        let p = self.subnets_prefix();
        let resp = self.client.clone().get(p.clone(), Some(GetOptions::new().with_prefix())).await.with_context(|| format!("listing {p}"))?;
        let rev = resp.header().map(|h| h.revision()).context("etcd response without header")?;
        let kvs = resp.kvs().iter().map(|kv| (String::from_utf8_lossy(&kv.key()[p.len()..]).into_owned(), kv.value().to_vec())).collect();
        Ok((rev, kvs))
    }

    async fn grant(&self, ttl: i64) -> Result<i64> {
        Ok(self.client.clone().lease_grant(ttl, None).await.context("granting an etcd lease")?.id())
    }

    /// Creates the lease only if nobody holds the key (flannel's transaction).
    /// Returns false when the subnet is taken. A dual-stack key names two
    /// subnets, and the transaction guards the key only: two nodes that
    /// chose the same IPv4 subnet with different IPv6 ones (or the reverse)
    /// would both succeed. So after a create, the older of two overlapping
    /// leases (lower create revision) wins, and the younger is deleted here
    /// (both creators see the same revisions, so exactly one gives way).
    async fn create_lease(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<bool> {
        if !self.create_key(subnet, attrs, ttl).await? {
            return Ok(false);
        }
        let p = self.subnets_prefix();
        let resp = self.client.clone().get(p.clone(), Some(GetOptions::new().with_prefix())).await.with_context(|| format!("listing {p}"))?;
        let key = self.lease_key(subnet);
        let ours = resp.kvs().iter().find(|kv| kv.key() == key.as_bytes()).map(|kv| kv.create_revision());
        let Some(ours) = ours else { return Ok(false) };
        let older = resp.kvs().iter().find(|kv| {
            kv.key() != key.as_bytes()
                && kv.create_revision() < ours
                && Subnets::from_key(&String::from_utf8_lossy(&kv.key()[p.len()..])).is_ok_and(|s| s.overlaps(subnet))
        });
        if let Some(kv) = older {
            log::warn!("lease {subnet} overlaps {}, created first by another node; giving it up", String::from_utf8_lossy(&kv.key()[p.len()..]));
            self.delete_lease(subnet).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// flannel's transaction: put the key only if it does not exist.
    async fn create_key(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<bool> {
        let key = self.lease_key(subnet);
        let value = serde_json::to_vec(attrs)?;
        let id = self.grant(ttl).await?;
        let txn = Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(id)),
        )]);
        let resp = self.client.clone().txn(txn).await.with_context(|| format!("creating {key}"))?;
        if !resp.succeeded() {
            let _ = self.client.clone().lease_revoke(id).await;
        }
        Ok(resp.succeeded())
    }

    /// Writes our lease under a fresh etcd lease (flannel's renewal: grant and put again).
    async fn renew_lease(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<()> {
        let key = self.lease_key(subnet);
        let id = self.grant(ttl).await?;
        self.client
            .clone()
            .put(key.clone(), serde_json::to_vec(attrs)?, Some(PutOptions::new().with_lease(id)))
            .await
            .with_context(|| format!("renewing {key}"))?;
        Ok(())
    }

    async fn delete_lease(&self, subnet: &Subnets) -> Result<()> {
        let key = self.lease_key(subnet);
        self.client.clone().delete(key.clone(), None).await.with_context(|| format!("deleting {key}"))?;
        Ok(())
    }

    /// Streams lease changes into `tx` forever: a snapshot first, then every
    /// event. Reconnects with backoff; the receiver keeps the dataplane as it
    /// is meanwhile. Returns only when the receiver is gone.
    async fn watch_leases(self, tx: tokio::sync::mpsc::Sender<LeaseEvent>) {
        let mut backoff = Duration::from_millis(200);
        let mut next_rev: Option<i64> = None;
        loop {
            let rev = match next_rev {
                Some(r) => r,
                None => match self.list_leases().await {
                    Ok((rev, kvs)) => {
                        if tx.send(LeaseEvent::Snapshot(kvs)).await.is_err() {
                            return;
                        }
                        rev + 1
                    }
                    Err(e) => {
                        log::warn!("lease list failed, retrying in {backoff:?}: {e:#}");
                        crate::metrics::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                },
            };
            match self.watch_from(rev, &tx, &mut backoff).await {
                Ok(WatchEnd::ReceiverGone) => return,
                Ok(WatchEnd::Compacted(c)) => {
                    log::warn!("lease watch fell behind etcd's compaction (revision {c}); relisting");
                    next_rev = None;
                }
                Err((r, e)) => {
                    log::warn!("lease watch broken at revision {r}, resuming in {backoff:?}: {e:#}");
                    crate::metrics::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    next_rev = Some(r);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Watches from `rev`; returns where to resume.
    async fn watch_from(
        &self,
        mut rev: i64,
        tx: &tokio::sync::mpsc::Sender<LeaseEvent>,
        backoff: &mut Duration,
    ) -> std::result::Result<WatchEnd, (i64, anyhow::Error)> {
        let p = self.subnets_prefix();
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev).with_progress_notify();
        let mut stream: WatchStream =
            self.client.clone().watch(p.clone(), Some(opts)).await.map_err(|e| (rev, anyhow::Error::from(e).context("starting the lease watch")))?;
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err((rev, anyhow::anyhow!("watch stream ended"))),
                Err(e) => return Err((rev, e.into())),
            };
            if resp.compact_revision() > 0 {
                return Ok(WatchEnd::Compacted(resp.compact_revision()));
            }
            if resp.canceled() {
                return Err((rev, anyhow::anyhow!("watch canceled: {}", resp.cancel_reason())));
            }
            *backoff = Duration::from_millis(200);
            // Every event of the response, in order (flannel v0.20 read only the first).
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some(suffix) = key.strip_prefix(&p) else { continue };
                let e = match ev.event_type() {
                    EventType::Put => LeaseEvent::Put(suffix.to_string(), kv.value().to_vec()),
                    EventType::Delete => LeaseEvent::Delete(suffix.to_string()),
                };
                rev = rev.max(kv.mod_revision() + 1);
                if tx.send(e).await.is_err() {
                    return Ok(WatchEnd::ReceiverGone);
                }
            }
            if let Some(h) = resp.header() {
                rev = rev.max(h.revision() + 1);
            }
        }
    }
}

enum WatchEnd {
    ReceiverGone,
    Compacted(i64),
}

impl Registry for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd at {} (prefix {})", self.endpoints, self.prefix)
    }
    /// Waits for `<prefix>/config` to exist, as flanneld does, logging while it waits.
    async fn network_config(&self) -> Result<(String, String)> {
        let mut logged = false;
        let source = format!("{}/config", self.prefix);
        loop {
            match self.read_network_config().await {
                Ok(Some(c)) => return Ok((c, source)),
                Ok(None) if !logged => {
                    log::warn!("network config {source} does not exist yet; waiting for it");
                    logged = true;
                }
                Ok(None) => {}
                Err(e) => log::warn!("cannot read the network config: {e:#}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    async fn list(&self) -> Result<(i64, Vec<(String, Vec<u8>)>)> {
        self.list_leases().await
    }
    async fn create(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<bool> {
        self.create_lease(subnet, attrs, ttl).await
    }
    async fn renew(&self, subnet: &Subnets, attrs: &LeaseAttrs, ttl: i64) -> Result<()> {
        self.renew_lease(subnet, attrs, ttl).await
    }
    async fn delete(&self, subnet: &Subnets) -> Result<()> {
        self.delete_lease(subnet).await
    }
    async fn watch(self, tx: tokio::sync::mpsc::Sender<LeaseEvent>) {
        self.watch_leases(tx).await
    }
}

pub fn check_prefix(prefix: &str) -> Result<()> {
    if !prefix.starts_with('/') {
        bail!("--etcd-prefix {prefix:?} must start with '/'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_checked_by_flag() {
        let eps = vec!["https://10.0.0.1:2379".to_string()];
        let missing = EtcdAuth { cafile: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(format!("{:#}", missing.connect_options(&eps).unwrap_err()).contains("--etcd-cafile /nonexistent/ca.pem"));
        let dir = std::env::temp_dir().join(format!("weft-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let not_pem = EtcdAuth { cafile: Some(junk.clone()), ..Default::default() };
        assert!(format!("{:#}", not_pem.connect_options(&eps).unwrap_err()).contains("not a PEM file"));
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let plain = EtcdAuth { cafile: Some(ca), ..Default::default() };
        assert!(plain.connect_options(&eps).is_ok());
        assert!(format!("{:#}", plain.connect_options(&["http://10.0.0.1:2379".into()]).unwrap_err()).contains("must be https://"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
