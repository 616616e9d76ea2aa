//! Retrieval evaluation: Recall@k, MRR@10 and nDCG@10 for BM25, vectors and hybrid.
//!
//! Two kinds of data set:
//! - SQuAD-format JSON (JSQuAD v1.3 from JGLUE): every paragraph becomes a
//!   document of the corpus, and a question's one relevant document is its own
//!   paragraph;
//! - Kura's question list (`assets/questions.jsonl`): the corpus is a folder of
//!   documents, and a question's relevant chunks are those of its document and
//!   page.
//!
//! Ranking is at document level for SQuAD (a long paragraph may span chunks) and
//! at (document, page) level for the question list; relevance is binary, so
//! nDCG@10 is 1/log2(1 + rank) of the first relevant hit.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, NewChunk, NewDocument, PageRecord};
use crate::embed::Embedder;
use crate::index::{FusionMethod, FusionParams, SearchIndex, SearchMode};
use crate::ingest::chunk::{chunk_page, ChunkParams};

use super::spread;
use super::EvalError;

/// Scores of one retriever.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetrievalScores {
    /// The retriever.
    pub mode: String,
    /// Questions scored.
    pub questions: usize,
    /// Share of questions whose relevant item is ranked first.
    pub recall_at_1: f64,
    /// … within the top 5.
    pub recall_at_5: f64,
    /// … within the top 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank, cut at 10.
    pub mrr_at_10: f64,
    /// nDCG at 10 (binary relevance).
    pub ndcg_at_10: f64,
    /// Median search latency in milliseconds (query embedding included).
    pub p50_ms: f64,
}

/// A passage of a SQuAD corpus: (document key, text).
pub type Passage = (String, String);

/// One question with the key of its relevant item.
#[derive(Debug, Clone)]
pub struct Query {
    /// The question.
    pub question: String,
    /// The key (document path, or path#page) that counts as relevant.
    pub relevant: String,
}

/// Loads a SQuAD-format file into (paragraph id, text) and queries.
pub fn load_squad(
    path: &Path,
    max_questions: Option<usize>,
) -> Result<(Vec<Passage>, Vec<Query>), EvalError> {
    let squad = super::squad::read(path)?;
    let mut docs = Vec::new();
    let mut queries = Vec::new();
    for article in squad.data {
        for p in article.paragraphs {
            let id = format!("p{:05}", docs.len());
            for qa in p.qas {
                queries.push(Query {
                    question: qa.question,
                    relevant: id.clone(),
                });
            }
            docs.push((id, p.context));
        }
    }
    if let Some(n) = max_questions {
        queries = spread(queries, n);
    }
    Ok((docs, queries))
}

/// Indexes (id, text) documents into a collection of a fresh catalog, one page each.
pub async fn index_corpus(
    docs: &[(String, String)],
    collection: &str,
    catalog: &Catalog,
    index: &mut SearchIndex,
    embedder: &Embedder,
    chunking: &ChunkParams,
    progress: &dyn Fn(usize),
) -> Result<i64, EvalError> {
    let coll = catalog.collection(collection).await?;
    for (i, (id, text)) in docs.iter().enumerate() {
        let count = |s: &str| embedder.count_tokens(s);
        let pieces = chunk_page(text, chunking, &count);
        let texts: Vec<&str> = pieces.iter().map(|c| c.text.as_str()).collect();
        let vectors = embedder
            .embed_passages(&texts)
            .map_err(|e| EvalError::Embed(e.to_string()))?;
        let chunks: Vec<NewChunk> = pieces
            .into_iter()
            .zip(vectors)
            .map(|(c, v)| NewChunk {
                page: 1,
                char_start: c.char_start as i64,
                char_end: c.char_end as i64,
                heading: c.heading,
                text: c.text,
                tokens: c.tokens as i64,
                embedding: v,
            })
            .collect();
        let doc = NewDocument {
            path: id.clone(),
            content_hash: format!("{:x}", i),
            size: text.len() as i64,
            mtime: 0,
            extractor: "eval".into(),
            pages: vec![PageRecord {
                number: 1,
                quality: "ok".into(),
                reason: None,
                chars: text.chars().count() as i64,
            }],
        };
        catalog.replace_document(coll.id, &doc, &chunks).await?;
        progress(i + 1);
    }
    index.sync(catalog).await?;
    Ok(coll.id)
}

/// How a ranked chunk list maps to the keys relevance is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    /// The document path.
    Document,
    /// `path#page`.
    Page,
}

impl KeyBy {
    /// The key `c` is judged by.
    fn key(self, c: crate::catalog::ChunkRecord) -> String {
        match self {
            KeyBy::Document => c.path,
            KeyBy::Page => format!("{}#{}", c.path, c.page),
        }
    }
}

