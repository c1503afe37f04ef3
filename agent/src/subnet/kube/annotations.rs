//! flannel's Node annotations, read and written as flannel's kube subnet
//! manager does (pkg/subnet/kube): `<prefix>/kube-subnet-manager`,
//! `backend-type`, `backend-data`, `public-ip`, and the read-only
//! `public-ip-overwrite`; in dual stack also `public-ipv6`, `backend-v6-data`
//! and the read-only `public-ipv6-overwrite`. A Node's podCIDRs and these
//! annotations are its lease; [`lease_of`] turns them into flannel's lease
//! key (`10.244.5.0-24`, or `10.244.5.0-24&fd44:0:0:5::-64` for a Node with
//! an IPv6 podCIDR and `public-ipv6`) and value, so the backends reconcile
//! Node-based peers exactly as etcd leases.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use k8s_openapi::api::core::v1::Node;

use crate::subnet::{lease::LeaseAttrs, Ipv4Net, Ipv6Net, Subnets};

pub const KUBE_SUBNET_MANAGER: &str = "kube-subnet-manager";
pub const BACKEND_TYPE: &str = "backend-type";
pub const BACKEND_DATA: &str = "backend-data";
pub const PUBLIC_IP: &str = "public-ip";
pub const PUBLIC_IP_OVERWRITE: &str = "public-ip-overwrite";
pub const PUBLIC_IPV6: &str = "public-ipv6";
pub const BACKEND_V6_DATA: &str = "backend-v6-data";
pub const PUBLIC_IPV6_OVERWRITE: &str = "public-ipv6-overwrite";
/// Every annotation weftd writes (what `release` removes).
pub const WRITTEN: [&str; 6] = [KUBE_SUBNET_MANAGER, BACKEND_TYPE, BACKEND_DATA, PUBLIC_IP, PUBLIC_IPV6, BACKEND_V6_DATA];

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

/// The Node's IPv6 podCIDR: the first IPv6 entry of spec.podCIDRs, else
/// spec.podCIDR if it is IPv6. Ok(None): none assigned (an IPv4-only Node).
pub fn pod_cidr6(node: &Node) -> Result<Option<Ipv6Net>, String> {
    let spec = node.spec.as_ref();
    let all: Vec<&String> = spec.and_then(|s| s.pod_cidrs.as_ref()).map(|v| v.iter().collect()).unwrap_or_default();
    let first = all.iter().find(|c| c.contains(':')).copied().or_else(|| spec.and_then(|s| s.pod_cidr.as_ref()).filter(|c| c.contains(':')));
    match first {
        None => Ok(None),
        // As Go's net.ParseCIDR: the network of the prefix.
        Some(c) => c.parse::<Ipv6Net>().map(|n| Some(n.trunc())).map_err(|e| format!("node {}: spec.podCIDRs {c:?} is not an IPv6 subnet: {e:#}", name(node))),
    }
}

/// A JSON-object annotation (backend-data, backend-v6-data): absent, empty
/// or `null` is None.
fn json_object(node: &Node, prefix: &str, key: &str) -> Result<Option<serde_json::Value>, String> {
    match get(node, prefix, key) {
        None | Some("") | Some("null") => Ok(None),
        Some(d) => serde_json::from_str::<serde_json::Value>(d)
            .ok()
            .filter(|v| v.is_object())
            .map(Some)
            .ok_or_else(|| format!("node {}: annotation {prefix}/{key} = {d:?} is not a JSON object", name(node))),
    }
}

/// An IPv6-address annotation (public-ipv6, public-ipv6-overwrite): absent
/// or empty is None.
pub fn ipv6_annotation(node: &Node, prefix: &str, key: &str) -> Result<Option<Ipv6Addr>, String> {
    match get(node, prefix, key) {
        None | Some("") => Ok(None),
        Some(a) => a.parse().map(Some).map_err(|_| format!("node {}: annotation {prefix}/{key} = {a:?} is not an IPv6 address", name(node))),
    }
}

/// The annotation `<prefix>/<key>`.
pub fn get<'a>(node: &'a Node, prefix: &str, key: &str) -> Option<&'a str> {
    node.metadata.annotations.as_ref()?.get(&format!("{prefix}/{key}")).map(String::as_str)
}

