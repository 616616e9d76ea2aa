//! The training loop: a job description ([`JobSpec`], `job.toml`), its folder
//! ([`TrainRun`]) and the [`Trainer`] that steps, logs, evaluates and checkpoints.
//!
//! A job's folder holds everything it needs, so `kura train resume DIR` works from
//! the folder alone, even if the dataset was re-imported since:
//!
//! ```text
//! DIR/job.toml              the job as given
//! DIR/run.json              the resolved base model file and name
//! DIR/data/train.jsonl      frozen copies of the splits
//! DIR/data/eval.jsonl
//! DIR/metrics.jsonl         one line per step: step, loss, lr, grad norm, tokens/s, ETA
//! DIR/checkpoints/step-N/   see `checkpoint.rs`
//! DIR/adapter/              the final adapter (PEFT format)
//! ```
//!
//! One optimizer step consumes `batch_size × grad_accum` examples from a seeded,
//! per-epoch shuffle. Its loss is the mean over all assistant tokens of the step (each
//! micro-batch's summed loss divided by the step's token count before `backward`), so
//! the result does not depend on how the step is split into micro-batches. Gradients
//! are summed over micro-batches, clipped by global norm, and applied by AdamW at the
//! scheduled learning rate.

use super::checkpoint::{self, CheckpointWriter, TrainState};
use super::dataset::{self, Example, SplitMix64, TokenizedExample};
use super::lora::LoraConfig;
use super::memory::{self, MemoryEstimate, ModelShape};
use super::model::{LoraModel, StepPath};
use super::optim::{clip_grad_norm, AdamW, AdamWParams, LrSchedule};
use super::TrainError;
use crate::llm::{ChatTemplate, GgufFile, LoraDropout, Tokenizer};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A training job as written in `job.toml`.
///
/// ```
/// let job: kura::train::JobSpec = toml::from_str(r#"
///     name = "faq-v1"
///     model = "qwen2.5-coder-0.5b-instruct"
///     dataset = "faq"
///     [lora]
///     rank = 8
///     targets = ["q", "v"]
///     [train]
///     max_steps = 100
/// "#).unwrap();
/// assert_eq!(job.lora.alpha, 32.0);
/// assert_eq!(job.train.learning_rate, 2e-4);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's (and the adapter's) name.
    pub name: String,
    /// The base model: a registry name or a GGUF path.
    pub model: String,
    /// The data: an imported dataset name or a JSONL path.
    pub dataset: String,
    /// Adapter shape.
    #[serde(default)]
    pub lora: LoraConfig,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainParams,
}

/// The optimisation settings of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Seed of data order, LoRA init and dropout.
    pub seed: u64,
    /// Passes over the train split (ignored when `max_steps` is set).
    pub epochs: f64,
    /// Optimizer steps, overriding `epochs`.
    pub max_steps: Option<u64>,
    /// Sequences per forward pass (right-padded).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub max_grad_norm: f64,
    /// Sequences are cut to this many tokens.
    pub max_seq_len: usize,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Evaluate on the eval split every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Compute type: `auto` (default: f32 on the CPU, bf16 on CUDA), `f32`, `bf16`
    /// (CUDA only) or `f64` (gradient checks).
    pub dtype: String,
    /// Share of a JSONL `dataset` held out for evaluation (imported datasets keep
    /// the split they were imported with).
    pub eval_fraction: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            seed: 42,
            epochs: 1.0,
            max_steps: None,
            batch_size: 1,
            grad_accum: 1,
            learning_rate: 2e-4,
            warmup_steps: 0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            max_seq_len: 512,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            eval_every: 0,
            dtype: "auto".into(),
            eval_fraction: 0.1,
        }
    }
}

