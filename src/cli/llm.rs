//! `kura generate`, `kura chat` and `kura models quantize`: the local model from the terminal.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::print_json;
use crate::llm::{ChatMessage, GenerateParams, Llm, QuantType, SamplingParams};
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
}

impl ModelArgs {
    fn params(&self) -> GenerateParams {
        let sampling = if self.temperature <= 0.0 {
            SamplingParams { repeat_penalty: self.repeat_penalty, ..SamplingParams::greedy() }
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
        GenerateParams { max_tokens: self.max_tokens, sampling, stop: self.stop.clone(), ..GenerateParams::default() }
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
}

/// Loads a verified chat model.
pub(super) fn load_llm(paths: &Paths, name: Option<&str>) -> Result<Llm> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(name, Role::Chat)?;
    Llm::load(model.primary(), &candle_core::Device::Cpu).with_context(|| format!("loading the chat model {}", model.entry.name))
}

/// Ctrl-C cancels the generation in flight instead of killing the process.
pub(super) fn cancel_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
    let llm = load_llm(paths, args.model.model.as_deref())?;
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
    let msgs = messages(&args.model.system, &[ChatMessage::user(args.prompt.clone())]);
    let mut stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if !json_out {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
    };
    let g = llm.chat(&mut session, &msgs, &args.model.params(), Some(&cancel), &mut on_text)?;
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

pub(super) fn chat_cmd(args: ModelArgs, paths: &Paths) -> Result<ExitCode> {
    let llm = load_llm(paths, args.model.as_deref())?;
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
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
        let g = llm.chat(&mut session, &messages(&args.system, &history), &args.params(), Some(&cancel), &mut |p| {
            let _ = write!(stdout, "{p}");
            let _ = stdout.flush();
        });
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

pub(super) fn quantize_cmd(input: PathBuf, output: PathBuf, kind: &str, json_out: bool) -> Result<ExitCode> {
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
