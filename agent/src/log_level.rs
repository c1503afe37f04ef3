//! `weftd log-level off|debug`: switches the kernel programs' debug logs at
//! run time, without a restart, by flipping `cfg_flags::LOG_DEBUG` in the
//! pinned `weft_config` (the programs read it per packet; the running weftd
//! prints what they log). A restarted weftd starts with them off again.
use std::path::PathBuf;

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use clap::Parser;
use weft_common::{cfg_flags, map_names, DatapathConfig};

use crate::dataplane::pinned;

#[derive(Parser, Debug)]
#[command(name = "weftd log-level", about = "Switch the kernel programs' debug logs on or off at run time")]
pub struct LogLevelArgs {
    #[arg(value_parser = ["off", "debug"])]
    pub level: String,
    /// weftd's --bpf-pin-dir.
    #[arg(long, env = "WEFTD_BPF_PIN_DIR", default_value = "/sys/fs/bpf/weft")]
    pub bpf_pin_dir: PathBuf,
}

pub fn run(a: &LogLevelArgs) -> Result<String> {
    let data = pinned::map(&a.bpf_pin_dir, map_names::CONFIG).with_context(|| format!("is weftd running with --bpf-pin-dir {}?", a.bpf_pin_dir.display()))?;
    let mut cfg: Array<MapData, DatapathConfig> = Array::try_from(Map::Array(data)).context("weft_config is not an array of DatapathConfig")?;
    let mut c = cfg.get(&0, 0).context("reading weft_config")?;
    if a.level == "debug" {
        c.flags |= cfg_flags::LOG_DEBUG;
    } else {
        c.flags &= !cfg_flags::LOG_DEBUG;
    }
    cfg.set(0, c, 0).context("writing weft_config")?;
    Ok(format!("kernel-side logs: {} (weft_config flags {:#x} in {})", a.level, c.flags, a.bpf_pin_dir.display()))
}
