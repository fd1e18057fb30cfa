//! lowbit's GGUF writer against PyPI `gguf`'s `GGUFWriter` (an independent implementation), and its
//! promises: every value and tensor byte reads back, failures never leave a file behind, bad input is
//! refused naming the tensor or key, and memory does not grow with the size of the file.
//!
//! Golden files in tests/data/gguf_write/ come from scripts/golden/gen_gguf_write.py; see its header
//! for what they contain and how to regenerate them. Each `<case>.json` lists the content of
//! `<case>.gguf` in order; the test rebuilds it with `GgufWriter` and compares bytes exactly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use lowbit_formats::gguf::{GgufFile, Value, ValueType};
use lowbit_formats::gguf_write::{GgufWriter, TensorData};
use lowbit_formats::{DType, FormatError};

/// Tracks the live bytes this thread has allocated and their peak while it measures, so the
/// harness's other threads (other tests) do not disturb the figure.
struct PeakAllocation;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + delta);
                let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
            });
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; tracking touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for PeakAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocation = PeakAllocation;

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_write").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names in `dir`, sorted: what a failed write must not have added to.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_write")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn dtype(name: &str) -> DType {
    let all = [DType::F32, DType::F16, DType::BF16, DType::I8, DType::Q8_0, DType::Q4K];
    *all.iter().find(|d| d.name() == name).unwrap_or_else(|| panic!("type {name} not mapped in this test"))
}

/// gguf-py's `GGUFValueType` names.
fn value_type(name: &str) -> ValueType {
    match name {
        "UINT8" => ValueType::U8,
        "INT8" => ValueType::I8,
        "UINT16" => ValueType::U16,
        "INT16" => ValueType::I16,
        "UINT32" => ValueType::U32,
        "INT32" => ValueType::I32,
        "UINT64" => ValueType::U64,
        "INT64" => ValueType::I64,
        "FLOAT32" => ValueType::F32,
        "FLOAT64" => ValueType::F64,
        "BOOL" => ValueType::Bool,
        "STRING" => ValueType::String,
        "ARRAY" => ValueType::Array,
        other => panic!("unknown value type {other}"),
    }
}

/// One JSON value as a GGUF value of type `t` (floats are given as their bit patterns).
fn value(t: ValueType, j: &serde_json::Value) -> Value {
    let u = || j.as_u64().unwrap();
    let i = || j.as_i64().unwrap();
    match t {
        ValueType::U8 => Value::U8(u8::try_from(u()).unwrap()),
        ValueType::I8 => Value::I8(i8::try_from(i()).unwrap()),
        ValueType::U16 => Value::U16(u16::try_from(u()).unwrap()),
        ValueType::I16 => Value::I16(i16::try_from(i()).unwrap()),
        ValueType::U32 => Value::U32(u32::try_from(u()).unwrap()),
        ValueType::I32 => Value::I32(i32::try_from(i()).unwrap()),
        ValueType::U64 => Value::U64(u()),
        ValueType::I64 => Value::I64(i()),
        ValueType::F32 => Value::F32(f32::from_bits(u32::try_from(u()).unwrap())),
        ValueType::F64 => Value::F64(f64::from_bits(u())),
        ValueType::Bool => Value::Bool(j.as_bool().unwrap()),
        ValueType::String => Value::String(j.as_str().unwrap().to_owned()),
        ValueType::Array => panic!("arrays are built by `entry`"),
    }
}

struct Golden {
    bytes: Vec<u8>,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    /// (name, dtype, row-major shape, bytes)
    tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
}

fn golden(case: &str) -> Golden {
    let dir = data_dir();
    let bytes = std::fs::read(dir.join(format!("{case}.gguf"))).unwrap();
    let desc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap()).unwrap();
    assert_eq!(desc["size"].as_u64().unwrap(), bytes.len() as u64, "{case}.gguf does not match its JSON");
    let metadata = desc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let t = value_type(m["type"].as_str().unwrap());
            let v = if t == ValueType::Array {
                let et = value_type(m["element_type"].as_str().unwrap());
                Value::Array(et, m["value"].as_array().unwrap().iter().map(|e| value(et, e)).collect())
            } else {
                value(t, &m["value"])
            };
            (m["key"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    let tensors = desc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (
                t["name"].as_str().unwrap().to_owned(),
                dtype(t["type"].as_str().unwrap()),
                shape,
                hex(t["data_hex"].as_str().unwrap()),
            )
        })
        .collect();
    Golden { bytes, alignment: desc["alignment"].as_u64().unwrap(), metadata, tensors }
}

