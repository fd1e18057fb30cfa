//! Writing a native directory: a streaming safetensors writer (tensor data produced one piece at a
//! time, so a quantizer holds one tensor's output at most) and the atomic directory around it.
//!
//! The directory is assembled under a temporary name beside the target, synced, and renamed into
//! place, so the target holds either its previous content or the complete new directory. An existing
//! target is replaced only when it is itself a native directory (or empty), never another directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::native::model::is_native_dir;
use crate::staging::{create_beside, parent_dir, sync_dir};

/// Writes the bytes of consecutive tensors; the writer checks that exactly their declared sizes arrive.
pub type Producer<'a> = Box<dyn FnOnce(&mut dyn Write) -> Result<()> + 'a>;

struct Declared {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    n_bytes: u64,
}

/// A safetensors file described tensor by tensor, written in one pass.
#[derive(Default)]
pub struct SafetensorsWriter<'a> {
    tensors: Vec<Declared>,
    /// Each producer with the number of (consecutive) tensors it writes.
    producers: Vec<(usize, Producer<'a>)>,
}

fn dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::U8 | DType::I8 => Ok(dtype.name()),
        other => Err(FormatError::Invalid(format!("{other} has no safetensors dtype"))),
    }
}

impl<'a> SafetensorsWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `tensors` (name, dtype, shape), whose bytes `produce` writes in that order when the
    /// file is written.
    pub fn add(&mut self, tensors: Vec<(String, DType, Vec<usize>)>, produce: Producer<'a>) -> Result<()> {
        for (name, dtype, shape) in &tensors {
            dtype_name(*dtype).map_err(|e| FormatError::Invalid(format!("tensor {name:?}: {e}")))?;
            if self.tensors.iter().any(|t| t.name == *name) {
                return Err(FormatError::Invalid(format!("tensor {name:?} added twice")));
            }
            let n = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            let n_bytes = n
                .and_then(|n| n.checked_mul(dtype.block_bytes() as u64))
                .ok_or_else(|| FormatError::Invalid(format!("tensor {name:?}: shape {shape:?} overflows")))?;
            self.tensors.push(Declared { name: name.clone(), dtype: *dtype, shape: shape.clone(), n_bytes });
        }
        self.producers.push((tensors.len(), produce));
        Ok(())
    }

    /// The header: tensors in declaration order with consecutive offsets, padded with spaces to a
    /// multiple of 8 bytes as the reference implementation does.
    fn header(&self) -> Result<Vec<u8>> {
        let mut map = Map::new();
        map.insert("__metadata__".into(), json!({ "format": "lowbit" }));
        let mut offset = 0u64;
        for t in &self.tensors {
            let end = offset + t.n_bytes;
            map.insert(
                t.name.clone(),
                json!({ "dtype": dtype_name(t.dtype)?, "shape": t.shape, "data_offsets": [offset, end] }),
            );
            offset = end;
        }
        let mut bytes = serde_json::to_vec(&Value::Object(map)).expect("plain data serializes");
        bytes.resize(bytes.len().next_multiple_of(8), b' ');
        Ok(bytes)
    }

    /// Writes the file at `path` (which must not be open elsewhere).
    pub fn write(self, path: &Path) -> Result<()> {
        let io = |cause| FormatError::Io { path: path.to_path_buf(), cause };
        let header = self.header()?;
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        let mut first = 0;
        for (count, produce) in self.producers {
            let group = &self.tensors[first..first + count];
            let want: u64 = group.iter().map(|t| t.n_bytes).sum();
            let mut counted = Counted { inner: &mut out, n: 0 };
            produce(&mut counted)?;
            if counted.n != want {
                let names: Vec<&str> = group.iter().map(|t| t.name.as_str()).collect();
                return Err(FormatError::Invalid(format!(
                    "tensors {names:?}: producer wrote {} bytes, declared {want}",
                    counted.n
                )));
            }
            first += count;
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
    }
}

struct Counted<'w, W: Write> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A directory being assembled under a temporary name; [`StagedDir::commit`] moves it into place,
/// dropping it uncommitted removes it.
pub struct StagedDir {
    tmp: Option<PathBuf>,
    target: PathBuf,
}

