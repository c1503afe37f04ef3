//! The address store, in host-local's on-disk format so that the two can
//! share a directory: `<dataDir>/<network name>/` holds one file per
//! allocated address, named by the address and created with
//! `O_CREAT|O_EXCL`, holding `<containerID>\r\n<ifname>` (host-local's line
//! break; a bare `\n` and host-local's old ID-only files are read too), plus
//! `last_reserved_ip.0` (where the next search starts) and `lock`, which
//! every operation holds with `flock(LOCK_EX)`, as host-local does.
//!
//! Addresses come from the node's subnet minus the network address, the
//! gateway (.1) and the broadcast address. Files live on disk, so
//! allocations survive restarts of anything; the lock plus `O_EXCL` keep
//! concurrent ADDs from ever handing out one address twice.
use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Write},
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::{
    error::{code, CniError, Result},
    subnet_env::SubnetEnv,
};

pub const LINE_BREAK: &str = "\r\n";
pub const LAST_RESERVED: &str = "last_reserved_ip.0";
pub const LOCK: &str = "lock";

/// The addresses pods may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    pub fn of(env: &SubnetEnv) -> Range {
        Range { first: Ipv4Addr::from(u32::from(env.subnet) + 1), last: Ipv4Addr::from(u32::from(env.broadcast()) - 1), gateway: env.gateway() }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip) && ip != self.gateway
    }

    /// How many addresses pods can get.
    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1 - u32::from((self.first..=self.last).contains(&self.gateway))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
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
            let Some(ip) = ent.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
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
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self.allocations()?.into_iter().filter(|a| a.belongs_to(container_id, ifname)).map(|a| a.ip).collect())
    }

    /// An address for the attachment: the one it already holds in `range`
    /// (a repeated ADD after one that failed half-way; `true`), else the next
    /// free one after `last_reserved_ip.0`, wrapping around (`false`).
    pub fn allocate(&self, range: &Range, container_id: &str, ifname: &str) -> Result<(Ipv4Addr, bool)> {
        let _l = self.lock()?;
        let all = self.read_all()?;
        if let Some(a) = all.iter().find(|a| a.belongs_to(container_id, ifname) && range.contains(a.ip)) {
            return Ok((a.ip, true));
        }
        let (first, last) = (u32::from(range.first), u32::from(range.last));
        let last_reserved = std::fs::read_to_string(self.dir.join(LAST_RESERVED)).ok().and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let start = match last_reserved.map(u32::from) {
            Some(l) if (first..last).contains(&l) => l + 1,
            _ => first,
        };
        let n = last - first + 1;
        for i in 0..n {
            let ip = Ipv4Addr::from(first + (start - first + i) % n);
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
            let _ = std::fs::write(self.dir.join(LAST_RESERVED), ip.to_string());
            return Ok((ip, false));
        }
        Err(CniError::new(
            code::NO_FREE_ADDRESS,
            format!("no free address in {}-{}: all {} are allocated (store {})", range.first, range.last, range.size(), self.dir.display()),
        ))
    }

    /// Releases every address the attachment holds; returns them (none is fine).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
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

    fn remove_file(&self, ip: Ipv4Addr) -> Result<()> {
        let p = self.dir.join(ip.to_string());
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("releasing {}", p.display()), &e)),
        }
    }

    fn remove_where(&self, f: impl Fn(&Allocation) -> bool) -> Result<Vec<Ipv4Addr>> {
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

    fn env29() -> SubnetEnv {
        SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/29\nFLANNEL_MTU=1450\n").unwrap()
    }

    #[test]
    fn allocates_in_order_skips_gateway_and_exhausts() {
        let d = tmp("order");
        let s = Store::open(&d, "net", true).unwrap().unwrap();
        let r = Range::of(&env29());
        assert_eq!(r.size(), 5);
        let got: Vec<Ipv4Addr> = (0..5).map(|i| s.allocate(&r, &format!("c{i}"), "eth0").unwrap().0).collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 9, 0, h)).collect();
        assert_eq!(got, want);
        let e = s.allocate(&r, "c5", "eth0").unwrap_err();
        assert_eq!(e.code, code::NO_FREE_ADDRESS);
        // Same attachment again: the address it holds.
        assert_eq!(s.allocate(&r, "c1", "eth0").unwrap(), (Ipv4Addr::new(10, 9, 0, 3), true));
        // host-local's format on disk.
        assert_eq!(std::fs::read_to_string(s.dir().join("10.9.0.3")).unwrap(), "c1\r\neth0");
        assert_eq!(std::fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap(), "10.9.0.6");
        // Release, then the search continues after the last reserved address and wraps.
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![Ipv4Addr::new(10, 9, 0, 3)]);
        assert!(s.release("c1", "eth0").unwrap().is_empty());
        assert_eq!(s.allocate(&r, "c9", "eth0").unwrap(), (Ipv4Addr::new(10, 9, 0, 3), false));
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
        assert_eq!(all[0], Allocation { ip: Ipv4Addr::new(10, 9, 0, 2), container_id: "old".into(), ifname: String::new() });
        assert_eq!(s.find("old", "net1").unwrap(), vec![Ipv4Addr::new(10, 9, 0, 2)]);
        let gone = s.gc(|a| a.container_id == "b").unwrap();
        assert_eq!(gone.iter().map(|a| a.ip.octets()[3]).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.allocations().unwrap().len(), 1);
        assert!(Store::open(&d, "other", false).unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let d = tmp("conc");
        let env = SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/24\nFLANNEL_MTU=1450\n").unwrap();
        let r = Range::of(&env);
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
        let mut ips: Vec<Ipv4Addr> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 64);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
