//! Softmax and the summed negative log-likelihood as single ops with their own backward
//! passes, for the LoRA trainer's memory.
//!
//! Built from basic tensor ops (the only differentiable way candle offers), a softmax
//! keeps every intermediate — `x − max`, `exp`, the quotient — alive in the autograd
//! graph until the backward pass: per layer of the 0.5B at seq 512 that is several
//! `heads × seq × seq` tensors, and for the loss several `tokens × vocab` tensors of
//! 311 MB (151,936-entry vocabulary). PyTorch's fused kernels keep only their output.
//! These ops do the same: the forward is one pass over each row, the graph holds the
//! input and the output, and the backward is written out:
//!
//! ```text
//! softmax:   ∂x = y ⊙ (∂y − Σ ∂y ⊙ y)
//! Σ NLL:     ∂x = ∂L · (softmax(x) − onehot(target))
//! ```
//!
//! Only the CPU has a fused forward; other devices use the basic-op forms.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, D};

use super::error::Result;
use super::simd::par_rows;

/// Row softmax over the last dimension, differentiable, keeping only its output.
/// Training's attention fuses its softmax into one op; this stays for decoders
/// whose attention is not fused, with its gradient test.
#[allow(dead_code)]
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        return Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?);
    }
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

/// `Σ_rows −log softmax(logits)[row, targets[row]]` (a scalar): the summed
/// cross-entropy of `logits: [rows, vocab]` against one target id per row.
pub fn summed_nll(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if rows != targets.len() {
        return Err(candle_core::Error::Msg(format!(
            "{rows} rows of logits for {} targets",
            targets.len()
        ))
        .into());
    }
    if !logits.device().is_cpu() {
        let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let t = Tensor::from_slice(targets, (rows, 1), logits.device())?;
        return Ok(log_probs.gather(&t, 1)?.sum_all()?.neg()?);
    }
    Ok(logits.contiguous()?.apply_op1(SummedNll {
        targets: targets.to_vec(),
    })?)
}

