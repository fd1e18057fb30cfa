//! Hostile safetensors files and Hugging Face directories, derived from the numpy-written
//! fixture in tests/data/hf_tiny: every one must be refused with a typed error that names the
//! culprit file (and the tensor, where one tensor is at fault), without a panic, and without any
//! single allocation larger than the bytes on disk while opening.
//!
//! The allocation bound has a fixed floor, `ALLOWANCE`: a refusal of a 5-byte file still
//! allocates its path and its message, and config.json / the index are parsed into JSON trees a
//! few times the size of their text. What the bound catches is an allocation sized by a claimed
//! length, count or shape (2^60-byte headers, overflowing shapes), which is orders of magnitude
//! above both.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use lowbit_formats::source::ModelSource;
use lowbit_formats::FormatError;
use lowbit_testdata::Rng;
use serde_json::{json, Map, Value};

/// Records the largest single allocation of the current thread while armed. Thread-local, so
/// tests running in parallel do not see each other's allocations.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: allocations during thread teardown must not touch destroyed thread-locals.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn largest_alloc_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(|l| l.get()))
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";
const INDEX: &str = "model.safetensors.index.json";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_tiny")
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture().join(name)).unwrap()
}

/// An empty scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile_safetensors").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// See the module comment.
const ALLOWANCE: usize = 64 << 10;

/// Bytes on disk in `dir`, or the fixed allowance if that is more.
fn allocation_bound(dir: &Path) -> usize {
    dir_size(dir).max(ALLOWANCE)
}

fn dir_size(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len() as usize).sum()
}

fn error_path(e: &FormatError) -> Option<&Path> {
    match e {
        FormatError::Io { path, .. } | FormatError::InFile { path, .. } | FormatError::Unsupported { path, .. } => {
            Some(path)
        }
        FormatError::Invalid(_) | FormatError::MissingTensor(_) => None,
    }
}

/// Opens `dir`, which must fail because of `culprit`, with a message containing `needle`.
fn assert_refused(dir: &Path, culprit: &Path, needle: &str, label: &str) {
    let bound = allocation_bound(dir);
    let (result, largest) = largest_alloc_during(|| ModelSource::open(dir));
    let err = match result {
        Ok(_) => panic!("{label}: opened"),
        Err(e) => e,
    };
    assert!(largest <= bound, "{label}: allocated {largest} bytes at once for {bound} bytes on disk");
    assert_eq!(error_path(&err), Some(culprit), "{label}: {err}");
    let text = err.to_string();
    let file = culprit.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(file) && text.contains(needle), "{label}: {text}");
}

/// A directory with config.json and `model.safetensors` = `bytes`: the single-file layout.
struct SingleFile {
    dir: PathBuf,
    file: PathBuf,
    cases: usize,
}

impl SingleFile {
    fn new(test: &str) -> SingleFile {
        let dir = scratch(test);
        std::fs::write(dir.join("config.json"), read_fixture("config.json")).unwrap();
        let file = dir.join("model.safetensors");
        SingleFile { dir, file, cases: 0 }
    }

    fn refuse(&mut self, bytes: &[u8], needle: &str, label: &str) {
        std::fs::write(&self.file, bytes).unwrap();
        assert_refused(&self.dir, &self.file, needle, label);
        self.cases += 1;
    }
}

/// A safetensors file split into its header (in file order) and its data section.
#[derive(Clone)]
struct Image {
    header: Map<String, Value>,
    data: Vec<u8>,
}

impl Image {
    fn parse(bytes: &[u8]) -> Image {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        Image { header: header.as_object().unwrap().clone(), data: bytes[8 + n..].to_vec() }
    }

    fn tensor_names(&self) -> Vec<String> {
        self.header.keys().filter(|k| *k != "__metadata__").cloned().collect()
    }

    fn bytes(&self) -> Vec<u8> {
        join(&serde_json::to_string(&self.header).unwrap(), &self.data)
    }

