//! The documents, models and feedback API of `kura serve` (what the web UI's
//! Documents and Models screens use), end to end: the real binary with the real
//! embedding model, real files ingested from a path on the server, the progress
//! stream, re-index, delete, and the index checked afterwards with the CLI.
//!
//! No answer is generated here (the small chat model is loaded only because a
//! server needs one), so the test takes seconds of model time.

mod common;

use std::path::Path;

use common::server::{EventStream, Server};
use common::{kura, real_models_dir, OutputText};
use serde_json::{json, Value};

const CHAT: &str = "smollm2-135m-instruct";

/// Every event of an ingest job's stream, up to `done` or `error`.
fn job_events(server: &Server, id: &str) -> Vec<(String, Value)> {
    let (status, r) = server.send("GET", &format!("/api/ingest/{id}/events"), None);
    assert_eq!(status, 200);
    let mut stream = EventStream { r };
    let mut out = Vec::new();
    while let Some((name, data)) = stream.next_event() {
        let last = name == "done" || name == "error";
        out.push((name, data));
        if last {
            break;
        }
    }
    out
}

fn start_job(server: &Server, path: &str, body: Value) -> String {
    let (status, v) = server.request("POST", path, Some(&body));
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn summary(events: &[(String, Value)]) -> &Value {
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "done", "the job did not finish: {events:?}");
    &data["summary"]
}

fn documents(server: &Server, collection: &str) -> Vec<Value> {
    let (status, v) = server.get(&format!("/api/collections/{collection}/documents"));
    assert_eq!(status, 200, "{v}");
    v["documents"].as_array().unwrap().clone()
}

