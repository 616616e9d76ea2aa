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
use crate::adapters::report::{self, ReportTarget};
use crate::adapters::{AdapterError, AdapterRegistry};
use crate::llm::DeviceChoice;
use crate::paths::Paths;
use crate::train::evaluate::EvalProgress;
use crate::train::synth::{review, synthesize, DraftStatus, DraftStore};
use crate::train::{
    dataset, AdapterReport, DatasetStore, EvalOptions, RunInfo, StepReport, TrainJob, TrainOutcome,
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
        /// Held-out examples written on purpose (e.g. paraphrased questions): FILE
        /// is then all training data, and --eval-fraction is not used.
        #[arg(long, value_name = "FILE.jsonl")]
        eval: Option<PathBuf>,
    },
    /// List the imported datasets.
    List,
    /// Draft question/answer pairs from a collection's chunks with the local model
    /// (each keeps its source chunk), stored as pending drafts for review.
    Synth {
        /// The collection to draft from.
        #[arg(long)]
        collection: String,
        /// The dataset the drafts belong to.
        #[arg(long)]
        name: String,
        /// Chunks to draft from (spread over the collection; chunks drafted before are skipped).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Chat model (default: the default chat model).
        #[arg(long)]
        model: Option<String>,
        /// Tokens per drafted pair.
        #[arg(long, default_value_t = 160)]
        max_tokens: usize,
    },
    /// List a dataset's drafts; approve, reject or edit them. Approved pairs become
    /// the dataset's train/eval files at once.
    Review {
        /// The dataset.
        name: String,
        /// Draft ids to approve.
        #[arg(long, num_args = 1.., value_name = "ID")]
        approve: Vec<u64>,
        /// Draft ids to reject.
        #[arg(long, num_args = 1.., value_name = "ID")]
        reject: Vec<u64>,
        /// Approve every pending draft whose answer is at least this grounded in its
        /// source (0-1), e.g. 0.8.
        #[arg(long, value_name = "SHARE")]
        approve_grounded: Option<f32>,
        /// A draft id to edit (with --question and/or --answer).
        #[arg(long, value_name = "ID")]
        edit: Option<u64>,
        /// The edited question.
        #[arg(long, requires = "edit")]
        question: Option<String>,
        /// The edited answer.
        #[arg(long, requires = "edit")]
        answer: Option<String>,
        /// Share of approved pairs held out for evaluation.
        #[arg(long, default_value_t = 0.1)]
        eval_fraction: f64,
    },
}

/// `kura adapters …`
#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// The adapters in `<data>/adapters/`: base model, rank, targets, report verdict.
    List,
    /// Import a PEFT LoRA folder (e.g. trained with Hugging Face PEFT on the same
    /// base model): checked against the model, then copied to `<data>/adapters/NAME`.
    Import {
        /// The PEFT folder (adapter_config.json + adapter_model.safetensors).
        dir: PathBuf,
        /// The name to serve it under.
        #[arg(long)]
        name: String,
        /// The base model (registry name or GGUF path); default: the one its config
        /// names, if Kura has it.
        #[arg(long)]
        model: Option<String>,
    },
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