impl TrainParams {
    /// The compute type on `device`.
    fn dtype_on(&self, device: &Device) -> Result<DType, TrainError> {
        match (self.dtype.as_str(), device.is_cuda()) {
            ("auto", true) | ("bf16", true) => Ok(DType::BF16),
            ("auto", false) | ("f32", _) => Ok(DType::F32),
            ("f64", _) => Ok(DType::F64),
            ("bf16", false) => Err(TrainError::Config(
                "train.dtype `bf16` needs a CUDA device (`--device cuda`, a build with \
                 `--features cuda`); the CPU trains in f32"
                    .into(),
            )),
            (other, _) => Err(TrainError::Config(format!(
                "train.dtype `{other}`: use auto, f32, bf16 (CUDA) or f64"
            ))),
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        if !matches!(self.dtype.as_str(), "auto" | "f32" | "bf16" | "f64") {
            return Err(TrainError::Config(format!(
                "train.dtype `{}`: use auto, f32, bf16 (CUDA) or f64",
                self.dtype
            )));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(TrainError::Config(
                "train.batch_size and train.grad_accum must be at least 1".into(),
            ));
        }
        if self.max_seq_len < 2 {
            return Err(TrainError::Config(
                "train.max_seq_len must be at least 2".into(),
            ));
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(TrainError::Config(
                "train.learning_rate must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Examples consumed by one optimizer step.
    pub fn examples_per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }
}

impl JobSpec {
    /// Reads and checks a `job.toml`.
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let job: JobSpec = toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        job.validate()?;
        Ok(job)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.lora.validate()?;
        self.train.validate()
    }
}

/// The resolved facts of a run (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The base model's GGUF file.
    pub model_path: PathBuf,
    /// The base model's name (written into the adapter's config).
    pub base_model: String,
}

/// A job's folder.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The folder.
    pub dir: PathBuf,
    /// The job.
    pub job: JobSpec,
    /// The resolved model.
    pub info: RunInfo,
}

impl TrainRun {
    /// Creates the folder of a new run with frozen copies of its data.
    pub fn create(
        dir: &Path,
        job: &JobSpec,
        info: RunInfo,
        train: &[Example],
        eval: &[Example],
    ) -> Result<Self, TrainError> {
        job.validate()?;
        if dir.join("job.toml").exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a job: resume it (`kura train resume`) or choose another folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir.join("data")).map_err(|e| TrainError::io(dir, e))?;
        dataset::write_jsonl(&dir.join("data/train.jsonl"), train)?;
        dataset::write_jsonl(&dir.join("data/eval.jsonl"), eval)?;
        let run_json = serde_json::to_string_pretty(&info).expect("serialisable");
        checkpoint::write_atomic(&dir.join("run.json"), run_json.as_bytes())
            .map_err(|e| TrainError::io(&dir.join("run.json"), e))?;
        let toml = toml::to_string_pretty(job).expect("serialisable");
        checkpoint::write_atomic(&dir.join("job.toml"), toml.as_bytes())
            .map_err(|e| TrainError::io(&dir.join("job.toml"), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            job: job.clone(),
            info,
        })
    }

    /// Opens an existing run folder.
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let job = JobSpec::from_file(&dir.join("job.toml"))?;
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let info = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            job,
            info,
        })
    }

    /// The checkpoints folder.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// The per-step log.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    /// The final adapter's folder.
    pub fn adapter_dir(&self) -> PathBuf {
        self.dir.join("adapter")
    }
}

/// One line of `metrics.jsonl`, also handed to the progress callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Optimizer steps completed.
    pub step: u64,
    /// Total steps of the job.
    pub total_steps: u64,
    /// Mean loss over the step's assistant tokens.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens run through the model in this step (prompt and reply).
    pub tokens: usize,
    /// Throughput of this step.
    pub tokens_per_s: f64,
    /// Seconds since the job started (across resumes).
    pub elapsed_s: f64,
    /// Estimated seconds left, counting the evaluations still to come.
    pub eta_s: f64,
    /// Eval-split loss, when this step evaluated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
    /// The checkpoint written after this step, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checkpoint: Option<PathBuf>,
}

/// How a [`Trainer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Steps completed.
    pub steps: u64,
    /// Whether every step of the job is done (false: stopped, resumable).
    pub finished: bool,
    /// Eval loss of the base model without the adapter (when there is an eval split).
    pub base_eval_loss: Option<f64>,
    /// Eval loss with the adapter at the end.
    pub eval_loss: Option<f64>,
    /// The final adapter's folder, when finished.
    pub adapter: Option<PathBuf>,
}

/// Trains one [`TrainRun`], resuming from its newest checkpoint.
#[derive(Debug)]
pub struct Trainer {
    run: TrainRun,
    lora: LoraModel,
    opt: AdamW,
    state: TrainState,
    train: Vec<TokenizedExample>,
    eval: Vec<TokenizedExample>,
    skipped: usize,
    memory: MemoryEstimate,
    orders: HashMap<u64, Vec<usize>>,
    last_eval_s: f64,
    base_eval_loss: Option<f64>,
    step_path: StepPath,
}

