//! `kura serve` against a hostile but fair client: files outside the source roots,
//! requests from other web sites, a foreign `Host`, folder loops, a client that
//! leaves during a long prefill, an oversized sheet. The real binary, real models,
//! real files, raw HTTP.

mod common;

use common::server::Server;
use common::{kura, OutputText};

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHAT: &str = "smollm2-135m-instruct";

/// Sends `head` (request line and headers, without the final blank line) and `body`
/// as they are; returns the status and the body.
fn raw(server: &Server, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Every event of an ingest job, up to `done` or `error`.
fn job_events(server: &Server, id: &str) -> Vec<(String, Value)> {
    let (status, r) = server.send("GET", &format!("/api/ingest/{id}/events"), None);
    assert_eq!(status, 200);
    let mut events = common::server::EventStream { r };
    let mut out = Vec::new();
    while let Some((name, data)) = events.next_event() {
        let end = name == "done" || name == "error";
        out.push((name, data));
        if end {
            break;
        }
    }
    out
}

fn summary(events: &[(String, Value)]) -> Value {
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "done", "{events:?}");
    data["summary"].clone()
}

#[test]
fn the_api_reads_only_inside_the_source_roots_and_shows_no_page_from_outside() {
    let data = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let docs = base.path().join("docs");
    let private = base.path().join("private");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(
        docs.join("出張規程.md"),
        "# 出張規程\n\n出張の精算は帰着後5営業日以内に行う。\n",
    )
    .unwrap();
    std::fs::write(private.join("給与一覧.txt"), "山田 月給 412,000円\n").unwrap();
    std::os::unix::fs::symlink(&private, docs.join("近道")).unwrap();
    let server = Server::start_in(data, CHAT, &["--source-root", docs.to_str().unwrap()]);

    // Outside the roots: refused by name, and the same way whether the file exists.
    for path in ["/etc/hostname", "/etc/no-such-file-kura", "/root/.ssh"] {
        let (status, r) = server.request(
            "POST",
            "/api/ingest",
            Some(&json!({"collection": "x", "paths": [path]})),
        );
        assert_eq!(status, 403, "{path}: {r}");
        assert_eq!(r["error"]["code"], "outside_source_roots", "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(!msg.contains("does not exist"), "{msg}");
    }
    // `..` out of a root and a link inside a root that leads out are refused too.
    let escape = format!("{}/../private/給与一覧.txt", docs.display());
    let linked = format!("{}/近道/給与一覧.txt", docs.display());
    for path in [&escape, &linked] {
        let (status, r) = server.request(
            "POST",
            "/api/ingest",
            Some(&json!({"collection": "x", "paths": [path]})),
        );
        assert_eq!(status, 403, "{path}: {r}");
    }

    // Inside: ingested; the link out of the root is reported and not followed.
    let (status, r) = server.request(
        "POST",
        "/api/ingest",
        Some(&json!({"collection": "規程", "paths": [docs.to_str().unwrap()]})),
    );
    assert_eq!(status, 202, "{r}");
    let events = job_events(&server, r["id"].as_str().unwrap());
    let s = summary(&events);
    assert_eq!(s["added"], 1, "{s}");
    let failed = s["failed"].as_array().unwrap();
    assert!(
        failed
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("近道")
                && f["reason"]
                    .as_str()
                    .unwrap()
                    .contains("outside the source roots")),
        "{s}"
    );
    // Its page is shown; nothing from outside ever is (chunk ids are sequential).
    let mut shown = 0;
    for id in 1..50 {
        let (status, page) = server.get(&format!("/api/chunks/{id}/page"));
        let text = page.to_string();
        assert!(!text.contains("月給"), "{text}");
        if status == 200 {
            shown += 1;
            assert!(text.contains("出張"), "{text}");
        } else {
            assert_eq!(status, 404, "{text}");
        }
    }
    assert_eq!(shown, 1, "the one chunk of the document inside the root");
}

#[test]
fn a_page_of_a_document_outside_the_roots_is_never_shown() {
    // A catalog with a document from outside every root (as a server before source
    // roots could have been made to ingest): the CLI ingests it, then the folder's
    // record is dropped from the catalog, as in a catalog from before the roots.
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.txt"),
        "root:*:20228:0:99999:7:::\n",
    )
    .unwrap();
    let d = data.path().to_str().unwrap();
    let out = kura(&[
        "--data-dir",
        d,
        "ingest",
        outside.path().to_str().unwrap(),
        "--collection",
        "leak",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());

    // Registered by the CLI: the administrator's own ingest is shown.
    let server = Server::start_in(copy_of(data.path()), CHAT, &[]);
    let (status, page) = server.get("/api/chunks/1/page");
    assert_eq!(status, 200, "{page}");
    drop(server);

    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM source_roots'); c.commit()")
        .arg(data.path().join("catalog.sqlite"))
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start_in(copy_of(data.path()), CHAT, &[]);
    let (status, page) = server.get("/api/chunks/1/page");
    assert_eq!(status, 403, "{page}");
    assert_eq!(page["error"]["code"], "outside_source_roots");
    assert!(!page.to_string().contains("root:*"), "{page}");
}

