//! MAC addresses as weft writes them everywhere they leave a program (lease
//! VtepMAC, endpoint records, logs): six lower-case hex pairs joined by ':',
//! as Go's net.HardwareAddr and iproute2 print them.

/// "0a:58:0a:f4:01:05"
#[cfg(feature = "std")]
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// The inverse of [`format_mac`] (either case); None unless exactly six
/// two-digit hex pairs.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let m = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff];
        assert_eq!(format_mac(&m), "0a:58:0a:f4:01:ff");
        assert_eq!(parse_mac("0a:58:0a:f4:01:ff"), Some(m));
        assert_eq!(parse_mac("0A:58:0A:F4:01:FF"), Some(m));
        for bad in ["", "zz:00:00:00:00:00", "0a:58:0a:f4:01", "0a:58:0a:f4:01:ff:00", "a:58:0a:f4:01:ff"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
