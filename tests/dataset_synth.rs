//! `kura dataset synth` and `kura dataset review` with the real default models over the
//! sample manuals: the local model drafts question/answer pairs from indexed chunks,
//! each keeping its source; nothing becomes training data until a reviewer approves
//! it, and an edit is what gets trained on.

mod common;

use common::{kura, real_models_dir, OutputText};
use serde_json::Value;

#[test]
fn drafts_keep_their_source_and_only_approved_pairs_are_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (home_s, models) = (home.to_str().unwrap(), real_models_dir());
    let models_s = models.to_str().unwrap();
    let manuals = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/manuals");
    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "ingest",
        manuals.to_str().unwrap(),
        "--collection",
        "samples",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());

    let out = kura(&[
        "--data-dir",
        home_s,
        "--models-dir",
        models_s,
        "--json",
        "dataset",
        "synth",
        "--collection",
        "samples",
        "--name",
        "rules",
        "--limit",
        "2",
        "--max-tokens",
        "96",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let made: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(made["chunks"], 2);
    let drafted = made["drafted"].as_u64().unwrap();
    assert!(drafted >= 1, "the model drafted nothing usable: {made}");

    let review = |extra: &[&str]| -> Value {
        let mut args = vec!["--data-dir", home_s, "--json", "dataset", "review", "rules"];
        args.extend_from_slice(extra);
        let out = kura(&args);
        assert!(out.status.success(), "{}", out.stderr_text());
        serde_json::from_str(&out.stdout_text()).unwrap()
    };
    let listed = review(&[]);
    let drafts = listed["drafts"].as_array().unwrap();
    assert_eq!(drafts.len() as u64, drafted);
    for d in drafts {
        assert_eq!(d["status"], "pending");
        assert!(!d["question"].as_str().unwrap().is_empty());
        assert!(!d["answer"].as_str().unwrap().is_empty());
        let doc = d["source"]["document"].as_str().unwrap();
        assert!(doc.contains("assets/manuals/"), "{doc}");
        assert!(d["source"]["page"].as_i64().unwrap() >= 1);
        let g = d["grounded"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&g));
    }
    // Nothing approved yet: the dataset has no training example.
    let train = home.join("datasets/rules/train.jsonl");
    assert_eq!(
        std::fs::read_to_string(&train).unwrap_or_default().trim(),
        ""
    );

    // Approve the first with an edited answer; reject the rest.
    let first = drafts[0]["id"].as_u64().unwrap().to_string();
    let mut args = vec![
        "--approve",
        first.as_str(),
        "--edit",
        first.as_str(),
        "--answer",
        "編集済みの回答",
    ];
    let rest: Vec<String> = drafts[1..].iter().map(|d| d["id"].to_string()).collect();
    if !rest.is_empty() {
        args.push("--reject");
        args.extend(rest.iter().map(String::as_str));
    }
    let reviewed = review(&args);
    assert_eq!(
        reviewed["train"].as_u64().unwrap() + reviewed["eval"].as_u64().unwrap(),
        1
    );
    let text = std::fs::read_to_string(&train).unwrap();
    assert!(text.contains("編集済みの回答"), "{text}");
    assert!(
        text.contains(drafts[0]["question"].as_str().unwrap()),
        "{text}"
    );
    let d0 = &reviewed["drafts"][0];
    assert_eq!(d0["status"], "approved");
    assert_eq!(d0["edited"], true);

    let out = kura(&[
        "--data-dir",
        home_s,
        "dataset",
        "review",
        "rules",
        "--approve",
        "99",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("no draft with id 99"),
        "{}",
        out.stderr_text()
    );
}
