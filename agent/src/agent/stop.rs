//! SIGTERM and SIGINT, handled from weftd's first step. A signal during
//! start-up (the DaemonSet's pod deleted while weftd waits for its podCIDR
//! or has just taken its lease) ends weftd through its shutdown path, so
//! `--cleanup-on-exit` still removes the lease and what weftd made; left to
//! the signal's default action, weftd died mid-start and its lease stayed.
use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    /// Takes over SIGTERM and SIGINT for the rest of weftd's life.
    pub fn install() -> Result<Stop> {
        Ok(Stop { term: signal(SignalKind::terminate()).context("handling SIGTERM")?, int: signal(SignalKind::interrupt()).context("handling SIGINT")? })
    }

    /// Resolves at the next SIGTERM or SIGINT, with its name.
    pub async fn signalled(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
