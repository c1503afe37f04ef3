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
//!
//! Files: this one holds [`KubeApi`] (start, test hooks, node helpers,
//! kubeconfig and service-account writers), the store and shared state, the
//! RBAC rule and tokens; `tls.rs` the certificates (openssl CLI), the rustls
//! server config and binding (in a netns); `http.rs` the connection loop,
//! request reading, responses and `Status` errors; `routes.rs` authentication,
//! authorization, discovery, list and the Node writes; `table.rs` the kubectl
//! Table; `watch.rs` watch streams; `patch.rs` merge, strategic merge and JSON
//! patches; `client.rs` the small HTTPS client the tests use.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::Read,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use k8s_openapi::{api::core::v1::Node, ByteString};
use serde_json::json;

use crate::tempdir::TempDir;

mod client;
mod http;
mod patch;
mod routes;
mod table;
mod tls;
mod watch;

pub use client::{from_kubeconfig, read_head, Client, ClientTls, Watch};
use http::serve_conn;
pub use patch::{merge_patch, strategic_merge};
use routes::{create, delete, write};
use tls::{bind, make_certs, tls_config};

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
    /// Each Node's JSON, serialized once when it is written: a list is then
    /// a concatenation. (Serializing 5,000 Nodes per list in this debug
    /// build took 0.3 s, more than weftd's own work the benchmark measures.)
    json: HashMap<String, Arc<Vec<u8>>>,
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
    /// Periodic (not initial-events-end) BOOKMARK events sent on all watches.
    bookmarks_sent: AtomicU64,
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
            store: Mutex::new(Store {
                rv: 1,
                nodes: BTreeMap::new(),
                json: HashMap::new(),
                events: VecDeque::new(),
                compacted: 0,
                bookmarks: 0,
                watch_gen: 0,
                uid: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            down_gen: AtomicU64::new(0),
            tls,
            tokens,
            counts: Mutex::new(BTreeMap::new()),
            bookmarks_sent: AtomicU64::new(0),
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
    /// Advances the resourceVersion by `n` with no Node event, as writes to
    /// other kinds do on a real server (one resourceVersion sequence for
    /// all): only a bookmark tells a Node watcher about them.
    pub fn other_writes(&self, n: u64) {
        self.store().rv += n;
        self.shared.changed.notify_all();
    }
    /// Periodic BOOKMARK events sent so far, on all watches.
    pub fn bookmarks_sent(&self) -> u64 {
        self.shared.bookmarks_sent.load(Ordering::SeqCst)
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
