//! Userspace GRO for writes into the TUN: consecutive TCP segments of one
//! flow, as they arrive in a UDP-GRO batch, are merged into one TSO packet
//! with a virtio-net header, so the kernel takes 64 KB per write instead of
//! one MTU-sized packet. The merge rules are the kernel's own
//! (tcp_gro_receive): same addresses, ports, TOS, TTL, DF, ACK and options;
//! sequence numbers back to back; only ACK/PSH set; every segment but the
//! last exactly `gso_size` long; a PSH or a short segment ends the packet.
use super::{csum, packet::IPPROTO_TCP};

/// virtio_net_hdr (legacy, native byte order: the TUN is told nothing else).
pub const VNET_HDR_LEN: usize = 10;
pub const VNET_F_NEEDS_CSUM: u8 = 1;
pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;

/// Largest merged IP packet (IPv4 total length is 16 bits).
const MAX_LEN: usize = 65_535;
/// The kernel's limit on segments per GSO packet is higher; this keeps a
/// merged packet within what GRO itself builds.
const MAX_SEGS: usize = 64;

/// One packet being built: its virtio-net header and IP/TCP headers here,
/// its payloads where they were received (no copy; the kernel gathers them
/// with one `writev`).
pub struct Coalescer {
    /// virtio-net header + the first segment's IP and TCP headers.
    head: [u8; VNET_HDR_LEN + 120],
    head_len: usize,
    /// The payloads, in order: (start, length) in the caller's buffers.
    parts: Vec<(*const u8, usize)>,
    /// IP total length so far.
    total: usize,
    /// Header length (IP + TCP) of the packet being built; 0 = none,
    /// `usize::MAX` = a packet that cannot be continued.
    hl: usize,
    gso_size: usize,
    next_seq: u32,
    /// No more may be appended (a PSH or a short segment came).
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer { head: [0; VNET_HDR_LEN + 120], head_len: 0, parts: Vec::with_capacity(MAX_SEGS), total: 0, hl: 0, gso_size: 0, next_seq: 0, closed: false }
    }
}

/// A TCP segment that may take part in a merge: plain IPv4 (no options, not
/// a fragment), only ACK (and PSH) set, some payload, checksum correct (a
/// merged packet gets its checksum from the kernel, so a corrupt segment
/// must never be merged). Returns (IP header length, TCP header length).
pub fn mergeable(pkt: &[u8]) -> Option<(usize, usize)> {
    if pkt.len() < 40 || pkt[0] != 0x45 || pkt[9] != IPPROTO_TCP || u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return None;
    }
    let tcp_hl = ((pkt[32] >> 4) as usize) * 4;
    if tcp_hl < 20 || 20 + tcp_hl >= pkt.len() || pkt[33] & !0x08 != 0x10 {
        return None;
    }
    let tl = (pkt.len() - 20) as u16;
    csum::verifies(csum::add(csum::pseudo(&pkt[12..16], &pkt[16..20], IPPROTO_TCP, tl), &pkt[20..])).then_some((20, tcp_hl))
}

fn seq(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[24], p[25], p[26], p[27]])
}

impl Coalescer {
    pub fn is_empty(&self) -> bool {
        self.hl == 0
    }

    /// Appends `seg` to the packet being built if it continues it; false
    /// (nothing changed) if it does not: flush, then [`Coalescer::start`].
    ///
    /// # Safety
    /// `seg` must stay in place, unchanged, until the next [`Coalescer::take`].
    pub unsafe fn append(&mut self, seg: &[u8]) -> bool {
        if self.hl == 0 || self.hl == usize::MAX || self.closed {
            return false;
        }
        let Some((_, tcp_hl)) = mergeable(seg) else { return false };
        let cur = &self.head[VNET_HDR_LEN..self.head_len];
        let hl = 20 + tcp_hl;
        let len = seg.len() - hl;
        let same_headers = hl == self.hl
            && cur[1] == seg[1]                 // TOS
            && cur[6] == seg[6]                 // DF
            && cur[8] == seg[8]                 // TTL
            && cur[12..24] == seg[12..24]       // addresses, ports
            && cur[28..32] == seg[28..32]       // ACK
            && cur[40..hl] == seg[40..hl]; // options
        if !same_headers || seq(seg) != self.next_seq || len > self.gso_size || self.total + len > MAX_LEN || self.parts.len() >= MAX_SEGS {
            return false;
        }
        self.parts.push((seg[hl..].as_ptr(), len));
        self.total += len;
        // The window and PSH of the latest segment, as GRO keeps them.
        let b = VNET_HDR_LEN;
        self.head[b + 34..b + 36].copy_from_slice(&seg[34..36]);
        self.head[b + 33] |= seg[33] & 0x08;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        self.closed = len < self.gso_size || seg[33] & 0x08 != 0;
        true
    }

    /// Starts a packet with `pkt` (any IPv4 packet; only a mergeable TCP
    /// segment can be continued).
    ///
    /// # Safety
    /// `pkt` must stay in place, unchanged, until the next [`Coalescer::take`].
    pub unsafe fn start(&mut self, pkt: &[u8]) {
        self.parts.clear();
        self.head[..VNET_HDR_LEN].fill(0);
        self.total = pkt.len();
        match mergeable(pkt).filter(|(_, tcp_hl)| 20 + tcp_hl <= self.head.len() - VNET_HDR_LEN) {
            Some((_, tcp_hl)) => {
                self.hl = 20 + tcp_hl;
                self.gso_size = pkt.len() - self.hl;
                self.next_seq = seq(pkt).wrapping_add(self.gso_size as u32);
                self.closed = pkt[33] & 0x08 != 0;
            }
            None => {
                self.hl = usize::MAX;
                self.closed = true;
            }
        }
        // The head holds the headers to rewrite; the rest stays where it is.
        let keep = if self.hl == usize::MAX { 0 } else { self.hl };
        self.head[VNET_HDR_LEN..VNET_HDR_LEN + keep].copy_from_slice(&pkt[..keep]);
        self.head_len = VNET_HDR_LEN + keep;
        self.parts.push((pkt[keep..].as_ptr(), pkt.len() - keep));
    }

