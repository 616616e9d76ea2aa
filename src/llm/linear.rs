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
//! gradient flows through `A` and `B` while the quantized base has none.

use super::error::{LlmError, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};
use std::sync::Arc;

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
        Ok(Self {
            name,
            weight: QMatMul::from_arc(weight.clone())?,
            qweight: weight,
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

    /// `x·Wᵀ + b` plus the adapters listed in `active` (in any order; unknown ids are
    /// ignored). `x` is `[…, in]`.
    pub fn forward(&self, x: &Tensor, active: &[AdapterId]) -> Result<Tensor> {
        let mut y = self.weight.forward(x)?;
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
}
