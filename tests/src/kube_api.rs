//! A Kubernetes API server for tests, never shipped: just enough of
//! kube-apiserver (Nodes, their `status` subresource, discovery, bearer
//! tokens, list/watch with resourceVersions) for weftd's Kubernetes subnet
//! manager and for `kubectl`, following the API conventions for those parts.
//! No kube-apiserver can be installed on the test machines, so this one stands
//! in for it.
//!
//! Synchronous (std threads) like the rest of the harness: one accept thread
//! and one thread per connection, HTTP/1.1 over TLS (rustls), JSON bodies
//! made from k8s-openapi's types. Nodes are stored as `Node` values; every
//! write bumps one global resourceVersion and records a watch event in a
//! bounded history. Test hooks: [`KubeApi::compact`] (watchers from before
//! get `410 Expired`), [`KubeApi::bookmark_now`], [`KubeApi::drop_watches`],
//! [`KubeApi::go_down`] / [`KubeApi::come_back`] (unreachable for a while,
//! then the same address and certificate). Dropping the server closes every
//! connection and joins every thread it started.
//!
//! `kubectl get` gets the Table the real node printer makes (NAME STATUS
//! ROLES AGE VERSION, `-o wide` columns). Set WEFT_KUBE_API_LOG to print
//! every request to stderr.
//!
//! Known gaps against the real server: no field validation (e.g. podCIDR
//! immutability), no label selectors, only `metadata.name` field selectors,
//! `limit` ignored (no `continue` pages), a watch from a resourceVersion
//! newer than the newest just waits, no protobuf, no OpenAPI documents (404),
//! no pods other than `404 NotFound`, no managedFields, no admission.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::{
    api::core::v1::Node,
    apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusDetails, Time, WatchEvent},
    ByteString, List,
};
use serde_json::{json, Value};

use crate::tempdir::TempDir;

/// The admin token's name in [`KubeApi::token`].
pub const ADMIN: &str = "admin";
/// The token limited to flannel's ClusterRole (nodes get/list/watch,
/// nodes/status patch, pods get).
pub const FLANNEL: &str = "flannel";

/// How many write events the watch history keeps.
const HISTORY: usize = 1000;
/// How often a watcher that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(3);
/// A watch's length when the client gives no timeoutSeconds.
const DEFAULT_WATCH: Duration = Duration::from_secs(300);
/// How long a connection may sit idle between requests.
const IDLE: Duration = Duration::from_secs(60);

/// A verb the authorizer knows, as Kubernetes' RBAC names them.
fn allowed_for_flannel(verb: &str, resource: &str) -> bool {
    matches!((verb, resource), ("get" | "list" | "watch", "nodes") | ("patch", "nodes/status") | ("get", "pods"))
}

