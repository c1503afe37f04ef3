//! The address store, in host-local's on-disk format so that the two can
//! share a directory: `<dataDir>/<network name>/` holds one file per
//! allocated address, named by the address (IPv4 or IPv6, as Go's
//! `net.IP.String()` writes it) and created with `O_CREAT|O_EXCL`, holding
//! `<containerID>\r\n<ifname>` (host-local's line break; a bare `\n` and
//! host-local's old ID-only files are read too), plus one
//! `last_reserved_ip.<N>` per range (where the next search starts:
//! host-local's range indexes for the ranges flannel's CNI plugin gives it,
//! `[[v4], [v6]]` with only those the node has: `.0` the IPv4 range and `.1`
//! the IPv6 range of a dual-stack node, `.0` the IPv6 range of an IPv6-only
//! node) and `lock`, which every operation holds with `flock(LOCK_EX)`, as
//! host-local does.
//!
//! IPv4 addresses come from the node's subnet (none on an IPv6-only node,
//! whose subnet.env has no FLANNEL_SUBNET) minus the network address, the
//! gateway (.1) and the broadcast address; IPv6 ones from FLANNEL_IPV6_SUBNET
//! minus the network address and the gateway (`::1`), up to its last address
//! (host-local's default range for each family). Files live on disk, so
//! allocations survive restarts of anything; the lock plus `O_EXCL` keep
//! concurrent ADDs from ever handing out one address twice.
use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::{
    error::{code, CniError, Result},
    subnet_env::SubnetEnv,
};

pub const LINE_BREAK: &str = "\r\n";
/// `last_reserved_ip.<N>` of the first range (IPv4; IPv6 on an IPv6-only node).
pub const LAST_RESERVED: &str = "last_reserved_ip.0";
/// Of the second range: IPv6 on a dual-stack node.
pub const LAST_RESERVED_V6: &str = "last_reserved_ip.1";
pub const LOCK: &str = "lock";

/// An address as a number, and back in the same family.
fn num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

/// The addresses pods may get from one subnet: `first..=last` minus the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The subnet's network address and prefix length (for messages).
    pub subnet: IpAddr,
    pub prefix_len: u8,
    pub first: IpAddr,
    pub last: IpAddr,
    pub gateway: IpAddr,
    /// host-local's range index: the range's place in flannel's `ranges`
    /// (IPv4 first, then IPv6, each only if the node has it).
    pub index: usize,
}

impl Range {
    /// The IPv4 range: FLANNEL_SUBNET (None on an IPv6-only node).
    pub fn of(env: &SubnetEnv) -> Option<Range> {
        let s = env.subnet?;
        Some(Range {
            subnet: IpAddr::V4(s.host(0)),
            prefix_len: s.prefix_len,
            first: IpAddr::V4(s.host(1)),
            last: IpAddr::V4(Ipv4Addr::from(u32::from(s.broadcast()) - 1)),
            gateway: IpAddr::V4(s.host(1)),
            index: 0,
        })
    }

    /// The IPv6 range: FLANNEL_IPV6_SUBNET (None on an IPv4-only node);
    /// the second range on a dual-stack node, the only one on an IPv6-only node.
    pub fn of_v6(env: &SubnetEnv) -> Option<Range> {
        let s = env.ipv6_subnet?;
        let net = u128::from(s.host(0));
        let last = net | !weft_common::subnet_env::mask6(s.prefix_len);
        Some(Range {
            subnet: IpAddr::V6(s.host(0)),
            prefix_len: s.prefix_len,
            first: IpAddr::V6(s.host(1)),
            last: IpAddr::V6(Ipv6Addr::from(last)),
            gateway: IpAddr::V6(s.host(1)),
            index: usize::from(env.subnet.is_some()),
        })
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.is_ipv6()
    }

