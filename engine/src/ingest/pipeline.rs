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
use super::roots::SourceRoots;
use crate::catalog::{Catalog, CatalogError, NewChunk, NewDocument, PageRecord};
use crate::embed::Embedder;
use crate::index::{IndexError, SearchIndex};
use crate::models::sha256_file;

/// Extensions looked at when walking a folder (a file named explicitly is always tried).
pub const KNOWN_EXTENSIONS: &[&str] = &[
    "pdf", "docx", "xlsx", "pptx", "html", "htm", "md", "markdown", "txt", "text", "csv",
];

/// The default of [`IngestOptions::max_chunks_per_file`]: about 1,600 pages of
/// dense text at the default chunk size, above any manual, and about 8 minutes of
/// embedding on two CPU cores. A 200,000-row sheet (≈ 13,000 chunks) is over it.
pub const DEFAULT_MAX_CHUNKS_PER_FILE: usize = 5_000;

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
    /// The disk that holds the data folder is full. What was committed stays; the
    /// document being written when it filled is written again on the next run.
    #[error(
        "the disk is full: the file system holding {data_dir} has {free} free; {needed}. Free \
         space there (or move the data folder with --data-dir / KURA_HOME) and run the ingest \
         again: nothing indexed so far is lost / ディスクの空き容量が不足しています。空きを作ってから再実行してください(登録済みの文書は失われません)"
    )]
    DiskFull {
        /// The data folder (catalog and indexes).
        data_dir: PathBuf,
        /// Free space there, for a person ("12 MB").
        free: String,
        /// What the rest of the run needs, for a person.
        needed: String,
    },
}

impl IngestError {
    /// Whether the catalog or an index stopped on a full disk.
    pub fn is_disk_full(&self) -> bool {
        let io_full = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOSPC);
        match self {
            IngestError::Catalog(e) | IngestError::Index(IndexError::Catalog(e)) => {
                e.is_disk_full()
            }
            IngestError::Index(IndexError::Io { source, .. }) => io_full(source),
            IngestError::Index(IndexError::Bm25(m) | IndexError::Vector(m)) => {
                m.contains("No space left on device")
            }
            IngestError::DiskFull { .. } => true,
            _ => false,
        }
    }
}

/// Free bytes on the file system holding `dir` (`None` if it cannot be asked).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills in.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A size for a person: "850 KB", "12 MB", "69.0 GB".
fn megabytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else {
        format!("{:.0} KB", (n / 1e3).ceil())
    }
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
    /// The most chunks one file may give; a file over it is reported and skipped
    /// (a 200,000-row sheet would otherwise embed for half an hour).
    pub max_chunks_per_file: usize,
    /// `Some`: read only inside these folders, links out of them not followed (a
    /// server's ingest). `None`: the paths the administrator gave at the shell.
    pub roots: Option<SourceRoots>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            limits: Limits::default(),
            chunking: ChunkParams::default(),
            embed_batch: 16,
            max_chunks_per_file: DEFAULT_MAX_CHUNKS_PER_FILE,
            roots: None,
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
    /// Files that could not be read (and folders that could not be walked).
    pub failed: Vec<Failure>,
    /// Files in the walked folders that are not a document type Kura reads.
    pub skipped: Vec<String>,
    /// Pages skipped for quality.
    pub problem_pages: Vec<ProblemPage>,
    /// Pages extracted.
    pub pages: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Wall time.
    pub seconds: f64,
}

/// What an ingest reports as it goes, for a terminal bar or the UI.
#[derive(Debug, Clone)]
pub enum IngestProgress<'a> {
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
    /// Passages of the file being read embedded so far (at most twice a second, and
    /// when all are), so a big file shows progress too.
    Embedding {
        /// The file.
        path: &'a Path,
        /// Passages embedded.
        done: usize,
        /// Passages in the file.
        total: usize,
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

/// What a walk found: the files to try, and what it could not or would not enter.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Candidate files, symlinks resolved, sorted, each once.
    pub files: Vec<PathBuf>,
    /// Folders that could not be read, folder loops (each reported once, by the path
    /// that leads back), links out of the source roots.
    pub problems: Vec<Failure>,
    /// Files inside the walked folders that are not a document type Kura reads.
    pub skipped: Vec<PathBuf>,
}

