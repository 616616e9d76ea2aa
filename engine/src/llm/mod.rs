//! The local LLM engine: GGUF loading, one transformer decoder for every architecture,
//! tokenizer and chat template from the model file, sampling and streaming generation.
//!
//! Why our own code rather than candle-transformers' quantized models: those keep the
//! KV cache inside the model (one conversation at a time) and their linear layers
//! cannot carry LoRA adapters. Here the weights ([`Model`]) are shared and read-only,
//! each request owns its [`Session`] (KV cache), and every projection is a
//! [`Linear`] that can add adapters chosen per request — so the model that was
//! fine-tuned is the model that is served. `tests/llm_reference.rs` checks the
//! numerics against candle-transformers on the real model files.
//!
//! Map of the module:
//!
//! | file | what |
//! |---|---|
//! | `device.rs` | [`DeviceChoice`]: `--device cpu\|cuda[:N]` |
//! | `gguf.rs` | [`GgufFile`]: metadata and tensors, validated; errors name the file |
//! | `error.rs` | [`LlmError`] |
//! | `tokenizer.rs` | [`Tokenizer`] from GGUF metadata; [`TextStream`] for UTF-8-safe streaming |
//! | `template.rs` | [`ChatTemplate`] (the file's Jinja template, ChatML fallback) |
//! | `kquant.rs` | our AVX-512 VNNI matmul for Q4_K/Q6_K weights, read in place |
//! | `linear.rs` | [`Linear`]: quantized weight + bias + LoRA adapters |
//! | `decode_attention.rs` | one new token's attention over the KV cache (AVX-512) |
//! | `layers.rs` | RMSNorm, RoPE, KV cache, grouped-query attention |
//! | `decoder.rs` | [`Decoder`](decoder::Decoder): the pre-norm GQA + SwiGLU decoder, inference and training forward, configured by a [`Family`](decoder::Family) |
//! | `qwen2.rs`, `llama.rs` | one architecture each: its metadata prefix, defaults, biases, RoPE style and checks |
//! | `model.rs` | [`Model`] over the architectures, [`Session`] |
//! | `simd.rs` | 512-bit `exp` and softmax row sums shared by the kernels |
//! | `sampling.rs` | [`Sampler`]: greedy, temperature, top-k/p, min-p, repetition penalty |
//! | `generate.rs` | [`generate`], [`Llm`] (model + tokenizer + template) |
//! | `quantize.rs` | [`quantize_gguf`]: re-quantize a GGUF |
//! | `fixtures.rs` | test support: a tiny random Qwen2 GGUF |
//!
//! ```no_run
//! # fn main() -> Result<(), kura::llm::LlmError> {
//! use kura::llm::{ChatMessage, GenerateParams, Llm};
//! let llm = Llm::load("models/smollm2-135m-instruct-q4_1.gguf", &candle_core::Device::Cpu)?;
//! let mut session = llm.model.new_session();
//! let reply = llm.chat(&mut session, &[ChatMessage::user("What is the capital of France?")],
//!     &GenerateParams::default(), None, &mut |piece| print!("{piece}"))?;
//! assert!(!reply.text.is_empty());
//! # Ok(()) }
//! ```

pub(crate) mod decode_attention;
pub(crate) mod decoder;
mod device;
mod error;
/// Tiny random-weight GGUF models for tests (the `fixtures` feature).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub(crate) mod fused;
mod generate;
mod gguf;
// The AVX-512 kernels: public only for their micro-benchmark (the `kernels` feature).
#[cfg(feature = "kernels")]
pub mod kquant;
#[cfg(not(feature = "kernels"))]
pub(crate) mod kquant;
pub(crate) mod layers;
mod linear;
pub(crate) mod llama;
mod model;
mod quantize;
pub(crate) mod qwen2;
mod sampling;
pub(crate) mod simd;
mod template;
mod tokenizer;

pub use device::DeviceChoice;
pub use error::{LlmError, Result};
pub use generate::{generate, FinishReason, GenerateParams, Generation, Llm};
pub use gguf::{GgufFile, MetadataValue};
pub use linear::{AdapterId, Linear, LoraAdapter, LoraDropout};
pub use model::{
    prefill_chunk, Architecture, Model, ModelInfo, Session, PREFILL_CHUNK, PREFILL_CHUNK_AMX,
};
pub use quantize::{quantize_gguf, QuantType, QuantizeReport};
pub use sampling::{argmax, Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate, Role, CHATML_TEMPLATE};
pub use tokenizer::{TextStream, Tokenizer, LLAMA3_PATTERN, QWEN2_PATTERN};
