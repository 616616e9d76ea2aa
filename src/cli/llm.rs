//! `kura generate`, `kura chat` and `kura models quantize`: the local model from the terminal.

use crate::adapters::AdapterRegistry;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::print_json;
use crate::bench::generate::{self as bench_gen, EngineRun, Job, Runner};
use crate::llm::{
    ChatMessage, ChatTemplate, DeviceChoice, GenerateParams, GgufFile, Llm, QuantType,
    SamplingParams, Tokenizer,
};
use crate::models::{Registry, Role};
use crate::paths::Paths;

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
    fn params(&self) -> GenerateParams {
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

/// `kura generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt (sent through the model's chat template as a user message).
    pub prompt: String,
    /// Model and sampling options.
    #[command(flatten)]
    pub model: ModelArgs,
    /// A LoRA adapter to apply: a PEFT folder or the name of a trained one
    /// (`<data>/adapters/NAME`, see `kura train run`).
    #[arg(long)]
    pub adapter: Option<String>,
}

/// Loads a verified chat model onto `device`.
pub(super) fn load_llm(paths: &Paths, name: Option<&str>, device: DeviceChoice) -> Result<Llm> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(name, Role::Chat)?;
    let device = device.open()?;
    Llm::load(model.primary(), &device)
        .with_context(|| format!("loading the chat model {}", model.entry.name))
}

/// Ctrl-C cancels the generation in flight instead of killing the process.
pub(super) fn cancel_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                loop {
                    if tokio::signal::ctrl_c().await.is_err() {
                        break;
                    }
                    f.store(true, Ordering::SeqCst);
                }
            });
        }
    });
    flag
}

fn messages(system: &Option<String>, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(ChatMessage::system(s.clone()));
    }
    m.extend_from_slice(history);
    m
}

