//! The model being trained: the frozen base, dequantized from the served GGUF, with
//! LoRA adapters attached, and the loss it is trained on.
//!
//! [`LoraModel::nll`] runs the engine's differentiable training forward
//! ([`crate::llm::Model::forward_train`]) and scores only the positions whose next
//! token is an assistant token (the loss mask of
//! [`crate::train::dataset::TokenizedExample`]): the output projection runs on those
//! rows alone, which also keeps the vocabulary-sized logits small. Batches are
//! right-padded; under the causal mask padding can only follow the real tokens, so it
//! changes nothing they see.

use super::cpu_step::Workspace;
use super::dataset::TokenizedExample;
use super::lora::{LoraConfig, LoraWeights, PeftLayout};
use super::TrainError;
use crate::llm::{AdapterId, LoraDropout, Model};
use candle_core::{DType, Tensor, D};
use std::collections::HashMap;
use std::sync::Mutex;

/// The name the trained adapter is attached under inside the training model.
const ADAPTER: &str = "training";

/// A dense training copy of a model with trainable LoRA adapters attached.
#[derive(Debug)]
pub struct LoraModel {
    model: Model,
    lora: LoraWeights,
    adapter: AdapterId,
    layout: PeftLayout,
    dtype: DType,
    /// Buffers of the hand-written CPU step, kept between steps.
    workspace: Mutex<Workspace>,
}

/// How a training step computes its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// The hand-written CPU step ([`super::cpu_step`]), where it applies.
    Auto,
    /// candle's autograd over the differentiable forward (the reference).
    Autograd,
}

impl StepPath {
    /// `KURA_TRAIN_STEP=autograd` forces the reference path (comparisons, debugging).
    pub fn from_env() -> Self {
        match std::env::var("KURA_TRAIN_STEP").as_deref() {
            Ok("autograd") => Self::Autograd,
            _ => Self::Auto,
        }
    }
}

/// The loss of a batch and the gradients of every trainable tensor.
#[derive(Debug)]
pub struct BatchGrads {
    /// `loss_scale × Σ NLL` of the scored tokens.
    pub loss: f64,
    /// How many tokens were scored.
    pub targets: usize,
    /// One entry per [`LoraWeights::vars`], in that order (`None`: no gradient).
    pub grads: Vec<Option<Tensor>>,
}

impl LoraModel {
    /// Dequantizes `base` to `dtype` and attaches fresh adapters (PEFT init from `seed`).
    pub fn new(
        base: &Model,
        config: &LoraConfig,
        seed: u64,
        dtype: DType,
    ) -> Result<Self, TrainError> {
        let mut model = base.to_training(dtype)?;
        let lora = LoraWeights::init(&mut model, config, seed, dtype)?;
        let adapter = lora.attach(&mut model, ADAPTER)?;
        Ok(Self {
            layout: PeftLayout::of(&model),
            model,
            lora,
            adapter,
            dtype,
            workspace: Mutex::new(Workspace::default()),
        })
    }

    /// The adapters' trainable tensors.
    pub fn lora(&self) -> &LoraWeights {
        &self.lora
    }

    /// The training copy of the model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How this model's layers map to Hugging Face names.
    pub fn layout(&self) -> PeftLayout {
        self.layout
    }

    /// The compute type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The summed negative log-likelihood of the assistant tokens of `batch`, and how
    /// many tokens it sums over. With `with_adapter = false` the base model alone is
    /// scored (for the before/after comparison). `dropout` applies to the adapters'
    /// inputs (training only).
    pub fn nll(
        &self,
        batch: &[&TokenizedExample],
        with_adapter: bool,
        dropout: Option<&LoraDropout>,
    ) -> Result<(Tensor, usize), TrainError> {
        let active: &[AdapterId] = if with_adapter { &[self.adapter] } else { &[] };
        masked_nll(&self.model, batch, active, dropout, self.dtype)
    }

