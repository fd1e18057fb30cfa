//! Errors of quantization, each naming the tensor it concerns.

use lowbit_formats::quantize::QuantizeError;
use lowbit_formats::{DType, FormatError};

use crate::imatrix::ImatrixError;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A tensor's values cannot be stored in the type chosen for it: a NaN or infinity, a value beyond the type's
    /// range, or a shape the type cannot hold.
    #[error("tensor {tensor} ({dtype}): {cause}")]
    Quantize { tensor: String, dtype: DType, cause: QuantizeError },
    /// A tensor the rules cannot place (an expert tensor without a layer number, say) or whose data is unreadable.
    #[error("tensor {tensor}: {what}")]
    Tensor { tensor: String, what: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Importance(#[from] ImatrixError),
    /// The model could not run the calibration set (a token beyond its vocabulary, a window beyond its context).
    #[error("calibration: {0}")]
    Model(#[from] lowbit_model::ModelError),
}
