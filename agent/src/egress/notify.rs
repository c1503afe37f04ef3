//! Netfilter change notifications: a netlink socket in nf_tables' multicast
//! group, so rules someone else removed (a program deleting our table, a
//! firewall reload flushing the ruleset) are noticed at once instead of at
//! the next resync. Any message means "netfilter changed"; the caller
//! compares what is there with what it wants (our own transactions notify
//! too, and compare equal).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNLGRP_NFTABLES: libc::c_int = 7;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

pub struct Notify {
    fd: AsyncFd<OwnedFd>,
    /// Receive buffer, kept: the event loop asks for a new wake-up on every turn.
    buf: Vec<u8>,
}

impl Notify {
    /// Subscribes to nf_tables' change events in this network namespace.
    pub fn open() -> Result<Notify> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            bail!("netfilter netlink socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid "any pid, no groups".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sa is a valid sockaddr_nl of the size given.
        if unsafe { libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32) } < 0 {
            bail!("binding the netfilter netlink socket: {}", std::io::Error::last_os_error());
        }
        let group = NFNLGRP_NFTABLES;
        // SAFETY: group is a c_int of the size given.
        if unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                &group as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        } < 0
        {
            bail!("joining nf_tables' notification group: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd inside the AsyncFd is this socket, open and
        // unchanged for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Notify { fd, buf: vec![0u8; 64 * 1024] })
    }

    /// Resolves when netfilter changed; reads everything already queued so
    /// a burst (a firewall reload) is one wake-up. Cancel-safe: messages
    /// are drained and reported within one poll.
    pub async fn changed(&mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else { return std::future::pending().await };
            let mut got = false;
            loop {
                // SAFETY: buf is valid for buf.len() bytes.
                let n = unsafe { libc::recv(self.fd.get_ref().as_raw_fd(), self.buf.as_mut_ptr() as *mut libc::c_void, self.buf.len(), 0) };
                if n >= 0 {
                    got = true;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    // Overrun: events were lost, which still means "changed".
                    Some(libc::ENOBUFS) => got = true,
                    Some(libc::EINTR) => {}
                    _ => break,
                }
            }
            guard.clear_ready();
            if got {
                return;
            }
        }
    }
}
