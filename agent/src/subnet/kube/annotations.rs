//! flannel's Node annotations, read and written as flannel's kube subnet
//! manager does (pkg/subnet/kube): `<prefix>/kube-subnet-manager`,
//! `backend-type`, `backend-data`, `public-ip`, and the read-only
//! `public-ip-overwrite`. A Node's podCIDR and these annotations are its
//! lease; [`lease_of`] turns them into flannel's lease key and value, so the
//! backends reconcile Node-based peers exactly as etcd leases.
use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::core::v1::Node;

use crate::subnet::{lease::LeaseAttrs, Ipv4Net};

pub const KUBE_SUBNET_MANAGER: &str = "kube-subnet-manager";
pub const BACKEND_TYPE: &str = "backend-type";
pub const BACKEND_DATA: &str = "backend-data";
pub const PUBLIC_IP: &str = "public-ip";
pub const PUBLIC_IP_OVERWRITE: &str = "public-ip-overwrite";

/// Checks `--kube-annotation-prefix` as the API server checks an
/// annotation key's prefix: a DNS subdomain (lowercase alphanumerics, '-'
/// and '.', each label starting and ending alphanumeric, at most 253).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
        return Err(format!(
            "--kube-annotation-prefix {prefix:?} is not a valid annotation prefix (a DNS subdomain: lowercase letters, digits, '-' and '.', e.g. flannel.alpha.coreos.com)"
        ));
    }
    Ok(())
}

/// A Node's name, for messages.
pub fn name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or("(unnamed)")
}

/// The Node's IPv4 podCIDR: the first IPv4 entry of spec.podCIDRs, else
/// spec.podCIDR. Ok(None): none assigned yet.
pub fn pod_cidr(node: &Node) -> Result<Option<Ipv4Net>, String> {
    let spec = node.spec.as_ref();
    let all: Vec<&String> = spec.and_then(|s| s.pod_cidrs.as_ref()).map(|v| v.iter().collect()).unwrap_or_default();
    let first = all.iter().find(|c| !c.contains(':')).copied().or_else(|| spec.and_then(|s| s.pod_cidr.as_ref()).filter(|c| !c.contains(':')));
    match first {
        None => Ok(None),
        Some(c) => c.parse().map(Some).map_err(|e| format!("node {}: spec.podCIDR {c:?} is not an IPv4 subnet: {e:#}", name(node))),
    }
}

/// The annotation `<prefix>/<key>`.
pub fn get<'a>(node: &'a Node, prefix: &str, key: &str) -> Option<&'a str> {
    node.metadata.annotations.as_ref()?.get(&format!("{prefix}/{key}")).map(String::as_str)
}

/// The Node's lease, from its podCIDR and annotations. Ok(None): not a
/// peer (no `kube-subnet-manager: "true"`, or no podCIDR yet). Err names
/// the node, the field and the value.
pub fn lease_of(node: &Node, prefix: &str) -> Result<Option<(Ipv4Net, LeaseAttrs)>, String> {
    if get(node, prefix, KUBE_SUBNET_MANAGER) != Some("true") {
        return Ok(None);
    }
    let Some(subnet) = pod_cidr(node)? else { return Ok(None) };
    let n = name(node);
    let field = |k: &str| format!("{prefix}/{k}");
    let ip = get(node, prefix, PUBLIC_IP).ok_or_else(|| format!("node {n}: annotation {} is missing", field(PUBLIC_IP)))?;
    let public_ip: Ipv4Addr = ip.parse().map_err(|_| format!("node {n}: annotation {} = {ip:?} is not an IPv4 address", field(PUBLIC_IP)))?;
    let backend_type = match get(node, prefix, BACKEND_TYPE) {
        None | Some("") => None,
        Some(t) => Some(t.to_string()),
    };
    let backend_data = match get(node, prefix, BACKEND_DATA) {
        None | Some("") | Some("null") => None,
        Some(d) => Some(
            serde_json::from_str::<serde_json::Value>(d)
                .ok()
                .filter(|v| v.is_object())
                .ok_or_else(|| format!("node {n}: annotation {} = {d:?} is not a JSON object", field(BACKEND_DATA)))?,
        ),
    };
    Ok(Some((subnet, LeaseAttrs { public_ip, public_ipv6: None, backend_type, backend_data, backend_v6_data: None })))
}

