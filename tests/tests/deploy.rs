//! The deployment manifests: valid Kubernetes objects (checked against the
//! API schemas by kubernetes-validate, strict), and the capability set the
//! DaemonSet grants is the one weftd really needs: weftd runs its BPF
//! datapath with exactly those capabilities (root's others dropped from its
//! bounding set) and carries pod traffic; without CAP_BPF, or without
//! CAP_PERFMON (the verifier then refuses the programs), it falls back to
//! the kernel datapath and says why: the set is the smallest that works.
//! weft-kube.yaml (the Kubernetes subnet manager, in place of
//! kube-flannel.yml) grants kube-flannel's RBAC rules and nothing more.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_tests::{cmd, Cluster, Wiring};

fn deploy_file(name: &str) -> std::path::PathBuf {
    cmd::workspace_dir().join("deploy").join(name)
}

/// `bin` in the virtualenv `cargo xtask bootstrap` installs into the build
/// directory (kubernetes-validate, and with it PyYAML).
fn venv_bin(bin: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| cmd::workspace_dir().join("target")).join("xtask-venv/bin").join(bin)
}

/// Every object of a multi-document manifest, as JSON (PyYAML from the
/// virtualenv reads the YAML; empty documents left out).
fn manifest_objects(name: &str) -> Result<Vec<serde_json::Value>> {
    let py = venv_bin("python");
    let script = "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let out = cmd::output(std::process::Command::new(&py).args(["-c", script]).arg(deploy_file(name)))
        .with_context(|| format!("running {} (run `cargo xtask bootstrap`)", py.display()))?;
    ensure!(out.status.success(), "reading {name} as YAML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).with_context(|| format!("{name}: PyYAML's JSON"))
}

/// The one object of `kind` in `objects`, as its k8s-openapi type.
fn the<T: serde::de::DeserializeOwned>(objects: &[serde_json::Value], kind: &str) -> Result<T> {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    ensure!(found.len() == 1, "{} objects of kind {kind}, not one", found.len());
    serde_json::from_value(found[0].clone()).with_context(|| format!("the {kind}"))
}

/// The capabilities weft.yaml adds to weftd's container, e.g. ["NET_ADMIN", ...].
fn manifest_caps() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(deploy_file("weft.yaml"))?;
    let line = text.lines().find(|l| l.trim_start().starts_with("add: [")).context("no `add: [...]` capabilities line in weft.yaml")?;
    let inner = line.split('[').nth(1).and_then(|x| x.split(']').next()).context("odd capabilities line")?;
    Ok(inner.split(',').map(|c| c.trim().trim_matches('"').to_string()).filter(|c| !c.is_empty()).collect())
}

