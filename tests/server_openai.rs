//! `kura serve` end to end: the real binary, the real models, driven over HTTP by the
//! official `openai` Python client (tests/py/openai_client.py) and by a minimal raw
//! HTTP client here for what the SDK hides (concurrency, disconnects, shutdown).
//!
//! The SDK lives in the venv that `installer/setup` creates (`target/pyenv`); the
//! tests never install anything. Assertions are on tokens and counters, not on
//! wall-clock times.

mod common;

use common::server::Server;

use std::io::Write;
use std::net::Shutdown;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// SmolLM2 keeps these tests fast; the point is the server, not the model's quality.
const CHAT: &str = "smollm2-135m-instruct";
const EMBEDDING: &str = "multilingual-e5-small";

fn pyenv_python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run installer/setup (online) first; it installs the `openai` Python \
         client into target/pyenv for this test",
        py.display()
    );
    py
}

/// Polls `cond` every 10 ms. The 5-minute bound only turns a hang into a failure;
/// nothing here depends on how fast the machine is.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..30_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[test]
fn the_official_openai_client_chats_streams_embeds_and_gets_openai_errors() {
    let python = pyenv_python();
    let server = Server::start(CHAT, &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/openai_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&server.base_url(), CHAT, EMBEDDING])
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {stdout}"));
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());

    // /v1/models lists the loaded chat and embedding models.
    assert_eq!(r["models"], json!([CHAT, EMBEDDING]));

    // Non-streamed chat: an answer about Paris, usage that adds up.
    let chat = &r["chat"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], CHAT);
    assert_eq!(chat["role"], "assistant");
    let content = chat["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content:?}");
    assert!(["stop", "length"].contains(&chat["finish_reason"].as_str().unwrap()));
    let u = &chat["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 10);
    assert!((1..=24).contains(&u["completion_tokens"].as_u64().unwrap()));
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );

    // max_completion_tokens cuts the reply and says so.
    assert_eq!(r["length"]["finish_reason"], "length");
    assert_eq!(r["length"]["completion_tokens"], 5);
    assert!(!r["length"]["content"].as_str().unwrap().is_empty());

    // Streamed: several pieces that concatenate to the same greedy answer.
    let st = &r["stream"];
    assert_eq!(st["objects"], json!(["chat.completion.chunk"]));
    assert_eq!(st["ids"], 1, "every chunk of one answer has the same id");
    assert_eq!(st["roles"], json!(["assistant"]));
    assert!(st["pieces"].as_array().unwrap().len() > 1, "{st}");
    assert_eq!(
        st["text"], chat["content"],
        "streamed and not, greedy: same text"
    );
    assert_eq!(st["finish_reason"], chat["finish_reason"]);
    assert_eq!(st["usage"], chat["usage"]);

    // A stop string ends the reply before it and is not returned.
    let full = r["stop"]["full"].as_str().unwrap();
    let stopped = r["stop"]["stopped"].as_str().unwrap();
    assert!(full.contains('5'), "{full:?}");
    assert_eq!(stopped, &full[..full.find('5').unwrap()]);
    assert_eq!(r["stop"]["finish_reason"], "stop");

    // Embeddings: e5's 384 dimensions, unit vectors, meaning over words.
    let e = &r["embeddings"];
    assert_eq!(e["model"], EMBEDDING);
    assert_eq!(e["dims"], json!([384, 384, 384]));
    for n in e["norms"].as_array().unwrap() {
        assert!((n.as_f64().unwrap() - 1.0).abs() < 1e-3, "norm {n}");
    }
    let (para, unrel) = (
        e["sim_paraphrase"].as_f64().unwrap(),
        e["sim_unrelated"].as_f64().unwrap(),
    );
    assert!(
        para > unrel + 0.05,
        "paraphrase {para} vs unrelated {unrel}"
    );
    let (qa, qu) = (
        e["query_to_answer"].as_f64().unwrap(),
        e["query_to_unrelated"].as_f64().unwrap(),
    );
    assert!(qa > qu + 0.05, "query→answer {qa} vs query→unrelated {qu}");
    assert!(e["float_vs_base64_max_diff"].as_f64().unwrap() < 1e-6);
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() > 3);

    // Errors arrive as the SDK's exception classes with the server's message.
    let errs = &r["errors"];
    let unknown = &errs["unknown_model"];
    assert_eq!(unknown["class"], "NotFoundError", "{unknown}");
    assert_eq!(unknown["code"], "model_not_found");
    assert!(unknown["message"].as_str().unwrap().contains("gpt-4o"));
    assert!(
        unknown["message"].as_str().unwrap().contains(CHAT),
        "names what is loaded"
    );
    for key in ["context_overflow", "context_overflow_streamed"] {
        let e = &errs[key];
        assert_eq!(e["class"], "BadRequestError", "{key}: {e}");
        assert_eq!(e["status"], 400);
        assert_eq!(e["code"], "context_length_exceeded");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("maximum context length is 8192"),
            "{e}"
        );
    }
    assert_eq!(
        errs["chat_model_for_embeddings"]["class"],
        "BadRequestError"
    );
    assert!(errs["chat_model_for_embeddings"]["message"]
        .as_str()
        .unwrap()
        .contains("chat model"));
    assert_eq!(errs["n_2"]["class"], "BadRequestError");
    assert_eq!(errs["n_2"]["param"], "n");

    // Raw HTTP: unknown paths and bad bodies are OpenAI-shaped too.
    let (status, body) = server.get("/v1/nope");
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nope"));
    let (status, body) = server.request(
        "POST",
        "/v1/chat/completions",
        Some(&json!({"messages": 3})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = server.get("/v1/chat/completions");
    assert_eq!(status, 405, "{body}");
    let (status, body) = server.get(&format!("/v1/models/{EMBEDDING}"));
    assert_eq!((status, body["dimensions"].as_u64()), (200, Some(384)));
}

#[test]
fn concurrent_requests_get_exactly_what_each_gets_alone() {
    let server = Arc::new(Server::start(
        CHAT,
        &["--max-concurrent", "2", "--embedding-model", "none"],
    ));
    let prompts = [
        "Write a short poem about the sea.",
        "Explain in a few sentences how a bicycle works.",
    ];
    let body =
        |p: &str| json!({"model": CHAT, "messages": user(p), "max_tokens": 64, "temperature": 0});

    // Alone, one after the other.
    let alone: Vec<(String, String)> = prompts
        .iter()
        .map(|p| server.stream(body(p)).collect())
        .collect();
    for (text, _) in &alone {
        assert!(text.split_whitespace().count() > 10, "{text:?}");
    }
    assert_ne!(alone[0].0, alone[1].0);

    // Together: both streams at once, while health is polled.
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (server, b) = (server.clone(), body(p));
            std::thread::spawn(move || server.stream(b).collect())
        })
        .collect();
    let poller = {
        let (server, done) = (server.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut answers, mut max_running) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                let q = server.queue();
                answers += 1;
                max_running = max_running.max(q["running"].as_u64().unwrap());
                std::thread::sleep(Duration::from_millis(10));
            }
            (answers, max_running)
        })
    };
    let together: Vec<(String, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let (answers, max_running) = poller.join().unwrap();

    assert_eq!(
        together, alone,
        "interleaved generations must not disturb each other"
    );
    assert!(answers > 0, "health answered while generating");
    assert_eq!(max_running, 2, "the two generations ran at the same time");
    let q = server.queue();
    assert_eq!(
        (q["completed"].as_u64(), q["cancelled"].as_u64()),
        (Some(4), Some(0))
    );
}