/// A copy of a data folder (each server gets its own, deleted with it).
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[test]
fn cross_site_requests_and_foreign_hosts_are_refused() {
    let server = Server::start(CHAT, &["--allowed-host", "kura.intra"]);
    let host = format!("Host: {}", server.addr);
    let ingest = r#"{"collection":"x","paths":["/tmp"]}"#;

    // "Simple" requests any web page may send: not JSON, so refused before they run.
    let (status, body) = raw(
        &server,
        &format!("POST /api/ingest HTTP/1.1\r\n{host}\r\nContent-Type: text/plain"),
        ingest,
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (415, "unsupported_media_type"),
        "{body}"
    );
    let (status, body) = raw(
        &server,
        &format!("POST /v1/chat/completions HTTP/1.1\r\n{host}\r\nContent-Type: text/plain"),
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#,
    );
    assert_eq!(status, 415, "{body}");
    let (status, body) = raw(
        &server,
        &format!(
            "POST /api/ask HTTP/1.1\r\n{host}\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        "question=hi",
    );
    assert_eq!(status, 415, "{body}");
    // A body with no type at all is refused too.
    let (status, _) = raw(
        &server,
        &format!("POST /api/ingest HTTP/1.1\r\n{host}"),
        ingest,
    );
    assert_eq!(status, 415);

    // A foreign Origin may not change anything, even with a JSON body.
    let (status, body) = raw(
        &server,
        &format!(
            "POST /api/feedback HTTP/1.1\r\n{host}\r\nOrigin: http://evil.example\r\nContent-Type: application/json"
        ),
        r#"{"rating":"up","question":"q","answer":"a"}"#,
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "origin_not_allowed"),
        "{body}"
    );
    // The server's own pages may.
    let (status, body) = raw(
        &server,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\n{host}\r\nOrigin: http://{}\r\nContent-Type: application/json",
            server.addr
        ),
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#,
    );
    assert_eq!(status, 200, "{body}");

    // DNS rebinding: a request addressed to a foreign name is refused, reads included.
    let (status, body) = raw(
        &server,
        "GET /api/health HTTP/1.1\r\nHost: evil.example:8080",
        "",
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "host_not_allowed"),
        "{body}"
    );
    let (status, _) = raw(
        &server,
        "GET /v1/models HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example",
        "",
    );
    assert_eq!(status, 403);
    // The machine's addresses and the LAN name it was given are served.
    for h in ["localhost", "127.0.0.1", "kura.intra:8080"] {
        let (status, body) = raw(
            &server,
            &format!("GET /api/health HTTP/1.1\r\nHost: {h}"),
            "",
        );
        assert_eq!(status, 200, "{h}: {body}");
    }

    // A body over the limit: an OpenAI-shaped 413, answered from the headers.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\n{host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{{",
        10 << 20
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(error_code(body), "request_too_large", "{reply}");
}

#[test]
fn a_folder_loop_indexes_each_file_once_and_is_reported_once() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(docs.path().join("sub")).unwrap();
    std::fs::write(
        docs.path().join("doc.txt"),
        "就業規則の抜粋。年次有給休暇は申請制とする。\n",
    )
    .unwrap();
    std::fs::write(docs.path().join("README"), "a file with no extension\n").unwrap();
    std::os::unix::fs::symlink("..", docs.path().join("sub/up")).unwrap();
    let out = kura(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--json",
        "ingest",
        docs.path().to_str().unwrap(),
        "--collection",
        "loop",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let s: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(s["added"], 1, "{s}");
    let failed = s["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "one loop, reported once: {s}");
    assert!(
        failed[0]["path"].as_str().unwrap().ends_with("sub/up"),
        "{s}"
    );
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("folder loop"),
        "{s}"
    );
    // The file with no extension is not dropped in silence.
    let skipped = s["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("README")),
        "{s}"
    );
}

