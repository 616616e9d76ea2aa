//! The one linear layer of every architecture: a frozen (quantized) weight, an optional
//! bias, and any number of LoRA adapters.
//!
//! Kura serves the very weights it fine-tunes on: the base weight stays quantized
//! (`QMatMul`) and an adapter adds a low-rank correction on top,
//!
//! ```text
//! y = x·Wᵀ + b + Σ_active  s · (x·A)·B        s = alpha / rank
//! ```
//!
//! with `A: [in, rank]` and `B: [rank, out]`. Adapters are attached under an
//! [`AdapterId`] and chosen per call, so one loaded model serves requests for the base
//! model and for several tuned variants at the same time. With no adapter active the
//! forward pass is exactly the quantized matmul plus bias: nothing is allocated or
//! computed for LoRA.
//!
//! The LoRA trainer builds adapters from `candle_core::Var`s
//! (`LoraAdapter::new(a.as_tensor().clone(), b.as_tensor().clone(), alpha)`); the
//! gradient flows through `A` and `B` while the base weight stays frozen.
//!
//! Training needs one more thing: the gradient must also flow *through* the frozen
//! base weight to the layers below, and candle's quantized matmul
//! (`QMatMul::QTensor`) is a custom op without a backward pass — it silently cuts the
//! graph. [`Linear::to_dense`] therefore dequantizes the weight (QLoRA: the very
//! weights the engine serves, in f32/f64/bf16) and [`Linear::forward_train`] runs a
//! plain, differentiable matmul, with the optional [`LoraDropout`] on the adapter path.

use super::error::{LlmError, Result};
use super::kquant::{self, KQuant};
use crate::matmul::{matmul, Mat};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::sync::Arc;

/// LoRA dropout for training: every call of [`LoraDropout::apply`] zeroes each input
/// feature of the adapter path with probability `p` (scaling the rest by `1/(1-p)`),
/// as PEFT does (`B(A(dropout(x)))`). The masks come from a seeded generator, so a
/// training step is reproducible — which is what lets a resumed job repeat the loss
/// curve of an uninterrupted one.
#[derive(Debug)]
pub struct LoraDropout {
    p: f64,
    rng: RefCell<StdRng>,
}

impl LoraDropout {
    /// Dropout with probability `p` (0 ≤ p < 1) and masks drawn from `seed`.
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            p,
            rng: RefCell::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// `x` with a fresh random mask applied.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.mask(x)? {
            Some(mask) => Ok((x * mask)?),
            None => Ok(x.clone()),
        }
    }

    /// A fresh random mask for `x` (`0` or `1/(1-p)` per element), or `None` when
    /// `p` is 0.
    pub fn mask(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(mask) = self.mask_values(x.elem_count()) else {
            return Ok(None);
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok(Some(mask))
    }

    /// The values of the next mask of `n` elements (the same draws as
    /// [`LoraDropout::mask`]), or `None` when `p` is 0.
    pub fn mask_values(&self, n: usize) -> Option<Vec<f32>> {
        if self.p <= 0.0 {
            return None;
        }
        let keep = 1.0 - self.p;
        let mut rng = self.rng.borrow_mut();
        Some(
            (0..n)
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
        )
    }
}

/// `x·Wᵀ + s·(x⊙m)·A·B` — a frozen weight and one trainable LoRA adapter (`m`: the
/// optional dropout mask) as one differentiable op of `(x, A, B)`.
///
/// Built from basic ops, a LoRA layer kept four output-sized tensors in the graph
/// (`x·Wᵀ`, `(x·A)·B`, its scaled copy and the sum: 40 MB for each MLP projection of
/// the 0.5B at seq 512, 2 GB over the model), and candle's backward added a zero
/// tensor and a sum for each gradient. This op keeps only its output, recomputes the
/// small `h = (x⊙m)·A` in the backward pass, and writes the gradients out:
///
/// ```text
/// g = ∂y    ∂B = s·hᵀ·g    ∂A = s·(x⊙m)ᵀ·(g·Bᵀ)    ∂x = g·W + s·((g·Bᵀ)·Aᵀ)⊙m
/// ```
struct FrozenLora {
    w: Tensor,
    scale: f64,
    mask: Option<Tensor>,
}

