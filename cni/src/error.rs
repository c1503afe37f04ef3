//! The CNI error result: a code, a message and details, printed on stdout
//! with exit status 1 (spec 1.0.0, section 5 "Error").
//!
//! Codes 1-99 are the spec's well-known ones and mean only what the spec
//! says. Where none fits, weft-cni uses its own codes from 100 up (which the
//! spec leaves to plugins) and 999 for internal failures, the code the
//! reference plugins (containernetworking/plugins) use for theirs.
use std::fmt;

use serde_json::{json, Value};

/// Well-known (1-99) and weft-cni's own (100+) error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration (message names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist (the runtime need not clean up).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (message names them).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (stdin, the allocation store, endpoint records).
    pub const IO: u32 = 5;
    /// Failed to decode content (stdin is not a JSON object).
    pub const DECODE: u32 = 6;
    /// Invalid network config (well-formed JSON, wrong values).
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (weftd has not written subnet.env yet).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// weft-cni's own: every address of the node's subnet is allocated. No
    /// well-known code means "no address": 11 would promise that it clears
    /// up by itself, which only happens if pods are deleted.
    pub const NO_FREE_ADDRESS: u32 = 100;
    /// weft-cni's own: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// Internal failure (netlink and the like), as the reference plugins' `ErrInternal`.
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> CniError {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn internal(msg: impl Into<String>) -> CniError {
        CniError::new(code::INTERNAL, msg)
    }

    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> CniError {
        CniError::new(code::IO, format!("{what}: {e}"))
    }

    /// The spec's error object; `cni_version` is the configuration's when known.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

pub type Result<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(code::DECODE, "bad").with_details("line 1");
        assert_eq!(e.to_json("1.0.0"), json!({"cniVersion": "1.0.0", "code": 6, "msg": "bad", "details": "line 1"}));
        let e = CniError::new(code::TRY_AGAIN_LATER, "later");
        assert!(e.to_json("1.1.0").get("details").is_none());
    }
}
