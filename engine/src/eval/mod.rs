//! Evaluations on real data: retrieval quality ([`retrieval`]) and grounded answers
//! ([`rag`]); adapters are evaluated by [`crate::train::evaluate_adapter`].

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

/// Keeps `n` items spread evenly over the list (a deterministic sample).
pub fn spread<T>(items: Vec<T>, n: usize) -> Vec<T> {
    if items.len() <= n || n == 0 {
        return items;
    }
    let step = items.len() as f64 / n as f64;
    let keep: std::collections::HashSet<usize> =
        (0..n).map(|i| (i as f64 * step) as usize).collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, x)| x)
        .collect()
}
