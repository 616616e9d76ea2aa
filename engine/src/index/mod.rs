//! The search indexes: BM25 ([`bm25`]) and vectors ([`vector`]), fused by
//! reciprocal rank fusion.
//!
//! Both indexes are derived from the catalog. Each remembers the index-log
//! sequence number it last committed; [`SearchIndex::sync`] replays the catalog's
//! log from there (adds whose chunk still exists, then removals), so after a crash
//! at any moment the next open brings both back in step with SQLite. `kura check`
//! compares the three and reports any difference.
//!
//! Every search takes the collections the caller may read, and both indexes apply
//! that filter inside the search, before ranking.

pub mod bm25;
pub mod vector;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError};
use bm25::Bm25Index;
use vector::VectorIndex;

/// What can go wrong in the indexes.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The BM25 index failed.
    #[error("BM25 index: {0}")]
    Bm25(String),
    /// The vector index failed.
    #[error("vector index: {0}")]
    Vector(String),
    /// The Japanese tokenizer could not be set up.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Embedding the query failed.
    #[error("query embedding: {0}")]
    Embed(String),
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        IndexError::Bm25(e.to_string())
    }
}

impl IndexError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// BM25 and vectors, fused (see [`FusionMethod`]).
    #[default]
    Hybrid,
    /// Keywords only.
    Bm25,
    /// Embeddings only.
    Vector,
}

/// How the BM25 and vector lists become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Weighted reciprocal rank fusion: Σ wᵢ / (k + rankᵢ). Only ranks count.
    #[default]
    Rrf,
    /// Each list's scores min–max normalised over its candidates, then Σ wᵢ · scoreᵢ:
    /// a clear keyword match keeps its lead over a middling vector rank.
    Scores,
}

/// A name that is not one of a setting's choices (`--mode`, `--fusion`, a request field).
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {setting} `{given}`: choose one of {choices} / {setting} `{given}` は使えません（{choices} のいずれか）")]
pub struct UnknownChoice {
    /// The setting: `mode` or `fusion`.
    pub setting: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted names, comma-separated.
    pub choices: &'static str,
}

impl SearchMode {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Bm25 => "bm25",
            SearchMode::Vector => "vector",
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hybrid" => Ok(SearchMode::Hybrid),
            "bm25" => Ok(SearchMode::Bm25),
            "vector" => Ok(SearchMode::Vector),
            _ => Err(UnknownChoice {
                setting: "mode",
                given: s.to_string(),
                choices: "hybrid, bm25, vector",
            }),
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FusionMethod {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FusionMethod::Rrf => "rrf",
            FusionMethod::Scores => "scores",
        }
    }
}

impl std::str::FromStr for FusionMethod {
    type Err = UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rrf" => Ok(FusionMethod::Rrf),
            "scores" => Ok(FusionMethod::Scores),
            _ => Err(UnknownChoice {
                setting: "fusion",
                given: s.to_string(),
                choices: "scores, rrf",
            }),
        }
    }
}

impl std::fmt::Display for FusionMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fusion settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FusionParams {
    /// Rank or score fusion (settings saved before it existed were RRF).
    #[serde(default)]
    pub method: FusionMethod,
    /// The RRF constant k (60 in the original paper; smaller favours top ranks).
    pub k: f32,
    /// Weight of the BM25 list.
    pub bm25_weight: f32,
    /// Weight of the vector list.
    pub vector_weight: f32,
    /// How many candidates each retriever contributes.
    pub candidates: usize,
}

/// The defaults were tuned on JSQuAD `valid` (`kura eval retrieval --sweep`: RRF over
/// k × vector weight × candidates, and score fusion over weight × candidates; 4,442
/// questions). The keyword list is much stronger there than the e5 list (nDCG@10 0.952
/// vs 0.902), and rank fusion cannot tell a clear keyword match from a close call: the
/// best RRF setting (k = 1, vectors at 0.6) reached nDCG@10 0.955 / R@1 0.920, while
/// score fusion with BM25 : vectors = 0.6 : 0.4 over 50 candidates each reached
/// 0.957 / 0.926 (a plateau from 0.35 to 0.45 and 50 to 100 candidates).
impl Default for FusionParams {
    fn default() -> Self {
        FusionParams {
            method: FusionMethod::Scores,
            k: 1.0,
            bm25_weight: 0.6,
            vector_weight: 0.4,
            candidates: 50,
        }
    }
}

