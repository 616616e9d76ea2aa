//! Training inside the server (`kura serve --run-jobs`), end to end on the
//! random-weight fixture model: a job submitted through `POST /api/training/jobs`
//! trains, its adapter is published with its base-vs-adapter report, and a server
//! killed with SIGKILL in the middle of a job resumes it on restart from the last
//! checkpoint, with one log line per step.

mod common;

use common::server::Server;
use common::{kura, OutputText};
use kura::llm::fixtures::write_tiny_qwen2_gguf;
use kura::train::read_metrics;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHAT: &str = "smollm2-135m-instruct";

/// The fixture model and six examples in `dir` (a source root of the server).
fn sources(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 7).unwrap();
    let data = dir.join("faq.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"instruction":"question {i}","output":"the answer is {i}"}}"#))
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    (model, data)
}

fn job_toml(name: &str, model: &Path, data: &Path, steps: u32) -> String {
    format!(
        "name = \"{name}\"\nmodel = \"{}\"\ndataset = \"{}\"\n[lora]\nrank = 2\n\
         [train]\nmax_steps = {steps}\ncheckpoint_every = 3\nlearning_rate = 1e-2\n\
         eval_fraction = 0.34\n",
        model.display(),
        data.display()
    )
}

fn submit(server: &Server, toml: &str) -> i64 {
    let (status, v) = server.request("POST", "/api/training/jobs", Some(&json!({"job": toml})));
    assert_eq!(status, 201, "{v}");
    v["id"]
        .as_i64()
        .or_else(|| v["job"]["id"].as_i64())
        .unwrap_or_else(|| panic!("no job id in {v}"))
}

/// Polls the job until it is `done` (or fails the test on `failed`, or after 5 minutes).
fn wait_done(server: &Server, id: i64) -> Value {
    let started = Instant::now();
    loop {
        let (status, v) = server.get(&format!("/api/training/jobs/{id}"));
        assert_eq!(status, 200, "{v}");
        match v["job"]["state"].as_str().unwrap() {
            "done" => return v,
            "failed" | "cancelled" => panic!("job #{id} ended: {v}"),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job #{id} not done after 5 minutes: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_server_trains_what_the_api_queues_and_publishes_the_adapter_with_its_report() {
    let src = tempfile::tempdir().unwrap();
    let (model, data) = sources(src.path());
    let root = src.path().to_str().unwrap();
    let server = Server::start(CHAT, &["--run-jobs", "--source-root", root]);
    let (_, health) = server.get("/api/health");
    assert_eq!(health["training_runner"], true, "{health}");

    let id = submit(&server, &job_toml("faq", &model, &data, 12));
    let done = wait_done(&server, id);
    assert_eq!(done["job"]["step"], 12, "{done}");
    assert_eq!(done["metrics"].as_array().unwrap().len(), 12, "{done}");

    let adapter = server.data_dir().join("adapters/faq");
    assert!(adapter.join("adapter_model.safetensors").is_file());
    // The report comes with the adapter, and the adapter list shows its verdict.
    let started = Instant::now();
    while !adapter.join("report/report.json").is_file() {
        assert!(started.elapsed() < Duration::from_secs(120), "no report");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, list) = server.get("/api/adapters");
    assert_eq!(status, 200, "{list}");
    let faq = list["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "faq")
        .unwrap_or_else(|| panic!("faq not listed: {list}"));
    assert_eq!(faq["base_model"], "tiny", "{faq}");
    assert_eq!(faq["rank"], 2, "{faq}");
    assert!(faq["report"]["verdict"].is_string(), "{faq}");
    assert_eq!(faq["report"]["examples"], 2, "{faq}");

    // The published adapter serves at once.
    let (status, loaded) = server.request("POST", "/api/adapters/faq/load", Some(&json!({})));
    assert_ne!(status, 500, "{loaded}");
}

#[test]
fn a_server_killed_mid_job_resumes_the_job_on_restart() {
    let src = tempfile::tempdir().unwrap();
    let (model, data) = sources(src.path());
    let root = src.path().to_str().unwrap().to_string();
    let flags = ["--run-jobs", "--source-root", root.as_str()];
    let server = Server::start(CHAT, &flags);
    let id = submit(&server, &job_toml("long", &model, &data, 120));
    let folder = server.data_dir().join("jobs/long");
    let started = Instant::now();
    while !folder.join("checkpoints/step-000006/state.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let data_dir = server.kill();
    let home = data_dir.path().to_str().unwrap().to_string();
    let out = kura(&[
        "--data-dir",
        &home,
        "--json",
        "jobs",
        "show",
        &id.to_string(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let job: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(job["state"], "running", "{job}");
    let step_at_kill = job["step"].as_i64().unwrap();
    assert!(step_at_kill < 120, "{job}");

    let server = Server::start_in(data_dir, CHAT, &flags);
    let done = wait_done(&server, id);
    assert_eq!(done["job"]["step"], 120, "{done}");
    let steps: Vec<u64> = read_metrics(&folder.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, (1..=120).collect::<Vec<_>>());
    assert!(server
        .data_dir()
        .join("adapters/long/adapter_model.safetensors")
        .is_file());
}
