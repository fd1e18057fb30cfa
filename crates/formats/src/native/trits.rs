//! Ternary matrices at 1.6 bits per weight: five trits per byte.
//!
//! A ternary matrix is an `int2-gG-sym` matrix whose codes are all 1, 2 or 3 (weights −s, 0, +s; see
//! `lowbit_quant::ternary`). Two bits per weight spend a quarter of the codes on a value that never
//! occurs; five trits in a byte (3⁵ = 243 ≤ 256) cost 8/5 = 1.6 bits, 0.95% above the log2 3 = 1.585 bits
//! a trit carries.
//!
//! # Layout
//!
//! Storage `trits-gG`: `NAME.qweight` holds the trits of each row in `ceil(cols / 5)` bytes, and
//! `NAME.scales` the same f16 scales, `rows × ceil(cols / G)`, as `int2-gG-sym`. Byte `j` of a row holds
//! the trits `t = u − 1 ∈ {0, 1, 2}` of elements `5j .. 5j+5` (the last byte of a row is completed
//! with 0s), as llama.cpp's TQ1_0 stores them: with `v = Σ_i t[5j+i]·3^(4−i)` (the first element most
//! significant), the byte is `q = ceil(256·v / 243)`, so that trit `i` is `((q·3^i mod 256)·3) >> 8`:
//! each digit comes out of the byte with two multiplications, which a SIMD kernel can do 32 bytes at a
//! time.
//!
//! Rows start on a byte so that a row, an expert of a stack or a slice of rows is packed on its own; a
//! row of 576 then takes 116 bytes (1.611 bits per weight), one of 1536 takes 308 (1.604).
//!
//! A loaded matrix is unpacked into its `int2-gG-sym` codes for the group kernels.

use super::group::{GroupFormat, GroupMatrix, GroupView};
use crate::error::{FormatError, Result};

pub const TRITS_PER_BYTE: usize = 5;

/// Bytes of trits of a row of `cols`.
pub const fn row_bytes(cols: usize) -> usize {
    cols.div_ceil(TRITS_PER_BYTE)
}

/// The byte holding five trits (each 0, 1 or 2), the first the most significant.
pub fn pack_byte(t: [u8; TRITS_PER_BYTE]) -> u8 {
    let v = t.iter().fold(0u32, |v, &t| v * 3 + u32::from(t));
    (v * 256).div_ceil(243) as u8
}

/// The five trits of a byte made by [`pack_byte`].
pub fn unpack_byte(q: u8) -> [u8; TRITS_PER_BYTE] {
    let mut x = u32::from(q);
    std::array::from_fn(|_| {
        let t = (x * 3) >> 8;
        x = (x * 3) & 0xFF;
        t as u8
    })
}

/// The ternary int2 matrix `m` with its codes packed five per byte. Errors if a code is 0 (−2·s, not a
/// ternary value) or the format is not symmetric 2-bit.
pub fn pack(m: &GroupView<'_>) -> Result<Vec<u8>> {
    check_format(m.format)?;
    let mut out = Vec::with_capacity(m.rows * row_bytes(m.cols));
    let mut row = vec![0u8; m.cols];
    let mut u = [0u8; super::group::SUB_BLOCK];
    for r in 0..m.rows {
        let codes = &m.codes[r * m.format.row_bytes(m.cols)..][..m.format.row_bytes(m.cols)];
        for (bytes, t) in codes.chunks_exact(m.format.sub_block_bytes()).zip(row.chunks_exact_mut(u.len())) {
            super::group::unpack(2, bytes, &mut u);
            for (t, &u) in t.iter_mut().zip(&u) {
                *t = u.checked_sub(1).ok_or_else(|| {
                    FormatError::Invalid(format!("row {r}: code 0 (−2·scale) is not ternary, trits cannot hold it"))
                })?;
            }
        }
        out.extend(
            row.chunks(TRITS_PER_BYTE).map(|t| pack_byte(std::array::from_fn(|i| t.get(i).copied().unwrap_or(0)))),
        );
    }
    Ok(out)
}

fn check_format(f: GroupFormat) -> Result<()> {
    if (f.bits, f.sym) != (2, true) {
        return Err(FormatError::Invalid(format!("{}: only ternary int2-sym matrices pack into trits", f.name())));
    }
    Ok(())
}

/// Borrowed parts of a trit-packed matrix, checked for consistent sizes.
#[derive(Clone, Copy, Debug)]
pub struct TritsView<'a> {
    /// The `int2-gG-sym` format the trits unpack into.
    pub format: GroupFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u8],
    /// Little-endian f16 bytes, `rows × n_groups × 2`.
    pub scales: &'a [u8],
}

