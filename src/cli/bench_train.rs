//! `kura bench train`: LoRA training speed and memory beside PyTorch + PEFT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::print_json;
use crate::bench::generate::build_prompt;
use crate::bench::train::{self as bench_train, EngineRun, Job, Runner, DEFAULT_MODEL};
use crate::llm::{ChatTemplate, GgufFile, Tokenizer};
use crate::models::{Registry, Role};
use crate::paths::Paths;
use crate::train::export::export_hf;
use crate::train::Target;

/// `kura bench train`
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Model name (see `kura models list`; default: the default LoRA base, qwen2.5-coder-0.5b-instruct).
    #[arg(long)]
    pub model: Option<String>,
    /// A GGUF file to train instead of a registered model.
    #[arg(long, conflicts_with = "model", value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Sequence length in tokens (real manual text through the chat template).
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// Target projections (comma-separated: q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed optimizer steps per run.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Runs per engine, alternating; the best of each figure is kept.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Threads for both engines (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The Python with torch + transformers + peft (default: KURA_BENCH_PYTHON, else target/peft-venv, made by installer/setup).
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
    /// Keep the Hugging Face export of the dequantized base here and reuse it next time
    /// (default: a temporary folder, deleted afterwards).
    #[arg(long, value_name = "DIR")]
    pub hf_dir: Option<PathBuf>,
    /// Measure Kura alone, without PyTorch + PEFT.
    #[arg(long)]
    pub no_reference: bool,
    /// Internal: run Kura's side of a job file and print its figures as JSON.
    #[arg(long, hide = true, value_name = "JOB")]
    pub worker: Option<PathBuf>,
}

pub(super) fn bench_train_cmd(
    args: BenchTrainArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    if let Some(job) = &args.worker {
        let job: Job = serde_json::from_slice(
            &std::fs::read(job).with_context(|| format!("reading {}", job.display()))?,
        )?;
        let run = bench_train::run_kura(&job)?;
        println!("{}", serde_json::to_string(&run)?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = match &args.gguf {
        Some(p) => p.clone(),
        None => {
            let registry = Registry::open(&paths.models_dir)?;
            registry
                .verify_named(
                    Some(args.model.as_deref().unwrap_or(DEFAULT_MODEL)),
                    Role::Chat,
                )?
                .primary()
                .to_path_buf()
        }
    };
    let targets = args
        .targets
        .iter()
        .map(|n| {
            Target::parse(n)
                .map(|t| t.peft().to_string())
                .with_context(|| format!("unknown target `{n}` (use q, k, v, o, gate, up, down)"))
        })
        .collect::<Result<Vec<_>>>()?;
    let file = GgufFile::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = ChatTemplate::from_gguf(&file)?;
    let tokens = build_prompt(&tokenizer, &template, args.seq)?;
    drop(file);
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let work_dir = std::env::temp_dir().join(format!("kura-bench-train-{}", std::process::id()));
    let python = (!args.no_reference).then(|| {
        args.python
            .clone()
            .unwrap_or_else(bench_train::default_python)
    });
    let runner = Runner {
        kura_exe: std::env::current_exe()?,
        python,
        work_dir: work_dir.clone(),
    };
    runner.check_reference()?;
    let hf_dir = match &args.hf_dir {
        Some(d) => std::path::absolute(d)?,
        None => work_dir.join("hf"),
    };
    if runner.python.is_some() {
        let fresh = |p: PathBuf| -> Option<bool> {
            let exported = std::fs::metadata(p).ok()?.modified().ok()?;
            Some(exported >= std::fs::metadata(&path).ok()?.modified().ok()?)
        };
        if fresh(hf_dir.join("model.safetensors")) == Some(true)
            && hf_dir.join("config.json").is_file()
        {
            if !json_out {
                eprintln!("reusing the export in {}", hf_dir.display());
            }
        } else {
            if !json_out {
                eprintln!("exporting the dequantized base to {} …", hf_dir.display());
            }
            let e = export_hf(&path, &hf_dir)?;
            if !json_out {
                eprintln!(
                    "  {} tensors, {:.0} MB (f32)",
                    e.tensors,
                    e.bytes as f64 / 1e6
                );
            }
        }
    }
    let job = Job {
        model: std::path::absolute(&path)?,
        hf_dir: hf_dir.clone(),
        tokens,
        batch: args.batch.max(1),
        rank: args.rank,
        alpha: args.alpha,
        targets,
        warmup_steps: args.warmup,
        steps: args.steps.max(1),
        learning_rate: 2e-4,
        threads,
        seed: 42,
    };
    if !json_out {
        eprintln!(
            "{}: LoRA rank {} on {}, {} × {} tokens per step, {} warm-up + {} timed steps, {threads} threads, {} run(s){}",
            path.display(), job.rank, job.targets.join(","), job.batch, job.tokens.len(),
            job.warmup_steps, job.steps, args.runs,
            if runner.python.is_some() { ", alternating with PyTorch + PEFT" } else { "" }
        );
    }
    let progress = |r: &EngineRun| {
        if !json_out {
            eprintln!(
                "  {:<5} {:>7.1} tok/s  {:>6.2} tok/CPU-s  step {:>6.2} s  peak RSS {:>6.0} MB  loss {:.4} → {:.4}  (load {:.1} s, load avg {})",
                r.engine,
                r.tokens_per_s(),
                r.tokens_per_cpu_s(),
                r.step_s.iter().sum::<f64>() / r.step_s.len().max(1) as f64,
                r.peak_rss_mb,
                r.losses.first().copied().unwrap_or(f64::NAN),
                r.losses.last().copied().unwrap_or(f64::NAN),
                r.load_s,
                bench_train::load_average().map_or("?".into(), |l| format!("{l:.2}"))
            );
        }
    };
    let report = runner.run(&job, args.runs, &progress);
    if args.hf_dir.is_some() {
        let _ = std::fs::remove_file(work_dir.join("train-job.json"));
        let _ = std::fs::remove_file(work_dir.join("peft_train_driver.py"));
        let _ = std::fs::remove_dir(&work_dir);
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let report = report?;
    if json_out {
        print_json(&serde_json::to_value(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "model {}, LoRA rank {} on {} ({} targets), seq {}, batch {}, {} threads, {} timed steps; load average before: {}",
        report.model.display(),
        report.rank,
        report.targets.join(","),
        report.targets.len(),
        report.seq,
        report.batch,
        report.threads,
        report.steps,
        report.load_average.map_or("?".into(), |l| format!("{l:.2}"))
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>14}",
        "", "tokens/s", "tok/CPU-s", "s/step", "peak RSS MB"
    );
    let row = |name: &str, r: &EngineRun| {
        println!(
            "{:<22} {:>12.1} {:>12.2} {:>12.2} {:>14.0}",
            name,
            r.tokens_per_s(),
            r.tokens_per_cpu_s(),
            r.step_s.iter().sum::<f64>() / r.step_s.len().max(1) as f64,
            r.peak_rss_mb
        );
    };
    row("kura", &report.kura);
    if let (Some(p), Some(r)) = (&report.peft, &report.ratios) {
        row("pytorch + peft", p);
        println!(
            "{:<22} {:>11.2}× {:>11.2}× {:>12} {:>13.2}×",
            "ratio kura/peft", r.throughput, r.cpu_efficiency, "", r.peak_rss
        );
        println!("reference: {}", p.versions);
        if let (k, Some(q)) = report.first_loss {
            println!("first-step loss (base model, same tokens): kura {k:.4}, peft {q:.4}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
