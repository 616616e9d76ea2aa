//! LoRA fine-tuning on the very GGUF Kura serves (QLoRA on CPU).
//!
//! Nothing on these machines ships unquantized weights, and what a company wants to
//! serve is the model it already runs. So the frozen base is dequantized from the
//! served GGUF, small adapters are trained on top, and the result is attached to the
//! same quantized model at inference time (`crate::llm::Model::attach_adapter`).
//!
//! The training forward is the engine's own transformer run in a differentiable mode
//! (`crate::llm::Model::forward_train`): candle-nn's fused softmax, RMSNorm and RoPE
//! kernels and the quantized matmul have no backward pass and would silently cut the
//! graph, so training uses forms built from basic tensor ops on dequantized weights.
//! `tests/train_lora.rs` proves with finite differences that every LoRA parameter
//! gets the right gradient.
//!
//! | file | what |
//! |---|---|
//! | `dataset.rs` | JSONL import (OpenAI / Alpaca), validation naming line and field, seeded split, tokenization with the assistant-only loss mask, the dataset store |
//! | `export.rs` | the dequantized base as a Hugging Face folder (for transformers/PEFT and `kura bench train`) |
//! | `lora.rs` | targets, [`LoraConfig`], PEFT-style init, PEFT save/load |
//! | `memory.rs` | peak-memory estimate before a job starts; refusal when it cannot fit |
//! | `model.rs` | [`LoraModel`]: dense base + adapters, the masked cross-entropy |
//! | `optim.rs` | AdamW with savable state, warm-up + cosine schedule, global-norm clipping |
//! | `checkpoint.rs` | atomic checkpoints (adapter, optimizer, schedule, RNG, data position) |
//! | `evaluate.rs` | "did it help?": base vs base + adapter on held-out examples (loss, answers), [`AdapterReport`] |
//! | `plot.rs` | the report's PNG (plotters) |
//! | `synth.rs` | Q&A drafts from indexed chunks by the local model (with their source), review, approved pairs → dataset |
//! | `trainer.rs` | [`JobSpec`] (`job.toml`), [`TrainRun`] (the job's folder), [`Trainer`] |
//!
//! ```no_run
//! # fn main() -> Result<(), kura::train::TrainError> {
//! use kura::train::{dataset, RunInfo, JobSpec, TrainRun, Trainer};
//! let job = JobSpec::from_file("job.toml".as_ref())?;
//! let examples = dataset::read_jsonl("faq.jsonl".as_ref())?;
//! let (train, eval) = dataset::split(&examples, 0.1, job.train.seed);
//! let info = RunInfo {
//!     model_path: "models/qwen2.5-coder-0.5b-instruct.gguf".into(),
//!     base_model: "qwen2.5-coder-0.5b-instruct".into(),
//! };
//! let run = TrainRun::create("runs/faq".as_ref(), &job, info, &train, &eval)?;
//! let mut trainer = Trainer::new(run, &candle_core::Device::Cpu)?;
//! let outcome = trainer.run(None, &mut |r| println!("step {} loss {:.4}", r.step, r.loss))?;
//! assert!(outcome.finished);
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub(crate) mod cpu_step;
pub mod dataset;
pub mod evaluate;
pub mod export;
pub mod lora;
pub mod memory;
pub mod model;
pub mod optim;
pub mod plot;
pub mod synth;
pub mod trainer;

pub use dataset::{DatasetError, DatasetStore, Example, TokenizedExample};
pub use evaluate::{evaluate_adapter, AdapterReport, EvalOptions, Scores, Verdict};
pub use lora::{load_peft, save_peft, LoraConfig, LoraWeights, PeftAdapter, PeftLayout, Target};
pub use model::LoraModel;
pub use trainer::{
    read_metrics, JobSpec, RunInfo, StepReport, TrainOutcome, TrainParams, TrainRun, Trainer,
};

use std::path::{Path, PathBuf};

/// Errors of the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data set is invalid.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
    /// A tensor computation failed.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// `job.toml` (or its values) is invalid.
    #[error("job configuration: {0} (ジョブ設定が不正です)")]
    Config(String),
    /// A checkpoint is missing, incomplete or does not belong to this job.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An adapter folder is invalid or does not fit the model.
    #[error("adapter: {0}")]
    Adapter(String),
    /// The job would not fit in memory.
    #[error(
        "the job needs about {needed_gib:.1} GiB of memory but {available_gib:.1} GiB are \
         available: {hint} (メモリが不足するためジョブを開始できません)"
    )]
    OutOfMemory {
        /// Estimated peak.
        needed_gib: f64,
        /// Available now.
        available_gib: f64,
        /// What to lower.
        hint: String,
    },
    /// The job's base model is not usable (unknown, missing, wrong checksum).
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    /// The report's PNG could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// After cutting to `max_seq_len`, no example keeps an assistant token.
    #[error(
        "no trainable example: {skipped} examples have no assistant token within the first \
         {max_seq_len} tokens (raise train.max_seq_len) (学習できる例がありません)"
    )]
    NoTrainableExamples {
        /// Examples left out.
        skipped: usize,
        /// The cut-off.
        max_seq_len: usize,
    },
}

/// The base model of a job: a GGUF path as given, or a registry name (verified).
pub fn resolve_model(paths: &crate::paths::Paths, model: &str) -> Result<RunInfo, TrainError> {
    let as_path = Path::new(model);
    if as_path.is_file() {
        let base_model = as_path
            .file_stem()
            .map_or_else(|| model.to_string(), |s| s.to_string_lossy().into_owned());
        return Ok(RunInfo {
            model_path: std::fs::canonicalize(as_path).map_err(|e| TrainError::io(as_path, e))?,
            base_model,
        });
    }
    let registry = crate::models::Registry::open(&paths.models_dir)?;
    let verified = registry.verify_named(Some(model), crate::models::Role::Chat)?;
    Ok(RunInfo {
        model_path: verified.primary().to_path_buf(),
        base_model: verified.entry.name.clone(),
    })
}

/// Validates `job`, resolves its model and data (an imported dataset, or a JSONL file
/// split by `train.eval_fraction`) and creates its folder (`output`, default
/// `<data>/jobs/<name>`) — what `kura train run|submit` and the Training screen do.
pub fn prepare_run(
    job: &JobSpec,
    paths: &crate::paths::Paths,
    output: Option<PathBuf>,
) -> Result<TrainRun, TrainError> {
    job.validate()?;
    if !dataset::is_folder_name(&job.name) {
        return Err(TrainError::Config(format!(
            "job name `{}`: letters, digits, -, _ and . only (it names a folder)",
            job.name
        )));
    }
    let info = resolve_model(paths, &job.model)?;
    let (train, eval) = if Path::new(&job.dataset).is_file() {
        let examples = dataset::read_jsonl(Path::new(&job.dataset))?;
        dataset::split(&examples, job.train.eval_fraction, job.train.seed)
    } else {
        DatasetStore::new(paths.datasets_dir()).load(&job.dataset)?
    };
    let dir = output.unwrap_or_else(|| paths.jobs_dir().join(&job.name));
    TrainRun::create(&dir, job, info, &train, &eval)
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
