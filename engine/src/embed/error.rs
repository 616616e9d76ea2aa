//! Errors of the embedding engine.
//!
//! Model files come from outside the program (a fetch script, a USB stick, a half-finished
//! copy), so every problem with one is an ordinary error that names the file and what is
//! wrong with it — never a panic. The ingest pipeline reports these to the operator as is.

use std::path::{Path, PathBuf};

/// Result type of the embedding engine.
pub type Result<T, E = EmbedError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading an embedding model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model file or directory could not be read.
    #[error("cannot read embedding model {}: {source}", path.display())]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is neither an E5S1 container nor a safetensors model with its
    /// `config.json` and `tokenizer.json`.
    #[error(
        "{}: not an embedding model: bad magic {found:?} (expected \"E5S1\", or a directory / \
         .safetensors file with config.json and tokenizer.json beside it)",
        path.display()
    )]
    BadMagic {
        /// The file that was read.
        path: PathBuf,
        /// Its first bytes, lossily decoded.
        found: String,
    },

    /// The file ends before a structure it declares.
    #[error("{}: truncated: {what} needs bytes {start}..{end} but the file has {len}", path.display())]
    Truncated {
        /// The model file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// File length.
        len: u64,
    },

    /// A structure of the file holds values that cannot be right.
    #[error("{}: corrupt model: {detail}", path.display())]
    Corrupt {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The container version is not one this reader understands.
    #[error("{}: unsupported E5S1 version {version} (this reader knows version 1)", path.display())]
    UnsupportedVersion {
        /// The model file.
        path: PathBuf,
        /// The version found in the header.
        version: u32,
    },

    /// A tensor the encoder needs is not in the file.
    #[error("{}: missing tensor {name:?}", path.display())]
    MissingTensor {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },

    /// The tensor directory names a storage type this reader does not know.
    #[error("{}: tensor {name:?} has unknown type code {code}", path.display())]
    UnknownTensorType {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The type code found.
        code: u8,
    },

    /// A tensor exists but has the wrong size or storage type for this model.
    #[error("{}: tensor {name:?}: expected {expected}, found {found}", path.display())]
    TensorMismatch {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What the header implies.
        expected: String,
        /// What the file holds.
        found: String,
    },

    /// `config.json` is missing fields or describes a model this encoder cannot run.
    #[error("{}: unsupported model config: {detail}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The tokenizer could not be built or failed on a text.
    #[error("{}: tokenizer: {detail}", path.display())]
    Tokenizer {
        /// The tokenizer's file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },

    /// The tensor library failed while running the encoder.
    #[error("embedding computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl EmbedError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn config(path: &Path, detail: impl Into<String>) -> Self {
        Self::Config {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn tokenizer(path: &Path, detail: impl std::fmt::Display) -> Self {
        Self::Tokenizer {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}
