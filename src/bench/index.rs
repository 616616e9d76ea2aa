//! `kura bench index`: hybrid query latency at scale, and index sizes.
//!
//! Embedding a million chunks on two cores is not the point of this benchmark:
//! the scale points use synthetic Japanese-like text (words drawn from a fixed
//! vocabulary with a Zipf-like skew, so BM25 posting lists look realistic) and
//! random unit vectors. The query side is real: each query is embedded by the
//! real embedding model, then searched in BM25 and the vector graph and fused,
//! which is what a user waits for.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::embed::Embedder;
use crate::index::bm25::Bm25Index;
use crate::index::vector::VectorIndex;
use crate::index::{rrf, IndexError};

/// Results at one corpus size.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Chunks indexed.
    pub chunks: usize,
    /// Seconds to build the BM25 index.
    pub bm25_build_s: f64,
    /// Seconds to build the vector graph.
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
}

const SYLLABLES: &[&str] = &[
    "か", "き", "く", "け", "こ", "さ", "し", "す", "せ", "そ", "た", "ち", "つ", "て", "と", "な",
    "に", "ぬ", "ね", "の", "は", "ひ", "ふ", "へ", "ほ", "ま", "み", "む", "め", "も", "ら", "り",
    "る", "れ", "ろ", "安", "全", "規", "程", "設", "備", "点", "検", "申", "請", "休", "暇", "管",
    "理", "品", "質", "製", "造", "部", "品", "保", "守", "出", "張", "経", "費", "精", "算", "承",
    "認", "記", "録", "報", "告", "作", "業", "手", "順", "確", "認",
];

fn vocabulary(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let len = rng.random_range(2..5);
            (0..len)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect()
        })
        .collect()
}

fn sentence(rng: &mut rand::rngs::StdRng, vocab: &[String], words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        // Zipf-like: square the uniform draw to favour frequent words.
        let u: f64 = rng.random();
        let w = &vocab[((u * u) * vocab.len() as f64) as usize % vocab.len()];
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
    let vocab = vocabulary(&mut rng, 20_000);
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

    let mut total = Vec::with_capacity(queries);
    let mut embed = Vec::with_capacity(queries);
    let mut keyword = Vec::with_capacity(queries);
    let mut vector = Vec::with_capacity(queries);
    for _ in 0..queries {
        let q = sentence(&mut rng, &vocab, 6);
        let t = Instant::now();
        let (qv, b) = rayon::join(
            || {
                let qv = embedder.embed_queries(&[q.as_str()]);
                (qv, t.elapsed().as_secs_f64() * 1000.0)
            },
            || {
                let t0 = Instant::now();
                (
                    bm25.search(&q, &[1, 2], 50),
                    t0.elapsed().as_secs_f64() * 1000.0,
                )
            },
        );
        let (qv, t_embed) = qv;
        let qv = qv.map_err(|e| IndexError::Vector(e.to_string()))?;
        embed.push(t_embed);
        let (b, t_bm25) = b;
        let b = b?;
        keyword.push(t_bm25);
        let t_join = t.elapsed().as_secs_f64() * 1000.0;
        let v = vectors.search(&qv[0], &[1, 2], 50, 64);
        vector.push(t.elapsed().as_secs_f64() * 1000.0 - t_join);
        let fused = rrf(&[(&b, 1.0), (&v, 1.0)], 60.0);
        std::hint::black_box(fused);
        total.push(t.elapsed().as_secs_f64() * 1000.0);
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
    })
}