    /// host-local's range index (flannel's order): 0 for IPv4, 1 for IPv6
    /// on a dual-stack node, 0 for IPv6 on an IPv6-only node.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `last_reserved_ip.<index>`.
    pub fn last_reserved_file(&self) -> &'static str {
        if self.index == 0 {
            LAST_RESERVED
        } else {
            LAST_RESERVED_V6
        }
    }

    /// Which subnet.env key the range comes from.
    pub fn key(&self) -> &'static str {
        if self.is_v6() {
            "FLANNEL_IPV6_SUBNET"
        } else {
            "FLANNEL_SUBNET"
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6() && (num(self.first)..=num(self.last)).contains(&num(ip)) && ip != self.gateway
    }

    /// How many addresses pods can get.
    pub fn size(&self) -> u128 {
        let (f, l) = (num(self.first), num(self.last));
        l - f + 1 - u128::from((f..=l).contains(&num(self.gateway)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub container_id: String,
    /// Empty for host-local's old files, which hold only the container ID.
    pub ifname: String,
}

impl Allocation {
    pub fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && (self.ifname == ifname || self.ifname.is_empty())
    }
}

pub struct Store {
    dir: PathBuf,
}

/// Holds the store's flock until dropped (closing the file releases it).
struct Lock(#[allow(dead_code)] File);

fn io(what: impl std::fmt::Display, e: &std::io::Error) -> CniError {
    CniError::io(what, e)
}

impl Store {
    /// The store of network `network` under `data_dir`; created if `create`,
    /// else None when it does not exist (DEL, GC and CHECK create nothing).
    pub fn open(data_dir: &Path, network: &str, create: bool) -> Result<Option<Store>> {
        let dir = data_dir.join(network);
        if create {
            std::fs::create_dir_all(&dir).map_err(|e| io(format!("creating the address store {}", dir.display()), &e))?;
        } else if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(Store { dir }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Lock> {
        let p = self.dir.join(LOCK);
        let f = OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(&p).map_err(|e| io(format!("opening {}", p.display()), &e))?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(io(format!("locking {}", p.display()), &e));
            }
        }
    }

    /// Every allocation in the store (the caller holds the lock).
    fn read_all(&self) -> Result<Vec<Allocation>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io(format!("listing {}", self.dir.display()), &e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io(format!("listing {}", self.dir.display()), &e))?;
            let Some(ip) = ent.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
            let text = match std::fs::read_to_string(ent.path()) {
                Ok(t) => t,
                // Released between listing and reading.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format!("reading {}", ent.path().display()), &e)),
            };
            let mut lines = text.trim().lines();
            let container_id = lines.next().unwrap_or_default().trim().to_string();
            let ifname = lines.next().unwrap_or_default().trim().to_string();
            out.push(Allocation { ip, container_id, ifname });
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }

    pub fn allocations(&self) -> Result<Vec<Allocation>> {
        let _l = self.lock()?;
        self.read_all()
    }

    /// The addresses held by an attachment.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self.allocations()?.into_iter().filter(|a| a.belongs_to(container_id, ifname)).map(|a| a.ip).collect())
    }

    /// An address for the attachment from `range`: the one it already holds
    /// there (a repeated ADD after one that failed half-way; `true`), else the
    /// next free one after the range's `last_reserved_ip.<N>`, wrapping
    /// around (`false`).
    pub fn allocate(&self, range: &Range, container_id: &str, ifname: &str) -> Result<(IpAddr, bool)> {
        let _l = self.lock()?;
        let all = self.read_all()?;
        if let Some(a) = all.iter().find(|a| a.belongs_to(container_id, ifname) && range.contains(a.ip)) {
            return Ok((a.ip, true));
        }
        let v6 = range.is_v6();
        let (first, last) = (num(range.first), num(range.last));
        let last_file = range.last_reserved_file();
        let last_reserved = std::fs::read_to_string(self.dir.join(last_file)).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()).filter(|a| a.is_ipv6() == v6);
        let start = match last_reserved.map(num) {
            Some(l) if (first..last).contains(&l) => l + 1,
            _ => first,
        };
        let n = last - first + 1;
        // At most every file in the store is taken, plus the gateway: among
        // that many distinct candidates plus one there is a free address
        // unless the range is full (which keeps a /64 from being walked).
        let tries = n.min(all.len() as u128 + 2);
        for i in 0..tries {
            let ip = addr(first + (start - first + i) % n, v6);
            if ip == range.gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            let mut f = match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(format!("reserving {}", path.display()), &e)),
            };
            let written = f.write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes()).and_then(|_| f.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&path);
                return Err(io(format!("writing {}", path.display()), &e));
            }
            let _ = weft_common::fs::sync_dir(&self.dir);
            // Only where the next search starts: losing it costs nothing.
            let _ = std::fs::write(self.dir.join(last_file), ip.to_string());
            return Ok((ip, false));
        }
        Err(CniError::new(
            code::NO_FREE_ADDRESS,
            format!(
                "no free address in {} {}/{} ({}-{}): all {} are allocated (store {})",
                range.key(),
                range.subnet,
                range.prefix_len,
                range.first,
                range.last,
                range.size(),
                self.dir.display()
            ),
        ))
    }

    /// Releases every address the attachment holds; returns them (none is fine).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let _l = self.lock()?;
        self.remove_where(|a| a.belongs_to(container_id, ifname))
    }

    /// GC: releases every allocation `keep` rejects; returns them.
    pub fn gc(&self, keep: impl Fn(&Allocation) -> bool) -> Result<Vec<Allocation>> {
        let _l = self.lock()?;
        let gone: Vec<Allocation> = self.read_all()?.into_iter().filter(|a| !keep(a)).collect();
        for a in &gone {
            self.remove_file(a.ip)?;
        }
        Ok(gone)
    }

    fn remove_file(&self, ip: IpAddr) -> Result<()> {
        let p = self.dir.join(ip.to_string());
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("releasing {}", p.display()), &e)),
        }
    }

    fn remove_where(&self, f: impl Fn(&Allocation) -> bool) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for a in self.read_all()?.into_iter().filter(|a| f(a)) {
            self.remove_file(a.ip)?;
            out.push(a.ip);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-cni-ipam-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn env29() -> SubnetEnv {
        SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/29\nFLANNEL_MTU=1450\n").unwrap()
    }

    #[test]
    fn allocates_in_order_skips_gateway_and_exhausts() {
        let d = tmp("order");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        let r = Range::of(&env29()).unwrap();
        assert_eq!(r.size(), 5);
        let got: Vec<IpAddr> = (0..5).map(|i| s.allocate(&r, &format!("c{i}"), "eth0").unwrap().0).collect();
        let want: Vec<IpAddr> = (2..=6).map(|h| v4(10, 9, 0, h)).collect();
        assert_eq!(got, want);
        let e = s.allocate(&r, "c5", "eth0").unwrap_err();
        assert_eq!(e.code, code::NO_FREE_ADDRESS);
        assert!(e.msg.starts_with("no free address in FLANNEL_SUBNET 10.9.0.0/29 (10.9.0.1-10.9.0.6): all 5 are allocated"), "{e}");
        // Same attachment again: the address it holds.
        assert_eq!(s.allocate(&r, "c1", "eth0").unwrap(), (v4(10, 9, 0, 3), true));
        // host-local's format on disk.
        assert_eq!(std::fs::read_to_string(s.dir().join("10.9.0.3")).unwrap(), "c1\r\neth0");
        assert_eq!(std::fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap(), "10.9.0.6");
        // Release, then the search continues after the last reserved address and wraps.
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![v4(10, 9, 0, 3)]);
        assert!(s.release("c1", "eth0").unwrap().is_empty());
        assert_eq!(s.allocate(&r, "c9", "eth0").unwrap(), (v4(10, 9, 0, 3), false));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_host_local_variants_and_gcs() {
        let d = tmp("gc");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        std::fs::write(s.dir().join("10.9.0.2"), "old").unwrap();
        std::fs::write(s.dir().join("10.9.0.3"), "a\neth0\n").unwrap();
        std::fs::write(s.dir().join("10.9.0.4"), "b\r\neth0").unwrap();
        std::fs::write(s.dir().join("junk"), "x").unwrap();
        let all = s.allocations().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], Allocation { ip: v4(10, 9, 0, 2), container_id: "old".into(), ifname: String::new() });
        assert_eq!(s.find("old", "net1").unwrap(), vec![v4(10, 9, 0, 2)]);
        let gone = s.gc(|a| a.container_id == "b").unwrap();
        assert_eq!(gone.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(), vec!["10.9.0.2", "10.9.0.3"]);
        assert_eq!(s.allocations().unwrap().len(), 1);
        assert!(Store::open(&d, "other", false).unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let d = tmp("conc");
        let env = SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/24\nFLANNEL_MTU=1450\n").unwrap();
        let r = Range::of(&env).unwrap();
        let d2 = Arc::new(d.clone());
        let hs: Vec<_> = (0..64)
            .map(|i| {
                let d = d2.clone();
                std::thread::spawn(move || {
                    // One Store per thread, as separate processes would have.
                    let s = Store::open(&d, "net", true).unwrap().unwrap();
                    s.allocate(&r, &format!("c{i}"), "eth0").unwrap().0
                })
            })
            .collect();
        let mut ips: Vec<IpAddr> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 64);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn dual(v6_subnet: &str) -> SubnetEnv {
        SubnetEnv::parse(&format!("FLANNEL_SUBNET=10.9.0.1/29\nFLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET={v6_subnet}\nFLANNEL_MTU=1450\n")).unwrap()
    }

    #[test]
    fn ipv6_range_is_host_locals_default() {
        let r = Range::of_v6(&dual("fd00:0:0:7::1/64")).unwrap();
        assert_eq!((r.first, r.gateway, r.last), (v6("fd00:0:0:7::1"), v6("fd00:0:0:7::1"), v6("fd00:0:0:7:ffff:ffff:ffff:ffff")));
        assert_eq!((r.index(), r.last_reserved_file(), r.key()), (1, "last_reserved_ip.1", "FLANNEL_IPV6_SUBNET"));
        assert!(r.contains(v6("fd00:0:0:7::2")) && !r.contains(v6("fd00:0:0:7::1")) && !r.contains(v6("fd00:0:0:8::2")) && !r.contains(v4(10, 9, 0, 2)));
        assert_eq!(Range::of_v6(&dual("fd00::1/126")).unwrap().size(), 2);
        assert_eq!(Range::of_v6(&env29()), None);
        let r4 = Range::of(&env29()).unwrap();
        assert_eq!((r4.index(), r4.last_reserved_file(), r4.key()), (0, "last_reserved_ip.0", "FLANNEL_SUBNET"));
        assert!(!r4.contains(v6("::a09:2")));
    }

    #[test]
    fn dual_stack_store_keeps_host_locals_format() {
        let d = tmp("dual");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        let env = dual("fd00:0:0:7::1/126");
        let (r4, r6) = (Range::of(&env).unwrap(), Range::of_v6(&env).unwrap());
        assert_eq!(s.allocate(&r4, "a", "eth0").unwrap(), (v4(10, 9, 0, 2), false));
        assert_eq!(s.allocate(&r6, "a", "eth0").unwrap(), (v6("fd00:0:0:7::2"), false));
        assert_eq!(s.allocate(&r6, "a", "eth0").unwrap(), (v6("fd00:0:0:7::2"), true), "the address it holds");
        assert_eq!(s.allocate(&r6, "b", "eth0").unwrap(), (v6("fd00:0:0:7::3"), false));
        // One file per address, named as Go's net.IP.String() writes it; one last_reserved_ip per range.
        let mut names: Vec<String> = std::fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["10.9.0.2", "fd00:0:0:7::2", "fd00:0:0:7::3", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
        assert_eq!(std::fs::read_to_string(s.dir().join("fd00:0:0:7::2")).unwrap(), "a\r\neth0");
        assert_eq!(std::fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap(), "10.9.0.2");
        assert_eq!(std::fs::read_to_string(s.dir().join(LAST_RESERVED_V6)).unwrap(), "fd00:0:0:7::3");
        // Exhausted: names the key and the subnet.
        let e = s.allocate(&r6, "c", "eth0").unwrap_err();
        assert_eq!(e.code, code::NO_FREE_ADDRESS);
        assert!(e.msg.starts_with("no free address in FLANNEL_IPV6_SUBNET fd00:0:0:7::/126 (fd00:0:0:7::1-fd00:0:0:7::3): all 2 are allocated"), "{e}");
        assert_eq!(s.find("a", "eth0").unwrap(), vec![v4(10, 9, 0, 2), v6("fd00:0:0:7::2")]);
        // Release frees both families; the v6 search continues after last_reserved_ip.1 and wraps.
        assert_eq!(s.release("a", "eth0").unwrap(), vec![v4(10, 9, 0, 2), v6("fd00:0:0:7::2")]);
        assert_eq!(s.allocate(&r6, "c", "eth0").unwrap(), (v6("fd00:0:0:7::2"), false));
        // GC sees v6 files too.
        let gone = s.gc(|a| a.container_id == "c").unwrap();
        assert_eq!(gone.iter().map(|a| a.ip).collect::<Vec<_>>(), vec![v6("fd00:0:0:7::3")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// An IPv6-only node (no FLANNEL_SUBNET): no IPv4 range; the IPv6 range
    /// is host-local's range 0, so its file is `last_reserved_ip.0` (holding
    /// an IPv6 address), as host-local writes it for flannel's `[[v6]]`.
    #[test]
    fn ipv6_only_store_is_range_0() {
        let env = SubnetEnv::parse("FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:7::1/126\nFLANNEL_MTU=1430\n").unwrap();
        assert_eq!(Range::of(&env), None);
        let r6 = Range::of_v6(&env).unwrap();
        assert_eq!((r6.index(), r6.last_reserved_file(), r6.key(), r6.size()), (0, "last_reserved_ip.0", "FLANNEL_IPV6_SUBNET", 2));
        let d = tmp("v6only");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        // A stale IPv4 last_reserved_ip.0 (the node was IPv4 before) is not a place to start from.
        std::fs::write(s.dir().join(LAST_RESERVED), "10.9.0.5").unwrap();
        assert_eq!(s.allocate(&r6, "a", "eth0").unwrap(), (v6("fd00:0:0:7::2"), false));
        assert_eq!(s.allocate(&r6, "b", "eth0").unwrap(), (v6("fd00:0:0:7::3"), false));
        let mut names: Vec<String> = std::fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["fd00:0:0:7::2", "fd00:0:0:7::3", "last_reserved_ip.0", "lock"]);
        assert_eq!(std::fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap(), "fd00:0:0:7::3");
        let e = s.allocate(&r6, "c", "eth0").unwrap_err();
        assert!(e.msg.starts_with("no free address in FLANNEL_IPV6_SUBNET fd00:0:0:7::/126"), "{e}");
        assert_eq!(s.release("a", "eth0").unwrap(), vec![v6("fd00:0:0:7::2")]);
        assert_eq!(s.allocate(&r6, "c", "eth0").unwrap(), (v6("fd00:0:0:7::2"), false), "wraps after last_reserved_ip.0");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_big_ipv6_range_is_not_walked() {
        // A /64 with its first addresses taken by someone else: the search
        // steps over them and stops; exhaustion is impossible in practice.
        let d = tmp("big6");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        let r6 = Range::of_v6(&dual("fd00:0:0:7::1/64")).unwrap();
        for h in 2..6 {
            std::fs::write(s.dir().join(format!("fd00:0:0:7::{h}")), "x\r\neth0").unwrap();
        }
        assert_eq!(s.allocate(&r6, "a", "eth0").unwrap(), (v6("fd00:0:0:7::6"), false));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
