//! `GroupLinear`: the native group kernels reading matrices written by `lowbit_formats`' reference
//! quantizer, against those matrices dequantized by `lowbit_formats` (the independent reading of the
//! layout) times the int8-quantized activations, in f64. This ties the kernels' reading of the codes,
//! scales and zero points to the format's specification, for every bit width, symmetric and
//! asymmetric, with a short last group, with dynamic and with static (calibrated, clipping) activations.

use lowbit_formats::native::group::{quantize, GroupFormat};
use lowbit_kernels::quant::{QuantizedActs, QK};
use lowbit_model::{GroupLinear, Linear};
use lowbit_testdata::Rng;

#[test]
fn forward_equals_dequantized_matmul() {
    let (rows, cols, n) = (19, 576, 3);
    let mut r = Rng::new(1);
    let w: Vec<f32> = (0..rows * cols).map(|i| r.unit() * 0.02 * if i % 97 == 0 { 8.0 } else { 1.0 }).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
    let mut acts = QuantizedActs::new();
    acts.quantize(&x, n, cols);
    let dynamic: Vec<f64> = acts.blocks().iter().flat_map(|b| b.qs.map(|q| b.d as f64 * q as f64)).collect();
    // A static step that clips: |x| reaches 1, the calibrated range is 0.8.
    let d = 0.8f32 / 127.0;
    let fixed: Vec<f64> =
        x.iter().map(|&v| d as f64 * f64::from((v / d).round_ties_even().clamp(-127.0, 127.0))).collect();
    for (act_scale, xq) in [(None, &dynamic), (Some(d), &fixed)] {
        for bits in GroupFormat::BITS {
            for sym in [true, false] {
                for group in [32, 128, cols] {
                    let f = GroupFormat::new(bits, group, sym).unwrap();
                    let m = quantize(f, &w, rows, cols).unwrap();
                    let v = m.view();
                    let deq = v.dequantize();
                    let c = if bits == 8 { 128.0 } else { 0.0 };
                    // The kernel's two weight terms per element, s·(u − c) and the group's min s·(c − z).
                    let terms: Vec<(f64, f64)> = (0..rows * cols)
                        .map(|i| {
                            let (o, g) = (i / cols, i % cols / group);
                            let (s, z) = (v.scale(o, g) as f64, v.zero(o, g) as f64);
                            (deq[i] as f64 + s * (z - c), s * (c - z))
                        })
                        .collect();
                    let lin = GroupLinear::from_view(&m.view(), act_scale);
                    let mut out = vec![0.0f32; n * rows];
                    lin.forward(&x, n, &mut out);
                    for t in 0..n {
                        for o in 0..rows {
                            let wr = &deq[o * cols..][..cols];
                            let xr = &xq[t * cols..][..cols];
                            let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b).sum();
                            let mag: f64 = terms[o * cols..][..cols]
                                .iter()
                                .zip(xr)
                                .map(|(&(a, b), &x)| (a.abs() + b.abs()) * x.abs())
                                .sum();
                            let got = out[t * rows + o] as f64;
                            // γ_n·mag bounds the f32 rounding of the kernel's sums (n = 2·nb + n_groups + 7,
                            // as in the kernels' own tests), and the activations are the same quantized ones;
                            // a wrong code or scale in one sub-block of 32 moves the result by ~1e-2 of mag.
                            let n_add = 2 * cols / QK + f.n_groups(cols) + 7;
                            let tol = 2.0 * n_add as f64 * 2f64.powi(-24) * mag;
                            assert!((got - exact).abs() <= tol, "{} ({t},{o}): {got} vs {exact} (tol {tol})", f.name());
                        }
                    }
                }
            }
        }
    }
}

/// Every output `out[t·rows + o]` is the exact product of kernel weight row o and activation row t (both f64,
/// row-major) within `2·n·u·Σ|w·x|`, n the roundings along its path.
fn assert_exact_products(what: &str, out: &[f32], w: &[f64], x: &[f64], rows: usize, cols: usize, n: usize) {
    for t in 0..x.len() / cols {
        for o in 0..rows {
            let (wr, xr) = (&w[o * cols..][..cols], &x[t * cols..][..cols]);
            let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a * b).sum();
            let mag: f64 = wr.iter().zip(xr).map(|(&a, &b)| (a * b).abs()).sum();
            let got = out[t * rows + o] as f64;
            let tol = 2.0 * n as f64 * 2f64.powi(-24) * mag;
            assert!((got - exact).abs() <= tol, "{what} ({t},{o}): {got} vs {exact} (tol {tol})");
        }
    }
}

