//! One udp-path worker: a thread owning one TUN queue and one UDP socket
//! (SO_REUSEPORT), moving packets both ways in batches with buffers
//! allocated once. TUN -> wire: one read takes up to 64 KB (TSO), which is
//! segmented here into wire-sized IP packets and sent with one UDP GSO
//! `sendmsg` per 64 KB; small packets go out together through `sendmmsg`.
//! Wire -> TUN: `recvmmsg` takes several UDP-GRO batches, each split into
//! its datagrams, checked, and merged back into TSO packets for the TUN.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use super::{
    gro::{Coalescer, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_HDR_LEN},
    packet::{self, Refused},
    peers::{PeerMap, Peers, Sender},
    stat,
    sys::{self, SocketFeatures},
    Stats,
};

/// Largest UDP payload of one IPv4 datagram (and of one GSO send).
const MAX_DATAGRAM: usize = 65_507;
/// Small packets collected per `sendmmsg`.
const SLOTS: usize = 32;
/// TUN reads per wake-up before the socket gets its turn.
const READS_PER_WAKE: usize = 64;
/// Messages per `recvmmsg` (each up to 64 KB with GRO).
const RECV_BATCH: usize = 8;
const BUF: usize = VNET_HDR_LEN + 65_536;
/// The kernel's limit on segments in one UDP GSO send.
const GSO_MAX_SEGS: usize = 64;

pub struct Worker {
    pub tun: OwnedFd,
    pub sock: OwnedFd,
    pub feats: SocketFeatures,
    /// The CPU to pin this worker on (None: unpinned).
    pub cpu: Option<usize>,
    pub peers: Arc<Peers>,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    /// The TUN's MTU: nothing larger is written into it.
    pub tun_mtu: usize,
}

/// Counters kept by the thread and added to the shared ones once per wake.
#[derive(Default)]
struct Local {
    packets: [u64; stat::COUNT],
    bytes: [u64; stat::COUNT],
}

impl Local {
    #[inline]
    fn add(&mut self, what: usize, bytes: usize) {
        self.packets[what] += 1;
        self.bytes[what] += bytes as u64;
    }
    fn refused(&mut self, r: Refused, bytes: usize) {
        self.add(
            match r {
                Refused::Malformed => stat::DROP_MALFORMED,
                Refused::Ttl => stat::DROP_TTL,
            },
            bytes,
        )
    }
}

