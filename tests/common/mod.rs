//! Helpers shared by the end-to-end tests: running the real `kura` binary and
//! finding the real model files.
#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The folder with the real default models (`KURA_MODELS`, default `<repo>/models`).
/// Panics with instructions when the models were not fetched: end-to-end tests
/// never skip silently.
pub fn real_models_dir() -> PathBuf {
    let dir = std::env::var_os("KURA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert!(
        dir.join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
            .is_file(),
        "the default models are not in {}: run installer/setup (or installer/fetch-models) first",
        dir.display()
    );
    dir
}

/// Output of a finished command, with text accessors.
pub trait OutputText {
    /// stdout as text.
    fn stdout_text(&self) -> String;
    /// stderr as text.
    fn stderr_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs the `kura` binary built for this test run, with a throw-away data folder
/// unless the arguments name one.
pub fn kura(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kura"));
    cmd.args(args)
        .env_remove("KURA_HOME")
        .env_remove("KURA_MODELS");
    if !args.contains(&"--data-dir") {
        cmd.env("KURA_HOME", std::env::temp_dir().join("kura-test-home"));
    }
    cmd.output().expect("the kura binary runs")
}
