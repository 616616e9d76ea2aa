//! `kura train run|resume|submit`: LoRA fine-tuning of the chat model — a job in
//! the foreground (Ctrl-C turns into a clean, resumable stop at a checkpoint), or
//! queued for `kura jobs run`. The work is in [`kura::train`]; this file resolves
//! names to files and prints progress.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::load::{count_lines, open_queue, prepare_run, queue_runtime};
use crate::term::{
    cancel_on_ctrl_c, eval_progress, local, parse_at, print_json, print_report, progress_line,
};
use kura::adapters::report;
use kura::adapters::AdapterRegistry;
use kura::jobs::now;
use kura::llm::DeviceChoice;
use kura::paths::Paths;
use kura::train::{StepReport, TrainOutcome, TrainRun, Trainer};

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

pub(super) fn train_cmd(cmd: TrainCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    match cmd {
        TrainCommand::Run(args) => {
            let run = prepare_run(&args.job, args.output, paths, json_out)?;
            drive(run, args.device, paths, json_out)
        }
        TrainCommand::Submit(args) => submit_cmd(args, paths, json_out),
        TrainCommand::Resume(args) => {
            let run = TrainRun::open(&args.dir)
                .with_context(|| format!("opening the job folder {}", args.dir.display()))?;
            drive(run, args.device, paths, json_out)
        }
    }
}

fn submit_cmd(args: TrainSubmitArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let run_at = parse_at(&args.at)?.unwrap_or_else(now);
    let run = prepare_run(&args.job, args.output, paths, json_out)?;
    let rt = queue_runtime()?;
    let queue = open_queue(&rt, paths)?;
    let job = rt.block_on(queue.submit(&run.job.name, &run.dir, run_at))?;
    if json_out {
        print_json(&serde_json::to_value(&job)?);
    } else {
        println!(
            "queued job #{} `{}` to start at {} (run the queue with `kura jobs run`)",
            job.id,
            job.name,
            local(job.run_at)
        );
    }
    Ok(ExitCode::SUCCESS)
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
            kura::train::memory::available_memory()
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
    let stop: std::sync::Arc<AtomicBool> = cancel_on_ctrl_c();
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

/// Scores a job's adapter on its eval split right after it finished (the job's
/// `report/`, copied next to the published adapter); a failure is printed, never
/// fatal: the adapter is already saved.
fn report_after_training(
    dir: &Path,
    published: &Path,
    device: &candle_core::Device,
    json_out: bool,
) {
    let cancel = cancel_on_ctrl_c();
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
