//! The BERT / XLM-RoBERTa encoder on candle, shared by both embedding models.
//!
//! multilingual-e5-small (XLM-R vocabulary, 12 layers) and all-MiniLM-L6-v2 (BERT
//! vocabulary, 6 layers) are the same post-LayerNorm transformer encoder: word +
//! position + token-type embeddings and a LayerNorm, then layers of self-attention and
//! an erf-GELU feed-forward block, each followed by residual + LayerNorm. Only the
//! weights' storage differs, so one encoder serves both:
//!
//! * e5's linear weights are stored as ggml Q4_0 and dequantized to f32 once, at load
//!   (≈ 85 MB): f32 GEMM with AVX-512 beats candle's int8 × int4 dot products at every
//!   batch shape we run, a 20-token query included (measured: the Q4_0 kernel spent
//!   ≈ 45 ms per query, f32 GEMM ≈ 10). Its 250k-row word-embedding table stays Q4_0
//!   (96M values); only the rows a batch uses are dequantized.
//! * MiniLM's f32 safetensors run as plain matmuls.
//!
//! Q, K and V are fused into one matmul, and a whole padded batch goes through every
//! matmul at once: the hot path is a handful of large tensor ops per layer, with no
//! per-token loops. Padding is masked out of attention and of the mean pooling.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::LayerNorm;

use super::cpu;
use super::e5s1::{f16_to_f32, E5s1File, Q4_0_BLOCK, Q4_0_BLOCK_BYTES};
use super::error::{EmbedError, Result};

/// Sizes of an encoder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncoderConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub layer_norm_eps: f64,
}

/// The word-embedding table.
enum WordEmbeddings {
    /// Q4_0 rows of `hidden` values each, dequantized on lookup.
    Q4_0 { blocks: Vec<u8>, rows: usize },
    /// An f32 `[rows, hidden]` tensor.
    Dense { table: Tensor, rows: usize },
}

/// `y = x Wᵀ + b`, with `Wᵀ` kept contiguous as `[in, out]` (GEMM's natural layout).
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
    /// The Q4_0 blocks `weight_t` was dequantized from, if it was: the plain CPU
    /// forward runs short inputs on them (see [`super::cpu::DenseLinear`]).
    q4_0: Option<Vec<u8>>,
}

impl Linear {
    /// `weight` is `[out, in]`, as checkpoints store it.
    fn new(weight: Tensor, bias: Tensor) -> candle_core::Result<Self> {
        Ok(Linear {
            weight_t: weight.t()?.contiguous()?,
            bias,
            q4_0: None,
        })
    }

