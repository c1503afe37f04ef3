//! The harness's Kubernetes API server (`weft_tests::kube_api`) against real
//! clients: the image's `kubectl` with the server's kubeconfig, `curl`, and a
//! small rustls HTTP client (`kube_api::Client`) that trusts only the
//! kubeconfig's CA.
//! Everything listens on 127.0.0.1 or in a namespace the test makes.
use std::{
    collections::BTreeMap,
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::{
    api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::{json, Value};
use weft_tests::{
    kube_api::{from_kubeconfig, read_head, Client, KubeApi, ADMIN, FLANNEL},
    netns::Netns,
};

fn start(name: &str) -> Result<KubeApi> {
    let name = format!("weft-kapi-{name}-{}", std::process::id());
    KubeApi::start(&name, "127.0.0.1:0".parse()?)
}

fn node(name: &str, annotations: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        spec: Some(NodeSpec { pod_cidr: Some("10.244.1.0/24".into()), pod_cidrs: Some(vec!["10.244.1.0/24".into()]), ..Default::default() }),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition { type_: "Ready".into(), status: "True".into(), reason: Some("KubeletReady".into()), ..Default::default() }]),
            ..Default::default()
        }),
    }
}

fn ty(ev: &Value) -> &str {
    ev["type"].as_str().unwrap_or("")
}
fn rv_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

// ---- kubectl ----------------------------------------------------------------

