//! The GGUF reader against hostile images: a small valid GGUF built here, then thousands of
//! mutations of it (truncations, seeded random byte changes, targeted overwrites of every count,
//! length, type and offset). Every parse must return (never panic), every error must name the file
//! and the problem, and no allocation may be sized by a header field: a count or length alone
//! never makes the reader reserve more than the image's size (see `Bound`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lowbit_formats::dequant::dequantize;
use lowbit_formats::gguf::{GgufFile, Value};
use lowbit_formats::DType;
use lowbit_testdata::Rng;

/// Records the largest single allocation request of the current thread while it measures, so
/// the test harness's other threads do not disturb the figure.
struct LargestAllocation;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; recording touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Parses `image` as `path`, returning the result and the largest allocation made meanwhile.
fn parse_measured(path: &str, image: Vec<u8>) -> (std::thread::Result<lowbit_formats::Result<GgufFile>>, usize) {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| GgufFile::from_bytes(path, image)));
    MEASURING.with(|m| m.set(false));
    (result, LARGEST.with(Cell::get))
}

/// Writes a GGUF image, remembering where each field starts so tests can overwrite it.
#[derive(Default)]
struct Builder {
    b: Vec<u8>,
    marks: HashMap<String, usize>,
}

impl Builder {
    fn mark(&mut self, name: &str) {
        self.marks.insert(name.to_string(), self.b.len());
    }

    fn u8(&mut self, v: u8) {
        self.b.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.b.extend_from_slice(v);
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// A metadata entry; marks `key K`, `type K` and `value K`.
    fn kv(&mut self, key: &str, value_type: u32, value: impl FnOnce(&mut Builder)) {
        self.mark(&format!("key {key}"));
        self.str(key);
        self.mark(&format!("type {key}"));
        self.u32(value_type);
        self.mark(&format!("value {key}"));
        value(self);
    }

    /// An array value: element type, count, then the elements.
    fn array(&mut self, elem_type: u32, n: u64, elems: impl FnOnce(&mut Builder)) {
        self.u32(elem_type);
        self.u64(n);
        elems(self);
    }

    /// A tensor info; marks `tensor N`, `n_dims N`, `dims N`, `dtype N` and `offset N`.
    fn tensor(&mut self, name: &str, dims: &[u64], dtype: DType, offset: u64) {
        self.mark(&format!("tensor {name}"));
        self.str(name);
        self.mark(&format!("n_dims {name}"));
        self.u32(dims.len() as u32);
        self.mark(&format!("dims {name}"));
        for &d in dims {
            self.u64(d);
        }
        self.mark(&format!("dtype {name}"));
        self.u32(dtype.ggml_id().expect("GGUF type"));
        self.mark(&format!("offset {name}"));
        self.u64(offset);
    }
}

// ggml value type ids.
const U8: u32 = 0;
const I8: u32 = 1;
const U16: u32 = 2;
const I16: u32 = 3;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I64: u32 = 11;
const F64: u32 = 12;

struct Image {
    bytes: Vec<u8>,
    marks: HashMap<String, usize>,
    data_offset: usize,
}

impl Image {
    fn at(&self, mark: &str) -> usize {
        *self.marks.get(mark).unwrap_or_else(|| panic!("no mark {mark:?}"))
    }

    /// A copy with `value` written at `offset`.
    fn with(&self, offset: usize, value: &[u8]) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[offset..offset + value.len()].copy_from_slice(value);
        b
    }

    fn with_u32(&self, mark: &str, extra: usize, v: u32) -> Vec<u8> {
        self.with(self.at(mark) + extra, &v.to_le_bytes())
    }

    fn with_u64(&self, mark: &str, extra: usize, v: u64) -> Vec<u8> {
        self.with(self.at(mark) + extra, &v.to_le_bytes())
    }
}

const N_KV: u64 = 18;
/// Enough tensor data that, as in real files, the image is mostly data rather than metadata.
const Q4K_BLOCKS: usize = 16;