/// The golden content in a writer, tensor data given in turn as owned, borrowed and deferred
/// (the deferred producer writes in 7-byte pieces, so chunking cannot matter).
fn build(g: &Golden) -> GgufWriter<'_> {
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        w.metadata(k, v.clone()).unwrap();
    }
    for (i, (name, dt, shape, data)) in g.tensors.iter().enumerate() {
        let data = match i % 3 {
            0 => TensorData::Owned(data.clone()),
            1 => TensorData::Borrowed(data),
            _ => TensorData::deferred(move |sink| data.chunks(7).try_for_each(|c| sink.write(c))),
        };
        w.tensor(name, *dt, shape, data).unwrap();
    }
    w
}

#[test]
fn byte_identical_to_gguf_py() {
    let dir = scratch("golden");
    for case in ["basic", "align64"] {
        let g = golden(case);
        let out = dir.join(format!("{case}.gguf"));
        build(&g).write(&out).unwrap();
        let ours = std::fs::read(&out).unwrap();
        assert_eq!(ours.len(), g.bytes.len(), "{case}: size differs from gguf-py's");
        if let Some(i) = ours.iter().zip(&g.bytes).position(|(a, b)| a != b) {
            panic!("{case}: first differing byte at offset {i}: ours {:#04x}, gguf-py {:#04x}", ours[i], g.bytes[i]);
        }
    }
    assert_eq!(entries(&dir), ["align64.gguf", "basic.gguf"], "temporary files left behind");
}

/// Equality that compares floats by bit pattern, so NaN metadata is checked too.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(s, x), Value::Array(t, y)) => {
            s == t && x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn assert_reads_back(path: &Path, g: &Golden) {
    let f = GgufFile::open(path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, g.alignment);
    assert_eq!(f.metadata().len(), g.metadata.len());
    for ((k, v), (gk, gv)) in f.metadata().iter().zip(&g.metadata) {
        assert_eq!(k, gk);
        assert!(same(v, gv), "{k}: read {v:?}, wrote {gv:?}");
    }
    assert_eq!(f.tensors().len(), g.tensors.len());
    for (t, (name, dt, shape, data)) in f.tensors().iter().zip(&g.tensors) {
        assert_eq!(&t.name, name);
        assert_eq!(t.dtype, *dt, "{name}");
        assert_eq!(&t.shape(), shape, "{name}");
        assert_eq!(t.offset % g.alignment, 0, "{name}");
        assert!(f.tensor_data(t) == &data[..], "{name}: data differs");
    }
}

#[test]
fn round_trip_through_the_reader() {
    let dir = scratch("round_trip");
    for case in ["basic", "align64"] {
        let g = golden(case);
        let out = dir.join(format!("{case}.gguf"));
        build(&g).write(&out).unwrap();
        assert_reads_back(&out, &g);
    }

    // What gguf-py cannot write: empty arrays (of numbers and strings) and a zero-element tensor.
    let g = Golden {
        bytes: Vec::new(),
        alignment: 32,
        metadata: vec![
            ("a.empty_u32".into(), Value::Array(ValueType::U32, vec![])),
            ("a.empty_str".into(), Value::Array(ValueType::String, vec![])),
            ("a.one".into(), Value::Array(ValueType::F64, vec![Value::F64(f64::NAN)])),
        ],
        tensors: vec![
            ("empty".into(), DType::F32, vec![0, 8], vec![]),
            ("after_empty".into(), DType::Q4_0, vec![1, 32], (0..18).collect()),
        ],
    };
    let out = dir.join("edge.gguf");
    build(&g).write(&out).unwrap();
    assert_reads_back(&out, &g);
}

#[test]
fn copying_a_gguf_py_file_reproduces_it() {
    let dir = scratch("copy");
    let src = GgufFile::open(data_dir().join("basic.gguf")).unwrap();
    let mut w = GgufWriter::new();
    assert_eq!(w.copy_metadata_from(&src, &[]).unwrap(), src.metadata().len());
    for t in src.tensors() {
        w.tensor(&t.name, t.dtype, &t.shape(), TensorData::Borrowed(src.tensor_data(t))).unwrap();
    }
    let out = dir.join("copy.gguf");
    w.write(&out).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(data_dir().join("basic.gguf")).unwrap());

    // The source's alignment and split keys describe its layout, not the model: never copied.
    // `except` leaves out keys the caller sets itself, which can then be added without a duplicate.
    let src = GgufFile::open(data_dir().join("align64.gguf")).unwrap();
    assert_eq!(src.alignment, 64);
    let mut w = GgufWriter::new();
    w.metadata("split.count", Value::U16(3)).unwrap();
    let mut copy = GgufWriter::new();
    assert_eq!(copy.copy_metadata_from(&src, &["test.u8"]).unwrap(), src.metadata().len() - 2);
    copy.metadata("test.u8", Value::U8(1)).unwrap();
    let out = dir.join("copy64.gguf");
    copy.write(&out).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert!(f.get("general.alignment").is_none());
    assert_eq!(f.alignment, 32);
    assert_eq!(f.get_u64("test.u8").unwrap(), 1);
    let split_src = dir.join("split.gguf");
    w.write(&split_src).unwrap();
    let mut copy = GgufWriter::new();
    assert_eq!(copy.copy_metadata_from(&GgufFile::open(&split_src).unwrap(), &[]).unwrap(), 0);
}