    /// `x` is `[rows, in]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct EncoderLayer {
    /// Q, K and V projections fused: `[3·hidden, hidden]`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// A loaded encoder that turns token-id sequences into mean-pooled, L2-normalized
/// sentence embeddings.
pub(crate) struct BertEncoder {
    cfg: EncoderConfig,
    word: WordEmbeddings,
    /// `[max_positions, hidden]`.
    position: Tensor,
    /// Row 0 of the token-type table, `[hidden]` (every token is type 0).
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    device: Device,
    /// On the CPU: the same weights as plain slices, run by [`super::cpu`] instead of
    /// `layers` (then empty).
    plain: Option<Plain>,
}

/// What the plain CPU forward needs besides the word table.
struct Plain {
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: cpu::Norm,
    encoder: cpu::PlainEncoder,
}

impl BertEncoder {
    /// Builds the encoder from an E5S1 container.
    pub fn from_e5s1(file: &E5s1File, device: &Device) -> Result<Self> {
        let h = &file.header;
        let (hid, ff) = (h.hidden, h.intermediate);
        let cfg = EncoderConfig {
            hidden: hid,
            layers: h.layers,
            heads: h.heads,
            intermediate: ff,
            max_positions: h.max_positions,
            layer_norm_eps: h.layer_norm_eps as f64,
        };
        let path = file.path();
        let vector = |name: &str, len: usize| -> Result<Tensor> {
            Ok(Tensor::from_vec(file.f32_tensor(name, len)?, len, device)?)
        };
        let norm = |prefix: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                vector(&format!("{prefix}.w"), hid)?,
                vector(&format!("{prefix}.b"), hid)?,
                cfg.layer_norm_eps,
            ))
        };
        let linear = |names: &[&str], rows: usize, cols: usize| -> Result<Linear> {
            let mut blocks = Vec::new();
            let mut biases = Vec::new();
            for name in names {
                blocks.extend_from_slice(file.q4_0_tensor(&format!("{name}.w"), rows, cols)?);
                biases.extend(file.f32_tensor(&format!("{name}.b"), rows)?);
            }
            let all_rows = rows * names.len();
            if blocks.len() != all_rows * cols / Q4_0_BLOCK * Q4_0_BLOCK_BYTES {
                return Err(EmbedError::corrupt(path, "Q4_0 layer of the wrong size"));
            }
            let mut weight = vec![0f32; all_rows * cols];
            dequantize_q4_0(&blocks, &mut weight);
            let mut linear = Linear::new(
                Tensor::from_vec(weight, (all_rows, cols), device)?,
                Tensor::from_vec(biases, all_rows, device)?,
            )?;
            linear.q4_0 = Some(blocks);
            Ok(linear)
        };

        let word = WordEmbeddings::Q4_0 {
            blocks: file.q4_0_tensor("emb.word", h.vocab_rows, hid)?.to_vec(),
            rows: h.vocab_rows,
        };
        let position = Tensor::from_vec(
            file.f32_tensor("emb.pos", h.max_positions * hid)?,
            (h.max_positions, hid),
            device,
        )?;
        let token_type = Tensor::from_vec(
            file.f32_tensor("emb.type", h.type_vocab * hid)?,
            (h.type_vocab, hid),
            device,
        )?
        .get(0)?;
        let embed_norm = norm("emb.ln")?;
        let layers = (0..h.layers)
            .map(|l| {
                Ok(EncoderLayer {
                    qkv: linear(
                        &[&format!("l{l}.q"), &format!("l{l}.k"), &format!("l{l}.v")],
                        hid,
                        hid,
                    )?,
                    attn_out: linear(&[&format!("l{l}.ao")], hid, hid)?,
                    attn_norm: norm(&format!("l{l}.aln"))?,
                    ffn_in: linear(&[&format!("l{l}.fi")], ff, hid)?,
                    ffn_out: linear(&[&format!("l{l}.fo")], hid, ff)?,
                    ffn_norm: norm(&format!("l{l}.oln"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            device: device.clone(),
            plain: None,
        })
    }

    /// Builds the encoder from the tensors of a Hugging Face `BertModel` safetensors
    /// file (names with or without a `bert.` prefix).
    pub fn from_safetensors(
        path: &Path,
        tensors: HashMap<String, Tensor>,
        cfg: EncoderConfig,
        device: &Device,
    ) -> Result<Self> {
        let hid = cfg.hidden;
        let mut st = NamedTensors {
            path,
            device,
            tensors: tensors
                .into_iter()
                .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_owned).unwrap_or(k), v))
                .collect(),
        };
        // The vocabulary and token-type counts are whatever the tables have.
        let rows = st.rows("embeddings.word_embeddings.weight");
        let word_table = st.take("embeddings.word_embeddings.weight", &[rows, hid])?;
        let position = st.take(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, hid],
        )?;
        let types = st.rows("embeddings.token_type_embeddings.weight").max(1);
        let token_type = st
            .take("embeddings.token_type_embeddings.weight", &[types, hid])?
            .get(0)?;
        let embed_norm = st.norm("embeddings.LayerNorm", hid, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("encoder.layer.{l}");
            let qkv = st.linear(
                &[
                    format!("{p}.attention.self.query"),
                    format!("{p}.attention.self.key"),
                    format!("{p}.attention.self.value"),
                ],
                hid,
                hid,
            )?;
            layers.push(EncoderLayer {
                qkv,
                attn_out: st.linear(&[format!("{p}.attention.output.dense")], hid, hid)?,
                attn_norm: st.norm(
                    &format!("{p}.attention.output.LayerNorm"),
                    hid,
                    cfg.layer_norm_eps,
                )?,
                ffn_in: st.linear(&[format!("{p}.intermediate.dense")], cfg.intermediate, hid)?,
                ffn_out: st.linear(&[format!("{p}.output.dense")], hid, cfg.intermediate)?,
                ffn_norm: st.norm(&format!("{p}.output.LayerNorm"), hid, cfg.layer_norm_eps)?,
            });
        }
        Ok(Self {
            cfg,
            word: WordEmbeddings::Dense {
                table: word_table,
                rows,
            },
            position,
            token_type,
            embed_norm,
            layers,
            device: device.clone(),
            plain: None,
        })
    }

    /// Moves the layers to the plain-slice forward of [`super::cpu`] (the CPU's fast
    /// path). A no-op on other devices.
    pub fn into_plain_cpu(mut self) -> Result<Self> {
        if !matches!(self.device, Device::Cpu) || self.plain.is_some() {
            return Ok(self);
        }
        let eps = self.cfg.layer_norm_eps as f32;
        let norm = |n: &LayerNorm| -> candle_core::Result<cpu::Norm> {
            Ok(cpu::Norm {
                gamma: n.weight().to_vec1()?,
                beta: match n.bias() {
                    Some(b) => b.to_vec1()?,
                    None => vec![0.0; self.cfg.hidden],
                },
                eps,
            })
        };
        let dense = |l: &Linear| -> candle_core::Result<cpu::DenseLinear> {
            let (inputs, outputs) = l.weight_t.dims2()?;
            Ok(cpu::DenseLinear::new(
                l.weight_t.flatten_all()?.to_vec1()?,
                l.bias.to_vec1()?,
                inputs,
                outputs,
                l.q4_0.as_deref(),
            ))
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(cpu::PlainLayer {
                    qkv: dense(&l.qkv)?,
                    attn_out: dense(&l.attn_out)?,
                    attn_norm: norm(&l.attn_norm)?,
                    ffn_in: dense(&l.ffn_in)?,
                    ffn_out: dense(&l.ffn_out)?,
                    ffn_norm: norm(&l.ffn_norm)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.plain = Some(Plain {
            position: self.position.flatten_all()?.to_vec1()?,
            token_type: self.token_type.to_vec1()?,
            embed_norm: norm(&self.embed_norm)?,
            encoder: cpu::PlainEncoder {
                layers,
                hidden: self.cfg.hidden,
                heads: self.cfg.heads,
            },
        });
        self.layers.clear();
        Ok(self)
    }

    /// The plain CPU forward: sequences packed without padding.
    fn embed_plain(&self, plain: &Plain, batch: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let h = self.cfg.hidden;
        let ids: Vec<u32> = batch.iter().flatten().copied().collect();
        let mut x = self.lookup(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        let mut at = 0;
        for seq in batch {
            for pos in 0..seq.len() {
                let row = &mut x[(at + pos) * h..(at + pos + 1) * h];
                let p = &plain.position[pos * h..(pos + 1) * h];
                for ((v, p), t) in row.iter_mut().zip(p).zip(&plain.token_type) {
                    *v += p + t;
                }
            }
            at += seq.len();
        }
        plain.embed_norm.apply(&mut x, None);
        let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
        Ok(plain.encoder.forward(x, &lengths))
    }

    pub fn hidden(&self) -> usize {
        self.cfg.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    /// Rows of the word-embedding table: every token id must be below this.
    pub fn vocab_rows(&self) -> usize {
        match &self.word {
            WordEmbeddings::Q4_0 { rows, .. } | WordEmbeddings::Dense { rows, .. } => *rows,
        }
    }

    /// Word embeddings of `ids` as a `[ids.len(), hidden]` tensor.
    fn lookup(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let h = self.cfg.hidden;
        match &self.word {
            WordEmbeddings::Q4_0 { blocks, .. } => {
                let row_bytes = h / Q4_0_BLOCK * Q4_0_BLOCK_BYTES;
                let mut out = vec![0f32; ids.len() * h];
                for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(h)) {
                    let row = &blocks[id as usize * row_bytes..(id as usize + 1) * row_bytes];
                    dequantize_q4_0(row, dst);
                }
                Tensor::from_vec(out, (ids.len(), h), &self.device)
            }
            WordEmbeddings::Dense { table, .. } => {
                let idx = Tensor::new(ids, &self.device)?;
                table.index_select(&idx, 0)
            }
        }
    }

    /// Embeds a batch of token-id sequences (each already wrapped in its special tokens
    /// and at most `max_positions` long): mean pooling over each sequence's tokens, then
    /// L2 normalization. Shorter sequences are padded with `pad_id` and masked.
    pub fn embed(&self, batch: &[Vec<u32>], pad_id: u32) -> candle_core::Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (b, l) = (batch.len(), batch.iter().map(Vec::len).max().unwrap_or(0));
        let (h, nh) = (self.cfg.hidden, self.cfg.heads);
        let hd = h / nh;
        if batch.iter().any(|s| s.is_empty()) || l > self.cfg.max_positions {
            candle_core::bail!("sequence length {l} outside 1..={}", self.cfg.max_positions);
        }
        let rows = self.vocab_rows();
        if let Some(bad) = batch.iter().flatten().find(|&&id| id as usize >= rows) {
            candle_core::bail!("token id {bad} outside the embedding table of {rows} rows");
        }
        if let Some(plain) = &self.plain {
            return self.embed_plain(plain, batch);
        }
        let mut ids = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(pad_id, l - seq.len()));
            mask.extend(std::iter::repeat_n(1f32, seq.len()));
            mask.extend(std::iter::repeat_n(0f32, l - seq.len()));
        }
        let attn_bias: Vec<f32> = mask
            .iter()
            .map(|&m| if m > 0.0 { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let attn_bias = Tensor::from_vec(attn_bias, (b, 1, 1, l), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, l), &self.device)?;

        // Embeddings: word + position + token type 0, LayerNorm. Activations stay
        // [b·l, hidden] so every linear layer is one matmul over the whole batch.
        let pos = self.position.narrow(0, 0, l)?;
        let x = self
            .lookup(&ids)?
            .reshape((b, l, h))?
            .broadcast_add(&pos)?
            .broadcast_add(&self.token_type)?
            .reshape((b * l, h))?;
        let mut x = self.embed_norm.forward(&x)?;

        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((b, l, 3, nh, hd))?
                .permute((2, 0, 3, 1, 4))?; // [3, b, heads, l, hd]
            let q = (qkv.get(0)? * scale)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&attn_bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)? // [b, heads, l, hd]
                .transpose(1, 2)?
                .reshape((b * l, h))?;
            let attn = layer.attn_out.forward(&ctx)?;
            x = layer.attn_norm.forward(&(x + attn)?)?;
            let mid = layer.ffn_in.forward(&x)?.gelu_erf()?;
            let out = layer.ffn_out.forward(&mid)?;
            x = layer.ffn_norm.forward(&(x + out)?)?;
        }

        // Mean pooling over real tokens, then L2 normalization.
        let x = x.reshape((b, l, h))?;
        let summed = x.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)?;
        let counts = mask.sum_keepdim(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-6)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

