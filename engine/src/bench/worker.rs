//! The child side of a side-by-side benchmark.
//!
//! `kura bench generate` and `kura bench train` measure each engine in a child
//! process of its own, so that peak RSS is that engine's alone. Kura's child is the
//! running executable itself, started with [`ENV`] set to `generate:JOB` or
//! `train:JOB`; every front end's `main` calls [`run_if_asked`] first. The engine so
//! owns both ends of the protocol and knows nothing of any command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The variable that makes an executable a benchmark child.
pub const ENV: &str = "KURA_BENCH_WORKER";

/// Which benchmark a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// Prefill and decode ([`super::generate`]).
    Generate,
    /// LoRA training steps ([`super::train`]).
    Train,
}

impl Bench {
    fn tag(self) -> &'static str {
        match self {
            Bench::Generate => "generate",
            Bench::Train => "train",
        }
    }
}

/// A command that runs Kura's side of `job` in `exe` (the running executable).
pub fn command(exe: &Path, bench: Bench, job: &Path) -> Command {
    let mut value = OsString::from(format!("{}:", bench.tag()));
    value.push(job.as_os_str());
    let mut cmd = Command::new(exe);
    cmd.env(ENV, value);
    cmd
}

/// When this process was started as a benchmark child: runs the job, prints its
/// figures as one JSON line on stdout and returns the exit code. `None` otherwise.
pub fn run_if_asked() -> Option<ExitCode> {
    let value = std::env::var_os(ENV)?;
    let value = value.to_string_lossy().into_owned();
    let (tag, job) = value.split_once(':').unwrap_or((&value, ""));
    let job = PathBuf::from(job);
    let result = match tag {
        "generate" => read_job(&job).and_then(|j| {
            super::generate::run_kura(&j)
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()))
        }),
        "train" => read_job(&job).and_then(|j| {
            super::train::run_kura(&j)
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()))
        }),
        other => Err(format!("{ENV}: unknown benchmark `{other}`")),
    };
    Some(match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}

fn read_job<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
