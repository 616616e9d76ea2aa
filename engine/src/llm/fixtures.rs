//! Test support: a tiny random-weight Qwen2 model written as a real GGUF file.
//!
//! Tests of the generation loop, the loader's errors and re-quantization should not need
//! a 500 MB download. [`write_tiny_qwen2_gguf`] writes a complete, valid Qwen2 GGUF —
//! 2 blocks, hidden size 64, 4 query heads sharing 2 K/V heads, Q8_0 matmul weights,
//! a byte-level BPE vocabulary of 256 bytes + a few merges + ChatML control tokens,
//! a ChatML template and `<|im_end|>` as EOS — that loads through the normal loader in
//! milliseconds. Its weights are random (from `seed`), so its text is gibberish, but
//! it is deterministic, which is all the tests need.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("tiny.gguf");
//! kura::llm::fixtures::write_tiny_qwen2_gguf(&path, 42).unwrap();
//! let llm = kura::llm::Llm::load(&path, &candle_core::Device::Cpu).unwrap();
//! assert_eq!(llm.model.info().architecture, "qwen2");
//! ```

use super::error::Result;
use super::gguf::MetadataValue;
use super::quantize::write_gguf;
use super::template::CHATML_TEMPLATE;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Hidden size of the tiny model.
pub const TINY_HIDDEN: usize = 64;
/// Context length of the tiny model (small, to test the context check).
pub const TINY_CONTEXT: usize = 256;

/// Merges of the tiny vocabulary (byte-level symbols; `Ġ` is a space).
const TINY_MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("e", "r"),
    ("o", "n"),
    ("a", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("l", "l"),
    ("Ġ", "s"),
    ("o", "r"),
    ("e", "n"),
    ("Ġ", "w"),
    ("a", "t"),
    ("Ġ", "c"),
    ("i", "s"),
    ("Ġ", "o"),
    ("e", "s"),
    ("in", "g"),
    ("Ġ", "is"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("ã", "ģ"),
];

/// Control tokens appended after the BPE vocabulary.
pub const TINY_SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The GPT-2 byte-to-symbol table (same as the tokenizer's).
fn byte_symbols() -> Vec<String> {
    let mut n = 0u32;
    (0..=255u8)
        .map(|b| {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            if printable {
                char::from(b).to_string()
            } else {
                let c = char::from_u32(256 + n).expect("valid");
                n += 1;
                c.to_string()
            }
        })
        .collect()
}

/// The tiny vocabulary: 256 byte symbols, one token per merge, then the control tokens.
pub fn tiny_vocab() -> Vec<String> {
    let mut v = byte_symbols();
    for (a, b) in TINY_MERGES {
        v.push(format!("{a}{b}"));
    }
    v.extend(TINY_SPECIALS.iter().map(|s| s.to_string()));
    v
}

struct Gen(StdRng);

impl Gen {
    fn tensor(&mut self, dims: &[usize], scale: f32, offset: f32) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| offset + scale * (self.0.random::<f32>() * 2.0 - 1.0))
            .collect();
        Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
    }
    fn q8(&mut self, dims: &[usize], scale: f32) -> Result<QTensor> {
        Ok(QTensor::quantize(
            &self.tensor(dims, scale, 0.0)?,
            GgmlDType::Q8_0,
        )?)
    }
    fn f32(&mut self, dims: &[usize], scale: f32, offset: f32) -> Result<QTensor> {
        Ok(QTensor::quantize(
            &self.tensor(dims, scale, offset)?,
            GgmlDType::F32,
        )?)
    }
}

/// Writes the tiny Qwen2 model to `path`; the weights depend only on `seed`.
pub fn write_tiny_qwen2_gguf(path: impl AsRef<Path>, seed: u64) -> Result<()> {
    write_tiny_qwen2_gguf_with_context(path, seed, TINY_CONTEXT)
}

