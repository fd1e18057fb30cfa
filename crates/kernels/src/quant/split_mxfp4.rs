//! MXFP4 as Hugging Face checkpoints store it (GPT-OSS's experts): the codes and the scales of a matrix
//! in two arrays, `codes` `[rows, k/32, 16]` and `scales` `[rows, k/32]`, where byte j of a block holds
//! element 2j in its low nibble and element 2j + 1 in its high one, and a block's value is
//! FP4[code]·2^(scale − 127).
//!
//! ggml's MXFP4 ([`QuantType::MXFP4`](super::QuantType::MXFP4)) stores the same information as 17-byte
//! blocks with another nibble order; converting would mean a second copy of 12 GB of experts, so these
//! kernels read the checkpoint's arrays where they are mapped. Products are exact integer sums of the
//! doubled FP4 values ([`MXFP4_VALUES`]) times int8 activation codes, then the two scales, as for every
//! other quantized format.

use std::cell::RefCell;

use super::scalar::{e8m0_half_to_f32, MXFP4_VALUES};
use super::{active, BlockQ8, QuantizedActs, QK};
use crate::{parallel_chunks_mut, threads};

/// Bytes of codes per 32-element block.
pub const CODE_BYTES: usize = 16;

/// Checks the lengths of a split-MXFP4 product and returns (n, m): `codes` and `scales` must be whole rows
/// of k (a positive multiple of 32), `acts` whole rows of k/32 blocks, `out` n·m long.
pub(crate) fn dims(codes: &[u8], scales: &[u8], acts: &[BlockQ8], out: &[f32], k: usize) -> (usize, usize) {
    assert!(k > 0 && k.is_multiple_of(QK), "split MXFP4 matmul: k = {k} is not a positive multiple of {QK}");
    let nb = k / QK;
    assert!(
        scales.len().is_multiple_of(nb) && codes.len() == scales.len() * CODE_BYTES,
        "split MXFP4 matmul: {} code bytes and {} scales are not whole rows of k = {k}",
        codes.len(),
        scales.len()
    );
    assert!(acts.len().is_multiple_of(nb), "split MXFP4 matmul: {} activation blocks for k = {k}", acts.len());
    let (n, m) = (acts.len() / nb, scales.len() / nb);
    assert_eq!(out.len(), n * m, "split MXFP4 matmul: out has {} elements, want {n}×{m}", out.len());
    (n, m)
}

/// The reference: out[t·m + o] = Σ_b (Σ_i 2·FP4[code of element i]·qs[i])·2^(scale − 128)·d_t,b, blocks
/// added in order. Single-threaded; [`matmul_split_mxfp4`] splits the work.
pub fn matmul_scalar(codes: &[u8], scales: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
    let (n, m) = dims(codes, scales, acts, out, k);
    let nb = k / QK;
    for t in 0..n {
        let a = &acts[t * nb..(t + 1) * nb];
        for o in 0..m {
            let mut sum = 0f32;
            for (b, act) in a.iter().enumerate() {
                let block = &codes[(o * nb + b) * CODE_BYTES..][..CODE_BYTES];
                let dot: i32 = block
                    .iter()
                    .enumerate()
                    .map(|(j, &byte)| {
                        i32::from(MXFP4_VALUES[usize::from(byte & 15)]) * i32::from(act.qs[2 * j])
                            + i32::from(MXFP4_VALUES[usize::from(byte >> 4)]) * i32::from(act.qs[2 * j + 1])
                    })
                    .sum();
                sum += dot as f32 * (e8m0_half_to_f32(scales[o * nb + b]) * act.d);
            }
            out[t * m + o] = sum;
        }
    }
}

/// Below this many code bytes a decode product runs on the calling thread (see `PAR_MIN_BYTES` in
/// the parent module).
const PAR_MIN_BYTES: usize = 64 * 1024;

/// out[t·m + o] = Σ_i W[o, i]·x̃[t, i] for the split-MXFP4 matrix W (`codes`, `scales`; m rows of
/// k = acts.k()) and the quantized activations `acts` (n rows), on the fastest path, threaded as
/// [`matmul_quant`](super::matmul_quant) is. Panics on mismatched lengths.
pub fn matmul_split_mxfp4(codes: &[u8], scales: &[u8], acts: &QuantizedActs, out: &mut [f32]) {
    let (n, k) = (acts.rows(), acts.k());
    let (_, m) = dims(codes, scales, acts.blocks(), out, k);
    if n == 0 || m == 0 {
        return;
    }
    let kern = active().matmul_split_mxfp4;
    let (threads, nb, blocks) = (threads(), k / QK, acts.blocks());
    if n == 1 {
        if threads == 1 || codes.len() < PAR_MIN_BYTES {
            return kern(codes, scales, blocks, out, k);
        }
        let rows = m.div_ceil(4 * threads);
        parallel_chunks_mut(out, rows, &|i, part| {
            let (r0, r1) = (i * rows * nb, (i * rows + part.len()) * nb);
            kern(&codes[r0 * CODE_BYTES..r1 * CODE_BYTES], &scales[r0..r1], blocks, part, k)
        });
    } else {
        let tokens = n.div_ceil(threads);
        parallel_chunks_mut(out, tokens * m, &|i, part| {
            kern(codes, scales, &blocks[i * tokens * nb..][..part.len() / m * nb], part, k)
        });
    }
}

