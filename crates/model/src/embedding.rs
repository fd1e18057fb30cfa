//! The token embedding table kept in its stored format: a lookup dequantizes the rows it needs.
//!
//! Models with tied embeddings (SmolLM2, Gemma) store their largest matrix here — 49152×576 or
//! 262144×640 — and the output projection reads the same tensor through its own `Linear`. Keeping
//! the table packed rather than as f32 saves 4/bpw of its size (113 MB → 30 MB for SmolLM2's Q8_0
//! table) and costs one row dequantization per input token. A row dequantizes to exactly the values
//! a whole-table dequantization gives, since every format dequantizes block by block.

use lowbit_formats::dequant::dequantize_into;
use lowbit_formats::native::{GroupMatrix, Nf4Matrix, PaletteMatrix};
use lowbit_formats::source::{ModelSource, TensorRef};
use lowbit_formats::{DType, FormatError};

use crate::linear::matrix_shape;

pub struct Embedding {
    table: Table,
    rows: usize,
    cols: usize,
}

enum Table {
    /// A GGUF-typed tensor: rows of whole blocks.
    Blocks {
        dtype: DType,
        data: Vec<u8>,
        row_bytes: usize,
    },
    /// A native directory's group-quantized matrix.
    Group(GroupMatrix),
    Nf4(Nf4Matrix),
    Palette(PaletteMatrix),
}

impl Embedding {
    /// The table `tensor` of `source`, in whichever of the source's formats it is stored.
    pub fn load(source: &ModelSource, tensor: &TensorRef<'_>) -> Result<Embedding, FormatError> {
        if let Some(v) = source.nf4_view(tensor.name) {
            let m = Nf4Matrix {
                rows: v.rows,
                cols: v.cols,
                codes: v.codes.to_vec(),
                absmax: v.absmax.to_vec(),
                nested_absmax: v.nested_absmax.to_vec(),
                offset: v.offset.to_le_bytes(),
            };
            return Ok(Embedding { rows: m.rows, cols: m.cols, table: Table::Nf4(m) });
        }
        if let Some(v) = source.palette_view(tensor.name) {
            let (codes, lut, scales) = (v.codes.to_vec(), v.lut.to_vec(), v.scales.to_vec());
            let m = PaletteMatrix { format: v.format, rows: v.rows, cols: v.cols, codes, lut, scales };
            return Ok(Embedding { rows: m.rows, cols: m.cols, table: Table::Palette(m) });
        }
        let Some(v) = source.group_view(tensor.name) else { return Embedding::from_tensor(tensor) };
        let m = GroupMatrix {
            format: v.format,
            rows: v.rows,
            cols: v.cols,
            codes: v.codes.to_vec(),
            scales: v.scales.to_vec(),
            zeros: v.zeros.to_vec(),
        };
        Ok(Embedding { rows: m.rows, cols: m.cols, table: Table::Group(m) })
    }

    /// A copy of a `[vocab, hidden]` table; each row must be whole blocks of its storage type.
    pub fn from_tensor(tensor: &TensorRef<'_>) -> Result<Embedding, FormatError> {
        let (rows, cols) = matrix_shape(tensor)?;
        let named = |e: FormatError| FormatError::Invalid(format!("tensor {}: {e}", tensor.name));
        let row_bytes = usize::try_from(tensor.dtype.storage_bytes(cols as u64).map_err(named)?)
            .map_err(|_| named(FormatError::Invalid("row too large".into())))?;
        if rows.checked_mul(row_bytes) != Some(tensor.data.len()) {
            return Err(named(FormatError::Invalid(format!(
                "{rows} rows of {row_bytes} bytes do not match its {} bytes",
                tensor.data.len()
            ))));
        }
        // A probe of the first row rejects storage types without a dequantization (U8) here rather
        // than at the first lookup.
        dequantize_into(tensor.dtype, &tensor.data[..row_bytes], &mut vec![0.0; cols]).map_err(named)?;
        let table = Table::Blocks { dtype: tensor.dtype, data: tensor.data.to_vec(), row_bytes };
        Ok(Embedding { table, rows, cols })
    }

    /// Number of rows (the vocabulary size).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes row `token` (< rows) into `out` (cols long).
    pub fn row_into(&self, token: usize, out: &mut [f32]) {
        assert!(token < self.rows && out.len() == self.cols, "embedding lookup out of range");
        match &self.table {
            Table::Blocks { dtype, data, row_bytes } => {
                dequantize_into(*dtype, &data[token * row_bytes..][..*row_bytes], out)
                    .expect("rows were checked to be whole blocks of a dequantizable type at load")
            }
            Table::Group(m) => m.view().dequantize_row(token, out),
            Table::Nf4(m) => m.view().dequantize_row(token, out),
            Table::Palette(m) => m.view().dequantize_row(token, out),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.table {
            Table::Blocks { data, .. } => data.len(),
            Table::Group(m) => m.codes.len() + m.scales.len() + m.zeros.len(),
            Table::Nf4(m) => m.codes.len() + m.absmax.len() + m.nested_absmax.len() + m.offset.len(),
            Table::Palette(m) => m.codes.len() + m.lut.len() + m.scales.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dtype: DType, shape: Vec<usize>, data: &[u8]) -> Result<Embedding, FormatError> {
        Embedding::from_tensor(&TensorRef { name: "token_embd.weight", dtype, shape, data })
    }

    #[test]
    fn rows_dequantize_like_the_whole_table() {
        // Two Q8_0 rows of 32: f16 scale 0.5 (0x3800) then codes; row 1 has codes 0..32.
        let mut data = vec![0u8; 68];
        for (r, row) in data.chunks_exact_mut(34).enumerate() {
            row[..2].copy_from_slice(&0x3800u16.to_le_bytes());
            row[2..].iter_mut().enumerate().for_each(|(i, c)| *c = (i * r) as i8 as u8);
        }
        let e = table(DType::Q8_0, vec![2, 32], &data).unwrap();
        let whole = lowbit_formats::dequant::dequantize(DType::Q8_0, &data, 64).unwrap();
        let mut row = [0.0; 32];
        e.row_into(1, &mut row);
        assert_eq!(row[..], whole[32..]);
        assert_eq!(row[7], 3.5);
        assert_eq!((e.rows(), e.bytes()), (2, 68));
    }

    #[test]
    fn bad_tables_are_errors_naming_the_tensor() {
        for (dtype, shape, len) in
            [(DType::Q8_0, vec![2, 48], 102), (DType::Q8_0, vec![2, 32], 67), (DType::U8, vec![2, 2], 4)]
        {
            let e = table(dtype, shape, &vec![0; len]).err().expect("accepted a bad table");
            assert!(e.to_string().contains("token_embd.weight"), "{e}");
        }
    }
}
