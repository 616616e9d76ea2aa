//! `kura bench generate`: Kura's LLM engine side by side with llama.cpp on the same
//! GGUF file, the same token ids and the same number of threads.
//!
//! Why a side-by-side run rather than absolute numbers: this CPU is shared and its
//! speed varies from minute to minute, so only two engines measured back to back, in
//! alternation, give a ratio that means something. Each measurement runs in a child
//! process of its own — Kura's in the running executable as a benchmark child ([`super::worker`]), llama.cpp's in a small
//! Python driver over `llama-cpp-python` ([`LLAMA_CPP_DRIVER`]) — so that peak RSS
//! (`VmHWM`) is that engine's alone and no engine starts with the other's pages warm
//! in its heap. Both children receive the same token ids as JSON.
//!
//! What is measured, per engine and run:
//! - **prefill**: one forward pass over the whole prompt (a real Japanese + English
//!   text from the sample manuals, rendered through the model's chat template and cut
//!   to `--prompt-tokens`), fed in chunks of 512 by both engines;
//! - **time to first token**: prefill plus choosing the first token from its logits;
//! - **decode**: `--decode-tokens` single-token forward passes, greedy, each engine
//!   feeding back its own choice (the work per step does not depend on which token);
//! - **peak RSS**: `VmHWM` of the child at the end (weights, KV cache, runtime);
//! - **load**: opening the file until the model is ready (reported, not compared).
//!
//! The best of `--runs` runs is kept for every figure (the least disturbed one), and
//! the ratio ours / llama.cpp is printed (> 1 means Kura is faster, or for RSS uses
//! more). The greedy tokens of both engines are compared as a cross-check of
//! numerics against llama.cpp itself.
//!
//! llama.cpp comes from `installer/bench-tools`, which builds `llama-cpp-python` from
//! source into `target/bench-tools/venv`; without it the bench explains how to get it
//! (or runs Kura alone with `--no-reference`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::llm::{
    argmax, ChatMessage, ChatTemplate, DeviceChoice, GgufFile, LlmError, Model, Tokenizer,
};

/// The Python driver that runs llama.cpp (through `llama-cpp-python`) on a job file.
pub const LLAMA_CPP_DRIVER: &str = include_str!("llama_cpp_driver.py");

/// Real text for the prompt: the sample company's expense FAQ (Japanese) and the
/// English KR-200 maintenance guide, embedded so the bench runs from any folder.
const JAPANESE_TEXT: &str = include_str!("../../../assets/src/経費精算FAQ.utf8.txt");
const ENGLISH_TEXT: &str = include_str!("../../../assets/manuals/equipment-manual-KR-200.md");

/// Errors of the generation benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The model could not be loaded or run.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The reference engine is not installed.
    #[error(
        "llama.cpp is not installed for the benchmark ({python} not found or cannot import \
         llama_cpp). Install it once with `installer/bench-tools` (builds llama-cpp-python \
         from source into target/bench-tools/venv, ~12 min on 2 cores, needs the network), \
         point --python at a Python that has it, or pass --no-reference to measure Kura alone"
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
    /// The GGUF file.
    pub model: PathBuf,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Single-token decode steps after the prompt.
    pub decode_tokens: usize,
    /// Threads for the engine's kernels.
    pub threads: usize,
    /// Kura's device (`cpu`, `cuda`); llama.cpp always runs on the CPU.
    pub device: String,
}

/// One engine's figures from one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRun {
    /// `kura` or `llama.cpp`.
    pub engine: String,
    /// Seconds to load the model.
    pub load_s: f64,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Seconds for the prompt's forward pass.
    pub prefill_s: f64,
    /// Seconds from the start of the prompt until the first token is chosen.
    pub ttft_s: f64,
    /// Decode steps timed.
    pub decode_steps: usize,
    /// Seconds for the decode steps.
    pub decode_s: f64,
    /// Peak resident memory of the process, MB (`VmHWM`).
    pub peak_rss_mb: f64,
    /// The greedy tokens produced (first one from the prompt's logits).
    pub tokens: Vec<u32>,
}

impl EngineRun {
    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_s.max(1e-9)
    }
    /// Decode steps per second.
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_steps as f64 / self.decode_s.max(1e-9)
    }
}

