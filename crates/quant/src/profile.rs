//! Device profiles (`--target`): named sets of per-tensor rules for the devices our users name, each sized so that
//! GPT-OSS-20B fits its device.
//!
//! A profile sorts every quantizable matrix into one of three classes and stores each class by its own scheme
//! ([`NativeScheme`]); routers, norms and biases stay wide as under every scheme. The classes:
//!
//! - **embedding**: the token embedding and the output projection. Their error reaches every token (llama.cpp's
//!   mixes keep them at 6–8 bits), and in GPT-OSS-20B they are 5% of the weights.
//! - **attention**: q, k, v and o. 3% of GPT-OSS-20B's weights, run for every token.
//! - **ffn**: the MLP, or a mixture of experts' stacks: 91% of GPT-OSS-20B, of which a token runs 4 experts of 32.
//!
//! | profile | embedding | attention | ffn | GPT-OSS-20B budget |
//! |---|---|---|---|---|
//! | `snapdragon-x` | int8 per channel | int8 per channel | int4, groups of 128 | ≤ 16 GB with the runtime, of a 32 GB laptop |
//! | `iphone` | 4-bit palettes, one per row | 4-bit palettes, one per row | 2-bit palettes, one per row | ≤ 6 GB |
//! | `ternary` | int8 per channel | int4, groups of 128 | ternary, exact fit per 128 (`crate::ternary`) | none |
//!
//! Why these: on a laptop the ffn at int4 in groups of 128 (the GPTQ/AWQ default) leaves room for the wider
//! embedding and attention; groups of 32 would cost 8 bytes of run-time group parameters per 32 weights, 4.8 GB
//! for GPT-OSS-20B's experts, and break the budget. On a phone only 2 bits per expert weight fit; a palette per
//! row costs 8 bytes per row of 2880 2-bit weights (1%), and on SmolLM2 at 4 bits gives a KL-divergence of 0.57
//! against 1.39 for palettes shared by 8 rows. The ternary profile is the calibration-free build of the most
//! compressed form; `--method ptbitnet` makes the calibrated one. Attention stays at 4 bits there: 3% of the
//! weights, and every token runs it.

use lowbit_formats::native::PaletteFormat;

use crate::native_export::NativeScheme;
use crate::rtn::{is_embedding, RtnScheme};
use crate::ternary::{TernaryRule, TernaryScheme};

/// A device profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    SnapdragonX,
    Iphone,
    Ternary,
}

/// Which rule of a profile a matrix falls under (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TensorClass {
    Embedding,
    Attention,
    Ffn,
}

impl TensorClass {
    pub fn of(name: &str) -> TensorClass {
        if is_embedding(name) {
            TensorClass::Embedding
        } else if name.contains(".attn_") {
            TensorClass::Attention
        } else {
            TensorClass::Ffn
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorClass::Embedding => "embedding",
            TensorClass::Attention => "attention",
            TensorClass::Ffn => "ffn",
        }
    }
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::SnapdragonX, Profile::Iphone, Profile::Ternary];

    pub fn name(self) -> &'static str {
        match self {
            Profile::SnapdragonX => "snapdragon-x",
            Profile::Iphone => "iphone",
            Profile::Ternary => "ternary",
        }
    }

    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The device, in words.
    pub fn device(self) -> &'static str {
        match self {
            Profile::SnapdragonX => "a 32 GB laptop CPU (Snapdragon X Elite class), 4-bit",
            Profile::Iphone => "a phone, Core ML style 2-bit palettes",
            Profile::Ternary => "maximum compression, 1.58-bit ternary MLP/experts",
        }
    }

    /// What GPT-OSS-20B may take on the device, in bytes, and whether run-time state counts: weights and run-time
    /// state for `snapdragon-x` (half of the laptop's memory), the weights for `iphone`; `ternary` has no device.
    pub fn budget(self) -> Option<(u64, bool)> {
        match self {
            Profile::SnapdragonX => Some((16_000_000_000, true)),
            Profile::Iphone => Some((6_000_000_000, false)),
            Profile::Ternary => None,
        }
    }

    /// The context the run-time estimate holds a KV cache for.
    pub fn context(self) -> usize {
        match self {
            Profile::SnapdragonX => 8192,
            Profile::Iphone | Profile::Ternary => 4096,
        }
    }

    /// The scheme a matrix of `class` is stored by; `seed` fixes the palettes' k-means draws.
    pub fn scheme(self, class: TensorClass, seed: u64) -> NativeScheme {
        let rtn =
            |bits, group| NativeScheme::Rtn(RtnScheme { bits, group, sym: true, embedding_bits: None, wide_blocks: 0 });
        let palette = |bits| NativeScheme::Palette {
            format: PaletteFormat { bits, group_rows: Some(1), channel_scale: false },
            seed,
        };
        match (self, class) {
            (Profile::SnapdragonX, TensorClass::Embedding | TensorClass::Attention) => rtn(8, None),
            (Profile::SnapdragonX, TensorClass::Ffn) => rtn(4, Some(128)),
            (Profile::Iphone, TensorClass::Embedding | TensorClass::Attention) => palette(4),
            (Profile::Iphone, TensorClass::Ffn) => palette(2),
            (Profile::Ternary, TensorClass::Embedding) => rtn(8, None),
            (Profile::Ternary, TensorClass::Attention) => rtn(4, Some(128)),
            (Profile::Ternary, TensorClass::Ffn) => {
                NativeScheme::Ternary(TernaryScheme { rule: TernaryRule::Exact, group: 128, packed: false })
            }
        }
    }

    /// `method` and `bits` of the quantization config: those of the ffn, which holds most of the weights.
    pub fn summary(self) -> (&'static str, u8) {
        match self {
            Profile::SnapdragonX => ("rtn", 4),
            Profile::Iphone => ("palette", 2),
            Profile::Ternary => ("ternary", 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_fall_into_their_classes() {
        assert_eq!(TensorClass::of("token_embd.weight"), TensorClass::Embedding);
        assert_eq!(TensorClass::of("output.weight"), TensorClass::Embedding);
        assert_eq!(TensorClass::of("blk.3.attn_q.weight"), TensorClass::Attention);
        assert_eq!(TensorClass::of("blk.3.attn_output.weight"), TensorClass::Attention);
        assert_eq!(TensorClass::of("blk.3.ffn_down_exps.weight"), TensorClass::Ffn);
        assert_eq!(TensorClass::of("blk.0.ffn_gate.weight"), TensorClass::Ffn);
        for t in Profile::ALL {
            assert_eq!(Profile::parse(t.name()), Some(t));
        }
        assert_eq!(Profile::parse("pixel"), None);
        // Every rule is a valid format.
        for t in Profile::ALL {
            for c in [TensorClass::Embedding, TensorClass::Attention, TensorClass::Ffn] {
                match t.scheme(c, 0) {
                    NativeScheme::Rtn(s) => assert!(RtnScheme::new(s.bits, s.group, s.sym).is_ok()),
                    NativeScheme::Palette { format: f, .. } => {
                        assert!(PaletteFormat::new(f.bits, f.group_rows, f.channel_scale).is_ok())
                    }
                    NativeScheme::Ternary(t) => assert!(crate::ternary::format(t.group).is_ok()),
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