#[test]
fn manifests_are_valid_kubernetes_objects() -> Result<()> {
    let files = [deploy_file("weft.yaml"), deploy_file("weft-privileged.yaml"), deploy_file("weft-kube.yaml")];
    let bin = venv_bin("kubernetes-validate");
    let out = cmd::output(std::process::Command::new(&bin).arg("--strict").args(&files))
        .with_context(|| format!("running {} (run `cargo xtask bootstrap`)", bin.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && !text.contains("ERROR"), "kubernetes-validate --strict:\n{text}");
    // weft.yaml and weft-privileged.yaml: a Namespace, the ConfigMap and the
    // DaemonSet each; weft-kube.yaml: those and a ServiceAccount, a
    // ClusterRole and a ClusterRoleBinding.
    ensure!(text.matches(" passed for resource ").count() == 12, "not every object was validated:\n{text}");
    let caps = manifest_caps()?;
    ensure!(caps == ["NET_ADMIN", "BPF", "PERFMON"], "weft.yaml grants {caps:?}; the tests below check exactly NET_ADMIN, BPF, PERFMON");
    let privileged = std::fs::read_to_string(&files[1])?;
    ensure!(privileged.contains("privileged: true") && !privileged.contains("add: ["), "weft-privileged.yaml is not the privileged variant");
    Ok(())
}

/// Every manifest's DaemonSet replaces weftd one node at a time, as
/// docs/migrate-from-flannel.md relies on: RollingUpdate with
/// maxUnavailable 1 and no surge (a second weftd on a node beside the old
/// one would fight over its devices).
#[test]
fn daemonsets_update_one_node_at_a_time() -> Result<()> {
    use k8s_openapi::{api::apps::v1::DaemonSet, apimachinery::pkg::util::intstr::IntOrString};
    for name in ["weft.yaml", "weft-privileged.yaml", "weft-kube.yaml"] {
        let ds: DaemonSet = the(&manifest_objects(name)?, "DaemonSet")?;
        let strategy = ds.spec.and_then(|s| s.update_strategy).with_context(|| format!("{name}: the DaemonSet has no updateStrategy"))?;
        ensure!(strategy.type_.as_deref() == Some("RollingUpdate"), "{name}: updateStrategy.type {:?}, want RollingUpdate", strategy.type_);
        let rolling = strategy.rolling_update.with_context(|| format!("{name}: no updateStrategy.rollingUpdate"))?;
        ensure!(rolling.max_unavailable == Some(IntOrString::Int(1)), "{name}: maxUnavailable {:?}, want 1", rolling.max_unavailable);
        ensure!(matches!(rolling.max_surge, None | Some(IntOrString::Int(0))), "{name}: maxSurge {:?}: two weftd pods on one node at once", rolling.max_surge);
    }
    Ok(())
}

/// weft-kube.yaml (flannel's Kubernetes subnet manager, kube-flannel.yml's
/// replacement): kube-flannel's RBAC rules and nothing more, bound to the
/// DaemonSet's ServiceAccount; weftd with --kube-subnet-mgr, its node from
/// the downward API, flannel's net-conf where weftd reads it, and the
/// capabilities of weft.yaml (which the test below runs weftd with).
#[test]
fn kube_subnet_mgr_manifest_matches_flannels() -> Result<()> {
    use k8s_openapi::api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    };
    let objs = manifest_objects("weft-kube.yaml")?;

    // kube-flannel.yml's ClusterRole, as (apiGroup, resource, verb) triples.
    let role: ClusterRole = the(&objs, "ClusterRole")?;
    let mut rules = std::collections::BTreeSet::new();
    for r in role.rules.iter().flatten() {
        ensure!(r.non_resource_urls.is_none() && r.resource_names.is_none(), "a rule beyond flannel's: {r:?}");
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    ensure!(rules.insert((g.clone(), res.clone(), v.clone())), "({g:?}, {res}, {v}) granted twice");
                }
            }
        }
    }
    let flannel: std::collections::BTreeSet<(String, String, String)> =
        [("pods", "get"), ("nodes", "get"), ("nodes", "list"), ("nodes", "watch"), ("nodes/status", "patch")]
            .iter()
            .map(|(res, v)| (String::new(), res.to_string(), v.to_string()))
            .collect();
    ensure!(rules == flannel, "the ClusterRole grants {rules:?}; kube-flannel's grants exactly {flannel:?}");

    // Bound to the ServiceAccount the DaemonSet runs as.
    let sa: ServiceAccount = the(&objs, "ServiceAccount")?;
    let binding: ClusterRoleBinding = the(&objs, "ClusterRoleBinding")?;
    ensure!(
        binding.role_ref.kind == "ClusterRole" && Some(&binding.role_ref.name) == role.metadata.name.as_ref(),
        "the ClusterRoleBinding refers to {:?}, not the ClusterRole {:?}",
        binding.role_ref,
        role.metadata.name
    );
    let subjects = binding.subjects.unwrap_or_default();
    ensure!(
        subjects.len() == 1
            && subjects[0].kind == "ServiceAccount"
            && Some(&subjects[0].name) == sa.metadata.name.as_ref()
            && subjects[0].namespace == sa.metadata.namespace,
        "the ClusterRoleBinding's subjects {subjects:?} are not the ServiceAccount {:?}/{:?}",
        sa.metadata.namespace,
        sa.metadata.name
    );

    let ds: DaemonSet = the(&objs, "DaemonSet")?;
    ensure!(ds.metadata.namespace == sa.metadata.namespace, "the DaemonSet and the ServiceAccount are in different namespaces");
    let spec = ds.spec.clone().context("DaemonSet without spec")?;
    let rolling = spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.max_unavailable.clone());
    ensure!(
        rolling == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
        "the DaemonSet does not roll one node at a time (maxUnavailable {rolling:?})"
    );
    let pod = spec.template.spec.context("DaemonSet without a pod spec")?;
    ensure!(pod.service_account_name == sa.metadata.name, "the pods run as {:?}, not the bound ServiceAccount", pod.service_account_name);
    ensure!(pod.host_network == Some(true), "the pods are not on the host network");
    ensure!(pod.priority_class_name.as_deref() == Some("system-node-critical"), "the pods are not system-node-critical");
    let inits = pod.init_containers.unwrap_or_default();
    ensure!(inits.iter().any(|c| c.command.iter().flatten().any(|a| a == "install-cni")), "no init container runs `weftd install-cni`");
    let weftd = pod.containers.iter().find(|c| c.name == "weftd").context("no weftd container")?;
    let args = weftd.args.clone().unwrap_or_default();
    ensure!(args.iter().any(|a| a == "--kube-subnet-mgr"), "weftd is not given --kube-subnet-mgr: {args:?}");
    ensure!(args.iter().any(|a| a == "--ip-masq"), "weftd is not given --ip-masq (kube-flannel.yml passes it): {args:?}");
    ensure!(!args.iter().any(|a| a.contains("etcd")), "weftd is given etcd flags: {args:?}");
    let env_field = |name: &str| {
        weftd.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value_from.as_ref()).and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.clone())
    };
    for (var, field) in [("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        ensure!(env_field(var).as_deref() == Some(field), "{var} is not from the downward API's {field} (it is {:?})", env_field(var));
    }

    // The same capabilities as weft.yaml's weftd, and nothing else.
    let caps_of = |ds: &DaemonSet| -> Option<(Option<bool>, Vec<String>, Vec<String>)> {
        let c = ds.spec.as_ref()?.template.spec.as_ref()?.containers.iter().find(|c| c.name == "weftd")?;
        let sc = c.security_context.as_ref()?;
        let caps = sc.capabilities.as_ref()?;
        Some((sc.privileged, caps.add.clone().unwrap_or_default(), caps.drop.clone().unwrap_or_default()))
    };
    let etcd_ds: DaemonSet = the(&manifest_objects("weft.yaml")?, "DaemonSet")?;
    let (ours, theirs) = (caps_of(&ds), caps_of(&etcd_ds));
    ensure!(ours.is_some() && ours == theirs, "weft-kube.yaml's weftd has (privileged, add, drop) {ours:?}; weft.yaml's {theirs:?}");
    ensure!(theirs.map(|t| t.1) == Some(manifest_caps()?), "weft.yaml's capabilities parse differently as YAML and as the line the tests use");

    // net-conf.json: kube-flannel.yml's default, mounted where weftd reads it.
    let cfg: ConfigMap = the(&objs, "ConfigMap")?;
    let net_conf = cfg.data.as_ref().and_then(|d| d.get("net-conf.json")).context("the ConfigMap has no net-conf.json")?;
    let net_conf: serde_json::Value = serde_json::from_str(net_conf).context("net-conf.json is not JSON")?;
    ensure!(
        net_conf["Network"] == "10.244.0.0/16" && net_conf["Backend"]["Type"] == "vxlan",
        "net-conf.json is not kube-flannel's default (10.244.0.0/16, vxlan): {net_conf}"
    );
    let vol =
        pod.volumes.iter().flatten().find(|v| v.config_map.as_ref().map(|c| &c.name) == cfg.metadata.name.as_ref()).context("no volume of the ConfigMap")?;
    let mount = weftd.volume_mounts.iter().flatten().find(|m| m.name == vol.name).context("weftd does not mount the ConfigMap")?;
    ensure!(mount.mount_path.trim_end_matches('/') == "/etc/kube-flannel", "net-conf is mounted at {}, not /etc/kube-flannel", mount.mount_path);
    let mounts: Vec<&str> = weftd.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    for m in ["/sys/fs/bpf", "/run/flannel", "/run/weft"] {
        ensure!(mounts.contains(&m), "weftd does not mount {m} (mounts {mounts:?})");
    }
    Ok(())
}

