//! Importance matrices (llama.cpp's imatrix): per weight matrix, the sum of x² of each input column over a
//! calibration text, and how many tokens were summed. The mean x² of a column says how much an error in that column
//! of the weights costs at the output, so quantizers weight their scale search with it.
//!
//! Collected as llama-imatrix collects it: the text cut into consecutive chunks (`calib_data::load_chunks`), every
//! matrix of the blocks recorded (not the output projection, which llama-imatrix skips unless `--process-output`),
//! sums kept in f32 and added token after token. Files are llama-imatrix's: GGUF with `general.type = "imatrix"`,
//! `imatrix.datasets` / `imatrix.chunk_count` / `imatrix.chunk_size`, and per matrix `<name>.in_sum2` (F32,
//! `[experts, cols]`, 1-D for a dense matrix) and `<name>.counts` (F32, one per expert), in name order; written byte
//! for byte as llama-imatrix writes them. The legacy `.dat` format is read too. The weights handed to a quantizer are
//! llama-quantize's: `in_sum2 / count` per column (1 where an expert saw no token).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lowbit_formats::gguf::{GgufFile, Value, ValueType};
use lowbit_formats::gguf_write::{GgufWriter, TensorData};
use lowbit_formats::{DType, FormatError};
use lowbit_model::{Logits, Model, ModelError, Observer, Site};

/// Routed tokens below which an expert's statistics are too thin to weight its quantization: its mean x² per
/// column would rest on a handful of tokens, so it is rounded unweighted instead (llama-quantize's rule for an
/// expert that saw no token at all, extended to ones that saw almost none).
pub const MIN_EXPERT_TOKENS: u64 = 64;

const SUM2: &str = ".in_sum2";
const COUNTS: &str = ".counts";
const KEY_TYPE: &str = "general.type";
const KEY_DATASETS: &str = "imatrix.datasets";
const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

/// One matrix's statistics; `sum2` is `counts.len()` rows (one per expert; one for a dense matrix) of the matrix's
/// column count.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub sum2: Vec<f32>,
    pub counts: Vec<u64>,
}

impl Entry {
    /// Columns per expert.
    pub fn cols(&self) -> usize {
        self.sum2.len() / self.counts.len()
    }
}

/// An importance matrix: statistics per weight tensor name, and what they were collected from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Importance {
    pub entries: BTreeMap<String, Entry>,
    /// The calibration files' names.
    pub datasets: Vec<String>,
    /// Chunks summed (llama-imatrix's count: the most tokens any matrix saw, in chunks).
    pub chunk_count: u32,
    /// Tokens per chunk (0 when unknown: legacy files).
    pub chunk_size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("imatrix {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A file that is not a well-formed importance matrix.
    #[error("imatrix {path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("imatrix entry {tensor} has {imatrix} columns, the tensor {tensor_cols}")]
    Columns { tensor: String, imatrix: usize, tensor_cols: usize },
    #[error("imatrix entry {0} names no tensor of the model: the imatrix was made for another model")]
    UnknownTensor(String),
}

impl Importance {
    /// Reads a llama-imatrix GGUF file, or a legacy `.dat` file (anything not starting with the GGUF magic).
    pub fn read(path: &Path) -> Result<Importance, ImatrixError> {
        let bytes = std::fs::read(path).map_err(|cause| ImatrixError::Io { path: path.to_path_buf(), cause })?;
        if bytes.starts_with(lowbit_formats::gguf::MAGIC) {
            read_gguf(&GgufFile::from_bytes(path, bytes)?)
        } else {
            read_legacy(path, &bytes)
        }
    }

