//! Peak memory of a LoRA job, estimated before it starts.
//!
//! An overnight job that dies of memory at 23:10 wastes the night; one that pushes the
//! workstation into swap takes the chat service down with it. So the trainer estimates
//! its peak resident memory from the model's shapes and the job's batch and sequence
//! length before loading anything, and refuses a job that cannot fit, saying what to
//! lower.
//!
//! The model of memory (f32 training on the CPU):
//!
//! * **fixed**: the dense copy of the base (`params × 4` bytes, plus a quarter for the
//!   conversion's transient buffers), the quantized file while it is converted, the
//!   adapters with their gradients and AdamW moments (`lora params × 16`), 256 MiB of
//!   runtime;
//! * **per token** of a micro-batch: what the CPU training step
//!   ([`super::cpu_step`]) keeps for its backward pass, per layer the block's input,
//!   both norms' outputs, the attention output and the residual between (`5 × hidden`),
//!   `q`, `k`, `v` (`hidden + 2 × kv`), `gate` and `up` (`2 × intermediate`) and the
//!   adapters' `x·A` (`7 × rank`), plus the dropout masks when dropout is on
//!   (`6 × hidden + intermediate`); and once, the step's working buffers
//!   (`2 × intermediate + 8 × hidden`). All f32.
//! * **per thread**: two blocks of `64 × seq` attention scores (the backward pass);
//! * **once**: one chunk of 128 rows of vocabulary-sized logits.
//!
//! Measured on Qwen2.5-0.5B, rank 16, all seven targets, with
//! `kura bench train --no-reference --runs 1 --warmup 0 --steps 1 --batch B --seq L`
//! (batch × length → peak RSS): 1 × 256 → 3.66 GB, 2 × 256 → 4.06 GB, 1 × 512 →
//! 4.06 GB, 2 × 512 → 4.86 GB, 1 × 1024 → 4.86 GB; the estimate is 3–5% above each.
//! (With candle's autograd, still the path on other devices, the same jobs peak at
//! 4.7–9.3 GB; with autograd and without the fused ops they peaked at 6.8–16.7 GB.)

use super::cpu_step::CAUSAL_BLOCK;
use super::lora::LoraConfig;
use super::TrainError;
use crate::llm::GgufFile;
use serde::Serialize;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The shapes of a model that decide its training memory (read from GGUF metadata,
/// without loading weights).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShape {
    /// Parameters of the whole model.
    pub params: u64,
    /// Bytes of the quantized tensors.
    pub quantized_bytes: u64,
    /// Decoder blocks.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// MLP inner size.
    pub intermediate: usize,
    /// Query heads.
    pub heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// `(in, out)` of each projection LoRA may target, per layer:
    /// q, k, v, o, gate, up, down.
    pub projections: [(usize, usize); 7],
}

impl ModelShape {
    /// Reads the shapes of `file`.
    pub fn of(file: &GgufFile) -> Result<Self, TrainError> {
        let arch = file.architecture()?.to_string();
        let key = |k: &str| file.u32(&format!("{arch}.{k}")).map(|v| v as usize);
        let layers = key("block_count")?;
        let hidden = key("embedding_length")?;
        let intermediate = key("feed_forward_length")?;
        let heads = key("attention.head_count")?;
        let kv_heads = file
            .u32_opt(&format!("{arch}.attention.head_count_kv"))?
            .map_or(heads, |v| v as usize);
        let kv = hidden / heads.max(1) * kv_heads;
        let (mut params, mut quantized_bytes) = (0u64, 0u64);
        for (_, info) in file.content().tensor_infos.iter() {
            let n = info.shape.elem_count() as u64;
            params += n;
            quantized_bytes +=
                n * info.ggml_dtype.type_size() as u64 / info.ggml_dtype.block_size() as u64;
        }
        let vocab = file
            .tensor_info("token_embd.weight")
            .map_or(0, |(_, dims)| dims.first().copied().unwrap_or(0));
        Ok(Self {
            params,
            quantized_bytes,
            layers,
            hidden,
            intermediate,
            heads,
            vocab,
            projections: [
                (hidden, hidden),
                (hidden, kv),
                (hidden, kv),
                (hidden, hidden),
                (hidden, intermediate),
                (hidden, intermediate),
                (intermediate, hidden),
            ],
        })
    }
}

/// The estimated peak resident memory of a job, by part (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Dense base, conversion buffers, quantized file, runtime.
    pub weights: u64,
    /// LoRA weights, gradients and AdamW moments.
    pub adapters: u64,
    /// Activations kept for the backward pass (one micro-batch).
    pub activations: u64,
    /// Logits of the scored positions and their gradients.
    pub logits: u64,
    /// The sum.
    pub total: u64,
}