impl FusionParams {
    /// The fusion grounded answers retrieve with (`AskOptions::default`): the textbook
    /// k = 60 with equal weights, which the refusal thresholds of `rag::refusal` were
    /// calibrated under (`kura eval rag --calibrate`). It stays until those
    /// thresholds are re-calibrated under the tuned [`Default`]: the thresholds read
    /// features of the top sources, and another fusion brings other sources up.
    pub const ANSWERS: FusionParams = FusionParams {
        method: FusionMethod::Rrf,
        k: 60.0,
        bm25_weight: 1.0,
        vector_weight: 1.0,
        candidates: 50,
    };
}

/// Fuses scored lists of chunk ids by the weighted sum of their min–max normalised
/// scores (a list whose scores are all equal counts each as 1; a chunk missing from a
/// list gets 0 from it).
pub fn score_fusion(lists: &[(&[(i64, f32)], f32)]) -> Vec<(i64, f32)> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for (list, weight) in lists {
        let max = list.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
        let min = list.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
        for (id, score) in list.iter() {
            let norm = if max > min {
                (score - min) / (max - min)
            } else {
                1.0
            };
            *scores.entry(*id).or_default() += weight * norm;
        }
    }
    let mut out: Vec<_> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Fuses ranked lists of chunk ids by weighted reciprocal rank.
pub fn rrf(lists: &[(&[(i64, f32)], f32)], k: f32) -> Vec<(i64, f32)> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for (list, weight) in lists {
        for (rank, (id, _)) in list.iter().enumerate() {
            *scores.entry(*id).or_default() += weight / (k + rank as f32 + 1.0);
        }
    }
    let mut out: Vec<_> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// What BM25 indexes of a chunk: its heading (when the text does not start with it)
/// and its text.
fn bm25_text(c: &crate::catalog::ChunkRecord) -> String {
    match &c.heading {
        Some(h) if !c.text.starts_with(h.as_str()) => format!("{h}\n{}", c.text),
        _ => c.text.clone(),
    }
}

/// Both indexes, kept in step with the catalog.
pub struct SearchIndex {
    /// Keyword index.
    pub bm25: Bm25Index,
    /// Embedding index.
    pub vectors: VectorIndex,
}

/// A query's hits, its embedding, and where its time went.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Ranked (chunk id, score), best first.
    pub hits: Vec<(i64, f32)>,
    /// The query's embedding (absent in BM25 mode).
    pub query_vector: Option<Vec<f32>>,
    /// Milliseconds per part.
    pub timings: QueryTimings,
}

/// Milliseconds a query spent in each part (embedding and BM25 overlap in hybrid
/// mode, so the parts can add up to more than the total).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueryTimings {
    /// Embedding the query.
    pub embed_ms: f64,
    /// The BM25 search.
    pub bm25_ms: f64,
    /// The vector search.
    pub vector_ms: f64,
    /// From the call to the fused list.
    pub total_ms: f64,
}

/// A query's embedding, its vector hits, and the milliseconds each took.
type Dense = (Vec<f32>, Vec<(i64, f32)>, f64, f64);

/// The result of a consistency check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Chunks in the catalog.
    pub catalog_chunks: usize,
    /// Chunks in the BM25 index.
    pub bm25_chunks: usize,
    /// Live chunks in the vector index.
    pub vector_chunks: usize,
    /// Chunk ids in the catalog but missing from BM25 (first few).
    pub missing_in_bm25: Vec<i64>,
    /// Chunk ids in BM25 but not in the catalog (first few).
    pub extra_in_bm25: Vec<i64>,
    /// Chunk ids in the catalog but missing from the vectors (first few).
    pub missing_in_vectors: Vec<i64>,
    /// Chunk ids in the vectors but not in the catalog (first few).
    pub extra_in_vectors: Vec<i64>,
    /// Whether all three agree.
    pub consistent: bool,
}

