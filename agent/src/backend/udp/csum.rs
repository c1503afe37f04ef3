//! The Internet checksum (RFC 1071) for the udp path's userspace packet work.
//!
//! Every sum here is over 16-bit words loaded in the machine's own byte
//! order: the one's-complement sum is byte-order independent, so the folded
//! result's native bytes are exactly the bytes to store (no swaps per word).

/// Adds `data` to a running sum (unfolded; fold with [`fold`]).
///
/// The bulk goes 16 bytes at a time into four independent sums of 32-bit
/// words (no carries to chain: 2^32 words fit a u64), which the compiler
/// turns into vector adds; that is about twice the speed of one 64-bit
/// add-with-carry chain, and this sum runs over every byte the udp path
/// moves (segment checksums on send, verification on receive). Summing
/// 32-bit words is the same one's-complement sum: 2^16 = 1 modulo 2^16 - 1.
#[inline]
pub fn add(acc: u64, data: &[u8]) -> u64 {
    let mut wide = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        for (k, w) in wide.iter_mut().enumerate() {
            *w += u32::from_ne_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]]) as u64;
        }
    }
    let acc = add_word(add_word(acc, wide[0] + wide[1]), wide[2] + wide[3]);
    add_tail(acc, blocks.remainder())
}

/// The last 0..16 bytes of [`add`].
#[inline]
fn add_tail(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(v);
        acc = s + carry as u64;
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        acc = add_word(acc, u16::from_ne_bytes([rest[0], rest[1]]) as u64);
        rest = &rest[2..];
    }
    if let [b] = rest {
        acc = add_word(acc, u16::from_ne_bytes([*b, 0]) as u64);
    }
    acc
}

#[inline]
fn add_word(acc: u64, w: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(w);
    s + carry as u64
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The pseudo-header of TCP or UDP over IPv4 (`l4_len` = header + payload).
#[inline]
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, l4_len: u16) -> u64 {
    let acc = add(0, src);
    let acc = add(acc, dst);
    let acc = add_word(acc, u16::from_ne_bytes([0, proto]) as u64);
    add_word(acc, u16::from_ne_bytes(l4_len.to_be_bytes()) as u64)
}

/// The checksum field's bytes for the data summed in `acc`.
#[inline]
pub fn finish(acc: u64) -> [u8; 2] {
    (!fold(acc)).to_ne_bytes()
}

/// Recomputes the IPv4 header checksum of `hdr` (the whole header, options included).
pub fn fix_ipv4(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    let c = finish(add(0, hdr));
    hdr[10..12].copy_from_slice(&c);
}

/// True when the data (with its checksum field in place) sums to 0xffff.
pub fn verifies(acc: u64) -> bool {
    fold(acc) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: big-endian 16-bit words, one at a time.
    fn slow(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn matches_the_word_at_a_time_sum_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for n in 0..data.len() {
            let ours = u16::from_be_bytes(finish(add(0, &data[..n])));
            assert_eq!(ours, slow(&data[..n]), "length {n}");
        }
        let ones = vec![0xffu8; 4097];
        assert_eq!(u16::from_be_bytes(finish(add(0, &ones))), slow(&ones));
        // The largest inputs, and a running sum carried in, as the udp path adds them.
        let big: Vec<u8> = (0..65_535u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        assert_eq!(u16::from_be_bytes(finish(add(0, &big))), slow(&big));
        let full = vec![0xffu8; 65_535];
        assert_eq!(u16::from_be_bytes(finish(add(0, &full))), slow(&full));
        let split = add(add(0, &big[..1000]), &big[1000..]);
        assert_eq!(fold(split), fold(add(0, &big)));
    }

    #[test]
    fn ipv4_header_from_rfc1071_example() {
        // A real header (Wikipedia's example): checksum 0xb861.
        let mut h = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        fix_ipv4(&mut h);
        assert_eq!(&h[10..12], &[0xb8, 0x61]);
        assert!(verifies(add(0, &h)));
    }
}