    fn with(&self, tensor: &str, key: &str, value: Value) -> Vec<u8> {
        let mut m = self.clone();
        m.header[tensor][key] = value;
        m.bytes()
    }

    fn without(&self, tensor: &str, key: &str) -> Vec<u8> {
        let mut m = self.clone();
        m.header[tensor].as_object_mut().unwrap().remove(key);
        m.bytes()
    }

    fn offsets(&self, tensor: &str) -> (u64, u64) {
        let o = &self.header[tensor]["data_offsets"];
        (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
    }
}

fn join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn the_allocation_counter_sees_allocations() {
    let (v, largest) = largest_alloc_during(|| vec![0u8; 3 << 20]);
    assert_eq!(v.len(), 3 << 20);
    assert!(largest >= 3 << 20);
    let (_, largest) = largest_alloc_during(|| 1 + 1);
    assert_eq!(largest, 0);
}

/// The unmutated fixture opens, so every refusal below is the mutation's doing.
#[test]
fn controls_open() {
    let mut single = SingleFile::new("controls");
    std::fs::write(&single.file, read_fixture(SHARD1)).unwrap();
    let (result, largest) = largest_alloc_during(|| ModelSource::open(&single.dir));
    assert_eq!(result.unwrap().tensor_names().len(), 10);
    assert!(largest <= dir_size(&single.dir));
    single.cases += 1;

    let image = Image::parse(&read_fixture(SHARD1));
    std::fs::write(&single.file, image.bytes()).unwrap();
    assert!(ModelSource::open(&single.dir).is_ok(), "re-serialised header must stay valid");
}

#[test]
fn truncations() {
    let base = read_fixture(SHARD1);
    let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let mut lengths: Vec<usize> = (0..16).collect();
    lengths.extend((16..header_end + 16).step_by(7));
    lengths.extend((header_end..base.len()).step_by(4099));
    lengths.extend([header_end - 1, header_end, header_end + 1, base.len() - 2, base.len() - 1]);
    let mut single = SingleFile::new("truncations");
    for len in lengths {
        let needle = if len < 8 { "too short" } else { "" };
        single.refuse(&base[..len], needle, &format!("truncated to {len}"));
    }
    assert!(single.cases > 200, "{}", single.cases);
}

#[test]
fn header_lengths() {
    let base = read_fixture(SHARD1);
    let header_len = u64::from_le_bytes(base[..8].try_into().unwrap());
    let file_len = base.len() as u64;
    let mut single = SingleFile::new("header_lengths");
    for (value, needle) in [
        (0, ""),
        (1, ""),
        (2, ""),
        (7, ""),
        (header_len - 1, ""),
        (header_len + 1, ""),
        (header_len + 8, ""),
        (file_len - 8, ""),
        (file_len - 7, "past the end"),
        (file_len, "past the end"),
        (100_000_001, "limit"),
        (1 << 32, "limit"),
        (1 << 60, "limit"),
        (u64::MAX, "limit"),
    ] {
        let mut b = base.clone();
        b[..8].copy_from_slice(&value.to_le_bytes());
        single.refuse(&b, needle, &format!("header length {value}"));
    }
}

#[test]
fn headers_that_are_not_safetensors_json() {
    let image = Image::parse(&read_fixture(SHARD1));
    let deep = "[".repeat(100_000);
    let mut single = SingleFile::new("not_json");
    let headers: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "header"),
        (b"{".to_vec(), "header"),
        (b"}".to_vec(), "header"),
        (b"[]".to_vec(), "header"),
        (b"null".to_vec(), "header"),
        (b"\"a string\"".to_vec(), "header"),
        (b"{\"a\":1}".to_vec(), "\"a\""),
        (b"{\"a\":{}}".to_vec(), "\"a\""),
        (b"{\"a\":{\"dtype\":\"F32\"}}".to_vec(), "\"a\""),
        (vec![0xff, 0xfe, 0x7b, 0x7d], "header"),
        (b"{\"\xff\":{}}".to_vec(), "header"),
        (deep.into_bytes(), "header"),
        (b"{}".to_vec(), "belong to no tensor"),
        (b"{\"__metadata__\":{\"format\":\"pt\"}}".to_vec(), "belong to no tensor"),
    ];
    for (header, needle) in headers {
        let label = format!("header {:?}", String::from_utf8_lossy(&header[..header.len().min(20)]));
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(&header);
        b.extend_from_slice(&image.data);
        single.refuse(&b, needle, &label);
    }
    for metadata in [json!({"format": 1}), json!([]), json!("pt"), json!({"a": {"b": "c"}})] {
        let mut m = image.clone();
        m.header["__metadata__"] = metadata.clone();
        single.refuse(&m.bytes(), "__metadata__", &format!("__metadata__ {metadata}"));
    }
}