/// The best figures of one engine over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct EngineBest {
    /// `kura` or `llama.cpp`.
    pub engine: String,
    /// Best prompt tokens/s.
    pub prefill_tok_s: f64,
    /// Best decode tokens/s.
    pub decode_tok_s: f64,
    /// Best time to first token, seconds.
    pub ttft_s: f64,
    /// Lowest peak RSS, MB.
    pub peak_rss_mb: f64,
    /// Fastest load, seconds.
    pub load_s: f64,
    /// Every run, for the record.
    pub runs: Vec<EngineRun>,
}

impl EngineBest {
    fn of(runs: Vec<EngineRun>) -> Option<Self> {
        let first = runs.first()?;
        let max = |f: &dyn Fn(&EngineRun) -> f64| runs.iter().map(f).fold(f64::MIN, f64::max);
        let min = |f: &dyn Fn(&EngineRun) -> f64| runs.iter().map(f).fold(f64::MAX, f64::min);
        Some(Self {
            engine: first.engine.clone(),
            prefill_tok_s: max(&|r| r.prefill_tok_s()),
            decode_tok_s: max(&|r| r.decode_tok_s()),
            ttft_s: min(&|r| r.ttft_s),
            peak_rss_mb: min(&|r| r.peak_rss_mb),
            load_s: min(&|r| r.load_s),
            runs,
        })
    }
}

/// Ratios ours / llama.cpp (> 1: Kura faster; for TTFT and RSS, < 1 is better).
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Prefill tok/s ratio.
    pub prefill: f64,
    /// Decode tok/s ratio.
    pub decode: f64,
    /// Time-to-first-token ratio (lower is better).
    pub ttft: f64,
    /// Peak RSS ratio (lower is better).
    pub peak_rss: f64,
}

/// The whole benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The GGUF file.
    pub model: PathBuf,
    /// Its size in MB.
    pub model_mb: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Decode steps.
    pub decode_tokens: usize,
    /// Threads given to both engines.
    pub threads: usize,
    /// Kura's device.
    pub device: String,
    /// Kura's best figures.
    pub kura: EngineBest,
    /// llama.cpp's best figures, unless run without the reference.
    pub llama_cpp: Option<EngineBest>,
    /// ours / llama.cpp.
    pub ratios: Option<Ratios>,
    /// How many greedy tokens both engines produced identically, from the start.
    pub greedy_agreement: Option<usize>,
    /// Kura's KV cache for the whole sequence, MB (f32, reserved for prompt + decode) —
    /// for the RSS budget "model file + KV cache + 300 MB".
    pub kura_kv_cache_mb: f64,
}

/// Builds a prompt of exactly `n` tokens: a chat (system + user) whose user message
/// carries the manuals' text, cut so that the rendered, tokenized prompt — template
/// tokens included — has `n` tokens. The text is repeated if one copy is too short.
pub fn build_prompt(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    n: usize,
) -> Result<Vec<u32>, LlmError> {
    const MARK: &str = "\u{1}KURA-DOC\u{1}";
    let rendered = template.render(
        &[
            ChatMessage::system(
                "あなたは社内文書に基づいて答えるアシスタントです。You answer from the documents.",
            ),
            ChatMessage::user(format!(
                "次の資料を読んで、重要な点を日本語と英語で要約してください。\n\n{MARK}"
            )),
        ],
        true,
    )?;
    let (before, after) = rendered
        .split_once(MARK)
        .expect("the template keeps the message text");
    let head = tokenizer.encode(before)?;
    let tail = tokenizer.encode(after)?;
    let doc_budget = n.saturating_sub(head.len() + tail.len());
    let text = format!("{JAPANESE_TEXT}\n\n{ENGLISH_TEXT}\n\n");
    let mut doc = Vec::new();
    while doc.len() < doc_budget {
        doc.extend(tokenizer.encode(&text)?);
    }
    doc.truncate(doc_budget);
    let mut out = head;
    out.extend(doc);
    out.extend(tail);
    out.truncate(n.max(1));
    Ok(out)
}

