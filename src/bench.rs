//! `kura bench index|embed|ingest|generate|train`: benchmarks that print numbers
//! (not tests), most of them side by side with a reference engine on the same
//! model (PyTorch, llama.cpp, PyTorch + PEFT).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::load::{load_embedder, tempfile_dir};
use crate::term::print_json;
use kura::bench::generate as bench_gen;
use kura::bench::train::{self as bench_train, DEFAULT_MODEL};
use kura::llm::{ChatTemplate, DeviceChoice, GgufFile, Tokenizer};
use kura::models::{Registry, Role};
use kura::paths::Paths;
use kura::train::export::export_hf;
use kura::train::Target;

/// `kura bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Hybrid query latency and index size at 10k/100k/1M synthetic chunks.
    Index(BenchIndexArgs),
    /// Passage-embedding throughput, side by side with PyTorch on the same model.
    Embed(BenchEmbedArgs),
    /// Extraction, chunking and BM25 pages/s per core on real documents; embedding chunks/s.
    Ingest(BenchIngestArgs),
    /// Prefill/decode speed, time to first token and peak RSS, side by side with llama.cpp.
    Generate(BenchGenerateArgs),
    /// LoRA training tokens/s and peak RSS, side by side with PyTorch + PEFT on the same weights.
    Train(BenchTrainArgs),
}

/// Runs one `kura bench …` benchmark.
pub(super) fn bench_cmd(cmd: BenchCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Index(args) => bench_index_cmd(args, paths, json_out),
        BenchCommand::Embed(args) => bench_embed_cmd(args, paths, json_out),
        BenchCommand::Ingest(args) => bench_ingest_cmd(args, paths, json_out),
        BenchCommand::Generate(args) => bench_generate_cmd(args, paths, json_out),
        BenchCommand::Train(args) => bench_train_cmd(args, paths, json_out),
    }
}

