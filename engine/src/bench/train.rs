//! `kura bench train`: LoRA training throughput and peak memory, Kura against PyTorch +
//! PEFT on the same weights, the same token ids, rank, targets, sequence length, batch
//! and thread count.
//!
//! Nothing on these machines ships the unquantized model, so the reference trains on
//! the weights Kura trains on: the GGUF's base is dequantized and written as a Hugging
//! Face folder by [`crate::train::export::export_hf`] (f32), which `transformers` loads
//! and `peft` wraps (`get_peft_model`, `torch.optim.AdamW`, `clip_grad_norm_`). Kura
//! runs its own trainer's pieces — [`LoraModel`] (the dequantized training copy with
//! adapters), [`AdamW`], [`clip_grad_norm`] — exactly as `Trainer::step` uses them.
//!
//! Each engine runs in a child process of its own (Kura in the running executable as
//! a benchmark child, [`super::worker`]; PyTorch in [`PEFT_DRIVER`]), so peak RSS (`VmHWM` /
//! `ru_maxrss`) is that engine's alone, and the runs alternate. Per run: load, a few
//! warm-up steps (not timed), then N timed optimizer steps of `batch × seq` tokens,
//! the loss on every token (no padding, no mask: both sides do the same work). The
//! first step's loss is the base model's on both sides (PEFT and Kura both start with
//! `B = 0`), which cross-checks that both trained the same model on the same tokens.
//! The ratio printed is Kura's tokens/s over PEFT's (> 1: Kura faster) and Kura's peak
//! RSS over PEFT's (< 1: Kura smaller).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::{DType, Device, Var};
use serde::{Deserialize, Serialize};

use crate::bench::generate::peak_rss_mb;
use crate::llm::{Llm, LlmError};
use crate::train::model::StepPath;
use crate::train::optim::{clip_grad_norm, AdamW, AdamWParams};
use crate::train::{LoraConfig, LoraModel, Target, TokenizedExample, TrainError};

/// The Python driver that trains with PyTorch + PEFT on a job file.
pub const PEFT_DRIVER: &str = include_str!("peft_train_driver.py");

/// The model the benchmark trains by default: the default LoRA base.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

/// Errors of the training benchmark.
#[derive(Debug, thiserror::Error)]
pub enum TrainBenchError {
    /// The model could not be loaded or run.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// Kura's training step failed, or the export did.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A tensor computation failed.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The reference is not installed.
    #[error(
        "PyTorch + PEFT are not installed for the benchmark ({python} cannot import torch, \
         transformers and peft). Run installer/setup once, online (it installs CPU torch + \
         transformers + peft into target/peft-venv), point --python at a Python that has \
         them, or pass --no-reference to measure Kura alone"
    )]
    ReferenceMissing {
        /// The Python interpreter that was tried.
        python: String,
    },
    /// A child process failed.
    #[error("{engine} benchmark process failed: {message}")]
    Child {
        /// Which engine.
        engine: String,
        /// What went wrong (its stderr tail).
        message: String,
    },
    /// Files for the children could not be written.
    #[error("bench: {0}")]
    Io(#[from] std::io::Error),
}

/// What one child process is asked to do (written as JSON for both engines).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSpec {
    /// The GGUF Kura trains on.
    pub model: PathBuf,
    /// Its dequantized export (Hugging Face folder) PyTorch trains on.
    pub hf_dir: PathBuf,
    /// One sequence of token ids; every batch row is this sequence.
    pub tokens: Vec<u32>,
    /// Sequences per step.
    pub batch: usize,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// PEFT module names (`q_proj`, …).
    pub targets: Vec<String>,
    /// Untimed steps first.
    pub warmup_steps: usize,
    /// Timed steps.
    pub steps: usize,
    /// Learning rate (constant).
    pub learning_rate: f64,
    /// Threads.
    pub threads: usize,
    /// Seed of the adapter init.
    pub seed: u64,
}

