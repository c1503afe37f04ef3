//! On a node flanneld ran on, the vxlan backend takes `flannel.<VNI>` over
//! by renaming it to `weft.<VNI>` while it is up (issue 24): the same device
//! (ifindex, VtepMAC), with flanneld's route, neighbour and FDB entry still
//! on it, so peers' traffic never finds no device for the VNI. In a test
//! namespace of its own; needs root.
mod testns;

use std::net::Ipv4Addr;

use testns::{ifindex, Ns};
use weft_agent::{backend::kernel_vxlan, net::netlink::Netlink};

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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dev = rt.block_on(async {
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
    assert_eq!(ifindex("flannel.1"), 0);
    let show = |args: &[&str]| String::from_utf8(std::process::Command::new(args[0]).args(&args[1..]).output().unwrap().stdout).unwrap();
    let route = show(&["ip", "route", "show", "10.244.2.0/24"]);
    assert!(route.contains("via 10.244.2.0 dev weft.1"), "flanneld's route stays on the device: {route}");
    let fdb = show(&["bridge", "fdb", "show", "dev", "weft.1"]);
    assert!(fdb.contains("0e:aa:bb:cc:dd:02 dst 192.168.77.2"), "flanneld's FDB entry stays: {fdb}");
}
