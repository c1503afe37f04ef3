//! The meta.k8s.io/v1 Table `kubectl get` shows by default (the node printer's columns).

use serde_json::{json, Value};

use super::{http::Request, routes::now_secs};

pub(super) fn wants_table(req: &Request) -> bool {
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
pub(super) fn table(req: &Request, nodes: Vec<Value>, rv: u64) -> Value {
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