/// Dtypes, shapes and data offsets broken one tensor at a time: each error names the tensor.
#[test]
fn broken_tensor_entries() {
    let image = Image::parse(&read_fixture(SHARD1));
    let data_len = image.data.len() as u64;
    let names = image.tensor_names();
    let mut single = SingleFile::new("broken_entries");
    for name in &names {
        let (b, e) = image.offsets(name);
        let original = image.header[name]["dtype"].as_str().unwrap().to_string();
        let width = |d: &str| match d {
            "F32" => 4,
            "F16" | "BF16" => 2,
            _ => 1,
        };
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        for dtype in ["F33", "f32", "Q4_0", "", "F64", "I32", "BOOL", "F8_E4M3", "U8", "I8", "F32", "F16"] {
            if dtype == original || (width(dtype) == width(&original) && ["F16", "BF16"].contains(&dtype)) {
                continue;
            }
            cases.push((image.with(name, "dtype", json!(dtype)), "dtype"));
        }
        cases.push((image.with(name, "dtype", json!(5)), ""));
        cases.push((image.with(name, "dtype", Value::Null), ""));
        cases.push((image.without(name, "dtype"), "dtype"));

        let shape: Vec<u64> =
            image.header[name]["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let doubled: Vec<u64> = shape.iter().map(|d| d * 2).collect();
        let mut bumped = shape.clone();
        bumped[0] += 1;
        for bad in [
            json!([]),
            json!([0]),
            json!(doubled),
            json!(bumped),
            json!([1u64 << 32, 1u64 << 32]),
            json!([u64::MAX, 2]),
            json!([1u64 << 62]),
            json!([-1]),
            json!(["a"]),
            json!(1.5),
            Value::Null,
        ] {
            cases.push((image.with(name, "shape", bad), ""));
        }
        cases.push((image.without(name, "shape"), "shape"));

        for bad in [
            json!([b, e + 1]),
            json!([b + 1, e]),
            json!([b, e - 1]),
            json!([e, b]),
            json!([b + 2, e + 2]),
            json!([b + data_len, e + data_len]),
            json!([0, u64::MAX]),
            json!([u64::MAX - 1, u64::MAX]),
            json!([b]),
            json!([b, e, 0]),
            json!([-1, e]),
            json!("x"),
            Value::Null,
        ] {
            cases.push((image.with(name, "data_offsets", bad), ""));
        }
        cases.push((image.without(name, "data_offsets"), "data_offsets"));

        // Another tensor's bytes: overlapping, the tiling broken.
        let other = names.iter().find(|n| *n != name).unwrap();
        let (ob, oe) = image.offsets(other);
        let mut stolen = image.clone();
        stolen.header[name]["data_offsets"] = json!([ob, oe]);
        stolen.header[name]["shape"] = image.header[other]["shape"].clone();
        stolen.header[name]["dtype"] = image.header[other]["dtype"].clone();
        cases.push((stolen.bytes(), ""));

        // The same name twice in the header (serde_json's map would merge them, so splice text).
        let entry = serde_json::to_string(&image.header[name]).unwrap();
        let header = serde_json::to_string(&image.header).unwrap();
        let spliced = format!("{{{}:{entry},{}", serde_json::to_string(name).unwrap(), &header[1..]);
        cases.push((join(&spliced, &image.data), "twice"));

        for (i, (bytes, needle)) in cases.into_iter().enumerate() {
            let label = format!("{name} case {i}");
            single.refuse(&bytes, needle, &label);
            // Whatever went wrong, the message says which tensor, or which tensor's neighbour
            // lost its bytes.
            let err = ModelSource::open(&single.dir).unwrap_err().to_string();
            assert!(
                err.contains(name.as_str()) || err.contains(other.as_str()) || err.contains("belong to no tensor"),
                "{label}: {err}"
            );
        }
    }
    assert!(single.cases > 300, "{}", single.cases);
}

/// Deterministic random byte damage anywhere in the header. Some damage leaves a valid file
/// (a changed letter in a name), so the check is: a refusal is typed and names the file, and
/// opening never allocates more than the file holds.
#[test]
fn random_header_damage() {
    let base = read_fixture(SHARD1);
    let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let single = SingleFile::new("random_damage");
    let mut rng = Rng::new(1);
    let mut refused = 0;
    for case in 0..400 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(header_end as u64) as usize;
            b[pos] = rng.next_u64() as u8;
        }
        std::fs::write(&single.file, &b).unwrap();
        let bound = allocation_bound(&single.dir);
        let (result, largest) = largest_alloc_during(|| ModelSource::open(&single.dir));
        assert!(largest <= bound, "case {case}: {largest} > {bound}");
        if let Err(e) = result {
            assert_eq!(error_path(&e), Some(single.file.as_path()), "case {case}: {e}");
            refused += 1;
        }
    }
    assert!(refused > 200, "only {refused} of 400 damaged headers were refused");
}

