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

mod models;

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
    }
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}
