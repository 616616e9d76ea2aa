//! Benchmarks (`kura bench …`): numbers to compare, never pass/fail tests.

pub mod embed;
pub mod generate;
pub mod index;
pub mod ingest;
pub mod train;
pub mod worker;

/// Whether `python` can import `modules` (e.g. `"torch, peft"`): the reference side of
/// a side-by-side benchmark is there.
pub(crate) fn python_can_import(python: &std::path::Path, modules: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes a benchmark's job description as JSON to `dir/file` for its child processes.
pub(crate) fn write_job_file<T: serde::Serialize>(
    dir: &std::path::Path,
    file: &str,
    job: &T,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec(job).expect("a job serialises"))?;
    Ok(path)
}
