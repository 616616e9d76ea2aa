//! What the commands load before they work, where more than one command loads
//! it: the chat model (with the model and sampling options of `generate` and
//! `chat`), the embedding model, the collections a question may read, a training
//! job's folder, the job queue, the async runtimes the catalog is used from, and
//! the scratch folder of evaluations and benchmarks.
//!
//! It lives apart from the command modules so that no command module has to use
//! another; this module uses none of them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use kura::catalog::Catalog;
use kura::embed::Embedder;
use kura::jobs::JobQueue;
use kura::llm::{ChatMessage, DeviceChoice, GenerateParams, Llm, SamplingParams};
use kura::models::{Registry, Role};
use kura::paths::Paths;
use kura::train::{JobSpec, TrainRun};

/// Options shared by `generate` and `chat`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Chat model name (see `kura models list`; default: the default chat model).
    #[arg(long)]
    pub model: Option<String>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy, deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the output contains this (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Where the model runs: cpu, or cuda[:N] (builds with `--features cuda`).
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
}

impl ModelArgs {
    pub(crate) fn params(&self) -> GenerateParams {
        let sampling = if self.temperature <= 0.0 {
            SamplingParams {
                repeat_penalty: self.repeat_penalty,
                ..SamplingParams::greedy()
            }
        } else {
            SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                seed: self.seed,
                ..SamplingParams::default()
            }
        };
        GenerateParams {
            max_tokens: self.max_tokens,
            sampling,
            stop: self.stop.clone(),
            ..GenerateParams::default()
        }
    }
}

/// The chat messages: the `--system` prompt, if any, then the conversation.
pub(crate) fn messages(system: &Option<String>, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(ChatMessage::system(s.clone()));
    }
    m.extend_from_slice(history);
    m
}

/// Loads a verified chat model onto `device`.
pub(crate) fn load_llm(paths: &Paths, name: Option<&str>, device: DeviceChoice) -> Result<Llm> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(name, Role::Chat)?;
    let device = device.open()?;
    Llm::load(model.primary(), &device)
        .with_context(|| format!("loading the chat model {}", model.entry.name))
}

/// Loads a verified embedding model, on the CPU.
pub(crate) fn load_embedder(paths: &Paths, name: Option<&str>) -> Result<Embedder> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(name, Role::Embedding)?;
    let device = candle_core::Device::Cpu;
    let path = if model.entry.format == "safetensors" {
        model
            .primary()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    } else {
        model.primary().to_path_buf()
    };
    Embedder::load(&path, &device)
        .with_context(|| format!("loading the embedding model {}", model.entry.name))
}

/// The async runtime a command blocks on for the catalog and the indexes.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The ids of the collections named (all, when none is); an error when nothing is
/// indexed yet.
pub(crate) async fn readable_collections(catalog: &Catalog, names: &[String]) -> Result<Vec<i64>> {
    let cols = if names.is_empty() {
        catalog
            .summaries()
            .await?
            .into_iter()
            .map(|s| s.collection)
            .collect()
    } else {
        catalog.collections_named(names).await?
    };
    if cols.is_empty() {
        bail!("nothing is indexed yet: run `kura ingest PATH --collection NAME` first / まだ何も索引されていません");
    }
    Ok(cols.iter().map(|c| c.id).collect())
}

/// The work folder of an evaluation or benchmark: the one chosen, or a fresh one
/// under the temporary folder.
pub(crate) fn tempfile_dir(chosen: Option<PathBuf>) -> Result<PathBuf> {
    let dir = chosen
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kura-eval-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Validates a job file, resolves its model and data, and creates its folder.
pub(crate) fn prepare_run(
    job_file: &Path,
    output: Option<PathBuf>,
    paths: &Paths,
    json_out: bool,
) -> Result<TrainRun> {
    let job = JobSpec::from_file(job_file)?;
    let run = kura::train::prepare_run(&job, paths, output)?;
    let (dir, train, eval) = (
        &run.dir,
        count_lines(&run.dir.join("data/train.jsonl")),
        count_lines(&run.dir.join("data/eval.jsonl")),
    );
    if !json_out {
        eprintln!(
            "job `{}`: {} train / {} eval examples, folder {}",
            job.name,
            train,
            eval,
            dir.display()
        );
    }
    Ok(run)
}

/// The non-empty lines of a JSONL file (0 when it cannot be read).
pub(crate) fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
}

/// One worker thread: the queue's queries are small; the runner blocks its own
/// thread on them, which needs a multi-threaded runtime.
pub(crate) fn queue_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// The training-job queue in the catalog.
pub(crate) fn open_queue(rt: &tokio::runtime::Runtime, paths: &Paths) -> Result<JobQueue> {
    let catalog = rt.block_on(Catalog::open(&paths.catalog_db()))?;
    Ok(JobQueue::new(catalog))
}