impl FrozenLora {
    fn masked(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.mask {
            Some(m) => x * m,
            None => Ok(x.clone()),
        }
    }
}

impl candle_core::CustomOp3 for FrozenLora {
    fn name(&self) -> &'static str {
        "kura-frozen-lora"
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
        // The small LoRA factors through candle; the big products straight into the
        // output buffer.
        let (x, a, b) = (
            super::fused::tensor_of(s1, l1)?,
            super::fused::tensor_of(s2, l2)?,
            super::fused::tensor_of(s3, l3)?,
        );
        let h = self.masked(&x)?.matmul(&a)?.contiguous()?;
        let b = (b * self.scale)?.contiguous()?;
        let (rows, k) = x.dims2()?;
        let (r, n) = b.dims2()?;
        let Some((xs, xe)) = l1.contiguous_offsets() else {
            candle_core::bail!("LoRA matmul: the inputs must be contiguous");
        };
        with_cpu_values(&self.w, |w, ws, we| {
            with_cpu_values(&h, |h, hs, he| {
                with_cpu_values(&b, |b, bs, be| {
                    macro_rules! lora_xwt {
                        ($v:ident) => {
                            match (s1, w, h, b) {
                                (
                                    CpuStorage::$v(x),
                                    CpuStorage::$v(w),
                                    CpuStorage::$v(h),
                                    CpuStorage::$v(b),
                                ) => {
                                    let lora = Some((&h[hs..he], r, &b[bs..be]));
                                    let (x, w) = (&x[xs..xe], &w[ws..we]);
                                    Some(CpuStorage::$v(x_wt(x, rows, k, w, n, lora)))
                                }
                                _ => None,
                            }
                        };
                    }
                    let Some(out) = lora_xwt!(F32).or_else(|| lora_xwt!(F64)) else {
                        candle_core::bail!("LoRA matmul: f32 or f64 inputs of one type");
                    };
                    Ok((out, Shape::from((rows, n))))
                })
            })
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let g = g.contiguous()?;
        let xm = self.masked(&x)?;
        let h = xm.matmul(&a)?;
        let db = (h.t()?.matmul(&g)? * self.scale)?;
        let gb = g.matmul(&b.t()?)?;
        let da = (xm.t()?.matmul(&gb)? * self.scale)?;
        let dx_lora = self.masked(&(gb.matmul(&a.t()?)? * self.scale)?)?;
        let dx = (g.matmul(&self.w)? + dx_lora)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// `y = x·Wᵀ (+ h·B)` straight into a new buffer with the gemm crate: `x` is
/// `rows × k`, `w` is `n × k` (the frozen weight as stored), `h·B` an optional
/// `rows × r` by `r × n` term (the LoRA path). Going through candle tensors here
/// copied the input into a tensor and the result out of one — for the output
/// projection a 311 MB copy each way per step.
fn x_wt<T: Copy + Default + From<f32> + 'static>(
    x: &[T],
    rows: usize,
    k: usize,
    w: &[T],
    n: usize,
    lora: Option<(&[T], usize, &[T])>,
) -> Vec<T> {
    assert_eq!(x.len(), rows * k);
    assert_eq!(w.len(), n * k);
    let mut y = vec![T::default(); rows * n];
    let threads = rayon::current_num_threads();
    let one = T::from(1.0);
    matmul(
        &mut y,
        n,
        rows,
        n,
        k,
        Mat::rows(x, k),
        Mat::rows(w, k).t(),
        false,
        one,
        threads,
    );
    if let Some((h, r, b)) = lora {
        assert_eq!(h.len(), rows * r);
        assert_eq!(b.len(), r * n);
        matmul(
            &mut y,
            n,
            rows,
            n,
            r,
            Mat::rows(h, r),
            Mat::rows(b, n),
            true,
            one,
            threads,
        );
    }
    y
}

/// Runs `f` on the storage and contiguous range of a CPU tensor.
fn with_cpu_values<R>(
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, usize, usize) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    match (&*st, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(s), Some((a, b))) => f(s, a, b),
        _ => candle_core::bail!("frozen matmul: tensors must be contiguous and on the CPU"),
    }
}

