//! The CNI spec versions weft-cni speaks, and which command needs which.
//!
//! All five are implemented: results for 0.3.x and 0.4.0 carry
//! `"version": "4"` in each IP (removed in 1.0.0), 1.1.0 results carry each
//! interface's `mtu`; CHECK exists from 0.4.0, STATUS and GC from 1.1.0.
//! 0.1.0 and 0.2.0 (a different, flat result type) are not supported.
use crate::error::{code, CniError, Result};

pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version weft-cni speaks (VERSION's answer when asked without one).
pub const LATEST: &str = "1.1.0";

/// (major, minor, patch) of a plain "x.y.z" version.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.');
    let t = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if it.next().is_some() {
        return None;
    }
    Some(t)
}

/// `v >= min`, both plain versions (false if `v` does not parse).
pub fn at_least(v: &str, min: &str) -> bool {
    match (parse(v), parse(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// Error 1 unless `v` is one of [`SUPPORTED`].
pub fn require_supported(v: &str) -> Result<()> {
    if SUPPORTED.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI version")
        .with_details(format!("config is {v:?}, weft-cni supports {}", SUPPORTED.join(", "))))
}

/// Error 1 unless the configuration's version has `command` (CHECK from
/// 0.4.0, STATUS and GC from 1.1.0).
pub fn require_command(v: &str, command: &str) -> Result<()> {
    let min = match command {
        "CHECK" => "0.4.0",
        "STATUS" | "GC" => "1.1.0",
        _ => return Ok(()),
    };
    if at_least(v, min) {
        return Ok(());
    }
    Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("config version {v} does not allow {command}"))
        .with_details(format!("{command} needs cniVersion {min} or later")))
}

/// Whether results of version `v` carry `"version": "4"` in each IP.
pub fn ips_have_version(v: &str) -> bool {
    !at_least(v, "1.0.0")
}

/// Whether results of version `v` carry each interface's MTU.
pub fn interfaces_have_mtu(v: &str) -> bool {
    at_least(v, "1.1.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse("1.0.0"), Some((1, 0, 0)));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse("1.0.0.0"), None);
        assert!(at_least("0.4.0", "0.4.0") && at_least("1.0.0", "0.4.0") && !at_least("0.3.1", "0.4.0"));
        assert!(require_supported("0.3.1").is_ok());
        assert_eq!(require_supported("0.2.0").unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(require_supported("").unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(require_command("0.3.1", "CHECK").unwrap_err().code, 1);
        assert!(require_command("0.4.0", "CHECK").is_ok());
        assert_eq!(require_command("1.0.0", "GC").unwrap_err().code, 1);
        assert!(require_command("1.1.0", "STATUS").is_ok());
        assert!(ips_have_version("0.4.0") && !ips_have_version("1.0.0"));
        assert!(interfaces_have_mtu("1.1.0") && !interfaces_have_mtu("1.0.0"));
    }
}
