//! One error type for every reader, so callers can match on what went wrong and always learn
//! which file and which field.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// A problem located in a file: `what` names the field, tensor or key.
    #[error("{path}: {what}")]
    InFile { path: PathBuf, what: String },
    /// A problem not yet attached to a file; readers wrap it with `in_file`.
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("tensor not found: {0}")]
    MissingTensor(String),
}

impl FormatError {
    pub fn in_file(self, path: &std::path::Path) -> FormatError {
        match self {
            FormatError::Invalid(what) => FormatError::InFile { path: path.to_path_buf(), what },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, FormatError>;
