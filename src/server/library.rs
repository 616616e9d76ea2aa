//! [`Library`]: the indexed documents a server answers from.
//!
//! `kura serve` opens the same catalog and search index as `kura ingest` and
//! `kura ask` (the data folder, `KURA_HOME`), once, and every request shares them:
//! the catalog is a pool of SQLite connections, and the search index sits behind a
//! read–write lock so that many answers can search at once while an ingest started
//! from the UI takes the write side for the moment it applies new chunks.
//!
//! The embedding model must be the one the collections were indexed with (the
//! query vector is compared with the stored passage vectors); the server uses the
//! one it loaded for `/v1/embeddings`, which is the default embedding model, the
//! same default `kura ingest` uses.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::error::ApiError;
use super::loaded::EmbeddingModel;
use crate::catalog::{Catalog, CatalogError};
use crate::embed::Embedder;
use crate::index::{IndexError, SearchIndex};
use crate::ingest::roots::SourceRoots;
use crate::paths::Paths;

/// Why the library could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The catalog database.
    #[error("opening the catalog {path}: {source}")]
    Catalog {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: CatalogError,
    },
    /// The search index.
    #[error("opening the search index {path}: {source}")]
    Index {
        /// The index folder.
        path: PathBuf,
        /// Why.
        source: IndexError,
    },
}

/// The catalog, the search index and the query encoder, shared by every request.
pub struct Library {
    /// Where the catalog and the index live.
    pub data_dir: PathBuf,
    /// The catalog (documents, pages, chunks).
    pub catalog: Catalog,
    /// BM25 and vector indexes; read for searching, written when chunks change.
    pub index: RwLock<SearchIndex>,
    /// The embedding model the collections were indexed with.
    pub embedder: Arc<Embedder>,
    /// Its registry name.
    pub embedder_name: String,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("data_dir", &self.data_dir)
            .field("embedder_name", &self.embedder_name)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Opens the catalog and index under `paths.data_dir` (creating empty ones on a
    /// fresh install) and brings the index up to date with the catalog, e.g. after
    /// an ingest that was killed between the catalog and the index.
    pub async fn open(paths: &Paths, embedding: &EmbeddingModel) -> Result<Self, LibraryError> {
        let db = paths.catalog_db();
        let catalog = Catalog::open(&db)
            .await
            .map_err(|source| LibraryError::Catalog { path: db, source })?;
        let dir = paths.index_dir();
        let mut index = SearchIndex::open(&dir).map_err(|source| LibraryError::Index {
            path: dir.clone(),
            source,
        })?;
        index
            .sync(&catalog)
            .await
            .map_err(|source| LibraryError::Index { path: dir, source })?;
        Ok(Self {
            data_dir: paths.data_dir.clone(),
            catalog,
            index: RwLock::new(index),
            embedder: embedding.embedder.clone(),
            embedder_name: embedding.name.clone(),
        })
    }

    /// The index for searching. A panic while another thread held the lock does not
    /// make the index unusable: its state is on disk and consistent per commit.
    pub fn read_index(&self) -> RwLockReadGuard<'_, SearchIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The folders a client may have this server read for collection
    /// `collection_id` (`None`: a collection not created yet): the server's own
    /// `--source-root` folders and those `kura ingest` recorded for it
    /// ([`crate::ingest::roots`]).
    pub async fn source_roots(
        &self,
        server: &SourceRoots,
        collection_id: Option<i64>,
    ) -> Result<SourceRoots, ApiError> {
        let mut roots = server.clone();
        if let Some(id) = collection_id {
            for p in self.catalog.source_roots(id).await.map_err(internal)? {
                roots.add_resolved(std::path::Path::new(&p));
            }
        }
        Ok(roots)
    }

    /// The ids of the collections named (all collections when `names` is empty).
    pub async fn readable_collections(&self, names: &[String]) -> Result<Vec<i64>, ApiError> {
        if names.is_empty() {
            let all = self.catalog.summaries().await.map_err(internal)?;
            return Ok(all.into_iter().map(|s| s.collection.id).collect());
        }
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            match self.catalog.find_collection(name).await.map_err(internal)? {
                Some(c) => ids.push(c.id),
                None => {
                    return Err(ApiError::not_found(format!(
                        "no collection named `{name}` / コレクション「{name}」はありません"
                    ))
                    .with_code("collection_not_found"))
                }
            }
        }
        Ok(ids)
    }
}

/// A catalog failure as a 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("catalog: {e}"))
}
