//! The `kura` command line: parses arguments, calls the engine (the `kura` library)
//! and formats what it returns.
//!
//! Nothing here knows how a model is verified or a document indexed; each
//! subcommand calls the library and prints the result, as a table for people
//! or, with `--json`, as one JSON document for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use kura::paths::Paths;

// One module per command, named after it.
mod adapters;
mod ask;
mod bench;
mod chat;
mod check;
mod dataset;
mod dict;
mod doctor;
mod eval;
mod generate;
mod ingest;
mod jobs;
mod models;
mod search;
mod serve;
mod status;
mod train;

// Helpers the commands share (they use no command module).
mod load;
mod term;

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
    Models(models::ModelsCommand),
    /// Show where Kura keeps its data, the CPU features it uses, and model status.
    Doctor,
    /// Answer one prompt with the local model (through its chat template).
    Generate(generate::GenerateArgs),
    /// Interactive chat with the local model in the terminal (streaming); `--rag`
    /// answers from the documents with citations.
    Chat(chat::ChatArgs),
    /// Answer a question from the indexed documents, citing document and page.
    Ask(ask::AskArgs),
    /// Add files and folders to a collection (incremental: only new or changed files).
    Ingest(ingest::IngestArgs),
    /// Search the indexed documents (hybrid BM25 + vectors by default).
    Search(search::SearchArgs),
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
    Eval(eval::EvalCommand),
    /// Benchmarks (numbers, not tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Serve the OpenAI-compatible HTTP API (chat, embeddings) on this machine.
    Serve(serve::ServeArgs),
    /// Training data for LoRA fine-tuning: import (validate + split), list, draft
    /// from a collection (synth), review.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Trained and imported LoRA adapters: list, import a PEFT folder.
    #[command(subcommand)]
    Adapters(adapters::AdaptersCommand),
    /// LoRA fine-tuning of the chat model: run a job, resume a stopped one, queue one.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// The training-job queue: list, show, logs, cancel, resume, run.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
}

/// Runs the command line and turns errors into a message and exit code 1.
fn main() -> ExitCode {
    kura::alloc::tune();
    // A benchmark's child process runs its job and nothing else.
    if let Some(code) = kura::bench::worker::run_if_asked() {
        return code;
    }
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
        Command::Doctor => doctor::doctor(&paths, cli.json),
        Command::Generate(args) => generate::generate_cmd(args, &paths, cli.json),
        Command::Chat(args) if args.rag => chat::chat_rag_cmd(args, &paths),
        Command::Chat(args) => chat::chat_cmd(args.model, args.adapter.as_deref(), &paths),
        Command::Ask(args) => ask::ask_cmd(args, &paths, cli.json),
        Command::Ingest(args) => ingest::ingest_cmd(args, &paths, cli.json),
        Command::Search(args) => search::search_cmd(args, &paths, cli.json),
        Command::Status => status::status_cmd(&paths, cli.json),
        Command::Check { repair } => check::check_cmd(&paths, cli.json, repair),
        Command::Dict(cmd) => dict::dict_cmd(cmd, &paths, cli.json),
        Command::Eval(cmd) => eval::eval_cmd(cmd, &paths, cli.json),
        Command::Bench(cmd) => bench::bench_cmd(cmd, &paths, cli.json),
        Command::Serve(args) => serve::serve_cmd(args, &paths, cli.json),
        Command::Dataset(cmd) => dataset::dataset_cmd(cmd, &paths, cli.json),
        Command::Train(cmd) => train::train_cmd(cmd, &paths, cli.json),
        Command::Adapters(cmd) => adapters::adapters_cmd(cmd, &paths, cli.json),
        Command::Jobs(cmd) => jobs::jobs_cmd(cmd, &paths, cli.json),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's arguments are well formed: no two share a name, defaults parse.
    /// (clap checks this only when a command is first parsed, so a clash would make
    /// that command fail for the user at its first run.)
    #[test]
    fn every_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    /// `kura chat --rag` takes both the number of sources and the sampling top-k.
    #[test]
    fn chat_takes_sources_and_sampling_top_k() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "kura",
            "chat",
            "--rag",
            "--sources",
            "6",
            "--top-k",
            "20",
        ])
        .expect("parses");
        match cli.command {
            super::Command::Chat(args) => {
                assert_eq!(args.sources, 6);
                assert_eq!(args.model.top_k, 20);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
