//! [`Library`]: the indexed documents a running Kura answers from, and every action
//! on them that does not finish at once — background ingest runs, re-index, delete —
//! plus folder watching.
//!
//! The server, the desktop app and the command line open the same catalog and search
//! index (the data folder, `KURA_HOME`). A long-running process opens them once and
//! every request shares them: the catalog is a pool of SQLite connections, and the
//! search index sits behind a read–write lock so that many answers can search at
//! once while an ingest takes the write side only for the moment it applies new
//! chunks ([`SharedIndex`]).
//!
//! The embedding model must be the one the collections were indexed with (the query
//! vector is compared with the stored passage vectors); the library keeps the one it
//! was opened with.
//!
//! **What a client may have read** is decided here, not by the front end: an ingest
//! asked for over the network reads only inside the server's source roots and the
//! folders `kura ingest` recorded for the collection ([`crate::ingest::roots`]).

pub mod runs;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::catalog::{Catalog, CatalogError, DocumentRecord};
use crate::embed::Embedder;
use crate::index::{IndexError, SearchIndex};
use crate::ingest::pipeline::IngestOptions;
use crate::ingest::roots::{RootError, SourceRoots};
use crate::paths::Paths;

pub use runs::{IngestEvent, IngestRun, IngestRunView, IngestRuns, RunState};

/// Why a library action failed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The catalog database could not be opened.
    #[error("opening the catalog {path}: {source}")]
    OpenCatalog {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: CatalogError,
    },
    /// The search index could not be opened or brought up to date.
    #[error("opening the search index {path}: {source}")]
    OpenIndex {
        /// The index folder.
        path: PathBuf,
        /// Why.
        source: IndexError,
    },
    /// A catalog query failed.
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// Applying the catalog's changes to the search index failed.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// No collection has this name.
    #[error("no collection named `{0}` / コレクション「{0}」はありません")]
    NoCollection(String),
    /// No document has this id.
    #[error("no document {0} / 文書{0}はありません")]
    NoDocument(i64),
    /// An ingest named no collection.
    #[error("the collection name is empty / コレクション名が空です")]
    EmptyCollectionName,
    /// An ingest named no files or folders.
    #[error("no paths given / パスが指定されていません")]
    NoPaths,
    /// A path the caller may not have read, or one that is not there.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The files to ingest could not be listed.
    #[error("{0}")]
    Walk(String),
    /// The background run could not be started.
    #[error("cannot start the ingest thread: {0}")]
    Thread(std::io::Error),
}

/// The catalog, the search index and the query encoder, shared by every request,
/// and the ingest runs started on them.
pub struct Library {
    /// Where the catalog and the index live.
    pub data_dir: PathBuf,
    /// The catalog (documents, pages, chunks).
    pub catalog: Catalog,
    /// BM25 and vector indexes; read for searching, written when chunks change.
    index: RwLock<SearchIndex>,
    /// The embedding model the collections were indexed with.
    pub embedder: Arc<Embedder>,
    /// Its registry name.
    pub embedder_name: String,
    /// The background ingest runs of this process.
    runs: IngestRuns,
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
    pub async fn open(
        paths: &Paths,
        embedder: Arc<Embedder>,
        embedder_name: &str,
    ) -> Result<Self, LibraryError> {
        let db = paths.catalog_db();
        let catalog = Catalog::open(&db)
            .await
            .map_err(|source| LibraryError::OpenCatalog { path: db, source })?;
        let dir = paths.index_dir();
        let mut index = SearchIndex::open(&dir).map_err(|source| LibraryError::OpenIndex {
            path: dir.clone(),
            source,
        })?;
        index
            .sync(&catalog)
            .await
            .map_err(|source| LibraryError::OpenIndex { path: dir, source })?;
        Ok(Self {
            data_dir: paths.data_dir.clone(),
            catalog,
            index: RwLock::new(index),
            embedder,
            embedder_name: embedder_name.to_string(),
            runs: IngestRuns::default(),
        })
    }

    /// The index for searching. A panic while another thread held the lock does not
    /// make the index unusable: its state is on disk and consistent per commit.
    pub fn read_index(&self) -> RwLockReadGuard<'_, SearchIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The folders a client may have this library read for collection
    /// `collection_id` (`None`: a collection not created yet): the server's own
    /// source roots and those `kura ingest` recorded for it.
    pub async fn source_roots(
        &self,
        server: &SourceRoots,
        collection_id: Option<i64>,
    ) -> Result<SourceRoots, LibraryError> {
        let mut roots = server.clone();
        if let Some(id) = collection_id {
            for p in self.catalog.source_roots(id).await? {
                roots.add_resolved(Path::new(&p));
            }
        }
        Ok(roots)
    }