/// A copy of the sharded fixture directory to break.
fn sharded(test: &str) -> PathBuf {
    let dir = scratch(test);
    for name in ["config.json", INDEX, SHARD1, SHARD2] {
        std::fs::write(dir.join(name), read_fixture(name)).unwrap();
    }
    dir
}

fn index_json() -> Value {
    serde_json::from_slice(&read_fixture(INDEX)).unwrap()
}

fn write_index(dir: &Path, index: &Value) {
    std::fs::write(dir.join(INDEX), serde_json::to_vec(index).unwrap()).unwrap();
}

#[test]
fn index_shard_names_must_be_plain_existing_files() {
    let mut cases = 0;
    for (shard, needle) in [
        ("../model-00001-of-00002.safetensors", "not a plain file name"),
        ("../../etc/passwd", "not a plain file name"),
        ("/etc/passwd", "not a plain file name"),
        ("sub/model.safetensors", "not a plain file name"),
        ("sub\\model.safetensors", "not a plain file name"),
        ("./model-00001-of-00002.safetensors", "not a plain file name"),
        ("..", "not a plain file name"),
        (".", "not a plain file name"),
        ("", "not a plain file name"),
        ("model-00003-of-00002.safetensors", "does not exist"),
    ] {
        let dir = sharded("index_names");
        let mut index = index_json();
        index["weight_map"]["model.norm.weight"] = json!(shard);
        write_index(&dir, &index);
        assert_refused(&dir, &dir.join(INDEX), needle, &format!("shard {shard:?}"));
        cases += 1;
    }
    // A file that exists but is not a safetensors file is refused as itself.
    let dir = sharded("index_names");
    let mut index = index_json();
    index["weight_map"]["model.norm.weight"] = json!("config.json");
    write_index(&dir, &index);
    assert_refused(&dir, &dir.join("config.json"), "", "config.json as a shard");
    assert_eq!(cases, 10);
}