struct Store {
    rv: u64,
    nodes: BTreeMap<String, Node>,
    /// (resourceVersion, type, object) of every write, oldest first.
    events: VecDeque<(u64, &'static str, Node)>,
    /// Watches from a resourceVersion below this are answered with 410.
    compacted: u64,
    bookmarks: u64,
    watch_gen: u64,
    uid: u64,
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    stop: AtomicBool,
    /// Bumped by go_down: connections from before end.
    down_gen: AtomicU64,
    tls: Arc<rustls::ServerConfig>,
    tokens: HashMap<String, &'static str>,
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The running server; stops on drop.
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    netns: Option<PathBuf>,
    accept: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    dir: TempDir,
    admin_token: String,
    flannel_token: String,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`) whose
/// SAN covers `ip`, 127.0.0.1 and localhost.
fn make_certs(dir: &Path, ip: std::net::IpAddr) -> Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(dir, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=weft-test-kube-ca"]].concat())?;
    std::fs::write(dir.join("server.ext"), format!("subjectAltName=IP:{ip},IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"))?;
    openssl(dir, &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver"]].concat())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ],
    )?;
    Ok(())
}

fn tls_config(dir: &Path) -> Result<rustls::ServerConfig> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Binds `addr`, inside the namespace at `netns` when given (the socket
/// stays in that namespace whichever thread uses it later).
fn bind(addr: SocketAddr, netns: Option<&Path>) -> Result<TcpListener> {
    let Some(ns) = netns else {
        return TcpListener::bind(addr).with_context(|| format!("binding {addr}"));
    };
    let ns = ns.to_path_buf();
    std::thread::spawn(move || -> Result<TcpListener> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
        // SAFETY: setns on a valid fd; only this short-lived thread changes namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", ns.display(), std::io::Error::last_os_error());
        }
        TcpListener::bind(addr).with_context(|| format!("binding {addr} in {}", ns.display()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("bind thread panicked"))?
}

fn random_token(what: &str) -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{what}-{hex}")
}

impl KubeApi {
    /// Starts a server on `addr` (port 0 picks one) in the current network
    /// namespace; certificates and kubeconfigs go to `/tmp/<name>`.
    pub fn start(name: &str, addr: SocketAddr) -> Result<KubeApi> {
        KubeApi::start_in(name, addr, None)
    }

    /// Like [`KubeApi::start`], listening inside the namespace at `netns`
    /// (e.g. `Netns::path()`).
    pub fn start_in(name: &str, addr: SocketAddr, netns: Option<&Path>) -> Result<KubeApi> {
        let dir = TempDir::new(name)?;
        make_certs(dir.path(), addr.ip())?;
        let tls = Arc::new(tls_config(dir.path())?);
        let listener = bind(addr, netns)?;
        let addr = listener.local_addr()?;
        let admin_token = random_token(ADMIN);
        let flannel_token = random_token(FLANNEL);
        let tokens = HashMap::from([(admin_token.clone(), ADMIN), (flannel_token.clone(), FLANNEL)]);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store { rv: 1, nodes: BTreeMap::new(), events: VecDeque::new(), compacted: 0, bookmarks: 0, watch_gen: 0, uid: 0 }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            down_gen: AtomicU64::new(0),
            tls,
            tokens,
            counts: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let mut api = KubeApi { shared, addr, netns: netns.map(Path::to_path_buf), accept: None, dir, admin_token, flannel_token };
        api.accept = Some(api.spawn_accept(listener)?);
        Ok(api)
    }

    fn spawn_accept(&self, listener: TcpListener) -> Result<(Arc<AtomicBool>, JoinHandle<()>)> {
        listener.set_nonblocking(true)?;
        let quit = Arc::new(AtomicBool::new(false));
        let (q, shared) = (quit.clone(), self.shared.clone());
        let h = std::thread::Builder::new().name("kube-api-accept".into()).spawn(move || {
            while !q.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let s2 = shared.clone();
                        let mut threads = shared.threads.lock().unwrap();
                        threads.retain(|t| !t.is_finished());
                        if let Ok(t) = std::thread::Builder::new().name("kube-api-conn".into()).spawn(move || serve_conn(&s2, sock)) {
                            threads.push(t);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        Ok((quit, h))
    }

    /// `https://ADDR`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// The bearer token of `who` ([`ADMIN`] or [`FLANNEL`]).
    pub fn token(&self, who: &str) -> &str {
        if who == FLANNEL {
            &self.flannel_token
        } else {
            &self.admin_token
        }
    }

    /// Writes a kubeconfig (server URL, CA data, `who`'s token) to
    /// `<dir>/<who>.kubeconfig` and returns its path. JSON is valid YAML, so
    /// kubectl and client-go read it.
    pub fn kubeconfig(&self, who: &str) -> Result<PathBuf> {
        let ca = std::fs::read(self.ca_pem())?;
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "weft-test",
            "clusters": [{"name": "weft-test", "cluster": {"server": self.url(), "certificate-authority-data": ByteString(ca)}}],
            "users": [{"name": who, "user": {"token": self.token(who)}}],
            "contexts": [{"name": "weft-test", "context": {"cluster": "weft-test", "user": who}}],
        });
        let path = self.dir.path().join(format!("{who}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        Ok(path)
    }

    /// Writes what a pod's service account mount holds (`token`, `ca.crt`,
    /// `namespace`) for `who` under `<dir>/serviceaccount-<who>/` and returns
    /// that directory: for in-cluster configuration (with
    /// KUBERNETES_SERVICE_HOST/PORT set to [`KubeApi::addr`]).
    pub fn service_account_dir(&self, who: &str) -> Result<PathBuf> {
        let d = self.dir.path().join(format!("serviceaccount-{who}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("token"), self.token(who))?;
        std::fs::copy(self.ca_pem(), d.join("ca.crt"))?;
        std::fs::write(d.join("namespace"), "kube-flannel")?;
        Ok(d)
    }

    /// The directory holding certificates and kubeconfigs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }
    /// A copy of node `name` as stored.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.store().nodes.get(name).cloned()
    }
    /// Names of all nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.store().nodes.keys().cloned().collect()
    }
    /// Creates a node as a POST would (fails if it exists); returns it as stored.
    pub fn create_node(&self, node: Node) -> Result<Node> {
        let mut st = self.store();
        create(&mut st, node).map_err(|(code, msg)| anyhow::anyhow!("create: {code} {msg}")).inspect(|_| self.shared.changed.notify_all())
    }

    /// Changes node `name` as an update would (status included; identity
    /// fields kept): a new resourceVersion and a MODIFIED event unless `f`
    /// changed nothing. For tests that play another node or kubelet.
    pub fn update_node(&self, name: &str, f: impl FnOnce(&mut Node)) -> Result<Node> {
        let mut st = self.store();
        let cur = st.nodes.get(name).cloned().with_context(|| format!("no node {name}"))?;
        let mut new = cur.clone();
        f(&mut new);
        new.metadata.name = cur.metadata.name.clone();
        new.metadata.uid = cur.metadata.uid.clone();
        new.metadata.creation_timestamp = cur.metadata.creation_timestamp.clone();
        new.metadata.resource_version = cur.metadata.resource_version.clone();
        let out = write(&mut st, name, cur, new);
        drop(st);
        self.shared.changed.notify_all();
        Ok(out)
    }
    /// Deletes node `name` as a DELETE would; false if there was none.
    pub fn delete_node(&self, name: &str) -> bool {
        let gone = delete(&mut self.store(), name).is_some();
        self.shared.changed.notify_all();
        gone
    }

    /// How many requests got (verb, resource, code); verb as RBAC names it
    /// (get, list, watch, create, update, patch, delete), resource `nodes`,
    /// `nodes/status`, `pods` or "" for discovery.
    pub fn count(&self, verb: &str, resource: &str, code: u16) -> u64 {
        self.shared.counts.lock().unwrap().get(&(verb.to_string(), resource.to_string(), code)).copied().unwrap_or(0)
    }
    /// Every (verb, resource, code) with its count.
    pub fn counts(&self) -> BTreeMap<(String, String, u16), u64> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Forgets the watch history: a watch from any resourceVersion older than
    /// the current one gets an ERROR event with a 410 Expired Status.
    pub fn compact(&self) {
        let mut st = self.store();
        st.compacted = st.rv;
        st.events.clear();
        drop(st);
        self.shared.changed.notify_all();
    }
    /// Every watch that asked for bookmarks gets one now.
    pub fn bookmark_now(&self) {
        self.store().bookmarks += 1;
        self.shared.changed.notify_all();
    }
    /// Ends every open watch stream (cleanly, as the server's watch timeout does).
    pub fn drop_watches(&self) {
        self.store().watch_gen += 1;
        self.shared.changed.notify_all();
    }

    /// Makes the server unreachable: stops listening (connects are refused)
    /// and closes every open connection. State is kept.
    pub fn go_down(&mut self) {
        if let Some((quit, h)) = self.accept.take() {
            quit.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
        self.shared.down_gen.fetch_add(1, Ordering::SeqCst);
        self.close_all();
    }
    /// Listens again on the same address with the same certificate.
    pub fn come_back(&mut self) -> Result<()> {
        if self.accept.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind(self.addr, self.netns.as_deref()) {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        self.accept = Some(self.spawn_accept(listener)?);
        Ok(())
    }

    fn close_all(&self) {
        for s in self.shared.conns.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.go_down();
        let threads: Vec<_> = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            // Every connection thread sees `stop` within its poll interval or
            // a failed read on its shut-down socket.
            let _ = t.join();
        }
    }
}

// ---- a small HTTPS client (for tests) trusting only the kubeconfig's CA ------

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

// ---- requests ---------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

fn serve_conn(shared: &Arc<Shared>, sock: TcpStream) {
    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
    let gen = shared.down_gen.load(Ordering::SeqCst);
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(IDLE));
    let _ = sock.set_nodelay(true);
    match sock.try_clone() {
        Ok(c) => {
            shared.conns.lock().unwrap().insert(id, c);
        }
        Err(_) => return,
    }
    // A go_down between accept and registration would miss this socket.
    if shared.down_gen.load(Ordering::SeqCst) != gen || shared.stop.load(Ordering::SeqCst) {
        let _ = sock.shutdown(Shutdown::Both);
    }
    if let Ok(conn) = rustls::ServerConnection::new(shared.tls.clone()) {
        let mut r = BufReader::new(rustls::StreamOwned::new(conn, sock));
        while !shared.stop.load(Ordering::SeqCst) && shared.down_gen.load(Ordering::SeqCst) == gen {
            let req = match read_request(&mut r) {
                Ok(Some(req)) => req,
                _ => break,
            };
            match handle(shared, &req, r.get_mut(), gen) {
                Ok(true) => {}
                _ => break,
            }
        }
        let s = r.get_mut();
        s.conn.send_close_notify();
        let _ = s.conn.complete_io(&mut s.sock);
    }
    if let Some(s) = shared.conns.lock().unwrap().remove(&id) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn read_request(r: &mut BufReader<Tls>) -> Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        ensure!(r.read_line(&mut h)? > 0, "eof in headers");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        let n: usize = n.parse()?;
        ensure!(n <= 16 << 20, "body too large");
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or(""), 16)?;
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            ensure!(body.len() + n <= 16 << 20, "body too large");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q.split('&').filter(|s| !s.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (unescape(k, true), unescape(v, true))
    });
    Ok(Some(Request { method, path: unescape(path, false), query: query.collect(), headers, body }))
}

