//! `/healthz` (the process serves), `/readyz` (200 only when our lease is
//! held, subnet.env is written and the last reconcile left the dataplane
//! matching the leases; 503 with the reason otherwise) and `/metrics`
//! (Prometheus, see `metrics.rs`) on
//! `--healthz-ip`/`--healthz-port`. A few lines of HTTP/1.1 on tokio: one
//! request per connection, bounded in size and time.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Debug)]
struct State {
    /// What weftd is doing before it holds a lease (e.g. waiting for the config).
    stage: String,
    lease_held: bool,
    subnet_env_written: bool,
    /// None when the last reconcile succeeded; else why the dataplane may not match.
    dataplane: Option<String>,
    /// Why a restart of weftd would drop traffic (its pins die with it).
    pins_warning: Option<String>,
}

pub struct Health {
    state: Mutex<State>,
    /// Served as /metrics.
    pub metrics: crate::metrics::Metrics,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(State {
                stage: "starting".into(),
                lease_held: false,
                subnet_env_written: false,
                dataplane: Some("not reconciled with the leases yet".into()),
                pins_warning: None,
            }),
            metrics: Default::default(),
        }
    }
}

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
    pub fn stage(&self, s: impl Into<String>) {
        self.with(|st| st.stage = s.into());
    }
    pub fn lease_held(&self, held: bool) {
        self.with(|st| st.lease_held = held);
    }
    pub fn subnet_env_written(&self) {
        self.with(|st| st.subnet_env_written = true);
    }
    pub fn dataplane(&self, problem: Option<String>) {
        self.with(|st| st.dataplane = problem);
    }
    /// Ready or not, /readyz then says that a restart will drop traffic.
    pub fn pins_warning(&self, warning: Option<String>) {
        self.with(|st| st.pins_warning = warning);
    }

    /// Ok when ready, else the reason.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        self.with(|st| {
            if !st.lease_held {
                return Err(format!("no subnet lease held ({})", st.stage));
            }
            if !st.subnet_env_written {
                return Err("subnet file not written yet".into());
            }
            match &st.dataplane {
                Some(p) => Err(format!("dataplane does not match the leases: {p}")),
                None => Ok(()),
            }
        })
    }
}

/// Binds and serves in the background; the error is returned at once if the
/// address cannot be bound.
pub async fn spawn(addr: SocketAddr, health: Arc<Health>) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the health server to {addr}"))?;
    log::info!("serving /healthz and /readyz on {}", listener.local_addr()?);
    tokio::spawn(serve(listener, health));
    Ok(())
}

async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let h = health.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer(s, &h)).await;
                });
            }
            Err(e) => {
                log::warn!("health server accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The body of `GET <path>` from a weftd's health server (for `weftd
/// status`), within a second.
pub fn get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let t = std::time::Duration::from_secs(1);
    let mut s = std::net::TcpStream::connect_timeout(&addr, t).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(t))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out).with_context(|| format!("reading {path} from {addr}"))?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Status line and body for a request line such as `GET /readyz HTTP/1.1`.
pub fn respond(request_line: &str, health: &Health) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return (400, "only GET and HEAD are served\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" => (200, "ok\n".into()),
        "/readyz" => {
            let warning = health.with(|st| st.pins_warning.clone()).map(|w| format!("warning: {w}\n")).unwrap_or_default();
            match health.readiness() {
                Ok(()) => (200, format!("ready\n{warning}")),
                Err(why) => (503, format!("not ready: {why}\n{warning}")),
            }
        }
        "/metrics" => (200, health.metrics.render(health.readiness().is_ok())),
        _ => (404, "not found: try /healthz, /readyz or /metrics\n".into()),
    }
}

async fn answer(mut s: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let k = s.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.lines().next().unwrap_or("");
    let (code, body) = respond(line, health);
    // Prometheus' text exposition format names its version.
    let ctype = if line.split_whitespace().nth(1).is_some_and(|p| p.starts_with("/metrics")) {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let head = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await?;
    if !text.starts_with("HEAD ") {
        s.write_all(body.as_bytes()).await?;
    }
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_lease_file_and_dataplane() {
        let h = Health::default();
        h.stage("waiting for the network config");
        let (c, b) = respond("GET /readyz HTTP/1.1", &h);
        assert_eq!(c, 503);
        assert!(b.contains("waiting for the network config"), "{b}");
        h.lease_held(true);
        assert!(h.readiness().unwrap_err().contains("subnet file"));
        h.subnet_env_written();
        assert!(h.readiness().unwrap_err().contains("not reconciled"));
        h.dataplane(None);
        assert_eq!(respond("GET /readyz HTTP/1.1", &h), (200, "ready\n".into()));
        h.pins_warning(Some("pins are private".into()));
        assert_eq!(respond("GET /readyz HTTP/1.1", &h), (200, "ready\nwarning: pins are private\n".into()));
        h.pins_warning(None);
        h.dataplane(Some("2 errors".into()));
        assert!(respond("GET /readyz HTTP/1.0", &h).1.contains("2 errors"));
        assert_eq!(respond("GET /healthz HTTP/1.1", &h).0, 200);
        assert_eq!(respond("GET /metricz HTTP/1.1", &h).0, 404);
        let (c, m) = respond("GET /metrics HTTP/1.1", &h);
        assert_eq!(c, 200);
        assert!(m.contains("# TYPE weft_ready gauge\nweft_ready 0\n"), "{m}");
        assert_eq!(respond("POST /readyz HTTP/1.1", &h).0, 400);
        assert_eq!(respond("", &h).0, 400);
    }

    #[tokio::test]
    async fn serves_over_tcp_on_loopback() {
        let h = Arc::new(Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, h.clone()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let r = get("/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && r.ends_with("not ready: no subnet lease held (starting)\n"), "{r}");
        h.lease_held(true);
        h.subnet_env_written();
        h.dataplane(None);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));
    }
}