pub(super) fn generate_cmd(args: GenerateArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let model =
        AdapterRegistry::new(paths).model_for(args.model.model.as_deref(), args.adapter.as_deref());
    let mut llm = load_llm(paths, model.as_deref(), args.model.device)?;
    let adapter = match &args.adapter {
        Some(spec) => Some(AdapterRegistry::new(paths).attach(&mut llm.model, spec)?),
        None => None,
    };
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
    session.set_adapters(adapter.into_iter().collect());
    let msgs = messages(
        &args.model.system,
        &[ChatMessage::user(args.prompt.clone())],
    );
    let mut stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if !json_out {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
    };
    let g = llm.chat(
        &mut session,
        &msgs,
        &args.model.params(),
        Some(&cancel),
        &mut on_text,
    )?;
    if json_out {
        print_json(&json!({
            "text": g.text,
            "finish_reason": g.finish_reason,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "prefill_tokens_per_s": g.prefill_tokens_per_second(),
            "decode_tokens_per_s": g.decode_tokens_per_second(),
        }));
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, {:?}]",
            g.prompt_tokens,
            g.prefill_tokens_per_second(),
            g.generated_tokens,
            g.decode_tokens_per_second(),
            g.finish_reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn chat_cmd(args: ModelArgs, adapter: Option<&str>, paths: &Paths) -> Result<ExitCode> {
    let model = AdapterRegistry::new(paths).model_for(args.model.as_deref(), adapter);
    let mut llm = load_llm(paths, model.as_deref(), args.device)?;
    let adapter = match adapter {
        Some(spec) => Some(AdapterRegistry::new(paths).attach(&mut llm.model, spec)?),
        None => None,
    };
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
    session.set_adapters(adapter.into_iter().collect());
    let mut history: Vec<ChatMessage> = Vec::new();
    eprintln!("kura chat — /reset で履歴を消去 (clear history), /exit または Ctrl-D で終了 (quit); Ctrl-C stops an answer");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                session.clear();
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        cancel.store(false, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        let g = llm.chat(
            &mut session,
            &messages(&args.system, &history),
            &args.params(),
            Some(&cancel),
            &mut |p| {
                let _ = write!(stdout, "{p}");
                let _ = stdout.flush();
            },
        );
        println!();
        match g {
            Ok(g) => history.push(ChatMessage::assistant(g.text)),
            Err(e) => {
                eprintln!("error: {e}");
                history.pop();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn quantize_cmd(
    input: PathBuf,
    output: PathBuf,
    kind: &str,
    json_out: bool,
) -> Result<ExitCode> {
    let target: QuantType = kind.parse()?;
    let r = crate::llm::quantize_gguf(&input, &output, target)?;
    if json_out {
        print_json(&json!({
            "output": output, "converted": r.converted, "fallback_q8_0": r.fallback_q8_0, "kept": r.kept,
            "bytes_before": r.bytes_before, "bytes_after": r.bytes_after,
        }));
    } else {
        println!(
            "{} → {}: {} tensors converted to {kind}, {} to q8_0 (shape), {} kept; {:.1} MB → {:.1} MB. Register it with `kura models import`.",
            input.display(), output.display(), r.converted, r.fallback_q8_0, r.kept,
            r.bytes_before as f64 / 1e6, r.bytes_after as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura bench generate`
#[derive(Debug, Args)]
pub struct BenchGenerateArgs {
    /// Chat model name (see `kura models list`; default: the default chat model).
    #[arg(long)]
    pub model: Option<String>,
    /// A GGUF file to benchmark instead of a registered model (e.g. a re-quantized copy).
    #[arg(long, conflicts_with = "model", value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Prompt length in tokens (real manual text through the chat template).
    #[arg(long, default_value_t = 2048)]
    pub prompt_tokens: usize,
    /// Decode steps after the prompt.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Threads for both engines (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runs per engine, alternating; the best of each figure is kept.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where Kura runs (llama.cpp always runs on the CPU).
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
    /// The Python that has llama-cpp-python (default: target/bench-tools/venv, made by installer/bench-tools).
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
    /// Measure Kura alone, without llama.cpp.
    #[arg(long)]
    pub no_reference: bool,
    /// Internal: run Kura's side of a job file and print its figures as JSON.
    #[arg(long, hide = true, value_name = "JOB")]
    pub worker: Option<PathBuf>,
}

pub(super) fn bench_generate_cmd(
    args: BenchGenerateArgs,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    if let Some(job) = &args.worker {
        let job: Job = serde_json::from_slice(
            &std::fs::read(job).with_context(|| format!("reading {}", job.display()))?,
        )?;
        let run = bench_gen::run_kura(&job)?;
        println!("{}", serde_json::to_string(&run)?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = match &args.gguf {
        Some(p) => p.clone(),
        None => {
            let registry = Registry::open(&paths.models_dir)?;
            registry
                .verify_named(args.model.as_deref(), Role::Chat)?
                .primary()
                .to_path_buf()
        }
    };
    args.device.open()?;
    let file = GgufFile::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = ChatTemplate::from_gguf(&file)?;
    let tokens = bench_gen::build_prompt(&tokenizer, &template, args.prompt_tokens)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let job = Job {
        model: std::path::absolute(&path)?,
        tokens,
        decode_tokens: args.decode_tokens,
        threads,
        device: args.device.to_string(),
    };
    let runner = Runner {
        kura_exe: std::env::current_exe()?,
        python: if args.no_reference {
            None
        } else {
            Some(
                args.python
                    .clone()
                    .unwrap_or_else(bench_gen::default_python),
            )
        },
        work_dir: std::env::temp_dir().join(format!("kura-bench-generate-{}", std::process::id())),
    };
    if !json_out {
        eprintln!(
            "{}: {} prompt tokens, {} decode steps, {threads} threads, Kura on {}, {} run(s) each{}",
            path.display(), job.tokens.len(), job.decode_tokens, args.device, args.runs,
            if runner.python.is_some() { ", alternating with llama.cpp" } else { "" }
        );
    }
    let progress = |r: &EngineRun| {
        if !json_out {
            eprintln!(
                "  {:<9} prefill {:>7.1} tok/s  TTFT {:>6.2} s  decode {:>6.1} tok/s  peak RSS {:>6.0} MB  (load {:.2} s)",
                r.engine, r.prefill_tok_s(), r.ttft_s, r.decode_tok_s(), r.peak_rss_mb, r.load_s
            );
        }
    };
    let report = runner.run(&job, args.runs, &progress);
    let _ = std::fs::remove_dir_all(&runner.work_dir);
    let report = report?;
    if json_out {
        print_json(&serde_json::to_value(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "model {} ({:.0} MB), {} prompt tokens, {} decode steps, {} threads; best of {} runs",
        report.model.display(),
        report.model_mb,
        report.prompt_tokens,
        report.decode_tokens,
        report.threads,
        args.runs
    );
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>14}",
        "", "prefill tok/s", "decode tok/s", "TTFT s", "peak RSS MB"
    );
    let row = |name: &str, b: &bench_gen::EngineBest| {
        println!(
            "{:<22} {:>12.1} {:>12.1} {:>10.2} {:>14.0}",
            name, b.prefill_tok_s, b.decode_tok_s, b.ttft_s, b.peak_rss_mb
        );
    };
    row(&format!("kura ({})", report.device), &report.kura);
    if let (Some(l), Some(r)) = (&report.llama_cpp, &report.ratios) {
        row("llama.cpp (cpu)", l);
        println!(
            "{:<22} {:>11.2}× {:>11.2}× {:>9.2}× {:>13.2}×",
            "ratio kura/llama.cpp", r.prefill, r.decode, r.ttft, r.peak_rss
        );
        if let Some(n) = report.greedy_agreement {
            println!(
                "greedy tokens identical to llama.cpp's: first {n} of {}",
                report.decode_tokens + 1
            );
        }
    }
    println!(
        "RSS budget (model file + Kura's KV cache + 300 MB): {:.0} MB; Kura used {:.0} MB",
        report.model_mb + report.kura_kv_cache_mb + 300.0,
        report.kura.peak_rss_mb
    );
    Ok(ExitCode::SUCCESS)
}