fn diff(a: &[i64], b: &HashSet<i64>) -> Vec<i64> {
    a.iter()
        .filter(|x| !b.contains(x))
        .take(20)
        .copied()
        .collect()
}

impl SearchIndex {
    /// Opens both indexes under `dir` (without syncing), with the user dictionary
    /// `dir/userdict.csv` when it exists.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        Ok(SearchIndex {
            bm25: Bm25Index::open(&dir.join("bm25"), Some(&dir.join(bm25::USER_DICTIONARY)))?,
            vectors: VectorIndex::open(&dir.join("vectors"))?,
        })
    }

    /// Replays the catalog's index log into both indexes and commits them.
    /// Returns the number of log entries applied.
    pub async fn sync(&mut self, catalog: &Catalog) -> Result<usize, IndexError> {
        let last = catalog.last_seq().await?;
        let from = self.bm25.committed_seq()?.min(self.vectors.committed_seq());
        if from >= last {
            if self.vectors.has_unsaved_changes() {
                // Opened from an older layout or a damaged row file: save what was read.
                let seq = self.vectors.committed_seq();
                self.vectors.commit(seq)?;
            }
            if self.bm25.needs_retokenizing() {
                self.retokenize_bm25(catalog).await?;
            }
            return Ok(0);
        }
        let log = catalog.log_since(from).await?;
        let bm25_from = self.bm25.committed_seq()?;
        let vec_from = self.vectors.committed_seq();
        // Net effect per chunk: removed if any removal is in the window, added if
        // it still exists in the catalog (ids are never reused).
        let mut removed = HashSet::new();
        let mut added = Vec::new();
        for e in &log {
            if e.add {
                added.push((e.seq, e.chunk_id));
            } else {
                removed.insert((e.seq, e.chunk_id));
            }
        }
        for (seq, id) in &removed {
            if *seq > bm25_from {
                self.bm25.remove(*id)?;
            }
            if *seq > vec_from {
                self.vectors.remove(*id);
            }
        }
        let removed_ids: HashSet<i64> = removed.iter().map(|(_, id)| *id).collect();
        let candidates: Vec<i64> = added
            .iter()
            .filter(|(_, id)| !removed_ids.contains(id))
            .map(|(_, id)| *id)
            .collect();
        for batch in candidates.chunks(2000) {
            let chunks = catalog.chunks(batch).await?;
            let seq_of: HashMap<i64, i64> = added.iter().map(|(s, id)| (*id, *s)).collect();
            for c in &chunks {
                if seq_of[&c.id] > bm25_from {
                    self.bm25.add(c.id, c.collection_id, &bm25_text(c))?;
                }
            }
            let vec_ids: Vec<i64> = batch
                .iter()
                .filter(|id| seq_of[id] > vec_from)
                .copied()
                .collect();
            let embeddings = catalog.embeddings(&vec_ids).await?;
            let embeddings: Vec<_> = embeddings
                .into_iter()
                .filter(|(_, _, v)| !v.is_empty())
                .collect();
            self.vectors.add_many(&embeddings)?;
        }
        self.bm25.commit(last)?;
        if self.vectors.needs_compaction() {
            self.rebuild_vectors(catalog).await?;
        }
        self.vectors.commit(last)?;
        if self.bm25.needs_retokenizing() {
            self.retokenize_bm25(catalog).await?;
        }
        Ok(log.len())
    }

    /// Re-analyses every chunk of the catalog into BM25 (after the user dictionary
    /// changed); called by [`sync`](Self::sync) once the index is in step with the log.
    /// Crash-safe: the dictionary stamp is written only after the commit, so an
    /// interrupted rebuild starts again at the next sync.
    pub async fn retokenize_bm25(&mut self, catalog: &Catalog) -> Result<(), IndexError> {
        let seq = self.bm25.committed_seq()?;
        self.bm25.rebuild_start()?;
        let ids = catalog.all_chunk_ids().await?;
        for batch in ids.chunks(2000) {
            for c in catalog.chunks(batch).await? {
                self.bm25.add(c.id, c.collection_id, &bm25_text(&c))?;
            }
        }
        self.bm25.commit(seq)?;
        self.bm25.mark_tokenized()
    }

    /// Rebuilds the vector graph from the live embeddings in the catalog.
    pub async fn rebuild_vectors(&mut self, catalog: &Catalog) -> Result<(), IndexError> {
        self.vectors.clear();
        let ids = catalog.all_chunk_ids().await?;
        for batch in ids.chunks(5000) {
            let e = catalog.embeddings(batch).await?;
            let e: Vec<_> = e.into_iter().filter(|(_, _, v)| !v.is_empty()).collect();
            self.vectors.add_many(&e)?;
        }
        Ok(())
    }

    /// Compares the catalog with both indexes.
    pub async fn check(&self, catalog: &Catalog) -> Result<CheckReport, IndexError> {
        let catalog_ids = catalog.all_chunk_ids().await?;
        let bm25_ids = self.bm25.chunk_ids()?;
        let vec_ids = self.vectors.chunk_ids();
        let cat: HashSet<i64> = catalog_ids.iter().copied().collect();
        let b: HashSet<i64> = bm25_ids.iter().copied().collect();
        let v: HashSet<i64> = vec_ids.iter().copied().collect();
        let report = CheckReport {
            catalog_chunks: catalog_ids.len(),
            bm25_chunks: bm25_ids.len(),
            vector_chunks: vec_ids.len(),
            missing_in_bm25: diff(&catalog_ids, &b),
            extra_in_bm25: diff(&bm25_ids, &cat),
            missing_in_vectors: diff(&catalog_ids, &v),
            extra_in_vectors: diff(&vec_ids, &cat),
            consistent: false,
        };
        let consistent = report.missing_in_bm25.is_empty()
            && report.extra_in_bm25.is_empty()
            && report.missing_in_vectors.is_empty()
            && report.extra_in_vectors.is_empty()
            && bm25_ids.len() == catalog_ids.len()
            && vec_ids.len() == catalog_ids.len();
        Ok(CheckReport {
            consistent,
            ..report
        })
    }

    /// Ranked chunk ids for a query, embedding it with `embed` when the mode needs a
    /// vector: what a user's search runs.
    ///
    /// In hybrid mode the embedding (then the vector search) and the BM25 search run
    /// at the same time, inside the rayon pool: on two cores the query embedding is
    /// most of a search's time, and BM25 does not need it. Running inside the pool also keeps its threads
    /// awake between the embedding's many small parallel steps; called from outside,
    /// each step woke them again, which was the p95 tail (`kura bench index` at 10k:
    /// p95 17.7 → 12.2 ms).
    #[allow(clippy::too_many_arguments)]
    pub fn search_query(
        &self,
        mode: SearchMode,
        query: &str,
        embed: impl FnOnce() -> Result<Vec<f32>, String> + Send,
        collections: &[i64],
        top_k: usize,
        fusion: &FusionParams,
    ) -> Result<QueryResult, IndexError> {
        let t = std::time::Instant::now();
        let ms = |from: std::time::Instant| from.elapsed().as_secs_f64() * 1000.0;
        let n = fusion.candidates.max(top_k);
        let mut timings = QueryTimings::default();
        let keyword = || {
            let t = std::time::Instant::now();
            self.bm25.search(query, collections, n).map(|b| (b, ms(t)))
        };
        // The query's embedding, then its vector search (the scan splits across the
        // pool, so the thread that ran BM25 joins it when done).
        let dense = || -> Result<Dense, IndexError> {
            let t = std::time::Instant::now();
            let q = embed().map_err(IndexError::Embed)?;
            let embed_ms = ms(t);
            let t = std::time::Instant::now();
            let v = self.vectors.search(&q, collections, n, n.max(64));
            Ok((q, v, embed_ms, ms(t)))
        };
        let (b, d) = match mode {
            SearchMode::Bm25 => (Some(keyword()?), None),
            SearchMode::Vector => (None, Some(dense()?)),
            SearchMode::Hybrid => {
                let (d, b) = rayon::join(dense, keyword);
                (Some(b?), Some(d?))
            }
        };
        let b = b.map(|(b, t)| {
            timings.bm25_ms = t;
            b
        });
        let (qv, v) = match d {
            Some((q, v, embed_ms, vector_ms)) => {
                timings.embed_ms = embed_ms;
                timings.vector_ms = vector_ms;
                (Some(q), Some(v))
            }
            None => (None, None),
        };
        let mut hits = match (b, v) {
            (Some(b), Some(v)) => {
                let lists = [(&b[..], fusion.bm25_weight), (&v[..], fusion.vector_weight)];
                match fusion.method {
                    FusionMethod::Rrf => rrf(&lists, fusion.k),
                    FusionMethod::Scores => score_fusion(&lists),
                }
            }
            (Some(list), None) | (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        hits.truncate(top_k);
        timings.total_ms = ms(t);
        Ok(QueryResult {
            hits,
            query_vector: qv,
            timings,
        })
    }

    /// Ranked chunk ids for a query: BM25, vectors or both fused.
    /// `query_vector` is required for the vector and hybrid modes.
    pub fn search(
        &self,
        mode: SearchMode,
        query: &str,
        query_vector: Option<&[f32]>,
        collections: &[i64],
        top_k: usize,
        fusion: &FusionParams,
    ) -> Result<Vec<(i64, f32)>, IndexError> {
        let vector = || {
            query_vector
                .map(<[f32]>::to_vec)
                .ok_or_else(|| format!("a {mode:?} search needs the query's embedding"))
        };
        Ok(self
            .search_query(mode, query, vector, collections, top_k, fusion)?
            .hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_fusion_keeps_a_clear_keyword_lead() {
        // BM25 is sure of 1 (score 30 vs 5); the vectors rank 1 third, closely.
        let b = [(1, 30.0), (2, 5.0), (3, 4.0)];
        let v = [(2, 0.86), (3, 0.85), (1, 0.84), (4, 0.80)];
        let fused = score_fusion(&[(&b, 0.6), (&v, 0.4)]);
        assert_eq!(fused[0].0, 1, "{fused:?}");
        // Rank fusion lets the vectors' ordering outvote it.
        assert_ne!(rrf(&[(&b, 1.0), (&v, 1.0)], 1.0)[0].0, 1);
        // A close keyword call is decided by the vectors.
        let b = [(1, 10.0), (2, 9.9), (3, 1.0)];
        let v = [(2, 0.9), (1, 0.5), (3, 0.4)];
        assert_eq!(score_fusion(&[(&b, 0.6), (&v, 0.4)])[0].0, 2);
        // Missing lists and flat lists do not divide by zero.
        let one = [(7, 3.0)];
        assert_eq!(score_fusion(&[(&one, 0.6), (&[], 0.4)]), vec![(7, 0.6)]);
    }

    #[test]
    fn rrf_rewards_agreement() {
        let a = [(1, 9.0), (2, 8.0), (3, 7.0)];
        let b = [(3, 0.9), (1, 0.8), (4, 0.7)];
        let fused = rrf(&[(&a, 1.0), (&b, 1.0)], 60.0);
        let ids: Vec<i64> = fused.iter().map(|x| x.0).collect();
        assert_eq!(ids[0], 1, "first in one list and second in the other wins");
        assert_eq!(ids[1], 3);
        assert_eq!(ids.len(), 4);
    }
}
