//! The training-job queue through the real binary on the tiny fixture model:
//! submit (now and at a later time), run the queue, list/show/logs, cancel, resume,
//! and a runner killed with SIGKILL whose job the next runner finishes.

mod common;

use common::{kura, OutputText};
use kura::llm::fixtures::write_tiny_qwen2_gguf;
use kura::train::read_metrics;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn setup(dir: &Path, steps: u32) -> (String, std::path::PathBuf) {
    let model = dir.join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 7).unwrap();
    let data = dir.join("data.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"instruction":"question {i}","output":"the answer is {i}"}}"#))
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let job = |name: &str| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nmodel = \"{}\"\ndataset = \"{}\"\n[lora]\nrank = 2\n\
                 [train]\nmax_steps = {steps}\ncheckpoint_every = 3\nlearning_rate = 1e-2\n",
                model.display(),
                data.display()
            ),
        )
        .unwrap();
        path
    };
    job("a");
    job("b");
    (
        dir.join("home").to_string_lossy().to_string(),
        dir.to_path_buf(),
    )
}

fn jobs_json(home: &str) -> serde_json::Value {
    let out = kura(&["--data-dir", home, "--json", "jobs", "list"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

fn state_of(list: &serde_json::Value, name: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn queue_runs_due_jobs_and_honours_start_times_cancel_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (home, d) = setup(dir.path(), 6);
    let a = d.join("a.toml");
    let b = d.join("b.toml");
    let out = kura(&["--data-dir", &home, "train", "submit", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("queued job #1 `a`"),
        "{}",
        out.stdout_text()
    );
    // Two hours from now, as a local time of day: always in the future.
    let later = jiff::Zoned::now()
        .checked_add(jiff::Span::new().hours(2))
        .unwrap()
        .strftime("%H:%M")
        .to_string();
    let out = kura(&[
        "--data-dir",
        &home,
        "train",
        "submit",
        b.to_str().unwrap(),
        "--at",
        &later,
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let bad = kura(&[
        "--data-dir",
        &home,
        "train",
        "submit",
        b.to_str().unwrap(),
        "--at",
        "late",
    ]);
    assert!(bad
        .stderr_text()
        .contains("expected a local time of day as HH:MM"));

    let out = kura(&["--data-dir", &home, "jobs", "run", "--once"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("#1 step     6/6"),
        "{}",
        out.stdout_text()
    );
    let list = jobs_json(&home);
    assert_eq!(state_of(&list, "a"), "done");
    assert_eq!(state_of(&list, "b"), "queued", "b waits for its start time");
    let a_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "a")
        .unwrap();
    assert_eq!(a_row["step"], 6);
    assert!(a_row["loss"].as_f64().is_some());

    let out = kura(&["--data-dir", &home, "jobs", "logs", "1"]);
    assert_eq!(
        out.stdout_text().lines().count(),
        6,
        "{}",
        out.stdout_text()
    );
    let out = kura(&["--data-dir", &home, "jobs", "show", "1"]);
    assert!(
        out.stdout_text().contains("job #1 `a`: done"),
        "{}",
        out.stdout_text()
    );
    assert!(Path::new(&home)
        .join("adapters/a/adapter_config.json")
        .is_file());

    let out = kura(&["--data-dir", &home, "jobs", "cancel", "2"]);
    assert!(
        out.stdout_text().contains("job #2 cancelled"),
        "{}",
        out.stdout_text()
    );
    let out = kura(&["--data-dir", &home, "jobs", "cancel", "1"]);
    assert!(!out.status.success());
    assert!(out.stderr_text().contains("job #1 is done: cannot cancel"));
    let out = kura(&["--data-dir", &home, "jobs", "resume", "2"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let out = kura(&["--data-dir", &home, "jobs", "run", "--once"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert_eq!(state_of(&jobs_json(&home), "b"), "done");
    let out = kura(&["--data-dir", &home, "jobs", "show", "7"]);
    assert!(out.stderr_text().contains("no training job #7"));
}

/// A runner killed with SIGKILL leaves its job `running`; the next runner sees the
/// runner is gone, resumes the job from its last checkpoint and finishes it, with
/// one log line per step.
#[test]
fn a_killed_runner_s_job_is_resumed_by_the_next_runner() {
    let dir = tempfile::tempdir().unwrap();
    let (home, d) = setup(dir.path(), 60);
    let a = d.join("a.toml");
    let out = kura(&["--data-dir", &home, "train", "submit", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let folder = Path::new(&home).join("jobs/a");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["--data-dir", &home, "jobs", "run", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !folder.join("checkpoints/step-000006/state.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the runner ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(state_of(&jobs_json(&home), "a"), "running");

    let out = kura(&["--data-dir", &home, "jobs", "run", "--once"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains("job #1 was interrupted"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(state_of(&jobs_json(&home), "a"), "done");
    let steps: Vec<u64> = read_metrics(&folder.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, (1..=60).collect::<Vec<_>>());
}