/// The Node's lease, from its podCIDRs and annotations. Ok(None): not a
/// peer (no `kube-subnet-manager: "true"`, or no IPv4 podCIDR yet). Its
/// IPv6 part: the Node's IPv6 podCIDR, when it has one and `public-ipv6`
/// (a dual-stack flannel node); without either it is an IPv4 lease. Err
/// names the node, the field and the value. On an IPv6-only network
/// (`ipv6_only`) only the IPv6 podCIDR, `public-ipv6` and
/// `backend-v6-data` count, as flanneld reads them then.
pub fn lease_of(node: &Node, prefix: &str, ipv6_only: bool) -> Result<Option<(Subnets, LeaseAttrs)>, String> {
    if get(node, prefix, KUBE_SUBNET_MANAGER) != Some("true") {
        return Ok(None);
    }
    if ipv6_only {
        return ipv6_only_lease_of(node, prefix);
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
    let backend_data = json_object(node, prefix, BACKEND_DATA)?;
    let mut attrs = LeaseAttrs { public_ip, public_ipv6: None, backend_type, backend_data, backend_v6_data: None };
    let public_ipv6 = ipv6_annotation(node, prefix, PUBLIC_IPV6)?;
    let backend_v6_data = json_object(node, prefix, BACKEND_V6_DATA)?;
    let v6 = match public_ipv6 {
        Some(_) => pod_cidr6(node)?,
        None => None,
    };
    if v6.is_some() {
        attrs.public_ipv6 = public_ipv6;
        attrs.backend_v6_data = backend_v6_data;
    }
    Ok(Some((Subnets { v4: Some(subnet), v6 }, attrs)))
}

/// [`lease_of`] on an IPv6-only network: PublicIP 0.0.0.0, no BackendData.
fn ipv6_only_lease_of(node: &Node, prefix: &str) -> Result<Option<(Subnets, LeaseAttrs)>, String> {
    let Some(subnet6) = pod_cidr6(node)? else { return Ok(None) };
    let n = name(node);
    let public_ipv6 = ipv6_annotation(node, prefix, PUBLIC_IPV6)?.ok_or_else(|| format!("node {n}: annotation {prefix}/{PUBLIC_IPV6} is missing"))?;
    let backend_type = match get(node, prefix, BACKEND_TYPE) {
        None | Some("") => None,
        Some(t) => Some(t.to_string()),
    };
    let attrs = LeaseAttrs {
        public_ip: Ipv4Addr::UNSPECIFIED,
        public_ipv6: Some(public_ipv6),
        backend_type,
        backend_data: None,
        backend_v6_data: json_object(node, prefix, BACKEND_V6_DATA)?,
    };
    Ok(Some((Subnets { v4: None, v6: Some(subnet6) }, attrs)))
}

/// The annotations our lease attributes make (flannel's exact forms:
/// backend-data is the JSON text, or `null`; udp's backend-type is "").
/// With a PublicIPv6 (dual stack, IPv6-only) also `public-ipv6` (the address) and
/// `backend-v6-data` (the JSON text, or `null` as flanneld's host-gw writes).
pub fn of_attrs(attrs: &LeaseAttrs, prefix: &str) -> BTreeMap<String, String> {
    let text = |d: &Option<serde_json::Value>| d.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "null".into());
    let mut v = vec![(KUBE_SUBNET_MANAGER, "true".to_string()), (BACKEND_TYPE, attrs.backend_type.clone().unwrap_or_default())];
    // flanneld leaves out an IPv6-only vxlan node's IPv4 pair (its
    // BackendData is null); other backends write it, PublicIP 0.0.0.0.
    if attrs.backend_type.as_deref() != Some("vxlan") || attrs.backend_data.is_some() {
        v.push((BACKEND_DATA, text(&attrs.backend_data)));
        v.push((PUBLIC_IP, attrs.public_ip.to_string()));
    }
    if let Some(a) = attrs.public_ipv6 {
        v.push((PUBLIC_IPV6, a.to_string()));
        v.push((BACKEND_V6_DATA, text(&attrs.backend_v6_data)));
    }
    v.into_iter().map(|(k, v)| (format!("{prefix}/{k}"), v)).collect()
}