/// setpriv: root's capabilities limited to `caps` (bounding set), as a
/// container with `capabilities: {drop: [ALL], add: caps}` runs.
fn only_caps(caps: &[&str]) -> Vec<String> {
    let list: Vec<String> = caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect();
    vec!["setpriv".into(), format!("--bounding-set=-all,{}", list.join(",")), "--".into()]
}

#[test]
fn weftd_runs_with_the_manifests_capabilities() -> Result<()> {
    weft_tests::require_root()?;
    let caps = manifest_caps()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let mut c = Cluster::builder().weft_nodes(3).no_start().build()?;
    let narrow = only_caps(&caps);
    let without_bpf = only_caps(&["NET_ADMIN", "PERFMON"]);
    let without_perfmon = only_caps(&["NET_ADMIN", "BPF"]);
    c.start_weftd_wrapped(1, &narrow.iter().map(String::as_str).collect::<Vec<_>>())?;
    c.start_weftd_wrapped(2, &without_bpf.iter().map(String::as_str).collect::<Vec<_>>())?;
    c.start_weftd_wrapped(3, &without_perfmon.iter().map(String::as_str).collect::<Vec<_>>())?;
    for n in [1, 2, 3] {
        c.wait_node_ready(n)?;
    }
    c.wait_converged()?;
    let log = |c: &Cluster, n| std::fs::read_to_string(&c.weft_node(n).unwrap().log).unwrap_or_default();
    ensure!(log(&c, 1).contains("datapath: bpf"), "node 1 ({caps:?}) is not on the BPF datapath:\n{}", log(&c, 1));
    ensure!(log(&c, 2).contains("datapath: kernel fallback"), "node 2 (no CAP_BPF) did not fall back and say so:\n{}", log(&c, 2));
    ensure!(
        log(&c, 3).contains("datapath: kernel fallback, because the kernel refused weft's programs"),
        "node 3 (no CAP_PERFMON) did not fall back because the verifier refused:\n{}",
        log(&c, 3)
    );
    let pods = vec![c.add_pod(1, Wiring::Bridge)?, c.add_pod(2, Wiring::Bridge)?, c.add_pod(3, Wiring::Bridge)?];
    c.register_endpoint(pods[0])?;
    let w1 = c.weft_node(1)?;
    cmd::poll("node 1 (narrow caps) to attach weft_from_pod", Duration::from_secs(10), Duration::from_millis(100), || {
        let pinned = w1.link_pinned("weft_from_pod");
        if pinned {
            Ok(Some(()))
        } else {
            Err(w1.log_tail(5))
        }
    })?;
    c.ping_across_nodes(&pods, 3)?;
    c.pass();
    Ok(())
}
