//! A reference peer for flannel's udp wire format, written from the format
//! (not from weft's code) and moving packets the way flannel's proxy
//! (backend/udp/proxy_amd64.c) does: one thread, one packet per syscall,
//! poll only when neither side has a packet waiting. TUN packets go to the
//! peer whose subnet holds the destination as the bare IPv4 packet in one
//! UDP datagram (source and destination port 8285), inner TTL decremented
//! (0: dropped); a destination no peer holds is answered with ICMP net
//! unreachable written back into the TUN; received datagrams get the same
//! TTL rule and go into the TUN.
//! The tests use it as a flannel udp node, the benchmark as the baseline.
//!
//! Usage: flannel-udp-ref --tun NAME --local IP --subnet A.B.C.D/LEN
//!        --network A.B.C.D/LEN --mtu N [--port 8285] [--peer SUBNET=IP]...
//! It sets the TUN up as flanneld does: address = the subnet's IP /32, the
//! MTU, one route for the whole network. It exits on SIGTERM or SIGKILL.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn parse_net(s: &str) -> Result<(u32, u8)> {
    let (a, l) = s.split_once('/').with_context(|| format!("{s:?} is not A.B.C.D/LEN"))?;
    let a: Ipv4Addr = a.parse().with_context(|| format!("{s:?}"))?;
    let l: u8 = l.parse().with_context(|| format!("{s:?}"))?;
    if l > 32 {
        bail!("{s:?}: prefix length over 32");
    }
    Ok((u32::from(a), l))
}

fn mask(l: u8) -> u32 {
    if l == 0 {
        0
    } else {
        u32::MAX << (32 - l)
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip").args(args).status().context("running ip")?;
    if !st.success() {
        bail!("ip {} failed", args.join(" "));
    }
    Ok(())
}

/// Opens the TUN as flannel does: IFF_TUN | IFF_NO_PI, blocking.
fn open_tun(name: &str) -> Result<OwnedFd> {
    // SAFETY: open(2) of a constant path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        bail!("open /dev/net/tun: {}", std::io::Error::last_os_error());
    }
    // SAFETY: just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[16..18].copy_from_slice(&(0x0001u16 | 0x1000).to_ne_bytes()); // IFF_TUN | IFF_NO_PI
                                                                      // SAFETY: TUNSETIFF with a 40-byte struct ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), 0x4004_54ca, req.as_mut_ptr()) } < 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// RFC 1624 update of the header checksum after TTL - 1. None: TTL hit 0.
fn decrement_ttl(p: &mut [u8]) -> Option<()> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    p[8] = p[8].checked_sub(1)?;
    if p[8] == 0 {
        return None;
    }
    let mut sum = u16::from_be_bytes([p[10], p[11]]) as u32 + 0x0100;
    sum = (sum & 0xffff) + (sum >> 16);
    p[10..12].copy_from_slice(&(sum as u16).to_be_bytes());
    Some(())
}

fn checksum(d: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in d.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// flannel's send_net_unreachable: from the offender's destination to its source.
fn net_unreachable(off: &[u8]) -> Vec<u8> {
    let quoted = &off[..off.len().min(28)];
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 8, 1, 0, 0];
    p.extend_from_slice(&off[16..20]);
    p.extend_from_slice(&off[12..16]);
    p.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(quoted);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut tun, mut local, mut subnet, mut network, mut mtu, mut port) = (None, None, None, None, None, 8285u16);
    let mut peers: Vec<(u32, u8, SocketAddrV4)> = Vec::new();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--tun" => tun = Some(v.clone()),
            "--local" => local = Some(v.parse::<Ipv4Addr>().context("--local")?),
            "--subnet" => subnet = Some(parse_net(v)?),
            "--network" => network = Some(v.clone()),
            "--mtu" => mtu = Some(v.parse::<u32>().context("--mtu")?),
            "--port" => port = v.parse().context("--port")?,
            "--peer" => {
                let (n, a) = v.split_once('=').context("--peer SUBNET=IP")?;
                let (net, len) = parse_net(n)?;
                peers.push((net, len, SocketAddrV4::new(a.parse().context("--peer IP")?, port)));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let (tun, local, (sn, _), network, mtu) =
        (tun.context("--tun")?, local.context("--local")?, subnet.context("--subnet")?, network.context("--network")?, mtu.context("--mtu")?);
    let fd = open_tun(&tun)?;
    ip(&["addr", "replace", &format!("{}/32", Ipv4Addr::from(sn)), "dev", &tun])?;
    ip(&["link", "set", &tun, "mtu", &mtu.to_string(), "up"])?;
    ip(&["route", "replace", &network, "dev", &tun])?;
    let sock = UdpSocket::bind(SocketAddrV4::new(local, port)).with_context(|| format!("binding {local}:{port}"))?;
    peers.sort_by_key(|b| std::cmp::Reverse(b.1));
    let mut buf = vec![0u8; 65_536];
    // As flannel's run_proxy: the TUN non-blocking, the socket blocking but
    // read with MSG_DONTWAIT (sends wait for room, as flannel's sendto);
    // after a poll, one packet each way per round until neither side has
    // one (poll is skipped while traffic flows).
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut pfd =
        [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    loop {
        // SAFETY: two pollfds.
        if unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        while tun_to_udp(&fd, &sock, &peers, &mut buf) | udp_to_tun(&sock, &fd, &mut buf) {}
    }
}

/// One packet from the TUN to its peer (flannel's tun_to_udp); false: none was waiting.
fn tun_to_udp(tun: &OwnedFd, sock: &UdpSocket, peers: &[(u32, u8, SocketAddrV4)], buf: &mut [u8]) -> bool {
    // SAFETY: reading into our buffer.
    let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 20 {
        return false;
    }
    let p = &mut buf[..n as usize];
    let dst = u32::from_be_bytes([p[16], p[17], p[18], p[19]]);
    match peers.iter().find(|(net, len, _)| dst & mask(*len) == *net) {
        None => {
            let r = net_unreachable(p);
            // SAFETY: writing our buffer.
            unsafe { libc::write(tun.as_raw_fd(), r.as_ptr() as *const libc::c_void, r.len()) };
        }
        Some((_, _, to)) => {
            if decrement_ttl(p).is_some() {
                let _ = sock.send_to(p, to);
            }
        }
    }
    true
}

/// One datagram from the socket into the TUN (flannel's udp_to_tun); false: none was waiting.
fn udp_to_tun(sock: &UdpSocket, tun: &OwnedFd, buf: &mut [u8]) -> bool {
    // SAFETY: receiving into our buffer.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
    if n < 20 {
        return false;
    }
    let p = &mut buf[..n as usize];
    if decrement_ttl(p).is_some() {
        // flannel's tun_send_packet: the TUN is non-blocking, so retry on EAGAIN.
        // SAFETY: writing our buffer.
        while unsafe { libc::write(tun.as_raw_fd(), p.as_ptr() as *const libc::c_void, p.len()) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
        {}
    }
    true
}