fn cli(data: &Path, args: &[&str]) -> Value {
    let models = real_models_dir();
    let mut all = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "--json",
    ];
    all.extend_from_slice(args);
    let out = kura(&all);
    assert!(out.status.success(), "kura {args:?}: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

#[test]
fn documents_are_ingested_listed_reindexed_and_deleted_through_the_api() {
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_path_buf();
    let inbox = tempfile::tempdir().unwrap();
    let badge = inbox.path().join("入館証.md");
    std::fs::write(
        &badge,
        "# 入館証の扱い\n\n来客は受付で青い入館証を受け取り、退館時に返却する。\n",
    )
    .unwrap();
    let rooms = inbox.path().join("会議室予約.txt");
    std::fs::write(
        &rooms,
        "会議室は前日までに総務課へ予約する。大会議室は役員会議を優先する。\n",
    )
    .unwrap();
    let broken = inbox.path().join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.7\nthis is not really a PDF\n").unwrap();

    let mut server = Server::start_in(
        data,
        CHAT,
        &["--source-root", inbox.path().to_str().unwrap()],
    );

    // Models: from models.toml, with hashes and licences.
    let (status, m) = server.get("/api/models");
    assert_eq!(status, 200, "{m}");
    let models = m["models"].as_array().unwrap();
    let q15 = models
        .iter()
        .find(|x| x["name"] == "qwen2.5-coder-1.5b-instruct")
        .expect("the default chat model is listed");
    assert_eq!(
        q15["files"][0]["sha256"],
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    );
    assert_eq!(q15["present"], true);
    assert_eq!(q15["role"], "chat");
    assert!(q15["licence"].as_str().unwrap().contains("Apache-2.0"));
    let small = models.iter().find(|x| x["name"] == CHAT).unwrap();
    assert_eq!(small["loaded"], true);
    assert_eq!(q15["loaded"], false);

    // Bad requests name the problem.
    let (status, v) = server.request(
        "POST",
        "/api/ingest",
        Some(&json!({"collection": "inbox", "paths": ["relative/dir"]})),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("relative/dir"));
    // Outside the source root: refused without saying whether it exists.
    let (status, v) = server.request(
        "POST",
        "/api/ingest",
        Some(&json!({"collection": "inbox", "paths": ["/no/such/folder"]})),
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "outside_source_roots", "{v}");
    // Inside it, a missing file is named as missing.
    let missing = inbox.path().join("ない.md");
    let (status, v) = server.request(
        "POST",
        "/api/ingest",
        Some(&json!({"collection": "inbox", "paths": [missing]})),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    let (status, _) = server.request(
        "POST",
        "/api/ingest",
        Some(&json!({"collection": " ", "paths": [inbox.path()]})),
    );
    assert_eq!(status, 400);

    // Ingest a folder: the stream lists the files, reports each, then the summary.
    let id = start_job(
        &server,
        "/api/ingest",
        json!({"collection": "inbox", "paths": [inbox.path()]}),
    );
    let events = job_events(&server, &id);
    assert_eq!(events[0].0, "start");
    assert_eq!(
        events[0].1["files"].as_array().unwrap().len(),
        3,
        "{events:?}"
    );
    let outcomes: Vec<(&str, &str)> = events
        .iter()
        .filter(|(n, _)| n == "file")
        .map(|(_, d)| {
            let path = d["path"].as_str().unwrap();
            (
                Path::new(path).file_name().unwrap().to_str().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(outcomes.contains(&("入館証.md", "added")), "{outcomes:?}");
    assert!(
        outcomes.contains(&("会議室予約.txt", "added")),
        "{outcomes:?}"
    );
    let s = summary(&events);
    assert_eq!(s["added"], 2, "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 1, "{s}");
    assert!(s["failed"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("broken.pdf"));

    // A late client gets the whole stream again.
    let replay = job_events(&server, &id);
    assert_eq!(replay.len(), events.len());
    assert_eq!(replay[0].0, "start");

    // The job is listed, and its state can be polled.
    let (_, jobs) = server.get("/api/ingest");
    assert_eq!(jobs["jobs"][0]["id"], id.as_str());
    let (_, job) = server.get(&format!("/api/ingest/{id}"));
    assert_eq!(job["state"], "done");
    assert_eq!(job["summary"]["added"], 2);

    // Collections and documents show what happened, with the failure's reason.
    let (_, c) = server.get("/api/collections");
    let inbox_c = c["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inbox")
        .expect("the collection exists")
        .clone();
    assert_eq!(inbox_c["failed"], 1, "{inbox_c}");
    let docs = documents(&server, "inbox");
    assert_eq!(docs.len(), 3, "{docs:?}");
    let by_name = |name: &str| {
        docs.iter()
            .find(|d| d["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} listed: {docs:?}"))
            .clone()
    };
    let badge_doc = by_name("入館証.md");
    assert_eq!(badge_doc["status"], "indexed");
    assert!(badge_doc["pages"].as_i64().unwrap() >= 1);
    let broken_doc = by_name("broken.pdf");
    assert_eq!(broken_doc["status"], "failed");
    assert!(!broken_doc["error"].as_str().unwrap_or("").is_empty());
    let (status, _) = server.get("/api/collections/nope/documents");
    assert_eq!(status, 404);

    // Delete a document: gone from the list; a second delete is a 404.
    let doc_id = badge_doc["id"].as_i64().unwrap();
    let (status, v) = server.request("DELETE", &format!("/api/documents/{doc_id}"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(documents(&server, "inbox").len(), 2);
    let (status, _) = server.request("DELETE", &format!("/api/documents/{doc_id}"), None);
    assert_eq!(status, 404);

    // Re-index picks up a changed file and retries the failed one.
    std::fs::write(
        &rooms,
        "会議室は前日までに総務課へ予約する。予約の取消は当日9時までに連絡する。\n",
    )
    .unwrap();
    let id = start_job(&server, "/api/collections/inbox/reindex", json!({}));
    let events = job_events(&server, &id);
    let s = summary(&events);
    assert_eq!(s["updated"], 1, "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 1, "{s}");

    // Feedback is stored and listed, newest first.
    let (status, v) = server.request(
        "POST",
        "/api/feedback",
        Some(&json!({"rating": "down", "question": "会議室の予約は？", "answer": "前日まで [1]",
                     "collections": ["inbox"], "citations": [{"n": 1, "doc": "会議室予約.txt", "page": 1}]})),
    );
    assert_eq!(status, 201, "{v}");
    let (status, _) = server.request(
        "POST",
        "/api/feedback",
        Some(&json!({"rating": "meh", "question": "q", "answer": "a"})),
    );
    assert_eq!(status, 400);
    let (_, f) = server.get("/api/feedback");
    assert_eq!(f["feedback"][0]["rating"], "down");
    assert_eq!(f["feedback"][0]["question"], "会議室の予約は？");

    // After the server stops, the catalog and both indexes agree (the server kept
    // them in step), the deleted document is not found, and the changed text is.
    let _ = server.child.kill();
    let _ = server.child.wait();
    // `check` first: it does not sync, so it sees the index as the server left it.
    let check = cli(&data_path, &["check"]);
    assert_eq!(check["report"]["consistent"], true, "{check}");
    let hits = cli(
        &data_path,
        &[
            "search",
            "青い入館証",
            "--collection",
            "inbox",
            "--mode",
            "bm25",
        ],
    );
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .all(|h| !h["doc"].as_str().unwrap().ends_with("入館証.md")),
        "the deleted document is still searchable: {hits}"
    );
    let hits = cli(
        &data_path,
        &[
            "search",
            "予約の取消",
            "--collection",
            "inbox",
            "--mode",
            "bm25",
        ],
    );
    assert!(
        hits[0]["text"].as_str().unwrap().contains("当日9時"),
        "the re-indexed text is searchable: {hits}"
    );
}
