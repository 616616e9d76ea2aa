//! Llama-family dense decoders (Llama 2/3, SmolLM2, …) as llama.cpp stores them.
//!
//! Per block: `x += Attn(RMSNorm(x))`, `x += MLP(RMSNorm(x))`, with grouped-query
//! attention (SmolLM2-135M: 9 query heads share 3 K/V heads), no biases, and a SwiGLU
//! MLP — the shared [`Decoder`] with [`FAMILY`]'s settings. One detail differs from the
//! Hugging Face checkpoints: llama.cpp's converter permutes the rows of
//! `attn_q`/`attn_k` so that rotary embeddings apply to *interleaved* pairs
//! `(2i, 2i+1)` instead of halves — so GGUF Llama weights must be used with interleaved
//! RoPE (`rope_i`), exactly as candle-transformers' `quantized_llama` does. The output
//! projection is tied to the token embeddings when the file has no `output.weight`
//! (SmolLM2). Mixture-of-experts variants and partial rotary embeddings are refused
//! when the file is read, not discovered as wrong answers later.

use super::decoder::{invalid_metadata, Config, Decoder, Family};
use super::error::Result;
use super::gguf::GgufFile;
use super::layers::RopeStyle;
use candle_core::Device;

/// How Llama GGUFs describe the decoder: `llama.*` metadata (RoPE base 10,000, RMSNorm
/// epsilon 1e-5 and a 4,096-token context when absent), no q/k/v biases, interleaved
/// RoPE.
pub const FAMILY: Family = Family {
    metadata_prefix: "llama",
    default_rope_theta: 10_000.0,
    default_rms_norm_eps: 1e-5,
    default_context_length: 4_096,
    qkv_bias: false,
    rope_style: RopeStyle::Interleaved,
};

/// Reads the configuration from a Llama GGUF file's metadata, refusing what the
/// decoder does not implement (experts, partial rotary embeddings).
pub fn config(file: &GgufFile) -> Result<Config> {
    let c = Config::from_gguf(file, &FAMILY)?;
    if file.u32_opt("llama.expert_count")?.unwrap_or(0) > 1 {
        return Err(invalid_metadata(
            file,
            "llama.expert_count",
            "mixture-of-experts Llama models are not supported".into(),
        ));
    }
    if let Some(rope_dim) = file.u32_opt("llama.rope.dimension_count")? {
        if rope_dim as usize != c.head_dim {
            return Err(invalid_metadata(
                file,
                "llama.rope.dimension_count",
                format!(
                    "{rope_dim}: partial rotary embeddings (head size {}) are not supported",
                    c.head_dim
                ),
            ));
        }
    }
    Ok(c)
}

/// Loads a Llama-family model from an open GGUF file.
pub fn load(file: &mut GgufFile, device: &Device) -> Result<Decoder> {
    let c = config(file)?;
    Decoder::load(file, c, device)
}
