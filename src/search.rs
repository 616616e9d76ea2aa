//! `kura search`: the indexed documents searched (hybrid BM25 + vectors by
//! default).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use crate::load::{load_embedder, runtime};
use crate::term::print_json;
use kura::catalog::Catalog;
use kura::index::{FusionMethod, FusionParams, SearchIndex, SearchMode};
use kura::paths::Paths;

/// `kura search`
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query.
    pub query: String,
    /// Collections to search (repeatable; default: all).
    #[arg(long, short)]
    pub collection: Vec<String>,
    /// Retriever: hybrid, bm25 or vector.
    #[arg(long, default_value_t = SearchMode::Hybrid)]
    pub mode: SearchMode,
    /// Number of results.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// How BM25 and vectors are fused: `scores` (normalised scores) or `rrf` (reciprocal ranks).
    #[arg(long, default_value_t = FusionParams::default().method)]
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

pub(super) fn search_cmd(args: SearchArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    let query = kura::ingest::normalize::normalize_text(&args.query);
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
