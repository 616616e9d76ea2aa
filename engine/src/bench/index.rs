//! `kura bench index`: hybrid query latency at scale, and index sizes.
//!
//! Embedding a million chunks on two cores is not the point of this benchmark:
//! the scale points use synthetic Japanese-like text (words drawn from a fixed
//! vocabulary with a Zipf-like skew, so BM25 posting lists look realistic) and
//! random unit vectors. The query side is real: each query goes through
//! [`SearchIndex::search_query`] as a user's does — embedded by the real embedding
//! model while BM25 searches, then the vector search, then the fusion.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::embed::Embedder;
use crate::index::bm25::Bm25Index;
use crate::index::vector::VectorIndex;
use crate::index::{FusionParams, IndexError, SearchIndex, SearchMode};

/// Results at one corpus size.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Chunks indexed.
    pub chunks: usize,
    /// Seconds to build the BM25 index.
    pub bm25_build_s: f64,
    /// Seconds to build the vector index (rows written and synced).
    pub vector_build_s: f64,
    /// BM25 index size on disk, MB.
    pub bm25_mb: f64,
    /// Vector index size on disk, MB.
    pub vector_mb: f64,
    /// Hybrid query latency (query embedding included), median, ms.
    pub p50_ms: f64,
    /// … 95th percentile, ms.
    pub p95_ms: f64,
    /// Of which: query embedding, median ms.
    pub embed_p50_ms: f64,
    /// … BM25 search, median ms.
    pub bm25_p50_ms: f64,
    /// … vector search, median ms.
    pub vector_p50_ms: f64,
    /// Postings of the query terms (BM25 fields), per query and indexed chunk: how
    /// heavy the keyword side is (JSQuAD's questions over its passages: 1.8).
    pub query_postings_per_chunk: f64,
}

/// Kanji drawn on for synthetic words: 2,000 code points spread over the CJK block
/// (every 9th from U+4E00), a stand-in for the ~2,000 characters of everyday text.
const KANJI: usize = 2_000;

/// Index in `0..n` skewed towards 0 (squared uniform draw: frequent things first).
fn skewed(rng: &mut rand::rngs::StdRng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((u * u) * n as f64) as usize % n
}

/// Synthetic words: kanji compounds (60%), katakana words (25%) and hiragana words,
/// 2–4 characters, characters drawn with a frequency skew.
///
/// The alphabet matters for BM25's cost, which the character-bigram field makes
/// grow with how common a query's bigrams are. Calibrated on JSQuAD: its questions
/// hit postings totalling 1.8 × the number of passages (100 `valid` questions over
/// its 1,166 passages); queries over this text hit about the same per chunk. An
/// earlier alphabet of 75 kana and kanji made every bigram occur in a third of the
/// chunks (postings 11 × the chunks), far from any real text.
fn vocabulary(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let len = rng.random_range(2..5);
            let kind: f64 = rng.random();
            (0..len)
                .map(|_| {
                    let code = if kind < 0.6 {
                        0x4E00 + 9 * skewed(rng, KANJI) as u32
                    } else if kind < 0.85 {
                        0x30A2 + skewed(rng, 80) as u32 // katakana ア…
                    } else {
                        0x3042 + skewed(rng, 80) as u32 // hiragana あ…
                    };
                    char::from_u32(code).unwrap_or('ー')
                })
                .collect()
        })
        .collect()
}

fn sentence(rng: &mut rand::rngs::StdRng, vocab: &[String], words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        let w = &vocab[skewed(rng, vocab.len())];
        s.push_str(w);
        s.push(if i % 9 == 8 {
            '。'
        } else if i % 3 == 2 {
            'を'
        } else {
            'の'
        });
    }
    s
}

fn unit(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_size(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Builds indexes of `chunks` synthetic chunks in `dir` and measures `queries` hybrid searches.
pub fn scale_point(
    dir: &Path,
    chunks: usize,
    queries: usize,
    embedder: &Embedder,
    progress: &dyn Fn(&str),
) -> Result<ScalePoint, IndexError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(chunks as u64);
    let vocab = vocabulary(&mut rng, 50_000);
    let dim = embedder.dim();
    let _ = std::fs::remove_dir_all(dir);

    let t = Instant::now();
    let mut bm25 = Bm25Index::open(&dir.join("bm25"), None)?;
    for i in 0..chunks {
        let text = sentence(&mut rng, &vocab, 40);
        bm25.add(i as i64 + 1, 1 + (i % 4) as i64, &text)?;
        if i % 100_000 == 99_999 {
            progress(&format!("BM25 {}k/{}k", (i + 1) / 1000, chunks / 1000));
        }
    }
    bm25.commit(1)?;
    let bm25_build_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut vectors = VectorIndex::open(&dir.join("vectors"))?;
    let batch = 20_000;
    let mut next = 0;
    while next < chunks {
        let end = (next + batch).min(chunks);
        let items: Vec<(i64, i64, Vec<f32>)> = (next..end)
            .map(|i| (i as i64 + 1, 1 + (i % 4) as i64, unit(&mut rng, dim)))
            .collect();
        vectors.add_many(&items)?;
        next = end;
        progress(&format!("vectors {}k/{}k", next / 1000, chunks / 1000));
    }
    vectors.commit(1)?;
    let vector_build_s = t.elapsed().as_secs_f64();

    let mut postings = 0u64;
    let index = SearchIndex { bm25, vectors };
    let fusion = FusionParams::default();
    let mut total = Vec::with_capacity(queries);
    let mut embed = Vec::with_capacity(queries);
    let mut keyword = Vec::with_capacity(queries);
    let mut vector = Vec::with_capacity(queries);
    for _ in 0..queries {
        let q = sentence(&mut rng, &vocab, 6);
        postings += index.bm25.query_postings(&q)?;
        let embed_query = || {
            embedder
                .embed_queries(&[q.as_str()])
                .map(|mut v| v.remove(0))
                .map_err(|e| e.to_string())
        };
        let found =
            index.search_query(SearchMode::Hybrid, &q, embed_query, &[1, 2], 10, &fusion)?;
        std::hint::black_box(&found.hits);
        embed.push(found.timings.embed_ms);
        keyword.push(found.timings.bm25_ms);
        vector.push(found.timings.vector_ms);
        total.push(found.timings.total_ms);
    }
    total.sort_by(|a, b| a.total_cmp(b));
    for list in [&mut embed, &mut keyword, &mut vector] {
        list.sort_by(|a, b| a.total_cmp(b));
    }
    Ok(ScalePoint {
        chunks,
        bm25_build_s,
        vector_build_s,
        bm25_mb: dir_size(&dir.join("bm25")) as f64 / 1e6,
        vector_mb: dir_size(&dir.join("vectors")) as f64 / 1e6,
        p50_ms: percentile(&total, 0.5),
        p95_ms: percentile(&total, 0.95),
        embed_p50_ms: percentile(&embed, 0.5),
        bm25_p50_ms: percentile(&keyword, 0.5),
        vector_p50_ms: percentile(&vector, 0.5),
        query_postings_per_chunk: postings as f64 / queries.max(1) as f64 / chunks.max(1) as f64,
    })
}
