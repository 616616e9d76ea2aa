//! `kura models …` and `kura doctor`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{print_json, ModelsCommand};
use crate::models::{ImportOptions, Registry};
use crate::paths::Paths;

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
        } => super::llm::quantize_cmd(input, output, &kind, json),
        ModelsCommand::ExportHf { model, dir } => {
            let path = PathBuf::from(&model);
            let gguf = if path.is_file() {
                path
            } else {
                registry
                    .verify_named(Some(&model), crate::models::Role::Chat)?
                    .primary()
                    .to_path_buf()
            };
            let out = crate::train::export::export_hf(&gguf, &dir)?;
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

pub(super) fn doctor(paths: &Paths, json: bool) -> Result<ExitCode> {
    let registry = Registry::open(&paths.models_dir)?;
    #[cfg(target_arch = "x86_64")]
    let cpu = json!({
        "avx2": std::arch::is_x86_feature_detected!("avx2"),
        "fma": std::arch::is_x86_feature_detected!("fma"),
        "f16c": std::arch::is_x86_feature_detected!("f16c"),
    });
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = json!({});
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let models: Vec<_> = registry
        .entries()
        .iter()
        .map(|e| {
            let present = e.files.iter().all(|f| registry.file_path(f).is_file());
            json!({"name": e.name, "role": e.role, "present": present})
        })
        .collect();
    let report = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": paths.data_dir,
        "models_dir": paths.models_dir,
        "cpu_features": cpu,
        "threads": threads,
        "cuda_built": cfg!(feature = "cuda"),
        "models": models,
    });
    if json {
        print_json(&report);
    } else {
        println!("kura {}", env!("CARGO_PKG_VERSION"));
        println!("data folder:   {}", paths.data_dir.display());
        println!("models folder: {}", paths.models_dir.display());
        println!("CPU features:  {cpu}  threads: {threads}");
        println!(
            "CUDA support:  {}",
            if cfg!(feature = "cuda") {
                "built in"
            } else {
                "not built (cargo build --features cuda)"
            }
        );
        for m in &report["models"].as_array().cloned().unwrap_or_default() {
            println!(
                "model {:<30} {}",
                m["name"].as_str().unwrap_or(""),
                if m["present"] == true {
                    "present"
                } else {
                    "missing"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
