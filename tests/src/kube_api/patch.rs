//! Patches: RFC 7386 merge patch, strategic merge patch for Nodes, RFC 6902 JSON patch.

use anyhow::Result;
use serde_json::{json, Value};

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
pub(super) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
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
