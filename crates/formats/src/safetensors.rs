//! Hugging Face safetensors files and model directories (`config.json` plus `model.safetensors`
//! or the shards listed in `model.safetensors.index.json`).
//!
//! Files are memory-mapped and tensor data is borrowed from the maps, never copied. Everything
//! is checked at open, before any tensor is handed out: the header length against the file size
//! (and a 100 MB cap), the header JSON, every tensor's dtype, shape and data range (checked
//! arithmetic; ranges tile the data section exactly, as the format requires), and for a
//! sharded directory that every shard named by the index is a plain file name that exists and
//! holds exactly the tensors the index assigns to it, with no tensor in two shards.
//!
//! The parser is written here rather than taken from the `safetensors` crate so that every
//! error names the file and the tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::hf_config::read_json;
use crate::mapped::MappedBytes;
use crate::names::hf_to_canonical;

/// The reference implementation's limit (safetensors' `MAX_HEADER_SIZE`); real headers are
/// kilobytes.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
const HEADER_LEN_BYTES: u64 = 8;

pub const CONFIG_FILE: &str = "config.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of a safetensors file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    /// Row-major, outermost first.
    pub shape: Vec<usize>,
    /// Byte range within the whole file (header included).
    range: Range<usize>,
}

/// One memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: std::sync::Arc<memmap2::Mmap>,
    /// In data order, which is file order.
    tensors: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile").field("path", &self.path).field("n_tensors", &self.tensors.len()).finish()
    }
}

/// A tensor's header entry as written; checked and converted by `check_entry`.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header object in file order, duplicates kept so that they can be reported.
struct RawHeader {
    metadata: BTreeMap<String, String>,
    tensors: Vec<(String, RawEntry)>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RawHeader, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
        let mut header = RawHeader { metadata: BTreeMap::new(), tensors: Vec::new() };
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                header.metadata = map.next_value().map_err(|e| de::Error::custom(format_args!("__metadata__: {e}")))?;
            } else {
                let entry = map.next_value().map_err(|e| de::Error::custom(format_args!("tensor {key:?}: {e}")))?;
                header.tensors.push((key, entry));
            }
        }
        Ok(header)
    }
}

fn parse_dtype(s: &str, tensor: &str) -> std::result::Result<DType, HeaderError> {
    Ok(match s {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "U8" => DType::U8,
        "I8" => DType::I8,
        "F64" | "I64" | "U64" | "I32" | "U32" | "I16" | "U16" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0"
        | "F6_E2M3" | "F6_E3M2" | "F4" | "C64" => {
            return Err(HeaderError::Unsupported(format!(
                "tensor {tensor:?}: dtype {s:?} (F32, F16, BF16, U8 and I8 are supported)"
            )))
        }
        _ => return Err(invalid(format!("tensor {tensor:?}: unknown dtype {s:?}"))),
    })
}

/// Problems found while parsing, before they are attached to the file.
enum HeaderError {
    Invalid(String),
    Unsupported(String),
}

impl HeaderError {
    fn in_file(self, path: &Path) -> FormatError {
        match self {
            HeaderError::Invalid(what) => FormatError::InFile { path: path.to_path_buf(), what },
            HeaderError::Unsupported(what) => FormatError::Unsupported { path: path.to_path_buf(), what },
        }
    }
}

fn invalid(what: String) -> HeaderError {
    HeaderError::Invalid(what)
}

/// Checks one header entry against the data section (`data_start..file_len` of the file).
fn check_entry(
    name: String,
    raw: RawEntry,
    data_start: u64,
    data_len: u64,
) -> std::result::Result<TensorEntry, HeaderError> {
    let what = |problem: String| format!("tensor {name:?}: {problem}");
    let dtype = parse_dtype(&raw.dtype, &name)?;
    let n_elements = raw
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| invalid(what(format!("shape {:?} has more elements than a u64 counts", raw.shape))))?;
    let n_bytes = dtype.storage_bytes(n_elements).map_err(|e| invalid(what(e.to_string())))?;
    let [begin, end] = raw.data_offsets;
    if begin > end {
        return Err(invalid(what(format!("data_offsets [{begin}, {end}] run backwards"))));
    }
    if end - begin != n_bytes {
        return Err(invalid(what(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but shape {:?} of dtype {dtype} needs {n_bytes}",
            end - begin,
            raw.shape
        ))));
    }
    if end > data_len {
        return Err(invalid(what(format!(
            "data_offsets [{begin}, {end}] run past the end of the {data_len}-byte data section"
        ))));
    }
    // Both fit in the mapped file, so they fit in usize.
    let range = (data_start + begin) as usize..(data_start + end) as usize;
    let shape = raw.shape.iter().map(|&d| d as usize).collect();
    Ok(TensorEntry { name, dtype, shape, range })
}

