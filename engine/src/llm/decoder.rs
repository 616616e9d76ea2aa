//! The pre-norm transformer decoder that every supported architecture is an instance of.
//!
//! Qwen2 and the Llama family run the same block — `x += Attn(RMSNorm(x))`,
//! `x += MLP(RMSNorm(x))` with grouped-query attention and a SwiGLU MLP — over the same
//! llama.cpp tensor names (`token_embd`, `blk.N.attn_q`, …, `output_norm`, `output`).
//! What tells them apart is a handful of facts, not code: which metadata prefix holds
//! the hyper-parameters and what their defaults are, whether q/k/v carry biases, and how
//! rotary embeddings pair a head's dimensions. A [`Family`] states those facts; each
//! architecture file (`llama.rs`, `qwen2.rs`) declares its family, adds the checks only
//! it needs, and hands the resulting [`Config`] to [`Decoder::load`]. So the forward
//! pass, the training forward and the LoRA wiring are written once and cannot drift
//! apart between architectures.
//!
//! Inside the engine, `qwen2::load(&mut gguf_file, &device)` gives a `Decoder`; its
//! `new_caches()` and `forward(&tokens, position, &mut caches, &adapters)` run it. Front
//! ends reach it only through [`crate::llm::Llm`].

use super::error::{LlmError, Result};
use super::gguf::GgufFile;
use super::layers::{self, KvCache, RmsNorm, RopeStyle, Rotary};
use super::linear::{AdapterId, Linear, LoraDropout};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// What an architecture family fixes about its decoder: where its GGUF files keep the
/// hyper-parameters, the defaults for the keys they may omit, and the layer variants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    /// The metadata prefix (`general.architecture`): `llama.block_count`, ….
    pub metadata_prefix: &'static str,
    /// RoPE base when `<prefix>.rope.freq_base` is absent.
    pub default_rope_theta: f32,
    /// RMSNorm epsilon when `<prefix>.attention.layer_norm_rms_epsilon` is absent.
    pub default_rms_norm_eps: f32,
    /// Trained context length when `<prefix>.context_length` is absent.
    pub default_context_length: usize,
    /// Whether the q/k/v projections have biases (`blk.N.attn_q.bias`, …).
    pub qkv_bias: bool,
    /// How rotary embeddings pair up the dimensions of a head.
    pub rope_style: RopeStyle,
}

/// Hyper-parameters of one decoder, read from a GGUF file's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Trained context length.
    pub context_length: usize,
    /// Whether the q/k/v projections have biases.
    pub qkv_bias: bool,
    /// How rotary embeddings pair up the dimensions of a head.
    pub rope_style: RopeStyle,
}

impl Config {
    /// Reads the configuration of a `family` model from a GGUF file's metadata and
    /// checks that the head counts and the embedding table agree with it.
    pub fn from_gguf(file: &GgufFile, family: &Family) -> Result<Self> {
        let p = family.metadata_prefix;
        let hidden_size = file.u32(&format!("{p}.embedding_length"))? as usize;
        let num_heads = file.u32(&format!("{p}.attention.head_count"))? as usize;
        let num_kv_heads = file
            .u32_opt(&format!("{p}.attention.head_count_kv"))?
            .map_or(num_heads, |n| n as usize);
        let (vocab_size, embd) = match file.tensor_info("token_embd.weight") {
            Some((_, dims)) if dims.len() == 2 => (dims[0], dims[1]),
            _ => {
                return Err(LlmError::MissingTensor {
                    path: file.path().to_path_buf(),
                    name: "token_embd.weight".into(),
                })
            }
        };
        if num_heads == 0
            || num_kv_heads == 0
            || !hidden_size.is_multiple_of(num_heads)
            || !num_heads.is_multiple_of(num_kv_heads)
        {
            return Err(invalid_metadata(
                file,
                &format!("{p}.attention.head_count"),
                format!("{num_heads} heads / {num_kv_heads} KV heads do not divide hidden size {hidden_size}"),
            ));
        }
        if embd != hidden_size {
            return Err(invalid_metadata(
                file,
                &format!("{p}.embedding_length"),
                format!("{hidden_size}, but token_embd.weight has {embd} columns"),
            ));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: file.u32(&format!("{p}.feed_forward_length"))? as usize,
            num_layers: file.u32(&format!("{p}.block_count"))? as usize,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size / num_heads,
            rope_theta: file
                .f32_opt(&format!("{p}.rope.freq_base"))?
                .unwrap_or(family.default_rope_theta),
            rms_norm_eps: file
                .f32_opt(&format!("{p}.attention.layer_norm_rms_epsilon"))?
                .unwrap_or(family.default_rms_norm_eps),
            context_length: file
                .u32_opt(&format!("{p}.context_length"))?
                .map_or(family.default_context_length, |n| n as usize),
            qkv_bias: family.qkv_bias,
            rope_style: family.rope_style,
        })
    }
}

