//! `kura models …`: list, verify, import, re-quantize, export and fetch the model
//! files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;

use crate::term::print_json;
use kura::llm::QuantType;
use kura::models::{ImportOptions, Registry};
use kura::paths::Paths;

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

pub(super) fn models(cmd: ModelsCommand, paths: &Paths, json: bool) -> Result<ExitCode> {
    let mut registry = Registry::open(&paths.models_dir)?;
    match cmd {
        ModelsCommand::List => {
            let rows: Vec<_> = registry
                .entries()
                .iter()
                .map(|e| {
                    let present = e.files.iter().all(|f| {
                        registry.file_path(f).metadata().map(|m| m.len()).ok() == Some(f.size)
                    });
                    (e, present)
                })
                .collect();
            if json {
                print_json(&json!(rows
                    .iter()
                    .map(|(e, present)| json!({
                        "name": e.name, "role": e.role, "default": e.default, "format": e.format,
                        "licence": e.licence, "source": e.source, "caveat": e.caveat,
                        "origin": e.origin, "present": present,
                        "files": e.files.iter().map(|f| json!({
                            "path": registry.file_path(f), "sha256": f.sha256, "size": f.size,
                        })).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()));
            } else {
                println!("models folder: {}", paths.models_dir.display());
                for (e, present) in rows {
                    let size: u64 = e.files.iter().map(|f| f.size).sum();
                    println!(
                        "{:<30} {:<9} {:>9.1} MB  {:<8} {}{}",
                        e.name,
                        e.role.to_string(),
                        size as f64 / 1e6,
                        if present { "present" } else { "MISSING" },
                        e.licence,
                        if e.default { "  [default]" } else { "" },
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify { names } => {
            let entries: Vec<_> = if names.is_empty() {
                registry.entries().to_vec()
            } else {
                names
                    .iter()
                    .map(|n| registry.get(n).cloned())
                    .collect::<Result<_, _>>()?
            };
            let mut all_ok = true;
            let mut report = Vec::new();
            for entry in &entries {
                for check in registry.check(entry) {
                    all_ok &= check.is_ok();
                    if !json {
                        match check.clone().into_result() {
                            Ok(()) => println!(
                                "ok       {}  sha256 {}",
                                check.path.display(),
                                check.expected_sha256
                            ),
                            Err(e) => println!("FAILED   {e}"),
                        }
                    }
                    report.push(json!({"model": entry.name, "check": check}));
                }
            }
            if json {
                print_json(&json!({"ok": all_ok, "files": report}));
            } else if all_ok {
                println!("all {} model(s) verified", entries.len());
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ModelsCommand::Import {
            path,
            name,
            licence,
        } => {
            let entry = registry.import(&path, &ImportOptions { name, licence })?;
            if json {
                print_json(&serde_json::to_value(&entry)?);
            } else {
                println!(
                    "imported {} as '{}' (sha256 {})",
                    path.display(),
                    entry.name,
                    entry.files[0].sha256
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Quantize {
            input,
            output,
            kind,
        } => quantize_cmd(input, output, &kind, json),
        ModelsCommand::ExportHf { model, dir } => {
            let path = PathBuf::from(&model);
            let gguf = if path.is_file() {
                path
            } else {
                registry
                    .verify_named(Some(&model), kura::models::Role::Chat)?
                    .primary()
                    .to_path_buf()
            };
            let out = kura::train::export::export_hf(&gguf, &dir)?;
            if json {
                print_json(&json!({
                    "dir": out.dir, "architecture": out.architecture, "tensors": out.tensors,
                    "bytes": out.bytes, "tied_embeddings": out.tied_embeddings,
                }));
            } else {
                println!(
                    "wrote {} ({}, {} tensors, {:.0} MB f32) from {}",
                    out.dir.display(),
                    out.architecture,
                    out.tensors,
                    out.bytes as f64 / 1e6,
                    gguf.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Fetch { names } => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("installer/fetch-models");
            if !script.is_file() {
                bail!(
                    "kura never downloads at run time. On a connected machine, run installer/fetch-models \
                     from the Kura source bundle and copy the models folder here."
                );
            }
            let mut cmd = std::process::Command::new(&script);
            cmd.arg("--models-dir").arg(&paths.models_dir);
            if !names.is_empty() {
                cmd.arg("--only").args(&names);
            }
            let status = cmd
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn quantize_cmd(input: PathBuf, output: PathBuf, kind: &str, json_out: bool) -> Result<ExitCode> {
    let target: QuantType = kind.parse()?;
    let r = kura::llm::quantize_gguf(&input, &output, target)?;
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
