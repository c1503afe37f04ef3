//! On a node flanneld ran on, the vxlan backend takes `flannel.<VNI>` over
//! by renaming it to `weft.<VNI>` while it is up (issue 24): the same device
//! (ifindex, VtepMAC), with flanneld's route, neighbour and FDB entry still
//! on it, so peers' traffic never finds no device for the VNI. In a test
//! namespace of its own; needs root.
mod testns;

use std::net::Ipv4Addr;

use testns::{ifindex, Ns};
use weft_agent::{
    backend::kernel_vxlan,
    net::{netlink::Netlink, overlay6},
};

/// The altnames in `ip -j link show dev <dev>`'s answer.
fn altnames(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v[0]["altnames"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect()
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn flannel_device_is_taken_over_in_place() {
    let ns = Ns::new("tk", "v4");
    ns.ip("link add eth0 type veth peer name eth1");
    ns.ip("addr add 192.168.77.1/24 dev eth0");
    ns.ip("link set eth0 up");
    // flannel.1 as flanneld leaves it, with one peer.
    ns.ip("link add flannel.1 address 0e:11:22:33:44:55 type vxlan id 1 dstport 8472 dev eth0 local 192.168.77.1 nolearning");
    ns.ip("link set flannel.1 up");
    ns.ip("neigh replace 10.244.2.0 lladdr 0e:aa:bb:cc:dd:02 dev flannel.1 nud permanent");
    ns.sh(&["bridge", "-n", &ns.0, "fdb", "append", "0e:aa:bb:cc:dd:02", "dev", "flannel.1", "dst", "192.168.77.2", "self", "permanent"]);
    ns.ip("route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink");
    ns.enter();
    let before = ifindex("flannel.1");
    assert_ne!(before, 0);
    let dev = run(async {
        let nl = Netlink::new().unwrap();
        let d = kernel_vxlan::VxlanDev {
            name: "weft.1",
            vni: 1,
            port: 8472,
            underlay: ifindex("eth0"),
            local: Ipv4Addr::new(192, 168, 77, 1),
            mtu: 1450,
            mac: [0x02, 0, 0, 0, 0, 0x99],
        };
        kernel_vxlan::ensure_device(&nl, &d).await.unwrap()
    });
    assert_eq!((dev.name.as_str(), dev.index), ("weft.1", before), "flannel.1 itself, renamed");
    assert_eq!(dev.mac, Some([0x0e, 0x11, 0x22, 0x33, 0x44, 0x55]), "flanneld's VtepMAC kept");
    let show = |args: &[&str]| String::from_utf8(std::process::Command::new(args[0]).args(&args[1..]).output().unwrap().stdout).unwrap();
    // Renamed, and answering to flanneld's name as an altname: what
    // flanneld's LinkByName asks the kernel finds it, and a new flannel.1
    // cannot be made beside it (flanneld's LinkAdd -> EEXIST -> reuse).
    assert_eq!(ifindex("flannel.1"), before, "weft.1 answers to flannel.1");
    assert!(altnames(&show(&["ip", "-j", "link", "show", "dev", "weft.1"])).contains(&"flannel.1".to_string()));
    let again = std::process::Command::new("ip")
        .args(["link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "dev", "eth0", "local", "192.168.77.1", "nolearning"])
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"), "flanneld's LinkAdd must meet EEXIST: {again:?}");
    let route = show(&["ip", "route", "show", "10.244.2.0/24"]);
    assert!(route.contains("via 10.244.2.0 dev weft.1"), "flanneld's route stays on the device: {route}");
    let fdb = show(&["bridge", "fdb", "show", "dev", "weft.1"]);
    assert!(fdb.contains("0e:aa:bb:cc:dd:02 dst 192.168.77.2"), "flanneld's FDB entry stays: {fdb}");
}

/// A device weft makes itself answers to flannel's name too, also on a
/// second start (the altname it has already is no error).
#[test]
fn a_new_weft_device_answers_to_flannels_name() {
    let ns = Ns::new("tk", "new");
    ns.ip("link add eth0 type veth peer name eth1");
    ns.ip("addr add 192.168.78.1/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.enter();
    let d = kernel_vxlan::VxlanDev {
        name: "weft.1",
        vni: 1,
        port: 8472,
        underlay: ifindex("eth0"),
        local: Ipv4Addr::new(192, 168, 78, 1),
        mtu: 1450,
        mac: [0x02, 0, 0, 0, 0, 0x98],
    };
    let (first, second) = run(async {
        let nl = Netlink::new().unwrap();
        (kernel_vxlan::ensure_device(&nl, &d).await.unwrap(), kernel_vxlan::ensure_device(&nl, &d).await.unwrap())
    });
    assert_eq!(first.index, second.index);
    assert_eq!(ifindex("flannel.1"), first.index, "weft.1 answers to flannel.1");
}

/// flannel-v6.<VNI> is taken over as flannel.<VNI> is: renamed to
/// weft-v6.<VNI> while up, its MAC, FDB entry, neighbour and route kept
/// (also when weft turns ARP off), answering to flanneld's name.
#[test]
fn flannel_v6_device_is_taken_over_in_place() {
    let ns = Ns::new("tk", "v6");
    ns.ip("link add eth0 type veth peer name eth1");
    ns.sysctl("net.ipv6.conf.all.accept_dad=0");
    ns.sysctl("net.ipv6.conf.default.accept_dad=0");
    ns.ip("-6 addr add fd00:77::1/64 dev eth0 nodad");
    ns.ip("link set eth0 up");
    ns.ip("link add flannel-v6.1 address 0e:11:22:33:44:66 type vxlan id 1 dstport 8472 dev eth0 local fd00:77::1 nolearning");
    ns.ip("link set flannel-v6.1 up");
    ns.ip("-6 neigh replace fd00:244:2:: lladdr 0e:aa:bb:cc:dd:06 dev flannel-v6.1 nud permanent");
    ns.sh(&["bridge", "-n", &ns.0, "fdb", "append", "0e:aa:bb:cc:dd:06", "dev", "flannel-v6.1", "dst", "fd00:77::2", "self", "permanent"]);
    ns.ip("-6 route add fd00:244:2::/64 via fd00:244:2:: dev flannel-v6.1 onlink");
    ns.enter();
    let before = ifindex("flannel-v6.1");
    assert_ne!(before, 0);
    let name = overlay6::name(1);
    let d = overlay6::Vxlan6Dev {
        name: &name,
        vni: 1,
        port: 8472,
        underlay: ifindex("eth0"),
        local: "fd00:77::1".parse().unwrap(),
        mtu: 1430,
        mac: [0x02, 0, 0, 0, 0, 0x97],
        noarp: true,
    };
    let dev = run(async { overlay6::ensure_device6(&Netlink::new().unwrap(), &d).await.unwrap() });
    assert_eq!((dev.name.as_str(), dev.index), ("weft-v6.1", before), "flannel-v6.1 itself, renamed");
    assert_eq!(dev.mac, Some([0x0e, 0x11, 0x22, 0x33, 0x44, 0x66]), "flanneld's v6 VtepMAC kept");
    assert_eq!(ifindex("flannel-v6.1"), before, "weft-v6.1 answers to flannel-v6.1");
    let show = |args: &[&str]| String::from_utf8(std::process::Command::new(args[0]).args(&args[1..]).output().unwrap().stdout).unwrap();
    let route = show(&["ip", "-6", "route", "show", "fd00:244:2::/64"]);
    assert!(route.contains("via fd00:244:2:: dev weft-v6.1"), "flanneld's route stays on the device: {route}");
    let neigh = show(&["ip", "-6", "neigh", "show", "dev", "weft-v6.1"]);
    assert!(neigh.contains("fd00:244:2:: lladdr 0e:aa:bb:cc:dd:06 PERMANENT"), "flanneld's neighbour kept through NOARP: {neigh}");
    let fdb = show(&["bridge", "fdb", "show", "dev", "weft-v6.1"]);
    assert!(fdb.contains("0e:aa:bb:cc:dd:06 dst fd00:77::2"), "flanneld's FDB entry stays: {fdb}");
}