/// Percent-decoding; `+` is a space only in a query.
fn unescape(s: &str, query: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(x) => out.push(x),
                    None => out.extend_from_slice(&b[i..i + 3]),
                }
                i += 3;
                continue;
            }
            b'+' if query => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    }
}

fn respond(w: &mut Tls, code: u16, body: &Value) -> Result<()> {
    let b = serde_json::to_vec(body)?;
    write!(w, "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n", reason(code), b.len())?;
    w.write_all(&b)?;
    w.flush()?;
    Ok(())
}

fn status(code: u16, reason: &str, message: String, name: Option<&str>) -> Value {
    let st = Status {
        code: Some(code as i32),
        message: Some(message),
        reason: Some(reason.to_string()),
        status: Some("Failure".into()),
        details: name.map(|n| StatusDetails { name: Some(n.into()), kind: Some("nodes".into()), ..Default::default() }),
        metadata: ListMeta::default(),
    };
    serde_json::to_value(st).unwrap_or(Value::Null)
}

type Failure = (u16, Value);

fn not_found(name: &str) -> Failure {
    (404, status(404, "NotFound", format!("nodes \"{name}\" not found"), Some(name)))
}
fn bad_request(msg: String) -> Failure {
    (400, status(400, "BadRequest", msg, None))
}
fn conflict(name: &str) -> Failure {
    (
        409,
        status(409, "Conflict", format!("Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"), Some(name)),
    )
}