/// Scores every retriever on the queries.
#[allow(clippy::too_many_arguments)]
pub async fn evaluate(
    queries: &[Query],
    collection_id: i64,
    key_by: KeyBy,
    catalog: &Catalog,
    index: &SearchIndex,
    embedder: &Embedder,
    fusion: &FusionParams,
    progress: &dyn Fn(usize),
) -> Result<Vec<RetrievalScores>, EvalError> {
    let modes = [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid];
    let mut ranks: HashMap<SearchMode, Vec<Option<usize>>> = HashMap::new();
    let mut times: HashMap<SearchMode, Vec<f64>> = HashMap::new();
    for (qi, q) in queries.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let qv = embedder
            .embed_queries(&[q.question.as_str()])
            .map_err(|e| EvalError::Embed(e.to_string()))?;
        let embed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        for mode in modes {
            let t = std::time::Instant::now();
            let hits = index.search(
                mode,
                &q.question,
                Some(&qv[0]),
                &[collection_id],
                40,
                fusion,
            )?;
            let mut ms = t.elapsed().as_secs_f64() * 1000.0;
            if mode != SearchMode::Bm25 {
                ms += embed_ms;
            }
            let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
            let keys: HashMap<i64, String> = catalog
                .chunks(&ids)
                .await?
                .into_iter()
                .map(|c| (c.id, key_by.key(c)))
                .collect();
            let rank = rank_of(&hits, &keys, &q.relevant);
            ranks.entry(mode).or_default().push(rank);
            times.entry(mode).or_default().push(ms);
        }
        progress(qi + 1);
    }
    Ok(modes
        .iter()
        .map(|m| {
            let mut t = times[m].clone();
            t.sort_by(|a, b| a.total_cmp(b));
            RetrievalScores {
                p50_ms: t.get(t.len() / 2).copied().unwrap_or(0.0),
                ..score_ranks(&format!("{m:?}").to_lowercase(), &ranks[m])
            }
        })
        .collect())
}

/// One fusion setting's scores in a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FusionPoint {
    /// The setting.
    pub fusion: FusionParams,
    /// Its hybrid scores.
    pub scores: RetrievalScores,
}

/// A ranked list of (chunk id, score), best first.
pub type Ranked = Vec<(i64, f32)>;

/// The BM25 and vector candidate lists of every query, computed once so that many
/// fusion settings can be scored without searching again (see [`sweep_fusion`]).
#[derive(Debug, Clone)]
pub struct CandidateLists {
    /// Per query: (BM25 list, vector list), best first.
    pub lists: Vec<(Ranked, Ranked)>,
    /// The key every candidate chunk is judged by.
    pub keys: HashMap<i64, String>,
    /// The relevant key of every query.
    pub relevant: Vec<String>,
}

/// Searches every query once with each retriever (`candidates` deep).
#[allow(clippy::too_many_arguments)]
pub async fn candidate_lists(
    queries: &[Query],
    collection_id: i64,
    key_by: KeyBy,
    catalog: &Catalog,
    index: &SearchIndex,
    embedder: &Embedder,
    candidates: usize,
    progress: &dyn Fn(usize),
) -> Result<CandidateLists, EvalError> {
    let fusion = FusionParams {
        candidates,
        ..FusionParams::default()
    };
    let mut lists = Vec::with_capacity(queries.len());
    let mut keys = HashMap::new();
    for (qi, q) in queries.iter().enumerate() {
        let qv = embedder
            .embed_queries(&[q.question.as_str()])
            .map_err(|e| EvalError::Embed(e.to_string()))?;
        let b = index.search(
            SearchMode::Bm25,
            &q.question,
            None,
            &[collection_id],
            candidates,
            &fusion,
        )?;
        let v = index.search(
            SearchMode::Vector,
            &q.question,
            Some(&qv[0]),
            &[collection_id],
            candidates,
            &fusion,
        )?;
        let missing: Vec<i64> = b
            .iter()
            .chain(&v)
            .map(|h| h.0)
            .filter(|id| !keys.contains_key(id))
            .collect();
        for c in catalog.chunks(&missing).await? {
            keys.insert(c.id, key_by.key(c));
        }
        lists.push((b, v));
        progress(qi + 1);
    }
    Ok(CandidateLists {
        lists,
        keys,
        relevant: queries.iter().map(|q| q.relevant.clone()).collect(),
    })
}

/// Rank (0-based, within 10 distinct keys) of the relevant key in a ranked list.
fn rank_of(hits: &[(i64, f32)], keys: &HashMap<i64, String>, relevant: &str) -> Option<usize> {
    let mut seen: Vec<&str> = Vec::new();
    for (id, _) in hits {
        let Some(k) = keys.get(id) else { continue };
        if !seen.contains(&k.as_str()) {
            seen.push(k);
            if seen.len() > 10 {
                break;
            }
        }
    }
    seen.iter()
        .take(10)
        .position(|k| *k == relevant || k.ends_with(relevant))
}