/// Metadata of every value type, arrays of several element types (one empty, one nested), and
/// four tensors of different types whose data ends exactly at the end of the image (about 3 KB).
fn valid_image() -> Image {
    let mut b = Builder::default();
    b.bytes(b"GGUF");
    b.u32(3);
    b.u64(4);
    b.u64(N_KV);
    b.kv("general.architecture", STRING, |b| b.str("llama"));
    b.kv("general.alignment", U32, |b| b.u32(32));
    b.kv("t.u8", U8, |b| b.u8(200));
    b.kv("t.i8", I8, |b| b.u8(-5i8 as u8));
    b.kv("t.u16", U16, |b| b.bytes(&60000u16.to_le_bytes()));
    b.kv("t.i16", I16, |b| b.bytes(&(-300i16).to_le_bytes()));
    b.kv("t.i32", I32, |b| b.bytes(&(-70000i32).to_le_bytes()));
    b.kv("t.f32", F32, |b| b.bytes(&0.5f32.to_le_bytes()));
    b.kv("t.bool", BOOL, |b| b.u8(1));
    b.kv("t.u64", U64, |b| b.u64(1 << 40));
    b.kv("t.i64", I64, |b| b.bytes(&(-(1i64 << 40)).to_le_bytes()));
    b.kv("t.f64", F64, |b| b.bytes(&0.25f64.to_le_bytes()));
    b.kv("t.str", STRING, |b| b.str("héllo"));
    b.kv("t.arr.u32", ARRAY, |b| b.array(U32, 3, |b| [1, 2, 3].into_iter().for_each(|v| b.u32(v))));
    b.kv("t.arr.str", ARRAY, |b| b.array(STRING, 3, |b| ["a", "bc", ""].into_iter().for_each(|s| b.str(s))));
    b.kv("t.arr.bool", ARRAY, |b| b.array(BOOL, 2, |b| b.bytes(&[1, 0])));
    b.kv("t.arr.empty", ARRAY, |b| b.array(F64, 0, |_| {}));
    b.kv("t.arr.nested", ARRAY, |b| {
        b.array(ARRAY, 2, |b| {
            b.array(I8, 2, |b| b.bytes(&[1, 0xFF]));
            b.array(U8, 1, |b| b.u8(7));
        })
    });

    b.tensor("tok", &[4, 2], DType::F32, 0);
    b.tensor("f16", &[8], DType::F16, 32);
    b.tensor("q8", &[32, 2], DType::Q8_0, 64);
    b.tensor("q4k", &[256, Q4K_BLOCKS as u64], DType::Q4K, 160);
    while b.b.len() % 32 != 0 {
        b.u8(0);
    }
    let data_offset = b.b.len();
    let data_start = b.b.len();
    for i in 0..8 {
        b.bytes(&(i as f32).to_le_bytes());
    }
    b.bytes(&[0; 16]);
    let data_len = |b: &Builder| b.b.len() - data_start;
    while data_len(&b) < 64 {
        b.u8(0);
    }
    for _ in 0..2 {
        b.bytes(&half::f16::from_f32(0.5).to_le_bytes());
        b.bytes(&[3; 32]);
    }
    while data_len(&b) < 160 {
        b.u8(0);
    }
    for _ in 0..Q4K_BLOCKS {
        b.bytes(&half::f16::from_f32(0.25).to_le_bytes());
        b.bytes(&half::f16::from_f32(0.125).to_le_bytes());
        b.bytes(&[0x55; 140]);
    }
    Image { bytes: b.b, marks: b.marks, data_offset }
}

/// The largest single allocation a parse of an image of `len` bytes may make.
#[derive(Clone, Copy, Debug)]
enum Bound {
    /// The image's size. Holds when only header fields were changed (a count, a length, a type):
    /// whatever they claim, the reader may reserve only what the bytes present can fill, and what
    /// it builds from the real metadata is smaller than an image that, like a real GGUF, is mostly
    /// tensor data.
    Image,
    /// When the image is cut short, or arbitrary bytes change, metadata can make up most of what is
    /// parsed, and arbitrary bytes can become genuine array elements; the reader keeps each
    /// one-byte element (u8, i8, bool) as a `Value`, that many times larger, in a vector that
    /// growing by doubling may leave up to twice as large as its content.
    Content,
}

impl Bound {
    fn limit(self, len: usize) -> usize {
        // Fixed-size allocations every parse makes whatever the image: the path, an error message.
        const FIXED: usize = 512;
        FIXED
            + match self {
                Bound::Image => len,
                Bound::Content => 2 * len * std::mem::size_of::<Value>(),
            }
    }
}

/// Parses one mutant; on error checks the message names `path` and the problem (`expected`,
/// when the mutation targets one). Returns whether it parsed.
fn check_mutant(label: &str, image: Vec<u8>, bound: Bound, expected: &[&str]) -> bool {
    let path = format!("/hostile/{}.gguf", label.replace(' ', "_"));
    let len = image.len();
    let (result, largest) = parse_measured(&path, image);
    let result = result.unwrap_or_else(|_| panic!("{label}: the reader panicked"));
    assert!(
        largest <= bound.limit(len),
        "{label}: one allocation of {largest} bytes while parsing a {len}-byte image (bound {bound:?})"
    );
    match result {
        Ok(file) => {
            assert!(expected.is_empty(), "{label}: accepted, expected an error mentioning {expected:?}");
            use_everything(label, &file);
            true
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&path), "{label}: error does not name the file: {msg}");
            for want in expected {
                assert!(msg.contains(want), "{label}: error does not mention {want:?}: {msg}");
            }
            false
        }
    }
}