/// `kubectl`, or the binary named by WEFT_KUBECTL (e.g. Debian's 1.20 one,
/// unpacked, where the image's kubectl holds /usr/bin/kubectl).
fn kubectl_bin() -> String {
    std::env::var("WEFT_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> Result<String> {
    kubectl_cmd(Command::new(kubectl_bin()), kubeconfig, home, args)
}

fn kubectl_cmd(mut c: Command, kubeconfig: &Path, home: &Path, args: &[&str]) -> Result<String> {
    c.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--cache-dir={}", home.join("cache").display()))
        .arg("--request-timeout=20s")
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG");
    let out = c.output().context("running kubectl (is it installed?)")?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn annotations(api: &KubeApi, name: &str) -> BTreeMap<String, String> {
    api.node(name).and_then(|n| n.metadata.annotations).unwrap_or_default()
}

#[test]
fn kubectl_gets_annotates_and_deletes_nodes() -> Result<()> {
    let api = start("kubectl")?;
    api.create_node(node("n1", &[("flannel.alpha.coreos.com/backend-type", "vxlan")]))?;
    api.create_node(node("n2", &[]))?;
    let kc = api.kubeconfig(ADMIN)?;
    let home = api.dir().join("home");
    std::fs::create_dir(&home)?;

    let out = kubectl(&kc, &home, &["get", "nodes"])?;
    println!("{out}");
    // The server's Table, as kube-apiserver prints nodes.
    let head: Vec<&str> = out.lines().next().unwrap_or("").split_whitespace().collect();
    ensure!(head == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "header: {out}");
    let row = |n: &str| out.lines().find(|l| l.starts_with(&format!("{n} "))).map(|l| l.split_whitespace().take(3).collect::<Vec<_>>());
    ensure!(row("n1") == Some(vec!["n1", "Ready", "<none>"]) && row("n2").is_some(), "rows: {out}");
    let wide = kubectl(&kc, &home, &["get", "nodes", "-o", "wide"])?;
    ensure!(wide.lines().next().unwrap_or("").contains("INTERNAL-IP"), "{wide}");

    let j: Value = serde_json::from_str(&kubectl(&kc, &home, &["get", "node", "n1", "-o", "json"])?)?;
    ensure!(j["kind"] == "Node" && j["metadata"]["name"] == "n1", "{j}");
    ensure!(j["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"] == "vxlan", "{j}");
    ensure!(j["spec"]["podCIDR"] == "10.244.1.0/24", "{j}");

    let rv = api.resource_version();
    kubectl(&kc, &home, &["annotate", "node", "n1", "weft.test/k=v"])?;
    ensure!(annotations(&api, "n1").get("weft.test/k").map(String::as_str) == Some("v"), "annotation not stored: {:?}", annotations(&api, "n1"));
    ensure!(api.resource_version() == rv + 1, "annotate bumped rv {rv} -> {}", api.resource_version());
    kubectl(&kc, &home, &["annotate", "node", "n1", "weft.test/k-"])?;
    let a = annotations(&api, "n1");
    ensure!(!a.contains_key("weft.test/k") && a.contains_key("flannel.alpha.coreos.com/backend-type"), "annotation not removed: {a:?}");

    kubectl(&kc, &home, &["delete", "node", "n2"])?;
    ensure!(api.node_names() == ["n1"], "after delete: {:?}", api.node_names());
    let out = kubectl(&kc, &home, &["get", "nodes", "-o", "name"])?;
    ensure!(out.trim() == "node/n1", "{out}");
    println!("requests: {:?}", api.counts());
    ensure!(api.count("patch", "nodes", 200) == 2 && api.count("delete", "nodes", 200) == 1, "counts {:?}", api.counts());

    // The flannel token may read nodes but not annotate them through nodes/NAME.
    let fkc = api.kubeconfig(FLANNEL)?;
    ensure!(kubectl(&fkc, &home, &["get", "node", "n1", "-o", "name"])?.trim() == "node/n1");
    let e = kubectl(&fkc, &home, &["annotate", "node", "n1", "x=y"]).expect_err("flannel may not patch nodes");
    ensure!(format!("{e:#}").contains("forbidden"), "{e:#}");
    ensure!(api.count("patch", "nodes", 403) == 1, "counts {:?}", api.counts());
    Ok(())
}

#[test]
fn kubectl_in_a_namespace() -> Result<()> {
    weft_tests::require_root()?;
    let ns = Netns::create(&format!("wkapi-{}", std::process::id()))?;
    let mut api = KubeApi::start_in(&format!("weft-kapi-ns-{}", std::process::id()), "127.0.0.1:16443".parse()?, Some(&ns.path()))?;
    api.create_node(node("n1", &[]))?;
    // The namespace's own loopback: the root namespace does not reach it.
    ensure!(TcpStream::connect_timeout(&api.addr(), Duration::from_secs(1)).is_err(), "{} reachable from the root namespace", api.addr());
    let kc = api.kubeconfig(ADMIN)?;
    let home = api.dir().join("home");
    std::fs::create_dir(&home)?;
    let out = kubectl_cmd(ns.command(&kubectl_bin(), &[]), &kc, &home, &["get", "nodes", "-o", "name"])?;
    ensure!(out.trim() == "node/n1", "{out}");
    // Down and back inside the namespace, same address and certificate.
    api.go_down();
    ensure!(kubectl_cmd(ns.command(&kubectl_bin(), &[]), &kc, &home, &["get", "nodes", "-o", "name"]).is_err(), "kubectl reached a server that is down");
    api.come_back()?;
    let out = kubectl_cmd(ns.command(&kubectl_bin(), &[]), &kc, &home, &["get", "nodes", "-o", "name"])?;
    ensure!(out.trim() == "node/n1", "{out}");
    Ok(())
}

// ---- raw HTTP -----------------------------------------------------------------

#[test]
fn unauthenticated_and_unknown_tokens_get_401() -> Result<()> {
    let api = start("401")?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    for t in [None, Some("not-a-token")] {
        let (code, body) = c.token(t).get("/api/v1/nodes")?;
        ensure!(code == 401 && body["kind"] == "Status" && body["code"] == 401 && body["reason"] == "Unauthorized", "{t:?}: {code} {body}");
    }
    let (code, _) = c.get("/api/v1/nodes")?;
    ensure!(code == 200);
    // curl, trusting the CA, without a token.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(api.ca_pem())
        .args(["-o", "/dev/null", "-w", "%{http_code}", &format!("{}/api/v1/nodes", api.url())])
        .output()?;
    ensure!(String::from_utf8_lossy(&out.stdout) == "401", "curl: {:?}", out);
    // curl with the in-cluster service account files (flannel's token).
    let sa = api.service_account_dir(FLANNEL)?;
    let token = std::fs::read_to_string(sa.join("token"))?;
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(sa.join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}"), &format!("{}/api/v1/nodes", api.url())])
        .output()?;
    let list: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("curl: {out:?}"))?;
    ensure!(list["kind"] == "NodeList", "{list}");
    ensure!(api.count("list", "nodes", 401) == 3 && api.count("list", "nodes", 200) == 2, "{:?}", api.counts());
    Ok(())
}

#[test]
fn tls_is_verified_with_the_kubeconfig_ca() -> Result<()> {
    let api = start("tls")?;
    let other = start("tls-other")?;
    let kc = api.kubeconfig(ADMIN)?;
    let (addr, _, token) = from_kubeconfig(&kc)?;
    ensure!(Client::new(&kc)?.get("/version")?.0 == 200);
    // The other server's CA did not sign this server's certificate.
    let wrong = Client::with_ca(&addr, &std::fs::read(other.ca_pem())?, Some(token))?;
    let e = wrong.get("/version").expect_err("a foreign CA must not verify");
    ensure!(format!("{e:#}").to_lowercase().contains("certificate"), "{e:#}");
    // curl with the system's CAs only refuses it too.
    let out = Command::new("curl").args(["-sS", "-o", "/dev/null", &format!("{}/version", api.url())]).output()?;
    ensure!(!out.status.success(), "curl trusted the test CA without --cacert");
    Ok(())
}

#[test]
fn flannel_token_has_exactly_flannels_role() -> Result<()> {
    let api = start("rbac")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(FLANNEL)?)?;
    let smp = "application/strategic-merge-patch+json";
    let patch = json!({"metadata": {"annotations": {"a": "b"}}});
    for (m, p, ct, body, want) in [
        ("GET", "/api/v1/nodes", "application/json", Value::Null, 200),
        ("GET", "/api/v1/nodes/n1", "application/json", Value::Null, 200),
        ("PATCH", "/api/v1/nodes/n1/status", smp, patch.clone(), 200),
        ("GET", "/api/v1/namespaces/kube-flannel/pods/p", "application/json", Value::Null, 404),
        ("PATCH", "/api/v1/nodes/n1", smp, patch.clone(), 403),
        ("PUT", "/api/v1/nodes/n1", "application/json", serde_json::to_value(api.node("n1"))?, 403),
        ("DELETE", "/api/v1/nodes/n1", "application/json", Value::Null, 403),
        ("POST", "/api/v1/nodes", "application/json", serde_json::to_value(node("n2", &[]))?, 403),
        ("PUT", "/api/v1/nodes/n1/status", "application/json", serde_json::to_value(api.node("n1"))?, 403),
    ] {
        let (code, b) = c.req(m, p, ct, &body)?;
        ensure!(code == want, "{m} {p}: {code} (want {want}) {b}");
        if code == 403 {
            ensure!(b["kind"] == "Status" && b["reason"] == "Forbidden" && b["code"] == 403, "{b}");
        }
    }
    let w = c.watch("/api/v1/nodes?watch=true&timeoutSeconds=1")?;
    ensure!(ty(&w.next(Duration::from_secs(5)).context("no event")?) == "ADDED");
    ensure!(api.node_names() == ["n1"] && annotations(&api, "n1").get("a").map(String::as_str) == Some("b"));
    let want = [
        (("patch", "nodes/status", 200), 1),
        (("patch", "nodes", 403), 1),
        (("delete", "nodes", 403), 1),
        (("update", "nodes", 403), 1),
        (("watch", "nodes", 200), 1),
        (("get", "pods", 404), 1),
    ];
    for ((v, r, code), n) in want {
        ensure!(api.count(v, r, code) == n, "{v} {r} {code}: {} in {:?}", api.count(v, r, code), api.counts());
    }
    Ok(())
}

