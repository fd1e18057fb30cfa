//! The group kernels: every SIMD path against the scalar reference, and the reference against an f64
//! evaluation of dequantize(weights)·dequantize(quantize(x)), for every bit width, a shared code table
//! (NF4's) and tables per run of rows (palettes) of every width, groups that divide the row, a short last group, per-channel groups, and row/token counts
//! that exercise every tile edge.
//!
//! Tolerance. For one output let mag = Σ_g Σ_b (|scale|·|d_b|·Σ_i |v(u_i)|·|q_i| + |min|·|s_b|), v(u) the
//! integer a code stands for. Each
//! path forms its result from at most 8·nb + 2·ng terms, each with at most 3 roundings, added along
//! paths of at most 2·nb + ng + 4 additions, so each is within γ_{2nb+ng+7}·mag of the exact value of
//! its (identically rounded) terms (Higham §3.1); two paths differ by at most twice that. A wrong code,
//! bit plane, scale or group index is orders of magnitude larger.

use lowbit_kernels::group::{self, scalar, Codebook, GroupKernels, GroupLayout, GroupParams};
use lowbit_kernels::quant::{BlockQ8, QuantizedActs, QK};
use lowbit_testdata::{gamma, Rng};

mod common;
use common::random_acts;

/// What codes stand for: their integer values, [`TABLE`] for every row, or a random table per run of rows.
#[derive(Clone, Copy, Debug)]
enum Codes {
    Int,
    Shared,
    PerRows(usize),
}

struct Case {
    bits: u8,
    group: usize,
    codes_kind: Codes,
    tables: Vec<[i8; 16]>,
    k: usize,
    m: usize,
    codes: Vec<u8>,
    params: Vec<GroupParams>,
}

/// NF4's values ×127 rounded, with −128 in place of −127 so that the extreme byte is covered too.
const TABLE: [i8; 16] = [-128, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127];

impl Case {
    fn l(&self) -> GroupLayout<'_> {
        match self.codes_kind {
            Codes::Int => GroupLayout::new(self.bits, self.group),
            Codes::Shared => GroupLayout::with_codebook(self.bits, self.group, Codebook::shared(&self.tables[0])),
            Codes::PerRows(rows) => {
                GroupLayout::with_codebook(self.bits, self.group, Codebook::per_rows(&self.tables, rows))
            }
        }
    }
}

fn random_case(bits: u8, group: usize, codes_kind: Codes, k: usize, m: usize, seed: u64) -> Case {
    let mut r = Rng::new(seed);
    let tables = match codes_kind {
        Codes::Int => Vec::new(),
        Codes::Shared => vec![TABLE],
        // Every byte value can occur, −128 included.
        Codes::PerRows(rows) => {
            (0..m.div_ceil(rows)).map(|_| std::array::from_fn(|_| r.below(256) as u8 as i8)).collect()
        }
    };
    let l = GroupLayout::new(bits, group);
    // Every byte value, so every code (and INT3 bit pattern) occurs.
    let codes = (0..m * l.row_bytes(k)).map(|_| r.below(256) as u8).collect();
    let params = (0..m * l.n_groups(k))
        .map(|_| {
            let s = r.unit().abs() * 2f32.powi(r.below(8) as i32 - 8);
            match codes_kind {
                Codes::Int => GroupParams::new(bits, s, r.below(1 << bits) as u8),
                _ => GroupParams { scale: s, min: 0.0 },
            }
        })
        .collect();
    Case { bits, group, codes_kind, tables, k, m, codes, params }
}

/// mag of the module documentation, for output (t, o), and the exact f64 value of dequantized weights
/// times dequantized activations: weight = scale·(u − c) + min, activation = d·q.
fn reference(c: &Case, a: &[BlockQ8], o: usize) -> (f64, f64) {
    let l = c.l();
    let (nb, ng, sbb, gsb) = (c.k / QK, l.n_groups(c.k), l.sub_block_bytes(), l.group / QK);
    let (mut exact, mut mag) = (0.0f64, 0.0f64);
    for (b, ab) in a[..nb].iter().enumerate() {
        let p = c.params[o * ng + b / gsb];
        let u = scalar::unpack(l.bits, &c.codes[o * l.row_bytes(c.k) + b * sbb..][..sbb]);
        for (&u, &q) in u.iter().zip(&ab.qs) {
            let v = scalar::code_value(l, o, u) as f64;
            exact += (p.scale as f64 * v + p.min as f64) * ab.d as f64 * q as f64;
            mag += (p.scale as f64 * v * ab.d as f64 * q as f64).abs();
        }
        mag += (p.min as f64 * ab.s as f64).abs();
    }
    (exact, mag)
}