/// The tiny model with a longer context: a prompt of tens of thousands of tokens
/// takes it seconds to prefill (attention grows with the square of the length), each
/// prefill chunk a fraction of that — what tests of a cancelled prefill need.
pub fn write_tiny_qwen2_gguf_with_context(
    path: impl AsRef<Path>,
    seed: u64,
    context: usize,
) -> Result<()> {
    let (h, heads, kv_heads, ffn, layers) = (TINY_HIDDEN, 4usize, 2usize, 128usize, 2usize);
    let kv = kv_heads * h / heads;
    let vocab = tiny_vocab();
    let mut g = Gen(StdRng::seed_from_u64(seed));

    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), g.q8(&[vocab.len(), h], 1.0)?),
        ("output_norm.weight".into(), g.f32(&[h], 0.1, 1.0)?),
    ];
    for i in 0..layers {
        let p = format!("blk.{i}");
        let mut add = |name: &str, t: QTensor| tensors.push((format!("{p}.{name}"), t));
        add("attn_norm.weight", g.f32(&[h], 0.1, 1.0)?);
        add("attn_q.weight", g.q8(&[h, h], 0.25)?);
        add("attn_q.bias", g.f32(&[h], 0.1, 0.0)?);
        add("attn_k.weight", g.q8(&[kv, h], 0.25)?);
        add("attn_k.bias", g.f32(&[kv], 0.1, 0.0)?);
        add("attn_v.weight", g.q8(&[kv, h], 0.25)?);
        add("attn_v.bias", g.f32(&[kv], 0.1, 0.0)?);
        add("attn_output.weight", g.q8(&[h, h], 0.25)?);
        add("ffn_norm.weight", g.f32(&[h], 0.1, 1.0)?);
        add("ffn_gate.weight", g.q8(&[ffn, h], 0.25)?);
        add("ffn_up.weight", g.q8(&[ffn, h], 0.25)?);
        add("ffn_down.weight", g.q8(&[h, ffn], 0.25)?);
    }

    let id = |s: &str| vocab.iter().position(|t| t == s).expect("special present") as u32;
    let strings =
        |xs: Vec<String>| MetadataValue::Array(xs.into_iter().map(MetadataValue::String).collect());
    let n_normal = vocab.len() - TINY_SPECIALS.len();
    let types = (0..vocab.len())
        .map(|i| MetadataValue::I32(if i < n_normal { 1 } else { 3 }))
        .collect();
    let u = |x: usize| MetadataValue::U32(x as u32);
    let metadata: Vec<(String, MetadataValue)> = vec![
        (
            "general.architecture".into(),
            MetadataValue::String("qwen2".into()),
        ),
        (
            "general.name".into(),
            MetadataValue::String("kura tiny qwen2 (random weights)".into()),
        ),
        ("qwen2.block_count".into(), u(layers)),
        ("qwen2.context_length".into(), u(context)),
        ("qwen2.embedding_length".into(), u(h)),
        ("qwen2.feed_forward_length".into(), u(ffn)),
        ("qwen2.attention.head_count".into(), u(heads)),
        ("qwen2.attention.head_count_kv".into(), u(kv_heads)),
        ("qwen2.rope.freq_base".into(), MetadataValue::F32(10_000.0)),
        (
            "qwen2.attention.layer_norm_rms_epsilon".into(),
            MetadataValue::F32(1e-6),
        ),
        (
            "tokenizer.ggml.model".into(),
            MetadataValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetadataValue::String("qwen2".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(vocab.clone())),
        (
            "tokenizer.ggml.token_type".into(),
            MetadataValue::Array(types),
        ),
        (
            "tokenizer.ggml.merges".into(),
            strings(
                TINY_MERGES
                    .iter()
                    .map(|(a, b)| format!("{a} {b}"))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            MetadataValue::U32(id("<|endoftext|>")),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            MetadataValue::U32(id("<|im_end|>")),
        ),
        (
            "tokenizer.ggml.add_bos_token".into(),
            MetadataValue::Bool(false),
        ),
        (
            "tokenizer.chat_template".into(),
            MetadataValue::String(CHATML_TEMPLATE.into()),
        ),
    ];
    write_gguf(path.as_ref(), &metadata, &tensors)
}
