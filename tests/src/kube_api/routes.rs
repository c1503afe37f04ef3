//! Routing a request: authentication, RBAC, discovery, get/list/create/update/patch/delete of Nodes and the store writes.
use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::{
    api::core::v1::Node,
    apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusDetails, Time},
    List,
};
use serde_json::{json, Value};

use super::{
    allowed_for_flannel,
    http::{bad_request, conflict, not_found, respond, respond_bytes, status, Failure, Request, Tls},
    patch::{json_patch, merge_patch, strategic_merge},
    table::{table, wants_table},
    watch::{watch, watch_check},
    Shared, Store, FLANNEL, HISTORY,
};

/// Serves one request; Ok(false) when the connection must close.
pub(super) fn handle(shared: &Arc<Shared>, req: &Request, w: &mut Tls, gen: u64) -> Result<bool> {
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
    if verb == "list" && resource == "nodes" && !wants_table(req) {
        let r = list_joined(&shared.store.lock().unwrap(), req);
        match r {
            Ok(b) => {
                count(200);
                respond_bytes(w, 200, &b)?;
            }
            Err((code, body)) => {
                count(code);
                respond(w, code, &body)?;
            }
        }
        return Ok(true);
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
pub(super) fn write(st: &mut Store, name: &str, cur: Node, mut new: Node) -> Node {
    if new == cur {
        return cur;
    }
    st.rv += 1;
    new.metadata.resource_version = Some(st.rv.to_string());
    st.put(name, &new);
    record(st, "MODIFIED", new.clone());
    new
}

/// Removes `name`, recording a DELETED event at a new resourceVersion.
pub(super) fn delete(st: &mut Store, name: &str) -> Option<Node> {
    let mut gone = st.nodes.remove(name)?;
    st.json.remove(name);
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

pub(super) fn create(st: &mut Store, mut node: Node) -> Result<Node, (u16, String)> {
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
    st.put(&name, &node);
    record(st, "ADDED", node.clone());
    Ok(node)
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(super) fn field_name(req: &Request) -> Result<Option<String>, Failure> {
    let Some(fs) = req.query.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match fs.split_once('=') {
        Some(("metadata.name", v)) => Ok(Some(v.trim_start_matches('=').to_string())),
        _ => Err(bad_request(format!("field label not supported: {fs}"))),
    }
}

impl Store {
    /// Stores `node` under `name`, with its JSON for lists.
    fn put(&mut self, name: &str, node: &Node) {
        self.nodes.insert(name.to_string(), node.clone());
        self.json.insert(name.to_string(), Arc::new(serde_json::to_vec(node).unwrap_or_default()));
    }
}

/// A plain (not Table) list of every Node: the NodeList envelope around
/// each Node's stored JSON.
fn list_joined(st: &Store, req: &Request) -> Result<Vec<u8>, Failure> {
    if field_name(req)?.is_some() {
        let (_, v) = list(st, req)?;
        return Ok(serde_json::to_vec(&v).unwrap_or_default());
    }
    list_checks(st, req)?;
    let mut out = format!(r#"{{"apiVersion":"v1","kind":"NodeList","metadata":{{"resourceVersion":"{}"}},"items":["#, st.rv).into_bytes();
    for (i, name) in st.nodes.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(st.json.get(name).map(|j| j.as_slice()).unwrap_or(b"null"));
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn list(st: &Store, req: &Request) -> Result<(u16, Value), Failure> {
    let only = field_name(req)?;
    list_checks(st, req)?;
    let items = st.nodes.values().filter(|n| only.is_none() || n.metadata.name == only).cloned().collect();
    let l = List::<Node> { items, metadata: ListMeta { resource_version: Some(st.rv.to_string()), ..Default::default() } };
    Ok((200, serde_json::to_value(l).unwrap_or(Value::Null)))
}

/// What a list refuses: label selectors, and an Exact resourceVersion whose history is gone.
fn list_checks(st: &Store, req: &Request) -> Result<(), Failure> {
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
    Ok(())
}
