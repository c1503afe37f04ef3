//! weft-cni, run by a container runtime as the CNI spec (1.0.0, 1.1.0)
//! says: the command and the attachment in `CNI_*` environment variables,
//! the network config on stdin, the result (ADD, VERSION) or an error
//! object on stdout. Exit status 0 on success, 1 with an error object on
//! stdout (and one line on stderr for the runtime's log) on failure.
use std::io::{Read, Write};

use serde_json::{json, Value};
use weft_cni::{
    add, check,
    config::{self, NetConf},
    del,
    env::{Command, Env},
    error::{code, CniError, Result},
    gc, status, version,
};

fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    if env.command == Command::Version {
        // The version asked about, if any; VERSION never fails on its input.
        let asked = config::peek_version(stdin).unwrap_or_else(|| version::LATEST.to_string());
        return Ok(Some(json!({"cniVersion": asked, "supportedVersions": version::SUPPORTED})));
    }
    let conf = NetConf::parse(stdin)?;
    version::require_command(&conf.cni_version, env.command.name())?;
    let att = env.attachment.as_ref();
    let need = || att.ok_or_else(|| CniError::internal("no attachment parameters"));
    match env.command {
        Command::Add => add::add(&conf, need()?).map(Some),
        Command::Del => del::del(&conf, need()?).map(|_| None),
        Command::Check => check::check(&conf, need()?).map(|_| None),
        Command::Status => status::status(&conf).map(|_| None),
        Command::Gc => gc::gc(&conf).map(|_| None),
        Command::Version => Ok(None),
    }
}

fn main() -> std::process::ExitCode {
    let mut stdin = Vec::new();
    let r = Env::parse(|k| std::env::var(k).ok()).and_then(|env| {
        std::io::stdin().read_to_end(&mut stdin).map_err(|e| CniError::new(code::IO, format!("reading the network config from stdin: {e}")))?;
        run(&env, &stdin)
    });
    let mut out = std::io::stdout().lock();
    match r {
        Ok(v) => {
            if let Some(v) = v {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let ver = config::peek_version(&stdin).filter(|v| version::SUPPORTED.contains(&v.as_str())).unwrap_or_else(|| version::LATEST.to_string());
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&e.to_json(&ver)).unwrap_or_default());
            eprintln!("weft-cni: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