/// Whatever a mutant let through must be usable: every tensor's data in bounds and dequantizable.
fn use_everything(label: &str, file: &GgufFile) {
    for (_, v) in file.metadata() {
        let _ = v.summary();
    }
    for t in file.tensors() {
        let data = file.tensor_data(t);
        assert_eq!(data.len() as u64, t.n_bytes, "{label}: {}", t.name);
        if let Err(e) = dequantize(t.dtype, data, t.n_elements as usize) {
            panic!("{label}: accepted tensor {} does not dequantize: {e}", t.name);
        }
    }
}

#[test]
fn valid_image_parses_with_every_value() {
    let img = valid_image();
    assert!(check_mutant("valid", img.bytes.clone(), Bound::Image, &[]));
    let f = GgufFile::from_bytes("valid.gguf", img.bytes).unwrap();
    assert_eq!(f.metadata().len() as u64, N_KV);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("t.u8").unwrap(), 200);
    assert_eq!(f.get("t.i8").and_then(|v| v.as_i64()), Some(-5));
    assert_eq!(f.get_u64("t.u16").unwrap(), 60000);
    assert_eq!(f.get("t.i16").and_then(|v| v.as_i64()), Some(-300));
    assert_eq!(f.get("t.i32").and_then(|v| v.as_i64()), Some(-70000));
    assert_eq!(f.get_f32("t.f32").unwrap(), 0.5);
    assert!(f.get_bool("t.bool").unwrap());
    assert_eq!(f.get_u64("t.u64").unwrap(), 1 << 40);
    assert_eq!(f.get("t.i64").and_then(|v| v.as_i64()), Some(-(1 << 40)));
    assert_eq!(f.get("t.f64").and_then(|v| v.as_f64()), Some(0.25));
    assert_eq!(f.get_str("t.str").unwrap(), "héllo");
    assert_eq!(f.get_i64_array("t.arr.u32").unwrap(), [1, 2, 3]);
    assert_eq!(f.get_str_array("t.arr.str").unwrap(), ["a", "bc", ""]);
    assert_eq!(f.get_array_len("t.arr.bool").unwrap(), 2);
    assert_eq!(f.get_array_len("t.arr.empty").unwrap(), 0);
    let nested = f.get_array("t.arr.nested").unwrap();
    assert_eq!(nested[0].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<_>>(), [1, -1]);
    assert_eq!(nested[1].as_array().unwrap()[0].as_u64(), Some(7));

    assert_eq!(f.data_offset as usize, img.data_offset);
    let shapes: Vec<_> = f.tensors().iter().map(|t| (t.name.as_str(), t.dtype, t.shape())).collect();
    assert_eq!(
        shapes,
        [
            ("tok", DType::F32, vec![2, 4]),
            ("f16", DType::F16, vec![8]),
            ("q8", DType::Q8_0, vec![2, 32]),
            ("q4k", DType::Q4K, vec![Q4K_BLOCKS, 256])
        ]
    );
    let tok = f.tensor_info("tok").unwrap();
    assert_eq!(dequantize(tok.dtype, f.tensor_data(tok), 8).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let q8 = f.tensor_info("q8").unwrap();
    assert_eq!(dequantize(q8.dtype, f.tensor_data(q8), 64).unwrap(), [1.5; 64]);
    assert_eq!(
        f.file_len() as usize,
        f.data_offset as usize + 160 + 144 * Q4K_BLOCKS,
        "the last tensor ends the image"
    );
}

#[test]
fn truncation_anywhere_is_an_error() {
    let img = valid_image();
    for cut in 0..img.bytes.len() {
        let parsed = check_mutant(&format!("truncated at {cut}"), img.bytes[..cut].to_vec(), Bound::Content, &[]);
        assert!(!parsed, "an image truncated to {cut} of {} bytes was accepted", img.bytes.len());
    }
}