/// The format requires the data ranges to tile the data section: no overlap, no hole, nothing
/// after the last tensor. `tensors` must be sorted by start.
fn check_tiling(tensors: &[TensorEntry], data_start: usize, file_len: usize) -> std::result::Result<(), HeaderError> {
    let mut pos = data_start;
    let mut previous: Option<&str> = None;
    for t in tensors {
        let rel = |x: usize| x - data_start;
        if t.range.start < pos {
            return Err(invalid(format!(
                "tensor {:?}: data_offsets [{}, {}] overlap tensor {:?}, which ends at {}",
                t.name,
                rel(t.range.start),
                rel(t.range.end),
                previous.unwrap_or_default(),
                rel(pos)
            )));
        }
        if t.range.start > pos {
            return Err(invalid(format!(
                "bytes {}..{} of the data section belong to no tensor (before {:?})",
                rel(pos),
                rel(t.range.start),
                t.name
            )));
        }
        pos = t.range.end;
        previous = Some(&t.name);
    }
    if pos != file_len {
        return Err(invalid(format!("{} bytes after the last tensor belong to no tensor", file_len - pos)));
    }
    Ok(())
}

type Parsed = (Vec<TensorEntry>, HashMap<String, usize>, BTreeMap<String, String>);

fn parse(bytes: &[u8]) -> std::result::Result<Parsed, HeaderError> {
    let file_len = bytes.len() as u64;
    if file_len < HEADER_LEN_BYTES {
        return Err(invalid(format!("{file_len} bytes is too short for the 8-byte header length")));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(invalid(format!("header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")));
    }
    let data_start = HEADER_LEN_BYTES + header_len;
    if data_start > file_len {
        return Err(invalid(format!("header length {header_len} runs past the end of the {file_len}-byte file")));
    }
    let header_bytes = &bytes[HEADER_LEN_BYTES as usize..data_start as usize];
    let raw: RawHeader = serde_json::from_slice(header_bytes)
        .map_err(|e| invalid(format!("header is not a valid safetensors header: {e}")))?;

    let data_len = file_len - data_start;
    let mut tensors = raw
        .tensors
        .into_iter()
        .map(|(name, entry)| check_entry(name, entry, data_start, data_len))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    let mut index = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if index.insert(t.name.clone(), i).is_some() {
            return Err(invalid(format!("tensor {:?} appears twice in the header", t.name)));
        }
    }
    check_tiling(&tensors, data_start as usize, bytes.len())?;
    Ok((tensors, index, raw.metadata))
}