#[test]
fn strategic_merge_patch_of_node_status() -> Result<()> {
    let api = start("smp")?;
    api.create_node(node("n1", &[("keep", "1"), ("flannel.alpha.coreos.com/public-ip-overwrite", "10.0.0.9")]))?;
    let c = Client::new(&api.kubeconfig(FLANNEL)?)?;
    let smp = "application/strategic-merge-patch+json";
    // What flannel sends: annotations (null deletes one), the
    // NetworkUnavailable condition, and a spec change the status
    // subresource must ignore.
    let cond = json!({"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp", "message": "Flannel is running on this node"});
    let patch = json!({
        "metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip-overwrite": null, "flannel.alpha.coreos.com/backend-type": "vxlan"}},
        "spec": {"podCIDR": "10.99.0.0/24"},
        "status": {"conditions": [cond]},
    });
    let rv = api.resource_version();
    let (code, body) = c.req("PATCH", "/api/v1/nodes/n1/status", smp, &patch)?;
    ensure!(code == 200 && rv_of(&body) == rv + 1, "{code} {body}");
    let n = api.node("n1").context("n1")?;
    let a = n.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        a.get("keep").map(String::as_str) == Some("1")
            && !a.contains_key("flannel.alpha.coreos.com/public-ip-overwrite")
            && a.contains_key("flannel.alpha.coreos.com/backend-type"),
        "{a:?}"
    );
    let conds = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let types: Vec<_> = conds.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    ensure!(types == [("Ready", "True"), ("NetworkUnavailable", "False")], "{types:?}");
    ensure!(n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) == Some("10.244.1.0/24"), "status patch changed spec: {:?}", n.spec);

    // Same type again: merged into the existing entry, not appended.
    let patch2 = json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True", "reason": "Down"}]}});
    ensure!(c.req("PATCH", "/api/v1/nodes/n1/status", smp, &patch2)?.0 == 200);
    let conds = api.node("n1").and_then(|n| n.status).and_then(|s| s.conditions).unwrap_or_default();
    ensure!(conds.len() == 2 && conds[1].status == "True" && conds[1].message.as_deref() == Some("Flannel is running on this node"), "{conds:?}");

    // A merge patch (RFC 7386) replaces lists whole.
    let admin = c.token(Some(api.token(ADMIN)));
    let (code, body) = admin.req("PATCH", "/api/v1/nodes/n1/status", "application/merge-patch+json", &json!({"status": {"conditions": [cond]}}))?;
    ensure!(code == 200 && body["status"]["conditions"].as_array().map(Vec::len) == Some(1), "{code} {body}");
    // A no-op patch bumps nothing.
    let rv = api.resource_version();
    ensure!(admin.req("PATCH", "/api/v1/nodes/n1", "application/merge-patch+json", &json!({"metadata": {"annotations": {"keep": "1"}}}))?.0 == 200);
    ensure!(api.resource_version() == rv, "no-op patch bumped the resourceVersion");
    // A patch on the main resource does not change status.
    let (code, body) = admin.req("PATCH", "/api/v1/nodes/n1", smp, &json!({"status": {"conditions": null}}))?;
    ensure!(code == 200 && body["status"]["conditions"].as_array().map(Vec::len) == Some(1), "{code} {body}");
    Ok(())
}