#[test]
fn a_client_that_leaves_during_a_long_prefill_frees_its_slot_within_a_chunk() {
    // The random-weight fixture with a long context: a 13,000-token prompt takes it
    // many seconds to prefill (attention grows with the square of the length); each
    // 512-token chunk is a fraction of a second.
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny-long.gguf");
    kura::llm::fixtures::write_tiny_qwen2_gguf_with_context(&gguf, 3, 32_768).unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let out = kura(&[
        "--models-dir",
        models.to_str().unwrap(),
        "models",
        "import",
        gguf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let server = Server::start_with_models(
        tempfile::tempdir().unwrap(),
        &models,
        "kura-tiny-qwen2--random-weights",
        &["--embedding-model", "none", "--max-concurrent", "1"],
    );
    let long = "the cat is on the mat and ".repeat(1_000);
    let body = json!({"messages": [{"role": "user", "content": long}], "max_tokens": 1,
                      "temperature": 0});

    // How long the whole prefill takes here.
    let started = Instant::now();
    let (status, full) = server.request("POST", "/v1/chat/completions", Some(&body));
    let full_prefill = started.elapsed();
    assert_eq!(status, 200, "{full}");
    assert!(
        full["usage"]["prompt_tokens"].as_u64().unwrap() > 10_000,
        "{full}"
    );

    // Now a client that gives up one second into the same prefill.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, r) = server.send("POST", "/v1/chat/completions", Some(&streamed));
    assert_eq!(status, 200);
    wait_for("the generation to start", || server.queue()["running"] == 1);
    std::thread::sleep(Duration::from_secs(1));
    let left = Instant::now();
    let _ = r.get_ref().shutdown(Shutdown::Both);
    drop(r);
    wait_for("the slot to be freed", || server.queue()["running"] == 0);
    let freed = left.elapsed();
    eprintln!("slot freed {freed:?} after the client left; whole prefill {full_prefill:?}");
    let q = server.queue();
    assert_eq!(q["cancelled"], 1, "{q}");
    assert!(
        freed < Duration::from_secs(5) && freed * 3 < full_prefill,
        "slot freed {freed:?} after the client left; the whole prefill takes {full_prefill:?}"
    );
}

/// Polls every 20 ms; the 5-minute bound only turns a hang into a failure.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..15_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn ask_refuses_out_of_range_top_k_and_max_tokens_with_the_range() {
    let server = Server::start(CHAT, &[]);
    for (field, value) in [
        ("top_k", 1_000_000_000u64),
        ("top_k", 0),
        ("max_tokens", 1_000_000_000),
    ] {
        let (status, r) = server.request(
            "POST",
            "/api/ask",
            Some(&json!({"question": "有給休暇は?", field: value})),
        );
        assert_eq!(status, 400, "{field}={value}: {r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field) && msg.contains("between 1 and"),
            "{msg}"
        );
        assert_eq!(r["error"]["param"], field);
    }
}

#[test]
fn an_oversized_sheet_is_refused_by_name_within_its_budget_and_the_rest_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let big = docs.path().join("在庫一覧.xlsx");
    write_sheet(&big, 20_000);
    std::fs::write(
        docs.path().join("規程.md"),
        "# 在庫管理規程\n\n棚卸は毎月末に行う。\n",
    )
    .unwrap();
    let out = kura(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--json",
        "ingest",
        docs.path().to_str().unwrap(),
        "--collection",
        "sheets",
        "--max-chunks-per-file",
        "100",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let s: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(s["added"], 1, "the small file goes in: {s}");
    let failed = s["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{s}");
    assert!(
        failed[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("在庫一覧.xlsx"),
        "{s}"
    );
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("more than 100 passages") && reason.contains("--max-chunks-per-file"),
        "{reason}"
    );
    // Within its budget: it never reached the embedder (a chunk count, no vectors).
    assert!(s["chunks"].as_u64().unwrap() < 10, "{s}");
}

/// A real XLSX package with one sheet of `rows` rows of inventory (inline strings).
fn write_sheet(path: &Path, rows: usize) {
    use zip::write::SimpleFileOptions;
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for i in 1..=rows {
        sheet.push_str(&format!(
            r#"<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>A-{i:05}</t></is></c><c r="B{i}" t="inlineStr"><is><t>六角ボルト M{} 規格品 第{}倉庫 棚{}</t></is></c><c r="C{i}"><v>{}</v></c></row>"#,
            3 + i % 9,
            i % 7,
            i % 40,
            i % 500
        ));
    }
    sheet.push_str("</sheetData></worksheet>");
    let parts = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_string(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_string(),
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="在庫" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_string(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_string(),
        ),
        ("xl/worksheets/sheet1.xml", sheet),
    ];
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, text) in parts {
        zip.start_file(name, SimpleFileOptions::default()).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}
