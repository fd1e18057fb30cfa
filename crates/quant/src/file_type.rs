//! llama-quantize's targets: the `LLAMA_FTYPE` file types (llama.h) by their llama-quantize names, each with the
//! storage type its ordinary matrices get (`llama_ftype_get_default_type`).

use lowbit_formats::DType;

/// A file type lowbit can write. The k-quant "mixes" (`Q3_K_M`, …) give some tensors more bits than the default
/// type (see `tensor_types`); with `pure` every quantizable tensor gets the default type (llama-quantize `--pure`).
///
/// Left out: the IQ types (no quantizer here), Q2_K_S (llama-quantize requires an importance matrix for it), and
/// Q1_0/Q2_0/NVFP4 (no block layout here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    TQ1_0,
    TQ2_0,
    Mxfp4Moe,
}

impl FileType {
    pub const ALL: [FileType; 20] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2K,
        FileType::Q3KS,
        FileType::Q3KM,
        FileType::Q3KL,
        FileType::Q4KS,
        FileType::Q4KM,
        FileType::Q5KS,
        FileType::Q5KM,
        FileType::Q6K,
        FileType::TQ1_0,
        FileType::TQ2_0,
        FileType::Mxfp4Moe,
    ];

    /// llama-quantize's name for it.
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2K => "Q2_K",
            FileType::Q3KS => "Q3_K_S",
            FileType::Q3KM => "Q3_K_M",
            FileType::Q3KL => "Q3_K_L",
            FileType::Q4KS => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KS => "Q5_K_S",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
            FileType::TQ1_0 => "TQ1_0",
            FileType::TQ2_0 => "TQ2_0",
            FileType::Mxfp4Moe => "MXFP4_MOE",
        }
    }

    /// Parses a llama-quantize name, ignoring case, with llama-quantize's aliases (`Q3_K`, `Q4_K`, `Q5_K` are the
    /// `_M` mixes) and `MXFP4` for `MXFP4_MOE`.
    pub fn parse(s: &str) -> Option<FileType> {
        let aliases = [("Q3_K", FileType::Q3KM), ("Q4_K", FileType::Q4KM), ("Q5_K", FileType::Q5KM)];
        let extra = [("MXFP4", FileType::Mxfp4Moe)];
        FileType::ALL
            .iter()
            .map(|&f| (f.name(), f))
            .chain(aliases)
            .chain(extra)
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, f)| f)
    }

    /// `LLAMA_FTYPE_*`, written as `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2K => 10,
            FileType::Q3KS => 11,
            FileType::Q3KM => 12,
            FileType::Q3KL => 13,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            FileType::BF16 => 32,
            FileType::TQ1_0 => 36,
            FileType::TQ2_0 => 37,
            FileType::Mxfp4Moe => 38,
        }
    }

    /// The storage type of ordinary matrices (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> DType {
        match self {
            FileType::F32 => DType::F32,
            FileType::F16 => DType::F16,
            FileType::BF16 => DType::BF16,
            FileType::Q4_0 => DType::Q4_0,
            FileType::Q4_1 => DType::Q4_1,
            FileType::Q5_0 => DType::Q5_0,
            FileType::Q5_1 => DType::Q5_1,
            FileType::Q8_0 => DType::Q8_0,
            FileType::Q2K => DType::Q2K,
            FileType::Q3KS | FileType::Q3KM | FileType::Q3KL => DType::Q3K,
            FileType::Q4KS | FileType::Q4KM => DType::Q4K,
            FileType::Q5KS | FileType::Q5KM => DType::Q5K,
            FileType::Q6K => DType::Q6K,
            FileType::TQ1_0 => DType::TQ1_0,
            FileType::TQ2_0 => DType::TQ2_0,
            FileType::Mxfp4Moe => DType::MXFP4,
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_with_llama_quantize_aliases() {
        for f in FileType::ALL {
            assert_eq!(FileType::parse(f.name()), Some(f));
            assert_eq!(FileType::parse(&f.name().to_lowercase()), Some(f));
        }
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4KM));
        assert_eq!(FileType::parse("mxfp4"), Some(FileType::Mxfp4Moe));
        assert_eq!(FileType::parse("IQ2_XS"), None);
        assert_eq!(FileType::parse("Q2_K_S"), None);
    }
}
