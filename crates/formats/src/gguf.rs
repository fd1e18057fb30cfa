//! GGUF v2/v3 reader: header, metadata of every value type, tensor infos, aligned data section.
//!
//! The file is memory-mapped; tensor data is borrowed from the map, never copied. Every count
//! and length read from the header is checked against the bytes that remain before anything is
//! allocated, so a hostile header cannot make the reader allocate more than the file's size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{FormatError, Result};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
/// Nesting limit for arrays of arrays: GGUF writers produce depth 1; deeper is hostile.
const MAX_ARRAY_DEPTH: u32 = 2;

/// A metadata value. Arrays keep their element type so an empty array still has one.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(ValueType, Vec<Value>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_u32(v: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type occupies (a string is at least its length).
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }

    /// A short human-readable rendering (long arrays are summarised).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 60 => {
                format!("{:?}…", s.chars().take(60).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(t, v) if v.len() > 8 => format!("[{:?}; {}]", t, v.len()),
            Value::Array(_, v) => format!("[{}]", v.iter().map(Value::summary).collect::<Vec<_>>().join(", ")),
            Value::F32(x) => format!("{x}"),
            Value::F64(x) => format!("{x}"),
            Value::Bool(b) => format!("{b}"),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_else(|| format!("{other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape, outermost first (`[rows, cols]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl GgufFile {
    /// Lets the OS drop the resident pages of a tensor's data that the caller has copied (see
    /// `mapped::release`); reading it again later is still valid.
    pub fn release(&self, data: &[u8]) {
        if let Backing::Mmap(m) = &self.backing {
            crate::mapped::release(m, data);
        }
    }
}

pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    pub version: u32,
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(FormatError::Invalid(format!(
                "{what}: needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// An empty vector with room for `n` items, but never more than the remaining bytes could
    /// hold: items are larger in memory than on disk, so the header's count alone must not
    /// size the reservation.
    fn reserve<T>(&self, n: u64) -> Vec<T> {
        let fits = self.remaining() / std::mem::size_of::<T>().max(1) as u64;
        Vec::with_capacity(n.min(fits) as usize)
    }

    /// A count that must be satisfiable by the remaining bytes at `min_item` bytes per item.
    fn count(&mut self, min_item: u64, what: &str) -> Result<u64> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(FormatError::Invalid(format!(
                "{what}: count {n} cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| FormatError::Invalid(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, t: ValueType, what: &str, depth: u32) -> Result<Value> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(FormatError::Invalid(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(FormatError::Invalid(format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let raw = self.u32(what)?;
                let et = ValueType::from_u32(raw)
                    .ok_or_else(|| FormatError::Invalid(format!("{what}: unknown array element type {raw}")))?;
                let n = self.count(et.min_size(), what)?;
                let mut v = self.reserve(n);
                for _ in 0..n {
                    v.push(self.value(et, what, depth + 1)?);
                }
                Value::Array(et, v)
            }
        })
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| FormatError::Io { path: path.to_path_buf(), cause: source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; lowbit never writes to a model file it has open. A
        // file truncated by another process while mapped is outside what any reader can defend.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Backing::Mmap(map))
    }

    /// Parses a GGUF image held in memory; `path` names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(path.into(), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<GgufFile> {
        let parsed = Self::parse_header(backing.bytes()).map_err(|e| e.in_file(&path))?;
        let (version, metadata, tensors, alignment, data_offset) = parsed;
        let meta_index = metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        let tensor_index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile { path, backing, version, metadata, meta_index, tensors, tensor_index, alignment, data_offset })
    }

    #[allow(clippy::type_complexity)]
    fn parse_header(bytes: &[u8]) -> Result<(u32, Vec<(String, Value)>, Vec<TensorInfo>, u64, u64)> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(FormatError::Invalid(format!("bad magic {magic:02x?}: not a GGUF file")));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::Invalid(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        // A tensor info is at least name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.count(8 + 4 + 1, "metadata count")?;
        if n_tensors.saturating_mul(32) > c.remaining() {
            return Err(FormatError::Invalid(format!("tensor count {n_tensors} cannot fit in the file")));
        }

        let mut metadata = c.reserve(n_kv);
        let mut seen = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let raw = c.u32(&format!("type of metadata {key:?}"))?;
            let t = ValueType::from_u32(raw)
                .ok_or_else(|| FormatError::Invalid(format!("metadata {key:?}: unknown value type {raw}")))?;
            let v = c.value(t, &format!("metadata {key:?}"), 0)?;
            if seen.insert(key.clone(), ()).is_some() {
                return Err(FormatError::Invalid(format!("metadata key {key:?} appears twice")));
            }
            metadata.push((key, v));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(FormatError::Invalid(format!(
                        "general.alignment {v:?} must be a power of two up to 1 MiB"
                    )))
                }
            },
        };

        let mut tensors = c.reserve(n_tensors);
        let mut names = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i} name"))?;
            let what = format!("tensor {name:?}");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(FormatError::Invalid(format!("{what}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut n_elements: u64 = 1;
            for _ in 0..n_dims {
                let d = c.u64(&what)?;
                if d > i64::MAX as u64 {
                    return Err(FormatError::Invalid(format!("{what}: dimension {d} exceeds ggml's int64 range")));
                }
                n_elements = n_elements
                    .checked_mul(d)
                    .filter(|&n| n <= i64::MAX as u64)
                    .ok_or_else(|| FormatError::Invalid(format!("{what}: element count overflows")))?;
                dims.push(d);
            }
            let raw = c.u32(&what)?;
            let dtype = DType::from_ggml(raw)
                .ok_or_else(|| FormatError::Invalid(format!("{what}: unknown tensor type {raw}")))?;
            if dims[0] % dtype.block_len() as u64 != 0 {
                return Err(FormatError::Invalid(format!(
                    "{what}: row of {} elements is not a multiple of the {} block length {}",
                    dims[0],
                    dtype,
                    dtype.block_len()
                )));
            }
            let n_bytes = dtype.storage_bytes(n_elements).map_err(|e| FormatError::Invalid(format!("{what}: {e}")))?;
            let offset = c.u64(&what)?;
            if offset % alignment != 0 {
                return Err(FormatError::Invalid(format!("{what}: offset {offset} is not aligned to {alignment}")));
            }
            if names.insert(name.clone(), ()).is_some() {
                return Err(FormatError::Invalid(format!("tensor name {name:?} appears twice")));
            }
            tensors.push(TensorInfo { name, dims, dtype, offset, n_elements, n_bytes });
        }

        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(FormatError::Invalid(format!(
                        "tensor {:?}: data at offset {} + {} bytes runs past the end of the file ({} bytes)",
                        t.name, t.offset, t.n_bytes, file_len
                    )))
                }
            }
        }
        Ok((version, metadata, tensors, alignment, data_offset))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn field_err(&self, key: &str, problem: &str) -> FormatError {
        FormatError::InFile { path: self.path.clone(), what: format!("metadata {key:?}: {problem}") }
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.field_err(key, "missing"))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.require(key)?.as_str().ok_or_else(|| self.field_err(key, "not a string"))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?.as_u64().ok_or_else(|| self.field_err(key, "not a non-negative integer"))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.require(key)?.as_f64().map(|v| v as f32).ok_or_else(|| self.field_err(key, "not a number"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.require(key)?.as_bool().ok_or_else(|| self.field_err(key, "not a bool"))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.require(key)?.as_array().ok_or_else(|| self.field_err(key, "not an array"))
    }

    pub fn get_array_len(&self, key: &str) -> Result<usize> {
        Ok(self.get_array(key)?.len())
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.field_err(key, "array element is not a string")))
            .collect()
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| self.field_err(key, "array element is not a number")))
            .collect()
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| self.field_err(key, "array element is not an integer")))
            .collect()
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.backing.bytes()[start..start + t.n_bytes as usize]
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid file: one u32 key, one string array, one F32 tensor of 4 elements.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        s(&mut b, "a.count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes());
        s(&mut b, "a.words");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        s(&mut b, "hi");
        s(&mut b, "there");
        s(&mut b, "t");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for x in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_metadata_and_tensor() {
        let f = GgufFile::from_bytes("tiny.gguf", tiny()).unwrap();
        assert_eq!(f.get_u64("a.count").unwrap(), 7);
        assert_eq!(f.get_str_array("a.words").unwrap(), vec!["hi", "there"]);
        let t = f.tensor_info("t").unwrap();
        assert_eq!(t.shape(), vec![4]);
        assert_eq!(f.tensor_data(t).len(), 16);
        assert_eq!(&f.tensor_data(t)[4..8], &2.0f32.to_le_bytes());
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let mut b = tiny();
        b[0] = b'X';
        let e = GgufFile::from_bytes("bad.gguf", b).unwrap_err().to_string();
        assert!(e.contains("bad.gguf") && e.contains("magic"), "{e}");

        let b = tiny();
        let e = GgufFile::from_bytes("short.gguf", b[..b.len() - 1].to_vec()).unwrap_err().to_string();
        assert!(e.contains("short.gguf") && e.contains("past the end"), "{e}");
    }

    #[test]
    fn huge_string_length_is_rejected_without_allocating() {
        let mut b = tiny();
        // The first key's length field sits right after the 24-byte header.
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = GgufFile::from_bytes("huge.gguf", b).unwrap_err().to_string();
        assert!(e.contains("only") && e.contains("remain"), "{e}");
    }
}
