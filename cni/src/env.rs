//! The runtime's parameters: the `CNI_*` environment variables, checked the
//! way the spec defines them (error 4 names the variable).
use std::path::PathBuf;

use crate::error::{code, CniError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// One attachment: `(CNI_CONTAINERID, CNI_IFNAME)` and the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS`; optional for DEL only.
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    /// Set for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
}

fn invalid(var: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_ENV, format!("invalid {var}: {why}"))
}

/// The spec's rule for container IDs: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`. (weft-cni also puts it in file names, so
/// the rule keeps paths inside their directories.)
pub fn valid_container_id(id: &str) -> bool {
    let mut c = id.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphanumeric()) && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// The spec's (and Linux's) rule for interface names.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > 15 {
        return Some("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Some("'.' or '..'");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Some("contains '/', ':' or whitespace");
    }
    None
}

impl Env {
    /// Reads the parameters through `get` (the process environment in main).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let command = match get("CNI_COMMAND").as_deref() {
            None | Some("") => return Err(CniError::new(code::INVALID_ENV, "required environment variable CNI_COMMAND is missing")),
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => return Err(invalid("CNI_COMMAND", format!("unknown command {other:?} (ADD, DEL, CHECK, VERSION, STATUS, GC)"))),
        };
        let attachment = match command {
            Command::Add | Command::Del | Command::Check => {
                let mut missing = Vec::new();
                let container_id = get("CNI_CONTAINERID").filter(|s| !s.is_empty());
                let ifname = get("CNI_IFNAME").filter(|s| !s.is_empty());
                let netns = get("CNI_NETNS").filter(|s| !s.is_empty());
                if container_id.is_none() {
                    missing.push("CNI_CONTAINERID");
                }
                if ifname.is_none() {
                    missing.push("CNI_IFNAME");
                }
                if netns.is_none() && command != Command::Del {
                    missing.push("CNI_NETNS");
                }
                if !missing.is_empty() {
                    return Err(CniError::new(
                        code::INVALID_ENV,
                        format!("required environment variables missing for {}: {}", command.name(), missing.join(", ")),
                    ));
                }
                let (container_id, ifname) = (container_id.unwrap_or_default(), ifname.unwrap_or_default());
                if !valid_container_id(&container_id) {
                    return Err(invalid(
                        "CNI_CONTAINERID",
                        format!("{container_id:?} must start with an alphanumeric character followed by alphanumerics, '_', '.' or '-'"),
                    ));
                }
                if let Some(why) = ifname_problem(&ifname) {
                    return Err(invalid("CNI_IFNAME", format!("{ifname:?} is not an interface name: {why}")));
                }
                if let Some(ns) = &netns {
                    if !ns.starts_with('/') {
                        return Err(invalid("CNI_NETNS", format!("{ns:?} is not an absolute path")));
                    }
                }
                Some(Attachment { container_id, ifname, netns: netns.map(PathBuf::from) })
            }
            _ => None,
        };
        Ok(Env { command, attachment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::parse(|k| m.get(k).cloned())
    }

    #[test]
    fn parses_and_names_what_is_wrong() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/var/run/netns/x")]).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.attachment.unwrap().netns, Some(PathBuf::from("/var/run/netns/x")));
        let err = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.msg.contains("CNI_CONTAINERID") && err.msg.contains("CNI_NETNS"), "{err}");
        // DEL without a namespace is fine.
        assert!(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]).is_ok());
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
        assert!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().msg.contains("FOO"));
        for bad in ["../etc", "-a", "a/b", "a b", ""] {
            let r = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", bad), ("CNI_IFNAME", "eth0")]);
            assert_eq!(r.unwrap_err().code, code::INVALID_ENV, "{bad:?}");
        }
        for bad in ["eth0:1", "a/b", "..", "abcdefghijklmnop"] {
            let r = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", bad)]);
            assert!(r.unwrap_err().msg.contains("CNI_IFNAME"), "{bad:?}");
        }
        assert!(env(&[("CNI_COMMAND", "VERSION")]).unwrap().attachment.is_none());
    }
}
