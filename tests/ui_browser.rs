//! The web UI in a real browser: the real `kura serve` (real default models, the
//! sample manuals ingested into a temporary data folder) serving `ui/dist`, driven
//! by headless Chromium through playwright-core (`ui/tests/browser.mjs`).
//!
//! The server has an access token, as on a LAN: the UI asks for it, and keeps it
//! in a cookie. A user asks a Japanese question and sees the answer stream in with a citation
//! chip, opens the source panel with the cited passage highlighted, gives 👍,
//! switches the UI to English (kept after a reload), adds a document on the
//! Documents screen and watches it ingest, submits a tiny training job (fixture
//! model) on the Training screen and watches it train to the end with its loss
//! curve, looks at the models, and asks, in a
//! second conversation, what the manuals do not say (the refusal with the closest
//! sources). Screenshots of
//! every screen in Japanese and English go to `target/ui-screenshots/` (or
//! `KURA_SCREENSHOTS`); the committed ones in `docs/screenshots/` come from there.
//!
//! Needs what `installer/setup` provides: Debian's `chromium`, Node.js with
//! `ui/node_modules` (`npm ci`) and the built UI (`npm run build`). When any of them
//! is missing the test fails and says what to run — it never skips.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;
use common::{kura, real_models_dir, OutputText};

/// The training runner, stopped when the test ends.
struct Runner(std::process::Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn prerequisites() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("KURA_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "no Chromium at {}: install Debian's browser (`apt-get install chromium`, which \
         installer/setup does) or point KURA_CHROMIUM at one",
        chromium.display()
    );
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok,
        "Node.js is not installed: run installer/setup (it needs Node.js >= 20.19 for the UI build)"
    );
    let ui = repo().join("ui");
    assert!(
        ui.join("node_modules/playwright-core/package.json").is_file(),
        "ui/node_modules is missing: run installer/setup (or `cd ui && npm ci`) on a connected machine"
    );
    let dist = ui.join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "the web UI is not built (no ui/dist/index.html): run installer/setup \
         (or `cd ui && npm ci && npm run build`)"
    );
    (chromium, dist)
}

#[test]
fn the_web_ui_answers_with_citations_switches_language_and_ingests() {
    let (chromium, dist) = prerequisites();
    let models = real_models_dir();
    let data = tempfile::tempdir().unwrap();
    let manuals = repo().join("assets/manuals");
    let out = kura(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "--json",
        "ingest",
        manuals.to_str().unwrap(),
        "--collection",
        "manuals",
    ]);
    assert!(out.status.success(), "ingest failed: {}", out.stderr_text());

    // A document the test adds through the Documents screen.
    let inbox = data.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let new_doc = inbox.join("来客対応手順.md");
    std::fs::write(
        &new_doc,
        "# 来客対応手順\n\n来客は受付で入館証を受け取り、退館時に返却する。\n\n\
         ## 会議室\n\n来客用の会議室は前日までに総務課へ予約する。\n",
    )
    .unwrap();

    // A tiny training job (random-weight fixture model, six steps) for the Training
    // screen, and the runner that trains what the UI queues.
    let train_model = data.path().join("tiny.gguf");
    kura::llm::fixtures::write_tiny_qwen2_gguf(&train_model, 7).unwrap();
    let train_data = data.path().join("faq.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"instruction":"質問 {i}","output":"答えは {i} です"}}"#))
        .collect();
    std::fs::write(&train_data, lines.join("\n")).unwrap();
    let train_job = format!(
        "name = \"ui-tiny\"\nmodel = \"{}\"\ndataset = \"{}\"\n[lora]\nrank = 2\n\
         [train]\nmax_steps = 6\ncheckpoint_every = 3\nlearning_rate = 1e-2\neval_fraction = 0.34\n",
        train_model.display(),
        train_data.display()
    );
    let data_dir = data.path().to_path_buf();

    // With an access token, as on a LAN: the browser must show it (cookie) on every call.
    let token = kura_server::auth::random_token();
    // The documents, the JSONL and the fixture model the UI names all lie in the
    // data folder: the server's source root here.
    let root = data_dir.to_str().unwrap().to_owned();
    let server = Server::start_in(
        data,
        "qwen2.5-coder-1.5b-instruct",
        &[
            "--ui-dir",
            dist.to_str().unwrap(),
            "--token",
            &token,
            "--source-root",
            &root,
        ],
    );
    let url = format!("http://{}", server.addr);
    let runner = Runner(
        Command::new(env!("CARGO_BIN_EXE_kura"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["jobs", "run", "--poll", "1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kura jobs run starts"),
    );
    let shots = std::env::var_os("KURA_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/ui-screenshots"));
    let status = Command::new("node")
        .arg(repo().join("ui/tests/browser.mjs"))
        .current_dir(repo().join("ui"))
        .env("KURA_URL", &url)
        .env("KURA_CHROMIUM", &chromium)
        .env("KURA_SCREENSHOTS", &shots)
        .env("KURA_NEW_DOC", &new_doc)
        .env("KURA_TOKEN", &token)
        .env("KURA_TRAIN_JOB", &train_job)
        .status()
        .expect("node runs");
    drop(runner);
    assert!(
        status.success(),
        "the browser test failed (see its output above; screenshots, including failure.png, in {})",
        shots.display()
    );
    for name in [
        "chat-answer-ja",
        "chat-source-ja",
        "chat-source-en",
        "documents-en",
        "documents-ja",
        "documents-ingest-en",
        "models-en",
        "models-ja",
        "training-en",
        "training-ja",
        "chat-refusal-ja",
        "chat-refusal-en",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "screenshot {name}.png was not written"
        );
    }
}