impl<'a> TritsView<'a> {
    pub fn new(group: usize, rows: usize, cols: usize, codes: &'a [u8], scales: &'a [u8]) -> Result<TritsView<'a>> {
        let format = GroupFormat::new(2, group, true)?;
        format.check_shape(rows, cols)?;
        let expect = |what: &str, got: usize, per_row: usize| match rows.checked_mul(per_row) {
            Some(want) if want == got => Ok(()),
            _ => Err(FormatError::Invalid(format!(
                "{} {rows}×{cols}: {what} has {got} bytes, want {rows}×{per_row}",
                name(group)
            ))),
        };
        expect("codes", codes.len(), row_bytes(cols))?;
        expect("scales", scales.len(), 2 * format.n_groups(cols))?;
        Ok(TritsView { format, rows, cols, codes, scales })
    }

    /// The matrix as its `int2-gG-sym` codes and scales. Every byte decodes (a byte above 242's code only
    /// arises from a hand-made file and still gives trits), so this cannot fail on a checked view.
    pub fn to_group(&self) -> GroupMatrix {
        let f = self.format;
        let mut codes = vec![0u8; self.rows * f.row_bytes(self.cols)];
        let mut t = vec![0u8; row_bytes(self.cols) * TRITS_PER_BYTE];
        let mut u = [0u8; super::group::SUB_BLOCK];
        for (r, out) in codes.chunks_exact_mut(f.row_bytes(self.cols)).enumerate() {
            for (t, &q) in t.chunks_exact_mut(TRITS_PER_BYTE).zip(&self.codes[r * row_bytes(self.cols)..]) {
                t.copy_from_slice(&unpack_byte(q));
            }
            for (out, t) in out.chunks_exact_mut(f.sub_block_bytes()).zip(t.chunks_exact(u.len())) {
                u.iter_mut().zip(t).for_each(|(u, &t)| *u = t + 1);
                super::group::pack(2, &u, out);
            }
        }
        GroupMatrix {
            format: f,
            rows: self.rows,
            cols: self.cols,
            codes,
            scales: self.scales.to_vec(),
            zeros: Vec::new(),
        }
    }
}

/// `trits-g128`-style name, the storage's name in quantization_config.json.
pub fn name(group: usize) -> String {
    format!("trits-g{group}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::group::quantize;

    #[test]
    fn every_byte_value_round_trips() {
        for v in 0..243u32 {
            let t: [u8; 5] = std::array::from_fn(|i| (v / 3u32.pow(4 - i as u32) % 3) as u8);
            assert_eq!(unpack_byte(pack_byte(t)), t, "v = {v}");
        }
    }

    #[test]
    fn digits_come_out_by_multiplication_as_the_layout_says() {
        for v in 0..243u32 {
            let t: [u8; 5] = std::array::from_fn(|i| (v / 3u32.pow(4 - i as u32) % 3) as u8);
            let q = u32::from(pack_byte(t));
            for (i, &t) in t.iter().enumerate() {
                assert_eq!(((q * 3u32.pow(i as u32)) % 256 * 3) >> 8, u32::from(t), "v = {v}, digit {i}");
            }
        }
    }

    #[test]
    fn a_ternary_matrix_packs_and_unpacks_to_the_same_codes() {
        let (rows, cols) = (3, 96);
        // Values in {−1, 0, 1}·0.5 quantize to the ternary codes 1..3 exactly.
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 3) as f32 - 1.0) * 0.5).collect();
        let m = quantize(GroupFormat::new(2, 32, true).unwrap(), &values, rows, cols).unwrap();
        assert!(m.codes.iter().all(|&b| (0..4).all(|i| (b >> (2 * i)) & 3 != 0)), "codes 1..3 only");
        let packed = pack(&m.view()).unwrap();
        assert_eq!(packed.len(), rows * 20);
        let v = TritsView::new(32, rows, cols, &packed, &m.scales).unwrap();
        assert_eq!(v.to_group(), m);
        assert_eq!(v.to_group().view().dequantize(), values);
    }

    #[test]
    fn code_zero_and_wrong_sizes_are_refused() {
        let m = quantize(GroupFormat::new(2, 32, true).unwrap(), &[-1.0; 32], 1, 32).unwrap();
        let mut codes = m.codes.clone();
        codes[0] &= !3; // element 0 to code 0
        let bad = GroupMatrix { codes, ..m.clone() };
        assert!(pack(&bad.view()).is_err());
        let packed = pack(&m.view()).unwrap();
        assert!(TritsView::new(32, 1, 32, &packed[..6], &m.scales).is_err());
        assert!(TritsView::new(32, 1, 32, &packed, &m.scales[..1]).is_err());
        assert!(TritsView::new(32, usize::MAX, 32, &packed, &m.scales).is_err());
    }
}