/// `kura bench index`
#[derive(Debug, Args)]
pub struct BenchIndexArgs {
    /// Corpus sizes in chunks (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub sizes: Vec<usize>,
    /// Queries measured at each size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Where to build the indexes (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn bench_index_cmd(args: BenchIndexArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let embedder = load_embedder(paths, None)?;
    let keep = args.work_dir.is_some();
    let dir = tempfile_dir(args.work_dir)?;
    let mut points = Vec::new();
    for n in args.sizes {
        if !json_out {
            eprintln!("building {n} synthetic chunks …");
        }
        let p = kura::bench::index::scale_point(
            &dir.join(n.to_string()),
            n,
            args.queries,
            &embedder,
            &|m| {
                if !json_out {
                    eprintln!("  {m}")
                }
            },
        )?;
        if !keep {
            let _ = std::fs::remove_dir_all(dir.join(n.to_string()));
        }
        if !json_out {
            println!(
                "{:>9} chunks: hybrid p50 {:.1} ms, p95 {:.1} ms (medians: query embedding {:.1} ms, BM25 {:.1} ms, vectors {:.1} ms); query postings {:.2} per chunk; build BM25 {:.0} s, vectors {:.0} s; disk BM25 {:.0} MB, vectors {:.0} MB",
                p.chunks, p.p50_ms, p.p95_ms, p.embed_p50_ms, p.bm25_p50_ms, p.vector_p50_ms, p.query_postings_per_chunk, p.bm25_build_s, p.vector_build_s, p.bm25_mb, p.vector_mb
            );
        }
        points.push(p);
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if json_out {
        print_json(
            &json!({"threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), "points": points}),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura bench embed`
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Passages per repeat.
    #[arg(long, default_value_t = 64)]
    pub passages: usize,
    /// Tokens per passage (prefix and special tokens included).
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Timed repeats (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Embedding model (default: the default embedding model).
    #[arg(long)]
    pub embedding_model: Option<String>,
}

fn bench_embed_cmd(args: BenchEmbedArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let registry = Registry::open(&paths.models_dir)?;
    let model = registry.verify_named(args.embedding_model.as_deref(), Role::Embedding)?;
    if model.entry.format != "e5s1" {
        bail!(
            "the PyTorch reference reads E5S1 containers only; {} is {}",
            model.entry.name,
            model.entry.format
        );
    }
    let embedder = load_embedder(paths, args.embedding_model.as_deref())?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let r = kura::bench::embed::run(
        &embedder,
        model.primary(),
        &repo,
        args.passages,
        args.tokens,
        args.repeats,
    )?;
    if json_out {
        print_json(&serde_json::to_value(&r)?);
    } else {
        println!(
            "{} passages x {} tokens, {} threads: Kura {:.1} chunks/s ({:.0} tokens/s)",
            r.passages,
            r.tokens_per_passage,
            r.threads,
            r.kura_chunks_per_s,
            r.kura_chunks_per_s * r.tokens_per_passage as f64
        );
        match (r.torch_chunks_per_s, r.ratio, r.agreement_cosine) {
            (Some(t), Some(ratio), Some(cos)) => println!(
                "{}: {t:.1} chunks/s — ratio Kura/PyTorch {ratio:.2}x (first embeddings agree: cosine {cos:.5})",
                r.reference
            ),
            _ => println!("reference {}", r.reference),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura bench ingest`
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Files or folders (default: the sample manuals and the real PDFs under tests/data/ingest).
    pub paths: Vec<PathBuf>,
    /// Times each file is processed (the best is kept).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

fn bench_ingest_cmd(args: BenchIngestArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let roots = if args.paths.is_empty() {
        vec![repo.join("assets/manuals"), repo.join("tests/data/ingest")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        if root.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(root)
                .with_context(|| format!("reading {}", root.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            // The default set keeps only the good PDFs of the test data (the rest are bad on purpose).
            if args.paths.is_empty() && root.ends_with("tests/data/ingest") {
                found.retain(|p| {
                    p.extension().is_some_and(|e| e == "pdf")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("bad-"))
                });
            }
            files.extend(found);
        } else {
            files.push(root.clone());
        }
    }
    let embedder = load_embedder(paths, None)?;
    let work = tempfile_dir(None)?;
    let r = kura::bench::ingest::run(&files, &embedder, &work, args.repeats)?;
    let _ = std::fs::remove_dir_all(&work);
    if json_out {
        print_json(&serde_json::to_value(&r)?);
    } else {
        println!("| file | extractor | pages | chunks | extract ms | chunk ms | BM25 ms |");
        println!("|---|---|---|---|---|---|---|");
        for f in &r.files {
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                f.path.file_name().unwrap_or_default().to_string_lossy(),
                f.extractor,
                f.pages,
                f.chunks,
                f.extract_s * 1e3,
                f.chunk_s * 1e3,
                f.bm25_s * 1e3
            );
        }
        for (p, why) in &r.failed {
            println!("FAILED {}: {why}", p.display());
        }
        println!(
            "one core: PDF {:.1} pages/s, all formats {:.1} pages/s, chunking+BM25 {:.0} chunks/s; embedding {:.1} chunks/s ({} threads); BM25 on disk {:.2} MB",
            r.pdf_pages_per_s,
            r.pages_per_s,
            r.chunks_per_s,
            r.embed_chunks_per_s,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            r.bm25_bytes as f64 / 1e6
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
}

fn bench_generate_cmd(args: BenchGenerateArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
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
    let job = bench_gen::BenchSpec {
        model: std::path::absolute(&path)?,
        tokens,
        decode_tokens: args.decode_tokens,
        threads,
        device: args.device.to_string(),
    };
    let runner = bench_gen::Runner {
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
    let progress = |r: &bench_gen::EngineRun| {
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
}

fn bench_train_cmd(args: BenchTrainArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
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
    let tokens = bench_gen::build_prompt(&tokenizer, &template, args.seq)?;
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
    let runner = bench_train::Runner {
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
    let job = bench_train::BenchSpec {
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
    let progress = |r: &bench_train::EngineRun| {
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
    let row = |name: &str, r: &bench_train::EngineRun| {
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
