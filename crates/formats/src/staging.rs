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

/// Writes `bytes` to `path` atomically: into a new temporary file beside it, synced, then renamed over it, so
/// a reader sees the old file or the whole new one, never a part. For small outputs (reports, JSON).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the output path does not name a file"))?;
    let dir = parent_dir(path);
    let Some((tmp, mut file)) =
        create_beside(&dir, name, |tmp| std::fs::File::options().write(true).create_new(true).open(tmp))?
    else {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name beside the output"));
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("lowbit-staging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        std::fs::write(&path, "old contents, longer than the new").unwrap();
        super::write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(super::write_atomic(&dir.join("missing/report.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