#[test]
fn random_byte_changes_never_panic_or_overallocate() {
    let img = valid_image();
    let mut rng = Rng::new(1);
    let mut rejected = 0;
    const MUTANTS: usize = 3000;
    for i in 0..MUTANTS {
        let mut b = img.bytes.clone();
        let mut changes = Vec::new();
        for _ in 0..1 + rng.below(3) {
            // Mostly the header: changes in tensor data are not the reader's business.
            let pos =
                if rng.below(10) < 9 { rng.below(img.data_offset as u64) } else { rng.below(b.len() as u64) } as usize;
            // Half single-bit flips (lengths and counts grow by powers of two), half any byte.
            let new = if rng.below(2) == 0 { b[pos] ^ (1 << rng.below(8)) } else { rng.next_u64() as u8 };
            changes.push((pos, b[pos], new));
            b[pos] = new;
        }
        if !check_mutant(&format!("mutant {i} {changes:?}"), b, Bound::Content, &[]) {
            rejected += 1;
        }
    }
    // Most header bytes are counts, lengths, types and names that a change breaks; if most
    // mutants parsed, the mutations would not be reaching the reader's checks.
    assert!(rejected > MUTANTS / 2, "only {rejected} of {MUTANTS} mutants were rejected");
}

#[test]
fn targeted_overwrites_are_rejected_with_the_problem_named() {
    let img = valid_image();
    let huge = 1u64 << 60;
    let end = (img.bytes.len() - img.data_offset) as u64;
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("bad magic", img.with(0, b"GGML"), vec!["magic"]),
        ("version 1", img.with(4, &1u32.to_le_bytes()), vec!["version 1"]),
        ("version 4", img.with(4, &4u32.to_le_bytes()), vec!["version 4"]),
        ("big-endian version", img.with(4, &3u32.to_be_bytes()), vec!["version"]),
        ("tensor count 2^60", img.with(8, &huge.to_le_bytes()), vec!["tensor count"]),
        ("tensor count u64::MAX", img.with(8, &u64::MAX.to_le_bytes()), vec!["tensor count"]),
        ("metadata count 2^60", img.with(16, &huge.to_le_bytes()), vec!["metadata count"]),
        ("metadata count one too many", img.with(16, &(N_KV + 1).to_le_bytes()), vec!["metadata"]),
        ("key length 2^60", img.with_u64("key t.u8", 0, huge), vec!["metadata key", "remain"]),
        ("string value length 2^60", img.with_u64("value t.str", 0, huge), vec!["\"t.str\"", "remain"]),
        // Element type (4) and count (8) precede the first string's length.
        ("array string length 2^60", img.with_u64("value t.arr.str", 12, huge), vec!["\"t.arr.str\"", "remain"]),
        ("array count 2^60", img.with_u64("value t.arr.u32", 4, huge), vec!["\"t.arr.u32\"", "count"]),
        ("nested array count 2^60", img.with_u64("value t.arr.nested", 16, huge), vec!["\"t.arr.nested\"", "count"]),
        ("tensor name length 2^60", img.with_u64("tensor f16", 0, huge), vec!["tensor #1 name", "remain"]),
        ("n_dims 0", img.with_u32("n_dims q8", 0, 0), vec!["\"q8\"", "0 dimensions"]),
        ("n_dims 5", img.with_u32("n_dims q8", 0, 5), vec!["\"q8\"", "5 dimensions"]),
        ("tensor type 4 (removed Q4_2)", img.with_u32("dtype q8", 0, 4), vec!["\"q8\"", "unknown tensor type 4"]),
        ("tensor type 99", img.with_u32("dtype q8", 0, 99), vec!["\"q8\"", "unknown tensor type 99"]),
        ("tensor type u32::MAX", img.with_u32("dtype q8", 0, u32::MAX), vec!["\"q8\"", "unknown tensor type"]),
        ("value type 13", img.with_u32("type t.f32", 0, 13), vec!["\"t.f32\"", "unknown value type 13"]),
        ("value type u32::MAX", img.with_u32("type t.f32", 0, u32::MAX), vec!["\"t.f32\"", "unknown value type"]),
        ("array element type 13", img.with_u32("value t.arr.u32", 0, 13), vec!["\"t.arr.u32\"", "element type 13"]),
        ("arrays nested 3 deep", img.with_u32("value t.arr.nested", 12, ARRAY), vec!["\"t.arr.nested\"", "nested"]),
        ("offset 2^40", img.with_u64("offset q4k", 0, 1 << 40), vec!["\"q4k\"", "past the end"]),
        ("offset wraps u64", img.with_u64("offset q4k", 0, u64::MAX - 31), vec!["\"q4k\"", "past the end"]),
        ("offset one block late", img.with_u64("offset q4k", 0, 192), vec!["\"q4k\"", "past the end"]),
        ("offset at the end", img.with_u64("offset q4k", 0, end.next_multiple_of(32)), vec!["\"q4k\"", "past the end"]),
        ("misaligned offset", img.with_u64("offset q4k", 0, 161), vec!["\"q4k\"", "not aligned"]),
        ("dims 2^32 x 2^32", dims(&img, "tok", [1 << 32, 1 << 32]), vec!["\"tok\"", "overflows"]),
        ("dims 2^62 x 2", dims(&img, "tok", [1 << 62, 2]), vec!["\"tok\"", "overflows"]),
        ("dims u64::MAX x 1", dims(&img, "tok", [u64::MAX, 1]), vec!["\"tok\""]),
        // ggml's dimensions are int64; a zero beside it keeps the element count from overflowing.
        ("dimension above i64::MAX", dims(&img, "tok", [0, 1 << 63]), vec!["\"tok\"", "dimension"]),
        ("Q8_0 row of 31", img.with_u64("dims q8", 0, 31), vec!["\"q8\"", "block length 32"]),
        ("F32 byte count overflows u64", dims(&img, "tok", [1 << 62, 1]), vec!["\"tok\"", "overflow"]),
        ("tensor larger than the file", img.with_u64("dims q4k", 0, 256 * 1000), vec!["\"q4k\"", "past the end"]),
        ("duplicate tensor name", img.with(img.at("tensor f16") + 8, b"tok"), vec!["\"tok\"", "twice"]),
        ("duplicate key", img.with(img.at("key t.u8") + 8, b"t.i8"), vec!["\"t.i8\"", "twice"]),
        ("bool byte 2", img.with(img.at("value t.bool"), &[2]), vec!["\"t.bool\"", "bool byte 2"]),
        ("bool array byte 7", img.with(img.at("value t.arr.bool") + 12, &[7]), vec!["\"t.arr.bool\"", "bool"]),
        ("alignment 0", img.with_u32("value general.alignment", 0, 0), vec!["general.alignment"]),
        ("alignment 48", img.with_u32("value general.alignment", 0, 48), vec!["general.alignment"]),
        ("alignment 2^31", img.with_u32("value general.alignment", 0, 1 << 31), vec!["general.alignment"]),
        // An f32 is as long as the u32 it replaces, so only the type is wrong.
        ("alignment of type f32", img.with_u32("type general.alignment", 0, F32), vec!["general.alignment"]),
        ("key not UTF-8", img.with(img.at("key t.u8") + 8, &[0xFF]), vec!["metadata key #2", "UTF-8"]),
        ("string value not UTF-8", img.with(img.at("value t.str") + 9, &[0xFF]), vec!["\"t.str\"", "UTF-8"]),
        ("tensor name not UTF-8", img.with(img.at("tensor q8") + 8, &[0x80]), vec!["tensor #2 name", "UTF-8"]),
    ];
    for (label, image, expected) in cases {
        assert!(!check_mutant(label, image, Bound::Image, &expected), "{label}: accepted");
    }
}

