//! bpffs: mounting it when missing (not a network change), removing a node's
//! pin directory, and reading weft's pinned VTEP map with bpftool.
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cmd;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs at /sys/fs/bpf if it is not mounted there.
pub fn ensure_bpffs() -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !is_bpffs(root) {
        std::fs::create_dir_all(root).context("creating /sys/fs/bpf")?;
        cmd::sh("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])?;
        if !is_bpffs(root) {
            bail!("/sys/fs/bpf is still not a bpffs after mounting");
        }
    }
    Ok(())
}

/// Removes a pin directory this harness created (only below /sys/fs/bpf,
/// only on bpffs).
pub fn remove_pin_dir(dir: &Path) {
    if !dir.starts_with("/sys/fs/bpf/") || dir.components().count() < 5 || !dir.exists() {
        return;
    }
    if !is_bpffs(dir) {
        eprintln!("weft-tests: not removing {}: not on bpffs", dir.display());
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("weft-tests: removing pin dir {}: {e}", dir.display());
    }
}

/// `bpftool map dump pinned <path> -j`, parsed.
pub fn map_dump(path: &Path) -> Result<serde_json::Value> {
    let out = cmd::sh("bpftool", &["map", "dump", "pinned", &path.to_string_lossy(), "-j"])?;
    serde_json::from_str(&out).with_context(|| format!("parsing bpftool output for {}: {out:?}", path.display()))
}

/// `bpftool map dump pinned <path>` as text (for people).
pub fn map_dump_text(path: &Path) -> Result<String> {
    cmd::sh("bpftool", &["map", "dump", "pinned", &path.to_string_lossy()])
}

/// Flattens every number in a JSON value (decimal numbers and "0x.." strings),
/// in order.
/// Packets counted under `index` of a pinned `weft_stats` map, summed over CPUs
/// (bpftool's "formatted" view of the BTF-typed per-CPU values).
pub fn stat_packets(stats_pin: &Path, index: u32) -> Result<u64> {
    Ok(stat_counter(stats_pin, index)?.0)
}

/// (packets, bytes) counted under `index`, summed over CPUs.
pub fn stat_counter(stats_pin: &Path, index: u32) -> Result<(u64, u64)> {
    let dump = map_dump(stats_pin)?;
    let entries = dump.as_array().with_context(|| format!("{}: not a JSON array", stats_pin.display()))?;
    for e in entries {
        let f = &e["formatted"];
        if f["key"].as_u64() == Some(index as u64) {
            let vals = f["values"].as_array().with_context(|| format!("{}: no per-CPU values", stats_pin.display()))?;
            let sum = |field: &str| vals.iter().filter_map(|v| v["value"][field].as_u64()).sum();
            return Ok((sum("packets"), sum("bytes")));
        }
    }
    bail!("{}: no counter {index}", stats_pin.display())
}

