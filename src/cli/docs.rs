//! `kura ingest`, `kura search`, `kura status`, `kura check`, `kura eval retrieval`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::print_json;
use crate::catalog::Catalog;
use crate::embed::Embedder;
use crate::eval::retrieval::{self, KeyBy, Query};
use crate::index::{FusionMethod, FusionParams, SearchIndex, SearchMode};
use crate::ingest::chunk::ChunkParams;
use crate::ingest::pipeline::{ingest, IngestOptions, Progress};
use crate::models::{Registry, Role};
use crate::paths::Paths;

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
    #[arg(long, default_value_t = crate::ingest::pipeline::DEFAULT_MAX_CHUNKS_PER_FILE)]
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

/// `kura search`
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query.
    pub query: String,
    /// Collections to search (repeatable; default: all).
    #[arg(long, short)]
    pub collection: Vec<String>,
    /// Retriever.
    #[arg(long, value_enum, default_value_t = SearchMode::Hybrid)]
    pub mode: SearchMode,
    /// Number of results.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// How BM25 and vectors are fused: normalised scores, or reciprocal ranks.
    #[arg(long, value_enum, default_value_t = FusionParams::default().method)]
    pub fusion: FusionMethod,
    /// RRF constant k (with `--fusion rrf`).
    #[arg(long, default_value_t = FusionParams::default().k)]
    pub rrf_k: f32,
    /// Weight of BM25 in the fusion.
    #[arg(long, default_value_t = FusionParams::default().bm25_weight)]
    pub bm25_weight: f32,
    /// Weight of the vectors in the fusion.
    #[arg(long, default_value_t = FusionParams::default().vector_weight)]
    pub vector_weight: f32,
    /// Embedding model (must be the one the collection was indexed with).
    #[arg(long)]
    pub embedding_model: Option<String>,
}

/// `kura eval retrieval`
#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// SQuAD-format JSON (e.g. JSQuAD), or a Kura questions.jsonl with --corpus.
    #[arg(long)]
    pub dataset: PathBuf,
    /// For a questions.jsonl: the folder of documents the questions are about.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Score only this many questions (spread evenly over the set).
    #[arg(long)]
    pub max_questions: Option<usize>,
    /// Chunk size in tokens.
    #[arg(long, default_value_t = 256)]
    pub chunk_tokens: usize,
    /// How BM25 and vectors are fused: normalised scores, or reciprocal ranks.
    #[arg(long, value_enum, default_value_t = FusionParams::default().method)]
    pub fusion: FusionMethod,
    /// RRF constant k (with `--fusion rrf`).
    #[arg(long, default_value_t = FusionParams::default().k)]
    pub rrf_k: f32,
    /// Weight of BM25 in the fusion.
    #[arg(long, default_value_t = FusionParams::default().bm25_weight)]
    pub bm25_weight: f32,
    /// Weight of the vectors in the fusion.
    #[arg(long, default_value_t = FusionParams::default().vector_weight)]
    pub vector_weight: f32,
    /// Keep the evaluation index here (default: a temporary folder). A SQuAD corpus
    /// already indexed there is reused, not embedded again.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Instead of one fusion setting, score a grid of RRF k × vector weight ×
    /// candidates from one search per query (for tuning on `valid`).
    #[arg(long)]
    pub sweep: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(super) fn load_embedder(paths: &Paths, name: Option<&str>) -> Result<Embedder> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(name, Role::Embedding)?;
    let device = candle_core::Device::Cpu;
    let path = if model.entry.format == "safetensors" {
        model
            .primary()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    } else {
        model.primary().to_path_buf()
    };
    Embedder::load(&path, &device)
        .with_context(|| format!("loading the embedding model {}", model.entry.name))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
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
        let mut seen = watch_fingerprint(&args.paths);
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
        // Polling, not file-system events: it works the same on network shares, and
        // a look at a folder of manuals is a few stat calls. The incremental ingest
        // decides what changed; the fingerprint only says whether to run it.
        eprintln!(
            "watching {} every {} s (Ctrl-C to stop) / {} 秒ごとに変更を確認しています（Ctrl-C で終了）",
            args.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            args.watch_interval,
            args.watch_interval
        );
        loop {
            tokio::time::sleep(Duration::from_secs(args.watch_interval.max(1))).await;
            let now = watch_fingerprint(&args.paths);
            if now == seen {
                continue;
            }
            seen = now;
            if let Err(e) = ingest_pass(&args, &opts, &catalog, &mut index, &embedder, json_out).await {
                // A folder that disappeared for a moment (a share remounting) is
                // reported, and the watch goes on.
                eprintln!("ingest failed: {e:#}");
            }
        }
    })
}

