//! bpffs: weft pins its maps and links there, and a restart finds them again
//! only if the bpffs outlives the process. `ip netns exec` gives weftd a
//! mount namespace of its own with /sys remounted for the network
//! namespace, so the host's bpffs is not at /sys/fs/bpf there; a bpffs
//! mounted in that namespace would die with weftd, and with it every pin
//! (a kill -9 restart then drops traffic). So before any thread exists,
//! weftd in such a namespace joins the mount namespace of the nearest
//! process it descends from that has a bpffs at /sys/fs/bpf (the shell or
//! service manager that ran `ip netns exec`: the host's), keeping its
//! network namespace: as `nsenter --net` would have started it. (A bind
//! mount of the host's bpffs into the private namespace is refused by the
//! kernel: EINVAL across mount namespaces.) Only when there is none does it
//! mount a bpffs of its own, and then it says that a restart will drop
//! traffic and what to mount.
use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const ROOT: &str = "/sys/fs/bpf";
/// Set when this weftd mounted a bpffs of its own outside the host's
/// namespaces: the warning its pins deserve (they end with the namespace).
static OWN_MOUNT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// The initial PID namespace's inode number (the kernel's PROC_PID_INIT_INO).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Whether weft's pins outlive this weftd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pins {
    /// On the host's bpffs as far as weftd can see (in a container: the
    /// one mounted into it): a restart finds them.
    Persistent,
    /// On a bpffs of this mount namespace only, which ends with the last
    /// process in it: a restart loses the datapath for a moment.
    Private(String),
}

impl Pins {
    /// The warning to give (None: nothing to warn about).
    pub fn warning(&self) -> Option<&str> {
        match self {
            Pins::Persistent => None,
            Pins::Private(w) => Some(w),
        }
    }
}

fn mount_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok().map(|m| m.ino())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The nearest ancestor (PID 1 last) whose mount namespace is not ours and
/// has a bpffs at /sys/fs/bpf, with that bpffs as seen from here
/// (`/proc/<pid>/root/sys/fs/bpf`). None when every ancestor shares our
/// mount namespace (we are in the host's, as far as we can see) or none
/// shows a bpffs.
fn host_bpffs() -> Option<(u32, PathBuf)> {
    let own = mount_ns(std::process::id())?;
    let mut pid = parent(std::process::id());
    for _ in 0..64 {
        let p = pid?;
        if mount_ns(p).is_some_and(|ns| ns != own) {
            let root = PathBuf::from(format!("/proc/{p}/root{ROOT}"));
            if is_bpffs(&root) {
                return Some((p, root));
            }
        }
        if p <= 1 {
            return None;
        }
        pid = parent(p);
    }
    None
}

/// Where the pins of `pin_dir` live, as seen from this process: private if
/// this weftd had to mount a bpffs of its own ([`ensure_mounted`]), or if an
/// ancestor in another mount namespace has a bpffs that is not the one
/// holding `pin_dir` (another superblock); else persistent.
pub fn persistence(pin_dir: &Path) -> Pins {
    if let Some(w) = OWN_MOUNT.get() {
        return Pins::Private(w.clone());
    }
    let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    match host_bpffs() {
        Some((_, host)) if dev(&host) != dev(pin_dir) => Pins::Private(private_warning(pin_dir, &format!("not the host's at {}", host.display()))),
        _ => Pins::Persistent,
    }
}

fn private_warning(pin_dir: &Path, why: &str) -> String {
    format!(
        "BPF pins in {} are on a bpffs of this mount namespace only ({why}): they end with it, so a restart of weftd drops traffic until the new one has programmed the datapath again; mount the host's /sys/fs/bpf at /sys/fs/bpf (in a DaemonSet: a hostPath volume /sys/fs/bpf, mountPropagation Bidirectional)",
        pin_dir.display()
    )
}

/// Call before any thread exists (setns(2) into a mount namespace needs a
/// single-threaded process). In a mount namespace without a bpffs at
/// /sys/fs/bpf whose ancestor's namespace has one (`ip netns exec`), joins
/// the ancestor's mount namespace; the network namespace stays. Returns
/// what it did, for the log (None: nothing to do).
pub fn join_host_mount_ns() -> Option<Result<String>> {
    if is_bpffs(Path::new(ROOT)) {
        return None;
    }
    let (pid, _) = host_bpffs()?;
    let join = || -> Result<String> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).with_context(|| format!("opening process {pid}'s mount namespace"))?;
        // SAFETY: a valid fd; the caller guarantees a single thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            bail!("joining process {pid}'s mount namespace: {}", std::io::Error::last_os_error());
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        Ok(format!(
            "joined the mount namespace of process {pid} ({}), whose /sys/fs/bpf is a bpffs: this one (as `ip netns exec` makes) had none, and pins on a bpffs of its own would end with weftd; the network namespace is unchanged",
            comm.trim()
        ))
    };
    Some(join())
}

/// Makes sure the bpffs that will hold `pin_dir` is there (after
/// [`join_host_mount_ns`]: mounted here if still missing). Says whether the
/// pins will outlive this weftd.
pub fn ensure_mounted(pin_dir: &Path) -> Result<Pins> {
    let root = Path::new(ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).context("creating /sys/fs/bpf")?;
        mount_bpffs(root)?;
        log::info!("mounted bpffs at /sys/fs/bpf (it was not mounted here)");
        // In the host's init's mount namespace (a host without a bpffs
        // mounted) the mount stays; anywhere else (a container: another PID
        // namespace) it ends with the namespace.
        let initial_pid_ns = std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO);
        let host_ns = initial_pid_ns && mount_ns(1).is_some() && mount_ns(1) == mount_ns(std::process::id());
        if !host_ns {
            let _ = OWN_MOUNT.set(private_warning(pin_dir, "weftd mounted it: none was mounted here and no process it descends from shows one"));
        }
    }
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    if !is_bpffs(pin_dir) {
        bail!("{} is not on a bpffs mount; pass --bpf-pin-dir under a bpffs", pin_dir.display());
    }
    let pins = persistence(pin_dir);
    if let Some(w) = pins.warning() {
        log::warn!("{w}");
    }
    Ok(pins)
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).with_context(|| format!("{} holds a NUL byte", p.display()))
}

fn mount_bpffs(at: &Path) -> Result<()> {
    let target = cstr(at)?;
    // SAFETY: constant and valid C strings.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mounting bpffs at {}: {}", at.display(), std::io::Error::last_os_error());
    }
    Ok(())
}
