//! Decode GEMV of the group kernels against the GGUF-block kernels (`quant`) on SmolLM2's shapes, one
//! thread, the same activation vector, matrices in cache ("hot"): a relative figure that holds on a
//! shared machine, since all kernels alternate within each repetition and the fastest repetition (the
//! least disturbed by other processes) is kept.
//!
//!     cargo bench -p lowbit-kernels --bench group

use std::hint::black_box;
use std::time::Instant;

use lowbit_kernels::group::{self, matmul_group_f32, Codebook, GroupLayout, GroupParams};
use lowbit_kernels::quant::{matmul_quant_f32, QuantType};
use lowbit_kernels::ternary::{matmul_ternary_f32, TernaryMatrix};

/// One kernel on one matrix, writing the output row.
type Gemv = Box<dyn FnMut(&mut [f32])>;

fn main() {
    lowbit_kernels::set_threads(1);
    println!("group path {}, 1 thread, ns per GEMV (best of 15), hot", group::active().name);
    for (k, m) in [(576, 1536), (1536, 576)] {
        let x: Vec<f32> = (0..k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut out = vec![0.0f32; m];
        let mut candidates: Vec<(String, Gemv)> = Vec::new();
        for (bits, g) in [(4u8, 128usize), (4, 64), (8, k), (3, 128), (2, 128)] {
            let l = GroupLayout::new(bits, g);
            let codes: Vec<u8> = (0..m * l.row_bytes(k)).map(|i| (i * 131 % 251) as u8).collect();
            let params = vec![GroupParams::new(bits, 0.01, 1); m * l.n_groups(k)];
            let xx = x.clone();
            candidates.push((
                format!("int{bits} g{g}"),
                Box::new(move |o: &mut [f32]| matmul_group_f32(l, &codes, &params, &xx, o, 1, k, m, None)),
            ));
        }
        {
            // NF4: 4-bit codes through a table in blocks of 64 (the table's values do not matter here).
            const TABLE: [i8; 16] = [-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127];
            let l = GroupLayout::with_codebook(4, 64, Codebook::shared(&TABLE));
            let codes: Vec<u8> = (0..m * l.row_bytes(k)).map(|i| (i * 131 % 251) as u8).collect();
            let params = vec![GroupParams { scale: 0.01, min: 0.0 }; m * l.n_groups(k)];
            let xx = x.clone();
            candidates.push((
                "nf4".into(),
                Box::new(move |o: &mut [f32]| matmul_group_f32(l, &codes, &params, &xx, o, 1, k, m, None)),
            ));
        }
        for bits in [4u8, 2] {
            // Palettes: a table per 8 rows, one group (scale) per row.
            let tables: Vec<[i8; 16]> = (0..m.div_ceil(8))
                .map(|t| std::array::from_fn(|i| (i as i32 * 15 - 120 + t as i32 % 7) as i8))
                .collect();
            let l = GroupLayout::new(bits, k);
            let codes: Vec<u8> = (0..m * l.row_bytes(k)).map(|i| (i * 131 % 251) as u8).collect();
            let params = vec![GroupParams { scale: 0.01, min: 0.0 }; m];
            let xx = x.clone();
            candidates.push((
                format!("lut{bits} 8 rows"),
                Box::new(move |o: &mut [f32]| {
                    let l = GroupLayout::with_codebook(bits, k, Codebook::per_rows(&tables, 8));
                    matmul_group_f32(l, &codes, &params, &xx, o, 1, k, m, None)
                }),
            ));
        }
        if lowbit_kernels::ternary::simd().is_some() {
            // Ternary weights by table look-up (the same 2 bits per weight as int2, no multiplications).
            let w = TernaryMatrix::new(m, k, 128, |r, i| ((r * 31 + i * 7) % 3) as i8 - 1, |_, _| 0.01);
            let xx = x.clone();
            candidates.push(("ternary tl".into(), Box::new(move |o: &mut [f32]| matmul_ternary_f32(&w, &xx, o, 1))));
        }
        for ty in [QuantType::Q4_0, QuantType::Q8_0] {
            let w: Vec<u8> = (0..m * ty.row_bytes(k))
                .map(|i| if i % ty.block_bytes() < 2 { 0x20 } else { (i * 131 % 251) as u8 })
                .collect();
            let xx = x.clone();
            candidates.push((
                ty.name().into(),
                Box::new(move |o: &mut [f32]| matmul_quant_f32(ty, Default::default(), &w, &xx, o, 1, k, m)),
            ));
        }
        let mut times = vec![Vec::new(); candidates.len()];
        for _ in 0..15 {
            for (c, t) in candidates.iter_mut().zip(&mut times) {
                let start = Instant::now();
                for _ in 0..50 {
                    (c.1)(black_box(&mut out));
                }
                t.push(start.elapsed().as_nanos() as f64 / 50.0);
            }
        }
        for ((name, _), t) in candidates.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            println!("{k:>5}×{m:<5} {name:<10} {:>9.0} ns", t[0]);
        }
    }
}