/// The error for metadata key `key` of `file` that the decoder cannot run with.
pub(crate) fn invalid_metadata(file: &GgufFile, key: &str, reason: String) -> LlmError {
    LlmError::InvalidMetadata {
        path: file.path().to_path_buf(),
        key: key.to_string(),
        reason,
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `[b, seq, heads·head_dim]` projections → `[b, heads, seq, head_dim]` per head.
    fn split_heads(&self, q: Tensor, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, seq, _) = q.dims3()?;
        let q = q
            .reshape((b, seq, self.num_heads, self.head_dim))?
            .transpose(1, 2)?;
        let k = k
            .reshape((b, seq, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, seq, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        Ok((q, k, v))
    }

    fn forward(
        &self,
        x: &Tensor,
        start: usize,
        rotary: &Rotary,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        adapters: &[AdapterId],
    ) -> Result<Tensor> {
        let (q, k, v) = self.split_heads(
            self.q.forward(x, adapters)?,
            self.k.forward(x, adapters)?,
            self.v.forward(x, adapters)?,
        )?;
        let q = rotary.apply(&q, start)?;
        let k = rotary.apply(&k, start)?;
        let (k, v) = cache.append(&k, &v)?;
        let y = layers::attention(&q, &k, &v, mask)?;
        self.o.forward(&y, adapters)
    }

    /// The training forward over whole sequences (positions `0..seq`, no cache),
    /// differentiable end to end.
    fn forward_train(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: Option<&Tensor>,
        adapters: &[AdapterId],
        dropout: Option<&LoraDropout>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.split_heads(
            self.q.forward_train(x, adapters, dropout)?,
            self.k.forward_train(x, adapters, dropout)?,
            self.v.forward_train(x, adapters, dropout)?,
        )?;
        let q = rotary.apply_differentiable(&q)?;
        let k = rotary.apply_differentiable(&k)?;
        let y = layers::attention_differentiable(&q, &k, &v, mask)?;
        self.o.forward_train(&y, adapters, dropout)
    }

    fn to_dense(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            q: self.q.to_dense(dtype)?,
            k: self.k.to_dense(dtype)?,
            v: self.v.to_dense(dtype)?,
            o: self.o.to_dense(dtype)?,
            ..self.clone()
        })
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, adapters: &[AdapterId]) -> Result<Tensor> {
        let h = layers::swiglu(
            &self.gate.forward(x, adapters)?,
            &self.up.forward(x, adapters)?,
        )?;
        self.down.forward(&h, adapters)
    }

    fn forward_train(
        &self,
        x: &Tensor,
        adapters: &[AdapterId],
        dropout: Option<&LoraDropout>,
    ) -> Result<Tensor> {
        let gate = self.gate.forward_train(x, adapters, dropout)?;
        let up = self.up.forward_train(x, adapters, dropout)?;
        // `Tensor::silu` is a unary op with a backward pass.
        self.down
            .forward_train(&(gate.silu()? * up)?, adapters, dropout)
    }

    fn to_dense(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            gate: self.gate.to_dense(dtype)?,
            up: self.up.to_dense(dtype)?,
            down: self.down.to_dense(dtype)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn to_dense(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            attn_norm: self.attn_norm.to_dtype(dtype)?,
            attn: self.attn.to_dense(dtype)?,
            ffn_norm: self.ffn_norm.to_dtype(dtype)?,
            mlp: self.mlp.to_dense(dtype)?,
        })
    }
}

/// A loaded decoder: weights only; per-sequence state lives in the caller's caches.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: Config,
    embed: Arc<QTensor>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    device: Device,
    /// The dequantized embedding table (training copies only, see `to_dense`).
    embed_dense: Option<Tensor>,
}

