//! `kura jobs …`: the training-job queue from the terminal (list, show, logs,
//! cancel, resume), and the runner (`kura jobs run`) that works through it. The
//! queue is [`kura::jobs::JobQueue`]; the training is [`kura::train::Trainer`].

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::load::{count_lines, open_queue, queue_runtime};
use crate::term::{
    cancel_on_ctrl_c, duration, eval_progress, local, parse_at, print_json, print_report,
    progress_line,
};
use kura::jobs::{
    JobQueue, JobRunner, JobState, RunnerEvent, RunnerObserver, RunnerOptions, TrainingJob,
};
use kura::llm::DeviceChoice;
use kura::paths::Paths;
use kura::train::read_metrics;

/// `kura jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// All training jobs: state, progress, ETA.
    List,
    /// One job in detail.
    Show {
        /// Job id.
        id: i64,
    },
    /// A job's per-step log (step, loss, lr, tokens/s, ETA).
    Logs {
        /// Job id.
        id: i64,
    },
    /// Cancel a job (a running one stops at its next step, after a checkpoint).
    Cancel {
        /// Job id.
        id: i64,
    },
    /// Queue a cancelled or failed job again; it continues from its last checkpoint.
    Resume {
        /// Job id.
        id: i64,
        /// Not before this local time of day (`HH:MM`).
        #[arg(long)]
        at: Option<String>,
    },
    /// Run queued jobs as they fall due (jobs left running by a dead runner resume).
    Run(JobsRunArgs),
}

/// `kura jobs run`
#[derive(Debug, Args)]
pub struct JobsRunArgs {
    /// Exit when no job is due instead of waiting for the next one.
    #[arg(long)]
    pub once: bool,
    /// Seconds between looks at the queue while idle.
    #[arg(long, default_value_t = 30)]
    pub poll: u64,
    /// Where to train.
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
}