/// `x · Wᵀ` for a frozen `W` whose backward pass computes only the input's gradient.
///
/// candle's `matmul` backward computes the gradient of *both* operands, frozen or not:
/// in a LoRA step that is a weight-sized tensor for every projection (the whole
/// model's size again, plus the zeros it is added to), which multiplied peak memory
/// several times on the 0.5B model and added one large matmul per layer. This op runs
/// the forward with the same kernel and returns only `∂L/∂x = ∂L/∂y · W`.
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "kura-frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen matmul: the input must be contiguous");
        };
        let (n, k) = self.w.dims2()?;
        let rows = (end - start) / k;
        let mut shape = layout.shape().dims().to_vec();
        *shape.last_mut().expect("at least one dimension") = n;
        with_cpu_values(&self.w, |w, ws, we| {
            let out = match (storage, w) {
                (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                    CpuStorage::F32(x_wt(&x[start..end], rows, k, &w[ws..we], n, None))
                }
                (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                    CpuStorage::F64(x_wt(&x[start..end], rows, k, &w[ws..we], n, None))
                }
                _ => candle_core::bail!("frozen matmul: f32 or f64 input and weight of one type"),
            };
            Ok((out, Shape::from(shape)))
        })
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

/// Identifies an attached LoRA adapter (see [`crate::llm::Model::attach_adapter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdapterId(pub u32);

/// One LoRA adapter of one linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl LoraAdapter {
    /// `a: [in, rank]`, `b: [rank, out]`; the scale is `alpha / rank`.
    pub fn new(a: Tensor, b: Tensor, alpha: f64) -> Result<Self> {
        let (_, rank) = a.dims2()?;
        let (rank_b, _) = b.dims2()?;
        if rank != rank_b || rank == 0 {
            return Err(LlmError::Adapter(format!(
                "A is {:?} and B is {:?}: ranks differ",
                a.dims(),
                b.dims()
            )));
        }
        Ok(Self {
            a,
            b,
            scale: alpha / rank as f64,
        })
    }

    /// The down-projection `A: [in, rank]`.
    pub fn a(&self) -> &Tensor {
        &self.a
    }
    /// The up-projection `B: [rank, out]`.
    pub fn b(&self) -> &Tensor {
        &self.b
    }
    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// The rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }
}

/// A linear layer: frozen weight + optional bias + LoRA adapters.
#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    weight: QMatMul,
    qweight: Arc<QTensor>,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
    /// Kura's own kernel for this weight on this CPU ([`super::kquant`]), if any.
    kquant: Option<KQuant>,
    adapters: Vec<(AdapterId, LoraAdapter)>,
}

impl Linear {
    /// Wraps a weight of shape `[out, in]` (GGUF/candle order) and an optional bias of
    /// shape `[out]`. `name` is the GGUF tensor prefix (`blk.0.attn_q`).
    pub fn new(
        name: impl Into<String>,
        weight: Arc<QTensor>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let name = name.into();
        let (out_dim, in_dim) = weight.shape().dims2()?;
        if let Some(b) = &bias {
            if b.dims() != [out_dim] {
                return Err(LlmError::Adapter(format!(
                    "{name}: bias of shape {:?} for {out_dim} outputs",
                    b.dims()
                )));
            }
        }
        let kquant = if weight.device().is_cpu() {
            kquant::kernel_for(weight.dtype(), in_dim)
        } else {
            None
        };
        Ok(Self {
            name,
            weight: QMatMul::from_arc(weight.clone())?,
            qweight: weight,
            kquant,
            bias,
            in_dim,
            out_dim,
            adapters: Vec::new(),
        })
    }