    /// Writes the GGUF format, as llama-imatrix writes it, atomically.
    pub fn write(&self, path: &Path) -> Result<(), ImatrixError> {
        let mut w = GgufWriter::new();
        w.metadata(KEY_TYPE, Value::String("imatrix".into()))?;
        let datasets = self.datasets.iter().map(|d| Value::String(d.clone())).collect();
        w.metadata(KEY_DATASETS, Value::Array(ValueType::String, datasets))?;
        w.metadata(KEY_CHUNK_COUNT, Value::U32(self.chunk_count))?;
        w.metadata(KEY_CHUNK_SIZE, Value::U32(self.chunk_size))?;
        for (name, e) in &self.entries {
            // ggml drops trailing dimensions of 1: a dense matrix's rows are 1-D.
            let (n_mat, cols) = (e.counts.len(), e.cols());
            let (sum_shape, count_shape) =
                if n_mat > 1 { (vec![n_mat, cols], vec![n_mat, 1]) } else { (vec![cols], vec![1]) };
            let sum2 = e.sum2.iter().flat_map(|v| v.to_le_bytes()).collect();
            let counts = e.counts.iter().flat_map(|&c| (c as f32).to_le_bytes()).collect();
            w.tensor(&format!("{name}{SUM2}"), DType::F32, &sum_shape, TensorData::Owned(sum2))?;
            w.tensor(&format!("{name}{COUNTS}"), DType::F32, &count_shape, TensorData::Owned(counts))?;
        }
        Ok(w.write(path)?)
    }

    /// The per-column weights of tensor `name` with `cols` columns and `n_mat` matrices (experts), as llama-quantize
    /// derives them; `None` when the matrix has no entry (it is then quantized unweighted, as llama-quantize does).
    pub fn weights(&self, name: &str, cols: usize, n_mat: usize) -> Result<Option<Vec<f32>>, ImatrixError> {
        let Some(e) = self.entry(name) else { return Ok(None) };
        if e.sum2.len() != cols * n_mat {
            return Err(ImatrixError::Columns {
                tensor: name.to_string(),
                imatrix: e.sum2.len() / n_mat.max(1),
                tensor_cols: cols,
            });
        }
        let mut w = Vec::with_capacity(e.sum2.len());
        // A dense matrix's single count serves every row of a (legacy) per-expert layout too.
        for (m, row) in e.sum2.chunks_exact(e.cols()).enumerate() {
            let count = e.counts[m.min(e.counts.len() - 1)] as f32;
            w.extend(row.iter().map(|&s| if count > 0.0 { s / count } else { 1.0 }));
        }
        Ok(Some(w))
    }

