//! Certificates (via the openssl CLI), the rustls server config and binding the listener (in a netns if asked).
use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    sync::Arc,
};

use anyhow::{bail, ensure, Context, Result};

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`) whose
/// SAN covers `ip`, 127.0.0.1 and localhost.
pub(super) fn make_certs(dir: &Path, ip: std::net::IpAddr) -> Result<()> {
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

pub(super) fn tls_config(dir: &Path) -> Result<rustls::ServerConfig> {
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
pub(super) fn bind(addr: SocketAddr, netns: Option<&Path>) -> Result<TcpListener> {
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
