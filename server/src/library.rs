//! The document library ([`kura::library::Library`]) as the API sees it: the shared
//! library of a server, and its errors as HTTP answers.
//!
//! The library itself — the shared catalog and index, background ingest runs,
//! re-index, delete, the source-root rule — is the engine's; this module only
//! says which status code each refusal gets.

use std::sync::Arc;

use axum::http::StatusCode;

use super::error::ApiError;
use super::ServerState;
use kura::ingest::roots::RootError;
use kura::library::{Library, LibraryError};

/// The server's library, or 503 when it was started without one.
pub fn library(state: &ServerState) -> Result<Arc<Library>, ApiError> {
    state.library.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this server has no document library (it was started without an embedding model) / \
             このサーバーには文書ライブラリがありません(埋め込みモデルなしで起動されています)",
            "no_library",
        )
    })
}

/// A catalog failure as a 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("catalog: {e}"))
}

/// A path a client may not have read: 403 when outside the roots (whether it exists
/// or not), 400 otherwise.
pub(crate) fn root_error(e: RootError) -> ApiError {
    match e {
        RootError::Outside(_) => ApiError {
            status: StatusCode::FORBIDDEN,
            ..ApiError::bad_request(e.to_string(), Some("paths"))
        }
        .with_code("outside_source_roots"),
        other => ApiError::bad_request(other.to_string(), Some("paths")),
    }
}

impl From<LibraryError> for ApiError {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::NoCollection(_) => {
                ApiError::not_found(e.to_string()).with_code("collection_not_found")
            }
            LibraryError::NoDocument(_) => ApiError::not_found(e.to_string()),
            LibraryError::EmptyCollectionName => {
                ApiError::bad_request(e.to_string(), Some("collection"))
            }
            LibraryError::NoPaths | LibraryError::Walk(_) => {
                ApiError::bad_request(e.to_string(), Some("paths"))
            }
            LibraryError::Root(root) => root_error(root),
            LibraryError::Index(_) => ApiError::internal(e.to_string()),
            other => internal(other),
        }
    }
}