/// Serves one request; Ok(false) when the connection must close.
fn handle(shared: &Arc<Shared>, req: &Request, w: &mut Tls, gen: u64) -> Result<bool> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let is_watch = matches!(req.query.get("watch").map(String::as_str), Some("true" | "1"));
    // (verb, resource, name, subresource)
    let (verb, resource, name): (&str, String, Option<String>) = match (req.method.as_str(), segs.as_slice()) {
        (m, ["api", "v1", "nodes", rest @ ..]) => {
            let name = rest.first().map(|s| s.to_string());
            let sub = rest.get(1).copied();
            let resource = match sub {
                Some(s) => format!("nodes/{s}"),
                None => "nodes".into(),
            };
            let verb = match (m, name.is_some()) {
                ("GET", false) if is_watch => "watch",
                ("GET", false) => "list",
                ("GET", true) if is_watch => "watch",
                ("GET", true) => "get",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", false) => "deletecollection",
                ("DELETE", true) => "delete",
                _ => "unknown",
            };
            (verb, resource, name)
        }
        ("GET", ["api", "v1", "namespaces", _, "pods", n]) => ("get", "pods".into(), Some(n.to_string())),
        ("GET", ["api", "v1", "namespaces", _, "pods"]) => ("list", "pods".into(), None),
        ("GET", _) => ("get", String::new(), None),
        _ => ("unknown", String::new(), None),
    };
    let count = |code: u16| {
        if std::env::var_os("WEFT_KUBE_API_LOG").is_some() {
            eprintln!("kube-api: {} {} {:?} accept={:?} -> {code}", req.method, req.path, req.query, req.headers.get("accept"));
        }
        *shared.counts.lock().unwrap().entry((verb.to_string(), resource.clone(), code)).or_insert(0) += 1;
    };
    // Authentication.
    let who = req.headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).and_then(|t| shared.tokens.get(t.trim())).copied();
    let Some(who) = who else {
        count(401);
        respond(w, 401, &status(401, "Unauthorized", "Unauthorized".into(), None))?;
        return Ok(true);
    };
    // Authorization (discovery is open to every authenticated user, as
    // system:discovery makes it).
    if who == FLANNEL && !resource.is_empty() && !allowed_for_flannel(verb, &resource) {
        count(403);
        let what = match &name {
            Some(n) => format!("nodes \"{n}\" is forbidden"),
            None => format!("{resource} is forbidden"),
        };
        let (res, sub) = resource.split_once('/').unwrap_or((&resource, ""));
        let sub = if sub.is_empty() { String::new() } else { format!(" in subresource \"{sub}\"") };
        let msg =
            format!("{what}: User \"system:serviceaccount:kube-flannel:flannel\" cannot {verb} resource \"{res}\"{sub} in API group \"\" at the cluster scope");
        respond(w, 403, &status(403, "Forbidden", msg, name.as_deref()))?;
        return Ok(true);
    }
    if verb == "watch" {
        if let Err((code, body)) = watch_check(req) {
            count(code);
            respond(w, code, &body)?;
            return Ok(true);
        }
        count(200);
        return watch(shared, req, w, gen, name).map(|()| false);
    }
    let (code, body) = match route(shared, req, &segs, verb, name.as_deref()) {
        Ok((code, body)) => (code, body),
        Err((code, body)) => (code, body),
    };
    count(code);
    respond(w, code, &body)?;
    Ok(true)
}

fn api_resources() -> Value {
    let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": verbs, "shortNames": ["no"], "storageVersionHash": "XwShjMxG9Fs="},
            {"name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node", "verbs": ["get", "patch", "update"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
        ]
    })
}