    /// The ids of the collections named (all collections when `names` is empty), by
    /// the catalog's one lookup rule.
    pub async fn collection_ids(&self, names: &[String]) -> Result<Vec<i64>, LibraryError> {
        if names.is_empty() {
            let all = self.catalog.summaries().await?;
            return Ok(all.into_iter().map(|s| s.collection.id).collect());
        }
        match self.catalog.collections_named(names).await {
            Ok(found) => Ok(found.iter().map(|c| c.id).collect()),
            Err(CatalogError::NoCollection(name)) => Err(LibraryError::NoCollection(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// The id of the collection named `name`.
    pub async fn collection_id(&self, name: &str) -> Result<i64, LibraryError> {
        self.catalog
            .find_collection(name)
            .await?
            .map(|c| c.id)
            .ok_or_else(|| LibraryError::NoCollection(name.to_string()))
    }

    /// Brings the shared index up to date with the catalog.
    pub async fn sync_index(self: &Arc<Self>) -> Result<usize, LibraryError> {
        Ok(SharedIndex(self.clone()).sync_now().await?)
    }

    /// Removes a document and its chunks from the catalog and both indexes.
    pub async fn delete_document(
        self: &Arc<Self>,
        id: i64,
    ) -> Result<DocumentRecord, LibraryError> {
        let doc = self
            .catalog
            .document(id)
            .await?
            .ok_or(LibraryError::NoDocument(id))?;
        self.catalog.remove_document(id).await?;
        self.sync_index().await?;
        tracing::info!("removed document {} ({})", doc.id, doc.path);
        Ok(doc)
    }

    /// Starts an incremental ingest of `paths` into `collection` in the background.
    /// Only paths inside `server_roots` and the collection's recorded folders are
    /// read; anything else is refused before the run starts.
    pub async fn start_ingest(
        self: &Arc<Self>,
        collection: &str,
        paths: &[PathBuf],
        server_roots: &SourceRoots,
        options: IngestOptions,
    ) -> Result<Arc<IngestRun>, LibraryError> {
        let collection = collection.trim();
        if collection.is_empty() {
            return Err(LibraryError::EmptyCollectionName);
        }
        if paths.is_empty() {
            return Err(LibraryError::NoPaths);
        }
        let existing = self.catalog.find_collection(collection).await?;
        let roots = self
            .source_roots(server_roots, existing.map(|c| c.id))
            .await?;
        let paths = paths
            .iter()
            .map(|p| roots.resolve(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.runs
            .start(self.clone(), collection, paths, Vec::new(), roots, options)
    }

    /// Re-reads a collection's own files in the background: changed files are
    /// re-indexed, files gone from disk are removed.
    pub async fn reindex(
        self: &Arc<Self>,
        collection: &str,
        server_roots: &SourceRoots,
        options: IngestOptions,
    ) -> Result<Arc<IngestRun>, LibraryError> {
        let coll = self
            .catalog
            .find_collection(collection)
            .await?
            .ok_or_else(|| LibraryError::NoCollection(collection.to_string()))?;
        let docs = self.catalog.documents(coll.id).await?;
        let (present, gone): (Vec<_>, Vec<_>) =
            docs.into_iter().partition(|d| Path::new(&d.path).exists());
        let paths = present.iter().map(|d| PathBuf::from(&d.path)).collect();
        let gone = gone.into_iter().map(|d| d.id).collect();
        let roots = self.source_roots(server_roots, Some(coll.id)).await?;
        self.runs
            .start(self.clone(), &coll.name, paths, gone, roots, options)
    }

    /// The ingest runs of this process, newest first.
    pub fn runs(&self) -> Vec<Arc<IngestRun>> {
        self.runs.list()
    }

    /// One ingest run by id.
    pub fn run(&self, id: &str) -> Option<Arc<IngestRun>> {
        self.runs.get(id)
    }
}

/// The library's shared search index as an ingest run sees it: the write lock is
/// taken only while the run syncs new chunks into it, on a blocking thread (the
/// lock is a plain `RwLock`, which must not be held across an `.await`).
pub struct SharedIndex(pub Arc<Library>);

impl SharedIndex {
    async fn sync_now(&self) -> Result<usize, IndexError> {
        let lib = self.0.clone();
        let dir = lib.data_dir.join("index");
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere while the lock was held leaves the index as committed on disk.
            let mut index = lib.index.write().unwrap_or_else(|e| e.into_inner());
            runtime.block_on(index.sync(&lib.catalog))
        })
        .await
        .unwrap_or_else(|e| {
            Err(IndexError::Io {
                path: dir,
                source: std::io::Error::other(format!("index sync crashed: {e}")),
            })
        })
    }
}

impl crate::ingest::pipeline::IndexSync for SharedIndex {
    /// Syncs from the library's own catalog (the one every run of the process uses).
    async fn sync_from(&mut self, _catalog: &Catalog) -> Result<usize, IndexError> {
        self.sync_now().await
    }
}