impl Trainer {
    /// Loads the base model, tokenizes the frozen data and restores the newest
    /// checkpoint, if any.
    pub fn new(run: TrainRun, device: &Device) -> Result<Self, TrainError> {
        let p = run.job.train.clone();
        let dtype = p.dtype_on(device)?;
        // Tokenize and size the job before loading any weights: a job that cannot fit
        // is refused in a second, not after minutes of loading.
        let mut file = GgufFile::open(&run.info.model_path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let template = ChatTemplate::from_gguf(&file)?;
        let tok = |examples: Vec<Example>| -> Result<(Vec<TokenizedExample>, usize), TrainError> {
            let mut out = Vec::with_capacity(examples.len());
            let mut skipped = 0;
            for (i, e) in examples.iter().enumerate() {
                let t = dataset::tokenize(e, &template, &tokenizer, p.max_seq_len, i)?;
                if t.target_tokens() == 0 {
                    skipped += 1;
                } else {
                    out.push(t);
                }
            }
            Ok((out, skipped))
        };
        let (train, skipped) = tok(dataset::read_jsonl(&run.dir.join("data/train.jsonl"))?)?;
        let eval_text = std::fs::read_to_string(run.dir.join("data/eval.jsonl"))
            .map_err(|e| TrainError::io(&run.dir.join("data/eval.jsonl"), e))?;
        let (eval, _) = tok(dataset::parse_jsonl(&eval_text)?)?;
        if train.is_empty() {
            return Err(TrainError::NoTrainableExamples {
                skipped,
                max_seq_len: p.max_seq_len,
            });
        }
        let longest = train.iter().map(|t| t.ids.len()).max().unwrap_or(1);
        let batch = p.batch_size.min(train.len());
        let memory = MemoryEstimate::of(&ModelShape::of(&file)?, &run.job.lora, batch, longest);
        if let Some(available) = memory::available_memory() {
            memory.check(available, batch, longest)?;
        }
        let llm_model = crate::llm::Model::from_gguf(&mut file, device)?;
        drop(file);
        let lora = LoraModel::new(&llm_model, &run.job.lora, p.seed, dtype)?;
        drop(llm_model);
        let vars = lora
            .lora()
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.clone()))
            .collect();
        let mut opt = AdamW::new(
            vars,
            AdamWParams {
                weight_decay: p.weight_decay,
                ..AdamWParams::default()
            },
        )?;
        let total_steps = p.max_steps.unwrap_or_else(|| {
            ((p.epochs * train.len() as f64) / p.examples_per_step() as f64).ceil() as u64
        });
        let mut state = TrainState {
            step: 0,
            examples_seen: 0,
            seed: p.seed,
            schedule: LrSchedule {
                peak: p.learning_rate,
                warmup_steps: p.warmup_steps,
                total_steps: total_steps.max(1),
            },
            losses: Vec::new(),
            eval_losses: Vec::new(),
            elapsed_s: 0.0,
        };
        let mut base_eval_loss = None;
        if let Some((step, path)) = checkpoint::latest_checkpoint(&run.checkpoints_dir())? {
            let saved = checkpoint::read_state(&path)?;
            if saved.seed != state.seed || saved.schedule != state.schedule {
                return Err(TrainError::Checkpoint(format!(
                    "{}: saved with another seed or schedule than job.toml describes",
                    path.display()
                )));
            }
            let tensors = candle_core::safetensors::load(path.join("trainer.safetensors"), device)?;
            lora.lora().load_values(&tensors)?;
            opt.load_state(&tensors, step)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))?;
            base_eval_loss = read_base_eval(&run.dir);
            state = saved;
            truncate_metrics(&run.metrics_path(), step)?;
        } else {
            // A fresh start: drop a log left by a run killed before its first checkpoint.
            let _ = std::fs::remove_file(run.metrics_path());
        }
        Ok(Self {
            run,
            lora,
            opt,
            state,
            train,
            eval,
            skipped,
            orders: HashMap::new(),
            last_eval_s: 0.0,
            base_eval_loss,
            step_path: StepPath::from_env(),
            memory,
        })
    }

    /// The run.
    pub fn run_info(&self) -> &TrainRun {
        &self.run
    }

    /// Steps completed.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// Total steps of the job.
    pub fn total_steps(&self) -> u64 {
        self.state.schedule.total_steps
    }

    /// The state (losses so far, data position, …).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The peak memory estimated before loading (see [`super::memory`]).
    pub fn memory_estimate(&self) -> &MemoryEstimate {
        &self.memory
    }

    /// Training examples too long to keep any assistant token after cutting to
    /// `max_seq_len` (left out).
    pub fn skipped_examples(&self) -> usize {
        self.skipped
    }

    /// Trainable examples.
    pub fn train_examples(&self) -> usize {
        self.train.len()
    }

    /// The model being trained.
    pub fn lora_model(&self) -> &LoraModel {
        &self.lora
    }

    fn example_at(&mut self, position: u64) -> usize {
        let n = self.train.len() as u64;
        let epoch = position / n;
        let seed = self.state.seed;
        let order = self.orders.entry(epoch).or_insert_with(|| {
            let mut order: Vec<usize> = (0..n as usize).collect();
            SplitMix64::new(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)).shuffle(&mut order);
            order
        });
        order[(position % n) as usize]
    }

    /// One optimizer step (plus evaluation and a checkpoint when due).
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let started = Instant::now();
        let p = self.run.job.train.clone();
        let step = self.state.step;
        let mut micro: Vec<Vec<usize>> = Vec::with_capacity(p.grad_accum);
        let mut position = self.state.examples_seen;
        for _ in 0..p.grad_accum {
            let mut batch = Vec::with_capacity(p.batch_size);
            for _ in 0..p.batch_size {
                batch.push(self.example_at(position));
                position += 1;
            }
            micro.push(batch);
        }
        let total_targets: usize = micro
            .iter()
            .flatten()
            .map(|&i| self.train[i].target_tokens())
            .sum();
        let tokens: usize = micro
            .iter()
            .flatten()
            .map(|&i| self.train[i].ids.len())
            .sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; self.lora.lora().vars().len()];
        let mut loss = 0.0f64;
        for (m, batch) in micro.iter().enumerate() {
            let refs: Vec<&TokenizedExample> = batch.iter().map(|&i| &self.train[i]).collect();
            let dropout = (self.run.job.lora.dropout > 0.0).then(|| {
                LoraDropout::new(
                    self.run.job.lora.dropout,
                    mix(self.state.seed, step, m as u64),
                )
            });
            let out = self.lora.loss_and_grads(
                &refs,
                dropout.as_ref(),
                1.0 / total_targets as f64,
                self.step_path,
            )?;
            loss += out.loss;
            for (slot, gv) in grads.iter_mut().zip(out.grads) {
                if let Some(gv) = gv {
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + gv)?,
                        None => gv,
                    });
                }
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, p.max_grad_norm)?;
        let lr = self.state.schedule.lr(step);
        self.opt.step(&grads, lr)?;
        let train_s = started.elapsed().as_secs_f64();
        self.state.step += 1;
        self.state.examples_seen = position;
        self.state.losses.push(loss);

        let done = self.state.step >= self.state.schedule.total_steps;
        let mut eval_loss = None;
        if !self.eval.is_empty()
            && (done || (p.eval_every > 0 && self.state.step.is_multiple_of(p.eval_every)))
        {
            eval_loss = self.evaluate()?;
            if let Some(l) = eval_loss {
                self.state.eval_losses.push((self.state.step, l));
            }
        }
        self.state.elapsed_s += started.elapsed().as_secs_f64();
        let remaining = self
            .state
            .schedule
            .total_steps
            .saturating_sub(self.state.step);
        let remaining_evals = if self.eval.is_empty() {
            0
        } else {
            match remaining.checked_div(p.eval_every) {
                Some(n) => n + u64::from(!remaining.is_multiple_of(p.eval_every)),
                None => u64::from(remaining > 0),
            }
        };
        let mut report = StepReport {
            step: self.state.step,
            total_steps: self.state.schedule.total_steps,
            loss,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / train_s.max(1e-9),
            elapsed_s: self.state.elapsed_s,
            eta_s: remaining as f64 * train_s + remaining_evals as f64 * self.last_eval_s,
            eval_loss,
            checkpoint: None,
        };
        // The log line goes to disk (fsynced) before the checkpoint is committed: a
        // checkpoint never exists without the log of the steps it covers.
        let due =
            done || (p.checkpoint_every > 0 && self.state.step.is_multiple_of(p.checkpoint_every));
        if due {
            report.checkpoint = Some(
                self.run
                    .checkpoints_dir()
                    .join(checkpoint::checkpoint_name(self.state.step)),
            );
        }
        append_metrics(&self.run.metrics_path(), &report, due)?;
        if due {
            self.checkpoint()?;
        }
        Ok(report)
    }

    /// Eval-split loss with the adapter (and, the first time, without it).
    pub fn evaluate(&mut self) -> Result<Option<f64>, TrainError> {
        let t = Instant::now();
        let bs = self.run.job.train.batch_size;
        if self.base_eval_loss.is_none() && !self.eval.is_empty() {
            self.base_eval_loss = self.lora.mean_loss(&self.eval, false, bs)?;
            if let Some(l) = self.base_eval_loss {
                let path = self.run.dir.join("base_eval.json");
                checkpoint::write_atomic(&path, format!("{{\"base_eval_loss\": {l}}}").as_bytes())
                    .map_err(|e| TrainError::io(&path, e))?;
            }
        }
        let l = self.lora.mean_loss(&self.eval, true, bs)?;
        self.last_eval_s = t.elapsed().as_secs_f64();
        Ok(l)
    }

    /// Writes a checkpoint of the current state (atomically) and prunes old ones.
    pub fn checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let dir = self.run.checkpoints_dir();
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let w = CheckpointWriter::begin(&dir, self.state.step)?;
        let mut tensors = self.opt.state();
        for (name, var) in self.lora.lora().vars() {
            tensors.insert(name, var.as_tensor().clone());
        }
        checkpoint::save_safetensors_atomic(&w.dir().join("trainer.safetensors"), &tensors)?;
        self.lora.lora().save_peft(
            &w.dir().join("adapter"),
            &self.lora.layout(),
            &self.run.info.base_model,
        )?;
        let path = w.commit(&self.state)?;
        checkpoint::prune(&dir, self.run.job.train.keep_checkpoints.max(1))?;
        Ok(path)
    }

    /// Steps until the job is done or `stop` is set (then it checkpoints and returns,
    /// resumable). Each step's report goes to `on_step`. At the end the adapter is
    /// saved to the run's `adapter/` folder.
    pub fn run(
        &mut self,
        stop: Option<&AtomicBool>,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<TrainOutcome, TrainError> {
        while self.state.step < self.state.schedule.total_steps {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                let latest = checkpoint::latest_checkpoint(&self.run.checkpoints_dir())?;
                if latest.map(|c| c.0) != Some(self.state.step) {
                    self.checkpoint()?;
                }
                return Ok(self.outcome(false, None));
            }
            let report = self.step()?;
            on_step(&report);
        }
        let dir = self.run.adapter_dir();
        self.lora
            .lora()
            .save_peft(&dir, &self.lora.layout(), &self.run.info.base_model)?;
        Ok(self.outcome(true, Some(dir)))
    }

    fn outcome(&self, finished: bool, adapter: Option<PathBuf>) -> TrainOutcome {
        TrainOutcome {
            steps: self.state.step,
            finished,
            base_eval_loss: self.base_eval_loss,
            eval_loss: self.state.eval_losses.last().map(|e| e.1),
            adapter,
        }
    }
}