struct Buffers {
    /// TUN reads; the first `pending` hold small packets waiting for `sendmmsg`.
    slots: Vec<Vec<u8>>,
    dsts: [SocketAddrV4; SLOTS],
    /// The segment headers of one TSO packet, back to back.
    segs: Vec<u8>,
    recv: Vec<Vec<u8>>,
    coal: Coalescer,
    icmp: [u8; VNET_HDR_LEN + 576],
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Worker {
    pub fn run(self) {
        if let Some(cpu) = self.cpu {
            if let Err(e) = super::cpus::pin_current_thread(cpu) {
                log::warn!("udp worker: cannot pin on CPU {cpu} ({e}); running unpinned");
            }
        }
        let mut b = Buffers {
            slots: (0..SLOTS).map(|_| vec![0u8; BUF]).collect(),
            dsts: [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); SLOTS],
            segs: Vec::with_capacity(64 * 120),
            recv: (0..RECV_BATCH).map(|_| vec![0u8; 65_536]).collect(),
            coal: Coalescer::default(),
            icmp: [0; VNET_HDR_LEN + 576],
        };
        let mut local = Local::default();
        while !self.stop.load(Ordering::Relaxed) {
            let ready = match sys::poll_readable([&self.tun, &self.sock], 500) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("udp worker: poll failed, stopping: {e}");
                    return;
                }
            };
            let map = self.peers.load();
            if ready[0] {
                if let Err(e) = self.tun_to_wire(&map, &mut b, &mut local) {
                    log::warn!("udp worker: reading the TUN: {e}");
                }
            }
            if ready[1] {
                if let Err(e) = self.wire_to_tun(&map, &mut b, &mut local) {
                    log::warn!("udp worker: receiving: {e}");
                }
            }
            self.stats.add(&local.packets, &local.bytes);
            local = Local::default();
        }
    }

    /// TUN -> wire. Long on purpose: one read loop that batches up to
    /// READS_PER_WAKE packets into the pending sendmmsg/GSO slots, with the
    /// per-packet decisions (TSO segment, ICMP unreachable, TTL, peer lookup)
    /// inline, because splitting it would pass the batch state around on
    /// the per-packet hot path.
    fn tun_to_wire(&self, map: &PeerMap, b: &mut Buffers, st: &mut Local) -> io::Result<()> {
        let mut pending = 0;
        for _ in 0..READS_PER_WAKE {
            let idx = pending;
            let slot = &mut b.slots[idx];
            // SAFETY: reading into a buffer we own, of the length passed.
            let n = unsafe { libc::read(self.tun.as_raw_fd(), slot.as_mut_ptr() as *mut libc::c_void, slot.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if would_block(&e) {
                    break;
                }
                self.send_batch(b, pending, st);
                return Err(e);
            }
            let n = n as usize;
            if n < VNET_HDR_LEN + 20 {
                st.add(stat::DROP_MALFORMED, n);
                continue;
            }
            let hdr: [u8; VNET_HDR_LEN] = slot[..VNET_HDR_LEN].try_into().expect("10 bytes");
            let pkt = &mut slot[VNET_HDR_LEN..n];
            let ip = match packet::parse_ipv4(pkt) {
                Ok(ip) => ip,
                Err(r) => {
                    st.refused(r, pkt.len());
                    continue;
                }
            };
            let Some(dst) = map.route(ip.dst) else {
                // flannel's answer: net unreachable, written back into the TUN.
                st.add(stat::DROP_NO_LEASE, pkt.len());
                let len = packet::icmp_net_unreachable(pkt, &mut b.icmp[VNET_HDR_LEN..]);
                b.icmp[..VNET_HDR_LEN].fill(0);
                self.write_tun(&[&b.icmp[..VNET_HDR_LEN + len]], st);
                st.packets[stat::ICMP_SENT] += 1;
                continue;
            };
            match hdr[1] & 0x7f {
                VNET_GSO_TCPV4 => {
                    // Keep order: what was read before goes first.
                    self.send_batch(b, pending, st);
                    pending = 0;
                    let mss = u16::from_ne_bytes([hdr[4], hdr[5]]) as usize;
                    let pkt = &b.slots[idx][VNET_HDR_LEN..n];
                    match packet::segment_tcp4_headers(pkt, mss, &mut b.segs) {
                        Ok(segs) => {
                            self.send_segments(pkt, &b.segs, segs, dst, st);
                            st.packets[stat::TSO_READS] += 1;
                        }
                        Err(r) => st.refused(r, n - VNET_HDR_LEN),
                    }
                    continue;
                }
                VNET_GSO_NONE => {}
                _ => {
                    st.add(stat::DROP_MALFORMED, pkt.len());
                    continue;
                }
            }
            if hdr[0] & VNET_F_NEEDS_CSUM != 0 {
                let start = u16::from_ne_bytes([hdr[6], hdr[7]]) as usize;
                let off = u16::from_ne_bytes([hdr[8], hdr[9]]) as usize;
                if let Err(r) = packet::complete_csum(pkt, start, off) {
                    st.refused(r, pkt.len());
                    continue;
                }
            }
            if let Err(r) = packet::decrement_ttl(pkt) {
                st.refused(r, pkt.len());
                continue;
            }
            if pkt.len() > MAX_DATAGRAM {
                st.add(stat::DROP_TOO_BIG, pkt.len());
                continue;
            }
            b.dsts[idx] = dst;
            pending += 1;
            // The slot's length stays BUF; the packet's is in its IP header.
            if pending == SLOTS {
                self.send_batch(b, pending, st);
                pending = 0;
            }
        }
        self.send_batch(b, pending, st);
        Ok(())
    }

    /// Sends the first `n` slots, one datagram each, with `sendmmsg`.
    fn send_batch(&self, b: &mut Buffers, n: usize, st: &mut Local) {
        if n == 0 {
            return;
        }
        let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        let mut names: [libc::sockaddr_in; SLOTS] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let pkt = &b.slots[i][VNET_HDR_LEN..];
            let len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
            iov[i] = libc::iovec { iov_base: pkt.as_ptr() as *mut libc::c_void, iov_len: len };
            names[i] = sys::sockaddr(b.dsts[i]);
            msgs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] point at iovecs and names that live until the call returns.
            let r = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if r > 0 {
                for m in &iov[done..done + r as usize] {
                    st.add(stat::TX, m.iov_len);
                }
                done += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if would_block(&e) && self.wait_writable() {
                continue;
            }
            // This datagram fails; count it and go on with the rest.
            st.add(if e.raw_os_error() == Some(libc::EMSGSIZE) { stat::DROP_TOO_BIG } else { stat::DROP_SEND }, iov[done].iov_len);
            done += 1;
        }
    }

    /// Waits up to 10 ms for room in the socket's send buffer.
    fn wait_writable(&self) -> bool {
        let mut p = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: one pollfd.
        unsafe { libc::poll(&mut p, 1, 10) > 0 }
    }

    /// Sends the segments of the TSO packet `pkt` to `dst`, each its header
    /// from `hdrs` and its payload read in place (no copy): with UDP GSO one
    /// `sendmsg` per 64 KB (an iovec pair per segment), else one datagram each.
    fn send_segments(&self, pkt: &[u8], hdrs: &[u8], segs: packet::Segments, dst: SocketAddrV4, st: &mut Local) {
        let seg_len = segs.seg_len();
        let per_send = if self.feats.gso { (MAX_DATAGRAM / seg_len).clamp(1, GSO_MAX_SEGS) } else { 1 };
        let mut name = sys::sockaddr(dst);
        let mut iov: [libc::iovec; 2 * GSO_MAX_SEGS] = unsafe { std::mem::zeroed() };
        let mut first = 0;
        while first < segs.count {
            let k = (segs.count - first).min(per_send);
            let mut len = 0;
            for j in 0..k {
                let i = first + j;
                let h = &hdrs[i * segs.hl..(i + 1) * segs.hl];
                let p = &pkt[segs.payload_range(i)];
                iov[2 * j] = libc::iovec { iov_base: h.as_ptr() as *mut libc::c_void, iov_len: h.len() };
                iov[2 * j + 1] = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
                len += h.len() + p.len();
            }
            // Room for one cmsg holding a u16 (UDP_SEGMENT's size).
            let mut cbuf = [0u64; 4];
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = 2 * k;
            if k > 1 {
                // SAFETY: cbuf is large and aligned enough for one cmsg of a u16.
                unsafe {
                    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
                    msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = sys::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg_len as u16);
                }
            }
            let r = loop {
                // SAFETY: msg points at iov (into hdrs and pkt), name and cbuf, all alive here.
                let r = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
                if r < 0 && would_block(&io::Error::last_os_error()) && self.wait_writable() {
                    continue;
                }
                break r;
            };
            let what = if r >= 0 {
                if k > 1 {
                    st.packets[stat::GSO_SENDS] += 1;
                }
                stat::TX
            } else if io::Error::last_os_error().raw_os_error() == Some(libc::EMSGSIZE) {
                stat::DROP_TOO_BIG
            } else {
                stat::DROP_SEND
            };
            st.packets[what] += k as u64;
            st.bytes[what] += len as u64;
            first += k;
        }
    }

    /// Wire -> TUN.
    fn wire_to_tun(&self, map: &PeerMap, b: &mut Buffers, st: &mut Local) -> io::Result<()> {
        let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut names: [libc::sockaddr_in; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut cbufs = [[0u64; 4]; RECV_BATCH];
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for _ in 0..4 {
            for i in 0..RECV_BATCH {
                iov[i] = libc::iovec { iov_base: b.recv[i].as_mut_ptr() as *mut libc::c_void, iov_len: b.recv[i].len() };
                msgs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_control = cbufs[i].as_mut_ptr() as *mut libc::c_void;
                msgs[i].msg_hdr.msg_controllen = std::mem::size_of_val(&cbufs[i]);
                msgs[i].msg_hdr.msg_flags = 0;
            }
            // SAFETY: every message points at buffers that outlive the call.
            let n = unsafe { libc::recvmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), RECV_BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return if would_block(&e) { Ok(()) } else { Err(e) };
            }
            for i in 0..n as usize {
                let len = msgs[i].msg_len as usize;
                let src = Ipv4Addr::from(u32::from_be(names[i].sin_addr.s_addr));
                let seg = gro_size(&msgs[i].msg_hdr).unwrap_or(len).max(1);
                if len == 0 {
                    st.add(stat::DROP_MALFORMED, 0);
                    continue;
                }
                if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    st.add(stat::DROP_TOO_BIG, len);
                    continue;
                }
                let (recv, coal) = (&mut b.recv[i], &mut b.coal);
                for pkt in recv[..len].chunks_mut(seg) {
                    if let Some(p) = self.accept(map, src, pkt, st) {
                        // SAFETY: p stays in b.recv, untouched, until the
                        // coalescer is flushed at the latest at this round's end.
                        if !unsafe { coal.append(p) } {
                            if !coal.is_empty() {
                                coal.take(|pieces| self.write_tun(pieces, st));
                            }
                            unsafe { coal.start(p) };
                        }
                    }
                }
            }
            // The next recvmmsg reuses the buffers the coalescer points into.
            self.flush_coalescer(b, st);
            if (n as usize) < RECV_BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Checks one received inner packet and applies the receiver's TTL rule.
    #[inline]
    fn accept<'a>(&self, map: &PeerMap, src: Ipv4Addr, pkt: &'a mut [u8], st: &mut Local) -> Option<&'a [u8]> {
        let ip = match packet::parse_ipv4(pkt) {
            Ok(ip) => ip,
            Err(r) => {
                st.refused(r, pkt.len());
                return None;
            }
        };
        match map.check_sender(src, ip.src) {
            Sender::Ok => {}
            Sender::Unknown => {
                st.add(stat::DROP_UNKNOWN_PEER, pkt.len());
                return None;
            }
            Sender::Spoofed => {
                st.add(stat::DROP_SPOOFED, pkt.len());
                return None;
            }
        }
        if pkt.len() > self.tun_mtu {
            st.add(stat::DROP_TOO_BIG, pkt.len());
            return None;
        }
        if let Err(r) = packet::decrement_ttl(pkt) {
            st.refused(r, pkt.len());
            return None;
        }
        st.add(stat::RX, pkt.len());
        Some(pkt)
    }

    fn flush_coalescer(&self, b: &mut Buffers, st: &mut Local) {
        if !b.coal.is_empty() {
            b.coal.take(|pieces| self.write_tun(pieces, st));
        }
    }

    /// Writes one packet, gathered from `pieces` (virtio-net header first).
    fn write_tun(&self, pieces: &[&[u8]], st: &mut Local) {
        let mut iov: [libc::iovec; 80] = unsafe { std::mem::zeroed() };
        let n = pieces.len().min(iov.len());
        let mut len = 0;
        for (v, p) in iov.iter_mut().zip(pieces) {
            *v = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
            len += p.len();
        }
        // SAFETY: the iovecs point into `pieces`, alive for the call.
        let r = unsafe { libc::writev(self.tun.as_raw_fd(), iov.as_ptr(), n as i32) };
        if r < 0 {
            st.add(stat::DROP_TUN_WRITE, len);
        } else if pieces[0].get(1) == Some(&VNET_GSO_TCPV4) {
            st.packets[stat::GRO_WRITES] += 1;
        }
    }
}

/// The segment size UDP GRO reported for a message, if it merged any.
fn gro_size(m: &libc::msghdr) -> Option<usize> {
    // SAFETY: walking the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == sys::UDP_GRO {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int) as usize);
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}
