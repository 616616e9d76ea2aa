//! Embedding throughput: chunks per second for 256-token passages in batches of 32.
//!
//! Not a timed test — it asserts nothing about speed. Run it in release mode:
//!
//! ```text
//! KURA_MODELS=/path/to/models cargo test --release --bench embed_throughput -- --ignored --nocapture
//! ```
//!
//! Optional: `KURA_BENCH_MODEL` picks another model path (e.g. the MiniLM directory),
//! `KURA_BENCH_BATCHES` the number of timed batches (default 3).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use kura::embed::Embedder;

/// Builds a passage of exactly `tokens` model tokens by taking a prefix of a long text
/// at a token boundary.
fn passage_of(e: &Embedder, seed: usize, tokens: usize) -> String {
    let base =
        "蔵は、ネットワークに接続しない一台のワークステーションの上で文書の検索と質問応答を行う。\
                Kura runs retrieval and question answering on one workstation, offline. ";
    let text = format!("{seed} {}", base.repeat(tokens / 20 + 4));
    let toks = e.tokenize(&text).expect("tokenize");
    text[..toks[tokens].start].to_owned()
}

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn embed_throughput() {
    let path = std::env::var_os("KURA_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("KURA_MODELS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
                .join("multilingual-e5-small-q4.e5s1")
        });
    let t = Instant::now();
    let e = Embedder::load(&path, &Device::Cpu).unwrap_or_else(|err| panic!("{err}"));
    eprintln!(
        "loaded {} in {:.2}s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    let batches: usize = std::env::var("KURA_BENCH_BATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // 256 model tokens per chunk: `passage: ` prefix and specials included.
    let content = 256 - 2 - 2;
    let texts: Vec<String> = (0..32).map(|i| passage_of(&e, i, content)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed_passages(&refs[..4]).expect("warm-up");
    let t = Instant::now();
    for _ in 0..batches {
        e.embed_passages(&refs).expect("embed");
    }
    let secs = t.elapsed().as_secs_f64();
    let chunks = (batches * refs.len()) as f64;
    eprintln!(
        "{:?}: {chunks} chunks of 256 tokens in {secs:.2}s = {:.1} chunks/s ({:.0} tokens/s), \
         {} threads",
        e.kind(),
        chunks / secs,
        chunks * 256.0 / secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
}
