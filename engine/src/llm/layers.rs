//! Building blocks shared by the architectures: RMSNorm, rotary position embeddings,
//! the per-sequence KV cache and grouped-query attention.
//!
//! The decoder (`decoder.rs`) wires these together in the one `forward` that every
//! architecture runs; each piece stays small enough here to check on its own, and
//! [`DecoderView`] hands their weights to the hand-written CPU training step.
//!
//! Each piece has a fused form for inference and a *differentiable* form for the LoRA
//! trainer (`*_differentiable`, [`attention_differentiable`]). candle-nn's fused
//! `rms_norm`, `softmax_last_dim` and `rope`/`rope_i` kernels have no backward pass and
//! silently cut the autograd graph; the differentiable forms are written with basic
//! tensor ops (square, sum, sqrt, exp, max, narrow, cat, mul) that all have gradients.

use super::error::Result;
use candle_core::{DType, Device, Tensor, D};

/// Root-mean-square layer norm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// `weight: [hidden]`.
    pub fn new(weight: Tensor, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// Normalizes over the last dimension (fused kernel; inference only).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }

    /// The same normalization as one op with its own backward pass
    /// ([`super::fused::rms_norm`]), so gradients flow through it to `x`:
    /// `x / sqrt(mean(x²) + eps) · weight`.
    pub fn forward_differentiable(&self, x: &Tensor) -> Result<Tensor> {
        super::fused::rms_norm(x, &self.weight, self.eps as f64)
    }

    /// A copy with the weight in `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight: self.weight.to_dtype(dtype)?,
            eps: self.eps,
        })
    }

    /// The learned scale `[hidden]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The epsilon under the square root.
    pub fn eps(&self) -> f32 {
        self.eps
    }
}

/// A borrowed view of a dense decoder (a training copy made by `to_dense`), in the order
/// its forward pass uses the weights: what a hand-written training step needs
/// (`crate::train::cpu_step`) without reaching into the decoder's fields.
#[derive(Debug)]
pub struct DecoderView<'a> {
    /// The dequantized embedding table `[vocab, hidden]`.
    pub embed: &'a Tensor,
    /// The blocks, first to last.
    pub blocks: Vec<BlockView<'a>>,
    /// The final norm.
    pub norm: &'a RmsNorm,
    /// The output projection (its dense weight may be `embed` itself).
    pub lm_head: &'a super::Linear,
    /// The rotary tables.
    pub rotary: &'a Rotary,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// One pre-norm block: `x += o(attn(q, k, v)(norm(x)))`, `x += down(silu(gate)·up)(norm(x))`.
#[derive(Debug)]
pub struct BlockView<'a> {
    /// Norm before attention.
    pub attn_norm: &'a RmsNorm,
    /// Query, key, value and output projections.
    pub q: &'a super::Linear,
    /// Key projection.
    pub k: &'a super::Linear,
    /// Value projection.
    pub v: &'a super::Linear,
    /// Output projection.
    pub o: &'a super::Linear,
    /// Norm before the MLP.
    pub ffn_norm: &'a RmsNorm,
    /// SwiGLU gate projection.
    pub gate: &'a super::Linear,
    /// SwiGLU up projection.
    pub up: &'a super::Linear,
    /// MLP down projection.
    pub down: &'a super::Linear,
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-NeoX style: dimension `i` rotates with `i + d/2` (Qwen2).
    Neox,
    /// Interleaved: dimension `2i` rotates with `2i + 1`. llama.cpp's converter
    /// permutes Llama's q/k weights into this layout, so Llama GGUFs use it.
    Interleaved,
}