/// Lists the files under the given paths: folders recursively, hidden entries
/// skipped, symlinks followed. A folder is entered once however many links lead to
/// it (by device and inode), so a link such as `up -> ..` is reported as a loop
/// instead of indexing the same files again and again. With `roots`, a link that
/// leads out of them is reported and not followed.
pub fn walk(paths: &[PathBuf], roots: Option<&SourceRoots>) -> Result<Walk, IngestError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Walk::default();
    let mut entered: HashSet<(u64, u64)> = HashSet::new();
    let outside = |p: &Path| roots.is_some_and(|r| !r.contains_real(p));
    for p in paths {
        if !p.exists() {
            return Err(IngestError::NoSuchPath(p.clone()));
        }
        let p = p.canonicalize().unwrap_or_else(|_| p.clone());
        if outside(&p) {
            out.problems.push(Failure {
                path: p.to_string_lossy().into_owned(),
                reason: "outside the source roots of this server / ソースルートの外です".into(),
            });
            continue;
        }
        if p.is_file() {
            out.files.push(p);
            continue;
        }
        let mut stack = vec![p];
        while let Some(dir) = stack.pop() {
            let meta = match std::fs::metadata(&dir) {
                Ok(m) => m,
                Err(e) => {
                    out.problems.push(Failure {
                        path: dir.to_string_lossy().into_owned(),
                        reason: format!("cannot read this folder: {e} / フォルダを読めません"),
                    });
                    continue;
                }
            };
            if !entered.insert((meta.dev(), meta.ino())) {
                let target = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                out.problems.push(Failure {
                    path: dir.to_string_lossy().into_owned(),
                    reason: format!(
                        "folder loop: this link leads back to {}, which is already walked; \
                         skipped / フォルダのループ(既に読んだフォルダへのリンク)のため飛ばしました",
                        target.display()
                    ),
                });
                continue;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    out.problems.push(Failure {
                        path: dir.to_string_lossy().into_owned(),
                        reason: format!("cannot read this folder: {e} / フォルダを読めません"),
                    });
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if hidden {
                    continue;
                }
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                if is_link {
                    match path.canonicalize() {
                        Ok(real) if outside(&real) => {
                            out.problems.push(Failure {
                                path: path.to_string_lossy().into_owned(),
                                reason: format!(
                                    "a link to {}, outside the source roots; not followed / \
                                     ソースルート外へのリンクのため読みません",
                                    real.display()
                                ),
                            });
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            out.problems.push(Failure {
                                path: path.to_string_lossy().into_owned(),
                                reason: format!("a broken link ({e}) / リンク先がありません"),
                            });
                            continue;
                        }
                    }
                }
                if path.is_dir() {
                    stack.push(path);
                } else if path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| KNOWN_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                {
                    // A file reached through links is indexed under its real path, once.
                    out.files.push(path.canonicalize().unwrap_or(path));
                } else {
                    out.skipped.push(path);
                }
            }
        }
    }
    out.files.sort();
    out.files.dedup();
    out.skipped.sort();
    out.skipped.dedup();
    Ok(out)
}

fn mtime_of(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A file that was read but could not be indexed: recorded in the catalog (an earlier
/// indexed version stays searchable), listed in the summary, reported as progress.
struct FailedFile<'a> {
    coll: i64,
    path: &'a Path,
    hash: &'a str,
    size: i64,
    mtime: i64,
}

impl FailedFile<'_> {
    async fn record(
        &self,
        reason: String,
        catalog: &Catalog,
        summary: &mut IngestSummary,
        progress: &dyn Fn(IngestProgress),
    ) -> Result<(), IngestError> {
        let path = self.path.to_string_lossy().into_owned();
        catalog
            .record_failure(self.coll, &path, self.hash, self.size, self.mtime, &reason)
            .await?;
        summary.failed.push(Failure { path, reason });
        progress(IngestProgress::File {
            path: self.path,
            outcome: "failed",
            pages: 0,
        });
        Ok(())
    }
}

