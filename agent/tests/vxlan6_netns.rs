//! The IPv6 overlay end to end in two network namespaces joined by a veth
//! (the IPv6 underlay): each gets `weft.1` (IPv4 vxlan on port 8472, as a
//! dual-stack node has) and `weft-v6.1` made by `net::overlay6`, weft's
//! programs through `Datapath`, maps programmed by hand as the vxlan
//! backend will, and pings between addresses behind the devices. Needs
//! root; the root namespace is never touched; the namespaces are removed
//! on success and on failure.
use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv6Addr},
    os::fd::AsRawFd,
    process::{Command, Output},
};

use aya::programs::TcAttachType;
use weft_agent::{
    dataplane::Datapath,
    net::{neigh, netlink::Netlink, overlay6},
};
use weft_common::{cfg_flags, prog_names, stat, subnet_env::Ipv6Cidr, Datapath6Config, DatapathConfig, Vtep6Entry, VXLAN_PORT};

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Namespaces removed when dropped (also while a failed test unwinds).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// Moves this thread into namespace `name`.
fn enter(name: &str) {
    let f = File::open(format!("/var/run/netns/{name}")).unwrap();
    // SAFETY: a valid namespace fd; affects only the calling thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

struct Node {
    ns: String,
    underlay: &'static str,
    v4: [u8; 4],
    v6: Ipv6Addr,
    mac6: [u8; 6],
    subnet: &'static str,
    addr: &'static str,
}

const VNI: u32 = 1;

/// weft-v6.1 and weft's programs in `n`'s namespace (this thread enters
/// it), peer `p`'s FDB entry and maps: what the vxlan backend will do.
fn program(rt: &tokio::runtime::Runtime, n: &Node, p: &Node, all: &[&Node]) -> Datapath {
    enter(&n.ns);
    let (ul, dev) = rt.block_on(async {
        let nl = Netlink::new().unwrap();
        let ul = nl.link_by_name(n.underlay).await.unwrap().unwrap();
        let name = overlay6::name(VNI);
        let d = overlay6::Vxlan6Dev {
            name: &name,
            vni: VNI,
            port: VXLAN_PORT,
            underlay: ul.index,
            local: n.v6,
            mtu: 1500 - overlay6::VXLAN6_OVERHEAD,
            mac: n.mac6,
            noarp: true,
        };
        let dev = overlay6::ensure_device6(&nl, &d).await.unwrap();
        // Idempotent: a second call adopts the device as it is.
        let again = overlay6::ensure_device6(&nl, &d).await.unwrap();
        assert_eq!((again.index, again.mac), (dev.index, Some(n.mac6)));
        let ch = neigh::add_fdb(&nl, dev.index, &BTreeMap::from([(p.mac6, IpAddr::V6(p.v6))])).await.unwrap();
        assert_eq!((ch.added, ch.errors), (1, 0));
        let fdb = neigh::fdb(&nl, dev.index).await.unwrap();
        assert_eq!(fdb.get(&p.mac6).map(|(ip, _)| *ip), Some(Some(IpAddr::V6(p.v6))), "FDB entry for the peer's VtepMAC");
        (ul, dev)
    });
    let weft4 = rt.block_on(async { Netlink::new().unwrap().link_by_name("weft.1").await.unwrap().unwrap() });
    let mut dp = Datapath::load(None).expect("load the eBPF object (are we root?)");
    dp.set_config(&DatapathConfig {
        vni: VNI,
        local_ip: n.v4,
        underlay_ifindex: ul.index,
        overlay_ifindex: weft4.index,
        vtep_mac: [0x02, 0, 0, 0, 0, n.v4[3]],
        port: VXLAN_PORT,
        flags: cfg_flags::KERNEL_VXLAN,
        underlay_mtu: 1500,
    })
    .unwrap();
    dp.set_config6(&Datapath6Config { local_ip: n.v6.octets(), overlay_ifindex: dev.index, vtep_mac: dev.mac.unwrap(), _pad: [0; 2] }).unwrap();
    for x in all {
        dp.add_vtep_ip6(x.v6).unwrap();
        dp.set_vtep6(&Ipv6Cidr::parse(x.subnet).unwrap(), &Vtep6Entry { ip: x.v6.octets(), mac: x.mac6, _pad: [0; 2] }).unwrap();
    }
    dp.attach_tc(prog_names::DECAP, n.underlay, ul.index, TcAttachType::Ingress).unwrap();
    dp.attach_v6(&dev.name, dev.index).unwrap();
    ok(&["ip", "-n", &n.ns, "addr", "add", n.addr, "dev", &dev.name, "nodad"]);
    ok(&["ip", "-n", &n.ns, "-6", "route", "add", p.subnet, "dev", &dev.name]);
    dp
}

fn ping(ns: &str, extra: &[&str], dst: &str) -> bool {
    let mut a = vec!["ip", "netns", "exec", ns, "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2"];
    a.extend(extra);
    a.push(dst);
    run(&a).status.success()
}

fn c(dp: &Datapath, i: u32) -> u64 {
    dp.stats().unwrap()[i as usize].packets
}

#[test]
fn ipv6_vxlan_between_two_namespaces() {
    let p = format!("w6e{}", std::process::id() % 100_000);
    let a = Node {
        ns: format!("{p}a"),
        underlay: "u0",
        v4: [192, 168, 78, 1],
        v6: "fd00:78::1".parse().unwrap(),
        mac6: [0x02, 0xa6, 0, 0, 0, 1],
        subnet: "fd10:0:0:1::/64",
        addr: "fd10:0:0:1::1/128",
    };
    let b = Node {
        ns: format!("{p}b"),
        underlay: "u1",
        v4: [192, 168, 78, 2],
        v6: "fd00:78::2".parse().unwrap(),
        mac6: [0x02, 0xb6, 0, 0, 0, 2],
        subnet: "fd10:0:0:2::/64",
        addr: "fd10:0:0:2::1/128",
    };
    let _cleanup = Namespaces(vec![a.ns.clone(), b.ns.clone()]);
    for n in [&a, &b] {
        ok(&["ip", "netns", "add", &n.ns]);
        ok(&["ip", "-n", &n.ns, "link", "set", "lo", "up"]);
    }
    ok(&["ip", "-n", &a.ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns", &b.ns]);
    for n in [&a, &b] {
        let v4 = format!("{}.{}.{}.{}/24", n.v4[0], n.v4[1], n.v4[2], n.v4[3]);
        ok(&["ip", "-n", &n.ns, "addr", "add", &v4, "dev", n.underlay]);
        ok(&["ip", "-n", &n.ns, "addr", "add", &format!("{}/64", n.v6), "dev", n.underlay, "nodad"]);
        ok(&["ip", "-n", &n.ns, "link", "set", n.underlay, "up"]);
        // A dual-stack node's IPv4 overlay, holding the IPv4 socket on 8472.
        let local = v4.trim_end_matches("/24");
        ok(&["ip", "-n", &n.ns, "link", "add", "weft.1", "type", "vxlan", "id", "1", "dstport", "8472", "local", local, "dev", n.underlay, "nolearning"]);
        ok(&["ip", "-n", &n.ns, "link", "set", "weft.1", "up"]);
    }

    // In a thread of its own: setns moves only that thread.
    let r = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let da = program(&rt, &a, &b, &[&a, &b]);
        let db = program(&rt, &b, &a, &[&a, &b]);

        // The MTU-sized ping too: 1430-byte overlay MTU, 1382 + 48 = 1430.
        assert!(ping(&a.ns, &[], "fd10:0:0:2::1"), "ping A -> B over weft-v6.1");
        assert!(ping(&a.ns, &["-s", "1382", "-M", "do"], "fd10:0:0:2::1"), "MTU-sized ping A -> B");
        // 6 requests out of A, 6 replies out of B, each validated on the
        // underlay (marked), decapsulated by the kernel (its UDP checksum
        // checked: a zero one would not pass), admitted by weft_overlay_in6.
        for (who, dp) in [("A", &da), ("B", &db)] {
            assert!(c(dp, stat::ENCAP) >= 6, "{who}: encap {}", c(dp, stat::ENCAP));
            assert!(c(dp, stat::DECAP_KERNEL) >= 6, "{who}: decap_kernel {}", c(dp, stat::DECAP_KERNEL));
            assert!(c(dp, stat::DECAP) >= 6, "{who}: decap {}", c(dp, stat::DECAP));
            for bad in [stat::DROP_SPOOFED, stat::DROP_UNKNOWN_VTEP, stat::DROP_WRONG_VNI, stat::DROP_UNVALIDATED, stat::DROP_MALFORMED] {
                assert_eq!(c(dp, bad), 0, "{who}: {}", stat::NAMES[bad as usize]);
            }
        }

        // A source outside A's own subnet: B drops it at the underlay.
        ok(&["ip", "-n", &a.ns, "addr", "add", "fd10:0:0:9::1/128", "dev", "weft-v6.1", "nodad"]);
        let decap_before = c(&db, stat::DECAP);
        assert!(!ping(&a.ns, &["-I", "fd10:0:0:9::1"], "fd10:0:0:2::1"), "a spoofed source must not get through");
        assert_eq!(c(&db, stat::DROP_SPOOFED), 3, "B counts every spoofed packet");
        // A source inside B's own subnet, sent by A: the same.
        ok(&["ip", "-n", &a.ns, "addr", "add", "fd10:0:0:2::99/128", "dev", "weft-v6.1", "nodad"]);
        assert!(!ping(&a.ns, &["-I", "fd10:0:0:2::99"], "fd10:0:0:2::1"), "a source in another peer's subnet must not get through");
        assert_eq!(c(&db, stat::DROP_SPOOFED), 6, "B counts every spoofed packet");
        assert_eq!(c(&db, stat::DECAP), decap_before, "nothing spoofed reached B's stack");
        // (Gone again, or A would choose them as sources for B's subnet.)
        for spoof in ["fd10:0:0:9::1/128", "fd10:0:0:2::99/128"] {
            ok(&["ip", "-n", &a.ns, "addr", "del", spoof, "dev", "weft-v6.1"]);
        }

        // A peer B does not know: its VTEP address leaves weft_vtep_ips6.
        let mut db = db;
        db.remove_vtep_ip6(a.v6).unwrap();
        assert!(!ping(&a.ns, &[], "fd10:0:0:2::1"), "an unknown VTEP must not get through");
        assert_eq!(c(&db, stat::DROP_UNKNOWN_VTEP), 3);
        db.add_vtep_ip6(a.v6).unwrap();
        assert!(ping(&a.ns, &[], "fd10:0:0:2::1"), "back once B knows A again");
    })
    .join();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}
