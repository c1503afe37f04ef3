//! What the udp path does to an inner IPv4 packet, as pure functions over
//! byte slices (no I/O, no allocation): flannel's TTL rule, the ICMP
//! net-unreachable it writes back, and the two offload halves: segmenting a
//! TSO packet read from the TUN into wire-sized packets (flannel's wire
//! format carries one IP packet per datagram) and completing a partial
//! checksum.
use super::csum;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Why a packet was refused; each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not IPv4, or its header or lengths do not add up.
    Malformed,
    /// TTL would reach 0 (flannel: dropped, no ICMP).
    Ttl,
}

/// The checked facts of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    pub header_len: usize,
    pub total_len: usize,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// Parses the IPv4 header of `pkt`, which must be exactly one packet
/// (total length = the slice's length, as flannel's datagrams are).
pub fn parse_ipv4(pkt: &[u8]) -> Result<Ipv4, Refused> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return Err(Refused::Malformed);
    }
    let header_len = ((pkt[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    if header_len < 20 || total_len < header_len || total_len != pkt.len() {
        return Err(Refused::Malformed);
    }
    Ok(Ipv4 { header_len, total_len, proto: pkt[9], src: [pkt[12], pkt[13], pkt[14], pkt[15]], dst: [pkt[16], pkt[17], pkt[18], pkt[19]] })
}

/// flannel's rule, on send and on receive: TTL - 1, and a packet whose TTL
/// would reach 0 is dropped. The header checksum is fixed incrementally
/// (RFC 1624), so a header with a wrong checksum stays wrong.
pub fn decrement_ttl(pkt: &mut [u8]) -> Result<(), Refused> {
    if pkt[8] <= 1 {
        return Err(Refused::Ttl);
    }
    pkt[8] -= 1;
    // HC' = ~(~HC + ~m + m'), m = the old (ttl, proto) word, m' = the new one.
    let old = u16::from_be_bytes([pkt[8] + 1, pkt[9]]) as u32;
    let new = u16::from_be_bytes([pkt[8], pkt[9]]) as u32;
    let hc = u16::from_be_bytes([pkt[10], pkt[11]]) as u32;
    let mut s = (!hc & 0xffff) + (!old & 0xffff) + new;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    pkt[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    Ok(())
}

/// Writes into `out` the ICMP destination-unreachable (net unreachable)
/// answer to `offender`, as flannel's proxy writes it back into its TUN: from
/// the offender's destination to its source, carrying its IP header and
/// first 8 bytes. Returns the length written (`out` must hold 576 bytes).
pub fn icmp_net_unreachable(offender: &[u8], out: &mut [u8]) -> usize {
    let hl = ((offender[0] & 0x0f) as usize * 4).clamp(20, offender.len());
    let quoted = (hl + 8).min(offender.len());
    let len = 20 + 8 + quoted;
    let out = &mut out[..len];
    out[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[12..16].copy_from_slice(&offender[16..20]);
    out[16..20].copy_from_slice(&offender[12..16]);
    csum::fix_ipv4(&mut out[..20]);
    out[20..28].copy_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // type 3 code 0
    out[28..].copy_from_slice(&offender[..quoted]);
    let c = csum::finish(csum::add(0, &out[20..]));
    out[22..24].copy_from_slice(&c);
    len
}

/// Completes a partial checksum (virtio-net's NEEDS_CSUM): the field at
/// `start + offset` holds the pseudo-header sum; sum from `start` to the end
/// and store the result there.
pub fn complete_csum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), Refused> {
    if start >= pkt.len() || start + offset + 2 > pkt.len() {
        return Err(Refused::Malformed);
    }
    let c = csum::finish(csum::add(0, &pkt[start..]));
    pkt[start + offset..start + offset + 2].copy_from_slice(&c);
    Ok(())
}

/// TCP flags.
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// How a TSO packet splits: header length, segment payload size, count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// IP + TCP header length (each segment starts with its own copy).
    pub hl: usize,
    pub mss: usize,
    pub count: usize,
    /// Payload bytes in all.
    pub payload: usize,
}

impl Segments {
    /// Length of every segment but the last (which may be shorter).
    pub fn seg_len(&self) -> usize {
        self.hl + self.mss.min(self.payload.max(1))
    }
    /// Payload range of segment `i` within the TSO packet.
    pub fn payload_range(&self, i: usize) -> std::ops::Range<usize> {
        self.hl + (i * self.mss).min(self.payload)..self.hl + ((i + 1) * self.mss).min(self.payload)
    }
}

/// Segments a TCP/IPv4 TSO packet (`pkt`: IPv4 header, TCP header, payload;
/// its TCP checksum field holds whatever the sender left) into packets of at
/// most `mss` payload bytes without copying the payload: writes only each
/// segment's headers, back to back, into `hdrs` (cleared first), each with
/// its own IP id, total length and header checksum, TCP sequence number,
/// flags (FIN and PSH only on the last, CWR only on the first) and full TCP
/// checksum (over its payload, read in place), and with the TTL decremented
/// (the sender's half of flannel's rule). Segment `i` on the wire is header
/// `i` followed by `pkt[payload_range(i)]`.
pub fn segment_tcp4_headers(pkt: &[u8], mss: usize, hdrs: &mut Vec<u8>) -> Result<Segments, Refused> {
    let ip = parse_ipv4(pkt)?;
    if ip.proto != IPPROTO_TCP || mss == 0 || pkt.len() < ip.header_len + 20 {
        return Err(Refused::Malformed);
    }
    let th = ip.header_len;
    let tcp_hl = ((pkt[th + 12] >> 4) as usize) * 4;
    let hl = th + tcp_hl;
    if tcp_hl < 20 || hl > pkt.len() {
        return Err(Refused::Malformed);
    }
    if pkt[8] <= 1 {
        return Err(Refused::Ttl);
    }
    let payload = pkt.len() - hl;
    let segs = Segments { hl, mss, count: payload.div_ceil(mss).max(1), payload };
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq0 = u32::from_be_bytes([pkt[th + 4], pkt[th + 5], pkt[th + 6], pkt[th + 7]]);
    let flags = pkt[th + 13];
    hdrs.clear();
    for i in 0..segs.count {
        let chunk = &pkt[segs.payload_range(i)];
        let at = hdrs.len();
        hdrs.extend_from_slice(&pkt[..hl]);
        let h = &mut hdrs[at..];
        h[2..4].copy_from_slice(&((hl + chunk.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        h[8] -= 1;
        csum::fix_ipv4(&mut h[..th]);
        h[th + 4..th + 8].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < segs.count {
            f &= !(FIN | PSH);
        }
        if i > 0 {
            f &= !CWR;
        }
        h[th + 13] = f;
        h[th + 16] = 0;
        h[th + 17] = 0;
        let tcp_len = (tcp_hl + chunk.len()) as u16;
        let acc = csum::add(csum::add(csum::pseudo(&h[12..16], &h[16..20], IPPROTO_TCP, tcp_len), &h[th..hl]), chunk);
        h[th + 16..th + 18].copy_from_slice(&csum::finish(acc));
    }
    Ok(segs)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// [`segment_tcp4_headers`] with every segment laid out whole, back to
    /// back, in `out` (header, then its payload): what goes on the wire.
    fn segment_tcp4(pkt: &[u8], mss: usize, out: &mut Vec<u8>) -> Result<Segments, Refused> {
        let mut hdrs = Vec::new();
        let segs = segment_tcp4_headers(pkt, mss, &mut hdrs)?;
        out.clear();
        for (i, h) in hdrs.chunks(segs.hl).enumerate() {
            out.extend_from_slice(h);
            out.extend_from_slice(&pkt[segs.payload_range(i)]);
        }
        Ok(segs)
    }

    /// A TCP/IPv4 packet with valid checksums.
    pub fn tcp4(src: [u8; 4], dst: [u8; 4], seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        csum::fix_ipv4(&mut p[..20]);
        let tl = (20 + payload.len()) as u16;
        let c = csum::finish(csum::add(csum::pseudo(&p[12..16], &p[16..20], IPPROTO_TCP, tl), &p[20..]));
        p[36..38].copy_from_slice(&c);
        p
    }

    pub fn tcp_ok(p: &[u8]) -> bool {
        let ip = parse_ipv4(p).unwrap();
        let tl = (p.len() - ip.header_len) as u16;
        csum::verifies(csum::add(0, &p[..ip.header_len]))
            && csum::verifies(csum::add(csum::pseudo(&p[12..16], &p[16..20], IPPROTO_TCP, tl), &p[ip.header_len..]))
    }

    #[test]
    fn ttl_rule_keeps_the_header_checksum_valid() {
        let mut p = tcp4([10, 244, 1, 2], [10, 244, 2, 3], 1, 0x10, b"x");
        decrement_ttl(&mut p).unwrap();
        assert_eq!(p[8], 63);
        assert!(tcp_ok(&p));
        p[8] = 1;
        csum::fix_ipv4(&mut p[..20]);
        assert_eq!(decrement_ttl(&mut p), Err(Refused::Ttl));
        p[8] = 0;
        assert_eq!(decrement_ttl(&mut p), Err(Refused::Ttl));
    }

    #[test]
    fn parse_refuses_bad_lengths_and_versions() {
        let p = tcp4([10, 244, 1, 2], [10, 244, 2, 3], 1, 0x10, b"hello");
        assert!(parse_ipv4(&p).is_ok());
        assert_eq!(parse_ipv4(&p[..p.len() - 1]), Err(Refused::Malformed));
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(parse_ipv4(&v6), Err(Refused::Malformed));
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert_eq!(parse_ipv4(&short_ihl), Err(Refused::Malformed));
        assert_eq!(parse_ipv4(&p[..19]), Err(Refused::Malformed));
    }

    #[test]
    fn icmp_unreachable_quotes_the_offender() {
        let p = tcp4([10, 244, 1, 2], [10, 99, 2, 3], 1, 0x10, &[7; 100]);
        let mut out = [0u8; 576];
        let n = icmp_net_unreachable(&p, &mut out);
        let r = &out[..n];
        assert_eq!(n, 20 + 8 + 28);
        let ip = parse_ipv4(r).unwrap();
        assert_eq!((ip.proto, ip.src, ip.dst), (IPPROTO_ICMP, [10, 99, 2, 3], [10, 244, 1, 2]));
        assert!(csum::verifies(csum::add(0, &r[..20])));
        assert_eq!((r[20], r[21]), (3, 0));
        assert!(csum::verifies(csum::add(0, &r[20..])));
        assert_eq!(&r[28..], &p[..28]);
    }

    #[test]
    fn tso_segments_are_valid_tcp_that_add_up_to_the_payload() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let big = tcp4([10, 244, 1, 2], [10, 244, 2, 3], 1000, 0x18 | 0x80 | 0x01, &payload);
        let mut out = Vec::new();
        let segs = segment_tcp4(&big, 1400, &mut out).unwrap();
        let (seg_len, n) = (segs.seg_len(), segs.count);
        assert_eq!((seg_len, n), (1440, 8));
        let mut got = Vec::new();
        for (i, seg) in out.chunks(seg_len).enumerate() {
            assert!(tcp_ok(seg), "segment {i}");
            assert_eq!(seg[8], 63, "TTL decremented");
            assert_eq!(u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]), 1000 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1234 + i as u16);
            let f = seg[33];
            assert_eq!(f & 0x80 != 0, i == 0, "CWR only on the first");
            assert_eq!(f & 0x09 != 0, i == n - 1, "FIN and PSH only on the last");
            got.extend_from_slice(&seg[40..]);
        }
        assert_eq!(got, payload);
        assert_eq!(out.len(), 8 * 40 + 10_000);
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut p = tcp4([10, 244, 1, 2], [10, 244, 2, 3], 1, 0x10, b"partial checksum");
        // What a NEEDS_CSUM packet looks like: the field holds the pseudo-header sum.
        let tl = (p.len() - 20) as u16;
        let ps = csum::fold(csum::pseudo(&p[12..16], &p[16..20], IPPROTO_TCP, tl)).to_ne_bytes();
        p[36..38].copy_from_slice(&ps);
        complete_csum(&mut p, 20, 16).unwrap();
        assert!(tcp_ok(&p));
        assert_eq!(complete_csum(&mut p, 60, 16), Err(Refused::Malformed));
    }
}
