//! Running external commands with errors that say what failed and where,
//! plus small helpers (polling, run prefixes, workspace paths).
use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`; returns its stdout, or an error naming the command, its exit
/// status and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.stdout.is_empty() { String::new() } else { format!(" [stdout: {}]", String::from_utf8_lossy(&out.stdout).trim()) }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` and returns its raw output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("spawning `{}`", describe(cmd)))
}

/// Shorthand: runs `prog args...`.
pub fn sh(prog: &str, args: &[&str]) -> Result<String> {
    run(Command::new(prog).args(args))
}

/// How many times longer than written the harness waits for something to
/// happen: `WEFT_TEST_PATIENCE` (a positive integer), 5 unless set. The
/// timeouts in the tests are what this machine needs idle; CI machines
/// have been seen 5-15x slower (weftd's start taking 15 s instead of 1 s),
/// and a wait that succeeds costs nothing extra, so every positive wait
/// (polls, graceful stops, socket steps, etcdctl calls, expected replies)
/// is scaled. Waits that expect nothing to happen are not.
pub fn patience() -> u32 {
    static P: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *P.get_or_init(|| std::env::var("WEFT_TEST_PATIENCE").ok().and_then(|v| v.trim().parse().ok()).filter(|&p| p > 0).unwrap_or(5))
}

/// `d` scaled by [`patience`].
pub fn patient(d: Duration) -> Duration {
    d * patience()
}

/// Polls `f` every `every` until it returns `Ok(Some(v))` or `timeout`
/// (scaled by [`patience`]) passes; on timeout the error carries the last
/// "not yet" reason.
pub fn poll<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Result<Option<T>, String>) -> Result<T> {
    let timeout = patient(timeout);
    let deadline = Instant::now() + timeout;
    let mut last = String::from("never checked");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(why) => last = why,
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(every);
    }
}

/// A short run prefix unique on this machine: `wft<pid%100000><2 base36 chars>`.
/// Netns `<prefix>-sw`, `<prefix>-n1`, `<prefix>-n1-p1` and pin dir
/// `/sys/fs/bpf/<prefix>-n1` all derive from it.
pub fn run_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    const B36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let pid = std::process::id();
    loop {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut x = (nanos as u64) ^ ((n as u64) << 32) ^ ((pid as u64) << 16);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^= x >> 33;
        let r = x as usize % (36 * 36);
        let p = format!("wft{}{}{}", pid % 100_000, B36[r / 36] as char, B36[r % 36] as char);
        let taken = std::path::Path::new(&format!("/var/run/netns/{p}-sw")).exists() || std::path::Path::new(&format!("/sys/fs/bpf/{p}-n1")).exists();
        if !taken {
            return p;
        }
    }
}

/// The workspace root (this crate lives in `<workspace>/tests`).
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// weftd's binary: `$WEFTD_BIN`, else `<workspace>/target/debug/weftd`.
pub fn weftd_bin() -> Result<PathBuf> {
    let p = match std::env::var_os("WEFTD_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_dir().join("target/debug/weftd"),
    };
    if !p.exists() {
        bail!("weftd binary {} does not exist: build it (`cargo build -p weft-agent --bin weftd`) or set WEFTD_BIN", p.display());
    }
    Ok(p)
}

/// A helper binary of weft-tests built next to weftd (`name`), or `$env`.
pub fn sibling_bin(name: &str, env: &str) -> Result<PathBuf> {
    let p = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => weftd_bin()?.with_file_name(name),
    };
    if !p.exists() {
        bail!("{} does not exist: build it (`cargo build -p weft-tests --bin {name}`) or set {env}", p.display());
    }
    Ok(p)
}

/// Last `n` lines of a file (for failure reports).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends SIGTERM to `child`, waits up to `grace` (scaled by [`patience`])
/// for it to exit: its exit status; else SIGKILLs it and returns None.
pub fn terminate(child: &mut std::process::Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id() as libc::pid_t;
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    // SAFETY: plain kill(2) on our own child's pid (not yet reaped, so not reused).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + patient(grace);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Whether process `pid` exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
}
