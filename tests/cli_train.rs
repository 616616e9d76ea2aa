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

    // Held-out questions written on purpose: kept as given, validated the same way.
    let import_with_eval = |eval: &Path| {
        kura(&[
            "--data-dir",
            home_s,
            "dataset",
            "import",
            good.to_str().unwrap(),
            "--name",
            "faq-heldout",
            "--eval",
            eval.to_str().unwrap(),
        ])
    };
    let out = import_with_eval(&bad);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("line 2"),
        "{}",
        out.stderr_text()
    );
    let heldout = dir.path().join("heldout.jsonl");
    std::fs::write(
        &heldout,
        r#"{"instruction": "where is the cat", "output": "on the mat"}"#,
    )
    .unwrap();
    let out = import_with_eval(&heldout);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("8 train + 1 eval"),
        "{}",
        out.stdout_text()
    );
    let stored = std::fs::read_to_string(home.join("datasets/faq-heldout/eval.jsonl")).unwrap();
    assert!(stored.contains("where is the cat"), "{stored}");
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

/// Imports the tiny fixture as model `tiny` and trains job `tiny-faq` on it; returns
/// (data folder, models folder).
fn trained_tiny(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let home = dir.join("home");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let model = dir.join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 7).unwrap();
    let out = kura(&[
        "--data-dir",
        home.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "models",
        "import",
        model.to_str().unwrap(),
        "--name",
        "tiny",
        "--licence",
        "Apache-2.0",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let data = dir.join("data.jsonl");
    std::fs::write(&data, data_lines()).unwrap();
    let job = dir.join("job.toml");
    write_job(&job, Path::new("tiny"), &data);
    let out = kura(&[
        "--data-dir",
        home.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "train",
        "run",
        job.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(home.join("adapters/tiny-faq/adapter_config.json").is_file());
    // The "did it help?" report is written when the job ends, into the job folder and
    // next to the published adapter.
    assert!(
        out.stdout_text().contains("character F1"),
        "{}",
        out.stdout_text()
    );
    (home, models)
}

/// PNG width and height from the IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The end-of-job report and `kura eval adapter`: base vs adapter on held-out
/// examples, the same losses the trainer logged, every reply side by side, a plot.
#[test]
fn the_report_compares_base_and_adapter_on_held_out_examples() {
    let dir = tempfile::tempdir().unwrap();
    let (home, models) = trained_tiny(dir.path());
    let job = home.join("jobs/tiny-faq");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.join("report/report.json")).unwrap())
            .unwrap();
    let eval = kura::train::dataset::read_jsonl(&job.join("data/eval.jsonl")).unwrap();
    assert_eq!(report["examples"], eval.len());
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), eval.len());
    for (row, ex) in answers.iter().zip(&eval) {
        assert_eq!(
            row["reference"],
            ex.messages.last().unwrap().content.as_str()
        );
        assert_eq!(row["question"], ex.messages[0].content.as_str());
    }
    // The evaluator's losses are the trainer's: the base loss it logged before step 1
    // and the adapter's eval loss at the last step.
    let metrics = read_metrics(&job.join("metrics.jsonl")).unwrap();
    let trained_eval = metrics.last().unwrap().eval_loss.unwrap();
    let base_eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.join("base_eval.json")).unwrap())
            .unwrap();
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-3;
    assert!(close(&report["tuned"]["loss"], trained_eval), "{report}");
    assert!(
        close(
            &report["base"]["loss"],
            base_eval["base_eval_loss"].as_f64().unwrap()
        ),
        "{report}"
    );
    assert_eq!(report["train_curve"].as_array().unwrap().len(), 60);
    assert_eq!(report["eval_curve"].as_array().unwrap().len(), 3);
    assert_eq!(png_size(&job.join("report/report.png")), (1400, 640));
    assert!(home.join("adapters/tiny-faq/report/report.json").is_file());

    // On demand, on the examples it was trained on: the adapter must fit them better
    // than the base model, and the verdict says so.
    let train = job.join("data/train.jsonl");
    let out_dir = dir.path().join("on-train");
    let out = kura(&[
        "--data-dir",
        home.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "--json",
        "eval",
        "adapter",
        "tiny-faq",
        "--data",
        train.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let r: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let (b, t) = (
        r["base"]["loss"].as_f64().unwrap(),
        r["tuned"]["loss"].as_f64().unwrap(),
    );
    assert!(t < b * 0.8, "trained examples: base {b} vs adapter {t}");
    assert_eq!(r["examples"], 6);
    assert!(r["summary"].as_str().unwrap().contains("adapter"), "{r}");
    assert!(out_dir.join("report.png").is_file());

    let out = kura(&[
        "--data-dir",
        home.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "eval",
        "adapter",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("no job or adapter `nope`"),
        "{}",
        out.stderr_text()
    );
}

/// `kura serve --adapter`: requests pick the adapter by name; it can be unloaded and
/// loaded again while the server runs, and it answers exactly as `kura generate
/// --adapter` does.
#[test]
fn serve_routes_requests_to_adapters_loaded_live() {
    let dir = tempfile::tempdir().unwrap();
    let (home, models) = trained_tiny(dir.path());
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "--data-dir",
            home.to_str().unwrap(),
            "--models-dir",
            models.to_str().unwrap(),
            "--json",
            "generate",
            "the cat",
            "--model",
            "tiny",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--repeat-penalty",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = kura(&args);
        assert!(out.status.success(), "{}", out.stderr_text());
        let v: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
        v["text"].as_str().unwrap().to_string()
    };
    let base_cli = generate(&[]);
    let tuned_cli = generate(&["--adapter", "tiny-faq"]);

    let data = tempfile::TempDir::new_in(dir.path()).unwrap();
    for entry in std::fs::read_dir(&home).unwrap() {
        let entry = entry.unwrap();
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(data.path())
            .status();
    }
    let server = common::server::Server::start_with_models(
        data,
        &models,
        "tiny",
        &["--embedding-model", "none", "--adapter", "tiny-faq"],
    );
    let (status, list) = server.get("/v1/models");
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"tiny+tiny-faq"), "{list}");
    let chat = |model: &str| {
        server.request(
            "POST",
            "/v1/chat/completions",
            Some(&serde_json::json!({
                "model": model, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "the cat"}],
            })),
        )
    };
    let text = |v: &serde_json::Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, base) = chat("tiny");
    assert_eq!(status, 200, "{base}");
    let (status, tuned) = chat("tiny-faq");
    assert_eq!(status, 200, "{tuned}");
    assert_eq!(text(&base), base_cli);
    assert_eq!(text(&tuned), tuned_cli);
    assert_ne!(text(&base), text(&tuned));
    assert_eq!(tuned["model"], "tiny+tiny-faq");
    let (_, same) = chat("tiny+tiny-faq");
    assert_eq!(text(&same), tuned_cli);

    let (status, listing) = server.get("/api/adapters");
    assert_eq!(status, 200);
    assert_eq!(listing["adapters"][0]["name"], "tiny-faq");
    assert_eq!(listing["adapters"][0]["served"], true);
    assert!(
        listing["adapters"][0]["report"]["verdict"].is_string(),
        "{listing}"
    );

    let (status, _) = server.request("POST", "/api/adapters/tiny-faq/unload", None);
    assert_eq!(status, 200);
    let (status, err) = chat("tiny-faq");
    assert_eq!(status, 404, "{err}");
    let (status, loaded) = server.request("POST", "/api/adapters/tiny-faq/load", None);
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(loaded["model"], "tiny+tiny-faq");
    let (status, again) = chat("tiny-faq");
    assert_eq!(status, 200);
    assert_eq!(text(&again), tuned_cli);
    let (status, _) = server.request("POST", "/api/adapters/nope/load", None);
    assert_eq!(status, 404);
}

