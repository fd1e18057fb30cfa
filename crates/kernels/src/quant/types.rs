//! The weight block formats the quantized kernels multiply natively: GGUF's (ggml's) block layouts,
//! byte for byte as they are stored in the file (little-endian f16 scales).

/// Elements per activation block ([`super::BlockQ8`]), and per block of the legacy formats. Every
/// weight block is cut into pieces of this many elements, each multiplied with one activation block.
pub const QK: usize = 32;

/// Elements per super-block of the k-quant and ternary formats (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A weight block format. The discriminants are the const-generic tags of the SIMD kernels.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 32 elements: f16 d, 16 bytes of 4-bit codes q: value = (q − 8)·d. Element j is the low nibble
    /// of byte j, element j + 16 its high nibble.
    Q4_0,
    /// f16 d, f16 m, 16 bytes of 4-bit codes (as Q4_0): value = q·d + m.
    Q4_1,
    /// f16 d, 4 bytes qh, 16 bytes of low nibbles (as Q4_0); bit j of the little-endian u32 qh is the
    /// fifth bit of element j: value = (q − 16)·d.
    Q5_0,
    /// f16 d, f16 m, qh, nibbles (as Q5_0): value = q·d + m.
    Q5_1,
    /// f16 d, then 32 int8 codes q: value = q·d.
    Q8_0,
    /// 256 elements: scales[16] (4-bit scale low, 4-bit min high, per 16 elements), qs[64] (2-bit
    /// codes), f16 d, f16 dmin: value = d·sc·q − dmin·m.
    Q2K,
    /// 256 elements: hmask[32], qs[64] (low 2 bits), scales[12] (16 six-bit scales biased by 32),
    /// f16 d: value = d·(sc − 32)·(q − 4 + 4·hbit).
    Q3K,
    /// 256 elements: f16 d, f16 dmin, scales[12] (8 six-bit scales, 8 six-bit mins), qs[128]:
    /// value = d·sc·q − dmin·m over 8 sub-blocks of 32.
    Q4K,
    /// As Q4_K plus qh[32] (fifth bits) before qs.
    Q5K,
    /// 256 elements: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d:
    /// value = d·sc·(q − 32) over 16 sub-blocks of 16.
    Q6K,
    /// 256 ternary elements: qs[48] holding 5 trits per byte, qh[4] holding 4, f16 d:
    /// value = (t − 1)·d, t in {0, 1, 2}.
    TQ1_0,
    /// 256 ternary elements: qs[64] of 2-bit codes t in {0, 1, 2} (Q2_K's order), f16 d: value = (t − 1)·d.
    TQ2_0,
    /// 32 elements: e8m0 exponent byte e, 16 bytes of 4-bit codes (as Q4_0): value = T[q]·2^(e − 128)
    /// with T = [0, 1, 2, 3, 4, 6, 8, 12, 0, −1, −2, −3, −4, −6, −8, −12] (FP4 E2M1 doubled, hence 128
    /// rather than 127).
    MXFP4,
}

impl QuantType {
    pub const ALL: [QuantType; 13] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2K,
        QuantType::Q3K,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::TQ1_0,
        QuantType::TQ2_0,
        QuantType::MXFP4,
    ];

    /// Elements per block: [`QK`] or [`QK_K`].
    pub const fn block_elems(self) -> usize {
        match self {
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0 => QK,
            QuantType::MXFP4 => QK,
            _ => QK_K,
        }
    }

    /// Pieces of [`QK`] elements per block (1 or 8).
    pub const fn pieces(self) -> usize {
        self.block_elems() / QK
    }

    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q2K => 84,
            QuantType::Q3K => 110,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
            QuantType::TQ1_0 => 54,
            QuantType::TQ2_0 => 66,
            QuantType::MXFP4 => 17,
        }
    }

    /// Bytes of one row of `k` weights (k a multiple of [`QuantType::block_elems`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / self.block_elems() * self.block_bytes()
    }

    /// ggml's name of the format.
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q2K => "Q2_K",
            QuantType::Q3K => "Q3_K",
            QuantType::Q4K => "Q4_K",
            QuantType::Q5K => "Q5_K",
            QuantType::Q6K => "Q6_K",
            QuantType::TQ1_0 => "TQ1_0",
            QuantType::TQ2_0 => "TQ2_0",
            QuantType::MXFP4 => "MXFP4",
        }
    }

    /// The format whose discriminant is `tag` (the SIMD kernels' const-generic parameter).
    pub const fn from_tag(tag: u8) -> QuantType {
        let mut i = 0;
        while i < QuantType::ALL.len() {
            if QuantType::ALL[i] as u8 == tag {
                return QuantType::ALL[i];
            }
            i += 1;
        }
        panic!("no quantized format has this tag")
    }
}