/// The one-dimensional tensor `name` of `len` values, dequantized.
fn vector(file: &mut GgufFile, name: &str, len: usize, device: &Device) -> Result<Tensor> {
    Ok(file
        .tensor_shaped(name, &[len], device)?
        .dequantize(device)?)
}

/// The projection `{prefix}.weight: [out_dim, in_dim]`, with `{prefix}.bias` if `bias`.
fn linear(
    file: &mut GgufFile,
    prefix: &str,
    out_dim: usize,
    in_dim: usize,
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    let w = file.tensor_shaped(&format!("{prefix}.weight"), &[out_dim, in_dim], device)?;
    let b = if bias {
        Some(vector(file, &format!("{prefix}.bias"), out_dim, device)?)
    } else {
        None
    };
    Linear::new(prefix, Arc::new(w), b)
}

impl Decoder {
    /// Loads the weights that `config` describes from an open GGUF file. The output
    /// projection is tied to the token embeddings when the file has no `output.weight`.
    pub fn load(file: &mut GgufFile, config: Config, device: &Device) -> Result<Self> {
        let c = config;
        let (h, kv, ffn) = (
            c.hidden_size,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        let embed =
            Arc::new(file.tensor_shaped("token_embd.weight", &[c.vocab_size, h], device)?);
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("blk.{i}");
            let proj = |file: &mut GgufFile, name: &str, out_dim, in_dim, bias| {
                linear(file, &format!("{p}.{name}"), out_dim, in_dim, bias, device)
            };
            let norm = |file: &mut GgufFile, name: &str| {
                let weight = vector(file, &format!("{p}.{name}.weight"), h, device)?;
                Ok::<_, LlmError>(RmsNorm::new(weight, c.rms_norm_eps))
            };
            blocks.push(Block {
                attn_norm: norm(file, "attn_norm")?,
                attn: Attention {
                    q: proj(file, "attn_q", h, h, c.qkv_bias)?,
                    k: proj(file, "attn_k", kv, h, c.qkv_bias)?,
                    v: proj(file, "attn_v", kv, h, c.qkv_bias)?,
                    o: proj(file, "attn_output", h, h, false)?,
                    num_heads: c.num_heads,
                    num_kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                },
                ffn_norm: norm(file, "ffn_norm")?,
                mlp: Mlp {
                    gate: proj(file, "ffn_gate", ffn, h, false)?,
                    up: proj(file, "ffn_up", ffn, h, false)?,
                    down: proj(file, "ffn_down", h, ffn, false)?,
                },
            });
        }
        let norm = RmsNorm::new(
            vector(file, "output_norm.weight", h, device)?,
            c.rms_norm_eps,
        );
        let lm_head = if file.has_tensor("output.weight") {
            linear(file, "output", c.vocab_size, h, false, device)?
        } else {
            Linear::new("token_embd", embed.clone(), None)?
        };
        let rotary = Rotary::new(
            c.head_dim,
            c.rope_theta,
            c.context_length,
            c.rope_style,
            device,
        )?;
        Ok(Self {
            config: c,
            embed,
            blocks,
            norm,
            lm_head,
            rotary,
            device: device.clone(),
            embed_dense: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fresh per-sequence caches, one per block.
    pub fn new_caches(&self) -> Vec<KvCache> {
        vec![KvCache::new(); self.blocks.len()]
    }

    /// Runs `tokens` at positions `start..` through the blocks, appending to `caches`,
    /// and returns the final-normed hidden states `[1, seq, hidden]`.
    pub fn forward_hidden(
        &self,
        tokens: &[u32],
        start: usize,
        caches: &mut [KvCache],
        adapters: &[AdapterId],
    ) -> Result<Tensor> {
        let seq = tokens.len();
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.embedding(&ids)?;
        let mask = if seq > 1 {
            Some(layers::causal_mask(seq, start, &self.device)?)
        } else {
            None
        };
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            let h = block.attn_norm.forward(&x)?;
            let h = block
                .attn
                .forward(&h, start, &self.rotary, mask.as_ref(), cache, adapters)?;
            x = (x + h)?;
            let h = block.ffn_norm.forward(&x)?;
            let h = block.mlp.forward(&h, adapters)?;
            x = (x + h)?;
        }
        self.norm.forward(&x)
    }

    /// Logits `[1, 1, vocab]` for the last of `tokens`.
    pub fn forward(
        &self,
        tokens: &[u32],
        start: usize,
        caches: &mut [KvCache],
        adapters: &[AdapterId],
    ) -> Result<Tensor> {
        let h = self.forward_hidden(tokens, start, caches, adapters)?;
        self.lm_head.forward(&layers::last_position(&h)?, adapters)
    }

    /// A training copy: every projection, the norms and the embedding table
    /// dequantized to `dtype` (QLoRA: the frozen base is the served GGUF's weights),
    /// without adapters. A tied output projection shares the embedding's memory.
    pub fn to_dense(&self, dtype: DType) -> Result<Self> {
        let embed = self.embed.dequantize(&self.device)?.to_dtype(dtype)?;
        let lm_head = if self.lm_head.name() == "token_embd" {
            self.lm_head.with_dense_weight(embed.clone())?
        } else {
            self.lm_head.to_dense(dtype)?
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| b.to_dense(dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: self.config.clone(),
            embed: self.embed.clone(),
            blocks,
            norm: self.norm.to_dtype(dtype)?,
            lm_head,
            rotary: self.rotary.clone(),
            device: self.device.clone(),
            embed_dense: Some(embed),
        })
    }

    /// The training forward: `ids: [batch, seq]` (u32, positions `0..seq`, right
    /// padding is harmless under the causal mask) → final-normed hidden states
    /// `[batch, seq, hidden]`, differentiable with respect to every adapter. Needs a
    /// copy made by [`Decoder::to_dense`].
    pub fn forward_train_hidden(
        &self,
        ids: &Tensor,
        adapters: &[AdapterId],
        dropout: Option<&LoraDropout>,
    ) -> Result<Tensor> {
        let embed = self.embed_dense.as_ref().ok_or_else(|| {
            LlmError::InvalidArgument(
                "the training forward needs a dense copy of the model (to_dense)".into(),
            )
        })?;
        let (b, seq) = ids.dims2()?;
        let mut x = embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            seq,
            self.config.hidden_size,
        ))?;
        let mask = if seq > 1 {
            Some(layers::causal_mask(seq, 0, &self.device)?)
        } else {
            None
        };
        for block in &self.blocks {
            let h = block.attn_norm.forward_differentiable(&x)?;
            let h = block
                .attn
                .forward_train(&h, &self.rotary, mask.as_ref(), adapters, dropout)?;
            x = (x + h)?;
            let h = block.ffn_norm.forward_differentiable(&x)?;
            let h = block.mlp.forward_train(&h, adapters, dropout)?;
            x = (x + h)?;
        }
        self.norm.forward_differentiable(&x)
    }

