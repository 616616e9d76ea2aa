//! The child side of `kura bench generate`: the `kura` executable started with
//! `KURA_BENCH_WORKER` runs the benchmark job and prints its figures, and nothing else.

use std::process::Command;

use kura::bench::generate::{run_kura, BenchSpec, Runner};
use kura::llm::fixtures::write_tiny_qwen2_gguf;

#[test]
fn the_kura_executable_runs_a_generate_job_as_a_benchmark_child() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&model, 5).unwrap();
    let spec = BenchSpec {
        model,
        tokens: vec![3, 1, 4, 1, 5, 9],
        decode_tokens: 5,
        threads: 1,
        device: "cpu".into(),
    };
    let runner = Runner {
        kura_exe: env!("CARGO_BIN_EXE_kura").into(),
        python: None,
        work_dir: dir.path().join("work"),
    };
    let child = runner
        .run_kura_child(&spec)
        .expect("the child reports its figures");
    assert_eq!(child.engine, "kura");
    assert_eq!((child.prompt_tokens, child.decode_steps), (6, 5));
    assert!(child.prefill_s > 0.0 && child.decode_s > 0.0 && child.peak_rss_mb > 1.0);
    // Greedy decoding of the same weights: the child chose what this process chooses.
    let here = run_kura(&spec).unwrap();
    assert_eq!(child.tokens, here.tokens);
}

#[test]
fn an_unknown_benchmark_child_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .env("KURA_BENCH_WORKER", "nonsense:/nowhere.json")
        .arg("doctor")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown benchmark `nonsense`"), "{stderr}");
    assert!(out.stdout.is_empty(), "the command line did not run");
}
