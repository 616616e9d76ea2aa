//! `POST /api/ask` and the library routes of `kura serve`, end to end: the real binary,
//! the real default models and the sample manuals, over raw HTTP, reading the
//! server-sent events one by one as the web UI does.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::server::{EventStream, Server};
use common::{kura, real_models_dir, OutputText};
use serde_json::{json, Value};

const CHAT: &str = "qwen2.5-coder-1.5b-instruct";

/// A server over a data folder holding the sample manuals as collection `manuals`.
fn server_with_manuals() -> Server {
    let data = tempfile::tempdir().unwrap();
    let manuals = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/manuals");
    let models = real_models_dir();
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
    assert!(out.status.success(), "{}", out.stderr_text());
    Server::start_in(data, CHAT, &[])
}

fn ask(server: &Server, body: Value) -> EventStream {
    let (status, r) = server.send("POST", "/api/ask", Some(&body));
    assert_eq!(status, 200, "POST /api/ask {body}");
    EventStream { r }
}

/// Every event of one answer, in order.
fn events(mut stream: EventStream) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    while let Some(e) = stream.next_event() {
        let done = e.0 == "done" || e.0 == "error";
        all.push(e);
        if done {
            break;
        }
    }
    all
}

fn the<'a>(events: &'a [(String, Value)], name: &str) -> &'a Value {
    &events
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}` event in {events:?}"))
        .1
}

fn squeeze(s: &str) -> String {
    kura::rag::overlap::squeeze(s)
}

#[test]
fn the_ui_api_streams_a_cited_answer_shows_the_page_and_refuses_what_the_manuals_lack() {
    let server = server_with_manuals();

    // The collections screen.
    let (status, cols) = server.get("/api/collections");
    assert_eq!(status, 200, "{cols}");
    let manuals = &cols["collections"][0];
    assert_eq!(manuals["name"], "manuals", "{cols}");
    assert!(manuals["documents"].as_i64().unwrap() >= 5, "{cols}");
    assert!(manuals["chunks"].as_i64().unwrap() > 0, "{cols}");

    // A Japanese question (questions.jsonl ja-002: 3営業日前, 就業規則.pdf page 6).
    let evs = events(ask(
        &server,
        json!({"question": "有給休暇は何日前までに申請しなければなりませんか？",
               "collections": ["manuals"], "max_tokens": 96}),
    ));
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"sources"), "{names:?}");
    assert_eq!(
        &names[names.len() - 2..],
        &["citations", "done"],
        "{names:?}"
    );
    let tokens: String = evs
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, v)| v["text"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().filter(|n| **n == "token").count() > 3,
        "the answer is streamed piece by piece: {names:?}"
    );
    assert!(!tokens.trim().is_empty());
    assert_eq!(the(&evs, "sources")["relevant"], true);
    let cited = the(&evs, "citations");
    assert!(
        squeeze(cited["answer"].as_str().unwrap()).contains("3営業日前"),
        "{cited}"
    );
    let citation = cited["citations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["doc"].as_str().unwrap().ends_with("就業規則.pdf") && c["page"] == 6)
        .unwrap_or_else(|| panic!("must cite 就業規則.pdf p.6: {cited}"))
        .clone();
    assert_eq!(the(&evs, "done")["grounded"], true, "{evs:?}");
    assert_eq!(the(&evs, "done")["refused"], false, "{evs:?}");

    // The source panel: the page text, with the cited chunk highlighted, holds the quote.
    let (status, page) = server.get(&format!(
        "/api/chunks/{}/page",
        citation["chunk_id"].as_i64().unwrap()
    ));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["page"], 6);
    let text: Vec<char> = page["text"].as_str().unwrap().chars().collect();
    let (start, end) = (
        page["highlight"]["start"].as_u64().unwrap() as usize,
        page["highlight"]["end"].as_u64().unwrap() as usize,
    );
    assert!(start < end && end <= text.len(), "{page}");
    let highlighted: String = text[start..end].iter().collect();
    assert!(
        squeeze(&highlighted).contains(&squeeze(citation["quote"].as_str().unwrap())),
        "the highlighted span holds the quote {}: {highlighted}",
        citation["quote"]
    );

    // A question no manual answers (un-002): the refusal with the closest sources,
    // whether gate 1 stops it before the model or the model's answer is refused.
    let evs = events(ask(
        &server,
        json!({"question": "今日の社員食堂の日替わりメニューは何ですか？"}),
    ));
    assert!(
        !the(&evs, "sources")["sources"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the closest sources are shown"
    );
    let refusal = the(&evs, "citations");
    assert_eq!(
        refusal["answer"], "資料に記載が見つかりませんでした。",
        "{evs:?}"
    );
    assert!(
        refusal["citations"].as_array().unwrap().is_empty(),
        "{evs:?}"
    );
    assert_eq!(the(&evs, "done")["refused"], true);
    assert_eq!(the(&evs, "done")["grounded"], false);

    // Mistakes get a clear JSON error, not a stream.
    let (status, err) = server.request(
        "POST",
        "/api/ask",
        Some(&json!({"question": "有給休暇は?", "collections": ["存在しない"]})),
    );
    assert_eq!(status, 404, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("存在しない"),
        "{err}"
    );
    let (status, err) = server.request("POST", "/api/ask", Some(&json!({"question": "  "})));
    assert_eq!(status, 400, "{err}");
    let (status, _) = server.get("/api/chunks/999999/page");
    assert_eq!(status, 404);

    // A client that leaves mid-answer cancels it: the slot is freed and counted.
    let mut stream = ask(
        &server,
        json!({"question": "有給休暇は何日前までに申請しなければなりませんか？", "max_tokens": 256}),
    );
    loop {
        let (name, _) = stream.next_event().expect("the answer starts");
        if name == "token" {
            break;
        }
        assert_ne!(name, "done", "the answer must still be running");
    }
    stream.disconnect();
    for _ in 0..3000 {
        let q = server.queue();
        if q["cancelled"] == 1 && q["running"] == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the abandoned answer was not cancelled: {}", server.queue());
}
