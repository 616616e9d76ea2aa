//! The `kura` command line: parses arguments and wires the engine's modules.
//!
//! Nothing here knows how a model is verified or a document indexed; each
//! subcommand calls the library and prints the result, as a table for people
//! or, with `--json`, as one JSON document for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::paths::Paths;

mod ask;
mod bench_train;
mod dict;
mod docs;
mod jobs;
mod llm;
mod models;
mod serve;
mod train;

/// Kura (蔵): private AI over your company's documents, on this machine only.
#[derive(Debug, Parser)]
#[command(name = "kura", version, about, long_about = None)]
pub struct Cli {
    /// Where the catalog, indexes, adapters and jobs live.
    #[arg(long, global = true, env = "KURA_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the model files are.
    #[arg(long, global = true, env = "KURA_MODELS", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Kura's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Model files: list, verify, import, fetch.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show where Kura keeps its data, the CPU features it uses, and model status.
    Doctor,
    /// Answer one prompt with the local model (through its chat template).
    Generate(llm::GenerateArgs),
    /// Interactive chat with the local model in the terminal (streaming); `--rag`
    /// answers from the documents with citations.
    Chat(ask::ChatArgs),
    /// Answer a question from the indexed documents, citing document and page.
    Ask(ask::AskArgs),
    /// Add files and folders to a collection (incremental: only new or changed files).
    Ingest(docs::IngestArgs),
    /// Search the indexed documents (hybrid BM25 + vectors by default).
    Search(docs::SearchArgs),
    /// Collections, documents, failures and pages not indexed.
    Status,
    /// Check that the catalog and both indexes agree.
    Check {
        /// Bring the indexes back in step when they lag.
        #[arg(long)]
        repair: bool,
    },
    /// The user dictionary: company terms and product codes for keyword search.
    #[command(subcommand)]
    Dict(dict::DictCommand),
    /// Evaluations on real data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Benchmarks (numbers, not tests).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve the OpenAI-compatible HTTP API (chat, embeddings) on this machine.
    Serve(serve::ServeArgs),
    /// Training data for LoRA fine-tuning: import (validate + split), list, draft
    /// from a collection (synth), review.
    #[command(subcommand)]
    Dataset(train::DatasetCommand),
    /// Trained and imported LoRA adapters: list, import a PEFT folder.
    #[command(subcommand)]
    Adapters(train::AdaptersCommand),
    /// LoRA fine-tuning of the chat model: run a job, resume a stopped one, queue one.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// The training-job queue: list, show, logs, cancel, resume, run.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
}

/// `kura eval …`
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Recall@k, MRR@10 and nDCG@10 of BM25, vectors and hybrid on a data set.
    Retrieval(docs::EvalRetrievalArgs),
    /// Grounded answers vs the same model without retrieval: accuracy, citation
    /// precision, refusals (`--calibrate`: the refusal thresholds' data).
    Rag(ask::EvalRagArgs),
    /// "Did it help?": a LoRA adapter vs its base model on held-out examples (loss,
    /// perplexity, exact match, character F1); writes report.json + report.png.
    Adapter(train::EvalAdapterArgs),
}

/// `kura bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Hybrid query latency and index size at 10k/100k/1M synthetic chunks.
    Index(docs::BenchIndexArgs),
    /// Passage-embedding throughput, side by side with PyTorch on the same model.
    Embed(docs::BenchEmbedArgs),
    /// Extraction, chunking and BM25 pages/s per core on real documents; embedding chunks/s.
    Ingest(docs::BenchIngestArgs),
    /// Prefill/decode speed, time to first token and peak RSS, side by side with llama.cpp.
    Generate(llm::BenchGenerateArgs),
    /// LoRA training tokens/s and peak RSS, side by side with PyTorch + PEFT on the same weights.
    Train(bench_train::BenchTrainArgs),
}