impl SafetensorsFile {
    /// Memory-maps and checks `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref();
        let io = |source| FormatError::Io { path: path.to_path_buf(), cause: source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lowbit never writes to a model file it has open. A
        // file truncated by another process while mapped is outside what any reader can defend.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let (tensors, index, metadata) = parse(&map).map_err(|e| e.in_file(path))?;
        Ok(SafetensorsFile { path: path.to_path_buf(), map: map.into(), tensors, index, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw little-endian bytes of a tensor of this file (bounds were checked at open).
    pub fn data(&self, t: &TensorEntry) -> &[u8] {
        &self.map[t.range.clone()]
    }

    /// `data` (a slice of this file's map) as a handle that keeps the file mapped; `None` for other memory.
    pub fn mapped(&self, data: &[u8]) -> Option<MappedBytes> {
        MappedBytes::new(&self.map, data)
    }

    /// The header's `__metadata__` strings (e.g. `format: pt`).
    /// Lets the OS drop the resident pages of tensor data the caller has copied (`mapped::release`).
    pub fn release(&self, data: &[u8]) {
        crate::mapped::release(&self.map, data);
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

/// A tensor of a Hugging Face directory, under its canonical (GGUF) name.
#[derive(Clone, Debug)]
pub struct HfTensor {
    pub canonical: String,
    pub hf_name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    shard: usize,
    range: Range<usize>,
}

/// A Hugging Face model directory: its config and every tensor of its safetensors file(s).
pub struct HfModel {
    dir: PathBuf,
    config: ModelConfig,
    shards: Vec<SafetensorsFile>,
    /// Shard by shard (shards in name order), each in file order.
    tensors: Vec<HfTensor>,
    by_canonical: HashMap<String, usize>,
}

impl fmt::Debug for HfModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HfModel")
            .field("dir", &self.dir)
            .field("arch", &self.config.arch)
            .field("n_shards", &self.shards.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl HfModel {
    /// Opens and checks a model directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModel> {
        let dir = dir.as_ref();
        let config_path = dir.join(CONFIG_FILE);
        let config = ModelConfig::from_hf_json(&config_path, &read_json(&config_path)?)?;
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let shards = if index_path.is_file() {
            open_sharded(dir, &index_path)?
        } else if single_path.is_file() {
            vec![SafetensorsFile::open(&single_path)?]
        } else {
            return Err(FormatError::InFile {
                path: dir.to_path_buf(),
                what: format!("neither {SINGLE_FILE} nor {INDEX_FILE} is present"),
            });
        };
        let mut tensors = Vec::new();
        let mut by_canonical: HashMap<String, usize> = HashMap::new();
        for (shard_no, shard) in shards.iter().enumerate() {
            for t in shard.tensors() {
                let canonical = hf_to_canonical(config.arch, &t.name);
                if let Some(&other) = by_canonical.get(&canonical) {
                    let other: &HfTensor = &tensors[other];
                    return Err(FormatError::InFile {
                        path: shard.path().to_path_buf(),
                        what: format!("tensors {:?} and {:?} both map to {canonical:?}", other.hf_name, t.name),
                    });
                }
                by_canonical.insert(canonical.clone(), tensors.len());
                tensors.push(HfTensor {
                    canonical,
                    hf_name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    shard: shard_no,
                    range: t.range.clone(),
                });
            }
        }
        Ok(HfModel { dir: dir.to_path_buf(), config, shards, tensors, by_canonical })
    }

    /// Lets the OS drop the resident pages of tensor data the caller has copied.
    pub fn release(&self, data: &[u8]) {
        self.shards.iter().for_each(|s| s.release(data));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// Every tensor, shard by shard in file order.
    pub fn tensors(&self) -> &[HfTensor] {
        &self.tensors
    }

    pub fn tensor(&self, canonical: &str) -> Option<&HfTensor> {
        self.by_canonical.get(canonical).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor of this model (bounds were checked at open).
    pub fn data(&self, t: &HfTensor) -> &[u8] {
        &self.shards[t.shard].map[t.range.clone()]
    }

    /// The same bytes as [`HfModel::data`], as a handle that keeps the file mapped.
    pub fn mapped(&self, t: &HfTensor) -> MappedBytes {
        let map = &self.shards[t.shard].map;
        MappedBytes::new(map, &map[t.range.clone()]).expect("tensor ranges were checked at open")
    }
}

/// A shard name from an index must name a file in the model directory itself.
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None))
        && !name.contains(['/', '\\', '\0'])
}

/// The index's `weight_map`: tensor name -> shard file name, checked to be plain names.
fn read_weight_map(index_path: &Path) -> Result<HashMap<String, String>> {
    let err = |what: String| FormatError::InFile { path: index_path.to_path_buf(), what };
    let json = read_json(index_path)?;
    let map = match json.get("weight_map") {
        Some(Value::Object(m)) => m,
        Some(other) => return Err(err(format!("weight_map: expected an object, found {}", type_name(other)))),
        None => return Err(err("weight_map: missing".to_string())),
    };
    let mut weight_map = HashMap::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| err(format!("weight_map[{tensor:?}]: expected a file name, found {}", type_name(shard))))?;
        if !is_plain_file_name(shard) {
            return Err(err(format!(
                "weight_map[{tensor:?}]: shard {shard:?} is not a plain file name in the model directory"
            )));
        }
        weight_map.insert(tensor.clone(), shard.to_string());
    }
    Ok(weight_map)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Opens every shard the index names (in name order) and checks that the shards hold exactly
/// the tensors the index assigns to them.
fn open_sharded(dir: &Path, index_path: &Path) -> Result<Vec<SafetensorsFile>> {
    let err = |what: String| FormatError::InFile { path: index_path.to_path_buf(), what };
    let weight_map = read_weight_map(index_path)?;
    let names: BTreeSet<&str> = weight_map.values().map(String::as_str).collect();
    let mut shards = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(err(format!("shard {name:?} does not exist in {}", dir.display())));
        }
        shards.push(SafetensorsFile::open(&path)?);
    }

    let mut home: HashMap<&str, &Path> = HashMap::new();
    for shard in &shards {
        let shard_name = file_name(shard.path());
        for t in shard.tensors() {
            if let Some(other) = home.insert(&t.name, shard.path()) {
                return Err(FormatError::InFile {
                    path: shard.path().to_path_buf(),
                    what: format!("tensor {:?} also appears in shard {:?}", t.name, file_name(other)),
                });
            }
            match weight_map.get(&t.name) {
                Some(listed) if *listed == shard_name => {}
                Some(listed) => {
                    return Err(err(format!(
                        "tensor {:?} is listed in shard {listed:?} but is in {shard_name:?}",
                        t.name
                    )))
                }
                None => return Err(err(format!("tensor {:?} of shard {shard_name:?} is not listed", t.name))),
            }
        }
    }
    // Every shard holds only listed tensors, each once; a listed tensor missing from its shard
    // is what remains.
    if let Some((tensor, shard)) = weight_map.iter().find(|(t, _)| !home.contains_key(t.as_str())) {
        return Err(err(format!("tensor {tensor:?} is listed in shard {shard:?}, which does not contain it")));
    }
    Ok(shards)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file image with the given header JSON and `data_len` bytes of data.
    fn image(header: &str, data_len: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend((0..data_len).map(|i| i as u8));
        b
    }

    fn parse_err(b: &[u8]) -> String {
        match parse(b) {
            Ok(_) => panic!("parsed"),
            Err(HeaderError::Invalid(s)) | Err(HeaderError::Unsupported(s)) => s,
        }
    }

    #[test]
    fn parses_in_data_order() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},
                   "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[12,12]}}"#;
        let b = image(h, 12);
        let (tensors, index, metadata) = parse(&b).ok().unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "z"]);
        assert_eq!(tensors[index["b"]].range, 8 + h.len() + 8..8 + h.len() + 12);
        assert_eq!(tensors[1].dtype, DType::F16);
        assert_eq!(metadata["format"], "pt");
    }

    #[test]
    fn rejects_bad_layouts() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
                "overlap",
            ),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "belong to no tensor"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "after the last tensor"),
            (r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "needs 12"),
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8, "backwards"),
            (r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8, "past the end"),
            (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, 8, "more elements"),
            (r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}}"#, 8, "overflow"),
            (r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#, 8, "unknown dtype"),
            (r#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, 8, "are supported"),
            (r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8, "tensor \"a\""),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "twice",
            ),
            (r#"{"__metadata__":{"k":1}}"#, 0, "__metadata__"),
            (r#"[1]"#, 0, "valid safetensors header"),
        ];
        for (h, data_len, needle) in cases {
            let e = parse_err(&image(h, data_len));
            assert!(e.contains(needle), "{h}: {e}");
        }
    }

    #[test]
    fn rejects_bad_header_lengths() {
        let mut b = image(r#"{}"#, 0);
        b[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(parse_err(&b).contains("limit"));
        b[..8].copy_from_slice(&3u64.to_le_bytes());
        assert!(parse_err(&b).contains("past the end"));
        assert!(parse_err(&b[..5]).contains("too short"));
    }

    #[test]
    fn shard_names_must_be_plain() {
        for ok in ["model-00001-of-00002.safetensors", "a b.safetensors", "..x"] {
            assert!(is_plain_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x.safetensors", "/etc/passwd", "sub/x", "a\\b", "x/", "./x", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