fn route(shared: &Arc<Shared>, req: &Request, segs: &[&str], verb: &str, name: Option<&str>) -> Result<(u16, Value), Failure> {
    match (req.method.as_str(), segs) {
        ("GET", ["version"]) => {
            return Ok((
                200,
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-weft-test", "gitCommit": "0000000000000000000000000000000000000000",
                       "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
            ))
        }
        ("GET", ["api"]) => {
            let addr = req.headers.get("host").cloned().unwrap_or_default();
            return Ok((
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]}),
            ));
        }
        ("GET", ["api", "v1"]) => return Ok((200, api_resources())),
        ("GET", ["apis"]) => return Ok((200, json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))),
        ("GET", ["api", "v1", "namespaces", ns, "pods", n]) => {
            return Err((
                404,
                serde_json::to_value(Status {
                    code: Some(404),
                    reason: Some("NotFound".into()),
                    status: Some("Failure".into()),
                    message: Some(format!("pods \"{n}\" not found")),
                    details: Some(StatusDetails { name: Some(n.to_string()), kind: Some("pods".into()), ..Default::default() }),
                    metadata: ListMeta::default(),
                })
                .unwrap_or_else(|_| json!({"namespace": ns})),
            ))
        }
        ("GET", ["api", "v1", "namespaces", _, "pods"]) => {
            let rv = shared.store.lock().unwrap().rv;
            return Ok((200, json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": []})));
        }
        (_, ["api", "v1", "nodes", ..]) => {}
        _ => return Err((404, status(404, "NotFound", "the server could not find the requested resource".into(), None))),
    }
    let sub = segs.get(4).copied();
    if segs.len() > 5 || sub.is_some_and(|s| s != "status") {
        return Err((404, status(404, "NotFound", "the server could not find the requested resource".into(), None)));
    }
    let mut st = shared.store.lock().unwrap();
    let out = match (verb, name) {
        ("list", None) if wants_table(req) && sub.is_none() => {
            list(&st, req).map(|(c, l)| (c, table(req, l["items"].as_array().cloned().unwrap_or_default(), st.rv)))
        }
        ("list", None) => list(&st, req),
        ("get", Some(n)) if wants_table(req) && sub.is_none() => {
            st.nodes.get(n).map(|node| (200, table(req, vec![to_json(node)], st.rv))).ok_or_else(|| not_found(n))
        }
        ("get", Some(n)) => st.nodes.get(n).map(|node| (200, to_json(node))).ok_or_else(|| not_found(n)),
        ("create", None) if sub.is_none() => {
            let node: Node = serde_json::from_slice(&req.body).map_err(|e| bad_request(format!("decoding Node: {e}")))?;
            create(&mut st, node).map(|n| (201, to_json(&n))).map_err(|(c, m)| match c {
                409 => (409, status(409, "AlreadyExists", m, None)),
                _ => (c, status(c, "Invalid", m, None)),
            })
        }
        ("update", Some(n)) => {
            let node: Node = serde_json::from_slice(&req.body).map_err(|e| bad_request(format!("decoding Node: {e}")))?;
            if node.metadata.name.as_deref().is_some_and(|x| x != n) {
                return Err(bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({n})",
                    node.metadata.name.clone().unwrap_or_default()
                )));
            }
            let cur = st.nodes.get(n).cloned().ok_or_else(|| not_found(n))?;
            if node.metadata.resource_version.as_deref().is_some_and(|rv| !rv.is_empty() && Some(rv) != cur.metadata.resource_version.as_deref()) {
                return Err(conflict(n));
            }
            let new = apply_update(&cur, to_json(&node), sub.is_some())?;
            Ok((200, to_json(&write(&mut st, n, cur, new))))
        }
        ("patch", Some(n)) => {
            let cur = st.nodes.get(n).cloned().ok_or_else(|| not_found(n))?;
            let ct = req.headers.get("content-type").map(|c| c.split(';').next().unwrap_or("").trim().to_string()).unwrap_or_default();
            let patch: Value = serde_json::from_slice(&req.body).map_err(|e| bad_request(format!("decoding patch: {e}")))?;
            let mut doc = to_json(&cur);
            match ct.as_str() {
                "application/strategic-merge-patch+json" => {
                    ensure_object(&patch)?;
                    strategic_merge(&mut doc, &patch, "");
                }
                "application/merge-patch+json" => {
                    ensure_object(&patch)?;
                    merge_patch(&mut doc, &patch);
                }
                "application/json-patch+json" => json_patch(&mut doc, &patch).map_err(|e| (422, status(422, "Invalid", e, Some(n))))?,
                other => return Err((415, status(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"), None))),
            }
            // A resourceVersion in the patch is a precondition.
            if let Some(rv) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                if Some(rv) != cur.metadata.resource_version.as_deref() {
                    return Err(conflict(n));
                }
            }
            let new = apply_update(&cur, doc, sub.is_some())?;
            Ok((200, to_json(&write(&mut st, n, cur, new))))
        }
        ("delete", Some(n)) if sub.is_none() => delete(&mut st, n).map(|gone| (200, to_json(&gone))).ok_or_else(|| not_found(n)),
        _ => Err((405, status(405, "MethodNotAllowed", format!("{} is not supported on this resource", req.method), name))),
    };
    drop(st);
    shared.changed.notify_all();
    out
}

fn ensure_object(v: &Value) -> Result<(), Failure> {
    if v.is_object() {
        Ok(())
    } else {
        Err(bad_request("patch must be a JSON object".into()))
    }
}

