//! The ternary look-up kernels: the scalar reference against an f64 evaluation of Σ α·w·d·q, the SIMD path
//! against the reference, and the threaded entry against one call, for groups that divide the row, a
//! short last group and one group per row, and row counts around the 32-row tile.
//!
//! Tolerance. For one output let mag = Σ_g |α_g|·Σ_b |d_b|·Σ_i |w_i·q_i|. The integer sums are exact, and
//! each path adds at most nb + ng products of at most 2 roundings each, so each is within γ_{2(nb+ng)+2}·mag
//! of the exact value (Higham §3.1); two paths differ by at most twice that. A wrong index, table entry,
//! row or scale is orders of magnitude larger.

use lowbit_kernels::quant::{QuantizedActs, QK};
use lowbit_kernels::ternary::{self, TernaryKernels, TernaryMatrix, TABLE_BYTES, TILE_ROWS};
use lowbit_testdata::{gamma, Rng};

mod common;
use common::random_acts;

struct Case {
    rows: usize,
    cols: usize,
    group: usize,
    trits: Vec<i8>,
    scales: Vec<f32>,
}

impl Case {
    fn random(rows: usize, cols: usize, group: usize, seed: u64) -> Case {
        let mut r = Rng::new(seed);
        let trits = (0..rows * cols).map(|_| r.below(3) as i8 - 1).collect();
        let scales = (0..rows * cols.div_ceil(group)).map(|_| r.unit() * 2f32.powi(r.below(8) as i32 - 8)).collect();
        Case { rows, cols, group, trits, scales }
    }

    fn matrix(&self) -> TernaryMatrix {
        let ng = self.cols.div_ceil(self.group);
        TernaryMatrix::new(
            self.rows,
            self.cols,
            self.group,
            |r, i| self.trits[r * self.cols + i],
            |r, g| self.scales[r * ng + g],
        )
    }

    /// (exact f64 value, mag) of output row `o` for the activation row `t`.
    fn reference(&self, acts: &QuantizedActs, t: usize, o: usize) -> (f64, f64) {
        let (nb, ng) = (self.cols / QK, self.cols.div_ceil(self.group));
        let (mut exact, mut mag) = (0.0f64, 0.0f64);
        for (b, block) in acts.blocks()[t * nb..][..nb].iter().enumerate() {
            let alpha = self.scales[o * ng + b * QK / self.group] as f64;
            for (j, &q) in block.qs.iter().enumerate() {
                let v = alpha * self.trits[o * self.cols + b * QK + j] as f64 * block.d as f64 * q as f64;
                exact += v;
                mag += v.abs();
            }
        }
        (exact, mag)
    }
}

/// One call of `kern` per activation row, single-threaded.
fn run(kern: &TernaryKernels, w: &TernaryMatrix, acts: &QuantizedActs) -> Vec<f32> {
    let (k, nb) = (w.cols(), w.cols() / QK);
    let mut out = vec![0.0; acts.rows() * w.rows()];
    let mut tables = vec![0u8; k / 2 * TABLE_BYTES];
    for (t, out) in out.chunks_exact_mut(w.rows()).enumerate() {
        let a = &acts.blocks()[t * nb..][..nb];
        (kern.tables)(a, &mut tables);
        (kern.tiles)(w, &tables, a, 0, out);
    }
    out
}

/// (rows, cols, group): SmolLM2's and gpt-oss's row lengths, a short last group, one group per row, and
/// rows around the tile.
const SHAPES: [(usize, usize, usize); 8] = [
    (32, 576, 128),
    (33, 576, 576),
    (5, 96, 32),
    (64, 1536, 128),
    (31, 2880, 128),
    (70, 160, 64),
    (1, 32, 32),
    (40, 320, 1536),
];

fn check(what: &str, c: &Case, acts: &QuantizedActs, got: &[f32], want: impl Fn(usize, usize) -> f64, paths: f64) {
    let (nb, ng) = (c.cols / QK, c.cols.div_ceil(c.group));
    for t in 0..acts.rows() {
        for o in 0..c.rows {
            let (_, mag) = c.reference(acts, t, o);
            let tol = paths * gamma(2 * (nb + ng) + 2) * mag;
            let (g, w) = (got[t * c.rows + o] as f64, want(t, o));
            assert!(
                (g - w).abs() <= tol,
                "{what} {}×{} g{} ({t},{o}): {g} vs {w} (tol {tol})",
                c.rows,
                c.cols,
                c.group
            );
        }
    }
}

#[test]
fn scalar_equals_the_exact_dot() {
    for (i, &(rows, cols, group)) in SHAPES.iter().enumerate() {
        let c = Case::random(rows, cols, group, i as u64);
        let acts = random_acts(3, cols, 100 + i as u64);
        let out = run(&ternary::SCALAR, &c.matrix(), &acts);
        check("scalar", &c, &acts, &out, |t, o| c.reference(&acts, t, o).0, 1.0);
    }
}

#[test]
fn simd_path_equals_scalar() {
    let paths = ternary::paths();
    if paths.len() == 1 {
        eprintln!("no SIMD path on this CPU");
    }
    for kern in paths.iter().skip(1) {
        for (i, &(rows, cols, group)) in SHAPES.iter().enumerate() {
            let c = Case::random(rows, cols, group, 1000 + i as u64);
            let acts = random_acts(2, cols, 2000 + i as u64);
            let w = c.matrix();
            let (want, got) = (run(&ternary::SCALAR, &w, &acts), run(kern, &w, &acts));
            check(kern.name, &c, &acts, &got, |t, o| f64::from(want[t * rows + o]), 2.0);
            // The tables themselves are the same bytes.
            let (mut a, mut b) = (vec![0u8; cols / 2 * TABLE_BYTES], vec![1u8; cols / 2 * TABLE_BYTES]);
            (ternary::SCALAR.tables)(&acts.blocks()[..cols / QK], &mut a);
            (kern.tables)(&acts.blocks()[..cols / QK], &mut b);
            assert_eq!(a, b, "{}: tables of {cols}", kern.name);
        }
    }
}

#[test]
fn threaded_entry_equals_single_calls() {
    let Some(kern) = ternary::simd() else { return eprintln!("no SIMD path on this CPU") };
    // 1000 rows of 1536: large enough to split across threads, and not whole tiles.
    let c = Case::random(1000, 1536, 128, 7);
    let w = c.matrix();
    let acts = random_acts(3, 1536, 8);
    let want = run(kern, &w, &acts);
    for threads in [1, 2, 3] {
        lowbit_kernels::set_threads(threads);
        let mut got = vec![0.0; 3 * 1000];
        ternary::matmul_ternary(kern, &w, &acts, &mut got);
        assert_eq!(got, want, "{threads} threads");
    }
    assert_eq!(w.bytes(), 1000usize.div_ceil(TILE_ROWS) * TILE_ROWS * (1536 / 4 + 4 * 12));
}

#[test]
#[should_panic(expected = "not −1, 0 or 1")]
fn a_weight_outside_the_trits_is_refused() {
    TernaryMatrix::new(1, 32, 32, |_, i| if i == 5 { 2 } else { 0 }, |_, _| 1.0);
}