impl StagedDir {
    /// Creates the temporary directory beside `target`. Refuses a target that exists and is neither
    /// an empty directory nor a native directory.
    pub fn new(target: &Path) -> Result<StagedDir> {
        let io = |cause| FormatError::Io { path: target.to_path_buf(), cause };
        if target.exists() {
            let replaceable =
                target.is_dir() && (is_native_dir(target) || std::fs::read_dir(target).map_err(io)?.next().is_none());
            if !replaceable {
                return Err(FormatError::InFile {
                    path: target.to_path_buf(),
                    what: "exists and is not a lowbit output directory; refusing to replace it".into(),
                });
            }
        }
        let name = target.file_name().ok_or_else(|| FormatError::InFile {
            path: target.to_path_buf(),
            what: "the output path does not name a directory".into(),
        })?;
        // A fresh name per call: two outputs staged at once in one process never share a directory.
        match create_beside(&parent_dir(target), name, |tmp| std::fs::create_dir(tmp)).map_err(io)? {
            Some((tmp, ())) => Ok(StagedDir { tmp: Some(tmp), target: target.to_path_buf() }),
            None => {
                Err(FormatError::InFile { path: target.to_path_buf(), what: "no free temporary name beside it".into() })
            }
        }
    }

    /// Where files go until the commit.
    pub fn path(&self) -> &Path {
        self.tmp.as_deref().expect("present until commit")
    }

    /// Syncs the directory and renames it over the target (moving a previous output aside first
    /// and deleting it after).
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("present until commit");
        let io = |cause| FormatError::Io { path: self.target.clone(), cause };
        sync_dir(&tmp).map_err(io)?;
        let old = tmp.with_extension("old");
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old).map_err(io)?;
        }
        if let Err(e) = std::fs::rename(&tmp, &self.target) {
            if had_old {
                // Put the previous output back; the error reported is the rename's.
                let _ = std::fs::rename(&old, &self.target);
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io(e));
        }
        if had_old {
            std::fs::remove_dir_all(&old).map_err(io)?;
        }
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io)?;
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            // Best effort: the error that stopped the write matters more than a failed cleanup.
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::SafetensorsFile;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lowbit-native-write-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn bytes(b: Vec<u8>) -> Producer<'static> {
        Box::new(move |o| o.write_all(&b).map_err(|cause| FormatError::Io { path: "test".into(), cause }))
    }

    #[test]
    fn streamed_file_reads_back() {
        let dir = tmp("st");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.safetensors");
        let mut w = SafetensorsWriter::new();
        let a: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add(vec![("a".into(), DType::F32, vec![2])], bytes(a)).unwrap();
        w.add(vec![("b".into(), DType::U8, vec![3]), ("c".into(), DType::I8, vec![1, 1])], bytes(vec![7, 8, 9, 0xFF]))
            .unwrap();
        w.write(&path).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.data(f.get("b").unwrap()), [7, 8, 9]);
        assert_eq!(f.data(f.get("c").unwrap()), [0xFF]);
        assert_eq!(f.data(f.get("a").unwrap())[4..], (-2.0f32).to_le_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_producer_is_an_error() {
        let dir = tmp("short");
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = SafetensorsWriter::new();
        w.add(vec![("a".into(), DType::U8, vec![4])], bytes(vec![1])).unwrap();
        assert!(w.write(&dir.join("x.safetensors")).unwrap_err().to_string().contains("wrote 1 bytes, declared 4"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staged_dir_replaces_only_its_own_kind() {
        let target = tmp("staged");
        let staged = StagedDir::new(&target).unwrap();
        std::fs::write(staged.path().join("quantization_config.json"), "{}").unwrap();
        staged.commit().unwrap();
        assert!(is_native_dir(&target));
        // A second output replaces the first; an uncommitted one leaves it alone.
        let staged = StagedDir::new(&target).unwrap();
        std::fs::write(staged.path().join("quantization_config.json"), "2").unwrap();
        drop(StagedDir::new(&target).unwrap());
        staged.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("quantization_config.json")).unwrap(), "2");
        std::fs::remove_dir_all(&target).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("precious.txt"), "x").unwrap();
        assert!(StagedDir::new(&target).is_err());
        std::fs::remove_dir_all(&target).unwrap();
    }
}