#[test]
fn nf4_forward_equals_table_matmul() {
    use lowbit_formats::native::nf4;
    use lowbit_model::group_linear::nf4_table;

    assert_eq!(nf4_table(), [-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127]);
    let (rows, cols, n) = (13, 576, 3);
    let mut r = Rng::new(2);
    let w: Vec<f32> = (0..rows * cols).map(|i| r.unit() * 0.02 * if i % 89 == 0 { 8.0 } else { 1.0 }).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
    let mut acts = QuantizedActs::new();
    acts.quantize(&x, n, cols);
    let xq: Vec<f64> = acts.blocks().iter().flat_map(|b| b.qs.map(|q| b.d as f64 * q as f64)).collect();
    let m = nf4::quantize(&w, rows, cols).unwrap();
    let v = m.view();
    let deq = v.dequantize();
    // The kernel's weights, read from the codes by the documented packing: table[u]·(s_b/127).
    let table = nf4_table();
    let kernel_w: Vec<f64> = (0..rows * cols)
        .map(|i| {
            let (b, j) = (i / 64, i % 64);
            let byte = m.codes[b * 32 + j / 32 * 16 + j % 16];
            let u = if j % 32 < 16 { byte & 15 } else { byte >> 4 };
            let s = v.block_scale(b);
            let kw = table[u as usize] as f64 * (s / 127.0) as f64;
            // The same code as the format's own dequantization, up to the table's rounding.
            assert!((kw - deq[i] as f64).abs() <= 0.5 / 127.0 * s as f64 * 1.001, "weight {i}: {kw} vs {}", deq[i]);
            kw
        })
        .collect();
    let lin = GroupLinear::from_nf4(&v);
    assert_eq!(lin.storage(), "nf4");
    let mut out = vec![0.0f32; n * rows];
    lin.forward(&x, n, &mut out);
    // As above with one more rounding per block (s_b/127), so n = 2·nb + n_blocks + 8.
    assert_exact_products("nf4", &out, &kernel_w, &xq, rows, cols, 2 * cols / QK + cols / 64 + 8);
}

/// Palettes run on the group kernels through a table per palette: each kernel weight (table entry × the row's
/// scale, read from the indices by the documented packing) is within 0.5/127 of its palette's largest entry of
/// the format's own dequantization, and the forward pass is the exact product of those weights with the
/// quantized activations, up to float rounding; for every width, a palette per tensor, per row and per 3 rows
/// (not dividing the kernel's 8-row passes), with and without channel scales.
#[test]
fn palette_forward_equals_table_matmul() {
    use lowbit_formats::native::{PaletteFormat, PaletteMatrix};

    let (rows, cols, n) = (21, 160, 3);
    let mut r = Rng::new(5);
    let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
    let mut acts = QuantizedActs::new();
    acts.quantize(&x, n, cols);
    let xq: Vec<f64> = acts.blocks().iter().flat_map(|b| b.qs.map(|q| b.d as f64 * q as f64)).collect();
    for bits in [2u8, 3, 4] {
        for (group_rows, channel_scale) in [(None, false), (Some(1), false), (Some(3), true)] {
            let f = PaletteFormat::new(bits, group_rows, channel_scale).unwrap();
            let indices: Vec<u8> = (0..rows * cols).map(|_| r.below(f.entries() as u64) as u8).collect();
            let lut: Vec<f32> = (0..f.n_palettes(rows) * f.entries()).map(|_| r.unit() * 0.05).collect();
            let scales: Vec<f32> =
                if channel_scale { (0..rows).map(|_| 0.5 + r.unit().abs()).collect() } else { vec![] };
            let m = PaletteMatrix::from_indices(f, rows, cols, &indices, &lut, &scales).unwrap();
            let v = m.view();
            let deq = v.dequantize();
            let lin = GroupLinear::from_palette(&v);
            assert_eq!(lin.storage(), f.name());
            let per = f.rows_per_palette(rows);
            let kernel_w: Vec<f64> = (0..rows * cols)
                .map(|i| {
                    let p = v.palette(i / cols / per);
                    let largest = p.iter().fold(0f32, |a, e| a.max(e.abs()));
                    let step = largest / 127.0;
                    let u = usize::from(indices[i]);
                    let s = v.scale(i / cols);
                    let kw = (p[u] / step).round() as f64 * (step * s) as f64;
                    let bound = 0.5 * step as f64 * s as f64 * 1.001;
                    assert!((kw - deq[i] as f64).abs() <= bound, "{} weight {i}: {kw} vs {}", f.name(), deq[i]);
                    kw
                })
                .collect();
            let mut out = vec![0.0f32; n * rows];
            lin.forward(&x, n, &mut out);
            assert_exact_products(&f.name(), &out, &kernel_w, &xq, rows, cols, 2 * cols / QK + 10);
        }
    }
}

/// A ternary matrix (2-bit symmetric codes 1..3 only) runs on the look-up kernel where this CPU has it (its
/// layout is then held beside the codes), and computes the same products as any other 2-bit matrix: the
/// dequantized weights times the int8 activations, for a decode row and a batch.
#[test]
fn ternary_matrices_run_on_the_lookup_kernel() {
    let (rows, cols) = (70, 576);
    let mut r = Rng::new(3);
    let w: Vec<f32> = (0..rows * cols).map(|_| (r.below(3) as f32 - 1.0) * (1.0 + (r.below(4) as f32))).collect();
    let m = quantize(GroupFormat::new(2, 128, true).unwrap(), &w, rows, cols).unwrap();
    let deq: Vec<f64> = m.view().dequantize().into_iter().map(f64::from).collect();
    let lin = GroupLinear::from_view(&m.view(), None).ternary_lookup();
    let lookup = lowbit_kernels::ternary::simd().is_some();
    // The look-up layout: 32-row tiles of 2 bits per weight and an f32 scale per row and group.
    let held = if lookup { 96 * (cols / 4 + 5 * 4) } else { m.codes.len() + rows * 5 * 8 };
    assert_eq!(lin.weight_bytes(), held);
    for n in [1, 3] {
        let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
        let mut acts = QuantizedActs::new();
        acts.quantize(&x, n, cols);
        let xq: Vec<f64> = acts.blocks().iter().flat_map(|b| b.qs.map(|q| b.d as f64 * q as f64)).collect();
        let mut out = vec![0.0f32; n * rows];
        lin.forward(&x, n, &mut out);
        assert_exact_products("ternary", &out, &deq, &xq, rows, cols, 2 * (cols / QK + 5) + 2);
    }
}