/// The annotations our lease attributes make (flannel's exact forms:
/// backend-data is the JSON text, or `null`; udp's backend-type is "").
pub fn of_attrs(attrs: &LeaseAttrs, prefix: &str) -> BTreeMap<String, String> {
    let data = attrs.backend_data.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "null".into());
    [
        (KUBE_SUBNET_MANAGER, "true".to_string()),
        (BACKEND_TYPE, attrs.backend_type.clone().unwrap_or_default()),
        (BACKEND_DATA, data),
        (PUBLIC_IP, attrs.public_ip.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{prefix}/{k}"), v))
    .collect()
}

/// Whether `node` already carries every annotation of `want`.
pub fn carries(node: &Node, want: &BTreeMap<String, String>) -> bool {
    let have = node.metadata.annotations.as_ref();
    want.iter().all(|(k, v)| have.and_then(|a| a.get(k)) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "flannel.alpha.coreos.com";

    fn node(name: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "annotations": ann.iter().map(|(k, v)| (format!("{P}/{k}"), v.to_string())).collect::<BTreeMap<_, _>>() },
            "spec": { "podCIDR": cidr, "podCIDRs": cidr.map(|c| vec![c]) },
        }))
        .unwrap()
    }

    #[test]
    fn flannels_annotations_are_a_lease() {
        // As flanneld writes them for a vxlan node.
        let n = node(
            "n1",
            Some("10.244.3.0/24"),
            &[
                ("kube-subnet-manager", "true"),
                ("backend-type", "vxlan"),
                ("backend-data", r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6e"}"#),
                ("public-ip", "192.168.1.3"),
            ],
        );
        let (net, attrs) = lease_of(&n, P).unwrap().unwrap();
        assert_eq!(net.to_string(), "10.244.3.0/24");
        assert_eq!(attrs.vxlan_data().unwrap().vtep_mac, [0x0e, 0x2a, 0x3b, 0x4c, 0x5d, 0x6e]);
        // Written back, they are flannel's forms, and read back the same.
        let ann = of_attrs(&attrs, P);
        assert_eq!(ann[&format!("{P}/backend-type")], "vxlan");
        assert!(carries(&n, &ann), "{ann:?}");
        let hg = LeaseAttrs::host_gw("192.168.1.4".parse().unwrap());
        assert_eq!(of_attrs(&hg, P)[&format!("{P}/backend-data")], "null");
        assert_eq!(of_attrs(&LeaseAttrs::udp("192.168.1.5".parse().unwrap()), P)[&format!("{P}/backend-type")], "");
    }

    #[test]
    fn not_peers_and_bad_annotations() {
        assert_eq!(lease_of(&node("plain", Some("10.244.1.0/24"), &[]), P), Ok(None), "no kube-subnet-manager annotation");
        assert_eq!(lease_of(&node("nocidr", None, &[("kube-subnet-manager", "true")]), P), Ok(None), "no podCIDR yet");
        let bad = node("n2", Some("10.244.2.0/24"), &[("kube-subnet-manager", "true"), ("public-ip", "10.0.0.300")]);
        let e = lease_of(&bad, P).unwrap_err();
        assert!(e.contains("n2") && e.contains("public-ip") && e.contains("10.0.0.300"), "{e}");
        let bad = node("n3", Some("10.244.3.0/24"), &[("kube-subnet-manager", "true"), ("public-ip", "10.0.0.3"), ("backend-data", "{junk")]);
        let e = lease_of(&bad, P).unwrap_err();
        assert!(e.contains("n3") && e.contains("backend-data") && e.contains("{junk"), "{e}");
        let e = lease_of(&node("n4", Some("10.244.4.0/33"), &[("kube-subnet-manager", "true")]), P).unwrap_err();
        assert!(e.contains("n4") && e.contains("podCIDR"), "{e}");
    }

    #[test]
    fn dual_stack_takes_the_ipv4_cidr_and_prefixes_are_checked() {
        let mut n = node("ds", None, &[]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd00:10:244:1::/64".into(), "10.244.1.0/24".into()]);
        assert_eq!(pod_cidr(&n).unwrap().unwrap().to_string(), "10.244.1.0/24");
        assert!(check_prefix(P).is_ok());
        assert!(check_prefix("example.com").is_ok());
        for bad in ["", "Flannel.io", "-a.b", "a..b", "a_b.c", "flannel/x"] {
            assert!(check_prefix(bad).unwrap_err().contains("--kube-annotation-prefix"), "{bad}");
        }
    }
}
