//! `kura ingest` / `kura search` / `kura check` end to end, with the real
//! embedding model, real documents and a real SQLite catalog: Japanese search,
//! incremental re-runs, deletions, bad files, and a `kill -9` in the middle.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kura, real_models_dir, OutputText};
use serde_json::Value;

fn manuals() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/manuals")
}

fn run_json(args: &[&str]) -> Value {
    let out = kura(args);
    assert!(
        out.status.success(),
        "kura {args:?} failed:\n{}\n{}",
        out.stdout_text(),
        out.stderr_text()
    );
    serde_json::from_str(&out.stdout_text())
        .unwrap_or_else(|e| panic!("{e}: {}", out.stdout_text()))
}

struct Env {
    data: tempfile::TempDir,
    models: String,
}

impl Env {
    fn new() -> Self {
        Env {
            data: tempfile::tempdir().unwrap(),
            models: real_models_dir().to_string_lossy().into_owned(),
        }
    }
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "--data-dir",
            self.data.path().to_str().unwrap(),
            "--models-dir",
            &self.models,
            "--json",
        ];
        v.extend_from_slice(rest);
        v
    }
    fn json(&self, rest: &[&str]) -> Value {
        run_json(&self.args(rest))
    }
}

/// Copies some of the sample manuals (the small, non-PDF ones keep the test fast;
/// PDFs are covered by tests/ingest_extract.rs) into a folder the test may change.
fn corpus(dir: &Path) {
    for f in [
        "設備操作マニュアル_KR-200.html",
        "経費精算FAQ.txt",
        "equipment-manual-KR-200.md",
    ] {
        std::fs::copy(manuals().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn japanese_questions_find_their_manual_and_reruns_are_incremental() {
    let env = Env::new();
    let docs = tempfile::tempdir().unwrap();
    corpus(docs.path());
    let d = docs.path().to_str().unwrap();

    let first = env.json(&["ingest", d, "--collection", "manuals"]);
    assert_eq!(first["added"], 3, "{first}");
    assert_eq!(first["failed"].as_array().unwrap().len(), 0, "{first}");
    assert!(first["chunks"].as_u64().unwrap() >= 6, "{first}");

    // The Shift_JIS FAQ was decoded: a Japanese question finds it.
    let hits = env.json(&[
        "search",
        "出張の日当はいくらですか",
        "--collection",
        "manuals",
        "--top-k",
        "3",
    ]);
    let top = hits[0]["doc"].as_str().unwrap();
    assert!(top.ends_with("経費精算FAQ.txt"), "{hits}");
    // A keyword inside a compound, BM25 only.
    let hits = env.json(&[
        "search",
        "非常停止",
        "--collection",
        "manuals",
        "--mode",
        "bm25",
    ]);
    assert!(
        hits[0]["doc"].as_str().unwrap().ends_with(".html"),
        "{hits}"
    );
    assert!(
        hits[0]["text"].as_str().unwrap().contains("非常停止"),
        "{hits}"
    );
    // Cross-lingual: an English question finds the lathe manuals.
    let hits = env.json(&[
        "search",
        "What is the maximum spindle speed of the KR-200?",
        "--collection",
        "manuals",
    ]);
    assert!(
        hits[0]["doc"].as_str().unwrap().contains("KR-200"),
        "{hits}"
    );

    // Nothing changed: nothing is re-read.
    let again = env.json(&["ingest", d, "--collection", "manuals"]);
    assert_eq!(
        (again["added"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(3)),
        "{again}"
    );

    // One file edited, one deleted.
    let md = docs.path().join("equipment-manual-KR-200.md");
    let mut text = std::fs::read_to_string(&md).unwrap();
    text.push_str("\n\n## 12. Coolant\nThe coolant concentration must be kept between 5 and 8 percent (refractometer check every Monday).\n");
    std::fs::write(&md, text).unwrap();
    std::fs::remove_file(docs.path().join("経費精算FAQ.txt")).unwrap();
    let third = env.json(&["ingest", d, "--collection", "manuals"]);
    assert_eq!(third["updated"], 1, "{third}");
    assert_eq!(third["removed"], 1, "{third}");
    let hits = env.json(&[
        "search",
        "出張の日当",
        "--collection",
        "manuals",
        "--top-k",
        "10",
    ]);
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .all(|h| !h["doc"].as_str().unwrap().ends_with(".txt")),
        "deleted file still found: {hits}"
    );
    let hits = env.json(&[
        "search",
        "coolant concentration refractometer",
        "--collection",
        "manuals",
        "--mode",
        "bm25",
    ]);
    assert!(
        hits[0]["text"].as_str().unwrap().contains("refractometer"),
        "{hits}"
    );

    let check = env.json(&["check"]);
    assert_eq!(check["report"]["consistent"], true, "{check}");
}

#[test]
fn bad_files_are_reported_by_name_and_the_rest_is_indexed() {
    let env = Env::new();
    let docs = tempfile::tempdir().unwrap();
    std::fs::copy(
        manuals().join("経費精算FAQ.txt"),
        docs.path().join("経費精算FAQ.txt"),
    )
    .unwrap();
    std::fs::write(docs.path().join("空.txt"), b"").unwrap();
    std::fs::write(
        docs.path().join("program.txt"),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let pdf = std::fs::read(manuals().join("travel-expense-policy.pdf")).unwrap();
    std::fs::write(docs.path().join("truncated.pdf"), &pdf[..pdf.len() / 3]).unwrap();
    std::fs::write(
        docs.path().join("broken.docx"),
        b"PK\x03\x04 this is not a real zip",
    )
    .unwrap();

    let out = env.json(&[
        "ingest",
        docs.path().to_str().unwrap(),
        "--collection",
        "mixed",
    ]);
    assert_eq!(out["added"], 1, "{out}");
    let failed = out["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 4, "{out}");
    for name in ["空.txt", "program.txt", "truncated.pdf", "broken.docx"] {
        let f = failed
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not reported: {out}"));
        assert!(!f["reason"].as_str().unwrap().is_empty());
    }
    // `kura status` keeps the failures.
    let status = env.json(&["status"]);
    assert_eq!(status[0]["failed"].as_array().unwrap().len(), 4, "{status}");

    // A previously good file that becomes corrupt keeps its indexed version.
    std::fs::write(
        docs.path().join("経費精算FAQ.txt"),
        b"\x00\x01\x02\x03 garbage \xff\xfe\x00",
    )
    .unwrap();
    let out = env.json(&[
        "ingest",
        docs.path().to_str().unwrap(),
        "--collection",
        "mixed",
    ]);
    assert!(
        out["failed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("経費精算FAQ.txt")),
        "{out}"
    );
    let hits = env.json(&["search", "日当", "--collection", "mixed", "--mode", "bm25"]);
    assert!(
        !hits.as_array().unwrap().is_empty(),
        "the earlier indexed version was lost"
    );
}

#[test]
fn a_killed_ingest_resumes_to_the_same_index_as_an_uninterrupted_one() {
    let docs = tempfile::tempdir().unwrap();
    // Twelve small documents, so the run is long enough to be killed mid-way.
    let faq = std::fs::read(manuals().join("経費精算FAQ.txt")).unwrap();
    for i in 0..12 {
        // The whole file in Shift_JIS, like the FAQ it extends.
        let mut text = encoding_rs::SHIFT_JIS
            .encode(&format!("文書番号{i}。第{i}版の追記。\r\n"))
            .0
            .into_owned();
        text.extend(&faq);
        std::fs::write(docs.path().join(format!("faq-{i:02}.txt")), text).unwrap();
    }
    let d = docs.path().to_str().unwrap();

    let reference = Env::new();
    let clean = reference.json(&["ingest", d, "--collection", "c"]);
    assert_eq!(clean["added"], 12);

    let env = Env::new();
    let data = env.data.path().to_str().unwrap().to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args([
            "--data-dir",
            &data,
            "--models-dir",
            &env.models,
            "--json",
            "ingest",
            d,
            "--collection",
            "c",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some documents are in the catalog, or after a while.
    let started = Instant::now();
    let catalog = env.data.path().join("catalog.sqlite");
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let size = std::fs::metadata(catalog.with_extension("sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        if size > 20_000 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(
        still_running,
        "the ingest finished before it could be killed: the test proved nothing"
    );
    let partial = env.json(&["status"]);
    assert!(
        partial[0]["documents"].as_i64().unwrap_or(0) < 12,
        "killed too late: {partial}"
    );

    let resumed = env.json(&["ingest", d, "--collection", "c"]);
    assert_eq!(
        resumed["added"].as_u64().unwrap() + resumed["unchanged"].as_u64().unwrap(),
        12,
        "{resumed}"
    );
    let check = env.json(&["check"]);
    assert_eq!(check["report"]["consistent"], true, "{check}");
    let a = reference.json(&["status"]);
    let b = env.json(&["status"]);
    assert_eq!(
        a[0]["chunks"], b[0]["chunks"],
        "duplicates or losses after the kill: {a} vs {b}"
    );
    assert_eq!(b[0]["documents"], 12);
}

#[test]
fn a_user_dictionary_term_becomes_one_keyword_and_the_index_follows() {
    let env = Env::new();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("通達.txt"),
        "くら精機の新型旋盤クラテック7は浜松工場で組み立てる。\n問い合わせは設備保全課まで。\n",
    )
    .unwrap();
    std::fs::write(
        docs.path().join("別件.txt"),
        "クラの精密な機械について。旋盤とテックの話。\n",
    )
    .unwrap();
    let d = docs.path().to_str().unwrap();
    env.json(&["ingest", d, "--collection", "c"]);

    let tokens = |text: &str| -> Vec<String> {
        let out = env.json(&["dict", "tokenize", text]);
        out["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let before = tokens("クラテック7の組立");
    assert!(
        !before.contains(&"クラテック7".to_string()),
        "IPADIC already knows the made-up term: {before:?}"
    );

    let added = env.json(&[
        "dict",
        "add",
        "クラテック7",
        "--reading",
        "クラテックセブン",
    ]);
    assert_eq!(added["terms"], 1, "{added}");
    let after = tokens("クラテック7の組立");
    assert!(
        after.contains(&"クラテック7".to_string()),
        "the term is still split: {after:?}"
    );
    let listed = env.json(&["dict", "list"]);
    assert_eq!(listed["terms"][0]["term"], "クラテック7", "{listed}");

    // The existing chunks were re-analysed: nothing lost, the term is found as a keyword.
    let check = env.json(&["check"]);
    assert_eq!(check["report"]["consistent"], true, "{check}");
    let hits = env.json(&[
        "search",
        "クラテック7",
        "--collection",
        "c",
        "--mode",
        "bm25",
    ]);
    assert!(
        hits[0]["doc"].as_str().unwrap().ends_with("通達.txt"),
        "{hits}"
    );

    // Removing it goes back to the dictionary's own segmentation.
    env.json(&["dict", "remove", "クラテック7"]);
    assert_eq!(tokens("クラテック7の組立"), before);
    let out = kura(&env.args(&["dict", "remove", "クラテック7"]));
    assert!(
        !out.status.success() && out.stderr_text().contains("not in the user dictionary"),
        "{}",
        out.stderr_text()
    );
}

/// Reads the pretty-printed JSON summaries a `--watch --json` ingest prints, one per
/// pass, from its stdout.
fn summaries(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<Value> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut object = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            object.push_str(&line);
            object.push('\n');
            if line == "}" {
                if let Ok(v) = serde_json::from_str::<Value>(&object) {
                    let _ = tx.send(v);
                }
                object.clear();
            }
        }
    });
    rx
}

#[test]
fn a_watched_folder_stays_in_sync_as_files_are_added_changed_and_deleted() {
    let env = Env::new();
    let docs = tempfile::tempdir().unwrap();
    corpus(docs.path());
    let d = docs.path().to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(env.args(&[
            "ingest",
            d,
            "--collection",
            "watched",
            "--watch",
            "--watch-interval",
            "1",
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let passes = summaries(child.stdout.take().unwrap());
    let next = |what: &str| {
        passes
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("no ingest pass after {what} within 3 minutes"))
    };
    let first = next("the start");
    assert_eq!(first["added"], 3, "{first}");

    // A new notice, with a phrase no other document has.
    std::fs::write(
        docs.path().join("総務通達.txt"),
        "総務部からの通達。来月から来客用駐車場の予約は総務部の窓口で受け付けます。予約番号はひまわり七号です。",
    )
    .unwrap();
    let added = next("adding a file");
    assert_eq!(
        (added["added"].as_u64(), added["unchanged"].as_u64()),
        (Some(1), Some(3)),
        "{added}"
    );
    // A changed file is re-indexed, a deleted one removed.
    let faq = docs.path().join("経費精算FAQ.txt");
    let mut text = std::fs::read(&faq).unwrap();
    text.extend(
        encoding_rs::SHIFT_JIS
            .encode("\r\nQ. 追記：深夜の帰宅にハイヤーは使えません。\r\n")
            .0
            .iter(),
    );
    std::fs::write(&faq, text).unwrap();
    let changed = next("changing a file");
    assert_eq!(changed["updated"], 1, "{changed}");
    std::fs::remove_file(docs.path().join("equipment-manual-KR-200.md")).unwrap();
    let removed = next("deleting a file");
    assert_eq!(removed["removed"], 1, "{removed}");
    let _ = child.kill();
    let _ = child.wait();

    let check = env.json(&["check"]);
    assert_eq!(check["report"]["consistent"], true, "{check}");
    let status = env.json(&["status"]);
    assert_eq!(status[0]["documents"], 3, "{status}");
    let hits = env.json(&[
        "search",
        "ひまわり七号",
        "--collection",
        "watched",
        "--mode",
        "bm25",
    ]);
    assert!(
        hits[0]["doc"].as_str().unwrap().ends_with("総務通達.txt"),
        "{hits}"
    );
    let hits = env.json(&[
        "search",
        "ハイヤー",
        "--collection",
        "watched",
        "--mode",
        "bm25",
    ]);
    assert!(
        hits[0]["text"].as_str().unwrap().contains("ハイヤー"),
        "{hits}"
    );
    let gone = env.json(&[
        "search",
        "lathe",
        "--collection",
        "watched",
        "--mode",
        "bm25",
    ]);
    assert!(
        gone.as_array().unwrap().iter().all(|h| !h["doc"]
            .as_str()
            .unwrap()
            .ends_with("equipment-manual-KR-200.md")),
        "{gone}"
    );
}

/// A disk that fills during an ingest: the run stops with one message that says
/// where and how much is needed, everything committed before stays, and the next
/// run (with room again) finishes the job without duplicates.
#[test]
fn a_full_disk_stops_the_ingest_with_where_and_how_much_and_loses_nothing() {
    use kura::catalog::Catalog;
    use kura::index::SearchIndex;
    use kura::ingest::pipeline::{ingest, IngestError, IngestOptions};

    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    corpus(docs.path());
    let model = real_models_dir().join("multilingual-e5-small-q4.e5s1");
    let embedder = kura::embed::Embedder::load(&model, &candle_core::Device::Cpu).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = data.path().join("catalog.sqlite");
    let paths = [docs.path().to_path_buf()];
    let opts = IngestOptions::default();
    let quiet = |_: kura::ingest::pipeline::IngestProgress| {};
    rt.block_on(async {
        {
            // Room for the tables and about one document: SQLite then answers as on
            // a full disk.
            let catalog = Catalog::open_with_page_limit(&db, Some(36)).await.unwrap();
            let mut index = SearchIndex::open(&data.path().join("index")).unwrap();
            let err = ingest(
                &paths, "full", &opts, &catalog, &mut index, &embedder, &quiet,
            )
            .await
            .unwrap_err();
            let msg = err.to_string();
            eprintln!("{msg}");
            assert!(matches!(err, IngestError::DiskFull { .. }), "{err:?}");
            assert!(msg.contains(&data.path().display().to_string()), "{msg}");
            assert!(msg.contains("free") && msg.contains("need about"), "{msg}");
            assert_eq!(msg.matches("disk is full").count(), 1, "said once: {msg}");
        }
        let catalog = Catalog::open(&db).await.unwrap();
        let mut index = SearchIndex::open(&data.path().join("index")).unwrap();
        let s = ingest(
            &paths, "full", &opts, &catalog, &mut index, &embedder, &quiet,
        )
        .await
        .unwrap();
        assert!(s.failed.is_empty(), "{:?}", s.failed);
        assert_eq!(s.added + s.updated + s.unchanged, 3, "{s:?}");
        let summaries = catalog.summaries().await.unwrap();
        assert_eq!(summaries[0].documents, 3, "each document once");
    });
}
