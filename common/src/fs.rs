//! Replacing a file that another process reads.
use std::{
    fs::File,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The temporary file [`write_atomic`] writes before renaming it to `path`:
/// hidden, in the same directory, unique to this process, ending in `.tmp`
/// (readers of a directory of records skip `*.tmp` and dot files).
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

fn step(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Replaces `path` with `bytes`: writes a temporary file in the same
/// directory, fsyncs it, renames it over `path`, then fsyncs the directory.
///
/// Why: weftd, weft-cni and the runtime read these files while they are
/// rewritten (subnet.env, endpoint records, the CNI config and binary, the
/// local lease store). A reader never sees a half-written file: `path` names
/// either the old complete file or the new one, because rename(2) replaces a
/// name atomically within one directory (hence the temporary file lives next
/// to `path`, never in /tmp). The file's fsync before the rename makes sure
/// the new name never points at data still in flight; the directory's fsync
/// after it makes the rename itself durable across a crash.
///
/// `mode`: the new file's permission bits (default: 0666 less the umask).
/// The directory must exist. On failure the temporary file is removed and
/// `path` is untouched; the error names the step and the file.
///
/// Concurrent writers of one `path` each use their own temporary file (the
/// pid is in its name) and the last rename wins; read-modify-write cycles
/// need a lock of their own (the local store's flock).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = parent(path);
    let tmp = tmp_path(path);
    let r = (|| {
        let mut f = File::create(&tmp).map_err(step(format!("creating {}", tmp.display())))?;
        f.write_all(bytes).map_err(step(format!("writing {}", tmp.display())))?;
        if let Some(mode) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(step(format!("chmod {}", tmp.display())))?;
        }
        f.sync_all().map_err(step(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(step(format!("renaming {} to {}", tmp.display(), path.display())))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r?;
    sync_dir(dir).map_err(step(format!("syncing {}", dir.display())))
}

/// fsyncs a directory: makes the creation, rename or removal of an entry
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("weft-common-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.json");
        write_atomic(&p, b"one", None).unwrap();
        write_atomic(&p, b"two", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        assert!(tmp_path(&p).to_string_lossy().ends_with(".tmp") && tmp_path(&p).parent() == Some(dir.as_path()));
        let e = write_atomic(&dir.join("missing/f"), b"x", None).unwrap_err();
        assert!(e.to_string().contains("creating"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
