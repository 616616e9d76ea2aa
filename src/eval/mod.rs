//! Evaluations on real data: retrieval quality now; answers and adapters later.

pub mod rag;
pub mod retrieval;
mod squad;

use std::path::{Path, PathBuf};

use crate::catalog::CatalogError;
use crate::index::IndexError;

/// What can go wrong in an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data set could not be read.
    #[error("data set {path}: {message}")]
    Dataset {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// An index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Embedding failed.
    #[error("embedding: {0}")]
    Embed(String),
}

impl EvalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