/// Scores a set of ranks (one per query) as `mode`.
pub fn score_ranks(mode: &str, ranks: &[Option<usize>]) -> RetrievalScores {
    let n = ranks.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|x| x.is_some_and(|x| x < k)).count() as f64 / n;
    RetrievalScores {
        mode: mode.to_string(),
        questions: ranks.len(),
        recall_at_1: within(1),
        recall_at_5: within(5),
        recall_at_10: within(10),
        mrr_at_10: ranks
            .iter()
            .map(|x| x.map(|x| 1.0 / (x + 1) as f64).unwrap_or(0.0))
            .sum::<f64>()
            / n,
        ndcg_at_10: ranks
            .iter()
            .map(|x| x.map(|x| 1.0 / ((x + 2) as f64).log2()).unwrap_or(0.0))
            .sum::<f64>()
            / n,
        p50_ms: 0.0,
    }
}

/// Scores BM25 alone, vectors alone and hybrid under every fusion setting of the
/// grid, from lists searched once. Returns (bm25, vector, hybrid points sorted by
/// nDCG@10, best first).
/// RRF is tried at every k × vector weight (BM25 at 1) × candidates; score fusion at
/// every vector share `w` of `score_shares` (BM25 at 1 − w) × candidates.
pub fn sweep_fusion(
    c: &CandidateLists,
    ks: &[f32],
    vector_weights: &[f32],
    score_shares: &[f32],
    candidates: &[usize],
) -> (RetrievalScores, RetrievalScores, Vec<FusionPoint>) {
    type Fuse<'f> = &'f dyn Fn(&[(i64, f32)], &[(i64, f32)]) -> Ranked;
    let ranks = |f: Fuse<'_>| -> Vec<Option<usize>> {
        c.lists
            .iter()
            .zip(&c.relevant)
            .map(|((b, v), rel)| rank_of(&f(b, v), &c.keys, rel))
            .collect()
    };
    let bm25 = score_ranks("bm25", &ranks(&|b, _| b.to_vec()));
    let vector = score_ranks("vector", &ranks(&|_, v| v.to_vec()));
    let mut points = Vec::new();
    for &n in candidates {
        for &k in ks {
            for &w in vector_weights {
                let fusion = FusionParams {
                    method: FusionMethod::Rrf,
                    k,
                    bm25_weight: 1.0,
                    vector_weight: w,
                    candidates: n,
                };
                let r = ranks(&|b, v| {
                    let (b, v) = (&b[..b.len().min(n)], &v[..v.len().min(n)]);
                    crate::index::rrf(&[(b, 1.0), (v, w)], k)
                });
                points.push(FusionPoint {
                    fusion,
                    scores: score_ranks("hybrid", &r),
                });
            }
        }
        for &w in score_shares {
            let fusion = FusionParams {
                method: FusionMethod::Scores,
                k: 0.0,
                bm25_weight: 1.0 - w,
                vector_weight: w,
                candidates: n,
            };
            let r = ranks(&|b, v| {
                let (b, v) = (&b[..b.len().min(n)], &v[..v.len().min(n)]);
                crate::index::score_fusion(&[(b, 1.0 - w), (v, w)])
            });
            points.push(FusionPoint {
                fusion,
                scores: score_ranks("hybrid", &r),
            });
        }
    }
    points.sort_by(|a, b| {
        b.scores
            .ndcg_at_10
            .total_cmp(&a.scores.ndcg_at_10)
            .then(b.scores.mrr_at_10.total_cmp(&a.scores.mrr_at_10))
    });
    (bm25, vector, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_scores_each_setting_from_one_search() {
        // Query 0: BM25 ranks the relevant doc 2nd, vectors rank it 1st.
        // Query 1: BM25 ranks it 1st, vectors 2nd.
        let keys: HashMap<i64, String> = (1..=4).map(|i| (i, format!("doc{i}"))).collect();
        let c = CandidateLists {
            lists: vec![
                (
                    vec![(1, 9.0), (2, 8.0), (3, 1.0)],
                    vec![(2, 0.9), (3, 0.8), (4, 0.7)],
                ),
                (vec![(3, 9.0), (1, 2.0)], vec![(4, 0.9), (3, 0.8), (1, 0.7)]),
            ],
            keys,
            relevant: vec!["doc2".into(), "doc3".into()],
        };
        let (bm25, vector, points) = sweep_fusion(&c, &[60.0], &[0.0, 1.0], &[], &[50]);
        assert_eq!(bm25.recall_at_1, 0.5);
        assert_eq!(vector.recall_at_1, 0.5);
        assert_eq!(points.len(), 2);
        // Weight 0 is BM25 alone; weight 1 fixes query 0 and keeps query 1.
        assert_eq!(points[0].fusion.vector_weight, 1.0);
        assert_eq!(points[0].scores.recall_at_1, 1.0);
        assert_eq!(points[1].scores.recall_at_1, bm25.recall_at_1);
    }

    #[test]
    fn spread_is_deterministic_and_even() {
        let v: Vec<usize> = (0..100).collect();
        let s = spread(v, 10);
        assert_eq!(s, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    }
}