    /// The entry of tensor `name`. A GGUF file's gate and up expert stacks (llama.cpp splits GPT-OSS's fused one)
    /// read the fused stack's entry: they share its input.
    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name).or_else(|| {
            let block =
                name.strip_suffix(".ffn_gate_exps.weight").or_else(|| name.strip_suffix(".ffn_up_exps.weight"))?;
            self.entries.get(&format!("{block}.ffn_gate_up_exps.weight"))
        })
    }

    /// Per expert of the stack `name` (`experts` matrices of `cols` columns): its weights, or `None` for an expert
    /// that saw fewer than [`MIN_EXPERT_TOKENS`] routed tokens (quantized unweighted); `None` when the stack has no
    /// entry.
    pub fn expert_weights(
        &self,
        name: &str,
        cols: usize,
        experts: usize,
    ) -> Result<Option<Vec<Option<Vec<f32>>>>, ImatrixError> {
        let Some(all) = self.weights(name, cols, experts)? else { return Ok(None) };
        let Some(Entry { counts, .. }) = self.entry(name) else { return Ok(None) };
        Ok(Some(
            all.chunks_exact(cols)
                .enumerate()
                .map(|(e, w)| (counts[e.min(counts.len() - 1)] >= MIN_EXPERT_TOKENS).then(|| w.to_vec()))
                .collect(),
        ))
    }

    /// Checks that every entry names a tensor of the model (`tensors`: name, columns, matrices).
    pub fn check_against(&self, tensors: &[(&str, usize, usize)]) -> Result<(), ImatrixError> {
        for name in self.entries.keys() {
            // A fused gate/up stack's entry serves a GGUF file's split gate and up stacks.
            let block = name.strip_suffix(".ffn_gate_up_exps.weight");
            let split = block.map(|b| [format!("{b}.ffn_gate_exps.weight"), format!("{b}.ffn_up_exps.weight")]);
            let named =
                |t: &&(&str, usize, usize)| t.0 == name || split.as_ref().is_some_and(|s| s.iter().any(|n| n == t.0));
            let found: Vec<_> = tensors.iter().filter(named).collect();
            if found.is_empty() {
                return Err(ImatrixError::UnknownTensor(name.clone()));
            }
            for &&(tensor, cols, n_mat) in &found {
                self.weights(tensor, cols, n_mat)?;
            }
        }
        Ok(())
    }

    /// Collects the importance matrix of `model` over `chunks` (each run from an empty cache, as llama-imatrix
    /// clears its cache per chunk); `datasets` names the text. `progress(i)` after chunk `i`.
    pub fn collect(
        model: &Model,
        chunks: &[Vec<u32>],
        datasets: Vec<String>,
        progress: &dyn Fn(usize),
    ) -> Result<Importance, ModelError> {
        let mut sums = SiteSums::default();
        let len = chunks.iter().map(Vec::len).max().unwrap_or(1);
        let mut cache = model.new_cache(len.max(1))?;
        for (i, c) in chunks.iter().enumerate() {
            cache.truncate(0);
            model.forward_observed(c, &mut cache, Logits::Last, &mut sums)?;
            progress(i);
        }
        let mut entries = BTreeMap::new();
        let mut most = 0;
        for ((block, site), (sum2, count)) in sums.dense {
            most = most.max(count);
            // A mixture-of-experts block has no dense MLP projections to record for.
            for &p in site.projections().iter().filter(|&&p| model.projection(block, p).is_some()) {
                entries.insert(p.tensor_name(block), Entry { sum2: sum2.clone(), counts: vec![count] });
            }
        }
        for ((block, site), (sum2, counts)) in sums.experts {
            let stack = if site == Site::MlpIn { "ffn_gate_up_exps" } else { "ffn_down_exps" };
            most = most.max(counts.iter().sum::<u64>() / counts.len().max(1) as u64);
            entries.insert(format!("blk.{block}.{stack}.weight"), Entry { sum2, counts });
        }
        let chunk_size = chunks.first().map_or(0, Vec::len);
        let chunk_count = most.checked_div(chunk_size as u64).unwrap_or(0);
        Ok(Importance { entries, datasets, chunk_count: chunk_count as u32, chunk_size: chunk_size as u32 })
    }
}

/// Σx² per column and tokens seen, per (block, site), and per expert of a mixture of experts (as llama-imatrix
/// keeps them: `[experts, cols]` sums, a count per expert); summed in f32 token after token, as llama-imatrix sums.
#[derive(Default)]
struct SiteSums {
    dense: BTreeMap<(usize, Site), (Vec<f32>, u64)>,
    experts: BTreeMap<(usize, Site), (Vec<f32>, Vec<u64>)>,
}

fn add_squares(acc: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(acc.len()) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v * v);
    }
}

impl Observer for SiteSums {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], n: usize) {
        // llama-imatrix records the output projection only with --process-output.
        if site == Site::Head || n == 0 {
            return;
        }
        let (acc, count) = self.dense.entry((block, site)).or_insert_with(|| (vec![0.0; x.len() / n], 0));
        add_squares(acc, x);
        *count += n as u64;
    }

    fn observe_expert(&mut self, block: usize, site: Site, expert: usize, experts: usize, x: &[f32], n: usize) {
        if n == 0 || expert >= experts {
            return;
        }
        let width = x.len() / n;
        let (acc, counts) =
            self.experts.entry((block, site)).or_insert_with(|| (vec![0.0; experts * width], vec![0; experts]));
        add_squares(&mut acc[expert * width..(expert + 1) * width], x);
        counts[expert] += n as u64;
    }
}