/// Precomputed cos/sin tables for rotary position embeddings.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rotary {
    /// Tables for positions `0..max_positions` of a head of `dim` rotated dimensions.
    pub fn new(
        dim: usize,
        base: f32,
        max_positions: usize,
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / dim as f32))
            .collect();
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
            style,
        })
    }

    /// Positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The tables `cos`, `sin`: `[max_positions, rotated dims / 2]` (f32).
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    /// How dimensions are paired.
    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// Rotates `x: [batch, heads, seq, head_dim]` for positions `start..start+seq`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_, _, seq, _) = x.dims4()?;
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let x = x.contiguous()?;
        Ok(match self.style {
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
        })
    }

    /// The same rotation, differentiable, for positions `0..seq`. On the CPU it is one
    /// op whose backward pass is the inverse rotation (`sin` negated) by the same
    /// kernel, instead of six basic ops each keeping a query-sized tensor.
    pub fn apply_differentiable(&self, x: &Tensor) -> Result<Tensor> {
        let seq = x.dims4()?.2;
        let cos = self.cos.narrow(0, 0, seq)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, 0, seq)?.to_dtype(x.dtype())?;
        if x.device().is_cpu() {
            let op = RopeOp {
                cos: cos.contiguous()?,
                sin: sin.contiguous()?,
                style: self.style,
            };
            return Ok(x.contiguous()?.apply_op1(op)?);
        }
        self.apply_basic_ops(x)
    }

    /// [`Rotary::apply_differentiable`] from basic tensor ops (devices other than the
    /// CPU; the reference in tests).
    fn apply_basic_ops(&self, x: &Tensor) -> Result<Tensor> {
        let (b, heads, seq, d) = x.dims4()?;
        let half = d / 2;
        let cos = self.cos.narrow(0, 0, seq)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, 0, seq)?.to_dtype(x.dtype())?;
        Ok(match self.style {
            RopeStyle::Neox => {
                // Dimension i pairs with i + d/2: rotate the two halves.
                let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?.reshape((1, 1, seq, d))?;
                let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?.reshape((1, 1, seq, d))?;
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                (x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?
            }
            RopeStyle::Interleaved => {
                // Dimension 2i pairs with 2i + 1.
                let cos = cos.reshape((1, 1, seq, half, 1))?;
                let sin = sin.reshape((1, 1, seq, half, 1))?;
                let x = x.reshape((b, heads, seq, half, 2))?;
                let x0 = x.narrow(D::Minus1, 0, 1)?;
                let x1 = x.narrow(D::Minus1, 1, 1)?;
                let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
                let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
                Tensor::cat(&[&y0, &y1], D::Minus1)?.reshape((b, heads, seq, d))?
            }
        })
    }
}

/// Rotary embedding as a differentiable op (see [`Rotary::apply_differentiable`]).
struct RopeOp {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl RopeOp {
    fn rotate(&self, x: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        match self.style {
            RopeStyle::Neox => candle_nn::rotary_emb::rope(x, &self.cos, sin),
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, &self.cos, sin),
        }
    }
}

impl candle_core::CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "kura-rope"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = super::fused::tensor_of(storage, layout)?;
        super::fused::storage_of(&self.rotate(&x, &self.sin)?)
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation's transpose is the rotation by the opposite angle.
        Ok(Some(self.rotate(&g.contiguous()?, &self.sin.neg()?)?))
    }
}

/// Keys and values of one layer for one sequence, in a buffer that grows by doubling,
/// so appending a token copies only that token.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
    reserved: usize,
}

impl Default for KvCache {
    fn default() -> Self {
        Self::new()
    }
}

const KV_INITIAL_CAPACITY: usize = 256;

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            k: None,
            v: None,
            len: 0,
            reserved: 0,
        }
    }

    /// Asks for room for `tokens` tokens in total when the buffer is next allocated,
    /// so a sequence whose final length is known (prompt + max tokens) is stored in
    /// one buffer of the right size: no copy on growth and no doubling overshoot.
    pub fn reserve(&mut self, tokens: usize) {
        self.reserved = self.reserved.max(tokens);
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after the first `len` tokens (keeps the buffer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends `k`, `v` (`[1, kv_heads, seq, head_dim]`) and returns views of all keys and
    /// values held, `[1, kv_heads, len, head_dim]`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, seq, d) = k.dims4()?;
        let needed = self.len + seq;
        if needed > self.capacity() {
            let cap = if needed <= self.reserved {
                self.reserved
            } else {
                needed.max(2 * self.capacity()).max(KV_INITIAL_CAPACITY)
            };
            let new_k = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let new_v = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            if let (Some(old_k), Some(old_v)) = (&self.k, &self.v) {
                if self.len > 0 {
                    new_k.slice_set(&old_k.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    new_v.slice_set(&old_v.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            self.k = Some(new_k);
            self.v = Some(new_v);
        }
        let (ck, cv) = match (&self.k, &self.v) {
            (Some(k), Some(v)) => (k, v),
            _ => unreachable!("allocated above"),
        };
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((ck.narrow(2, 0, self.len)?, cv.narrow(2, 0, self.len)?))
    }
}

/// Additive causal mask `[seq, start + seq]`: query `i` (at position `start + i`) sees
/// keys `0..=start + i`.
pub fn causal_mask(seq: usize, start: usize, device: &Device) -> Result<Tensor> {
    let kv = start + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..kv).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, kv), device)?)
}

