//! all-MiniLM-L6-v2 through Kura's shared BERT encoder.
//!
//! There is no reference engine for MiniLM in the model packages, so these tests check
//! behaviour: paraphrases score above unrelated sentences, vectors are unit length,
//! both ways of pointing at the model load it, and broken files are errors.
//!
//! They need `$KURA_MODELS/all-minilm-l6-v2/` (default `<repo>/models`) and fail, never
//! skip, when it is missing.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use kura::embed::{EmbedError, Embedder, ModelKind};

const MINILM_DIR: &str = "all-minilm-l6-v2";

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("KURA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
        .join(MINILM_DIR);
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(
            dir.join(file).is_file(),
            "model file {} is missing: these tests need all-MiniLM-L6-v2. Fetch the models \
             (see models/models.toml) or set KURA_MODELS to the directory that holds {MINILM_DIR}/.",
            dir.join(file).display()
        );
    }
    dir
}

fn minilm() -> &'static Embedder {
    static MODEL: OnceLock<Embedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = minilm_dir();
        Embedder::load(&dir, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_paraphrases_score_above_unrelated_pairs() {
    let e = minilm();
    assert_eq!(e.kind(), ModelKind::MiniLm);
    assert_eq!(e.dim(), 384);
    let pairs = [
        (
            "A man is playing a guitar.",
            "Someone is strumming a guitar.",
        ),
        (
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
        ),
        ("The cat sat on the mat.", "A cat is sitting on a rug."),
        (
            "The stock market fell sharply today.",
            "Share prices dropped steeply this afternoon.",
        ),
    ];
    let texts: Vec<&str> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let v = e.embed_passages(&texts).unwrap();
    for x in &v {
        assert!((dot(x, x) - 1.0).abs() < 1e-4);
    }
    for i in 0..pairs.len() {
        let same = dot(&v[2 * i], &v[2 * i + 1]);
        for j in (0..pairs.len()).filter(|&j| j != i) {
            let other = dot(&v[2 * i], &v[2 * j + 1]);
            assert!(
                same > other + 0.2,
                "{:?}: paraphrase {same:.3} vs unrelated {other:.3}",
                pairs[i].0
            );
        }
    }
    // No prefixes: query and passage embeddings of a text are the same.
    let q = e.embed_queries(&[texts[0]]).unwrap().remove(0);
    assert!(dot(&q, &v[0]) > 0.9999);
}

#[test]
fn minilm_tokens_and_truncation() {
    let e = minilm();
    assert_eq!(e.max_tokens(), 254);
    let text = "Kura indexes passages, offline.";
    let tokens = e.tokenize(text).unwrap();
    assert_eq!(tokens.len(), e.count_tokens(text));
    let first = &text[tokens[0].start..tokens[0].end];
    assert!(!first.is_empty() && "Kura".starts_with(first), "{tokens:?}");
    let last = tokens.last().unwrap();
    assert_eq!(&text[last.start..last.end], ".");
    let long = "word ".repeat(600);
    assert!(e.count_tokens(&long) > e.max_tokens());
    let v = e.embed_passages(&[&long, text]).unwrap();
    assert_eq!(v.len(), 2);
}

#[test]
fn minilm_loads_from_safetensors_path() {
    let file = minilm_dir().join("model.safetensors");
    let e = Embedder::load(&file, &Device::Cpu).unwrap();
    let a = e.embed_passages(&["hello world"]).unwrap().remove(0);
    let b = minilm().embed_passages(&["hello world"]).unwrap().remove(0);
    assert!(dot(&a, &b) > 0.99999);
}

#[test]
fn broken_minilm_files_are_errors_naming_the_file() {
    let src = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // Truncated weights.
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    let cut = dir.path().join("model.safetensors");
    std::fs::write(&cut, &weights[..weights.len() / 2]).unwrap();
    let err = Embedder::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains(cut.to_str().unwrap()), "{err}");
    // A config for an architecture the encoder does not run.
    std::fs::write(&cut, &weights).unwrap();
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    let bad = dir.path().join("config.json");
    std::fs::write(&bad, config.replace("\"gelu\"", "\"relu\"")).unwrap();
    let err = Embedder::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, EmbedError::Config { .. }), "{err}");
    assert!(err.to_string().contains(bad.to_str().unwrap()), "{err}");
}