    /// Hands the packet to write into the TUN to `write` as the pieces to
    /// gather (virtio-net header and headers first, then the payloads), and
    /// empties the coalescer. A single segment goes as it came (its own
    /// checksum, no GSO); a merged one as TCPV4 GSO with a partial checksum.
    pub fn take<R>(&mut self, write: impl FnOnce(&[&[u8]]) -> R) -> R {
        let (hl, gso_size, segs) = (self.hl, self.gso_size, self.parts.len());
        self.hl = 0;
        if segs > 1 {
            let b = VNET_HDR_LEN;
            let total = self.total;
            self.head[b + 2..b + 4].copy_from_slice(&(total as u16).to_be_bytes());
            csum::fix_ipv4(&mut self.head[b..b + 20]);
            let tl = (total - 20) as u16;
            let ps = csum::fold(csum::pseudo(&self.head[b + 12..b + 16], &self.head[b + 16..b + 20], IPPROTO_TCP, tl)).to_ne_bytes();
            self.head[b + 36..b + 38].copy_from_slice(&ps);
            let h = &mut self.head[..VNET_HDR_LEN];
            h[0] = VNET_F_NEEDS_CSUM;
            h[1] = VNET_GSO_TCPV4;
            h[2..4].copy_from_slice(&(hl as u16).to_ne_bytes());
            h[4..6].copy_from_slice(&(gso_size as u16).to_ne_bytes());
            h[6..8].copy_from_slice(&20u16.to_ne_bytes()); // csum_start: the TCP header
            h[8..10].copy_from_slice(&16u16.to_ne_bytes()); // csum_offset: TCP's checksum field
        }
        let mut pieces: [&[u8]; MAX_SEGS + 1] = [&[]; MAX_SEGS + 1];
        pieces[0] = &self.head[..self.head_len];
        for (p, &(ptr, len)) in pieces[1..].iter_mut().zip(&self.parts) {
            // SAFETY: start/append's callers keep these bytes in place until now.
            *p = unsafe { std::slice::from_raw_parts(ptr, len) };
        }
        let r = write(&pieces[..1 + segs]);
        self.parts.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::udp::packet::tests::tcp4;

    const A: [u8; 4] = [10, 244, 1, 2];
    const B: [u8; 4] = [10, 244, 2, 3];

    fn take_bytes(c: &mut Coalescer) -> Vec<u8> {
        c.take(|pieces| pieces.concat())
    }

    /// Sums a merged packet as the kernel will (partial checksum completed).
    fn complete(merged: &[u8]) -> Vec<u8> {
        let mut p = merged[VNET_HDR_LEN..].to_vec();
        crate::backend::udp::packet::complete_csum(&mut p, 20, 16).unwrap();
        p
    }

    #[test]
    fn merges_a_run_and_stops_at_psh() {
        let mut c = Coalescer::default();
        let segs: Vec<Vec<u8>> = (0..4u32).map(|i| tcp4(A, B, 100 + i * 1000, if i == 3 { 0x18 } else { 0x10 }, &[i as u8; 1000])).collect();
        unsafe { c.start(&segs[0]) };
        for s in &segs[1..] {
            assert!(unsafe { c.append(s) });
        }
        let late = tcp4(A, B, 4100, 0x10, &[9; 1000]);
        assert!(!unsafe { c.append(&late) }, "nothing after PSH");
        let out = take_bytes(&mut c);
        assert_eq!(out[1], VNET_GSO_TCPV4);
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 1000);
        let p = complete(&out);
        assert!(crate::backend::udp::packet::tests::tcp_ok(&p));
        assert_eq!(p.len(), 40 + 4000);
        assert_eq!(p[33], 0x18);
        assert!(c.is_empty());
    }

    #[test]
    fn refuses_what_gro_refuses() {
        let mut c = Coalescer::default();
        let first = tcp4(A, B, 100, 0x10, &[1; 1000]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("gap in sequence", tcp4(A, B, 1101, 0x10, &[1; 1000])),
            ("other flow", tcp4(A, [10, 244, 2, 4], 1100, 0x10, &[1; 1000])),
            ("longer than gso_size", tcp4(A, B, 1100, 0x10, &[1; 1001])),
            ("FIN", tcp4(A, B, 1100, 0x11, &[1; 1000])),
            ("bad checksum", {
                let mut p = tcp4(A, B, 1100, 0x10, &[1; 1000]);
                p[100] ^= 1;
                p
            }),
        ];
        for (what, seg) in &cases {
            unsafe { c.start(&first) };
            assert!(!unsafe { c.append(seg) }, "{what}");
            take_bytes(&mut c);
        }
        // A short segment is taken, and ends the packet.
        let (short, after) = (tcp4(A, B, 1100, 0x10, &[1; 10]), tcp4(A, B, 1110, 0x10, &[1; 10]));
        unsafe { c.start(&first) };
        assert!(unsafe { c.append(&short) });
        assert!(!unsafe { c.append(&after) });
    }

    #[test]
    fn a_single_packet_goes_as_it_came() {
        let mut c = Coalescer::default();
        let p = tcp4(A, B, 100, 0x10, &[1; 100]);
        unsafe { c.start(&p) };
        let out = take_bytes(&mut c);
        assert_eq!(&out[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&out[VNET_HDR_LEN..], &p[..]);
    }
}
