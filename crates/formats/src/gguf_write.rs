//! GGUF v3 writer, laid out exactly as PyPI `gguf`'s `GGUFWriter` lays files out: header, metadata
//! in insertion order, tensor infos in insertion order (dims in ggml's reversed `ne` order), zero
//! padding to the alignment, then each tensor's bytes followed by zero padding to the alignment (the
//! last tensor included).
//!
//! What llama.cpp's reader refuses is refused here, before anything is written: tensor names of 64
//! bytes or more (`GGML_MAX_NAME`), more than 4 dimensions, rows that are not whole blocks, arrays of
//! arrays, a `general.alignment` that is not a power-of-two u32, duplicate keys and names.
//!
//! Memory: tensor data can be produced at write time (`TensorData::Deferred`), one tensor after the
//! other, so a quantizer never holds more than one tensor's output; offsets are computed from the
//! declared sizes alone. The file is written under a temporary name in the target's directory,
//! synced and renamed, so the target path holds either its previous content or the complete file.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::staging::{create_beside, parent_dir, sync_dir};

/// The GGUF version written (gguf-py's and llama.cpp's current one).
pub const VERSION: u32 = 3;
/// The key that sets the data alignment; llama.cpp requires it to be a u32.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// llama.cpp's `GGML_MAX_NAME`: a tensor name must be shorter than this, in bytes.
pub const MAX_TENSOR_NAME: usize = 64;
/// The GGUF specification's limit on key length.
pub const MAX_KEY_LEN: usize = 65535;
/// Largest accepted alignment: the limit `GgufFile` enforces, so everything written reads back.
const MAX_ALIGNMENT: u32 = 1 << 20;
/// Keys that describe a source file's layout rather than the model: the alignment is the writer's
/// choice, and split keys would make llama.cpp look for sibling shards of a single-file output.
const LAYOUT_KEYS: [&str; 4] = [ALIGNMENT_KEY, "split.no", "split.count", "split.tensors.count"];
/// Large enough that the header and small tensors go to disk in few system calls; large tensor
/// slices bypass the buffer.
const WRITE_BUFFER: usize = 1 << 20;

/// Receives one tensor's bytes while `GgufWriter::write` runs; refuses more than the declared size.
pub struct TensorSink<'s> {
    out: &'s mut Out,
    name: &'s str,
    remaining: u64,
}

impl TensorSink<'_> {
    /// Appends `bytes` to the tensor; they may arrive in any number of pieces.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.remaining {
            return Err(FormatError::Invalid(format!(
                "tensor {:?}: data producer wrote {} bytes where only {} remained of the tensor's size",
                self.name,
                bytes.len(),
                self.remaining
            )));
        }
        self.out.put(bytes)?;
        self.remaining -= bytes.len() as u64;
        Ok(())
    }

    /// Bytes still expected for this tensor.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// Produces one tensor's bytes at write time.
pub type Producer<'a> = Box<dyn FnOnce(&mut TensorSink<'_>) -> Result<()> + 'a>;

/// A tensor's bytes: held, borrowed (e.g. from a memory-mapped source), or produced when the
/// writer reaches the tensor, so that only one tensor's output needs to exist at a time.
pub enum TensorData<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
    /// Called once, in tensor order, during `write`; must write exactly the tensor's size.
    Deferred(Producer<'a>),
}

impl<'a> TensorData<'a> {
    pub fn deferred(produce: impl FnOnce(&mut TensorSink<'_>) -> Result<()> + 'a) -> Self {
        TensorData::Deferred(Box::new(produce))
    }
}

struct PendingTensor<'a> {
    name: String,
    /// ggml order: innermost dimension first.
    dims: Vec<u64>,
    ggml_type: u32,
    n_bytes: u64,
    data: TensorData<'a>,
}

/// Collects metadata and tensors, then writes one GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
    alignment: Option<u32>,
}

fn value_type(v: &Value) -> ValueType {
    match v {
        Value::U8(_) => ValueType::U8,
        Value::I8(_) => ValueType::I8,
        Value::U16(_) => ValueType::U16,
        Value::I16(_) => ValueType::I16,
        Value::U32(_) => ValueType::U32,
        Value::I32(_) => ValueType::I32,
        Value::U64(_) => ValueType::U64,
        Value::I64(_) => ValueType::I64,
        Value::F32(_) => ValueType::F32,
        Value::F64(_) => ValueType::F64,
        Value::Bool(_) => ValueType::Bool,
        Value::String(_) => ValueType::String,
        Value::Array(..) => ValueType::Array,
    }
}

