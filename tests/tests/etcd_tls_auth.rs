//! weftd against an etcd that requires TLS with client certificates, and then
//! etcd's own user/password authentication as well. The certificates are made
//! here by openssl; the etcd runs in the cluster's switch namespace on its own
//! ports (2389/2390) next to the harness's plain one.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, netns::Netns, Cluster};

const IP: &str = "192.168.77.254";
const URL: &str = "https://192.168.77.254:2389";
const PREFIX: &str = "/coreos.com/network";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// CA, server certificate for the switch address, client certificate.
fn make_certs(dir: &Path) -> Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(dir, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=weft-test-ca"]].concat())?;
    std::fs::write(dir.join("server.ext"), format!("subjectAltName=IP:{IP}\nextendedKeyUsage=serverAuth,clientAuth\n"))?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    for (name, cn) in [("server", "etcd"), ("client", "weftd")] {
        openssl(dir, &[&["req"][..], &ec, &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={cn}")]].concat())?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    Ok(())
}

struct TlsEtcd {
    child: Child,
    dir: PathBuf,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        cmd::terminate(&mut self.child, Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(self.dir.join("etcd-data"));
    }
}

impl TlsEtcd {
    fn start(sw: &Netns, dir: &Path) -> Result<TlsEtcd> {
        let d = |f: &str| dir.join(f).display().to_string();
        let child = sw
            .command(
                "etcd",
                &[
                    "--name",
                    "tls",
                    "--data-dir",
                    &d("etcd-data"),
                    "--listen-client-urls",
                    URL,
                    "--advertise-client-urls",
                    URL,
                    "--listen-peer-urls",
                    "http://192.168.77.254:2390",
                    "--initial-advertise-peer-urls",
                    "http://192.168.77.254:2390",
                    "--initial-cluster",
                    "tls=http://192.168.77.254:2390",
                    "--cert-file",
                    &d("server.pem"),
                    "--key-file",
                    &d("server.key"),
                    "--trusted-ca-file",
                    &d("ca.pem"),
                    "--client-cert-auth",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("etcd.log"))?))
            .spawn()
            .context("starting etcd with TLS")?;
        let e = TlsEtcd { child, dir: dir.to_path_buf() };
        cmd::poll("TLS etcd to be healthy", Duration::from_secs(15), Duration::from_millis(200), || {
            e.ctl(sw, &["endpoint", "health"]).map(|_| Some(())).map_err(|err| format!("{err:#}"))
        })?;
        Ok(e)
    }

    fn ctl(&self, sw: &Netns, args: &[&str]) -> Result<String> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let (ca, cert, key) = (d("ca.pem"), d("server.pem"), d("server.key"));
        let mut full = vec!["ETCDCTL_API=3", "etcdctl", "--endpoints", URL, "--cacert", &ca, "--cert", &cert, "--key", &key];
        full.extend_from_slice(args);
        sw.exec("env", &full)
    }
}

/// Runs weftd in node 1 against the TLS etcd until it writes subnet.env, or
/// fails with its log. Returns the subnet.env text.
fn weftd_until_ready(c: &Cluster, dir: &Path, tag: &str, extra: &[&str]) -> Result<String> {
    let subnet_file = dir.join(format!("{tag}.env"));
    let log = dir.join(format!("{tag}.log"));
    let pins = PathBuf::from(format!("/sys/fs/bpf/{}-tls-{tag}", c.prefix));
    let mut child = c
        .node_ns(1)?
        .nsenter(&cmd::weftd_bin()?)
        .args(["--etcd-endpoints", URL, "--iface", "eth0", "--subnet-lease-ttl", "60"])
        .arg("--subnet-file")
        .arg(&subnet_file)
        .arg("--bpf-pin-dir")
        .arg(&pins)
        .args(extra)
        .arg("--cleanup-on-exit")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()
        .context("starting weftd")?;
    let r = cmd::poll(&format!("weftd ({tag}) to write its subnet file"), Duration::from_secs(15), Duration::from_millis(100), || {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("weftd exited ({st}): {}", cmd::tail(&log, 5)));
        }
        std::fs::read_to_string(&subnet_file).map(Some).map_err(|_| cmd::tail(&log, 5))
    });
    cmd::terminate(&mut child, Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&pins);
    r
}

/// Runs weftd for at most 8 s and expects it never to get ready: it either
/// exits with an error or keeps retrying, and its log mentions `expect`.
fn weftd_refused(c: &Cluster, dir: &Path, tag: &str, extra: &[&str], expect: &str) -> Result<()> {
    let subnet_file = dir.join(format!("{tag}.env"));
    let bin = cmd::weftd_bin()?;
    let ns_path = c.node_ns(1)?.path();
    let out = Command::new("timeout")
        .args(["8", "nsenter"])
        .arg(format!("--net={}", ns_path.display()))
        .arg("--")
        .arg(&bin)
        .args(["--etcd-endpoints", URL, "--iface", "eth0", "--bpf-pin-dir", &format!("/sys/fs/bpf/{}-tls-{tag}", c.prefix)])
        .arg("--subnet-file")
        .arg(&subnet_file)
        .args(extra)
        .output()
        .context("running weftd")?;
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}-tls-{tag}", c.prefix));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!subnet_file.exists(), "weftd ({tag}) got ready although etcd should refuse it:\n{err}");
    ensure!(err.to_lowercase().contains(&expect.to_lowercase()), "weftd ({tag}) log does not mention {expect:?}:\n{err}");
    Ok(())
}

#[test]
fn etcd_tls_and_auth() -> Result<()> {
    weft_tests::require_root()?;
    let c = Cluster::builder().weft_nodes(1).no_start().build()?;
    let dir = c.dir().join("tls");
    std::fs::create_dir_all(&dir)?;
    make_certs(&dir)?;
    let etcd = TlsEtcd::start(&c.sw, &dir)?;
    etcd.ctl(&c.sw, &["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#])?;
    let d = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key) = (d("ca.pem"), d("client.pem"), d("client.key"));
    let tls = ["--etcd-cafile", ca.as_str(), "--etcd-certfile", cert.as_str(), "--etcd-keyfile", key.as_str()];

    // TLS with a client certificate: weftd holds a lease in the TLS etcd.
    let env = weftd_until_ready(&c, &dir, "tls", &tls)?;
    ensure!(env.contains("FLANNEL_SUBNET=10.244."), "unexpected subnet file:\n{env}");
    // Without the client certificate the server refuses the handshake.
    weftd_refused(&c, &dir, "nocert", &["--etcd-cafile", &ca], "cannot read the network config")?;

    // etcd authentication on top: root user, auth enabled.
    etcd.ctl(&c.sw, &["user", "add", "root:weft-secret"])?;
    etcd.ctl(&c.sw, &["auth", "enable"])?;
    let mut with_user = tls.to_vec();
    with_user.extend(["--etcd-username", "root", "--etcd-password", "weft-secret"]);
    let env = weftd_until_ready(&c, &dir, "auth", &with_user)?;
    ensure!(env.contains("FLANNEL_SUBNET=10.244."), "unexpected subnet file:\n{env}");
    let mut wrong = tls.to_vec();
    wrong.extend(["--etcd-username", "root", "--etcd-password", "wrong"]);
    weftd_refused(&c, &dir, "wrongpw", &wrong, "auth")?;
    drop(etcd);
    c.pass();
    Ok(())
}