/// A trained adapter, given by name, changes what `kura generate` says; given by a
/// folder that is not an adapter, it is refused with a clear message.
#[test]
fn generate_applies_a_trained_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let (home, models) = trained_tiny(dir.path());
    let home_s = home.to_str().unwrap();
    let models_s = models.to_str().unwrap();

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

    // A PEFT folder from elsewhere (here: the job's own) is imported under a new name,
    // checked against its base model, and then behaves like the trained one.
    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "adapters",
        "import",
        home.join("jobs/tiny-faq/adapter").to_str().unwrap(),
        "--name",
        "imported",
        "--model",
        "tiny",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert_eq!(tuned, gen(&["--adapter", "imported"]));
    let out = kura(&["--data-dir", home_s, "--json", "adapters", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["imported", "tiny-faq"]);
    assert_eq!(list[0]["base_model"], "tiny");
}

/// A job that cannot fit in this machine's memory is refused before any weight is
/// loaded, with what to lower — not killed by the kernel at 23:10.
#[test]
fn a_job_too_big_for_memory_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let long = "就業規則に定める手続き。".repeat(800);
    let lines: Vec<String> = (0..64)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("規則{i}")},
                {"role": "assistant", "content": long},
            ]})
            .to_string()
        })
        .collect();
    let data = dir.path().join("long.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"huge\"\nmodel = \"qwen2.5-coder-0.5b-instruct\"\ndataset = \"{}\"\n\
             [train]\nbatch_size = 64\nmax_seq_len = 4096\neval_fraction = 0.0\n",
            data.display()
        ),
    )
    .unwrap();
    let out = kura(&[
        "--data-dir",
        dir.path().join("home").to_str().unwrap(),
        "--models-dir",
        common::real_models_dir().to_str().unwrap(),
        "train",
        "run",
        job.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(err.contains("GiB of memory but"), "{err}");
    assert!(err.contains("lower train.batch_size"), "{err}");
    assert!(err.contains("メモリが不足"), "{err}");
    assert!(!dir.path().join("home/jobs/huge/checkpoints").exists());
}