/// Checks what a writer cannot express or llama.cpp cannot read: mixed-type arrays and nested arrays.
fn check_value(key: &str, v: &Value) -> Result<()> {
    if let Value::Array(et, items) = v {
        if *et == ValueType::Array {
            return Err(FormatError::Invalid(format!(
                "metadata {key:?}: arrays of arrays cannot be read by llama.cpp"
            )));
        }
        if let Some((i, item)) = items.iter().enumerate().find(|(_, item)| value_type(item) != *et) {
            return Err(FormatError::Invalid(format!(
                "metadata {key:?}: element {i} is {:?} in an array of {et:?}",
                value_type(item)
            )));
        }
    }
    Ok(())
}

impl<'a> GgufWriter<'a> {
    /// An empty file description; the alignment is 32 unless `general.alignment` is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key; keys are written in the order they are added.
    pub fn metadata(&mut self, key: &str, value: Value) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            let start: String = key.chars().take(40).collect();
            return Err(FormatError::Invalid(format!(
                "metadata key {start:?}… of {} bytes: keys must be 1 to {MAX_KEY_LEN} bytes",
                key.len()
            )));
        }
        if self.keys.contains(key) {
            return Err(FormatError::Invalid(format!("metadata key {key:?} added twice")));
        }
        check_value(key, &value)?;
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => self.alignment = Some(a),
                _ => {
                    return Err(FormatError::Invalid(format!(
                        "metadata {key:?}: {value:?} must be a u32 power of two up to {MAX_ALIGNMENT}"
                    )))
                }
            }
        }
        self.keys.insert(key.to_owned());
        self.metadata.push((key.to_owned(), value));
        Ok(())
    }

    /// Copies `src`'s metadata in its order, except the keys describing the source's layout
    /// (`general.alignment`, `split.*`) and those in `except` (keys the caller will set itself,
    /// since adding a key twice is an error). Returns how many keys were copied.
    pub fn copy_metadata_from(&mut self, src: &GgufFile, except: &[&str]) -> Result<usize> {
        let mut copied = 0;
        for (key, value) in src.metadata() {
            if LAYOUT_KEYS.contains(&key.as_str()) || except.contains(&key.as_str()) {
                continue;
            }
            self.metadata(key, value.clone()).map_err(|e| e.in_file(src.path()))?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Adds a tensor of `shape` (row-major, outermost first); tensors are written in the order
    /// they are added. `data` must be exactly the tensor's storage size (checked here for held
    /// data, during `write` for deferred data).
    pub fn tensor(&mut self, name: &str, dtype: DType, shape: &[usize], data: TensorData<'a>) -> Result<()> {
        let err = |what: String| FormatError::Invalid(format!("tensor {name:?}: {what}"));
        if name.is_empty() || name.len() >= MAX_TENSOR_NAME {
            return Err(err(format!(
                "name of {} bytes: llama.cpp accepts 1 to {} bytes",
                name.len(),
                MAX_TENSOR_NAME - 1
            )));
        }
        if self.names.contains(name) {
            return Err(err("added twice".into()));
        }
        let ggml_type = dtype.ggml_id().ok_or_else(|| err(format!("type {dtype} has no GGUF equivalent")))?;
        if shape.is_empty() || shape.len() > MAX_DIMS as usize {
            return Err(err(format!("{} dimensions (1 to {MAX_DIMS} allowed)", shape.len())));
        }
        // ggml stores dimensions and the element count as int64.
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let n_elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| n <= i64::MAX as u64))
            .ok_or_else(|| err(format!("shape {shape:?} has more elements than ggml's int64 can count")))?;
        if !dims[0].is_multiple_of(dtype.block_len() as u64) {
            return Err(err(format!(
                "row of {} elements is not a multiple of the {dtype} block length {}",
                dims[0],
                dtype.block_len()
            )));
        }
        let n_bytes = dtype.storage_bytes(n_elements).map_err(|e| err(e.to_string()))?;
        let held = match &data {
            TensorData::Owned(v) => Some(v.len()),
            TensorData::Borrowed(s) => Some(s.len()),
            TensorData::Deferred(_) => None,
        };
        if let Some(len) = held {
            if len as u64 != n_bytes {
                return Err(err(format!("{len} bytes of data, but {shape:?} {dtype} takes {n_bytes}")));
            }
        }
        self.names.insert(name.to_owned());
        self.tensors.push(PendingTensor { name: name.to_owned(), dims, ggml_type, n_bytes, data });
        Ok(())
    }

    /// Writes the file atomically: into a new temporary file in `path`'s directory, synced, then
    /// renamed over `path`. On any error (including a producer's) the temporary file is removed and
    /// `path` is left as it was. The one exception is a failure to sync the directory after the
    /// rename: `path` then holds the complete new file, but its durability across a crash is not
    /// assured, which the error reports.
    pub fn write(self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |cause| FormatError::Io { path: path.to_path_buf(), cause };
        let (dir, tmp_path, file) = create_temp(path).map_err(io)?;
        let guard = TempGuard { path: Some(tmp_path.clone()) };
        let mut out = Out { w: BufWriter::with_capacity(WRITE_BUFFER, file), pos: 0, path: path.to_path_buf() };
        self.write_to(&mut out).map_err(|e| e.in_file(path))?;
        let file = out.w.into_inner().map_err(|e| io(e.into_error()))?;
        // Data must be on disk before the rename makes it visible under the target name; otherwise
        // a crash could leave a complete-looking name with missing contents.
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp_path, path).map_err(io)?;
        guard.disarm();
        sync_dir(&dir).map_err(io)
    }

    fn write_to(self, out: &mut Out) -> Result<()> {
        let alignment = self.alignment.map_or(DEFAULT_ALIGNMENT, u64::from);
        out.put(MAGIC)?;
        out.put(&VERSION.to_le_bytes())?;
        out.put(&(self.tensors.len() as u64).to_le_bytes())?;
        out.put(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            out.string(key)?;
            out.put(&(value_type(value) as u32).to_le_bytes())?;
            out.value(value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            out.string(&t.name)?;
            out.put(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.put(&d.to_le_bytes())?;
            }
            out.put(&t.ggml_type.to_le_bytes())?;
            out.put(&offset.to_le_bytes())?;
            offset = t
                .n_bytes
                .checked_next_multiple_of(alignment)
                .and_then(|padded| offset.checked_add(padded))
                .ok_or_else(|| FormatError::Invalid(format!("tensor {:?}: data section overflows", t.name)))?;
        }
        out.pad(alignment)?;
        // Tensors are consumed one at a time so each one's bytes are freed once written.
        for t in self.tensors {
            match t.data {
                TensorData::Owned(v) => out.put(&v)?,
                TensorData::Borrowed(s) => out.put(s)?,
                TensorData::Deferred(produce) => {
                    let mut sink = TensorSink { out: &mut *out, name: &t.name, remaining: t.n_bytes };
                    produce(&mut sink)?;
                    if sink.remaining != 0 {
                        return Err(FormatError::Invalid(format!(
                            "tensor {:?}: data producer wrote {} of {} bytes",
                            t.name,
                            t.n_bytes - sink.remaining,
                            t.n_bytes
                        )));
                    }
                }
            }
            out.pad(alignment)?;
        }
        Ok(())
    }
}