fn dims<const N: usize>(img: &Image, tensor: &str, dims: [u64; N]) -> Vec<u8> {
    let raw: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    img.with(img.at(&format!("dims {tensor}")), &raw)
}

/// Each count set to the largest value the reader's own plausibility check admits (the bytes that
/// remain divided by the fewest bytes one item takes on disk). The items after the real ones are
/// garbage, so parsing fails within a few items; reserving room for the claimed count up front
/// would allocate several times the image (an item in memory is larger than its minimum on disk).
#[test]
fn counts_at_the_readers_limit_reserve_no_more_than_the_image() {
    let img = valid_image();
    let len = img.bytes.len();
    let (str_at, bool_at, nested_at) =
        (img.at("value t.arr.str") + 4, img.at("value t.arr.bool") + 4, img.at("value t.arr.nested") + 4);
    // (label, offset of the u64 count, where the reader checks it, fewest bytes per item, expected
    // words in the error). The tensor count is checked after the metadata count is read.
    let cases = [
        ("tensor count", 8, 24, 32, vec!["tensor"]),
        ("metadata count", 16, 24, 8 + 4 + 1, vec!["metadata"]),
        ("bool array count", bool_at, bool_at + 8, 1, vec!["\"t.arr.bool\"", "bool byte"]),
        ("string array count", str_at, str_at + 8, 8, vec!["\"t.arr.str\""]),
        ("nested array count", nested_at, nested_at + 8, 12, vec!["\"t.arr.nested\""]),
    ];
    for (label, at, checked_at, min_item, expected) in cases {
        let count = ((len - checked_at) / min_item) as u64;
        let label = format!("{label} {count} at the limit");
        assert!(
            !check_mutant(&label, img.with(at, &count.to_le_bytes()), Bound::Image, &expected),
            "{label}: accepted"
        );
    }
}
