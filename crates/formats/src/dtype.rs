//! Storage types of tensors, with their block geometry.
//!
//! The discriminants of GGUF types are ggml's `ggml_type` ids, so a GGUF tensor-info type
//! field maps to a `DType` without a table.

use crate::error::FormatError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// Ternary, 256 per block: five trits per byte, then four per byte, and an f16 scale.
    TQ1_0,
    /// Ternary, 256 per block: 2-bit codes and an f16 scale.
    TQ2_0,
    /// OCP microscaling FP4, 32 per block: an E8M0 exponent and E2M1 codes, as ggml lays it out.
    MXFP4,
    /// Raw bytes (safetensors U8), e.g. packed blocks whose meaning a sibling tensor gives.
    U8,
    I8,
}

impl DType {
    /// ggml's `ggml_type` id for the types GGUF files carry.
    pub fn from_ggml(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            10 => DType::Q2K,
            11 => DType::Q3K,
            12 => DType::Q4K,
            13 => DType::Q5K,
            14 => DType::Q6K,
            24 => DType::I8,
            30 => DType::BF16,
            34 => DType::TQ1_0,
            35 => DType::TQ2_0,
            39 => DType::MXFP4,
            _ => return None,
        })
    }

    pub fn ggml_id(self) -> Option<u32> {
        Some(match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q2K => 10,
            DType::Q3K => 11,
            DType::Q4K => 12,
            DType::Q5K => 13,
            DType::Q6K => 14,
            DType::I8 => 24,
            DType::BF16 => 30,
            DType::TQ1_0 => 34,
            DType::TQ2_0 => 35,
            DType::MXFP4 => 39,
            DType::U8 => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q2K => "Q2_K",
            DType::Q3K => "Q3_K",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
            DType::TQ1_0 => "TQ1_0",
            DType::TQ2_0 => "TQ2_0",
            DType::MXFP4 => "MXFP4",
            DType::U8 => "U8",
            DType::I8 => "I8",
        }
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::U8 | DType::I8 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 | DType::MXFP4 => 32,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K | DType::TQ1_0 | DType::TQ2_0 => 256,
        }
    }

    /// Bytes per block (per element for plain scalar types).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::I8 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2K => 84,
            DType::Q3K => 110,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
            DType::TQ1_0 => 54,
            DType::TQ2_0 => 66,
            DType::MXFP4 => 17,
        }
    }

    /// Bytes needed to store `n_elements`, or an error when the count is not a whole number of
    /// blocks or the byte count overflows.
    pub fn storage_bytes(self, n_elements: u64) -> Result<u64, FormatError> {
        let bl = self.block_len() as u64;
        if !n_elements.is_multiple_of(bl) {
            return Err(FormatError::Invalid(format!(
                "{} elements is not a multiple of the {} block length {}",
                n_elements,
                self.name(),
                bl
            )));
        }
        (n_elements / bl)
            .checked_mul(self.block_bytes() as u64)
            .ok_or_else(|| FormatError::Invalid(format!("{} elements of {} overflow", n_elements, self.name())))
    }

    /// Bits per weight of the storage format.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_len() as f64
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