#[test]
fn stale_put_is_a_conflict() -> Result<()> {
    let api = start("409")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let (_, mut n) = c.get("/api/v1/nodes/n1")?;
    let stale = n.clone();
    n["metadata"]["labels"] = json!({"a": "1"});
    let (code, body) = c.req("PUT", "/api/v1/nodes/n1", "application/json", &n)?;
    ensure!(code == 200 && rv_of(&body) > rv_of(&stale), "{code} {body}");
    let (code, body) = c.req("PUT", "/api/v1/nodes/n1", "application/json", &stale)?;
    ensure!(code == 409 && body["reason"] == "Conflict" && body["kind"] == "Status", "{code} {body}");
    ensure!(api.node("n1").and_then(|n| n.metadata.labels).is_some_and(|l| l.contains_key("a")), "stale PUT overwrote the node");
    // A patch with a stale resourceVersion precondition too.
    let p = json!({"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"], "labels": {"b": "2"}}});
    ensure!(c.req("PATCH", "/api/v1/nodes/n1", "application/merge-patch+json", &p)?.0 == 409);
    ensure!(api.count("update", "nodes", 409) == 1 && api.count("patch", "nodes", 409) == 1);
    Ok(())
}

#[test]
fn list_then_watch_from_resource_version() -> Result<()> {
    let api = start("watch")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let (code, list) = c.get("/api/v1/nodes")?;
    ensure!(code == 200 && list["kind"] == "NodeList" && list["items"].as_array().map(Vec::len) == Some(1), "{list}");
    let rv0 = rv_of(&list);
    ensure!(rv0 == api.resource_version(), "list rv {rv0} vs {}", api.resource_version());

    // Writes made before the watch opens are still delivered, after rv0 only.
    let smp = "application/strategic-merge-patch+json";
    c.req("PATCH", "/api/v1/nodes/n1", smp, &json!({"metadata": {"labels": {"step": "1"}}}))?;
    let w = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv0}&timeoutSeconds=20"))?;
    c.req("POST", "/api/v1/nodes", "application/json", &serde_json::to_value(node("n2", &[]))?)?;
    c.req("PATCH", "/api/v1/nodes/n1", smp, &json!({"metadata": {"labels": {"step": "2"}}}))?;
    c.req("DELETE", "/api/v1/nodes/n2", "application/json", &Value::Null)?;
    let evs = w.take(4, Duration::from_secs(10));
    let got: Vec<(String, String, u64)> =
        evs.iter().map(|e| (ty(e).to_string(), e["object"]["metadata"]["name"].as_str().unwrap_or("").to_string(), rv_of(&e["object"]))).collect();
    println!("{got:?}");
    let want = [("MODIFIED", "n1"), ("ADDED", "n2"), ("MODIFIED", "n1"), ("DELETED", "n2")];
    ensure!(got.len() == 4 && got.iter().zip(want).all(|(g, w)| g.0 == w.0 && g.1 == w.1), "{got:?}");
    ensure!(got.windows(2).all(|p| p[0].2 < p[1].2) && got[0].2 == rv0 + 1, "resourceVersions not in order after {rv0}: {got:?}");
    ensure!(evs[2]["object"]["metadata"]["labels"]["step"] == "2");

    // Watching from the last event's rv yields nothing old; a watch without
    // a resourceVersion starts with ADDED for what exists.
    let w2 = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={}&timeoutSeconds=2", got[3].2))?;
    ensure!(w2.next(Duration::from_millis(700)).is_none(), "old events replayed");
    let w3 = c.watch("/api/v1/nodes?watch=true&timeoutSeconds=2")?;
    let e = w3.next(Duration::from_secs(5)).context("no initial event")?;
    ensure!(ty(&e) == "ADDED" && e["object"]["metadata"]["name"] == "n1", "{e}");
    // timeoutSeconds ends the stream.
    ensure!(w3.ends_within(Duration::from_secs(5)), "watch outlived timeoutSeconds");
    Ok(())
}