/// The strategic-merge patch of `metadata.annotations` that makes `node`
/// carry our lease `attrs`: every annotation of [`of_attrs`], and null for
/// IPv6 ones we no longer announce (a node that left dual stack, whose old
/// `public-ipv6` would otherwise make its lease dual-stack again). None:
/// nothing to change.
pub fn patch_for(node: &Node, attrs: &LeaseAttrs, prefix: &str) -> Option<serde_json::Value> {
    let want = of_attrs(attrs, prefix);
    let have = node.metadata.annotations.as_ref();
    let stale: Vec<String> = [PUBLIC_IPV6, BACKEND_V6_DATA]
        .iter()
        .map(|k| format!("{prefix}/{k}"))
        .filter(|k| !want.contains_key(k) && have.is_some_and(|a| a.contains_key(k)))
        .collect();
    if carries(node, &want) && stale.is_empty() {
        return None;
    }
    let mut m: serde_json::Map<String, serde_json::Value> = want.into_iter().map(|(k, v)| (k, v.into())).collect();
    m.extend(stale.into_iter().map(|k| (k, serde_json::Value::Null)));
    Some(serde_json::Value::Object(m))
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
        let (net, attrs) = lease_of(&n, P, false).unwrap().unwrap();
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
        assert_eq!(lease_of(&node("plain", Some("10.244.1.0/24"), &[]), P, false), Ok(None), "no kube-subnet-manager annotation");
        assert_eq!(lease_of(&node("nocidr", None, &[("kube-subnet-manager", "true")]), P, false), Ok(None), "no podCIDR yet");
        let bad = node("n2", Some("10.244.2.0/24"), &[("kube-subnet-manager", "true"), ("public-ip", "10.0.0.300")]);
        let e = lease_of(&bad, P, false).unwrap_err();
        assert!(e.contains("n2") && e.contains("public-ip") && e.contains("10.0.0.300"), "{e}");
        let bad = node("n3", Some("10.244.3.0/24"), &[("kube-subnet-manager", "true"), ("public-ip", "10.0.0.3"), ("backend-data", "{junk")]);
        let e = lease_of(&bad, P, false).unwrap_err();
        assert!(e.contains("n3") && e.contains("backend-data") && e.contains("{junk"), "{e}");
        let e = lease_of(&node("n4", Some("10.244.4.0/33"), &[("kube-subnet-manager", "true")]), P, false).unwrap_err();
        assert!(e.contains("n4") && e.contains("podCIDR"), "{e}");
    }

    /// A Node as flanneld v0.2x leaves it in dual stack (vxlan): both
    /// podCIDRs, and public-ipv6 / backend-v6-data beside the IPv4 ones.
    fn flannel_dual_stack_node(name: &str, extra: &[(&str, &str)]) -> Node {
        let mut ann = vec![
            ("kube-subnet-manager", "true"),
            ("backend-type", "vxlan"),
            ("backend-data", r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6e"}"#),
            ("public-ip", "192.168.77.3"),
            ("backend-v6-data", r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6f"}"#),
            ("public-ipv6", "fd77::3"),
        ];
        for (k, v) in extra {
            ann.retain(|(a, _)| a != k);
            ann.push((k, v));
        }
        let mut n = node(name, Some("10.244.3.0/24"), &ann);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.3.0/24".into(), "fd44:0:0:3::/64".into()]);
        n
    }

    #[test]
    fn flannels_dual_stack_annotations_are_a_dual_stack_lease() {
        let n = flannel_dual_stack_node("ds3", &[]);
        let (subnets, attrs) = lease_of(&n, P, false).unwrap().unwrap();
        assert_eq!(subnets.to_key(), "10.244.3.0-24&fd44:0:0:3::-64");
        assert_eq!(attrs.public_ipv6, Some("fd77::3".parse().unwrap()));
        assert_eq!(attrs.vxlan_data().unwrap().vtep_mac, [0x0e, 0x2a, 0x3b, 0x4c, 0x5d, 0x6e]);
        assert_eq!(attrs.vxlan_v6_data().unwrap().vtep_mac, [0x0e, 0x2a, 0x3b, 0x4c, 0x5d, 0x6f]);
        // Written back: flannel's forms (the address; the JSON text), read back the same.
        let ann = of_attrs(&attrs, P);
        assert_eq!(ann[&format!("{P}/public-ipv6")], "fd77::3");
        assert_eq!(ann[&format!("{P}/backend-v6-data")], r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6f"}"#);
        assert_eq!(ann.len(), 6, "{ann:?}");
        assert!(carries(&n, &ann), "{ann:?}");
        assert_eq!(patch_for(&n, &attrs, P), None, "nothing to change on a Node that carries our lease");
        // flanneld's dual-stack host-gw: backend-v6-data is null.
        let hg = LeaseAttrs::host_gw("192.168.77.4".parse().unwrap()).with_ipv6("fd77::4".parse().unwrap(), None);
        let ann = of_attrs(&hg, P);
        assert_eq!((ann[&format!("{P}/public-ipv6")].as_str(), ann[&format!("{P}/backend-v6-data")].as_str()), ("fd77::4", "null"));
        let mut n =
            flannel_dual_stack_node("hg4", &[("backend-type", "host-gw"), ("backend-data", "null"), ("backend-v6-data", "null"), ("public-ipv6", "fd77::4")]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd44:0:0:4::/64".into(), "10.244.4.0/24".into()]);
        n.spec.as_mut().unwrap().pod_cidr = Some("fd44:0:0:4::/64".into());
        let (subnets, attrs) = lease_of(&n, P, false).unwrap().unwrap();
        assert_eq!(subnets.to_key(), "10.244.4.0-24&fd44:0:0:4::-64", "podCIDRs in either order");
        assert_eq!((attrs.public_ipv6, attrs.backend_v6_data), (Some("fd77::4".parse().unwrap()), None));
    }

    #[test]
    fn ipv4_only_nodes_stay_ipv4_leases() {
        // An IPv4 flannel on a dual-stack cluster: both podCIDRs, no IPv6 annotations.
        let n = node("v4", Some("10.244.5.0/24"), &[("kube-subnet-manager", "true"), ("public-ip", "192.168.77.5"), ("backend-type", "host-gw")]);
        let mut n2 = n.clone();
        n2.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.5.0/24".into(), "fd44:0:0:5::/64".into()]);
        for n in [n, n2] {
            let (subnets, attrs) = lease_of(&n, P, false).unwrap().unwrap();
            assert_eq!((subnets.to_key().as_str(), attrs.public_ipv6, attrs.backend_v6_data.clone()), ("10.244.5.0-24", None, None));
            assert_eq!(of_attrs(&attrs, P).len(), 4, "no IPv6 annotations for an IPv4 lease");
        }
        // public-ipv6 but no IPv6 podCIDR: still an IPv4 lease.
        let mut n = flannel_dual_stack_node("nov6", &[]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.3.0/24".into()]);
        let (subnets, attrs) = lease_of(&n, P, false).unwrap().unwrap();
        assert_eq!((subnets.to_key().as_str(), attrs.public_ipv6), ("10.244.3.0-24", None));
        // A node that left dual stack: its old IPv6 annotations are removed.
        let dual = flannel_dual_stack_node("left", &[]);
        let (_, a) = lease_of(&dual, P, false).unwrap().unwrap();
        let v4 = LeaseAttrs { public_ipv6: None, backend_v6_data: None, ..a };
        let patch = patch_for(&dual, &v4, P).expect("stale IPv6 annotations to remove");
        assert_eq!(patch[format!("{P}/public-ipv6")], serde_json::Value::Null, "{patch}");
        assert_eq!(patch[format!("{P}/backend-v6-data")], serde_json::Value::Null, "{patch}");
        assert_eq!(patch[format!("{P}/public-ip")], "192.168.77.3", "{patch}");
    }

    #[test]
    fn bad_ipv6_annotations_name_node_field_and_value() {
        for (k, v, what) in [
            ("public-ipv6", "fd77::zz", "IPv6 address"),
            ("public-ipv6", "192.168.77.3", "IPv6 address"),
            ("backend-v6-data", "{junk", "JSON object"),
            ("backend-v6-data", "[1]", "JSON object"),
        ] {
            let e = lease_of(&flannel_dual_stack_node("bad6", &[(k, v)]), P, false).unwrap_err();
            assert!(e.contains("bad6") && e.contains(&format!("{P}/{k}")) && e.contains(v) && e.contains(what), "{k}={v}: {e}");
        }
        let mut n = flannel_dual_stack_node("badcidr", &[]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.3.0/24".into(), "fd44:0:0:3::/129".into()]);
        let e = lease_of(&n, P, false).unwrap_err();
        assert!(e.contains("badcidr") && e.contains("podCIDRs") && e.contains("fd44:0:0:3::/129"), "{e}");
        let e = ipv6_annotation(&flannel_dual_stack_node("ow", &[("public-ipv6-overwrite", "nope")]), P, PUBLIC_IPV6_OVERWRITE).unwrap_err();
        assert!(e.contains("ow") && e.contains("public-ipv6-overwrite") && e.contains("nope"), "{e}");
        assert_eq!(
            ipv6_annotation(&flannel_dual_stack_node("ow", &[("public-ipv6-overwrite", "fd77::99")]), P, PUBLIC_IPV6_OVERWRITE),
            Ok(Some("fd77::99".parse().unwrap()))
        );
        // The IPv6 podCIDR as Go's net.ParseCIDR takes it: its network.
        let mut n = flannel_dual_stack_node("host", &[]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.3.0/24".into(), "fd44:0:0:3::1/64".into()]);
        assert_eq!(pod_cidr6(&n).unwrap().unwrap().to_string(), "fd44:0:0:3::/64");
    }

    #[test]
    fn ipv6_only_nodes_as_flanneld_annotates_them() {
        // An IPv6-only vxlan node as flanneld leaves it: no public-ip, no backend-data.
        let ann = [
            ("kube-subnet-manager", "true"),
            ("backend-type", "vxlan"),
            ("backend-v6-data", r#"{"VNI":1,"VtepMAC":"0e:2a:3b:4c:5d:6f"}"#),
            ("public-ipv6", "fd77::3"),
        ];
        let n = node("v6", Some("fd44:0:0:3::/64"), &ann);
        let (subnets, attrs) = lease_of(&n, P, true).unwrap().unwrap();
        assert_eq!(subnets.to_key(), "0.0.0.0-0&fd44:0:0:3::-64");
        assert_eq!((attrs.public_ip, attrs.public_ipv6), (Ipv4Addr::UNSPECIFIED, Some("fd77::3".parse().unwrap())));
        assert_eq!(attrs.vxlan_v6_data().unwrap().vtep_mac, [0x0e, 0x2a, 0x3b, 0x4c, 0x5d, 0x6f]);
        // Written back: the same four annotations, none for IPv4.
        let mut want: Vec<(String, String)> = ann.iter().map(|(k, v)| (format!("{P}/{k}"), v.to_string())).collect();
        want.sort();
        assert_eq!(of_attrs(&attrs, P).into_iter().collect::<Vec<_>>(), want);
        assert!(patch_for(&n, &attrs, P).is_none(), "the node carries them already");
        // host-gw writes its IPv4 pair as flanneld: null and 0.0.0.0.
        let hg = LeaseAttrs::ipv6_only("host-gw", "fd77::4".parse().unwrap(), None);
        let a = of_attrs(&hg, P);
        assert_eq!((a[&format!("{P}/backend-data")].as_str(), a[&format!("{P}/public-ip")].as_str()), ("null", "0.0.0.0"));
        // No IPv6 podCIDR yet: no lease; no public-ipv6: an error naming it.
        assert_eq!(lease_of(&node("early", None, &ann), P, true), Ok(None));
        let e = lease_of(&node("nopip", Some("fd44:0:0:5::/64"), &ann[..3]), P, true).unwrap_err();
        assert!(e.contains("nopip") && e.contains("public-ipv6"), "{e}");
    }

    #[test]
    fn dual_stack_takes_the_ipv4_cidr_and_prefixes_are_checked() {
        let mut n = node("ds", None, &[]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd00:10:244:1::/64".into(), "10.244.1.0/24".into()]);
        assert_eq!(pod_cidr(&n).unwrap().unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(pod_cidr6(&n).unwrap().unwrap().to_string(), "fd00:10:244:1::/64");
        assert_eq!(pod_cidr6(&node("v4", Some("10.244.1.0/24"), &[])), Ok(None));
        assert!(check_prefix(P).is_ok());
        assert!(check_prefix("example.com").is_ok());
        for bad in ["", "Flannel.io", "-a.b", "a..b", "a_b.c", "flannel/x"] {
            assert!(check_prefix(bad).unwrap_err().contains("--kube-annotation-prefix"), "{bad}");
        }
    }
}