fn read_gguf(f: &GgufFile) -> Result<Importance, ImatrixError> {
    let invalid = |what: String| ImatrixError::Invalid { path: f.path().to_path_buf(), what };
    // llama-quantize refuses a GGUF imatrix without its metadata.
    let u32_key = |key: &str| match f.get(key) {
        Some(Value::U32(v)) => Ok(*v),
        Some(other) => Err(invalid(format!("{key} is {}, want a u32", other.summary()))),
        None => Err(invalid(format!("no {key}: not an imatrix file"))),
    };
    let (chunk_count, chunk_size) = (u32_key(KEY_CHUNK_COUNT)?, u32_key(KEY_CHUNK_SIZE)?);
    let datasets = match f.get(KEY_DATASETS) {
        Some(Value::Array(ValueType::String, v)) => v.iter().filter_map(|d| d.as_str().map(str::to_string)).collect(),
        Some(other) => return Err(invalid(format!("{KEY_DATASETS} is {}, want strings", other.summary()))),
        None => return Err(invalid(format!("no {KEY_DATASETS}: not an imatrix file"))),
    };
    // Per entry: its sums and its counts, as found.
    type Parts = (Option<Vec<f32>>, Option<Vec<f32>>);
    let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
    for t in f.tensors() {
        let (name, is_sum) = match (t.name.strip_suffix(SUM2), t.name.strip_suffix(COUNTS)) {
            (Some(n), _) => (n, true),
            (_, Some(n)) => (n, false),
            _ => continue,
        };
        if t.dtype != DType::F32 {
            return Err(invalid(format!("tensor {} is {}, want F32", t.name, t.dtype)));
        }
        let values: Vec<f32> =
            f.tensor_data(t).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        let slot = parts.entry(name).or_default();
        if is_sum {
            slot.0 = Some(values);
        } else {
            slot.1 = Some(values);
        }
    }
    if parts.is_empty() {
        return Err(invalid("no entries".into()));
    }
    let mut entries = BTreeMap::new();
    for (name, pair) in parts {
        let (Some(sum2), Some(counts)) = pair else {
            return Err(invalid(format!("{name}: {SUM2} and {COUNTS} must come together")));
        };
        let counts = counts
            .iter()
            .map(|&c| (c.is_finite() && c >= 0.0 && c.fract() == 0.0).then_some(c as u64))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| invalid(format!("{name}: counts must be whole non-negative numbers")))?;
        entries.insert(name.to_string(), checked(name, sum2, counts).map_err(invalid)?);
    }
    Ok(Importance { entries, datasets, chunk_count, chunk_size })
}

/// An entry whose sums fill whole rows of one per count and are finite and non-negative (squares).
fn checked(name: &str, sum2: Vec<f32>, counts: Vec<u64>) -> Result<Entry, String> {
    if counts.is_empty() || sum2.is_empty() || !sum2.len().is_multiple_of(counts.len()) {
        return Err(format!("{name}: {} sums do not split into {} rows", sum2.len(), counts.len()));
    }
    if let Some(v) = sum2.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(format!("{name}: sum of squares {v}"));
    }
    Ok(Entry { sum2, counts })
}

/// The legacy format: i32 entry count; per entry an i32-length name, i32 calls, i32 value count and the values (the
/// mean x² times the calls); then optionally the i32 chunk count and an i32-length dataset name. llama-quantize
/// divides the values by the calls, which the entry's single count reproduces (a count of 1 where calls are 0: the
/// values as they are).
fn read_legacy(path: &Path, bytes: &[u8]) -> Result<Importance, ImatrixError> {
    let invalid = |what: String| ImatrixError::Invalid { path: path.to_path_buf(), what };
    let mut r = Reader { bytes, pos: 0 };
    let n_entries = r.count("entry count").map_err(invalid)?;
    if n_entries == 0 {
        return Err(invalid("no entries (neither GGUF nor legacy imatrix)".into()));
    }
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let name = r.string().map_err(|e| invalid(format!("entry {i}: {e}")))?;
        let calls = r.count("calls").map_err(|e| invalid(format!("{name}: {e}")))?;
        let n = r.count("value count").map_err(|e| invalid(format!("{name}: {e}")))?;
        let raw = r.take(n.checked_mul(4).ok_or_else(|| invalid(format!("{name}: {n} values")))?);
        let raw = raw.map_err(|e| invalid(format!("{name}: {e}")))?;
        let sum2 = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        entries.insert(name.clone(), checked(&name, sum2, vec![calls.max(1) as u64]).map_err(invalid)?);
    }
    let (mut chunk_count, mut datasets) = (0, Vec::new());
    if r.pos < bytes.len() {
        chunk_count = r.count("chunk count").map_err(invalid)? as u32;
        if r.pos < bytes.len() {
            datasets.push(r.string().map_err(|e| invalid(format!("dataset name: {e}")))?);
        }
    }
    Ok(Importance { entries, datasets, chunk_count, chunk_size: 0 })
}

