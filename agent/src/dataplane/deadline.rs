//! weftd's deadline in the pinned `weft_deadline` map: while weftd runs it
//! moves the deadline `--datapath-grace-secs` ahead every few seconds; once
//! the kernel's clock passes it, every weft program stands aside (passes
//! packets to the kernel untouched, see `ebpf/src/verdict.rs`), and the
//! kernel's own vxlan device, programmed beside weft's maps, carries the
//! traffic. So weft's pinned programs, which outlive weftd on purpose (a
//! restart or upgrade loses nothing), never carry traffic for long from
//! maps nobody updates: after a rollback to flanneld, flanneld's kernel
//! path does.
//!
//! The clock is `bpf_ktime_get_ns`'s: CLOCK_MONOTONIC, in nanoseconds.
use std::{os::fd::AsFd, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};

/// The writer of `weft_deadline` (its own handle on the map, so that a
/// task can move the deadline on beside the [`super::Datapath`]).
pub struct Deadline {
    map: Array<MapData, u64>,
    grace: Duration,
}

/// CLOCK_MONOTONIC now, in ns (`bpf_ktime_get_ns`'s clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The deadline written at `now` (ns) with `grace`: 0 (none, never stand
/// aside) for a zero grace.
pub fn deadline_at(now: u64, grace: Duration) -> u64 {
    if grace.is_zero() {
        0
    } else {
        now.saturating_add(grace.as_nanos().min(u64::MAX as u128) as u64)
    }
}

/// How often the deadline moves on: a third of the grace (two refreshes
/// may be late before the programs stand aside), at most every 5 s, at
/// least every 100 ms.
pub fn refresh_every(grace: Duration) -> Duration {
    (grace / 3).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

impl Deadline {
    /// A handle of its own on `map` (a duplicate of its fd).
    pub fn new(map: &MapData, grace: Duration) -> Result<Deadline> {
        let fd = map.fd().as_fd().try_clone_to_owned().context("duplicating weft_deadline's fd")?;
        let map = Array::try_from(Map::Array(MapData::from_fd(fd).context("reopening weft_deadline")?))?;
        Ok(Deadline { map, grace })
    }

    /// Moves the deadline to now + grace.
    pub fn refresh(&mut self) -> Result<()> {
        self.map.set(0, deadline_at(monotonic_ns(), self.grace), 0).context("writing weft_deadline")
    }

    /// Writes `ns` as the deadline (tests: a past or future one).
    pub fn set(&mut self, ns: u64) -> Result<()> {
        self.map.set(0, ns, 0).context("writing weft_deadline")
    }

    /// Moves the deadline on every [`refresh_every`] in a task of its own
    /// (a map write, never blocking the event loop), for as long as the
    /// returned [`Refresher`] lives; a failed write is logged once per run
    /// of failures.
    pub fn spawn_refresher(mut self) -> Refresher {
        let every = refresh_every(self.grace);
        Refresher(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.refresh() {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        log::warn!("{e:#}: weft's programs stand aside once the last deadline passes");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

/// The task moving the deadline on; stopped when dropped.
pub struct Refresher(tokio::task::JoinHandle<()>);

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_now_plus_grace_or_none() {
        assert_eq!(deadline_at(1_000, Duration::from_secs(30)), 30_000_001_000);
        assert_eq!(deadline_at(1_000, Duration::ZERO), 0, "0: never stand aside");
        assert_eq!(deadline_at(u64::MAX - 1, Duration::from_secs(1)), u64::MAX);
    }

    #[test]
    fn refreshes_well_within_the_grace() {
        assert_eq!(refresh_every(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(refresh_every(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(refresh_every(Duration::from_millis(30)), Duration::from_millis(100));
    }

    #[test]
    fn the_clock_moves_on() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_ns() > a);
    }
}
