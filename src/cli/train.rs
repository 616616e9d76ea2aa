//! `kura dataset …` and `kura train …`: importing training data and running LoRA
//! jobs in the foreground. The work is in [`crate::train`]; this file resolves names
//! to files, prints progress and turns Ctrl-C into a clean, resumable stop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::print_json;
use crate::llm::{DeviceChoice, Model};
use crate::models::{Registry, Role};
use crate::paths::Paths;
use crate::train::{
    dataset, load_peft, DatasetStore, PeftLayout, RunInfo, StepReport, TrainJob, TrainOutcome,
    TrainRun, Trainer,
};

/// `kura dataset …`
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Validate a JSONL file (OpenAI `messages` or Alpaca lines), split it and store it.
    Import {
        /// The JSONL file.
        file: PathBuf,
        /// The name to store it under (used as `dataset = "NAME"` in job.toml).
        #[arg(long)]
        name: String,
        /// Share of examples held out for evaluation.
        #[arg(long, default_value_t = 0.1)]
        eval_fraction: f64,
        /// Seed of the split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// List the imported datasets.
    List,
}

/// `kura train …`
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Run a LoRA job in the foreground (Ctrl-C stops it at a checkpoint).
    Run(TrainRunArgs),
    /// Continue a stopped or killed job from its last checkpoint.
    Resume(TrainResumeArgs),
    /// Queue a job for `kura jobs run` (optionally not before a time of day).
    Submit(TrainSubmitArgs),
}