pub(super) fn jobs_cmd(cmd: JobsCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let rt = queue_runtime()?;
    let queue = open_queue(&rt, paths)?;
    match cmd {
        JobsCommand::List => {
            let jobs = rt.block_on(queue.list())?;
            if json_out {
                print_json(&serde_json::to_value(&jobs)?);
            } else if jobs.is_empty() {
                println!("no training jobs (queue one with `kura train submit job.toml`)");
            } else {
                println!(
                    "{:>4}  {:<20} {:<9} {:>11} {:>8} {:>8}  start",
                    "id", "name", "state", "step", "loss", "ETA"
                );
                for j in jobs {
                    println!("{}", list_line(&j));
                }
            }
        }
        JobsCommand::Show { id } => {
            let job = rt.block_on(queue.get(id))?;
            if json_out {
                print_json(&serde_json::to_value(&job)?);
            } else {
                show(&job);
            }
        }
        JobsCommand::Logs { id } => {
            let job = rt.block_on(queue.get(id))?;
            let path = job.folder.join("metrics.jsonl");
            let lines = if path.is_file() {
                read_metrics(&path)?
            } else {
                Vec::new()
            };
            if json_out {
                print_json(&serde_json::to_value(&lines)?);
            } else if lines.is_empty() {
                println!("job #{id} has not logged a step yet");
            } else {
                for l in &lines {
                    println!("{}", progress_line(l));
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let job = rt.block_on(queue.cancel(id))?;
            if json_out {
                print_json(&serde_json::to_value(&job)?);
            } else if job.state == JobState::Running {
                println!("job #{id} will stop after its current step (a checkpoint is kept)");
            } else {
                println!("job #{id} cancelled");
            }
        }
        JobsCommand::Resume { id, at } => {
            let job = rt.block_on(queue.resume(id, parse_at(&at)?))?;
            if json_out {
                print_json(&serde_json::to_value(&job)?);
            } else {
                println!(
                    "job #{id} queued again from step {}, to start at {}",
                    job.step,
                    local(job.run_at)
                );
            }
        }
        JobsCommand::Run(args) => return run_queue(&rt, &queue, args, paths, json_out),
    }
    Ok(ExitCode::SUCCESS)
}

fn list_line(j: &TrainingJob) -> String {
    let step = match j.total_steps {
        Some(t) => format!("{}/{t}", j.step),
        None => "-".into(),
    };
    let loss = j.loss.map_or("-".into(), |l| format!("{l:.4}"));
    let eta = match (j.state, j.eta_s) {
        (JobState::Running, Some(e)) => duration(e),
        _ => "-".into(),
    };
    format!(
        "{:>4}  {:<20} {:<9} {:>11} {:>8} {:>8}  {}",
        j.id,
        j.name,
        j.state.as_str(),
        step,
        loss,
        eta,
        local(j.run_at)
    )
}

fn show(j: &TrainingJob) {
    println!("job #{} `{}`: {}", j.id, j.name, j.state);
    println!("  folder     {}", j.folder.display());
    println!("  submitted  {}", local(j.submitted_at));
    println!("  start at   {}", local(j.run_at));
    if let Some(s) = j.started_at {
        println!("  started    {}", local(s));
    }
    if let Some(f) = j.finished_at {
        println!("  finished   {}", local(f));
    }
    if let Some(t) = j.total_steps {
        println!("  step       {}/{t}", j.step);
    }
    if let Some(l) = j.loss {
        println!("  loss       {l:.4}");
    }
    if let Some(e) = j.eval_loss {
        println!("  eval loss  {e:.4}");
    }
    if let (Some(tps), Some(eta)) = (j.tokens_per_s, j.eta_s) {
        println!("  speed      {tps:.1} tokens/s, ETA {}", duration(eta));
    }
    if let Some(e) = &j.error {
        println!("  error      {e}");
    }
}

fn run_queue(
    rt: &tokio::runtime::Runtime,
    queue: &JobQueue,
    args: JobsRunArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let device = args.device.open()?;
    let stop = cancel_on_ctrl_c();
    let runner = JobRunner::new(queue.clone(), paths, device, rt.handle().clone());
    let options = RunnerOptions {
        once: args.once,
        poll: Duration::from_secs(args.poll.max(1)),
    };
    runner.run(&stop, options, &mut Terminal { json_out })?;
    if stop.load(Ordering::SeqCst) {
        eprintln!("stopped; queued jobs continue at the next `kura jobs run`");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `kura jobs run` shows of the runner: a line per step, the adapter, the report.
struct Terminal {
    json_out: bool,
}

impl RunnerObserver for Terminal {
    fn event(&mut self, event: RunnerEvent<'_>) {
        let json_out = self.json_out;
        match event {
            RunnerEvent::Recovered(id) => {
                eprintln!("job #{id} was interrupted (its runner is gone): queued again to resume")
            }
            RunnerEvent::Started { job, .. } => eprintln!("running job #{} `{}`", job.id, job.name),
            RunnerEvent::Step { job, report } => {
                if json_out {
                    println!("{}", serde_json::to_string(report).expect("serialisable"));
                } else {
                    println!("#{} {}", job.id, progress_line(report));
                }
            }
            RunnerEvent::Published {
                job,
                outcome,
                adapter,
            } => {
                if json_out {
                    print_json(&json!({"job": job.id, "finished": true, "adapter": adapter,
                        "base_eval_loss": outcome.base_eval_loss, "eval_loss": outcome.eval_loss}));
                } else {
                    eprintln!("adapter saved to {}", adapter.display());
                }
            }
            RunnerEvent::Scoring { job, progress } => {
                let examples = count_lines(&job.folder.join("data/eval.jsonl"));
                let base = kura::train::TrainRun::open(&job.folder)
                    .map_or_else(|_| String::new(), |r| r.info.base_model);
                eval_progress(&job.name, &base, examples, progress, json_out)
            }
            RunnerEvent::Reported { job, report } => {
                let dir = job.folder.join("report");
                let written = (dir.join("report.json"), dir.join("report.png"));
                print_report(report, Some(&written), json_out);
            }
            RunnerEvent::ReportFailed { error, .. } => {
                eprintln!(
                    "warning: the base-vs-adapter report failed: {error} (the adapter is saved)"
                )
            }
            RunnerEvent::Finished { job, state, error } => match error {
                Some(e) => eprintln!("job #{} failed: {e}", job.id),
                None => eprintln!("job #{} {state}", job.id),
            },
        }
    }
}
