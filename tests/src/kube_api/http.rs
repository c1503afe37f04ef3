//! HTTP/1.1 over TLS: the connection loop, request reading, URL unescaping, responses and `Status` error bodies.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpStream},
    sync::{atomic::Ordering, Arc},
};

use anyhow::{ensure, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusDetails};
use serde_json::Value;

use super::{routes::handle, Shared, IDLE};

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: HashMap<String, String>,
    pub(super) headers: HashMap<String, String>,
    pub(super) body: Vec<u8>,
}

pub(super) type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

pub(super) fn serve_conn(shared: &Arc<Shared>, sock: TcpStream) {
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

pub(super) fn respond(w: &mut Tls, code: u16, body: &Value) -> Result<()> {
    respond_bytes(w, code, &serde_json::to_vec(body)?)
}

/// [`respond`] with a body already serialized.
pub(super) fn respond_bytes(w: &mut Tls, code: u16, b: &[u8]) -> Result<()> {
    write!(w, "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n", reason(code), b.len())?;
    w.write_all(b)?;
    w.flush()?;
    Ok(())
}

pub(super) fn status(code: u16, reason: &str, message: String, name: Option<&str>) -> Value {
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

pub(super) type Failure = (u16, Value);

pub(super) fn not_found(name: &str) -> Failure {
    (404, status(404, "NotFound", format!("nodes \"{name}\" not found"), Some(name)))
}
pub(super) fn bad_request(msg: String) -> Failure {
    (400, status(400, "BadRequest", msg, None))
}
pub(super) fn conflict(name: &str) -> Failure {
    (
        409,
        status(409, "Conflict", format!("Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"), Some(name)),
    )
}