fn to_json(n: &Node) -> Value {
    serde_json::to_value(n).unwrap_or(Value::Null)
}

/// The node an update/patch produces: decoded back into `Node` (drops unknown
/// fields as the real server prunes them), identity fields kept, and as the
/// node strategies do, `status` kept on the main resource and `spec` kept on
/// the status subresource.
fn apply_update(cur: &Node, mut doc: Value, status_sub: bool) -> Result<Node, Failure> {
    if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let mut new: Node =
        serde_json::from_value(doc).map_err(|e| (422, status(422, "Invalid", format!("Node is invalid: {e}"), cur.metadata.name.as_deref())))?;
    if new.metadata.name != cur.metadata.name {
        return Err((422, status(422, "Invalid", "metadata.name: field is immutable".into(), cur.metadata.name.as_deref())));
    }
    new.metadata.uid = cur.metadata.uid.clone();
    new.metadata.creation_timestamp = cur.metadata.creation_timestamp.clone();
    new.metadata.resource_version = cur.metadata.resource_version.clone();
    if status_sub {
        new.spec = cur.spec.clone();
    } else {
        new.status = cur.status.clone();
    }
    Ok(new)
}

/// Stores `new` for `name`; a write that changes nothing bumps nothing (as
/// the real server skips no-op updates).
fn write(st: &mut Store, name: &str, cur: Node, mut new: Node) -> Node {
    if new == cur {
        return cur;
    }
    st.rv += 1;
    new.metadata.resource_version = Some(st.rv.to_string());
    st.nodes.insert(name.to_string(), new.clone());
    record(st, "MODIFIED", new.clone());
    new
}

/// Removes `name`, recording a DELETED event at a new resourceVersion.
fn delete(st: &mut Store, name: &str) -> Option<Node> {
    let mut gone = st.nodes.remove(name)?;
    st.rv += 1;
    gone.metadata.resource_version = Some(st.rv.to_string());
    record(st, "DELETED", gone.clone());
    Some(gone)
}

fn record(st: &mut Store, ty: &'static str, node: Node) {
    let rv = st.rv;
    st.events.push_back((rv, ty, node));
    while st.events.len() > HISTORY {
        if let Some((old, _, _)) = st.events.pop_front() {
            st.compacted = old;
        }
    }
}

fn create(st: &mut Store, mut node: Node) -> Result<Node, (u16, String)> {
    let Some(name) = node.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Err((422, "Node \"\" is invalid: metadata.name: Required value: name or generateName is required".into()));
    };
    if st.nodes.contains_key(&name) {
        return Err((409, format!("nodes \"{name}\" already exists")));
    }
    st.rv += 1;
    st.uid += 1;
    node.metadata.resource_version = Some(st.rv.to_string());
    node.metadata.uid = Some(format!("00000000-0000-4000-8000-{:012x}", st.uid));
    node.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(now_secs()).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)));
    st.nodes.insert(name, node.clone());
    record(st, "ADDED", node.clone());
    Ok(node)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn field_name(req: &Request) -> Result<Option<String>, Failure> {
    let Some(fs) = req.query.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match fs.split_once('=') {
        Some(("metadata.name", v)) => Ok(Some(v.trim_start_matches('=').to_string())),
        _ => Err(bad_request(format!("field label not supported: {fs}"))),
    }
}

fn list(st: &Store, req: &Request) -> Result<(u16, Value), Failure> {
    let only = field_name(req)?;
    if req.query.get("labelSelector").is_some_and(|s| !s.is_empty()) {
        return Err(bad_request("this test server supports no labelSelector".into()));
    }
    // resourceVersionMatch=Exact for an rv whose history is gone: 410 as the real server.
    if req.query.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
        let rv: u64 = req.query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
        if rv != st.rv {
            return Err((410, status(410, "Expired", format!("too old resource version: {rv} ({})", st.rv), None)));
        }
    }
    let items = st.nodes.values().filter(|n| only.is_none() || n.metadata.name == only).cloned().collect();
    let l = List::<Node> { items, metadata: ListMeta { resource_version: Some(st.rv.to_string()), ..Default::default() } };
    Ok((200, serde_json::to_value(l).unwrap_or(Value::Null)))
}

// ---- tables (kubectl get's default output) ---------------------------------

fn wants_table(req: &Request) -> bool {
    req.headers.get("accept").is_some_and(|a| a.contains("as=Table"))
}