/// `kura train submit`
#[derive(Debug, Args)]
pub struct TrainSubmitArgs {
    /// The job file (`job.toml`).
    pub job: PathBuf,
    /// Start no earlier than this local time of day (`HH:MM`, e.g. 22:00).
    #[arg(long)]
    pub at: Option<String>,
    /// The job's folder (default: `<data>/jobs/<name>`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// `kura train run`
#[derive(Debug, Args)]
pub struct TrainRunArgs {
    /// The job file (`job.toml`).
    pub job: PathBuf,
    /// The job's folder (default: `<data>/jobs/<name>`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where to train (cpu; cuda[:N] in builds with `--features cuda`).
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
}

/// `kura train resume`
#[derive(Debug, Args)]
pub struct TrainResumeArgs {
    /// The job's folder.
    pub dir: PathBuf,
    /// Where to train.
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
}

pub(super) fn dataset_cmd(cmd: DatasetCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let store = DatasetStore::new(paths.datasets_dir());
    match cmd {
        DatasetCommand::Import {
            file,
            name,
            eval_fraction,
            seed,
        } => {
            let info = store.import(&file, &name, eval_fraction, seed)?;
            if json_out {
                print_json(&serde_json::to_value(&info)?);
            } else {
                println!(
                    "imported `{}`: {} train + {} eval examples → {}",
                    info.name,
                    info.train,
                    info.eval,
                    store.path(&info.name).display()
                );
            }
        }
        DatasetCommand::List => {
            let list = store.list()?;
            if json_out {
                print_json(&serde_json::to_value(&list)?);
            } else if list.is_empty() {
                println!(
                    "no datasets (import one with `kura dataset import FILE.jsonl --name NAME`)"
                );
            } else {
                println!("{:<24} {:>7} {:>6}  source", "name", "train", "eval");
                for d in list {
                    println!(
                        "{:<24} {:>7} {:>6}  {}",
                        d.name,
                        d.train,
                        d.eval,
                        d.source.display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The base model of a job: a GGUF path as given, or a registry name (verified).
fn resolve_model(paths: &Paths, model: &str) -> Result<RunInfo> {
    let as_path = Path::new(model);
    if as_path.is_file() {
        let base_model = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| model.to_string());
        return Ok(RunInfo {
            model_path: std::fs::canonicalize(as_path)?,
            base_model,
        });
    }
    let registry = Registry::open(&paths.models_dir)?;
    let verified = registry.verify_named(Some(model), Role::Chat)?;
    Ok(RunInfo {
        model_path: verified.primary().to_path_buf(),
        base_model: verified.entry.name.clone(),
    })
}

pub(super) fn train_cmd(cmd: TrainCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    match cmd {
        TrainCommand::Run(args) => {
            let run = prepare_run(&args.job, args.output, paths, json_out)?;
            drive(run, args.device, paths, json_out)
        }
        TrainCommand::Submit(args) => super::jobs::submit_cmd(args, paths, json_out),
        TrainCommand::Resume(args) => {
            let run = TrainRun::open(&args.dir)
                .with_context(|| format!("opening the job folder {}", args.dir.display()))?;
            drive(run, args.device, paths, json_out)
        }
    }
}

/// Validates a job file, resolves its model and data, and creates its folder.
pub(super) fn prepare_run(
    job_file: &Path,
    output: Option<PathBuf>,
    paths: &Paths,
    json_out: bool,
) -> Result<TrainRun> {
    let job = TrainJob::from_file(job_file)?;
    let info = resolve_model(paths, &job.model)?;
    let (train, eval) = if Path::new(&job.dataset).is_file() {
        let examples = dataset::read_jsonl(Path::new(&job.dataset))?;
        dataset::split(&examples, job.train.eval_fraction, job.train.seed)
    } else {
        DatasetStore::new(paths.datasets_dir()).load(&job.dataset)?
    };
    let dir = output.unwrap_or_else(|| paths.jobs_dir().join(&job.name));
    let run = TrainRun::create(&dir, &job, info, &train, &eval)?;
    if !json_out {
        eprintln!(
            "job `{}`: {} train / {} eval examples, folder {}",
            job.name,
            train.len(),
            eval.len(),
            dir.display()
        );
    }
    Ok(run)
}

fn drive(run: TrainRun, device: DeviceChoice, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let device = device.open()?;
    let dir = run.dir.clone();
    let name = run.job.name.clone();
    let mut trainer = Trainer::new(run, &device)?;
    if !json_out {
        if trainer.step_count() > 0 {
            eprintln!(
                "resuming at step {}/{} from the last checkpoint",
                trainer.step_count(),
                trainer.total_steps()
            );
        }
        if trainer.skipped_examples() > 0 {
            eprintln!(
                "note: {} examples have no assistant token within max_seq_len and are left out",
                trainer.skipped_examples()
            );
        }
    }
    let stop: std::sync::Arc<AtomicBool> = super::llm::cancel_on_ctrl_c();
    let mut on_step = |r: &StepReport| {
        if json_out {
            println!("{}", serde_json::to_string(r).expect("serialisable"));
        } else {
            println!("{}", progress_line(r));
        }
    };
    let outcome = trainer.run(Some(&stop), &mut on_step)?;
    finish(&outcome, &dir, &name, paths, json_out)
}

pub(super) fn progress_line(r: &StepReport) -> String {
    let mut line = format!(
        "step {:>5}/{:<5} loss {:.4}  lr {:.2e}  {:>7.1} tok/s  ETA {}",
        r.step,
        r.total_steps,
        r.loss,
        r.lr,
        r.tokens_per_s,
        duration(r.eta_s)
    );
    if let Some(e) = r.eval_loss {
        line.push_str(&format!("  eval {e:.4}"));
    }
    if r.checkpoint.is_some() {
        line.push_str("  [checkpoint]");
    }
    line
}

pub(super) fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn finish(
    outcome: &TrainOutcome,
    dir: &Path,
    name: &str,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    if !outcome.finished {
        if json_out {
            print_json(&json!({"finished": false, "steps": outcome.steps, "folder": dir}));
        } else {
            eprintln!(
                "stopped after step {} (checkpoint saved); continue with `kura train resume {}`",
                outcome.steps,
                dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let published = publish_adapter(outcome, name, paths)?;
    if json_out {
        print_json(&json!({
            "finished": true,
            "steps": outcome.steps,
            "folder": dir,
            "adapter": published,
            "base_eval_loss": outcome.base_eval_loss,
            "eval_loss": outcome.eval_loss,
        }));
    } else {
        println!(
            "done: {} steps; adapter {}",
            outcome.steps,
            published.display()
        );
        if let (Some(b), Some(e)) = (outcome.base_eval_loss, outcome.eval_loss) {
            println!(
                "eval loss: base {b:.4} → with adapter {e:.4} ({})",
                if e < b {
                    "the adapter fits the held-out examples better"
                } else {
                    "the adapter did NOT improve the held-out loss"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a finished job's adapter to `<data>/adapters/NAME/` (for `--adapter NAME`).
pub(super) fn publish_adapter(
    outcome: &TrainOutcome,
    name: &str,
    paths: &Paths,
) -> Result<PathBuf> {
    let published = paths.adapters_dir().join(name);
    if let Some(src) = &outcome.adapter {
        std::fs::create_dir_all(&published)?;
        for f in ["adapter_model.safetensors", "adapter_config.json"] {
            std::fs::copy(src.join(f), published.join(f))
                .with_context(|| format!("publishing the adapter to {}", published.display()))?;
        }
    }
    Ok(published)
}

/// Attaches the PEFT adapter `spec` (a folder, or a name under `<data>/adapters/`)
/// to `model`; returns its id for the session.
pub(super) fn attach_adapter(
    model: &mut Model,
    spec: &str,
    paths: &Paths,
) -> Result<crate::llm::AdapterId> {
    let dir = if Path::new(spec).join("adapter_config.json").is_file() {
        PathBuf::from(spec)
    } else {
        let named = paths.adapters_dir().join(spec);
        if !named.join("adapter_config.json").is_file() {
            bail!(
                "no adapter `{spec}`: give a PEFT folder (with adapter_config.json) or the name of one in {}",
                paths.adapters_dir().display()
            );
        }
        named
    };
    let layout = PeftLayout::of(model);
    let adapter = load_peft(&dir, &layout, &model.device().clone())?;
    let id = model
        .attach_adapter(spec, adapter.adapters)
        .with_context(|| format!("attaching {}", dir.display()))?;
    Ok(id)
}