/// Grouped-query attention `softmax(q·kᵀ·scale + mask)·v` as one differentiable op that
/// keeps nothing score-sized in the graph.
///
/// `q: [b, kv_heads, rep·seq, d]` (the query heads of a KV group stacked as rows), `k`,
/// `v: [b, kv_heads, len, d]`, `mask: [seq, len]` additive (applied to every stacked
/// head). Returns `[b, kv_heads, rep·seq, d]`.
///
/// Built from basic ops, the graph kept three `heads × seq × len` tensors per layer
/// (scores, masked scores, probabilities: 44 MB a layer for the 0.5B at seq 512) and
/// candle's backward allocated a zero tensor and a sum for the gradient of each. Here the
/// backward recomputes the probabilities from `q` and `k` (one extra `q·kᵀ`, a few
/// percent of a layer's work) and writes the gradients out:
///
/// ```text
/// P = softmax(S),  S = q·kᵀ·scale + mask
/// ∂v = Pᵀ·∂y    ∂P = ∂y·vᵀ    ∂S = P ⊙ (∂P − Σ_row ∂P ⊙ P)    ∂q = ∂S·k·scale    ∂k = ∂Sᵀ·q·scale
/// ```
///
/// Other devices use the basic-op form.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let op = Attention {
        mask: mask.map(|m| m.to_dtype(q.dtype())).transpose()?,
        scale,
    };
    if !q.device().is_cpu() {
        let p = op.probabilities(q, k)?;
        return Ok(p.matmul(v)?);
    }
    Ok(q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

struct Attention {
    mask: Option<Tensor>,
    scale: f64,
}

impl Attention {
    /// `softmax(q·kᵀ·scale + mask)` (untracked when `q`, `k` are).
    fn probabilities(&self, q: &Tensor, k: &Tensor) -> candle_core::Result<Tensor> {
        let (b, g, rows, _) = q.dims4()?;
        let len = k.dims()[2];
        let s = ((q * self.scale)?).matmul(&k.t()?)?;
        let s = match &self.mask {
            None => s,
            Some(mask) => {
                let seq = mask.dims()[0];
                s.reshape((b, g, rows / seq, seq, len))?
                    .broadcast_add(mask)?
                    .reshape((b, g, rows, len))?
            }
        };
        if s.device().is_cpu() {
            s.contiguous()?.apply_op1_no_bwd(&Softmax)
        } else {
            let max = s.max_keepdim(D::Minus1)?;
            let e = s.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// RMSNorm `x / sqrt(mean(x²) + eps) · weight` over the last dimension, differentiable
/// with respect to `x` (the norm's weight is frozen in LoRA training), keeping only its
/// output in the graph. Built from basic ops it kept the square, the normalized input
/// and the product (three activation-sized tensors per norm, two norms a layer), each
/// with a zero tensor and a sum for its gradient. The backward pass:
///
/// ```text
/// r = 1/sqrt(mean(x²) + eps)    ∂x = r·(∂y⊙w) − x·r³/H·Σ(∂y⊙w⊙x)
/// ```
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let op = RmsNorm {
        weight: weight.detach(),
        eps,
    };
    if !x.device().is_cpu() {
        return Ok(op.plain(x)?);
    }
    Ok(x.contiguous()?.apply_op1(op)?)
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// `1/sqrt(mean(x²) + eps)` per row, `[…, 1]`.
    fn inv_rms(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()
    }

    fn plain(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.inv_rms(x)?)?
            .broadcast_mul(&self.weight)
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "kura-rms-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let width = layout.shape().dims().last().copied().unwrap_or(1);
        let (wst, wl) = self.weight.storage_and_layout();
        let out = match (storage, &*wst, wl.contiguous_offsets()) {
            (CpuStorage::F32(v), candle_core::Storage::Cpu(CpuStorage::F32(w)), Some((a, b))) => {
                let (x, w) = (rows_of(v, layout, "rms norm")?, &w[a..b]);
                let eps = self.eps;
                CpuStorage::F32(par_rows(x, width, |_, row, out| {
                    let ms = row.iter().map(|v| (v * v) as f64).sum::<f64>() / width as f64;
                    let r = (1.0 / (ms + eps).sqrt()) as f32;
                    for ((o, v), g) in out.iter_mut().zip(row).zip(w) {
                        *o = v * r * g;
                    }
                }))
            }
            (CpuStorage::F64(v), candle_core::Storage::Cpu(CpuStorage::F64(w)), Some((a, b))) => {
                let (x, w) = (rows_of(v, layout, "rms norm")?, &w[a..b]);
                let eps = self.eps;
                CpuStorage::F64(par_rows(x, width, |_, row, out| {
                    let ms = row.iter().map(|v| v * v).sum::<f64>() / width as f64;
                    let r = 1.0 / (ms + eps).sqrt();
                    for ((o, v), g) in out.iter_mut().zip(row).zip(w) {
                        *o = v * r * g;
                    }
                }))
            }
            _ => candle_core::bail!("rms norm: f32 or f64 input and weight of one type"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = x.detach();
        let h = x.dim(D::Minus1)? as f64;
        let gw = g.broadcast_mul(&self.weight)?;
        let r = self.inv_rms(&x)?;
        let dot = (&gw * &x)?.sum_keepdim(D::Minus1)?;
        let coef = ((dot * r.powf(3.0)?)? / h)?;
        Ok(Some((gw.broadcast_mul(&r)? - x.broadcast_mul(&coef)?)?))
    }
}

/// A contiguous f32/f64 CPU input of a custom op as an untracked tensor (a copy).
pub(crate) fn tensor_of(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Tensor> {
    let dev = candle_core::Device::Cpu;
    match storage {
        CpuStorage::F32(v) => {
            Tensor::from_slice(rows_of(v, layout, "custom op")?, layout.shape(), &dev)
        }
        CpuStorage::F64(v) => {
            Tensor::from_slice(rows_of(v, layout, "custom op")?, layout.shape(), &dev)
        }
        _ => candle_core::bail!("custom op: only f32 and f64 inputs"),
    }
}

/// A freshly computed CPU tensor as a custom op's output (a copy of its storage).
pub(crate) fn storage_of(y: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let shape = y.shape().clone();
    let (st, l) = y.storage_and_layout();
    match (&*st, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(out), Some((0, n))) if n == shape.elem_count() => {
            Ok((out.clone(), shape))
        }
        _ => candle_core::bail!("custom op: unexpected output layout"),
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "kura-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (tensor_of(s1, l1)?, tensor_of(s2, l2)?, tensor_of(s3, l3)?);
        storage_of(&self.probabilities(&q, &k)?.matmul(&v)?)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v) = (q.detach(), k.detach(), v.detach());
        let p = self.probabilities(&q, &k)?;
        let dy = dy.contiguous()?;
        let dv = p.t()?.matmul(&dy)?;
        let dp = dy.matmul(&v.t()?)?;
        let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
        let ds = (dp.broadcast_sub(&dot)? * p)?;
        let dq = (ds.matmul(&k)? * self.scale)?;
        let dk = (ds.t()?.matmul(&q)? * self.scale)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// The contiguous values of a CPU input, or an error naming the op.
fn rows_of<'a, T>(v: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// `Σ exp(row − max)` in f64, writing the terms to `out` when given.
fn exp_row_f64(row: &[f64], max: f64, out: Option<&mut [f64]>) -> f64 {
    let mut sum = 0f64;
    match out {
        Some(out) => {
            for (o, v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
        }
        None => sum = row.iter().map(|v| (v - max).exp()).sum(),
    }
    sum
}

macro_rules! row_kernels {
    ($softmax:ident, $nll:ident, $nll_grad:ident, $t:ty, $exp_row:path) => {
        /// Softmax of each row of `width` values (sums in f64: a row can be a
        /// 151,936-entry vocabulary, where an f32 running sum drifts).
        fn $softmax(x: &[$t], width: usize) -> Vec<$t> {
            par_rows(x, width, |_, row, out| {
                let max = row.iter().copied().fold(<$t>::NEG_INFINITY, <$t>::max);
                let inv = 1.0 / $exp_row(row, max, Some(&mut *out));
                for e in out.iter_mut() {
                    *e = (*e as f64 * inv) as $t;
                }
            })
        }

        /// `Σ (logsumexp(row) − row[target])`, accumulated in f64.
        fn $nll(x: &[$t], width: usize, targets: &[u32]) -> $t {
            let per_row: Vec<f64> = par_rows(&vec![0f64; targets.len()], 1, |r, _, out| {
                let row = &x[r * width..(r + 1) * width];
                let max = row.iter().copied().fold(<$t>::NEG_INFINITY, <$t>::max);
                let sum = $exp_row(row, max, None);
                out[0] = max as f64 + sum.ln() - row[targets[r] as usize] as f64;
            });
            let total: f64 = per_row.iter().sum();
            total as $t
        }

        /// `softmax(row) − onehot(target)` for every row.
        fn $nll_grad(x: &[$t], width: usize, targets: &[u32]) -> Vec<$t> {
            let mut out = $softmax(x, width);
            for (row, &t) in out.chunks_exact_mut(width).zip(targets) {
                row[t as usize] -= 1.0;
            }
            out
        }
    };
}

row_kernels!(
    softmax_f32,
    nll_f32,
    nll_grad_f32,
    f32,
    crate::llm::simd::exp_shifted
);
row_kernels!(softmax_f64, nll_f64, nll_grad_f64, f64, exp_row_f64);

/// Runs a same-shape row kernel (one per float type) over a contiguous CPU input whose
/// rows are its last dimension.
fn map_rows(
    storage: &CpuStorage,
    layout: &Layout,
    op: &str,
    on_f32: impl Fn(&[f32], usize) -> Vec<f32>,
    on_f64: impl Fn(&[f64], usize) -> Vec<f64>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let width = layout.shape().dims().last().copied().unwrap_or(1).max(1);
    let out = match storage {
        CpuStorage::F32(v) => CpuStorage::F32(on_f32(rows_of(v, layout, op)?, width)),
        CpuStorage::F64(v) => CpuStorage::F64(on_f64(rows_of(v, layout, op)?, width)),
        _ => candle_core::bail!("{op}: only f32 and f64 inputs"),
    };
    Ok((out, layout.shape().clone()))
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "kura-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(storage, layout, "softmax", softmax_f32, softmax_f64)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((grad.broadcast_sub(&dot)? * res)?))
    }
}

struct SummedNll {
    targets: Vec<u32>,
}

impl SummedNll {
    fn check(&self, layout: &Layout) -> candle_core::Result<usize> {
        let dims = layout.shape().dims();
        let (rows, width) = match dims {
            [rows, width] => (*rows, *width),
            _ => candle_core::bail!("summed NLL: logits must be [rows, vocab], got {dims:?}"),
        };
        if rows != self.targets.len() || self.targets.iter().any(|&t| t as usize >= width) {
            candle_core::bail!("summed NLL: targets do not fit logits of shape {dims:?}");
        }
        Ok(width)
    }
}

impl CustomOp1 for SummedNll {
    fn name(&self) -> &'static str {
        "kura-summed-nll"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let width = self.check(layout)?;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(vec![nll_f32(
                rows_of(v, layout, "summed NLL")?,
                width,
                &self.targets,
            )]),
            CpuStorage::F64(v) => CpuStorage::F64(vec![nll_f64(
                rows_of(v, layout, "summed NLL")?,
                width,
                &self.targets,
            )]),
            _ => candle_core::bail!("summed NLL: only f32 and f64 logits"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let per_logit = arg.apply_op1_no_bwd(&NllGrad {
            targets: self.targets.clone(),
        })?;
        Ok(Some(per_logit.broadcast_mul(grad)?))
    }
}

/// `softmax(x) − onehot(targets)`, the gradient of [`SummedNll`] per unit of loss.
struct NllGrad {
    targets: Vec<u32>,
}

impl CustomOp1 for NllGrad {
    fn name(&self) -> &'static str {
        "kura-summed-nll-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = &self.targets;
        map_rows(
            storage,
            layout,
            "NLL gradient",
            |x, w| nll_grad_f32(x, w, t),
            |x, w| nll_grad_f64(x, w, t),
        )
    }
}

/// The largest absolute difference of two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(candle_core::DType::F64))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The basic-op forms the fused ops replace.
    fn reference_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    use super::max_abs_diff as max_diff;

    #[test]
    fn fused_softmax_and_nll_match_the_basic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&(Tensor::randn(0f64, 3.0, (2, 3, 4, 37), &dev).unwrap())).unwrap();
        let w = Tensor::randn(0f64, 1.0, (2, 3, 4, 37), &dev).unwrap();
        // Softmax: same values, same gradient of a weighted sum of its outputs.
        let fused = softmax_last_dim(x.as_tensor()).unwrap();
        let plain = reference_softmax(x.as_tensor());
        assert!(max_diff(&fused, &plain) < 1e-12);
        let g_fused = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_plain = (&plain * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (g_fused.get(&x).unwrap(), g_plain.get(&x).unwrap());
        assert!(max_diff(a, b) < 1e-12, "{}", max_diff(a, b));

        // Summed NLL: the loss and its gradient equal log_softmax + gather.
        let logits = Var::from_tensor(&Tensor::randn(0f64, 4.0, (5, 50), &dev).unwrap()).unwrap();
        let targets = [3u32, 0, 49, 17, 3];
        let fused = summed_nll(logits.as_tensor(), &targets).unwrap();
        let log_probs = candle_nn::ops::log_softmax(logits.as_tensor(), D::Minus1).unwrap();
        let t = Tensor::from_slice(&targets, (5, 1), &dev).unwrap();
        let plain = log_probs
            .gather(&t, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        let (lf, lp) = (
            fused.to_scalar::<f64>().unwrap(),
            plain.to_scalar::<f64>().unwrap(),
        );
        assert!((lf - lp).abs() < 1e-9, "{lf} vs {lp}");
        let scaled = |l: &Tensor| (l * 0.25).unwrap().backward().unwrap();
        let (gf, gp) = (scaled(&fused), scaled(&plain));
        let (a, b) = (gf.get(&logits).unwrap(), gp.get(&logits).unwrap());
        assert!(max_diff(a, b) < 1e-12, "{}", max_diff(a, b));
        // A target outside the vocabulary is an error, not a panic.
        assert!(summed_nll(logits.as_tensor(), &[0, 0, 0, 0, 50]).is_err());
    }

    #[test]
    fn fused_attention_matches_the_basic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        // 2 KV groups × 3 query heads each, 5 positions, causal mask, d = 8.
        let (b, g, rep, seq, d) = (1, 2, 3, 5, 8);
        let var = |dims: (usize, usize, usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, dims, &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (
            var((b, g, rep * seq, d)),
            var((b, g, seq, d)),
            var((b, g, seq, d)),
        );
        let mask = crate::llm::layers::causal_mask(seq, 0, &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let fused = attention(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            Some(&mask),
            scale,
        )
        .unwrap();
        let s = (q.as_tensor() * scale)
            .unwrap()
            .matmul(&k.as_tensor().t().unwrap())
            .unwrap()
            .reshape((b, g, rep, seq, seq))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap()
            .reshape((b, g, rep * seq, seq))
            .unwrap();
        let plain = reference_softmax(&s).matmul(v.as_tensor()).unwrap();
        assert!(
            max_diff(&fused, &plain) < 1e-12,
            "{}",
            max_diff(&fused, &plain)
        );
        let w = Tensor::randn(0f64, 1.0, fused.dims(), &dev).unwrap();
        let grads = |y: &Tensor| (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads(&fused), grads(&plain));
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (gf.get(x).unwrap(), gp.get(x).unwrap());
            assert!(max_diff(a, b) < 1e-10, "∂{name}: {}", max_diff(a, b));
            assert!(
                max_diff(a, &a.zeros_like().unwrap()) > 1e-3,
                "∂{name} is not zero"
            );
        }
    }

    #[test]
    fn fused_rms_norm_matches_the_basic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 4, 24), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, 24, &dev).unwrap();
        let fused = rms_norm(x.as_tensor(), &w, 1e-6).unwrap();
        let ms = x
            .as_tensor()
            .sqr()
            .unwrap()
            .mean_keepdim(D::Minus1)
            .unwrap();
        let plain = x
            .as_tensor()
            .broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        assert!(max_diff(&fused, &plain) < 1e-12);
        let g = Tensor::randn(0f64, 1.0, (3, 4, 24), &dev).unwrap();
        let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (grads(&fused), grads(&plain));
        let d = max_diff(a.get(&x).unwrap(), b.get(&x).unwrap());
        assert!(d < 1e-10, "∂x: {d}");
        // The f32 forward agrees too.
        let x32 = x.as_tensor().to_dtype(candle_core::DType::F32).unwrap();
        let w32 = w.to_dtype(candle_core::DType::F32).unwrap();
        let y32 = rms_norm(&x32, &w32, 1e-6)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        assert!(max_diff(&y32, &plain) < 1e-5);
    }
}
