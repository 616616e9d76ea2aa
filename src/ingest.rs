//! `kura ingest`: files and folders into a collection (incremental), and with
//! `--watch` again whenever they change.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;

use crate::load::{load_embedder, runtime};
use crate::term::{bar, print_json};
use kura::catalog::Catalog;
use kura::embed::Embedder;
use kura::index::SearchIndex;
use kura::ingest::chunk::ChunkParams;
use kura::ingest::pipeline::{ingest, IngestOptions, IngestProgress};
use kura::library::watch::FolderWatch;
use kura::paths::Paths;

/// `kura ingest`
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to ingest.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The collection to add them to (created if needed).
    #[arg(long, short)]
    pub collection: String,
    /// Largest file accepted, in megabytes.
    #[arg(long, default_value_t = 200)]
    pub max_file_mb: u64,
    /// Most passages one file may give; a file over it is reported and skipped.
    #[arg(long, default_value_t = kura::ingest::pipeline::DEFAULT_MAX_CHUNKS_PER_FILE)]
    pub max_chunks_per_file: usize,
    /// Chunk size in embedding-model tokens.
    #[arg(long, default_value_t = 256)]
    pub chunk_tokens: usize,
    /// Overlap between chunks, in tokens.
    #[arg(long, default_value_t = 32)]
    pub overlap_tokens: usize,
    /// Embedding model (default: the default embedding model).
    #[arg(long)]
    pub embedding_model: Option<String>,
    /// After ingesting, keep watching the paths and ingest again whenever a file is
    /// added, changed or deleted (until stopped with Ctrl-C; an interrupted pass
    /// resumes cleanly at the next start).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two looks at the watched paths.
    #[arg(long, default_value_t = 5, requires = "watch")]
    pub watch_interval: u64,
}

pub(super) fn ingest_cmd(args: IngestArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let embedder = load_embedder(paths, args.embedding_model.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let mut index = SearchIndex::open(&paths.index_dir())?;
        let mut opts = IngestOptions::default();
        opts.limits.max_file_bytes = args.max_file_mb * 1024 * 1024;
        opts.max_chunks_per_file = args.max_chunks_per_file;
        opts.chunking = ChunkParams { max_tokens: args.chunk_tokens, overlap_tokens: args.overlap_tokens };
        // What the administrator ingests here, a server may show pages of.
        let coll = catalog.collection(&args.collection).await?;
        for p in &args.paths {
            if let Ok(real) = p.canonicalize() {
                catalog.add_source_root(coll.id, &real.to_string_lossy()).await?;
            }
        }
        // What is there before the first pass: files changed during it are seen.
        let mut watch = FolderWatch::new(&args.paths, Duration::from_secs(args.watch_interval));
        let summary = ingest_pass(&args, &opts, &catalog, &mut index, &embedder, json_out).await?;
        // Exit non-zero only when nothing could be done: every file failed and the
        // collection holds no earlier indexed version of anything either.
        let indexed_docs = catalog.summaries().await?.iter().filter(|s| s.collection.name == args.collection).map(|s| s.documents).sum::<i64>();
        let nothing_done = summary.added + summary.updated + summary.unchanged + summary.removed == 0
            && !summary.failed.is_empty()
            && indexed_docs == 0;
        if !args.watch {
            return Ok(if nothing_done { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        eprintln!(
            "watching {} every {} s (Ctrl-C to stop) / {} 秒ごとに変更を確認しています（Ctrl-C で終了）",
            args.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            args.watch_interval,
            args.watch_interval
        );
        loop {
            watch.changed().await;
            if let Err(e) = ingest_pass(&args, &opts, &catalog, &mut index, &embedder, json_out).await {
                // A folder that disappeared for a moment (a share remounting) is
                // reported, and the watch goes on.
                eprintln!("ingest failed: {e:#}");
            }
        }
    })
}

/// One incremental ingest of `args.paths`, with its progress bar and summary.
async fn ingest_pass(
    args: &IngestArgs,
    opts: &IngestOptions,
    catalog: &Catalog,
    index: &mut SearchIndex,
    embedder: &Embedder,
    json_out: bool,
) -> Result<kura::ingest::pipeline::IngestSummary> {
    let pb = if json_out {
        ProgressBar::hidden()
    } else {
        bar(0, "ingest")
    };
    let pages = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let progress = |p: IngestProgress| match p {
        IngestProgress::Found(n) => pb.set_length(n as u64),
        IngestProgress::File {
            path,
            outcome,
            pages: n,
        } => {
            let total = pages.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
            pb.set_message(format!(
                "{rate:.1} pages/s  {outcome}: {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            pb.inc(1);
        }
        IngestProgress::Embedding { path, done, total } => pb.set_message(format!(
            "{}: {done}/{total} passages embedded",
            path.file_name().unwrap_or_default().to_string_lossy()
        )),
    };
    let summary = ingest(
        &args.paths,
        &args.collection,
        opts,
        catalog,
        index,
        embedder,
        &progress,
    )
    .await?;
    pb.finish_and_clear();
    if json_out {
        print_json(&json!({
            "added": summary.added, "updated": summary.updated, "unchanged": summary.unchanged,
            "removed": summary.removed, "failed": summary.failed, "skipped": summary.skipped,
            "problem_pages": summary.problem_pages,
            "pages": summary.pages, "chunks": summary.chunks, "seconds": summary.seconds,
        }));
    } else {
        println!(
            "collection '{}': {} added, {} updated, {} unchanged, {} removed, {} failed — {} pages, {} chunks in {:.1} s",
            args.collection, summary.added, summary.updated, summary.unchanged, summary.removed,
            summary.failed.len(), summary.pages, summary.chunks, summary.seconds
        );
        for f in &summary.failed {
            println!("  FAILED  {}: {}", f.path, f.reason);
        }
        if !summary.skipped.is_empty() {
            println!(
                "  {} file(s) of other types skipped (e.g. {}) / 対象外の形式のファイルを飛ばしました",
                summary.skipped.len(),
                summary.skipped[0]
            );
        }
        for p in &summary.problem_pages {
            println!(
                "  page {} of {} not indexed ({}): {}",
                p.page, p.path, p.quality, p.reason
            );
        }
    }
    Ok(summary)
}
