//! bpffs: weft pins its maps and links there. `ip netns exec` remounts /sys
//! and hides the host's bpffs, so weftd mounts one itself when it is missing.
use std::{ffi::CString, path::Path};

use anyhow::{bail, Context, Result};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure the bpffs mount that will hold `pin_dir` exists, mounting one
/// at /sys/fs/bpf if it does not.
pub fn ensure_mounted(pin_dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).context("creating /sys/fs/bpf")?;
        let (src, fstype, target) = (c"bpf", c"bpf", c"/sys/fs/bpf");
        // SAFETY: constant C strings.
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            bail!("mounting bpffs at /sys/fs/bpf: {}", std::io::Error::last_os_error());
        }
        log::info!("mounted bpffs at /sys/fs/bpf (it was not mounted here)");
    }
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    if !is_bpffs(pin_dir) {
        bail!("{} is not on a bpffs mount; pass --bpf-pin-dir under a bpffs", pin_dir.display());
    }
    Ok(())
}