/// A writer with one good tensor, then `bad` whose producer fails after writing half its bytes.
fn failing_writer(fail: impl FnOnce() -> FormatError + 'static) -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into())).unwrap();
    w.tensor("good", DType::F32, &[4], TensorData::Owned(vec![1; 16])).unwrap();
    let bad = TensorData::deferred(move |sink| {
        sink.write(&[7; 32])?;
        Err(fail())
    });
    w.tensor("bad", DType::F32, &[4, 4], bad).unwrap();
    w
}

#[test]
fn a_failing_producer_leaves_nothing_behind() {
    let dir = scratch("fail_new");
    let out = dir.join("model.gguf");
    let e = failing_writer(|| FormatError::Invalid("quantizer gave up".into())).write(&out).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("quantizer gave up") && msg.contains("model.gguf"), "{msg}");
    assert!(entries(&dir).is_empty(), "left behind: {:?}", entries(&dir));
}

#[test]
fn a_failing_write_keeps_the_existing_target() {
    let dir = scratch("fail_existing");
    let out = dir.join("model.gguf");
    std::fs::write(&out, b"previous model").unwrap();
    failing_writer(|| FormatError::Invalid("out of calibration data".into())).write(&out).unwrap_err();
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    assert_eq!(entries(&dir), ["model.gguf"]);

    // A producer that panics unwinds through the writer: the temporary file still goes.
    let mut w = GgufWriter::new();
    w.tensor("t", DType::F32, &[1], TensorData::deferred(|_| panic!("producer bug"))).unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| w.write(&out))).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    assert_eq!(entries(&dir), ["model.gguf"]);

    // A successful write replaces it.
    let mut w = GgufWriter::new();
    w.tensor("t", DType::F32, &[1], TensorData::Owned(vec![0; 4])).unwrap();
    w.write(&out).unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().tensors().len(), 1);
    assert_eq!(entries(&dir), ["model.gguf"]);
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = scratch("missing_dir");
    let out = dir.join("no/such/dir/model.gguf");
    let mut w = GgufWriter::new();
    w.tensor("t", DType::F32, &[1], TensorData::Owned(vec![0; 4])).unwrap();
    match w.write(&out) {
        Err(FormatError::Io { path, cause }) => {
            assert_eq!(path, out);
            assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(entries(&dir).is_empty());
}

#[test]
fn producers_must_write_exactly_the_tensor_size() {
    let dir = scratch("producer_size");
    let out = dir.join("model.gguf");
    let cases: [(usize, &str); 2] = [(60, "wrote 60 of 64 bytes"), (65, "only 0 remained")];
    for (n, expect) in cases {
        let mut w = GgufWriter::new();
        let data = TensorData::deferred(move |sink| {
            (0..n).try_for_each(|_| sink.write(&[1]))?;
            assert_eq!(sink.remaining(), 64 - n as u64);
            Ok(())
        });
        w.tensor("blk.3.ffn_up.weight", DType::F32, &[4, 4], data).unwrap();
        // The 65th single-byte write fails inside the producer; its `?` returns the sink's error.
        let msg = w.write(&out).unwrap_err().to_string();
        assert!(msg.contains("blk.3.ffn_up.weight") && msg.contains(expect) && msg.contains("model.gguf"), "{msg}");
        assert!(entries(&dir).is_empty());
    }
}

fn tensor_error(name: &str, dtype: DType, shape: &[usize], data: TensorData<'_>, expect: &str) {
    let mut w = GgufWriter::new();
    w.tensor("first", DType::F32, &[1], TensorData::Owned(vec![0; 4])).unwrap();
    let msg = w.tensor(name, dtype, shape, data).unwrap_err().to_string();
    assert!(msg.contains(&format!("{name:?}")) && msg.contains(expect), "expected the name and {expect:?}: {msg}");
}

#[test]
fn invalid_tensors_are_refused_naming_the_tensor() {
    let owned = |n: usize| TensorData::Owned(vec![0; n]);
    tensor_error("first", DType::F32, &[1], owned(4), "added twice");
    // llama.cpp's GGML_MAX_NAME is 64 including the terminating NUL: 63 bytes is the longest name.
    let long = "x".repeat(64);
    tensor_error(&long, DType::F32, &[1], owned(4), "1 to 63 bytes");
    let mut w = GgufWriter::new();
    w.tensor(&"y".repeat(63), DType::F32, &[1], owned(4)).unwrap();
    tensor_error("five_d", DType::F32, &[1, 1, 1, 1, 1], owned(4), "5 dimensions");
    tensor_error("scalar", DType::F32, &[], owned(4), "0 dimensions");
    tensor_error("q8", DType::Q8_0, &[2, 33], owned(68), "row of 33 elements");
    tensor_error("q4k", DType::Q4K, &[128, 2], owned(144), "row of 2 elements");
    tensor_error("short", DType::F16, &[3, 5], owned(29), "29 bytes of data, but [3, 5] F16 takes 30");
    tensor_error("borrowed", DType::Q8_0, &[1, 32], TensorData::Borrowed(&[0; 35]), "35 bytes");
    tensor_error("u8", DType::U8, &[4], owned(4), "no GGUF equivalent");
    tensor_error("huge", DType::F32, &[1 << 32, 1 << 31], TensorData::deferred(|_| Ok(())), "int64");
}

#[test]
fn invalid_metadata_is_refused_naming_the_key() {
    let mut w = GgufWriter::new();
    w.metadata("general.name", Value::String("a".into())).unwrap();
    let err = |w: &mut GgufWriter, k: &str, v: Value| w.metadata(k, v).unwrap_err().to_string();
    let msg = err(&mut w, "general.name", Value::String("b".into()));
    assert!(msg.contains("\"general.name\"") && msg.contains("twice"), "{msg}");
    assert!(err(&mut w, "", Value::U8(0)).contains("1 to 65535 bytes"));
    // llama.cpp requires general.alignment to be a u32 and a power of two.
    for bad in [Value::U64(32), Value::U32(48), Value::U32(0)] {
        let msg = err(&mut w, "general.alignment", bad);
        assert!(msg.contains("general.alignment") && msg.contains("power of two"), "{msg}");
    }
    // llama.cpp's reader rejects arrays of arrays, though gguf-py writes them.
    let nested = Value::Array(ValueType::Array, vec![Value::Array(ValueType::U8, vec![Value::U8(1)])]);
    let msg = err(&mut w, "a.nested", nested);
    assert!(msg.contains("a.nested") && msg.contains("arrays of arrays"), "{msg}");
    let mixed = Value::Array(ValueType::U32, vec![Value::U32(1), Value::I32(2)]);
    let msg = err(&mut w, "a.mixed", mixed);
    assert!(msg.contains("a.mixed") && msg.contains("element 1 is I32"), "{msg}");
    // Refused keys were not recorded: they can still be added correctly.
    w.metadata("general.alignment", Value::U32(16)).unwrap();
    w.metadata("a.mixed", Value::Array(ValueType::U32, vec![])).unwrap();
}

#[test]
fn memory_does_not_grow_with_the_file() {
    const TENSORS: usize = 24;
    const ROWS: usize = 256;
    const COLS: usize = 1024; // 1 MiB of F32 per tensor, 24 MiB in all
    let dir = scratch("memory");
    let out = dir.join("big.gguf");
    MEASURING.with(|m| m.set(true));
    let mut w = GgufWriter::new();
    for i in 0..TENSORS {
        // Like a quantizer: each tensor's bytes are made row by row when the writer asks for them.
        let produce = move |sink: &mut lowbit_formats::gguf_write::TensorSink<'_>| {
            let mut row = vec![0u8; COLS * 4];
            for r in 0..ROWS {
                row.iter_mut().enumerate().for_each(|(j, b)| *b = (i * 31 + r * 7 + j) as u8);
                sink.write(&row)?;
            }
            Ok(())
        };
        w.tensor(&format!("blk.{i}.w"), DType::F32, &[ROWS, COLS], TensorData::deferred(produce)).unwrap();
    }
    w.write(&out).unwrap();
    MEASURING.with(|m| m.set(false));
    let peak = PEAK.with(|p| p.get());
    let total = (TENSORS * ROWS * COLS * 4) as isize;
    // The write buffer (1 MiB) and one row dominate; holding the tensors would need 24 MiB.
    assert!(peak < 2 << 20, "peak {peak} bytes allocated while writing {total} bytes");

    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensors().len(), TENSORS);
    let t = f.tensor_info("blk.5.w").unwrap();
    let d = f.tensor_data(t);
    assert_eq!(d.len(), ROWS * COLS * 4);
    assert_eq!(d[3 * COLS * 4 + 9], (5 * 31 + 3 * 7 + 9) as u8);
}