/// Tensors of a safetensors file, taken out by name with their shapes checked.
struct NamedTensors<'a> {
    path: &'a Path,
    device: &'a Device,
    tensors: HashMap<String, Tensor>,
}

impl NamedTensors<'_> {
    /// Length of the first dimension of `name` (0 if absent).
    fn rows(&self, name: &str) -> usize {
        self.tensors
            .get(name)
            .and_then(|t| t.dims().first().copied())
            .unwrap_or(0)
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| EmbedError::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.to_owned(),
            })?;
        if t.dims() != shape {
            return Err(EmbedError::TensorMismatch {
                path: self.path.to_path_buf(),
                name: name.to_owned(),
                expected: format!("shape {shape:?}"),
                found: format!("shape {:?}", t.dims()),
            });
        }
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    fn norm(&mut self, prefix: &str, hidden: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.take(&format!("{prefix}.weight"), &[hidden])?,
            self.take(&format!("{prefix}.bias"), &[hidden])?,
            eps,
        ))
    }

    /// The dense layers `names` stacked into one (rows of each, in order).
    fn linear(&mut self, names: &[String], rows: usize, cols: usize) -> Result<Linear> {
        let mut weights = Vec::with_capacity(names.len());
        let mut biases = Vec::with_capacity(names.len());
        for name in names {
            weights.push(self.take(&format!("{name}.weight"), &[rows, cols])?);
            biases.push(self.take(&format!("{name}.bias"), &[rows])?);
        }
        Ok(Linear::new(
            Tensor::cat(&weights, 0)?,
            Tensor::cat(&biases, 0)?,
        )?)
    }
}

