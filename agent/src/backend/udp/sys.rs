//! The kernel interfaces of the udp path that libc does not wrap: TUN
//! queues with virtio-net headers and offloads, and UDP sockets with
//! GSO (UDP_SEGMENT) and GRO (UDP_GRO).
use std::{
    ffi::CString,
    io,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
pub const UDP_SEGMENT: libc::c_int = 103;
pub const UDP_GRO: libc::c_int = 104;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `queues` queues of the multi-queue TUN `name` (created by the
/// first open if missing; `name` may hold `%d`), each non-blocking, with a
/// virtio-net header in front of every packet and, when `offload`, checksum
/// and TCPv4 segmentation offloads turned on (the kernel then hands us 64 KB
/// TCP packets and takes them). Returns the queues and the device's name.
pub fn open_tun(name: &str, queues: usize, offload: bool) -> Result<(Vec<OwnedFd>, String)> {
    let mut fds = Vec::new();
    let mut actual = name.to_string();
    for q in 0..queues.max(1) {
        let path = CString::new("/dev/net/tun").expect("no NUL");
        // SAFETY: a plain open of a C string we own.
        let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) })
            .context("opening /dev/net/tun (is the tun module there?)")?;
        // SAFETY: fd was just opened and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR, _pad: [0; 22] };
        if actual.len() >= libc::IFNAMSIZ {
            bail!("TUN name {actual:?} is longer than {} bytes", libc::IFNAMSIZ - 1);
        }
        for (d, s) in req.name.iter_mut().zip(actual.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes one struct ifreq, which IfReq lays out.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) }).with_context(|| format!("creating TUN queue {q} of {actual}"))?;
        actual = req.name.iter().take_while(|c| **c != 0).map(|c| *c as u8 as char).collect();
        let hdr: libc::c_int = super::gro::VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) }).context("TUNSETVNETHDRSZ")?;
        let off: libc::c_uint = if offload { TUN_F_CSUM | TUN_F_TSO4 } else { 0 };
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, off as libc::c_ulong) }).context("TUNSETOFFLOAD")?;
        fds.push(fd);
    }
    Ok((fds, actual))
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: T) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed with it.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, &v as *const T as *const libc::c_void, std::mem::size_of::<T>() as u32) }).map(|_| ())
}

pub fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    }
}

/// What the UDP socket could be given.
#[derive(Debug, Clone, Copy)]
pub struct SocketFeatures {
    pub gso: bool,
    pub gro: bool,
}

/// A non-blocking UDP socket bound to `at` with SO_REUSEPORT (one per
/// worker; the kernel spreads peers over them), DF set (flannel's proxy sets
/// it too), large buffers, and GRO if `want_gro` and the kernel has it.
pub fn udp_socket(at: SocketAddrV4, want_offload: bool) -> Result<(OwnedFd, SocketFeatures)> {
    // SAFETY: a plain socket(2).
    let fd =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) }).context("socket(AF_INET, SOCK_DGRAM)")?;
    // SAFETY: just created, ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1 as libc::c_int).context("SO_REUSEPORT")?;
    setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO).context("IP_MTU_DISCOVER")?;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if setsockopt(&fd, libc::SOL_SOCKET, force, (8 << 20) as libc::c_int).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, plain, (8 << 20) as libc::c_int);
        }
    }
    let sa = sockaddr(at);
    // SAFETY: sa is a valid sockaddr_in for the call's duration.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) })
        .with_context(|| format!("binding UDP {at}"))?;
    let gro = want_offload && setsockopt(&fd, libc::SOL_UDP, UDP_GRO, 1 as libc::c_int).is_ok();
    // UDP_SEGMENT is per send (a cmsg); setting it to 0 here only asks whether the kernel knows it.
    let gso = want_offload && setsockopt(&fd, libc::SOL_UDP, UDP_SEGMENT, 0 as libc::c_int).is_ok();
    Ok((fd, SocketFeatures { gso, gro }))
}

/// Waits until one of `fds` is readable (or `timeout_ms` passes); returns
/// which are.
pub fn poll_readable<const N: usize>(fds: [&OwnedFd; N], timeout_ms: i32) -> io::Result<[bool; N]> {
    let mut p: [libc::pollfd; N] = std::array::from_fn(|i| libc::pollfd { fd: fds[i].as_raw_fd(), events: libc::POLLIN, revents: 0 });
    loop {
        // SAFETY: p is an array of N pollfds.
        match cvt(unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, timeout_ms) }) {
            Ok(_) => return Ok(std::array::from_fn(|i| p[i].revents & (libc::POLLIN | libc::POLLERR) != 0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
