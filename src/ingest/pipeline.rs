//! The ingest run: walk → detect changes → extract → chunk → embed → catalog → indexes.
//!
//! A run is incremental and idempotent. A file whose size and mtime match the
//! catalog is not even read; one whose bytes hash the same is not re-extracted;
//! deleted files lose their chunks. Each document is committed to the catalog in
//! one transaction with its chunks and embeddings, and the indexes replay the
//! catalog's log (see [`crate::index`]), so killing the process at any point and
//! running again converges to the same state, with no duplicates.
//!
//! A file that cannot be read (corrupt, encrypted, empty, too big, binary,
//! zip bomb, an extractor panic) is reported by path with the reason and skipped;
//! the run goes on, and an earlier indexed version of that file stays searchable.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use serde::Serialize;

use super::chunk::{chunk_page, ChunkParams};
use super::extract::{extract, Limits};
use super::quality::PageQuality;
use crate::catalog::{Catalog, CatalogError, NewChunk, NewDocument, PageRecord};
use crate::embed::Embedder;
use crate::index::{IndexError, SearchIndex};
use crate::models::sha256_file;

/// Extensions looked at when walking a folder (a file named explicitly is always tried).
pub const KNOWN_EXTENSIONS: &[&str] = &[
    "pdf", "docx", "xlsx", "pptx", "html", "htm", "md", "markdown", "txt", "text", "csv",
];

/// What can stop a whole run (a single bad file never does).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// An index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Embedding failed.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// A path given on the command line does not exist.
    #[error("{0} does not exist / パスが存在しません")]
    NoSuchPath(PathBuf),
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Limits on input files.
    pub limits: Limits,
    /// Chunk sizes.
    pub chunking: ChunkParams,
    /// Passages embedded per batch.
    pub embed_batch: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            limits: Limits::default(),
            chunking: ChunkParams::default(),
            embed_batch: 16,
        }
    }
}

/// A file that could not be ingested.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A page that was not indexed because its text is garbled or missing.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemPage {
    /// The file.
    pub path: String,
    /// 1-based page.
    pub page: u32,
    /// `garbled` or `empty`.
    pub quality: String,
    /// Why.
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    /// New documents.
    pub added: usize,
    /// Changed documents re-indexed.
    pub updated: usize,
    /// Documents already up to date.
    pub unchanged: usize,
    /// Documents whose files are gone.
    pub removed: usize,
    /// Files that could not be read.
    pub failed: Vec<Failure>,
    /// Pages skipped for quality.
    pub problem_pages: Vec<ProblemPage>,
    /// Pages extracted.
    pub pages: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Progress events, for a terminal bar or the UI.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// The walk found this many candidate files.
    Found(usize),
    /// A file is done (with its outcome word: added/updated/unchanged/failed).
    File {
        /// The file.
        path: &'a Path,
        /// Outcome.
        outcome: &'a str,
        /// Pages extracted from it.
        pages: usize,
    },
}

/// The search index as a run sees it: something to bring up to date with the
/// catalog's index log, now and then during the run and at its end.
///
/// `kura ingest` owns its [`SearchIndex`]; `kura serve` shares one between the
/// answers that search it and the ingests started from the UI, behind a lock, and
/// implements this by taking the lock only while it syncs — never while a run
/// extracts or embeds, so answers go on during an ingest
/// (`server::library_api::SharedIndex`).
pub trait IndexSync {
    /// Replays the catalog's log into the index (see [`SearchIndex::sync`]).
    fn sync_from(&mut self, catalog: &Catalog) -> impl Future<Output = Result<usize, IndexError>>;
}

impl IndexSync for SearchIndex {
    fn sync_from(&mut self, catalog: &Catalog) -> impl Future<Output = Result<usize, IndexError>> {
        self.sync(catalog)
    }
}