/// Kubernetes' short age ("45s", "12m", "5h", "3d").
fn age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| c.parse::<k8s_openapi::jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let s = (now_secs() - t.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A meta.k8s.io/v1 Table of nodes with the columns the real server's node
/// printer makes (NAME STATUS ROLES AGE VERSION, wide ones at priority 1).
fn table(req: &Request, nodes: Vec<Value>, rv: u64) -> Value {
    let col = |name: &str, format: &str, priority: u8| json!({"name": name, "type": "string", "format": format, "description": name, "priority": priority});
    let whole = req.query.get("includeObject").map(String::as_str) == Some("Object");
    let rows: Vec<Value> = nodes
        .into_iter()
        .map(|n| {
            let conds = n.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut st = match conds.iter().find(|c| c["type"] == "Ready").map(|c| c["status"] == "True") {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if n.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                st.push_str(",SchedulingDisabled");
            }
            let labels = n.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
            let roles: Vec<&str> = labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect();
            let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
            let addr = |t: &str| {
                n.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .and_then(|x| x["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            let info = |k: &str| n.pointer(&format!("/status/nodeInfo/{k}")).and_then(Value::as_str).unwrap_or("").to_string();
            let cells = json!([
                n["metadata"]["name"],
                st,
                roles,
                age(n.pointer("/metadata/creationTimestamp").and_then(Value::as_str)),
                info("kubeletVersion"),
                addr("InternalIP"),
                addr("ExternalIP"),
                info("osImage"),
                info("kernelVersion"),
                info("containerRuntimeVersion"),
            ]);
            let object = if whole { n.clone() } else { json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": n["metadata"]}) };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": [col("Name", "name", 0), col("Status", "", 0), col("Roles", "", 0), col("Age", "", 0), col("Version", "", 0),
            col("Internal-IP", "", 1), col("External-IP", "", 1), col("OS-Image", "", 1), col("Kernel-Version", "", 1), col("Container-Runtime", "", 1)],
        "rows": rows,
    })
}

// ---- watch ------------------------------------------------------------------

fn chunk(w: &mut Tls, ev: &impl serde::Serialize) -> Result<()> {
    let mut line = serde_json::to_vec(ev)?;
    line.push(b'\n');
    write!(w, "{:x}\r\n", line.len())?;
    w.write_all(&line)?;
    w.write_all(b"\r\n")?;
    w.flush()?;
    Ok(())
}

/// What the real server refuses before it starts a watch stream.
fn watch_check(req: &Request) -> Result<(), Failure> {
    field_name(req)?;
    let q = |k: &str| req.query.get(k).map(String::as_str);
    if matches!(q("sendInitialEvents"), Some("true" | "1"))
        && (!matches!(q("allowWatchBookmarks"), Some("true" | "1")) || q("resourceVersionMatch") != Some("NotOlderThan"))
    {
        let msg =
            "sendInitialEvents: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true".to_string();
        return Err((422, status(422, "Invalid", msg, None)));
    }
    Ok(())
}

fn watch(shared: &Arc<Shared>, req: &Request, w: &mut Tls, gen: u64, name: Option<String>) -> Result<()> {
    let only = match (name, field_name(req)) {
        (Some(n), _) => Some(n),
        (None, Ok(f)) => f,
        (None, Err((code, body))) => return respond(w, code, &body),
    };
    let bookmarks = matches!(req.query.get("allowWatchBookmarks").map(String::as_str), Some("true" | "1"));
    let timeout = req.query.get("timeoutSeconds").and_then(|s| s.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_WATCH);
    let end = Instant::now() + timeout;
    let from: Option<u64> = req.query.get("resourceVersion").filter(|s| !s.is_empty() && *s != "0").map(|s| s.parse()).transpose().ok().flatten();
    let initial = matches!(req.query.get("sendInitialEvents").map(String::as_str), Some("true" | "1"));
    write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n")?;
    w.flush()?;
    let wanted = |n: &Node| only.is_none() || n.metadata.name == only;
    let mut st = shared.store.lock().unwrap();
    let watch_gen = st.watch_gen;
    let mut seen_bookmarks = st.bookmarks;
    let mut pos = match (from, initial) {
        // No resourceVersion, or a watch-list (sendInitialEvents): synthetic
        // ADDED for every node, then (watch-list) a bookmark annotated
        // k8s.io/initial-events-end, then changes.
        (None, _) | (Some(_), true) => {
            let rv = st.rv;
            let adds: Vec<Node> = st.nodes.values().filter(|n| wanted(n)).cloned().collect();
            drop(st);
            for n in adds {
                chunk(w, &WatchEvent::Added(n))?;
            }
            if initial {
                let end = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                chunk(w, &json!({"type": "BOOKMARK", "object": end}))?;
            }
            st = shared.store.lock().unwrap();
            rv
        }
        (Some(rv), false) if rv < st.compacted => {
            let cur = st.rv;
            drop(st);
            let s = Status {
                code: Some(410),
                reason: Some("Expired".into()),
                status: Some("Failure".into()),
                message: Some(format!("too old resource version: {rv} ({cur})")),
                ..Default::default()
            };
            chunk(w, &WatchEvent::<Node>::ErrorStatus(s))?;
            return end_stream(w);
        }
        (Some(rv), false) => rv,
    };
    let mut last_bookmark = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) || shared.down_gen.load(Ordering::SeqCst) != gen || st.watch_gen != watch_gen || Instant::now() >= end {
            break;
        }
        if pos < st.compacted {
            // The history moved past this watcher (compact while watching).
            let s = Status {
                code: Some(410),
                reason: Some("Expired".into()),
                status: Some("Failure".into()),
                message: Some(format!("too old resource version: {pos} ({})", st.rv)),
                ..Default::default()
            };
            drop(st);
            chunk(w, &WatchEvent::<Node>::ErrorStatus(s))?;
            return end_stream(w);
        }
        let evs: Vec<(u64, &'static str, Node)> = st.events.iter().filter(|(rv, _, n)| *rv > pos && wanted(n)).cloned().collect();
        let newest = st.rv;
        let want_bookmark = bookmarks && (st.bookmarks != seen_bookmarks || last_bookmark.elapsed() >= BOOKMARK_EVERY);
        seen_bookmarks = st.bookmarks;
        if evs.is_empty() && !want_bookmark {
            let wait = end.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            st = shared.changed.wait_timeout(st, wait).unwrap().0;
            continue;
        }
        drop(st);
        for (_, ty, n) in evs {
            let ev = match ty {
                "ADDED" => WatchEvent::Added(n),
                "DELETED" => WatchEvent::Deleted(n),
                _ => WatchEvent::Modified(n),
            };
            chunk(w, &ev)?;
        }
        pos = newest;
        if want_bookmark {
            // As the real server sends it: a Node with kind, apiVersion and
            // only metadata.resourceVersion (k8s-openapi's Bookmark lacks kind).
            chunk(w, &json!({"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": newest.to_string()}}}))?;
            last_bookmark = Instant::now();
        }
        st = shared.store.lock().unwrap();
    }
    drop(st);
    end_stream(w)
}

fn end_stream(w: &mut Tls) -> Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()?;
    Ok(())
}

// ---- patches ----------------------------------------------------------------

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = json!({});
    }
    let d = doc.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            d.remove(k);
        } else {
            merge_patch(d.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list in a Node, by its JSON path (from the Go types'
/// `patchMergeKey` tags); lists without one are replaced whole.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "/status/conditions" | "/status/addresses" => Some("type"),
        "/spec/taints" => Some("key"),
        "/metadata/ownerReferences" => Some("uid"),
        "/status/images" | "/spec/podCIDRs" => None,
        _ => None,
    }
}

/// Strategic merge patch as kube-apiserver applies it to a Node: maps merge,
/// null deletes a key, lists with a merge key merge element by element
/// (`$patch: delete` removes one, `$patch: replace` on a map replaces it),
/// other lists are replaced; `$setElementOrder/…`, `$retainKeys` and
/// `$deleteFromPrimitiveList/…` directives are accepted and ignored.
pub fn strategic_merge(doc: &mut Value, patch: &Value, path: &str) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        v.as_object_mut().expect("object").remove("$patch");
        *doc = v;
        return;
    }
    if !doc.is_object() {
        *doc = json!({});
    }
    let d = doc.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        let sub = format!("{path}/{k}");
        match (v, merge_key(&sub)) {
            (Value::Null, _) => {
                d.remove(k);
            }
            (Value::Array(items), Some(key)) => {
                let cur = d.entry(k.clone()).or_insert_with(|| json!([]));
                if !cur.is_array() {
                    *cur = json!([]);
                }
                let list = cur.as_array_mut().expect("array");
                for item in items {
                    let kv = item.get(key).cloned();
                    let pos = kv.as_ref().and_then(|kv| list.iter().position(|e| e.get(key) == Some(kv)));
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            list.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_merge(&mut list[i], item, &sub),
                        (None, false) => {
                            let mut e = json!({});
                            strategic_merge(&mut e, item, &sub);
                            list.push(e);
                        }
                    }
                }
            }
            (Value::Object(_), _) => strategic_merge(d.entry(k.clone()).or_insert(Value::Null), v, &sub),
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test; enough for kubectl).
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch is a list of operations")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("op missing")?;
        let path = op.get("path").and_then(Value::as_str).ok_or("path missing")?;
        let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match kind {
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(format!("test failed at {path}"));
                }
            }
            "add" | "replace" | "remove" => {
                let target = doc.pointer_mut(parent).ok_or_else(|| format!("no such path {parent}"))?;
                match target {
                    Value::Object(m) => {
                        if kind == "remove" {
                            m.remove(&last).ok_or_else(|| format!("no such path {path}"))?;
                        } else {
                            if kind == "replace" && !m.contains_key(&last) {
                                return Err(format!("no such path {path}"));
                            }
                            m.insert(last, op.get("value").cloned().unwrap_or(Value::Null));
                        }
                    }
                    Value::Array(a) => {
                        let v = op.get("value").cloned().unwrap_or(Value::Null);
                        if last == "-" && kind == "add" {
                            a.push(v);
                            continue;
                        }
                        let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
                        match kind {
                            "add" if i <= a.len() => a.insert(i, v),
                            "replace" if i < a.len() => a[i] = v,
                            "remove" if i < a.len() => {
                                a.remove(i);
                            }
                            _ => return Err(format!("index {i} out of range")),
                        }
                    }
                    _ => return Err(format!("{parent} is not a container")),
                }
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    Ok(())
}