#[test]
fn a_client_that_disconnects_cancels_its_generation_and_shutdown_is_graceful() {
    // One generation at a time: the next request can only run once the first stops.
    let server = Arc::new(Server::start(CHAT, &["--embedding-model", "none"]));
    const LONG: u64 = 3000;
    let long = json!({
        "model": CHAT, "messages": user("Tell me everything about the history of Europe."),
        "max_tokens": LONG, "temperature": 0, "ignore_eos": true,
    });
    let mut first = server.stream(long.clone());
    assert!(first.next_content().is_some());

    // A second request queues behind it; health answers meanwhile and shows it waiting.
    let second = {
        let server = server.clone();
        std::thread::spawn(move || {
            server.request(
                "POST",
                "/v1/chat/completions",
                Some(&json!({"model": CHAT, "messages": user("Say hello."), "max_tokens": 8, "temperature": 0})),
            )
        })
    };
    wait_until("the second request to queue", || {
        server.queue()["waiting"] == 1
    });
    let q = server.queue();
    assert_eq!(
        (q["running"].as_u64(), q["waiting"].as_u64()),
        (Some(1), Some(1))
    );

    // The first client goes away: its generation stops early and the second one runs.
    first.disconnect();
    let (status, reply) = second.join().unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(!reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    let q = server.queue();
    assert_eq!(q["cancelled"], 1, "{q}");
    assert_eq!(q["completed"], 1, "{q}");
    let cancelled_tokens = q["cancelled_tokens"].as_u64().unwrap();
    assert!(
        cancelled_tokens < LONG,
        "the abandoned generation stopped after {cancelled_tokens} of {LONG} tokens"
    );

    // A client that leaves while still queued does not hold up the server: once the
    // server notices (at the latest when its turn comes and the first write fails),
    // it is dropped, never completed.
    let mut running = server.stream(long.clone());
    assert!(running.next_content().is_some());
    let queued = server.stream(long.clone());
    wait_until("the second stream to queue", || {
        server.queue()["waiting"] == 1
    });
    queued.disconnect();
    running.disconnect();
    wait_until("the server to become idle", || {
        let q = server.queue();
        q["running"] == 0 && q["waiting"] == 0
    });
    let q = server.queue();
    assert_eq!(q["completed"], 1, "{q}");
    let cancelled = q["cancelled"].as_u64().unwrap();
    assert!((2..=3).contains(&cancelled), "{q}");
    assert!(q["cancelled_tokens"].as_u64().unwrap() < LONG, "{q}");

    // Not streamed: a client that gives up waiting for the whole answer cancels it too.
    let mut not_streamed = long.clone();
    not_streamed["stream"] = json!(false);
    let body = not_streamed.to_string();
    let mut conn = server.connect();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_until("the generation to start", || server.queue()["running"] == 1);
    conn.shutdown(Shutdown::Both).unwrap();
    drop(conn);
    wait_until("the server to become idle", || {
        server.queue()["running"] == 0
    });
    let q2 = server.queue();
    assert_eq!(q2["completed"], 1, "{q2}");
    assert_eq!(q2["cancelled"].as_u64(), Some(cancelled + 1), "{q2}");

    // SIGTERM during a generation: the client gets an error event, the server exits 0.
    let mut last = server.stream(long);
    assert!(last.next_content().is_some());
    let killed = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut events = Vec::new();
    while let Some(d) = last.next_data() {
        events.push(d);
    }
    let end = events.last().expect("the stream ends with an event");
    assert!(end.contains("shutting_down"), "last event: {end}");
    let mut server = Arc::try_unwrap(server).ok().expect("no other users");
    let mut status = None;
    wait_until("kura serve to exit", || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "kura serve exited with {status}");
}