/// Peak resident set size of this process in MB (`VmHWM` in `/proc/self/status`;
/// 0 where that file does not exist).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs Kura's side of a job in this process (the benchmark child): load, prefill,
/// greedy decode. The thread count must already be set through `RAYON_NUM_THREADS`
/// before anything started candle's thread pool (the parent sets it for the child).
pub fn run_kura(job: &BenchSpec) -> Result<EngineRun, LlmError> {
    let device: DeviceChoice = job.device.parse()?;
    let device = device.open()?;
    let t = Instant::now();
    let model = Model::load(&job.model, &device)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut session = model.new_session();
    session.reserve(job.tokens.len() + job.decode_tokens + 1);

    let t = Instant::now();
    let logits = model.forward(&job.tokens, &mut session)?;
    // Wait for the device: the logits are on the host once they are copied.
    let logits = crate::llm::layers::logits_to_vec(&logits)?;
    let prefill_s = t.elapsed().as_secs_f64();
    let mut tok = argmax(&logits);
    let ttft_s = t.elapsed().as_secs_f64();

    let mut tokens = vec![tok];
    let t = Instant::now();
    for _ in 0..job.decode_tokens {
        let logits = model.forward_to_vec(&[tok], &mut session)?;
        tok = argmax(&logits);
        tokens.push(tok);
    }
    let decode_s = t.elapsed().as_secs_f64();
    Ok(EngineRun {
        engine: "kura".into(),
        load_s,
        prompt_tokens: job.tokens.len(),
        prefill_s,
        ttft_s,
        decode_steps: job.decode_tokens,
        decode_s,
        peak_rss_mb: peak_rss_mb(),
        tokens,
    })
}

/// Where the benchmark finds things.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The running executable, re-run as a benchmark child ([`super::worker`]).
    pub kura_exe: PathBuf,
    /// The Python with `llama_cpp`, if the reference runs.
    pub python: Option<PathBuf>,
    /// A folder for the job file and the driver script.
    pub work_dir: PathBuf,
}