/// `kura eval adapter`
#[derive(Debug, Args)]
pub struct EvalAdapterArgs {
    /// A job (its name under `<data>/jobs/`, or its folder) or an adapter (a name
    /// under `<data>/adapters/`, or a PEFT folder).
    pub name: String,
    /// Held-out examples (JSONL, OpenAI or Alpaca lines; the last assistant message is
    /// the reference). Default: the job's eval split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The base model (registry name or GGUF path). Default: the job's, or the
    /// adapter config's `base_model_name_or_path`.
    #[arg(long)]
    pub model: Option<String>,
    /// Score at most this many examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens per held-out answer (greedy).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Where to write report.json and report.png (default: the job's or adapter's
    /// folder, `report/`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where to run.
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
            eval,
        } => {
            let info = match &eval {
                Some(e) => store.import_with_eval(&file, e, &name)?,
                None => store.import(&file, &name, eval_fraction, seed)?,
            };
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
        DatasetCommand::Synth {
            collection,
            name,
            limit,
            model,
            max_tokens,
        } => {
            return synth_cmd(
                paths,
                &collection,
                &name,
                limit,
                model.as_deref(),
                max_tokens,
                json_out,
            )
        }
        DatasetCommand::Review {
            name,
            approve,
            reject,
            approve_grounded,
            edit,
            question,
            answer,
            eval_fraction,
        } => {
            let drafts_store = DraftStore::new(store, &name);
            let mut drafts = drafts_store.load()?;
            if drafts.is_empty() {
                bail!(
                    "dataset `{name}` has no drafts: make some with `kura dataset synth --collection C --name {name}`"
                );
            }
            let mut approve = approve;
            if let Some(min) = approve_grounded {
                approve.extend(
                    drafts
                        .iter()
                        .filter(|d| d.status == DraftStatus::Pending && d.grounded >= min)
                        .map(|d| d.id),
                );
            }
            let changes = !approve.is_empty() || !reject.is_empty() || edit.is_some();
            review(
                &mut drafts,
                &approve,
                &reject,
                edit.map(|id| (id, question, answer)),
            )?;
            let (train, eval) = if changes {
                drafts_store.save(&drafts, eval_fraction, 42)?
            } else {
                (0, 0)
            };
            if json_out {
                print_json(&json!({"drafts": drafts, "train": train, "eval": eval}));
            } else {
                for d in &drafts {
                    let mark = match d.status {
                        DraftStatus::Pending => "  ",
                        DraftStatus::Approved => "✓ ",
                        DraftStatus::Rejected => "✗ ",
                    };
                    let doc = Path::new(&d.source.document)
                        .file_name()
                        .map_or(d.source.document.clone(), |n| {
                            n.to_string_lossy().to_string()
                        });
                    println!(
                        "{mark}#{:<4} [{doc} p.{} · grounded {:.2}{}]\n      Q: {}\n      A: {}",
                        d.id,
                        d.source.page,
                        d.grounded,
                        if d.edited { " · edited" } else { "" },
                        d.question,
                        d.answer
                    );
                }
                let count = |s: DraftStatus| drafts.iter().filter(|d| d.status == s).count();
                println!(
                    "{} approved, {} pending, {} rejected",
                    count(DraftStatus::Approved),
                    count(DraftStatus::Pending),
                    count(DraftStatus::Rejected)
                );
                if changes {
                    println!(
                        "dataset `{name}`: {train} train + {eval} eval examples (approved pairs)"
                    );
                }
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

fn resolve_model(paths: &Paths, model: &str) -> Result<RunInfo> {
    Ok(crate::train::resolve_model(paths, model)?)
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
    let run = crate::train::prepare_run(&job, paths, output)?;
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
        let m = trainer.memory_estimate();
        eprintln!(
            "estimated peak memory {:.1} GiB{}",
            m.total_gib(),
            crate::train::memory::available_memory()
                .map(|a| format!(" ({:.1} GiB available)", a as f64 / (1u64 << 30) as f64))
                .unwrap_or_default()
        );
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
    drop(trainer);
    let code = finish(&outcome, &dir, &name, paths, json_out)?;
    if outcome.finished && outcome.base_eval_loss.is_some() {
        report_after_training(&dir, &paths.adapters_dir().join(&name), &device, json_out);
    }
    Ok(code)
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
fn publish_adapter(outcome: &TrainOutcome, name: &str, paths: &Paths) -> Result<PathBuf> {
    let registry = AdapterRegistry::new(paths);
    Ok(match &outcome.adapter {
        Some(src) => registry.publish(name, src)?,
        None => registry.dir().join(name),
    })
}

pub(super) fn eval_adapter_cmd(
    args: EvalAdapterArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let target = ReportTarget::resolve(&args.name, args.model.as_deref(), paths)?;
    let data = args.data.clone().or(target.eval.clone()).ok_or_else(|| {
        anyhow::anyhow!(
            "no held-out data for `{}`: pass --data FILE.jsonl (評価データを指定してください)",
            target.name
        )
    })?;
    let examples = dataset::read_jsonl(&data)?;
    let options = EvalOptions {
        max_new_tokens: args.max_tokens,
        limit: args.limit,
        ..EvalOptions::default()
    };
    let device = args.device.open()?;
    let cancel = super::llm::cancel_on_ctrl_c();
    let scoring = examples.len().min(options.limit.unwrap_or(usize::MAX));
    let report = target.evaluate(&examples, &options, &device, Some(&cancel), &mut |p| {
        eval_progress(&target.name, &target.info.base_model, scoring, p, json_out)
    })?;
    let out = args.output.unwrap_or(target.report_dir);
    let written = report.write(&out);
    print_report(&report, written.as_ref().ok(), json_out);
    if let Err(e) = written {
        eprintln!("warning: report in {} incomplete: {e}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints where scoring an adapter is.
pub(super) fn eval_progress(
    name: &str,
    base_model: &str,
    examples: usize,
    p: EvalProgress,
    json_out: bool,
) {
    if json_out {
        return;
    }
    match p {
        EvalProgress::Loss => eprintln!(
            "scoring `{name}` against {base_model} on {examples} held-out examples: loss…"
        ),
        EvalProgress::Answer { done, total } => {
            eprint!("\ranswers {}/{total}", done + 1);
            if done + 1 == total {
                eprintln!();
            }
        }
    }
}

/// Scores a job's adapter on its eval split right after it finished (the job's
/// `report/`, copied next to the published adapter); a failure is printed, never
/// fatal: the adapter is already saved.
fn report_after_training(
    dir: &Path,
    published: &Path,
    device: &candle_core::Device,
    json_out: bool,
) {
    let cancel = super::llm::cancel_on_ctrl_c();
    let name = published
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = TrainRun::open(dir).map_or_else(|_| String::new(), |r| r.info.base_model);
    let examples = count_lines(&dir.join("data/eval.jsonl"));
    let result = report::after_training(dir, published, device, Some(&cancel), &mut |p| {
        eval_progress(&name, &base, examples, p, json_out)
    });
    match result {
        Ok(Some(report)) => {
            let json = dir.join("report/report.json");
            let png = dir.join("report/report.png");
            print_report(&report, Some(&(json, png)), json_out);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("warning: the base-vs-adapter report failed: {e} (the adapter is saved)")
        }
    }
}

/// Prints a report: its scores as a table (or JSON), and where it was written.
pub(super) fn print_report(
    report: &AdapterReport,
    written: Option<&(PathBuf, PathBuf)>,
    json_out: bool,
) {
    if json_out {
        print_json(&serde_json::to_value(report).expect("serialisable"));
        return;
    }
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!("{:<22} {:>10} {:>10}", "", "base", "adapter");
    println!(
        "{:<22} {:>10} {:>10}",
        "eval loss",
        f(report.base.loss),
        f(report.tuned.loss)
    );
    println!(
        "{:<22} {:>10} {:>10}",
        "perplexity",
        f(report.base.perplexity),
        f(report.tuned.perplexity)
    );
    for (label, b, t) in [
        (
            "exact match",
            report.base.exact_match,
            report.tuned.exact_match,
        ),
        ("character F1", report.base.char_f1, report.tuned.char_f1),
        (
            "contains reference",
            report.base.contains_reference,
            report.tuned.contains_reference,
        ),
    ] {
        println!("{label:<22} {b:>10.3} {t:>10.3}");
    }
    println!("{}", report.summary);
    if let Some((json, png)) = written {
        println!("report: {} , {}", json.display(), png.display());
    }
}

fn synth_cmd(
    paths: &Paths,
    collection: &str,
    name: &str,
    limit: usize,
    model: Option<&str>,
    max_tokens: usize,
    json_out: bool,
) -> Result<ExitCode> {
    let drafts_store = DraftStore::new(DatasetStore::new(paths.datasets_dir()), name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let chunks = rt.block_on(async {
        let catalog = crate::catalog::Catalog::open(&paths.catalog_db()).await?;
        let col = catalog.find_collection(collection).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "no collection `{collection}` (コレクションが見つかりません): see `kura status`"
            )
        })?;
        let ids = catalog.collection_chunk_ids(col.id).await?;
        anyhow::Ok(catalog.chunks(&ids).await?)
    })?;
    let llm = super::llm::load_llm(paths, model, DeviceChoice::from_env())?;
    let (made, tried) = synthesize(
        &drafts_store,
        &llm,
        &chunks,
        limit,
        max_tokens,
        &mut |i, n| {
            if !json_out {
                eprint!("\rdrafting {}/{n}", i + 1);
            }
        },
    )?;
    if tried == 0 {
        bail!("collection `{collection}` has no chunk left to draft from");
    }
    if json_out {
        print_json(
            &json!({"drafted": made, "chunks": tried, "drafts": drafts_store.load()?.len()}),
        );
    } else {
        eprintln!();
        println!(
            "{made} drafts from {tried} chunks of `{collection}` (pending review: `kura dataset review {name}`)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn adapters_cmd(
    cmd: AdaptersCommand,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let registry = AdapterRegistry::new(paths);
    match cmd {
        AdaptersCommand::List => {
            let list = registry.list();
            if json_out {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|a| {
                        json!({
                            "name": a.name,
                            "base_model": a.config.base_model_name_or_path,
                            "rank": a.config.r,
                            "targets": a.config.target_modules,
                            "verdict": a.report.as_ref().map(|r| r.verdict),
                            "dir": a.dir,
                        })
                    })
                    .collect();
                print_json(&json!(rows));
            } else if list.is_empty() {
                println!(
                    "no adapters (train one with `kura train run`, or `kura adapters import`)"
                );
            } else {
                println!("{:<24} {:<32} {:>4}  verdict", "name", "base model", "rank");
                for a in &list {
                    println!(
                        "{:<24} {:<32} {:>4}  {}",
                        a.name,
                        a.config.base_model_name_or_path.as_deref().unwrap_or("?"),
                        a.config.r,
                        a.report.as_ref().map_or("-", |r| r.verdict.as_str())
                    );
                }
            }
        }
        AdaptersCommand::Import { dir, name, model } => {
            let base = match model {
                Some(m) => m,
                None => registry
                    .base_model(&dir)
                    .ok_or_else(|| AdapterError::UnknownBase(name.clone()))?,
            };
            let info = resolve_model(paths, &base)?;
            let imported = registry.import(&dir, &name, &info)?;
            if json_out {
                print_json(
                    &json!({"name": imported.name, "base_model": imported.base_model,
                    "layers": imported.layers, "dir": imported.dir}),
                );
            } else {
                println!(
                    "imported `{}`: LoRA on {} layers of {} → {}",
                    imported.name,
                    imported.layers,
                    imported.base_model,
                    imported.dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
}