    /// The weights of a training copy (from [`Decoder::to_dense`]) as a
    /// [`layers::DecoderView`]; `None` for a quantized model.
    pub fn decoder_view(&self) -> Option<layers::DecoderView<'_>> {
        Some(layers::DecoderView {
            embed: self.embed_dense.as_ref()?,
            blocks: self
                .blocks
                .iter()
                .map(|b| layers::BlockView {
                    attn_norm: &b.attn_norm,
                    q: &b.attn.q,
                    k: &b.attn.k,
                    v: &b.attn.v,
                    o: &b.attn.o,
                    ffn_norm: &b.ffn_norm,
                    gate: &b.mlp.gate,
                    up: &b.mlp.up,
                    down: &b.mlp.down,
                })
                .collect(),
            norm: &self.norm,
            lm_head: &self.lm_head,
            rotary: &self.rotary,
            num_heads: self.config.num_heads,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
        })
    }

    /// The output projection (tied to the embeddings when the file has no
    /// `output.weight`).
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Every LoRA-capable projection, for attaching adapters.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = Vec::with_capacity(self.blocks.len() * 7);
        for b in &mut self.blocks {
            out.extend([&mut b.attn.q, &mut b.attn.k, &mut b.attn.v, &mut b.attn.o]);
            out.extend([&mut b.mlp.gate, &mut b.mlp.up, &mut b.mlp.down]);
        }
        out
    }
}
