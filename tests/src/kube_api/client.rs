//! A small HTTPS client for tests, trusting only the kubeconfig's CA: `from_kubeconfig`, `Client`, `read_head`, `Watch`.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use k8s_openapi::ByteString;
use serde_json::Value;

/// Reads (server URL's host:port, CA PEM, token) back from a kubeconfig the
/// server wrote, so the tests use what kubectl uses.
pub fn from_kubeconfig(path: &Path) -> Result<(String, Vec<u8>, String)> {
    let cfg: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let server = cfg.pointer("/clusters/0/cluster/server").and_then(Value::as_str).context("no server")?;
    let ca: ByteString = serde_json::from_value(cfg.pointer("/clusters/0/cluster/certificate-authority-data").cloned().context("no CA data")?)?;
    let token = cfg.pointer("/users/0/user/token").and_then(Value::as_str).context("no token")?;
    Ok((server.trim_start_matches("https://").to_string(), ca.0, token.to_string()))
}

/// A TLS client stream.
pub type ClientTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One request per connection, bearer token, JSON bodies; watches as
/// channels of events. Verifies the server with the given CA only.
pub struct Client {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

impl Client {
    pub fn new(kubeconfig: &Path) -> Result<Client> {
        let (addr, ca, token) = from_kubeconfig(kubeconfig)?;
        Client::with_ca(&addr, &ca, Some(token))
    }
    pub fn with_ca(addr: &str, ca_pem: &[u8], token: Option<String>) -> Result<Client> {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(c?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client { addr: addr.to_string(), tls: Arc::new(tls), token })
    }
    pub fn token(&self, t: Option<&str>) -> Client {
        Client { addr: self.addr.clone(), tls: self.tls.clone(), token: t.map(str::to_string) }
    }

    pub fn send(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> Result<BufReader<ClientTls>> {
        let sock = TcpStream::connect_timeout(&self.addr.parse()?, Duration::from_secs(5))?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), "127.0.0.1".try_into()?)?;
        let mut s = rustls::StreamOwned::new(conn, sock);
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Accept: application/json\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )?;
        s.write_all(body)?;
        s.flush()?;
        Ok(BufReader::new(s))
    }

    /// One request; (status code, JSON body).
    pub fn req(&self, method: &str, path: &str, ctype: &str, body: &Value) -> Result<(u16, Value)> {
        let b = if body.is_null() { Vec::new() } else { serde_json::to_vec(body)? };
        let mut r = self.send(method, path, ctype, &b)?;
        let (code, headers) = read_head(&mut r)?;
        let n: usize = headers.get("content-length").context("no content-length")?.parse()?;
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        Ok((code, serde_json::from_slice(&body).with_context(|| format!("body {:?}", String::from_utf8_lossy(&body)))?))
    }
    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.req("GET", path, "application/json", &Value::Null)
    }

    /// Opens a watch; its events arrive on a channel read by a thread that
    /// ends when the stream does.
    pub fn watch(&self, path: &str) -> Result<Watch> {
        let mut r = self.send("GET", path, "application/json", &[])?;
        let (code, headers) = read_head(&mut r)?;
        ensure!(code == 200, "watch {path}: HTTP {code}");
        ensure!(headers.get("transfer-encoding").map(String::as_str) == Some("chunked"), "watch not chunked: {headers:?}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return };
                if n == 0 {
                    let _ = tx.send(Value::String("END".into()));
                    return;
                }
                let mut data = vec![0; n + 2];
                if r.read_exact(&mut data).is_err() {
                    return;
                }
                pending.extend_from_slice(&data[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        Ok(Watch { rx })
    }
}

/// Status code and lower-cased headers of a response.
pub fn read_head(r: &mut BufReader<ClientTls>) -> Result<(u16, BTreeMap<String, String>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code: u16 = line.split_whitespace().nth(1).context("no status line")?.parse()?;
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        ensure!(r.read_line(&mut h)? > 0, "eof in headers");
        let h = h.trim_end();
        if h.is_empty() {
            return Ok((code, headers));
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

/// An open watch stream.
pub struct Watch {
    rx: mpsc::Receiver<Value>,
}

impl Watch {
    /// The next event within `t` (None on time-out or end of stream; an
    /// ended stream yields the string "END" once).
    pub fn next(&self, t: Duration) -> Option<Value> {
        self.rx.recv_timeout(t).ok()
    }
    /// Events until `n` arrived or `t` passed.
    pub fn take(&self, n: usize, t: Duration) -> Vec<Value> {
        let end = Instant::now() + t;
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(end.saturating_duration_since(Instant::now())) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }
    /// Whether the stream ended (cleanly or not) within `t`.
    pub fn ends_within(&self, t: Duration) -> bool {
        let end = Instant::now() + t;
        loop {
            match self.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(Value::String(s)) if s == "END" => return true,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}