/// One engine's figures from one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRun {
    /// `kura` or `peft`.
    pub engine: String,
    /// Loading the model and building the adapters, seconds.
    pub load_s: f64,
    /// Tokens per optimizer step (`batch × seq`).
    pub tokens_per_step: usize,
    /// Seconds of each timed step.
    pub step_s: Vec<f64>,
    /// Seconds of each warm-up step.
    pub warmup_s: Vec<f64>,
    /// Loss of every step, warm-up included.
    pub losses: Vec<f64>,
    /// CPU time (user + system, all threads) of the timed steps, seconds: less
    /// sensitive than wall time to other processes on a shared machine.
    #[serde(default)]
    pub cpu_s: f64,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: f64,
    /// Versions (PyTorch side) or build facts.
    #[serde(default)]
    pub versions: String,
}

impl EngineRun {
    /// Training tokens per second over the timed steps.
    pub fn tokens_per_s(&self) -> f64 {
        let t: f64 = self.step_s.iter().sum();
        (self.tokens_per_step * self.step_s.len()) as f64 / t.max(1e-9)
    }

    /// Training tokens per CPU-second over the timed steps.
    pub fn tokens_per_cpu_s(&self) -> f64 {
        (self.tokens_per_step * self.step_s.len()) as f64 / self.cpu_s.max(1e-9)
    }
}

/// CPU time (user + system) of this process so far, seconds.
pub fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Ratios Kura / PEFT.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Throughput (> 1: Kura faster).
    pub throughput: f64,
    /// Tokens per CPU-second (> 1: Kura does the step with less CPU time).
    pub cpu_efficiency: f64,
    /// Peak RSS (< 1: Kura uses less).
    pub peak_rss: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The GGUF.
    pub model: PathBuf,
    /// Sequence length.
    pub seq: usize,
    /// Batch.
    pub batch: usize,
    /// Rank.
    pub rank: usize,
    /// Targets.
    pub targets: Vec<String>,
    /// Threads.
    pub threads: usize,
    /// Timed steps per run.
    pub steps: usize,
    /// Kura's best run (highest tokens/s; peak RSS: the lowest).
    pub kura: EngineRun,
    /// PEFT's best run.
    pub peft: Option<EngineRun>,
    /// Kura / PEFT.
    pub ratios: Option<Ratios>,
    /// First-step loss of both (the base model's loss on the sequence).
    pub first_loss: (f64, Option<f64>),
    /// System load average (1 min) before the first run.
    pub load_average: Option<f64>,
}