#[test]
fn compacted_history_gives_410_expired() -> Result<()> {
    let api = start("410")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let old = api.resource_version();
    c.req("PATCH", "/api/v1/nodes/n1", "application/merge-patch+json", &json!({"metadata": {"labels": {"x": "1"}}}))?;
    api.compact();
    let w = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={old}"))?;
    let e = w.next(Duration::from_secs(5)).context("no event")?;
    ensure!(ty(&e) == "ERROR" && e["object"]["kind"] == "Status" && e["object"]["code"] == 410 && e["object"]["reason"] == "Expired", "{e}");
    ensure!(w.ends_within(Duration::from_secs(5)), "stream went on after 410");
    // A list of exactly that old version is 410 Gone.
    let (code, body) = c.get(&format!("/api/v1/nodes?resourceVersion={old}&resourceVersionMatch=Exact"))?;
    ensure!(code == 410 && body["reason"] == "Expired", "{code} {body}");
    // From the current version it is fine.
    let now = api.resource_version();
    let w = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={now}&timeoutSeconds=5"))?;
    c.req("PATCH", "/api/v1/nodes/n1", "application/merge-patch+json", &json!({"metadata": {"labels": {"x": "2"}}}))?;
    let e = w.next(Duration::from_secs(5)).context("no event")?;
    ensure!(ty(&e) == "MODIFIED" && rv_of(&e["object"]) == now + 1, "{e}");
    Ok(())
}

