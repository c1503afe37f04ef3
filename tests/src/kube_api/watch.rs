//! Watch streams: chunked watch events, bookmarks, 410 Expired, ends on timeout or the test hooks.
use std::{
    io::Write,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Result;
use k8s_openapi::{
    api::core::v1::Node,
    apimachinery::pkg::apis::meta::v1::{Status, WatchEvent},
};
use serde_json::json;

use super::{
    http::{respond, status, Failure, Request, Tls},
    routes::field_name,
    Shared, BOOKMARK_EVERY, DEFAULT_WATCH,
};

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
pub(super) fn watch_check(req: &Request) -> Result<(), Failure> {
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

pub(super) fn watch(shared: &Arc<Shared>, req: &Request, w: &mut Tls, gen: u64, name: Option<String>) -> Result<()> {
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
            shared.bookmarks_sent.fetch_add(1, Ordering::SeqCst);
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