/// [`matmul_split_mxfp4`] of f32 activations `x` (n rows of k), quantized first into a per-thread scratch
/// buffer that is reused from call to call.
pub fn matmul_split_mxfp4_f32(codes: &[u8], scales: &[u8], x: &[f32], out: &mut [f32], n: usize, k: usize) {
    thread_local! {
        static SCRATCH: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
    }
    // As in `matmul_quant_f32`: nothing run while the buffer is borrowed calls back into user code.
    SCRATCH.with_borrow_mut(|acts| {
        acts.quantize(x, n, k);
        matmul_split_mxfp4(codes, scales, acts, out);
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! The AVX2 path: a block's 32 codes become signed bytes by one table lookup per nibble, are put
    //! back in element order by byte interleaving, and meet the activation codes in `maddubs`.
    use std::arch::x86_64::*;

    use super::{dims, e8m0_half_to_f32, BlockQ8, CODE_BYTES, MXFP4_VALUES, QK};
    use crate::x86::avx2::hsum;

    /// Tokens that share one decoding of a weight block.
    const TOKENS: usize = 4;

    /// Safe entry with the table's signature.
    pub fn matmul(codes: &[u8], scales: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
        let (n, m) = dims(codes, scales, acts, out, k);
        // SAFETY: reachable only through the AVX2 table, handed out after avx2/fma/f16c were detected;
        // dims checked every length the pointers are used for.
        unsafe { matmul_avx2(codes.as_ptr(), scales.as_ptr(), acts.as_ptr(), out.as_mut_ptr(), n, k, m) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn matmul_avx2(
        codes: *const u8,
        scales: *const u8,
        acts: *const BlockQ8,
        out: *mut f32,
        n: usize,
        k: usize,
        m: usize,
    ) {
        let nb = k / QK;
        let table = _mm_loadu_si128(MXFP4_VALUES.as_ptr().cast());
        let low = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for t0 in (0..n).step_by(TOKENS) {
            let tn = TOKENS.min(n - t0);
            for o in 0..m {
                let mut acc = [_mm256_setzero_ps(); TOKENS];
                for b in 0..nb {
                    let raw = _mm_loadu_si128(codes.add((o * nb + b) * CODE_BYTES).cast());
                    let lo = _mm_shuffle_epi8(table, _mm_and_si128(raw, low));
                    let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(raw, 4), low));
                    // Low nibbles are the even elements, high the odd: interleaving restores 0..32.
                    let w = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
                    let w_abs = _mm256_sign_epi8(w, w);
                    let ws = e8m0_half_to_f32(*scales.add(o * nb + b));
                    for (j, acc) in acc.iter_mut().enumerate().take(tn) {
                        let a = &*acts.add((t0 + j) * nb + b);
                        let q = _mm256_loadu_si256(a.qs.as_ptr().cast());
                        // |w|·sign(w)·q: maddubs wants its unsigned operand first. Pair sums are at most
                        // 2·12·127, inside i16.
                        let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(q, w));
                        let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                        *acc = _mm256_fmadd_ps(dot, _mm256_set1_ps(ws * a.d), *acc);
                    }
                }
                for (j, acc) in acc.iter().enumerate().take(tn) {
                    *out.add((t0 + j) * m + o) = hsum(*acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element i of the block is read from the nibble the Hugging Face layout puts it in.
    #[test]
    fn nibble_order_is_the_checkpoints() {
        let k = 32;
        let mut codes = [0u8; CODE_BYTES];
        codes[3] = 0x70; // element 6 low nibble: code 0 (zero); element 7 high nibble: code 7 (6.0)
        let scales = [127u8]; // 2^0
        let mut a = BlockQ8 { d: 1.0, s: 0.0, qs: [0; QK] };
        a.qs[7] = 1;
        let mut out = [0f32];
        matmul_scalar(&codes, &scales, &[a], &mut out, k);
        assert_eq!(out[0], 6.0);
        a.qs = [0; QK];
        a.qs[6] = 1;
        matmul_scalar(&codes, &scales, &[a], &mut out, k);
        assert_eq!(out[0], 0.0);
    }
}