#[test]
fn bookmarks_only_when_asked() -> Result<()> {
    let api = start("bookmark")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let rv = api.resource_version();
    let with = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=20"))?;
    let without = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=20"))?;
    std::thread::sleep(Duration::from_millis(300));
    api.bookmark_now();
    let e = with.next(Duration::from_secs(2)).context("no bookmark")?;
    ensure!(ty(&e) == "BOOKMARK" && e["object"]["kind"] == "Node" && e["object"]["apiVersion"] == "v1" && rv_of(&e["object"]) == rv, "{e}");
    ensure!(e["object"]["metadata"].get("name").is_none(), "bookmark carries a whole object: {e}");
    // Periodic ones come too (every 3 s).
    let e = with.next(Duration::from_secs(5)).context("no periodic bookmark")?;
    ensure!(ty(&e) == "BOOKMARK", "{e}");
    ensure!(without.next(Duration::from_millis(500)).is_none(), "bookmark sent unasked");
    Ok(())
}

#[test]
fn dropped_watches_and_an_unreachable_server() -> Result<()> {
    let mut api = start("outage")?;
    api.create_node(node("n1", &[]))?;
    let kc = api.kubeconfig(ADMIN)?;
    let c = Client::new(&kc)?;
    let w = c.watch("/api/v1/nodes?watch=true&timeoutSeconds=60")?;
    ensure!(ty(&w.next(Duration::from_secs(5)).context("no ADDED")?) == "ADDED");
    api.drop_watches();
    ensure!(w.ends_within(Duration::from_secs(3)), "drop_watches left the stream open");

    let w = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={}&timeoutSeconds=60", api.resource_version()))?;
    api.go_down();
    ensure!(w.ends_within(Duration::from_secs(3)), "go_down left the stream open");
    ensure!(TcpStream::connect_timeout(&api.addr(), Duration::from_secs(1)).is_err(), "still accepting while down");
    // Writes while down (through the harness) are seen after coming back.
    api.create_node(node("n2", &[]))?;
    api.come_back()?;
    let (code, list) = Client::new(&kc)?.get("/api/v1/nodes")?;
    ensure!(code == 200 && list["items"].as_array().map(Vec::len) == Some(2), "{code} {list}");
    Ok(())
}