/// Little-endian reads that fail on truncation or negative sizes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated: {n} bytes wanted at offset {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn count(&mut self, what: &str) -> Result<usize, String> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        usize::try_from(v).map_err(|_| format!("{what} {v} is negative"))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count("name length")?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "name is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lowbit-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> Importance {
        let mut entries = BTreeMap::new();
        entries.insert("blk.0.attn_q.weight".into(), Entry { sum2: vec![2.0, 4.0, 0.0, 8.0], counts: vec![2] });
        entries
            .insert("blk.0.ffn_down_exps.weight".into(), Entry { sum2: vec![3.0, 6.0, 5.0, 7.0], counts: vec![3, 0] });
        Importance { entries, datasets: vec!["text.txt".into()], chunk_count: 1, chunk_size: 2 }
    }

    #[test]
    fn gguf_round_trips_and_weights_are_means() {
        let p = dir().join("rt.gguf");
        let m = sample();
        m.write(&p).unwrap();
        let back = Importance::read(&p).unwrap();
        assert_eq!(back, m);
        let p2 = dir().join("rt2.gguf");
        back.write(&p2).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
        assert_eq!(m.weights("blk.0.attn_q.weight", 4, 1).unwrap().unwrap(), [1.0, 2.0, 0.0, 4.0]);
        // An expert that saw no token gets weight 1, as in llama-quantize.
        assert_eq!(m.weights("blk.0.ffn_down_exps.weight", 2, 2).unwrap().unwrap(), [1.0, 2.0, 1.0, 1.0]);
        assert_eq!(m.weights("output.weight", 4, 1).unwrap(), None);
        assert!(matches!(m.weights("blk.0.attn_q.weight", 8, 1), Err(ImatrixError::Columns { tensor_cols: 8, .. })));
        let model = [("blk.0.attn_q.weight", 4, 1), ("blk.0.ffn_down_exps.weight", 2, 2)];
        m.check_against(&model).unwrap();
        assert!(matches!(m.check_against(&model[..1]), Err(ImatrixError::UnknownTensor(_))));
    }

    /// The fused gate/up stack's entry weighs a GGUF file's split gate and up stacks (llama.cpp's GPT-OSS layout).
    #[test]
    fn a_fused_gate_up_entry_serves_the_split_stacks() {
        let entry = Entry { sum2: vec![2.0, 4.0, 6.0, 8.0], counts: vec![2, 1] };
        let m = Importance {
            entries: BTreeMap::from([("blk.3.ffn_gate_up_exps.weight".to_string(), entry)]),
            datasets: Vec::new(),
            chunk_count: 1,
            chunk_size: 4,
        };
        for half in ["gate", "up"] {
            let name = format!("blk.3.ffn_{half}_exps.weight");
            assert_eq!(m.weights(&name, 2, 2).unwrap().unwrap(), [1.0, 2.0, 6.0, 8.0]);
        }
        assert_eq!(m.weights("blk.4.ffn_up_exps.weight", 2, 2).unwrap(), None);
        let split = [("blk.3.ffn_gate_exps.weight", 2, 2), ("blk.3.ffn_up_exps.weight", 2, 2)];
        m.check_against(&split).unwrap();
        assert!(matches!(m.check_against(&[("blk.3.ffn_up_exps.weight", 4, 2)]), Err(ImatrixError::Columns { .. })));
        assert!(matches!(
            m.check_against(&[("blk.3.ffn_down_exps.weight", 2, 2)]),
            Err(ImatrixError::UnknownTensor(_))
        ));
    }

    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, calls, v) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(calls.to_le_bytes());
            b.extend((v.len() as i32).to_le_bytes());
            v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        }
        if let Some((chunks, data)) = trailer {
            b.extend(chunks.to_le_bytes());
            b.extend((data.len() as i32).to_le_bytes());
            b.extend(data.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_files_read_as_llama_quantize_reads_them() {
        let p = dir().join("old.dat");
        std::fs::write(&p, legacy(&[("a.weight", 4, &[8.0, 2.0]), ("b.weight", 0, &[3.0])], Some((7, "wiki"))))
            .unwrap();
        let m = Importance::read(&p).unwrap();
        assert_eq!(m.weights("a.weight", 2, 1).unwrap().unwrap(), [2.0, 0.5]);
        assert_eq!(m.weights("b.weight", 1, 1).unwrap().unwrap(), [3.0]);
        assert_eq!((m.chunk_count, m.datasets.as_slice()), (7, &["wiki".to_string()][..]));
        std::fs::write(&p, legacy(&[("a.weight", 4, &[8.0, 2.0])], None)).unwrap();
        assert_eq!(Importance::read(&p).unwrap().chunk_count, 0);
    }

    #[test]
    fn hostile_files_are_typed_errors() {
        let d = dir();
        let good = legacy(&[("a.weight", 4, &[8.0, 2.0])], Some((1, "x")));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("truncated", good[..good.len() - 20].to_vec()),
            ("negative count", legacy(&[("a.weight", -1, &[1.0])], None)),
            ("nan", legacy(&[("a.weight", 1, &[f32::NAN])], None)),
            ("negative sum", legacy(&[("a.weight", 1, &[-1.0])], None)),
            ("no entries", 0i32.to_le_bytes().to_vec()),
            ("huge name", [1i32.to_le_bytes(), i32::MAX.to_le_bytes()].concat()),
            ("bad gguf", b"GGUF\x03\0\0\0garbage".to_vec()),
        ];
        for (what, bytes) in cases {
            let p = d.join("bad.dat");
            std::fs::write(&p, bytes).unwrap();
            match Importance::read(&p) {
                Err(ImatrixError::Invalid { .. } | ImatrixError::Format(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        // GGUF files: without the imatrix keys, sums without counts, counts that do not divide the sums, a
        // fractional count, an F16 sum.
        let p = d.join("model.gguf");
        let f32s = |v: &[f32]| TensorData::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect());
        let gguf = |keys: bool, tensors: Vec<(&str, DType, usize, TensorData<'static>)>| {
            let mut w = GgufWriter::new();
            if keys {
                w.metadata(KEY_DATASETS, Value::Array(ValueType::String, vec![])).unwrap();
                w.metadata(KEY_CHUNK_COUNT, Value::U32(1)).unwrap();
                w.metadata(KEY_CHUNK_SIZE, Value::U32(4)).unwrap();
            }
            for (name, dtype, n, data) in tensors {
                w.tensor(name, dtype, &[n], data).unwrap();
            }
            w.write(&p).unwrap();
            Importance::read(&p).unwrap_err().to_string()
        };
        let e = gguf(
            false,
            vec![("x.in_sum2", DType::F32, 2, f32s(&[1.0, 2.0])), ("x.counts", DType::F32, 1, f32s(&[1.0]))],
        );
        assert!(e.contains("not an imatrix"), "{e}");
        assert!(gguf(true, vec![("x.in_sum2", DType::F32, 2, f32s(&[1.0, 2.0]))]).contains("come together"));
        let e = gguf(
            true,
            vec![("x.in_sum2", DType::F32, 4, f32s(&[1.0; 4])), ("x.counts", DType::F32, 3, f32s(&[1.0; 3]))],
        );
        assert!(e.contains("do not split"), "{e}");
        let e =
            gguf(true, vec![("x.in_sum2", DType::F32, 2, f32s(&[1.0; 2])), ("x.counts", DType::F32, 1, f32s(&[0.5]))]);
        assert!(e.contains("whole"), "{e}");
        let e = gguf(true, vec![("x.in_sum2", DType::F16, 2, TensorData::Owned(vec![0; 4]))]);
        assert!(e.contains("want F32"), "{e}");
        assert!(gguf(true, vec![("x.weight", DType::F32, 1, f32s(&[1.0]))]).contains("no entries"));
    }
}