/// Text that is embedded for a chunk: the heading gives a passage its context.
fn passage_text(heading: Option<&str>, text: &str) -> String {
    match heading {
        Some(h) if !text.starts_with(h) => format!("{h}\n{text}"),
        _ => text.to_owned(),
    }
}

/// Runs one ingest of `paths` into `collection`. A full disk stops it with
/// [`IngestError::DiskFull`], which says where and how much the rest needs.
pub async fn ingest(
    paths: &[PathBuf],
    collection: &str,
    opts: &IngestOptions,
    catalog: &Catalog,
    index: &mut impl IndexSync,
    embedder: &Embedder,
    progress: &dyn Fn(IngestProgress),
) -> Result<IngestSummary, IngestError> {
    let left = std::sync::atomic::AtomicU64::new(0);
    let result = ingest_run(
        paths, collection, opts, catalog, index, embedder, progress, &left,
    )
    .await;
    match result {
        Err(e) if e.is_disk_full() && !matches!(e, IngestError::DiskFull { .. }) => {
            let data_dir = catalog
                .path()
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let free = free_bytes(&data_dir).map_or_else(|| "little or no space".into(), megabytes);
            // Catalog rows, both indexes and their merges: about 3× the text of the
            // files still to read, which is at most their size; 200 MB at the least.
            let needed = format!(
                "the files still to index ({}) need about {} more",
                megabytes(left.load(std::sync::atomic::Ordering::Relaxed)),
                megabytes((left.load(std::sync::atomic::Ordering::Relaxed) * 3).max(200_000_000))
            );
            Err(IngestError::DiskFull {
                data_dir,
                free,
                needed,
            })
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn ingest_run(
    paths: &[PathBuf],
    collection: &str,
    opts: &IngestOptions,
    catalog: &Catalog,
    index: &mut impl IndexSync,
    embedder: &Embedder,
    progress: &dyn Fn(IngestProgress),
    bytes_left: &std::sync::atomic::AtomicU64,
) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let mut summary = IngestSummary::default();
    // Catch up with anything a killed run left in the catalog but not the indexes.
    index.sync_from(catalog).await?;
    let coll = catalog.collection(collection).await?;
    let run = catalog.start_run(coll.id).await?;
    let walked = walk(paths, opts.roots.as_ref())?;
    let files = walked.files;
    summary.failed.extend(walked.problems);
    summary.skipped = walked
        .skipped
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    progress(IngestProgress::Found(files.len()));
    let known = catalog.documents(coll.id).await?;
    let seen: HashSet<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut last_sync = Instant::now();

    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .collect();
    for (i, path) in files.iter().enumerate() {
        bytes_left.store(
            sizes[i..].iter().sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
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
                progress(IngestProgress::File {
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
                progress(IngestProgress::File {
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
                let file = FailedFile {
                    coll: coll.id,
                    path,
                    hash: &hash,
                    size,
                    mtime,
                };
                file.record(e.to_string(), catalog, &mut summary, progress)
                    .await?;
                continue;
            }
        };

        let mut pages = Vec::with_capacity(doc.pages.len());
        let mut chunks = Vec::new();
        let max_chunks = opts.max_chunks_per_file.max(1);
        for page in &doc.pages {
            if chunks.len() > max_chunks {
                break;
            }
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
        if chunks.len() > max_chunks {
            let reason = format!(
                "too big to index: more than {max_chunks} passages (raise --max-chunks-per-file \
                 to index it, or split the file) / 大きすぎるため取り込みません(パッセージ数が上限 {max_chunks} を超えています)"
            );
            let file = FailedFile {
                coll: coll.id,
                path,
                hash: &hash,
                size,
                mtime,
            };
            file.record(reason, catalog, &mut summary, progress).await?;
            continue;
        }
        let total = chunks.len();
        let mut embedded = 0;
        let mut last_report = Instant::now();
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
            embedded += batch.len();
            if last_report.elapsed().as_millis() >= 500 || embedded == total {
                progress(IngestProgress::Embedding {
                    path,
                    done: embedded,
                    total,
                });
                last_report = Instant::now();
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
        progress(IngestProgress::File {
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