#[test]
fn watch_list_sends_initial_events_then_a_marked_bookmark() -> Result<()> {
    let api = start("watchlist")?;
    api.create_node(node("n1", &[]))?;
    api.create_node(node("n2", &[]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let rv = api.resource_version();
    let w = c.watch("/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10")?;
    let evs = w.take(3, Duration::from_secs(5));
    let types: Vec<&str> = evs.iter().map(ty).collect();
    ensure!(types == ["ADDED", "ADDED", "BOOKMARK"], "{evs:?}");
    ensure!(evs[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true" && rv_of(&evs[2]["object"]) == rv, "{}", evs[2]);
    // Without bookmarks the real server refuses a watch-list (422).
    let (code, body) = c.get("/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")?;
    ensure!(code == 422 && body["reason"] == "Invalid", "{code} {body}");
    ensure!(api.count("watch", "nodes", 422) == 1 && api.count("watch", "nodes", 200) == 1, "{:?}", api.counts());
    Ok(())
}

#[test]
fn drop_closes_everything_quickly() -> Result<()> {
    let api = start("drop")?;
    api.create_node(node("n1", &[]))?;
    let addr = api.addr();
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let w = c.watch("/api/v1/nodes?watch=true&timeoutSeconds=120")?;
    ensure!(ty(&w.next(Duration::from_secs(5)).context("no ADDED")?) == "ADDED");
    // An idle keep-alive connection after one answered request, and a TCP
    // connection that never starts TLS.
    let mut idle = c.send("GET", "/version", "application/json", &[])?;
    ensure!(read_head(&mut idle)?.0 == 200);
    let raw = TcpStream::connect(addr)?;
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    drop(api);
    ensure!(t.elapsed() < Duration::from_secs(3), "drop took {:?}", t.elapsed());
    ensure!(w.ends_within(Duration::from_secs(2)), "watch outlived the server");
    ensure!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "port still open after drop");
    drop(raw);
    Ok(())
}

#[test]
fn json_patch_with_escaped_annotation_keys() -> Result<()> {
    let api = start("jsonpatch")?;
    api.create_node(node("n1", &[("flannel.alpha.coreos.com/public-ip", "10.0.0.1")]))?;
    let c = Client::new(&api.kubeconfig(ADMIN)?)?;
    let jp = "application/json-patch+json";
    let key = "/metadata/annotations/flannel.alpha.coreos.com~1public-ip";
    let ops = json!([{"op": "test", "path": key, "value": "10.0.0.1"}, {"op": "replace", "path": key, "value": "10.0.0.2"}, {"op": "add", "path": "/metadata/labels", "value": {"x": "1"}}]);
    let (code, body) = c.req("PATCH", "/api/v1/nodes/n1", jp, &ops)?;
    ensure!(
        code == 200 && body["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == "10.0.0.2" && body["metadata"]["labels"]["x"] == "1",
        "{code} {body}"
    );
    // A failed test op changes nothing.
    let rv = api.resource_version();
    let ops = json!([{"op": "test", "path": key, "value": "10.0.0.1"}, {"op": "remove", "path": key}]);
    let (code, body) = c.req("PATCH", "/api/v1/nodes/n1", jp, &ops)?;
    ensure!(code == 422 && api.resource_version() == rv, "{code} {body}");
    ensure!(c.req("PATCH", "/api/v1/nodes/n1", jp, &json!([{"op": "remove", "path": key}]))?.0 == 200);
    ensure!(!annotations(&api, "n1").contains_key("flannel.alpha.coreos.com/public-ip"), "{:?}", annotations(&api, "n1"));
    // kubectl's own JSON patch.
    let home = api.dir().join("home");
    std::fs::create_dir(&home)?;
    kubectl(&api.kubeconfig(ADMIN)?, &home, &["patch", "node", "n1", "--type=json", "-p", r#"[{"op":"add","path":"/metadata/annotations/k","value":"v"}]"#])?;
    ensure!(annotations(&api, "n1").get("k").map(String::as_str) == Some("v"), "{:?}", annotations(&api, "n1"));
    // An unknown patch type is 415, as the real server answers.
    ensure!(c.req("PATCH", "/api/v1/nodes/n1", "application/json", &json!({}))?.0 == 415);
    Ok(())
}

#[test]
fn harness_writes_are_seen_by_watchers() -> Result<()> {
    let api = start("hooks")?;
    api.create_node(node("n1", &[]))?;
    let c = Client::new(&api.kubeconfig(FLANNEL)?)?;
    let rv = api.resource_version();
    let w = c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=10"))?;
    let n = api.update_node("n1", |n| {
        n.metadata.annotations.get_or_insert_with(Default::default).insert("flannel.alpha.coreos.com/public-ip".into(), "10.0.0.7".into());
    })?;
    ensure!(n.metadata.resource_version == Some((rv + 1).to_string()), "{:?}", n.metadata);
    // A change that changes nothing is no write.
    api.update_node("n1", |_| {})?;
    ensure!(api.delete_node("n1") && !api.delete_node("n1"));
    let evs = w.take(2, Duration::from_secs(5));
    let got: Vec<(&str, u64)> = evs.iter().map(|e| (ty(e), rv_of(&e["object"]))).collect();
    ensure!(got == [("MODIFIED", rv + 1), ("DELETED", rv + 2)], "{got:?}");
    ensure!(evs[0]["object"]["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == "10.0.0.7", "{}", evs[0]);
    ensure!(w.next(Duration::from_millis(300)).is_none(), "extra event");
    Ok(())
}