/// Per-(seed, step, micro-batch) generator seed for dropout masks.
fn mix(seed: u64, step: u64, micro: u64) -> u64 {
    let mut g =
        SplitMix64::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ micro.rotate_left(32));
    g.next_u64()
}

fn read_base_eval(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("base_eval.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("base_eval_loss")?.as_f64()
}

fn append_metrics(path: &Path, report: &StepReport, sync: bool) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    let line = serde_json::to_string(report).expect("serialisable");
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))?;
    if sync {
        f.sync_data().map_err(|e| TrainError::io(path, e))?;
    }
    Ok(())
}

/// Keeps only the log lines of steps up to `step` (the ones a resumed run will not
/// repeat); a torn last line from a kill is dropped too.
fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<StepReport>(l).is_ok_and(|r| r.step <= step))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    checkpoint::write_atomic(path, out.as_bytes()).map_err(|e| TrainError::io(path, e))
}

/// Reads a run's `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<StepReport>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepReport>(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compute_type_follows_the_device() {
        let p = |d: &str| TrainParams {
            dtype: d.into(),
            ..TrainParams::default()
        };
        assert_eq!(p("auto").dtype_on(&Device::Cpu).unwrap(), DType::F32);
        assert_eq!(p("f64").dtype_on(&Device::Cpu).unwrap(), DType::F64);
        let err = p("bf16").dtype_on(&Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("needs a CUDA device"), "{err}");
        assert!(p("fp8").validate().is_err());
        assert!(p("bf16").validate().is_ok());
    }
}