/// The default Python for the reference: `target/bench-tools/venv/bin/python` found
/// from the current folder or from the `kura` executable (`target/release/kura`).
pub fn default_python() -> PathBuf {
    let rel = Path::new("target/bench-tools/venv/bin/python");
    let mut candidates = vec![rel.to_path_buf()];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.parent().and_then(Path::parent) {
            candidates.push(target.join("bench-tools/venv/bin/python"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| rel.to_path_buf())
}

impl Runner {
    /// Checks that the reference Python can import `llama_cpp`.
    pub fn check_reference(&self) -> Result<(), BenchError> {
        let Some(python) = &self.python else {
            return Ok(());
        };
        if super::python_can_import(python, "llama_cpp") {
            Ok(())
        } else {
            Err(BenchError::ReferenceMissing {
                python: python.display().to_string(),
            })
        }
    }

    fn write_job(&self, job: &BenchSpec) -> Result<PathBuf, BenchError> {
        Ok(super::write_job_file(&self.work_dir, "job.json", job)?)
    }

    fn run_child(engine: &str, cmd: &mut Command) -> Result<EngineRun, BenchError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BenchError::Child {
                engine: engine.into(),
                message: format!("cannot start {:?}: {e}", cmd.get_program()),
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        if !out.status.success() {
            return Err(BenchError::Child {
                engine: engine.into(),
                message: format!("{}: {}", out.status, tail(&stderr)),
            });
        }
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line).map_err(|e| BenchError::Child {
            engine: engine.into(),
            message: format!(
                "unreadable result ({e}): {}{}",
                tail(&stdout),
                tail(&stderr)
            ),
        })
    }

    /// Kura's side of `job` in a child process.
    pub fn run_kura_child(&self, job: &BenchSpec) -> Result<EngineRun, BenchError> {
        let path = self.write_job(job)?;
        let threads = job.threads.to_string();
        Self::run_child(
            "kura",
            super::worker::command(&self.kura_exe, super::worker::Bench::Generate, &path)
                .env("RAYON_NUM_THREADS", &threads)
                .env("CANDLE_NUM_THREADS", &threads),
        )
    }

    /// llama.cpp's side of `job` in a child process.
    pub fn run_llama_cpp_child(&self, job: &BenchSpec) -> Result<EngineRun, BenchError> {
        let python = self
            .python
            .as_ref()
            .ok_or_else(|| BenchError::ReferenceMissing {
                python: "(none)".into(),
            })?;
        let path = self.write_job(job)?;
        let driver = self.work_dir.join("llama_cpp_driver.py");
        std::fs::write(&driver, LLAMA_CPP_DRIVER)?;
        let threads = job.threads.to_string();
        Self::run_child(
            "llama.cpp",
            Command::new(python)
                .arg(&driver)
                .arg(&path)
                .env("OMP_NUM_THREADS", &threads),
        )
    }

    /// Runs both engines `runs` times, alternating (Kura first), and keeps the best.
    pub fn run(
        &self,
        job: &BenchSpec,
        runs: usize,
        progress: &dyn Fn(&EngineRun),
    ) -> Result<Report, BenchError> {
        self.check_reference()?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..runs.max(1) {
            let r = self.run_kura_child(job)?;
            progress(&r);
            ours.push(r);
            if self.python.is_some() {
                let r = self.run_llama_cpp_child(job)?;
                progress(&r);
                theirs.push(r);
            }
        }
        let kura = EngineBest::of(ours).expect("at least one run");
        let llama_cpp = EngineBest::of(theirs);
        let ratios = llama_cpp.as_ref().map(|l| Ratios {
            prefill: kura.prefill_tok_s / l.prefill_tok_s,
            decode: kura.decode_tok_s / l.decode_tok_s,
            ttft: kura.ttft_s / l.ttft_s,
            peak_rss: kura.peak_rss_mb / l.peak_rss_mb,
        });
        let greedy_agreement = llama_cpp.as_ref().map(|l| {
            let (a, b) = (&kura.runs[0].tokens, &l.runs[0].tokens);
            a.iter().zip(b).take_while(|(x, y)| x == y).count()
        });
        let kv_cache_mb = {
            let file = GgufFile::open(&job.model)?;
            kv_cache_bytes(&file, job.tokens.len() + job.decode_tokens)? as f64 / 1e6
        };
        Ok(Report {
            model_mb: std::fs::metadata(&job.model)
                .map(|m| m.len() as f64 / 1e6)
                .unwrap_or(0.0),
            model: job.model.clone(),
            prompt_tokens: job.tokens.len(),
            decode_tokens: job.decode_tokens,
            threads: job.threads,
            device: job.device.clone(),
            kura,
            llama_cpp,
            ratios,
            greedy_agreement,
            kura_kv_cache_mb: kv_cache_mb,
        })
    }
}

/// Bytes of Kura's f32 KV cache for `tokens` tokens.
pub fn kv_cache_bytes(file: &GgufFile, tokens: usize) -> Result<usize, LlmError> {
    let arch = file.architecture()?.to_string();
    let layers = file.u32(&format!("{arch}.block_count"))? as usize;
    let hidden = file.u32(&format!("{arch}.embedding_length"))? as usize;
    let heads = file.u32(&format!("{arch}.attention.head_count"))? as usize;
    let kv_heads = file
        .u32_opt(&format!("{arch}.attention.head_count_kv"))?
        .map_or(heads, |n| n as usize);
    Ok(layers * 2 * kv_heads * (hidden / heads.max(1)) * tokens * 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::fixtures::write_tiny_qwen2_gguf;

    #[test]
    fn prompt_has_the_requested_length_and_ends_with_the_generation_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_tiny_qwen2_gguf(&path, 3).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        let template = ChatTemplate::from_gguf(&file).unwrap();
        for n in [200, 700] {
            let ids = build_prompt(&tokenizer, &template, n).unwrap();
            assert_eq!(ids.len(), n);
            let text = tokenizer.decode(&ids);
            assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
        }
    }

    #[test]
    fn kura_worker_runs_a_job_and_reports_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_tiny_qwen2_gguf(&path, 3).unwrap();
        let job = BenchSpec {
            model: path,
            tokens: vec![1, 2, 3, 4, 5],
            decode_tokens: 6,
            threads: 1,
            device: "cpu".into(),
        };
        let r = run_kura(&job).unwrap();
        assert_eq!(r.tokens.len(), 7);
        assert_eq!((r.prompt_tokens, r.decode_steps), (5, 6));
        assert!(r.prefill_s > 0.0 && r.ttft_s >= r.prefill_s && r.decode_s > 0.0);
        assert!(r.peak_rss_mb > 1.0);
        let bad = BenchSpec {
            device: "cuda".into(),
            ..job
        };
        if !DeviceChoice::cuda_compiled() {
            assert!(run_kura(&bad)
                .unwrap_err()
                .to_string()
                .contains("--features cuda"));
        }
    }
}