#[test]
fn index_and_shards_must_agree() {
    // Listed, but the shard does not hold it.
    let dir = sharded("agree");
    let mut index = index_json();
    index["weight_map"]["model.layers.7.mlp.up_proj.weight"] = json!(SHARD1);
    write_index(&dir, &index);
    assert_refused(&dir, &dir.join(INDEX), "model.layers.7.mlp.up_proj.weight", "listed, absent");

    // Listed in the other shard.
    let dir = sharded("agree");
    let mut index = index_json();
    index["weight_map"]["model.norm.weight"] = json!(SHARD1);
    write_index(&dir, &index);
    assert_refused(&dir, &dir.join(INDEX), "model.norm.weight", "wrong shard");

    // Held by a shard but not listed.
    let dir = sharded("agree");
    let mut index = index_json();
    index["weight_map"].as_object_mut().unwrap().remove("lm_head.weight");
    write_index(&dir, &index);
    assert_refused(&dir, &dir.join(INDEX), "lm_head.weight", "not listed");
}

/// Shard 2 rewritten with one more tensor copied from shard 1 under `name`.
fn shard2_with_extra(dir: &Path, name: &str) {
    let one = Image::parse(&read_fixture(SHARD1));
    let mut two = Image::parse(&read_fixture(SHARD2));
    let (b, e) = one.offsets("model.embed_tokens.weight");
    let start = two.data.len() as u64;
    let mut entry = one.header["model.embed_tokens.weight"].clone();
    entry["data_offsets"] = json!([start, start + (e - b)]);
    two.header.insert(name.to_string(), entry);
    two.data.extend_from_slice(&one.data[b as usize..e as usize]);
    std::fs::write(dir.join(SHARD2), two.bytes()).unwrap();
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let dir = sharded("duplicates");
    shard2_with_extra(&dir, "model.embed_tokens.weight");
    assert_refused(&dir, &dir.join(SHARD2), "also appears in shard", "duplicate across shards");

    // Two Hugging Face names that land on one canonical name.
    let dir = sharded("duplicates");
    shard2_with_extra(&dir, "token_embd.weight");
    let mut index = index_json();
    index["weight_map"]["token_embd.weight"] = json!(SHARD2);
    write_index(&dir, &index);
    assert_refused(&dir, &dir.join(SHARD2), "both map to", "canonical collision");
}

#[test]
fn broken_index_and_config_files() {
    let mut cases = 0;
    let mut refuse = |file: &str, contents: &[u8], needle: &str| {
        let dir = sharded("broken_files");
        std::fs::write(dir.join(file), contents).unwrap();
        assert_refused(&dir, &dir.join(file), needle, &format!("{file} = {:?}", String::from_utf8_lossy(contents)));
        cases += 1;
    };
    for (contents, needle) in [
        (&b"not json"[..], "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "weight_map"),
        (b"{}", "weight_map: missing"),
        (b"{\"weight_map\": []}", "expected an object"),
        (b"{\"weight_map\": {\"model.norm.weight\": 3}}", "expected a file name"),
        (b"{\"weight_map\": {\"model.norm.weight\": null}}", "expected a file name"),
    ] {
        refuse(INDEX, contents, needle);
    }
    for (contents, needle) in [
        (&b"{"[..], "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b"{\"model_type\": \"llama\"}", "missing"),
        (b"{\"model_type\": \"bert\"}", "bert"),
    ] {
        refuse("config.json", contents, needle);
    }
    let mut config: Value = serde_json::from_slice(&read_fixture("config.json")).unwrap();
    config["hidden_size"] = json!(-1);
    refuse("config.json", &serde_json::to_vec(&config).unwrap(), "hidden_size: expected a non-negative integer");
    // A shard cut short is refused as itself.
    let shard = read_fixture(SHARD2);
    refuse(SHARD2, &shard[..shard.len() - 1], "");
    assert_eq!(cases, 13);

    let dir = sharded("missing_files");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_refused(&dir, &dir.join("config.json"), "", "no config.json");
    std::fs::write(dir.join("config.json"), read_fixture("config.json")).unwrap();
    std::fs::remove_file(dir.join(INDEX)).unwrap();
    assert_refused(&dir, &dir, "neither", "no weights");
}