    /// The GGUF tensor prefix of this layer (`blk.0.attn_q`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// The frozen weight as stored in the file (`[out, in]`).
    pub fn weight(&self) -> &Arc<QTensor> {
        &self.qweight
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// The attached adapters.
    pub fn adapters(&self) -> &[(AdapterId, LoraAdapter)] {
        &self.adapters
    }

    /// Attaches (or replaces) an adapter under `id`.
    pub fn attach(&mut self, id: AdapterId, adapter: LoraAdapter) -> Result<()> {
        let (a_in, _) = adapter.a.dims2()?;
        let (_, b_out) = adapter.b.dims2()?;
        if a_in != self.in_dim || b_out != self.out_dim {
            return Err(LlmError::Adapter(format!(
                "{}: adapter maps {a_in} → {b_out} but the layer maps {} → {}",
                self.name, self.in_dim, self.out_dim
            )));
        }
        self.detach(id);
        self.adapters.push((id, adapter));
        Ok(())
    }

    /// Removes the adapter `id`, if attached.
    pub fn detach(&mut self, id: AdapterId) {
        self.adapters.retain(|(i, _)| *i != id);
    }

    /// A copy whose weight is dequantized to `dtype` (bias too), for training: its
    /// [`Linear::forward_train`] is differentiable with respect to the input. Adapters
    /// are not copied.
    pub fn to_dense(&self, dtype: DType) -> Result<Self> {
        let w = match &self.weight {
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.clone(),
            QMatMul::QTensor(q) => q.dequantize(&q.device())?,
        };
        self.with_dense_weight(w.to_dtype(dtype)?)
    }

    /// A copy that uses `weight` (`[out, in]`, already dequantized) as its dense
    /// weight: lets a tied output projection share the embedding table's memory.
    pub fn with_dense_weight(&self, weight: Tensor) -> Result<Self> {
        let dtype = weight.dtype();
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(dtype)?),
            None => None,
        };
        Ok(Self {
            name: self.name.clone(),
            weight: QMatMul::Tensor(weight),
            qweight: self.qweight.clone(),
            bias,
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            kquant: None,
            adapters: Vec::new(),
        })
    }

    /// The dense weight `[out, in]` of a layer made by [`Linear::to_dense`].
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            QMatMul::Tensor(w) => Some(w),
            _ => None,
        }
    }

    /// The training forward: like [`Linear::forward`] but differentiable end to end
    /// (the layer must come from [`Linear::to_dense`]), with `dropout` applied to the
    /// input of every active adapter.
    pub fn forward_train(
        &self,
        x: &Tensor,
        active: &[AdapterId],
        dropout: Option<&LoraDropout>,
    ) -> Result<Tensor> {
        let w = self.dense_weight().ok_or_else(|| {
            LlmError::InvalidArgument(format!(
                "{}: the training forward needs a dense weight (Linear::to_dense); \
                 the quantized matmul has no backward pass",
                self.name
            ))
        })?;
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, self.in_dim))?;
        let cpu_float = matches!(w.dtype(), DType::F32 | DType::F64);
        let fast = x2.device().is_cpu() && cpu_float && x2.dtype() == w.dtype();
        let mut lora: Vec<&LoraAdapter> = self
            .adapters
            .iter()
            .filter(|(id, _)| active.contains(id))
            .map(|(_, ad)| ad)
            .collect();
        let mut y = if fast && lora.len() == 1 {
            // The training case: the frozen weight and its one adapter in one op.
            let ad = lora.remove(0);
            let mask = match dropout {
                Some(d) => d.mask(&x2)?,
                None => None,
            };
            let op = FrozenLora {
                w: w.clone(),
                scale: ad.scale,
                mask,
            };
            x2.contiguous()?
                .apply_op3(&ad.a.contiguous()?, &ad.b.contiguous()?, op)?
        } else if fast {
            x2.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?
        } else {
            // Other devices: the plain matmul (correct gradients; it also computes
            // the unused weight gradient).
            x2.matmul(&w.t()?)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        for ad in lora {
            let xi = match dropout {
                Some(d) => d.apply(&x2)?,
                None => x2.clone(),
            };
            let delta = xi.matmul(&ad.a)?.matmul(&ad.b)?;
            y = (y + (delta * ad.scale)?)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = self.out_dim;
        Ok(y.reshape(out_dims)?)
    }

    /// `x·Wᵀ + b` plus the adapters listed in `active` (in any order; unknown ids are
    /// ignored). `x` is `[…, in]`.
    pub fn forward(&self, x: &Tensor, active: &[AdapterId]) -> Result<Tensor> {
        let mut y = match self.kquant_forward(x)? {
            Some(y) => y,
            None => self.weight.forward(x)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if !active.is_empty() {
            for (id, ad) in &self.adapters {
                if active.contains(id) {
                    let delta = x.broadcast_matmul(&ad.a)?.broadcast_matmul(&ad.b)?;
                    y = (y + (delta * ad.scale)?)?;
                }
            }
        }
        Ok(y)
    }

    /// `x·Wᵀ` by Kura's K-quant kernel, when this weight has one and `x` is f32 on the
    /// CPU; `None` sends the caller to candle's `QMatMul`.
    fn kquant_forward(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(kind) = self.kquant else {
            return Ok(None);
        };
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let dims = x.dims();
        if dims.last() != Some(&self.in_dim) {
            return Ok(None); // let candle report the shape error
        }
        let rows = x.elem_count() / self.in_dim;
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let w = self.qweight.data()?;
        let mut y = vec![0f32; rows * self.out_dim];
        kquant::matmul(
            kind,
            &w,
            self.out_dim,
            self.in_dim,
            &v[start..end],
            rows,
            &mut y,
        );
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dimension") = self.out_dim;
        Ok(Some(Tensor::from_vec(y, out_dims, x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::llm::fused::max_abs_diff as max_diff;

    /// The fused frozen-weight + LoRA op against the same sum of basic ops, with a
    /// dropout mask: same output, same gradients for the input, A and B.
    #[test]
    fn fused_lora_layer_matches_the_basic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let (rows, din, dout, rank) = (7, 12, 9, 3);
        let var = |dims: (usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, dims, &dev).unwrap()).unwrap()
        };
        let (x, a, b) = (var((rows, din)), var((din, rank)), var((rank, dout)));
        let w = Tensor::randn(0f64, 1.0, (dout, din), &dev).unwrap();
        let dropout = LoraDropout::new(0.3, 5);
        let mask = dropout
            .mask(x.as_tensor())
            .unwrap()
            .expect("p > 0 gives a mask");
        assert!(
            mask.flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .contains(&0.0),
            "some inputs dropped"
        );
        let op = FrozenLora {
            w: w.clone(),
            scale: 2.0,
            mask: Some(mask.clone()),
        };
        let fused = x
            .as_tensor()
            .apply_op3(a.as_tensor(), b.as_tensor(), op)
            .unwrap();
        let plain = (x.as_tensor().matmul(&w.t().unwrap()).unwrap()
            + ((x.as_tensor() * &mask)
                .unwrap()
                .matmul(a.as_tensor())
                .unwrap())
            .matmul(b.as_tensor())
            .unwrap()
                * 2.0)
            .unwrap();
        assert!(max_diff(&fused, &plain) < 1e-12);
        let g = Tensor::randn(0f64, 1.0, (rows, dout), &dev).unwrap();
        let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads(&fused), grads(&plain));
        for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
            let (f, p) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(max_diff(f, p) < 1e-10, "∂{name}: {}", max_diff(f, p));
        }
    }
}
