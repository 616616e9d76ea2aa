//! `kura dataset` and `kura train` through the real binary, on the tiny random-weight
//! fixture model: import validation, a job killed with SIGKILL and resumed (its loss
//! curve must match an uninterrupted run), and generating with the trained adapter.

mod common;

use common::{kura, OutputText};
use kura::llm::fixtures::write_tiny_qwen2_gguf;
use kura::train::read_metrics;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn data_lines() -> String {
    let pairs = [
        ("the cat", "is on the mat"),
        ("where is the pen", "in the drawer"),
        ("is it raining", "not in the south"),
        ("colour of snow", "white as ever"),
        ("who wrote it", "the winner and the team"),
        ("what is on", "the screen is on"),
        ("and the rest", "in the store"),
        ("tell me", "it is there"),
    ];
    pairs
        .iter()
        .map(|(q, a)| {
            format!(r#"{{"messages":[{{"role":"user","content":"{q}"}},{{"role":"assistant","content":"{a}"}}]}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dataset_import_validates_and_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home_s = home.to_str().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"instruction\": \"q\", \"output\": 5}}\n",
            r#"{"instruction": "q", "output": "a"}"#
        ),
    )
    .unwrap();
    let out = kura(&[
        "--data-dir",
        home_s,
        "dataset",
        "import",
        bad.to_str().unwrap(),
        "--name",
        "faq",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text()
            .contains("line 2: `output`: expected a string, found a number"),
        "{}",
        out.stderr_text()
    );

    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, data_lines()).unwrap();
    let out = kura(&[
        "--data-dir",
        home_s,
        "dataset",
        "import",
        good.to_str().unwrap(),
        "--name",
        "faq",
        "--eval-fraction",
        "0.25",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("6 train + 2 eval"),
        "{}",
        out.stdout_text()
    );
    let out = kura(&["--data-dir", home_s, "--json", "dataset", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(list[0]["name"], "faq");
    assert_eq!(list[0]["eval"], 2);
}

fn write_job(path: &Path, model: &Path, data: &Path) {
    std::fs::write(
        path,
        format!(
            r#"
name = "tiny-faq"
model = "{}"
dataset = "{}"
[lora]
rank = 4
alpha = 8
dropout = 0.1
targets = ["q", "k", "v", "o", "gate", "up", "down"]
[train]
seed = 3
max_steps = 60
batch_size = 1
grad_accum = 2
learning_rate = 5e-3
warmup_steps = 5
checkpoint_every = 4
eval_every = 20
eval_fraction = 0.25
"#,
            model.display(),
            data.display()
        ),
    )
    .unwrap();
}

/// `kill -9` in the middle of a job, then `kura train resume`: the loss of every step
/// equals that of a job that was never interrupted.
#[test]
fn a_killed_job_resumes_with_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home_s = home.to_str().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 7).unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, data_lines()).unwrap();
    let job = dir.path().join("job.toml");
    write_job(&job, &model, &data);

    let whole = dir.path().join("whole");
    let out = kura(&[
        "--data-dir",
        home_s,
        "train",
        "run",
        job.to_str().unwrap(),
        "--output",
        whole.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("step    60/60"),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stdout_text().contains("eval loss: base"),
        "{}",
        out.stdout_text()
    );
    let reference = read_metrics(&whole.join("metrics.jsonl")).unwrap();
    assert_eq!(reference.len(), 60);

    let cut = dir.path().join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args([
            "--data-dir",
            home_s,
            "train",
            "run",
            job.to_str().unwrap(),
            "--output",
        ])
        .arg(&cut)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !cut.join("checkpoints/step-000008/state.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = read_metrics(&cut.join("metrics.jsonl")).unwrap();
    assert!(
        before.len() < 60,
        "killed part-way, {} steps logged",
        before.len()
    );
    assert!(!cut.join("adapter").exists());

    let out = kura(&[
        "--data-dir",
        home_s,
        "train",
        "resume",
        cut.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains("resuming at step"),
        "{}",
        out.stderr_text()
    );
    let resumed = read_metrics(&cut.join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    for (a, b) in reference.iter().zip(&resumed) {
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "step {}: uninterrupted {} vs resumed {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    assert!(cut.join("adapter/adapter_model.safetensors").is_file());
}

/// A trained adapter, given by name, changes what `kura generate` says; given by a
/// folder that is not an adapter, it is refused with a clear message.
#[test]
fn generate_applies_a_trained_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home_s = home.to_str().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let models_s = models.to_str().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 7).unwrap();
    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "models",
        "import",
        model.to_str().unwrap(),
        "--name",
        "tiny",
        "--licence",
        "Apache-2.0",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, data_lines()).unwrap();
    let job = dir.path().join("job.toml");
    write_job(&job, Path::new("tiny"), &data);
    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "train",
        "run",
        job.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(home.join("adapters/tiny-faq/adapter_config.json").is_file());

    let gen = |extra: &[&str]| {
        let mut args = vec![
            "--data-dir",
            home_s,
            "--models-dir",
            models_s,
            "--json",
            "generate",
            "the cat",
            "--model",
            "tiny",
            "--max-tokens",
            "8",
            "--repeat-penalty",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = kura(&args);
        assert!(out.status.success(), "{}", out.stderr_text());
        let v: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
        v["text"].as_str().unwrap().to_string()
    };
    let base = gen(&[]);
    let tuned = gen(&["--adapter", "tiny-faq"]);
    assert_ne!(base, tuned, "the adapter changes the reply");
    assert_eq!(
        tuned,
        gen(&[
            "--adapter",
            home.join("adapters/tiny-faq").to_str().unwrap()
        ])
    );

    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "generate",
        "x",
        "--model",
        "tiny",
        "--adapter",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("no adapter `nope`"),
        "{}",
        out.stderr_text()
    );
}
