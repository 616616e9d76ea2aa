//! Qwen2 (and Qwen2.5): a Llama-like decoder with biases on the q/k/v projections.
//!
//! Per block: `x += Attn(RMSNorm(x))`, `x += MLP(RMSNorm(x))`, where attention is
//! grouped-query (e.g. 14 query heads share 2 K/V heads in the 0.5B) with NeoX-style
//! rotary embeddings (base `qwen2.rope.freq_base`, 1e6 for Qwen2.5) and the MLP is
//! SwiGLU — the shared [`Decoder`] with [`FAMILY`]'s settings. The output projection
//! is tied to the token embeddings when the file has no `output.weight`. Numerics
//! follow candle-transformers' `quantized_qwen2`, which `tests/llm_reference.rs`
//! checks against.

use super::decoder::{Config, Decoder, Family};
use super::error::Result;
use super::gguf::GgufFile;
use super::layers::RopeStyle;
use candle_core::Device;

/// How Qwen2 GGUFs describe the decoder: `qwen2.*` metadata (RoPE base 10,000, RMSNorm
/// epsilon 1e-6 and a 32,768-token context when absent), biases on q/k/v, NeoX-style
/// RoPE.
pub const FAMILY: Family = Family {
    metadata_prefix: "qwen2",
    default_rope_theta: 10_000.0,
    default_rms_norm_eps: 1e-6,
    default_context_length: 32_768,
    qkv_bias: true,
    rope_style: RopeStyle::Neox,
};

/// Reads the configuration from a Qwen2 GGUF file's metadata.
pub fn config(file: &GgufFile) -> Result<Config> {
    Config::from_gguf(file, &FAMILY)
}

/// Loads a Qwen2 model from an open GGUF file.
pub fn load(file: &mut GgufFile, device: &Device) -> Result<Decoder> {
    let c = config(file)?;
    Decoder::load(file, c, device)
}