/// `kura models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the known models (defaults and imported) and whether their files are present.
    List,
    /// Re-check the sha256 of every model file (or only the named models).
    Verify {
        /// Model names (default: all).
        names: Vec<String>,
    },
    /// Register a GGUF brought in from elsewhere (copied into the models folder).
    Import {
        /// The GGUF file.
        path: PathBuf,
        /// The name to register it under.
        #[arg(long)]
        name: Option<String>,
        /// Its licence, when the file does not declare one.
        #[arg(long)]
        licence: Option<String>,
    },
    /// Re-quantize a GGUF (e.g. the 0.5B model's Q5_0 to q8_0, which candle runs faster).
    Quantize {
        /// The GGUF to read.
        input: PathBuf,
        /// The GGUF to write.
        output: PathBuf,
        /// Target type: q8_0, q4_0 or q4_k.
        #[arg(long = "type", default_value = "q8_0")]
        kind: String,
    },
    /// Write a GGUF's dequantized base as a Hugging Face folder (config.json + f32
    /// model.safetensors) for transformers / PEFT.
    ExportHf {
        /// A model name (see `kura models list`) or a GGUF file.
        model: String,
        /// The folder to write.
        dir: PathBuf,
    },
    /// Download the default models (connected machines only; runs installer/fetch-models).
    Fetch {
        /// Only these models.
        names: Vec<String>,
    },
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    if let Some(missing) = missing_cpu_features() {
        eprintln!(
            "error: this CPU lacks {missing}, which this build of Kura was compiled for. \
             Rebuild without `-C target-feature` in .cargo/config.toml (slower), or use a newer CPU. \
             / このCPUは {missing} に対応していません"
        );
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KURA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CPU features the build relies on (see `.cargo/config.toml`), if any is missing.
fn missing_cpu_features() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut missing = Vec::new();
        if cfg!(target_feature = "avx2") && !std::arch::is_x86_feature_detected!("avx2") {
            missing.push("AVX2");
        }
        if cfg!(target_feature = "fma") && !std::arch::is_x86_feature_detected!("fma") {
            missing.push("FMA");
        }
        if cfg!(target_feature = "f16c") && !std::arch::is_x86_feature_detected!("f16c") {
            missing.push("F16C");
        }
        if !missing.is_empty() {
            return Some(missing.join(", "));
        }
    }
    None
}

fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::resolve(cli.data_dir.clone(), cli.models_dir.clone());
    match cli.command {
        Command::Models(cmd) => models::models(cmd, &paths, cli.json),
        Command::Doctor => models::doctor(&paths, cli.json),
        Command::Generate(args) => llm::generate_cmd(args, &paths, cli.json),
        Command::Chat(args) if args.rag => ask::chat_rag_cmd(args, &paths),
        Command::Chat(args) => llm::chat_cmd(args.model, args.adapter.as_deref(), &paths),
        Command::Ask(args) => ask::ask_cmd(args, &paths, cli.json),
        Command::Ingest(args) => docs::ingest_cmd(args, &paths, cli.json),
        Command::Search(args) => docs::search_cmd(args, &paths, cli.json),
        Command::Status => docs::status_cmd(&paths, cli.json),
        Command::Check { repair } => docs::check_cmd(&paths, cli.json, repair),
        Command::Dict(cmd) => dict::dict_cmd(cmd, &paths, cli.json),
        Command::Eval(EvalCommand::Retrieval(args)) => {
            docs::eval_retrieval_cmd(args, &paths, cli.json)
        }
        Command::Eval(EvalCommand::Rag(args)) => ask::eval_rag_cmd(args, &paths, cli.json),
        Command::Eval(EvalCommand::Adapter(args)) => {
            train::eval_adapter_cmd(args, &paths, cli.json)
        }
        Command::Bench(BenchCommand::Index(args)) => docs::bench_index_cmd(args, &paths, cli.json),
        Command::Bench(BenchCommand::Embed(args)) => docs::bench_embed_cmd(args, &paths, cli.json),
        Command::Bench(BenchCommand::Ingest(args)) => {
            docs::bench_ingest_cmd(args, &paths, cli.json)
        }
        Command::Serve(args) => serve::serve_cmd(args, &paths, cli.json),
        Command::Dataset(cmd) => train::dataset_cmd(cmd, &paths, cli.json),
        Command::Train(cmd) => train::train_cmd(cmd, &paths, cli.json),
        Command::Adapters(cmd) => train::adapters_cmd(cmd, &paths, cli.json),
        Command::Jobs(cmd) => jobs::jobs_cmd(cmd, &paths, cli.json),
        Command::Bench(BenchCommand::Train(args)) => {
            bench_train::bench_train_cmd(args, &paths, cli.json)
        }
        Command::Bench(BenchCommand::Generate(args)) => {
            llm::bench_generate_cmd(args, &paths, cli.json)
        }
    }
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}