/// The buffered output with its position (padding is relative to the start of the file).
struct Out {
    w: BufWriter<File>,
    pos: u64,
    /// The target path, to name in I/O errors.
    path: PathBuf,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|cause| FormatError::Io { path: self.path.clone(), cause })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, alignment: u64) -> Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut n = self.pos.next_multiple_of(alignment) - self.pos;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    /// A value without its type tag (array elements carry none; `check_value` ruled out nesting).
    fn value(&mut self, v: &Value) -> Result<()> {
        match v {
            Value::U8(x) => self.put(&[*x]),
            Value::I8(x) => self.put(&x.to_le_bytes()),
            Value::U16(x) => self.put(&x.to_le_bytes()),
            Value::I16(x) => self.put(&x.to_le_bytes()),
            Value::U32(x) => self.put(&x.to_le_bytes()),
            Value::I32(x) => self.put(&x.to_le_bytes()),
            Value::U64(x) => self.put(&x.to_le_bytes()),
            Value::I64(x) => self.put(&x.to_le_bytes()),
            Value::F32(x) => self.put(&x.to_le_bytes()),
            Value::F64(x) => self.put(&x.to_le_bytes()),
            Value::Bool(x) => self.put(&[u8::from(*x)]),
            Value::String(s) => self.string(s),
            Value::Array(et, items) => {
                self.put(&(*et as u32).to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|item| self.value(item))
            }
        }
    }
}

/// Removes the temporary file unless the rename succeeded, whatever path leaves `write` (an
/// error return or a panicking producer).
struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            // Best effort: the error being reported matters more than a failed cleanup.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Creates a new, unique temporary file next to `path` (same directory, so the rename stays on one
/// file system and is atomic). Returns the directory, the temporary path and the open file.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, PathBuf, File)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the output path does not name a file"))?;
    let dir = parent_dir(path);
    // create_new never reuses a file another writer (or a stale crashed run) holds.
    match create_beside(&dir, name, |tmp| File::options().write(true).create_new(true).open(tmp))? {
        Some((tmp_path, file)) => Ok((dir, tmp_path, file)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free temporary file name next to the output",
        )),
    }
}
