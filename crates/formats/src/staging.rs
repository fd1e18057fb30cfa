//! Outputs are written under a temporary name beside their final path, synced, and renamed into place:
//! beside it, because a rename is atomic only within one file system.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory `path` lies in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `.NAME.PID.N.tmp` in `dir` with `create` for a fresh N per attempt, and returns its path and
/// what `create` returned; `None` when 1000 names were all taken. `create` must refuse an existing name
/// with `AlreadyExists` (as `create_new` and `create_dir` do), so that a leftover of a crashed run with
/// the same process id is skipped rather than reused; the bound turns a pathological directory into an
/// error, not a hang.
pub(crate) fn create_beside<T>(
    dir: &Path,
    name: &OsStr,
    mut create: impl FnMut(&Path) -> std::io::Result<T>,
) -> std::io::Result<Option<(PathBuf, T)>> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..1000 {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let tmp = dir.join(tmp);
        match create(&tmp) {
            Ok(made) => return Ok(Some((tmp, made))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Makes a rename into `dir` durable (POSIX records directory entries in the directory's inode).
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Other platforms cannot open a directory as a file; the rename is as durable as they make it.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}