/// What a watch compares between two looks: every file's path, size and
/// modification time (or the error that stopped the walk).
fn watch_fingerprint(
    paths: &[PathBuf],
) -> Result<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>, String> {
    let walked = crate::ingest::pipeline::walk(paths, None).map_err(|e| e.to_string())?;
    Ok(walked
        .files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta.and_then(|m| m.modified().ok());
            (f, size, mtime)
        })
        .collect())
}

/// One incremental ingest of `args.paths`, with its progress bar and summary.
async fn ingest_pass(
    args: &IngestArgs,
    opts: &IngestOptions,
    catalog: &Catalog,
    index: &mut SearchIndex,
    embedder: &Embedder,
    json_out: bool,
) -> Result<crate::ingest::pipeline::IngestSummary> {
    let pb = if json_out {
        ProgressBar::hidden()
    } else {
        bar(0, "ingest")
    };
    let pages = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let progress = |p: Progress| match p {
        Progress::Found(n) => pb.set_length(n as u64),
        Progress::File {
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
        Progress::Embedding { path, done, total } => pb.set_message(format!(
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

pub(super) fn search_cmd(args: SearchArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    let query = crate::ingest::normalize::normalize_text(&args.query);
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let collections = if args.collection.is_empty() {
            catalog
                .summaries()
                .await?
                .into_iter()
                .map(|s| s.collection)
                .collect()
        } else {
            catalog.collections_named(&args.collection).await?
        };
        if collections.is_empty() {
            bail!("nothing is indexed yet: run `kura ingest PATH --collection NAME` first");
        }
        let mut index = SearchIndex::open(&paths.index_dir())?;
        index.sync(&catalog).await?;
        let embedder = if args.mode == SearchMode::Bm25 {
            None
        } else {
            Some(load_embedder(paths, args.embedding_model.as_deref())?)
        };
        let fusion = FusionParams {
            method: args.fusion,
            k: args.rrf_k,
            bm25_weight: args.bm25_weight,
            vector_weight: args.vector_weight,
            ..Default::default()
        };
        let ids: Vec<i64> = collections.iter().map(|c| c.id).collect();
        let embed = || match &embedder {
            Some(e) => e
                .embed_queries(&[query.as_str()])
                .map(|mut v| v.remove(0))
                .map_err(|e| e.to_string()),
            None => Err("no embedding model loaded".to_string()),
        };
        let found = index.search_query(args.mode, &query, embed, &ids, args.top_k, &fusion)?;
        tracing::debug!(timings = ?found.timings, "searched");
        let hits = found.hits;
        let chunks = catalog
            .chunks(&hits.iter().map(|h| h.0).collect::<Vec<_>>())
            .await?;
        let rows: Vec<_> = hits
            .iter()
            .filter_map(|(id, score)| chunks.iter().find(|c| c.id == *id).map(|c| (c, *score)))
            .collect();
        if json_out {
            print_json(&json!(rows
                .iter()
                .map(|(c, s)| json!({
                    "doc": c.path, "page": c.page, "chunk_id": c.id, "score": s, "text": c.text,
                    "char_start": c.char_start, "char_end": c.char_end,
                }))
                .collect::<Vec<_>>()));
        } else if rows.is_empty() {
            println!("no results / 該当なし");
        } else {
            for (i, (c, s)) in rows.iter().enumerate() {
                let snippet: String = c
                    .text
                    .chars()
                    .take(120)
                    .collect::<String>()
                    .replace('\n', " ");
                println!(
                    "{}. {} p.{}  (score {:.4}, chunk {})\n   {}",
                    i + 1,
                    c.path,
                    c.page,
                    s,
                    c.id,
                    snippet
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn status_cmd(paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let mut out = Vec::new();
        for s in catalog.summaries().await? {
            let mut problems = Vec::new();
            let mut failed = Vec::new();
            for d in catalog.documents(s.collection.id).await? {
                if let Some(e) = &d.error {
                    failed.push(json!({"path": d.path, "reason": e, "status": d.status}));
                }
                for p in catalog.problem_pages(d.id).await? {
                    problems.push(json!({"path": d.path, "page": p.number, "quality": p.quality, "reason": p.reason}));
                }
            }
            out.push(json!({
                "collection": s.collection.name, "documents": s.documents, "failed_documents": s.failed,
                "chunks": s.chunks, "failed": failed, "problem_pages": problems,
            }));
        }
        if json_out {
            print_json(&json!(out));
        } else if out.is_empty() {
            println!("no collections yet: run `kura ingest PATH --collection NAME`");
        } else {
            for c in &out {
                println!("{}: {} documents, {} chunks, {} failed", c["collection"].as_str().unwrap_or(""), c["documents"], c["chunks"], c["failed_documents"]);
                for f in c["failed"].as_array().into_iter().flatten() {
                    println!("  FAILED {}: {}", f["path"].as_str().unwrap_or(""), f["reason"].as_str().unwrap_or(""));
                }
                for p in c["problem_pages"].as_array().into_iter().flatten() {
                    println!("  page {} of {} ({}): {}", p["page"], p["path"].as_str().unwrap_or(""), p["quality"].as_str().unwrap_or(""), p["reason"].as_str().unwrap_or(""));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn check_cmd(paths: &Paths, json_out: bool, repair: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let mut index = SearchIndex::open(&paths.index_dir())?;
        let mut report = index.check(&catalog).await?;
        let mut repaired = false;
        if !report.consistent && repair {
            index.sync(&catalog).await?;
            report = index.check(&catalog).await?;
            repaired = true;
        }
        if json_out {
            print_json(&json!({"report": report, "repaired": repaired}));
        } else {
            println!(
                "catalog {} chunks, BM25 {}, vectors {}: {}",
                report.catalog_chunks,
                report.bm25_chunks,
                report.vector_chunks,
                if report.consistent {
                    "consistent"
                } else {
                    "NOT consistent (run `kura check --repair`, or any ingest/search, to catch up)"
                }
            );
        }
        Ok(if report.consistent {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// One line of `assets/questions.jsonl`.
#[derive(serde::Deserialize)]
struct QuestionLine {
    question: String,
    doc: Option<String>,
    page: Option<i64>,
    #[serde(default = "yes")]
    answerable: bool,
}

fn yes() -> bool {
    true
}

pub(super) fn eval_retrieval_cmd(
    args: EvalRetrievalArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let embedder = load_embedder(paths, None)?;
    let tmp = tempfile_dir(args.work_dir.clone())?;
    let work = Paths {
        data_dir: tmp.clone(),
        models_dir: paths.models_dir.clone(),
    };
    let chunking = ChunkParams {
        max_tokens: args.chunk_tokens,
        overlap_tokens: 32,
    };
    let fusion = FusionParams {
        method: args.fusion,
        k: args.rrf_k,
        bm25_weight: args.bm25_weight,
        vector_weight: args.vector_weight,
        ..Default::default()
    };
    let rt = runtime()?;
    let scores = rt.block_on(async {
        let catalog = Catalog::open(&work.catalog_db()).await?;
        let mut index = SearchIndex::open(&work.index_dir())?;
        let (queries, coll_id, key_by) = if let Some(corpus) = &args.corpus {
            let text = std::fs::read_to_string(&args.dataset)
                .with_context(|| format!("reading {}", args.dataset.display()))?;
            let mut queries = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let q: QuestionLine = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", args.dataset.display(), i + 1))?;
                if let (true, Some(doc), Some(page)) = (q.answerable, q.doc, q.page) {
                    queries.push(Query {
                        question: crate::ingest::normalize::normalize_text(&q.question),
                        relevant: format!("{doc}#{page}"),
                    });
                }
            }
            let pb = if json_out {
                ProgressBar::hidden()
            } else {
                bar(0, "index corpus")
            };
            let id =
                index_eval_folder(corpus, chunking, &catalog, &mut index, &embedder, &pb).await?;
            (queries, id, KeyBy::Page)
        } else {
            let (docs, queries) = retrieval::load_squad(&args.dataset, args.max_questions)?;
            let reusable = catalog
                .summaries()
                .await?
                .into_iter()
                .find(|c| c.collection.name == "eval" && c.documents == docs.len() as i64);
            let id = if let Some(done) = reusable {
                if !json_out {
                    eprintln!(
                        "reusing the {} passages already indexed in {}",
                        done.documents,
                        tmp.display()
                    );
                }
                done.collection.id
            } else {
                let pb = if json_out {
                    ProgressBar::hidden()
                } else {
                    bar(docs.len() as u64, "index passages")
                };
                let id = retrieval::index_corpus(
                    &docs,
                    "eval",
                    &catalog,
                    &mut index,
                    &embedder,
                    &chunking,
                    &|n| pb.set_position(n as u64),
                )
                .await?;
                pb.finish_and_clear();
                id
            };
            (queries, id, KeyBy::Document)
        };
        let pb = if json_out {
            ProgressBar::hidden()
        } else {
            bar(queries.len() as u64, "questions")
        };
        if args.sweep {
            let lists = retrieval::candidate_lists(
                &queries,
                coll_id,
                key_by,
                &catalog,
                &index,
                &embedder,
                100,
                &|n| pb.set_position(n as u64),
            )
            .await?;
            pb.finish_and_clear();
            return anyhow::Ok(Err(lists));
        }
        let s = retrieval::evaluate(
            &queries,
            coll_id,
            key_by,
            &catalog,
            &index,
            &embedder,
            &fusion,
            &|n| pb.set_position(n as u64),
        )
        .await?;
        pb.finish_and_clear();
        anyhow::Ok(Ok(s))
    })?;
    let scores = match scores {
        Ok(s) => s,
        Err(lists) => {
            if args.work_dir.is_none() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            print_sweep(&args, &lists, json_out);
            return Ok(ExitCode::SUCCESS);
        }
    };
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if json_out {
        print_json(&json!({"dataset": args.dataset, "scores": scores}));
    } else {
        println!("{}", args.dataset.display());
        println!("| retriever | questions | R@1 | R@5 | R@10 | MRR@10 | nDCG@10 | p50 ms |");
        println!("|---|---|---|---|---|---|---|---|");
        for s in &scores {
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
                s.mode,
                s.questions,
                s.recall_at_1,
                s.recall_at_5,
                s.recall_at_10,
                s.mrr_at_10,
                s.ndcg_at_10,
                s.p50_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ingests the documents under `corpus` into the collection `eval` of an evaluation
/// catalog (for `kura eval retrieval` and `kura eval rag` on a question list), showing
/// progress on `pb`; returns the collection's id.
pub(super) async fn index_eval_folder(
    corpus: &std::path::Path,
    chunking: ChunkParams,
    catalog: &Catalog,
    index: &mut SearchIndex,
    embedder: &Embedder,
    pb: &ProgressBar,
) -> Result<i64> {
    let progress = |p: Progress| match p {
        Progress::Found(n) => pb.set_length(n as u64),
        Progress::File { .. } => pb.inc(1),
        Progress::Embedding { .. } => {}
    };
    let opts = IngestOptions {
        chunking,
        ..Default::default()
    };
    ingest(
        &[corpus.to_path_buf()],
        "eval",
        &opts,
        catalog,
        index,
        embedder,
        &progress,
    )
    .await?;
    pb.finish_and_clear();
    Ok(catalog.collection("eval").await?.id)
}

/// Prints the fusion grid: BM25, vectors, the current defaults and the best settings.
fn print_sweep(args: &EvalRetrievalArgs, lists: &retrieval::CandidateLists, json_out: bool) {
    let ks = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 100.0];
    let weights = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25];
    let shares = [0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6];
    let candidates = [10, 20, 50, 100];
    let (bm25, vector, points) =
        retrieval::sweep_fusion(lists, &ks, &weights, &shares, &candidates);
    let d = FusionParams::default();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
    let current = points.iter().find(|p| {
        let f = &p.fusion;
        f.method == d.method
            && f.candidates == d.candidates
            && match d.method {
                FusionMethod::Rrf => {
                    f.k == d.k && close(f.vector_weight, d.vector_weight / d.bm25_weight)
                }
                FusionMethod::Scores => {
                    close(f.vector_weight, d.vector_weight) && close(f.bm25_weight, d.bm25_weight)
                }
            }
    });
    if json_out {
        print_json(&json!({
            "dataset": args.dataset,
            "bm25": bm25,
            "vector": vector,
            "defaults": current,
            "best": points.iter().take(20).collect::<Vec<_>>(),
        }));
        return;
    }
    println!(
        "{} — fusion sweep over {} settings",
        args.dataset.display(),
        points.len()
    );
    println!("| retriever | fusion | vector weight | candidates | R@1 | R@5 | MRR@10 | nDCG@10 |");
    println!("|---|---|---|---|---|---|---|---|");
    let row = |name: &str, f: Option<&FusionParams>, s: &retrieval::RetrievalScores| {
        let (k, w, n) = f.map_or(("-".into(), "-".into(), "-".into()), |f| {
            (
                match f.method {
                    FusionMethod::Rrf => format!("RRF k = {}", f.k),
                    FusionMethod::Scores => "scores".to_string(),
                },
                format!("{}", f.vector_weight),
                f.candidates.to_string(),
            )
        });
        println!(
            "| {name} | {k} | {w} | {n} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.recall_at_1, s.recall_at_5, s.mrr_at_10, s.ndcg_at_10
        );
    };
    row("bm25", None, &bm25);
    row("vector", None, &vector);
    if let Some(c) = current {
        row("hybrid (defaults)", Some(&c.fusion), &c.scores);
    }
    for p in points.iter().take(15) {
        row("hybrid", Some(&p.fusion), &p.scores);
    }
}

fn tempfile_dir(chosen: Option<PathBuf>) -> Result<PathBuf> {
    let dir = chosen
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kura-eval-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `kura bench index`
#[derive(Debug, Args)]
pub struct BenchIndexArgs {
    /// Corpus sizes in chunks (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub sizes: Vec<usize>,
    /// Queries measured at each size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Where to build the indexes (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

pub(super) fn bench_index_cmd(
    args: BenchIndexArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let embedder = load_embedder(paths, None)?;
    let keep = args.work_dir.is_some();
    let dir = tempfile_dir(args.work_dir)?;
    let mut points = Vec::new();
    for n in args.sizes {
        if !json_out {
            eprintln!("building {n} synthetic chunks …");
        }
        let p = crate::bench::index::scale_point(
            &dir.join(n.to_string()),
            n,
            args.queries,
            &embedder,
            &|m| {
                if !json_out {
                    eprintln!("  {m}")
                }
            },
        )?;
        if !keep {
            let _ = std::fs::remove_dir_all(dir.join(n.to_string()));
        }
        if !json_out {
            println!(
                "{:>9} chunks: hybrid p50 {:.1} ms, p95 {:.1} ms (medians: query embedding {:.1} ms, BM25 {:.1} ms, vectors {:.1} ms); query postings {:.2} per chunk; build BM25 {:.0} s, vectors {:.0} s; disk BM25 {:.0} MB, vectors {:.0} MB",
                p.chunks, p.p50_ms, p.p95_ms, p.embed_p50_ms, p.bm25_p50_ms, p.vector_p50_ms, p.query_postings_per_chunk, p.bm25_build_s, p.vector_build_s, p.bm25_mb, p.vector_mb
            );
        }
        points.push(p);
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if json_out {
        print_json(
            &json!({"threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), "points": points}),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura bench embed`
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Passages per repeat.
    #[arg(long, default_value_t = 64)]
    pub passages: usize,
    /// Tokens per passage (prefix and special tokens included).
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Timed repeats (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Embedding model (default: the default embedding model).
    #[arg(long)]
    pub embedding_model: Option<String>,
}

pub(super) fn bench_embed_cmd(
    args: BenchEmbedArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(args.embedding_model.as_deref(), Role::Embedding)?;
    if model.entry.format != "e5s1" {
        bail!(
            "the PyTorch reference reads E5S1 containers only; {} is {}",
            model.entry.name,
            model.entry.format
        );
    }
    let embedder = load_embedder(paths, args.embedding_model.as_deref())?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let r = crate::bench::embed::run(
        &embedder,
        model.primary(),
        &repo,
        args.passages,
        args.tokens,
        args.repeats,
    )?;
    if json_out {
        print_json(&serde_json::to_value(&r)?);
    } else {
        println!(
            "{} passages x {} tokens, {} threads: Kura {:.1} chunks/s ({:.0} tokens/s)",
            r.passages,
            r.tokens_per_passage,
            r.threads,
            r.kura_chunks_per_s,
            r.kura_chunks_per_s * r.tokens_per_passage as f64
        );
        match (r.torch_chunks_per_s, r.ratio, r.agreement_cosine) {
            (Some(t), Some(ratio), Some(cos)) => println!(
                "{}: {t:.1} chunks/s — ratio Kura/PyTorch {ratio:.2}x (first embeddings agree: cosine {cos:.5})",
                r.reference
            ),
            _ => println!("reference {}", r.reference),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura bench ingest`
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Files or folders (default: the sample manuals and the real PDFs under tests/data/ingest).
    pub paths: Vec<PathBuf>,
    /// Times each file is processed (the best is kept).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

pub(super) fn bench_ingest_cmd(
    args: BenchIngestArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let roots = if args.paths.is_empty() {
        vec![repo.join("assets/manuals"), repo.join("tests/data/ingest")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        if root.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(root)
                .with_context(|| format!("reading {}", root.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            // The default set keeps only the good PDFs of the test data (the rest are bad on purpose).
            if args.paths.is_empty() && root.ends_with("tests/data/ingest") {
                found.retain(|p| {
                    p.extension().is_some_and(|e| e == "pdf")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("bad-"))
                });
            }
            files.extend(found);
        } else {
            files.push(root.clone());
        }
    }
    let embedder = load_embedder(paths, None)?;
    let work = tempfile_dir(None)?;
    let r = crate::bench::ingest::run(&files, &embedder, &work, args.repeats)?;
    let _ = std::fs::remove_dir_all(&work);
    if json_out {
        print_json(&serde_json::to_value(&r)?);
    } else {
        println!("| file | extractor | pages | chunks | extract ms | chunk ms | BM25 ms |");
        println!("|---|---|---|---|---|---|---|");
        for f in &r.files {
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                f.path.file_name().unwrap_or_default().to_string_lossy(),
                f.extractor,
                f.pages,
                f.chunks,
                f.extract_s * 1e3,
                f.chunk_s * 1e3,
                f.bm25_s * 1e3
            );
        }
        for (p, why) in &r.failed {
            println!("FAILED {}: {why}", p.display());
        }
        println!(
            "one core: PDF {:.1} pages/s, all formats {:.1} pages/s, chunking+BM25 {:.0} chunks/s; embedding {:.1} chunks/s ({} threads); BM25 on disk {:.2} MB",
            r.pdf_pages_per_s,
            r.pages_per_s,
            r.chunks_per_s,
            r.embed_chunks_per_s,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            r.bm25_bytes as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
