//! `kura bench ingest`: how fast documents become searchable, stage by stage.
//!
//! Extraction, normalization, chunking and BM25 indexing run on one thread in the
//! ingest pipeline, so their rate is reported per core (pages/s); embedding is
//! measured separately (chunks/s, all cores) because it dominates on a CPU and has its
//! own side-by-side benchmark against PyTorch (`kura bench embed`). Each file is
//! processed `repeats` times and the best time kept, so the figure is the engine's
//! speed rather than the page cache's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::embed::{EmbedError, Embedder};
use crate::index::bm25::Bm25Index;
use crate::index::IndexError;
use crate::ingest::chunk::{chunk_page, ChunkParams};
use crate::ingest::{extract, Limits};

/// Figures for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// The file.
    pub path: PathBuf,
    /// Its extractor.
    pub extractor: String,
    /// Pages extracted.
    pub pages: usize,
    /// Chunks made.
    pub chunks: usize,
    /// Seconds for extraction + normalization (best of the repeats).
    pub extract_s: f64,
    /// Seconds for chunking.
    pub chunk_s: f64,
    /// Seconds for BM25 indexing (analysis + commit).
    pub bm25_s: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    /// Per file.
    pub files: Vec<FileFigures>,
    /// Files that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// PDF pages per second per core, extraction + chunking + BM25.
    pub pdf_pages_per_s: f64,
    /// All pages per second per core, extraction + chunking + BM25.
    pub pages_per_s: f64,
    /// Chunks per second through chunking + BM25.
    pub chunks_per_s: f64,
    /// Chunks embedded per second (all cores).
    pub embed_chunks_per_s: f64,
    /// BM25 index size on disk for one copy of the chunks, bytes.
    pub bm25_bytes: u64,
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Index failure.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Embedding failure.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the stages over `files`, building a throw-away BM25 index in `work`.
pub fn run(
    files: &[PathBuf],
    embedder: &Embedder,
    work: &Path,
    repeats: usize,
) -> Result<IngestBench, BenchError> {
    let params = ChunkParams::default();
    let count = |t: &str| embedder.count_tokens(t);
    let mut bm25 = Bm25Index::open(&work.join("bm25"), None)?;
    let mut figures = Vec::new();
    let mut failed = Vec::new();
    let mut all_chunks: Vec<String> = Vec::new();
    let mut next_id = 0i64;
    for path in files {
        let mut best: Option<FileFigures> = None;
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            let doc = match extract(path, &Limits::default()) {
                Ok(d) => d,
                Err(e) => {
                    failed.push((path.clone(), e.to_string()));
                    break;
                }
            };
            let extract_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let chunks: Vec<String> = doc
                .pages
                .iter()
                .flat_map(|p| chunk_page(&p.text, &params, &count))
                .map(|c| c.text)
                .collect();
            let chunk_s = t.elapsed().as_secs_f64();
            // Analysis and indexing; the commit (an fsync) is amortised over a whole
            // ingest run in the pipeline, so it is measured once at the end below.
            let t = Instant::now();
            for c in &chunks {
                next_id += 1;
                bm25.add(next_id, 1, c)?;
            }
            let bm25_s = t.elapsed().as_secs_f64();
            let f = FileFigures {
                path: path.clone(),
                extractor: doc.extractor.to_string(),
                pages: doc.pages.len(),
                chunks: chunks.len(),
                extract_s,
                chunk_s,
                bm25_s,
            };
            let total = |f: &FileFigures| f.extract_s + f.chunk_s + f.bm25_s;
            if best.as_ref().is_none_or(|b| total(&f) < total(b)) {
                best = Some(f);
            }
            if all_chunks.len() < 256 {
                all_chunks.extend(chunks);
            }
        }
        figures.extend(best);
    }
    let t = Instant::now();
    bm25.commit(next_id)?;
    let commit_s = t.elapsed().as_secs_f64();
    let rate = |pred: &dyn Fn(&FileFigures) -> bool| {
        let sel: Vec<&FileFigures> = figures.iter().filter(|f| pred(f)).collect();
        let pages: usize = sel.iter().map(|f| f.pages).sum();
        // The one commit is shared in proportion to the chunks.
        let chunks: usize = sel.iter().map(|f| f.chunks).sum();
        let all: usize = figures.iter().map(|f| f.chunks).sum::<usize>().max(1);
        let secs: f64 = sel
            .iter()
            .map(|f| f.extract_s + f.chunk_s + f.bm25_s)
            .sum::<f64>()
            + commit_s * chunks as f64 / all as f64;
        if secs > 0.0 {
            pages as f64 / secs
        } else {
            0.0
        }
    };
    let is_pdf = |f: &FileFigures| {
        f.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pdf"))
    };
    let chunks: usize = figures.iter().map(|f| f.chunks).sum();
    let chunk_secs: f64 = figures.iter().map(|f| f.chunk_s + f.bm25_s).sum::<f64>() + commit_s;

    all_chunks.truncate(128);
    let refs: Vec<&str> = all_chunks.iter().map(String::as_str).collect();
    let t = Instant::now();
    if !refs.is_empty() {
        embedder.embed_passages(&refs)?;
    }
    let embed_secs = t.elapsed().as_secs_f64();
    Ok(IngestBench {
        pdf_pages_per_s: rate(&is_pdf),
        pages_per_s: rate(&|_| true),
        chunks_per_s: if chunk_secs > 0.0 {
            chunks as f64 / chunk_secs
        } else {
            0.0
        },
        embed_chunks_per_s: if embed_secs > 0.0 {
            refs.len() as f64 / embed_secs
        } else {
            0.0
        },
        // Every repeat indexed the chunks again: the size of one copy.
        bm25_bytes: dir_size(&work.join("bm25")) / repeats.max(1) as u64,
        files: figures,
        failed,
    })
}