/// Dequantizes ggml Q4_0 blocks (f16 scale `d`, then 16 bytes: the low nibble of byte
/// `j` is value `j`, the high nibble value `j + 16`; value = (nibble − 8)·d).
pub(crate) fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    for (block, dst) in blocks
        .chunks_exact(Q4_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(Q4_0_BLOCK))
    {
        let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        for (j, &q) in block[2..].iter().enumerate() {
            dst[j] = ((q & 0x0F) as f32 - 8.0) * d;
            dst[j + 16] = ((q >> 4) as f32 - 8.0) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain CPU forward (packed, no padding, own exp/erf) gives the candle
    /// encoder's vectors, on a batch long enough to take the multi-threaded paths.
    #[test]
    fn plain_cpu_forward_matches_candle() {
        let bytes = crate::embed::fixtures::tiny_e5s1_bytes(11);
        let file = E5s1File::parse(Path::new("tiny.e5s1"), bytes).unwrap();
        let reference = BertEncoder::from_e5s1(&file, &Device::Cpu).unwrap();
        let plain = BertEncoder::from_e5s1(&file, &Device::Cpu)
            .unwrap()
            .into_plain_cpu()
            .unwrap();
        assert!(plain.plain.is_some() && plain.layers.is_empty());
        let rows = reference.vocab_rows() as u32;
        let batch: Vec<Vec<u32>> = [1usize, 5, 64, 37, 2, 60]
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                (0..len as u32)
                    .map(|t| (t * 7 + i as u32 * 3) % rows)
                    .collect()
            })
            .collect();
        let want = reference.embed(&batch, 1).unwrap();
        let got = plain.embed(&batch, 1).unwrap();
        for (w, g) in want.iter().zip(&got) {
            let cos: f32 = w.iter().zip(g).map(|(a, b)| a * b).sum();
            let worst = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                cos > 0.99999 && worst < 1e-4,
                "cosine {cos}, max difference {worst}"
            );
        }
        // A lone short query (the single-threaded path) too.
        let q = vec![batch[1].clone()];
        let (w, g) = (reference.embed(&q, 1).unwrap(), plain.embed(&q, 1).unwrap());
        let cos: f32 = w[0].iter().zip(&g[0]).map(|(a, b)| a * b).sum();
        assert!(cos > 0.99999, "cosine {cos}");
        assert!(
            plain.embed(&[vec![rows]], 1).is_err(),
            "token outside the table"
        );
    }

    #[test]
    fn q4_0_block_layout() {
        let mut block = vec![0x00, 0x3C]; // d = 1.0
        block.extend((0..16u8).map(|j| (j & 0x0F) | (15 - j) << 4));
        let mut out = [0f32; 32];
        dequantize_q4_0(&block, &mut out);
        assert_eq!(out[0], -8.0);
        assert_eq!(out[15], 7.0);
        assert_eq!(out[16], 7.0);
        assert_eq!(out[31], -8.0);
    }
}
