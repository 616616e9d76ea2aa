//! `kura adapters …`: the trained and imported LoRA adapters: list them, import a
//! PEFT folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::term::print_json;
use kura::adapters::{AdapterError, AdapterRegistry};
use kura::paths::Paths;
use kura::train::RunInfo;

/// `kura adapters …`
#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// The adapters in `<data>/adapters/`: base model, rank, targets, report verdict.
    List,
    /// Import a PEFT LoRA folder (e.g. trained with Hugging Face PEFT on the same
    /// base model): checked against the model, then copied to `<data>/adapters/NAME`.
    Import {
        /// The PEFT folder (adapter_config.json + adapter_model.safetensors).
        dir: PathBuf,
        /// The name to serve it under.
        #[arg(long)]
        name: String,
        /// The base model (registry name or GGUF path); default: the one its config
        /// names, if Kura has it.
        #[arg(long)]
        model: Option<String>,
    },
}

fn resolve_model(paths: &Paths, model: &str) -> Result<RunInfo> {
    Ok(kura::train::resolve_model(paths, model)?)
}

pub(super) fn adapters_cmd(
    cmd: AdaptersCommand,
    paths: &Paths,
    json_out: bool,
) -> Result<ExitCode> {
    let registry = AdapterRegistry::new(paths);
    match cmd {
        AdaptersCommand::List => {
            let list = registry.list();
            if json_out {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|a| {
                        json!({
                            "name": a.name,
                            "base_model": a.config.base_model_name_or_path,
                            "rank": a.config.r,
                            "targets": a.config.target_modules,
                            "verdict": a.report.as_ref().map(|r| r.verdict),
                            "dir": a.dir,
                        })
                    })
                    .collect();
                print_json(&json!(rows));
            } else if list.is_empty() {
                println!(
                    "no adapters (train one with `kura train run`, or `kura adapters import`)"
                );
            } else {
                println!("{:<24} {:<32} {:>4}  verdict", "name", "base model", "rank");
                for a in &list {
                    println!(
                        "{:<24} {:<32} {:>4}  {}",
                        a.name,
                        a.config.base_model_name_or_path.as_deref().unwrap_or("?"),
                        a.config.r,
                        a.report.as_ref().map_or("-", |r| r.verdict.as_str())
                    );
                }
            }
        }
        AdaptersCommand::Import { dir, name, model } => {
            let base = match model {
                Some(m) => m,
                None => registry
                    .base_model(&dir)
                    .ok_or_else(|| AdapterError::UnknownBase(name.clone()))?,
            };
            let info = resolve_model(paths, &base)?;
            let imported = registry.import(&dir, &name, &info)?;
            if json_out {
                print_json(
                    &json!({"name": imported.name, "base_model": imported.base_model,
                    "layers": imported.layers, "dir": imported.dir}),
                );
            } else {
                println!(
                    "imported `{}`: LoRA on {} layers of {} → {}",
                    imported.name,
                    imported.layers,
                    imported.base_model,
                    imported.dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