/// The 1-minute load average, if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kura's side of a job: load, build the adapters, warm up, time the steps.
pub fn run_kura(job: &BenchSpec) -> Result<EngineRun, TrainBenchError> {
    let device = Device::Cpu;
    let t = Instant::now();
    let llm = Llm::load(&job.model, &device)?;
    let targets = job
        .targets
        .iter()
        .map(|n| {
            Target::parse(n).ok_or_else(|| TrainError::Config(format!("unknown target `{n}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = LoraConfig {
        rank: job.rank,
        alpha: job.alpha,
        dropout: 0.0,
        targets,
    };
    // As `Trainer::new` does: the training copy, then the quantized model is dropped.
    let lora = LoraModel::new(&llm.model, &config, job.seed, DType::F32)?;
    drop(llm);
    let vars: Vec<(String, Var)> = lora
        .lora()
        .vars()
        .into_iter()
        .map(|(n, v)| (n, v.clone()))
        .collect();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
    let load_s = t.elapsed().as_secs_f64();

    let example = TokenizedExample {
        ids: job.tokens.clone(),
        mask: vec![1; job.tokens.len()],
    };
    let batch: Vec<&TokenizedExample> = vec![&example; job.batch.max(1)];
    let mut run = EngineRun {
        engine: "kura".into(),
        load_s,
        tokens_per_step: job.tokens.len() * batch.len(),
        step_s: Vec::new(),
        warmup_s: Vec::new(),
        losses: Vec::new(),
        cpu_s: 0.0,
        peak_rss_mb: 0.0,
        versions: format!("kura {}", env!("CARGO_PKG_VERSION")),
    };
    let mut cpu_start = 0.0;
    for step in 0..job.warmup_steps + job.steps {
        if step == job.warmup_steps {
            cpu_start = process_cpu_s();
        }
        let t = Instant::now();
        let targets: usize = batch.iter().map(|e| e.target_tokens()).sum();
        let out = lora.loss_and_grads(
            &batch,
            None,
            1.0 / targets.max(1) as f64,
            StepPath::from_env(),
        )?;
        run.losses.push(out.loss);
        let mut grads = out.grads;
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads, job.learning_rate)?;
        let dt = t.elapsed().as_secs_f64();
        if step < job.warmup_steps {
            run.warmup_s.push(dt);
        } else {
            run.step_s.push(dt);
        }
    }
    run.cpu_s = process_cpu_s() - cpu_start;
    run.peak_rss_mb = peak_rss_mb();
    Ok(run)
}

/// The Python with torch + transformers + peft: `KURA_BENCH_PYTHON`, else
/// `target/peft-venv/bin/python` (made by `installer/setup`), looked up from the
/// current folder and beside the running binary's `target/`.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("KURA_BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let rel = Path::new("target/peft-venv/bin/python");
    let mut candidates = vec![rel.to_path_buf()];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.parent().and_then(Path::parent) {
            candidates.push(target.join("peft-venv/bin/python"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| rel.to_path_buf())
}

/// Runs the two engines' children.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The running executable, re-run as a benchmark child ([`super::worker`]).
    pub kura_exe: PathBuf,
    /// The Python with PyTorch + PEFT; `None`: Kura alone.
    pub python: Option<PathBuf>,
    /// Where the job file and the driver are written.
    pub work_dir: PathBuf,
}

impl Runner {
    /// Checks that the reference Python can import what it needs.
    pub fn check_reference(&self) -> Result<(), TrainBenchError> {
        let Some(python) = &self.python else {
            return Ok(());
        };
        if super::python_can_import(python, "torch, transformers, peft") {
            Ok(())
        } else {
            Err(TrainBenchError::ReferenceMissing {
                python: python.display().to_string(),
            })
        }
    }

    fn write_job(&self, job: &BenchSpec) -> Result<PathBuf, TrainBenchError> {
        Ok(super::write_job_file(
            &self.work_dir,
            "train-job.json",
            job,
        )?)
    }

    fn run_child(engine: &str, cmd: &mut Command) -> Result<EngineRun, TrainBenchError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TrainBenchError::Child {
                engine: engine.into(),
                message: format!("cannot start {:?}: {e}", cmd.get_program()),
            })?;
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let skip = s.chars().count().saturating_sub(2000);
            s.chars().skip(skip).collect::<String>()
        };
        if !out.status.success() {
            return Err(TrainBenchError::Child {
                engine: engine.into(),
                message: format!("{}: {}", out.status, tail(&out.stderr)),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line).map_err(|e| TrainBenchError::Child {
            engine: engine.into(),
            message: format!(
                "unreadable result ({e}): {}{}",
                tail(&out.stdout),
                tail(&out.stderr)
            ),
        })
    }

    /// Kura's side, in a child process.
    pub fn run_kura_child(&self, job: &BenchSpec) -> Result<EngineRun, TrainBenchError> {
        let path = self.write_job(job)?;
        let threads = job.threads.to_string();
        Self::run_child(
            "kura",
            super::worker::command(&self.kura_exe, super::worker::Bench::Train, &path)
                .env("RAYON_NUM_THREADS", &threads)
                .env("CANDLE_NUM_THREADS", &threads),
        )
    }

    /// PyTorch + PEFT's side, in a child process.
    pub fn run_peft_child(&self, job: &BenchSpec) -> Result<EngineRun, TrainBenchError> {
        let python = self
            .python
            .as_ref()
            .ok_or_else(|| TrainBenchError::ReferenceMissing {
                python: "(none)".into(),
            })?;
        let path = self.write_job(job)?;
        let driver = self.work_dir.join("peft_train_driver.py");
        std::fs::write(&driver, PEFT_DRIVER)?;
        let threads = job.threads.to_string();
        Self::run_child(
            "peft",
            Command::new(python)
                .arg(&driver)
                .arg(&path)
                .env("OMP_NUM_THREADS", &threads)
                .env("MKL_NUM_THREADS", &threads)
                .env("HF_HUB_OFFLINE", "1"),
        )
    }

    /// `runs` alternating runs of each engine; the best of each figure is kept.
    pub fn run(
        &self,
        job: &BenchSpec,
        runs: usize,
        progress: &dyn Fn(&EngineRun),
    ) -> Result<Report, TrainBenchError> {
        self.check_reference()?;
        let load_average = load_average();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..runs.max(1) {
            let r = self.run_kura_child(job)?;
            progress(&r);
            ours.push(r);
            if self.python.is_some() {
                let r = self.run_peft_child(job)?;
                progress(&r);
                theirs.push(r);
            }
        }
        let kura = best(ours).expect("at least one run");
        let peft = best(theirs);
        let ratios = peft.as_ref().map(|p| Ratios {
            throughput: kura.tokens_per_s() / p.tokens_per_s(),
            cpu_efficiency: kura.tokens_per_cpu_s() / p.tokens_per_cpu_s(),
            peak_rss: kura.peak_rss_mb / p.peak_rss_mb,
        });
        Ok(Report {
            model: job.model.clone(),
            seq: job.tokens.len(),
            batch: job.batch,
            rank: job.rank,
            targets: job.targets.clone(),
            threads: job.threads,
            steps: job.steps,
            first_loss: (
                kura.losses.first().copied().unwrap_or(f64::NAN),
                peft.as_ref().and_then(|p| p.losses.first().copied()),
            ),
            kura,
            peft,
            ratios,
            load_average,
        })
    }
}

/// The fastest run, with the lowest peak RSS of all runs.
fn best(runs: Vec<EngineRun>) -> Option<EngineRun> {
    let min_rss = runs
        .iter()
        .map(|r| r.peak_rss_mb)
        .fold(f64::INFINITY, f64::min);
    let mut best = runs
        .into_iter()
        .max_by(|a, b| a.tokens_per_s().total_cmp(&b.tokens_per_s()))?;
    best.peak_rss_mb = min_rss;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::fixtures::write_tiny_qwen2_gguf;

    #[test]
    fn kura_worker_trains_and_reports_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_tiny_qwen2_gguf(&path, 3).unwrap();
        let job = BenchSpec {
            model: path,
            hf_dir: dir.path().join("hf"),
            tokens: (0..48).map(|i| (i * 7 % 250) as u32).collect(),
            batch: 2,
            rank: 4,
            alpha: 8.0,
            targets: Target::ALL.iter().map(|t| t.peft().to_string()).collect(),
            warmup_steps: 1,
            steps: 3,
            learning_rate: 1e-2,
            threads: 1,
            seed: 1,
        };
        let r = run_kura(&job).unwrap();
        assert_eq!(
            (r.warmup_s.len(), r.step_s.len(), r.losses.len()),
            (1, 3, 4)
        );
        assert_eq!(r.tokens_per_step, 96);
        assert!(r.tokens_per_s() > 0.0 && r.peak_rss_mb > 1.0);
        assert!(r.cpu_s > 0.0 && r.tokens_per_cpu_s() > 0.0);
        // The adapters learn: the loss on the repeated sequence goes down.
        assert!(r.losses[3] < r.losses[0], "{:?}", r.losses);
    }
}