    /// `loss_scale × Σ NLL` of `batch` with the adapter active, and its gradient with
    /// respect to every adapter tensor: by the hand-written CPU step where it applies
    /// (`path` = [`StepPath::Auto`]), else by candle's autograd.
    pub fn loss_and_grads(
        &self,
        batch: &[&TokenizedExample],
        dropout: Option<&LoraDropout>,
        loss_scale: f64,
        path: StepPath,
    ) -> Result<BatchGrads, TrainError> {
        let vars = self.lora.vars();
        if path == StepPath::Auto {
            let mut ws = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(out) = super::cpu_step::loss_and_grads(
                &self.model,
                Some(self.adapter),
                batch,
                dropout,
                loss_scale,
                true,
                &mut ws,
            ) {
                let out = out?;
                let mut by_id: HashMap<_, _> = out.grads.into_iter().collect();
                return Ok(BatchGrads {
                    loss: out.nll * loss_scale,
                    targets: out.targets,
                    grads: vars
                        .iter()
                        .map(|(_, v)| by_id.remove(&v.as_tensor().id()))
                        .collect(),
                });
            }
        }
        let (nll, targets) = self.nll(batch, true, dropout)?;
        let scaled = (nll * loss_scale)?;
        let loss = scaled.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let g = scaled.backward()?;
        // candle leaves a variable's gradient attached to the graph of the forward
        // pass: detach it, or every step's activations would live on in the
        // optimizer's moments.
        let grads = vars
            .iter()
            .map(|(_, v)| g.get(v.as_tensor()).map(Tensor::detach))
            .collect();
        Ok(BatchGrads {
            loss,
            targets,
            grads,
        })
    }

    /// Mean per-token loss over `examples` (no gradient), `batch_size` at a time.
    pub fn mean_loss(
        &self,
        examples: &[TokenizedExample],
        with_adapter: bool,
        batch_size: usize,
    ) -> Result<Option<f64>, TrainError> {
        let (mut sum, mut count) = (0.0f64, 0usize);
        let active = with_adapter.then_some(self.adapter);
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&TokenizedExample> = chunk.iter().collect();
            // The CPU step's forward keeps nothing for a backward pass; the autograd
            // forward would keep its whole graph alive (the adapters are variables).
            let mut ws = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
            let fast = super::cpu_step::loss_and_grads(
                &self.model,
                active,
                &refs,
                None,
                1.0,
                false,
                &mut ws,
            );
            drop(ws);
            let (nll, n) = match fast {
                Some(out) => {
                    let out = out?;
                    (out.nll, out.targets)
                }
                None => {
                    let (nll, n) = self.nll(&refs, with_adapter, None)?;
                    (nll.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?, n)
                }
            };
            sum += nll;
            count += n;
        }
        Ok((count > 0).then(|| sum / count as f64))
    }
}

/// The summed negative log-likelihood of the assistant tokens of `batch` under the
/// dense training `model` with the adapters `active`, and how many tokens it sums
/// over (the loss of [`LoraModel::nll`], also used to score saved adapters).
pub fn masked_nll(
    model: &Model,
    batch: &[&TokenizedExample],
    active: &[AdapterId],
    dropout: Option<&LoraDropout>,
    dtype: DType,
) -> Result<(Tensor, usize), TrainError> {
    let device = model.device();
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, ex) in batch.iter().enumerate() {
        ids.extend_from_slice(&ex.ids);
        ids.extend(std::iter::repeat_n(0u32, len - ex.ids.len()));
        for t in 0..ex.ids.len().saturating_sub(1) {
            if ex.mask[t + 1] == 1 {
                rows.push((r * len + t) as u32);
                targets.push(ex.ids[t + 1]);
            }
        }
    }
    let n = rows.len();
    if n == 0 {
        return Ok((Tensor::zeros((), dtype, device)?, 0));
    }
    let ids = Tensor::from_vec(ids, (batch.len(), len), device)?;
    let hidden = model.forward_train(&ids, active, dropout)?;
    let hidden_size = hidden.dim(D::Minus1)?;
    let picked = hidden
        .reshape((batch.len() * len, hidden_size))?
        .index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
    let logits = model.lm_head().forward_train(&picked, &[], None)?;
    let nll = crate::llm::fused::summed_nll(&logits, &targets)?;
    Ok((nll, n))
}