/// Scaled dot-product attention with grouped-query heads, without copying K/V per head.
///
/// `q: [1, heads, seq, d]` (contiguous), `k`, `v: [1, kv_heads, kv_len, d]`,
/// `mask: [seq, kv_len]` additive. Returns `[1, seq, heads * d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if mask.is_none() {
        if let Some(y) = super::decode_attention::attend(q, k, v)? {
            return Ok(y);
        }
    }
    let (b, heads, seq, d) = q.dims4()?;
    let kv_heads = k.dims()[1];
    let kv_len = k.dims()[2];
    let rep = heads / kv_heads;
    // Heads h = g·rep + r share K/V group g: stack their queries as rows of one matrix.
    let q = q.contiguous()?.reshape((b, kv_heads, rep * seq, d))?;
    let att = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let att = match mask {
        None => att,
        Some(mask) => att
            .reshape((b, kv_heads, rep, seq, kv_len))?
            .broadcast_add(mask)?
            .reshape((b, kv_heads, rep * seq, kv_len))?,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let y = att.matmul(v)?; // [b, kv_heads, rep*seq, d]
    let y = y
        .reshape((b, heads, seq, d))?
        .transpose(1, 2)?
        .reshape((b, seq, heads * d))?;
    Ok(y)
}

/// [`attention`] for training: differentiable ops, with our fused softmax
/// ([`super::fused::softmax_last_dim`]; candle's fused `softmax_last_dim` has no backward).
/// `q: [b, heads, seq, d]`, `k`, `v: [b, kv_heads, seq, d]`, `mask: [seq, seq]`
/// additive. Returns `[b, seq, heads * d]`.
pub fn attention_differentiable(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let kv_heads = k.dims()[1];
    let rep = heads / kv_heads;
    // Heads of one KV group stacked as rows; scores, mask and softmax inside one op
    // with its own backward (`fused::attention`): nothing score-sized stays in the graph.
    let q = q.contiguous()?.reshape((b, kv_heads, rep * seq, d))?;
    let y = super::fused::attention(&q, k, v, mask, 1.0 / (d as f64).sqrt())?;
    Ok(y.reshape((b, heads, seq, d))?
        .transpose(1, 2)?
        .reshape((b, seq, heads * d))?)
}

/// SwiGLU feed-forward activation: `silu(gate) * up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

/// Picks the last position of `[1, seq, hidden]` as `[1, 1, hidden]`.
pub fn last_position(x: &Tensor) -> Result<Tensor> {
    let seq = x.dim(1)?;
    Ok(x.narrow(1, seq - 1, 1)?.contiguous()?)
}

/// Flattens logits `[1, 1, vocab]` to an f32 vector.
pub fn logits_to_vec(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::llm::fused::max_abs_diff as max_diff;

    /// Both rotary styles: the op and its inverse-rotation backward against the
    /// basic-op form (f64; the tables are f32, hence 1e-6).
    #[test]
    fn the_rope_op_matches_the_basic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let rot = Rotary::new(8, 10000.0, 16, style, &dev).unwrap();
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f64, 1.0, (1, 3, 5, 8), &dev).unwrap(),
            )
            .unwrap();
            let fused = rot.apply_differentiable(x.as_tensor()).unwrap();
            let plain = rot.apply_basic_ops(x.as_tensor()).unwrap();
            assert!(max_diff(&fused, &plain) < 1e-6, "{style:?} forward");
            let g = Tensor::randn(0f64, 1.0, (1, 3, 5, 8), &dev).unwrap();
            let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (grads(&fused), grads(&plain));
            let d = max_diff(a.get(&x).unwrap(), b.get(&x).unwrap());
            assert!(d < 1e-6, "{style:?} backward: {d}");
            assert!(max_diff(a.get(&x).unwrap(), &g) > 1e-2, "a real rotation");
        }
    }
}