impl MemoryEstimate {
    /// Estimates a job on `shape` with adapters `lora`, `batch` sequences of up to
    /// `seq_len` tokens per micro-batch.
    pub fn of(shape: &ModelShape, lora: &LoraConfig, batch: usize, seq_len: usize) -> Self {
        let f = 4u64; // f32
        let weights = shape.params * f * 5 / 4 + shape.quantized_bytes + (256 << 20);
        let per_layer_lora: u64 = lora
            .targets
            .iter()
            .map(|t| {
                let (i, o) = shape.projections[*t as usize];
                ((i + o) * lora.rank) as u64
            })
            .sum();
        let adapters = per_layer_lora * shape.layers as u64 * f * 4;
        let tokens = (batch * seq_len) as u64;
        let (h, i, kv) = (shape.hidden, shape.intermediate, shape.projections[1].1);
        let masks = if lora.dropout > 0.0 { 6 * h + i } else { 0 };
        let per_layer = 6 * h + 2 * kv + 2 * i + 7 * lora.rank + masks;
        let per_token = shape.layers * per_layer + 2 * i + 8 * h;
        let threads = rayon::current_num_threads() as u64;
        let activations =
            tokens * per_token as u64 * f + 2 * threads * (CAUSAL_BLOCK * seq_len) as u64 * f;
        let logits = 128 * shape.vocab as u64 * f;
        Self {
            weights,
            adapters,
            activations,
            logits,
            total: weights + adapters + activations + logits,
        }
    }

    /// Refuses when the estimate exceeds `available` by more than a tenth (the
    /// estimate errs high); the message names what to lower.
    pub fn check(&self, available: u64, batch: usize, seq_len: usize) -> Result<(), TrainError> {
        if self.total as f64 <= available as f64 * 1.1 {
            return Ok(());
        }
        Err(TrainError::OutOfMemory {
            needed_gib: self.total as f64 / GIB,
            available_gib: available as f64 / GIB,
            hint: format!(
                "activations for batch_size {batch} × max_seq_len {seq_len} take {:.1} GiB: \
                 lower train.batch_size (use train.grad_accum for the same effective batch) \
                 or train.max_seq_len, or close other programs",
                (self.activations + self.logits) as f64 / GIB
            ),
        })
    }

    /// The total in GiB.
    pub fn total_gib(&self) -> f64 {
        self.total as f64 / GIB
    }
}

/// Memory the system can give a new job now (`MemAvailable` of `/proc/meminfo`),
/// `None` where that is unknown.
pub fn available_memory() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

/// The machine's physical memory (`MemTotal`), for jobs that run later.
pub fn total_memory() -> Option<u64> {
    meminfo_field("MemTotal:")
}

fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Target;

    /// Qwen2.5-0.5B's shapes.
    fn qwen05() -> ModelShape {
        ModelShape {
            params: 494_032_768,
            quantized_bytes: 491_400_064,
            layers: 24,
            hidden: 896,
            intermediate: 4864,
            heads: 14,
            vocab: 151_936,
            projections: [
                (896, 896),
                (896, 128),
                (896, 128),
                (896, 896),
                (896, 4864),
                (896, 4864),
                (4864, 896),
            ],
        }
    }

    fn lora16() -> LoraConfig {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
        }
    }

    #[test]
    fn the_estimate_covers_the_measured_peaks() {
        // (batch, length, measured peak RSS in GB) with rank 16 on all targets.
        for (batch, len, measured) in [
            (1, 256, 3.66),
            (2, 256, 4.06),
            (1, 512, 4.06),
            (2, 512, 4.86),
            (1, 1024, 4.86),
        ] {
            let e = MemoryEstimate::of(&qwen05(), &lora16(), batch, len);
            let gb = e.total as f64 / 1e9;
            assert!(
                gb >= measured && gb <= measured * 1.15,
                "{batch}×{len}: estimated {gb:.2} GB, measured {measured} GB"
            );
        }
    }

    #[test]
    fn a_job_that_cannot_fit_is_refused_with_what_to_lower() {
        let e = MemoryEstimate::of(&qwen05(), &lora16(), 8, 2048);
        let err = e.check(24 << 30, 8, 2048).unwrap_err().to_string();
        assert!(err.contains("batch_size 8"), "{err}");
        assert!(err.contains("max_seq_len"), "{err}");
        assert!(MemoryEstimate::of(&qwen05(), &lora16(), 1, 128)
            .check(24 << 30, 1, 128)
            .is_ok());
    }
}