fn run(k: &GroupKernels, c: &Case, acts: &QuantizedActs) -> Vec<f32> {
    let mut out = vec![0.0; acts.rows() * c.m];
    (k.matmul)(c.l(), &c.codes, &c.params, acts.blocks(), &mut out, c.k);
    out
}

/// (bits, group, codes, k). Among the row lengths, SmolLM2's (576, 1536) and gpt-oss's (2880); the per-row
/// tables in runs that divide the rows and runs that do not.
const SHAPES: [(u8, usize, Codes, usize); 23] = [
    (4, 128, Codes::Int, 576), // short last group of 64
    (4, 32, Codes::Int, 96),
    (4, 64, Codes::Int, 576),
    (4, 128, Codes::Int, 2880), // short last group of 64
    (8, 576, Codes::Int, 576),  // per channel
    (8, 1536, Codes::Int, 1536),
    (8, 128, Codes::Int, 288),
    (3, 64, Codes::Int, 192),
    (3, 128, Codes::Int, 160),
    (3, 256, Codes::Int, 2880), // short last group of 64
    (2, 32, Codes::Int, 64),
    (2, 128, Codes::Int, 320),
    (2, 64, Codes::Int, 1536),
    (4, 64, Codes::Shared, 576), // NF4's geometry
    (4, 64, Codes::Shared, 2880),
    (4, 64, Codes::Shared, 64),
    (4, 128, Codes::Shared, 160),
    (4, 576, Codes::PerRows(1), 576), // palettes: one group per row
    (4, 128, Codes::PerRows(8), 2880),
    (3, 160, Codes::PerRows(3), 160),
    (3, 2880, Codes::PerRows(8), 2880),
    (2, 64, Codes::PerRows(1), 64),
    (2, 1536, Codes::PerRows(8), 1536),
];

#[test]
fn scalar_equals_dequantized_dot() {
    for (i, &(bits, group, codes, k)) in SHAPES.iter().enumerate() {
        let c = random_case(bits, group, codes, k, 5, i as u64);
        let acts = random_acts(3, k, 100 + i as u64);
        let out = run(&group::SCALAR, &c, &acts);
        let nb = k / QK;
        for t in 0..3 {
            for o in 0..c.m {
                let (exact, mag) = reference(&c, &acts.blocks()[t * nb..][..nb], o);
                let got = out[t * c.m + o] as f64;
                let tol = 2.0 * gamma(2 * nb + c.l().n_groups(k) + 7) * mag;
                assert!((got - exact).abs() <= tol, "{bits}-bit g{group} k{k} ({t},{o}): {got} vs {exact} (tol {tol})");
            }
        }
    }
}

#[test]
fn simd_paths_equal_scalar() {
    let paths = group::paths();
    if paths.len() == 1 {
        eprintln!("no SIMD path on this CPU");
    }
    for k in paths.iter().skip(1) {
        for (i, &(bits, group, codes, kk)) in SHAPES.iter().enumerate() {
            // m = 21: two 8-row GEMV passes and edges of 4 and 1; n covers the GEMV, 2×… tiles with a
            // remainder token, and more than one 32-token block.
            for (m, n) in [(21, 1), (7, 1), (21, 3), (6, 37), (1, 2)] {
                let c = random_case(bits, group, codes, kk, m, 1000 + i as u64);
                let acts = random_acts(n, kk, 2000 + i as u64);
                let want = run(&group::SCALAR, &c, &acts);
                let got = run(k, &c, &acts);
                let nb = kk / QK;
                for t in 0..n {
                    for o in 0..m {
                        let (_, mag) = reference(&c, &acts.blocks()[t * nb..][..nb], o);
                        let tol = 4.0 * gamma(2 * nb + c.l().n_groups(kk) + 7) * mag;
                        let (g, w) = (got[t * m + o], want[t * m + o]);
                        assert!(
                            ((g - w) as f64).abs() <= tol,
                            "{}: {bits}-bit g{group} k{kk} m{m} n{n} ({t},{o}): {g} vs {w} (tol {tol})",
                            k.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn threaded_entry_equals_single_call() {
    // Large enough to be split across threads, both as a GEMV and as a batch.
    // The palettes' runs of 3 rows do not divide the 8-row GEMV unit: the split keeps whole runs.
    for (bits, group, codes) in [(4, 128, Codes::Int), (4, 64, Codes::Shared), (2, 576, Codes::PerRows(3))] {
        let c = random_case(bits, group, codes, 576, 300, 7);
        for n in [1, 5] {
            let acts = random_acts(n, 576, 8);
            let want = run(group::active(), &c, &acts);
            let mut got = vec![0.0; n * c.m];
            lowbit_kernels::set_threads(2);
            group::matmul_group(c.l(), &c.codes, &c.params, &acts, &mut got, c.m);
            assert_eq!(got, want, "{bits}-bit {codes:?}, n = {n}");
        }
    }
}
