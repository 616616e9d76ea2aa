//! `kura doctor`: where Kura keeps its data, the CPU features it uses, and whether
//! the model files are present.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::term::print_json;
use kura::models::Registry;
use kura::paths::Paths;

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