fn numbers(v: &serde_json::Value, out: &mut Vec<u64>) {
    match v {
        serde_json::Value::Number(n) => out.extend(n.as_u64()),
        serde_json::Value::String(s) => {
            if let Some(h) = s.strip_prefix("0x") {
                out.extend(u64::from_str_radix(h, 16).ok());
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        serde_json::Value::Object(o) => {
            // prefix_len before data, whatever the map's key order.
            if let (Some(p), Some(d)) = (o.get("prefixlen").or(o.get("prefix_len")), o.get("data")) {
                numbers(p, out);
                numbers(d, out);
            } else {
                o.values().for_each(|x| numbers(x, out));
            }
        }
        _ => {}
    }
}

/// The keys of a dumped LPM map entry list, each flattened to numbers.
fn entry_keys(dump: &serde_json::Value) -> Vec<Vec<u64>> {
    let mut keys = Vec::new();
    for e in dump.as_array().into_iter().flatten() {
        let mut nums = Vec::new();
        let fmt_key = e.get("formatted").and_then(|f| f.get("key"));
        if let Some(k) = fmt_key.or(e.get("key")) {
            numbers(k, &mut nums);
        }
        keys.push(nums);
    }
    keys
}

/// Whether any key of a dumped weft_vteps map holds `subnet` (its 4 address
/// bytes appear contiguously in the key: works for BTF-formatted keys
/// `{"prefix_len":24,"data":[10,244,X,0]}` and raw hex byte arrays alike).
pub fn vteps_contains(dump: &serde_json::Value, subnet: std::net::Ipv4Addr) -> bool {
    let want: Vec<u64> = subnet.octets().iter().map(|&b| b as u64).collect();
    entry_keys(dump).iter().any(|k| k.windows(4).any(|w| w == want.as_slice()))
}

/// The value (peer PublicIP, VtepMAC) of the weft_vteps entry for `subnet`,
/// from a dump: BTF-formatted `{"ip":[..],"mac":[..]}` or raw value bytes
/// (ip 4, mac 6, pad 2).
pub fn vtep_of(dump: &serde_json::Value, subnet: std::net::Ipv4Addr) -> Option<(std::net::Ipv4Addr, [u8; 6])> {
    let want: Vec<u64> = subnet.octets().iter().map(|&b| b as u64).collect();
    let keys = entry_keys(dump);
    let entries = dump.as_array()?;
    let i = keys.iter().position(|k| k.windows(4).any(|w| w == want.as_slice()))?;
    let e = &entries[i];
    let v = e.pointer("/formatted/value").or(e.get("value"))?;
    let mut bytes = Vec::new();
    match (v.get("ip"), v.get("mac")) {
        (Some(ip), Some(mac)) => {
            numbers(ip, &mut bytes);
            numbers(mac, &mut bytes);
        }
        _ => numbers(v, &mut bytes),
    }
    if bytes.len() < 10 || bytes.iter().any(|b| *b > 255) {
        return None;
    }
    let ip = std::net::Ipv4Addr::new(bytes[0] as u8, bytes[1] as u8, bytes[2] as u8, bytes[3] as u8);
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(&bytes[4..10]) {
        *m = *b as u8;
    }
    Some((ip, mac))
}

#[cfg(test)]
mod t {
    use super::*;
    use std::net::Ipv4Addr;
    #[test]
    fn finds_keys() {
        let s = Ipv4Addr::new(10, 244, 7, 0);
        let btf: serde_json::Value =
            serde_json::from_str(r#"[{"key":{"prefix_len":24,"data":[10,244,7,0]},"value":{"ip":[192,168,77,3],"mac":[1,2,3,4,5,6],"_pad":[0,0]}}]"#).unwrap();
        assert!(vteps_contains(&btf, s));
        assert!(!vteps_contains(&btf, Ipv4Addr::new(10, 244, 8, 0)));
        let raw: serde_json::Value = serde_json::from_str(r#"[{"key":["0x18","0x00","0x00","0x00","0x0a","0xf4","0x07","0x00"],"value":["0xc0"]}]"#).unwrap();
        assert!(vteps_contains(&raw, s));
        let fmt: serde_json::Value = serde_json::from_str(r#"[{"key":["0x18"],"formatted":{"key":{"data":[10,244,7,0],"prefix_len":24}}}]"#).unwrap();
        assert!(vteps_contains(&fmt, s));
        assert!(!vteps_contains(&serde_json::json!([]), s));
        assert_eq!(vtep_of(&btf, s), Some((Ipv4Addr::new(192, 168, 77, 3), [1, 2, 3, 4, 5, 6])));
        let raw_v: serde_json::Value = serde_json::from_str(r#"[{"key":["0x18","0x00","0x00","0x00","0x0a","0xf4","0x07","0x00"],"value":["0xc0","0xa8","0x4d","0x03","0x02","0x00","0x00","0x00","0x00","0x07","0x00","0x00"]}]"#).unwrap();
        assert_eq!(vtep_of(&raw_v, s), Some((Ipv4Addr::new(192, 168, 77, 3), [2, 0, 0, 0, 0, 7])));
        assert_eq!(vtep_of(&raw_v, Ipv4Addr::new(10, 244, 8, 0)), None);
    }
}