/// Lists the files under the given paths (folders recursively, hidden entries skipped).
pub fn walk(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IngestError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(IngestError::NoSuchPath(p.clone()));
        }
        let p = p.canonicalize().unwrap_or_else(|_| p.clone());
        if p.is_file() {
            out.push(p);
            continue;
        }
        let mut stack = vec![p];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if hidden {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| KNOWN_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn mtime_of(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Text that is embedded for a chunk: the heading gives a passage its context.
fn passage_text(heading: Option<&str>, text: &str) -> String {
    match heading {
        Some(h) if !text.starts_with(h) => format!("{h}\n{text}"),
        _ => text.to_owned(),
    }
}

/// Runs one ingest of `paths` into `collection`.
pub async fn ingest(
    paths: &[PathBuf],
    collection: &str,
    opts: &IngestOptions,
    catalog: &Catalog,
    index: &mut impl IndexSync,
    embedder: &Embedder,
    progress: &dyn Fn(Progress),
) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let mut summary = IngestSummary::default();
    // Catch up with anything a killed run left in the catalog but not the indexes.
    index.sync_from(catalog).await?;
    let coll = catalog.collection(collection).await?;
    let run = catalog.start_run(coll.id).await?;
    let files = walk(paths)?;
    progress(Progress::Found(files.len()));
    let known = catalog.documents(coll.id).await?;
    let seen: HashSet<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut last_sync = Instant::now();

    for path in &files {
        let path_str = path.to_string_lossy().into_owned();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                summary.failed.push(Failure {
                    path: path_str,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let (size, mtime) = (meta.len() as i64, mtime_of(&meta));
        let previous = known.iter().find(|d| d.path == path_str);
        if let Some(d) = previous {
            if d.status == "indexed" && d.size == size && d.mtime == mtime && d.error.is_none() {
                summary.unchanged += 1;
                progress(Progress::File {
                    path,
                    outcome: "unchanged",
                    pages: 0,
                });
                continue;
            }
        }
        let hash = match sha256_file(path) {
            Ok(h) => h,
            Err(e) => {
                summary.failed.push(Failure {
                    path: path_str,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if let Some(d) = previous {
            if d.status == "indexed" && d.content_hash == hash && d.error.is_none() {
                summary.unchanged += 1;
                progress(Progress::File {
                    path,
                    outcome: "unchanged",
                    pages: 0,
                });
                continue;
            }
        }
        let limits = opts.limits.clone();
        let owned = path.clone();
        let extracted = tokio::task::spawn_blocking(move || extract(&owned, &limits))
            .await
            .map_err(|e| IngestError::Embed(format!("extraction task: {e}")))?;
        let doc = match extracted {
            Ok(doc) => doc,
            Err(e) => {
                let reason = e.to_string();
                catalog
                    .record_failure(coll.id, &path_str, &hash, size, mtime, &reason)
                    .await?;
                summary.failed.push(Failure {
                    path: path_str,
                    reason,
                });
                progress(Progress::File {
                    path,
                    outcome: "failed",
                    pages: 0,
                });
                continue;
            }
        };

        let mut pages = Vec::with_capacity(doc.pages.len());
        let mut chunks = Vec::new();
        for page in &doc.pages {
            let (quality, reason) = match &page.quality {
                PageQuality::Ok => ("ok", None),
                PageQuality::Empty => (
                    "empty",
                    Some("no extractable text (image-only page?)".to_owned()),
                ),
                PageQuality::Garbled { reason } => ("garbled", Some(reason.clone())),
            };
            pages.push(PageRecord {
                number: page.number as i64,
                quality: quality.to_owned(),
                reason: reason.clone(),
                chars: page.text.chars().count() as i64,
            });
            if quality != "ok" {
                // Empty pages of short documents (a blank back page) are not worth a report.
                if quality == "garbled"
                    || doc.pages.len() > 1 && !page.text.trim().is_empty()
                    || quality == "empty" && doc.pages.len() > 1
                {
                    summary.problem_pages.push(ProblemPage {
                        path: path_str.clone(),
                        page: page.number,
                        quality: quality.to_owned(),
                        reason: reason.unwrap_or_default(),
                    });
                }
                continue;
            }
            let count = |s: &str| embedder.count_tokens(s);
            for c in chunk_page(&page.text, &opts.chunking, &count) {
                if c.text.trim().is_empty() {
                    continue;
                }
                chunks.push(NewChunk {
                    page: page.number as i64,
                    char_start: c.char_start as i64,
                    char_end: c.char_end as i64,
                    heading: c.heading,
                    text: c.text,
                    tokens: c.tokens as i64,
                    embedding: Vec::new(),
                });
            }
        }
        for batch in chunks.chunks_mut(opts.embed_batch.max(1)) {
            let texts: Vec<String> = batch
                .iter()
                .map(|c| passage_text(c.heading.as_deref(), &c.text))
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embedder
                .embed_passages(&refs)
                .map_err(|e| IngestError::Embed(e.to_string()))?;
            for (c, v) in batch.iter_mut().zip(vectors) {
                c.embedding = v;
            }
        }
        let new_doc = NewDocument {
            path: path_str.clone(),
            content_hash: hash,
            size,
            mtime,
            extractor: doc.extractor.to_owned(),
            pages,
        };
        catalog.replace_document(coll.id, &new_doc, &chunks).await?;
        summary.pages += doc.pages.len();
        summary.chunks += chunks.len();
        let outcome = if previous.is_some_and(|d| d.status == "indexed") {
            "updated"
        } else {
            "added"
        };
        if outcome == "updated" {
            summary.updated += 1;
        } else {
            summary.added += 1;
        }
        progress(Progress::File {
            path,
            outcome,
            pages: doc.pages.len(),
        });
        if last_sync.elapsed().as_secs() >= 30 {
            index.sync_from(catalog).await?;
            last_sync = Instant::now();
        }
    }

    // Files that were under the walked folders and are gone now.
    let roots: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    for d in &known {
        let p = Path::new(&d.path);
        let under_root = roots.iter().any(|r| p.starts_with(r));
        if under_root && !seen.contains(&d.path) && !p.exists() {
            catalog.remove_document(d.id).await?;
            summary.removed += 1;
        }
    }
    index.sync_from(catalog).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    catalog
        .finish_run(
            run,
            [
                summary.added as i64,
                summary.updated as i64,
                summary.unchanged as i64,
                summary.removed as i64,
                summary.failed.len() as i64,
            ],
        )
        .await?;
    Ok(summary)
}
