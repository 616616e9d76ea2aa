//! Measurement, not a test: extraction speed and extractor path on real PDFs.
//!
//! `KURA_BENCH_PDF=/path/to/many-pages.pdf cargo test --release --test ingest_bench -- --ignored --nocapture`
//! (without the variable it measures the PDFs under tests/data/ingest).

use std::path::PathBuf;
use std::time::Instant;

use kura::ingest::{extract, Limits, PageQuality};

#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn pdf_extraction_speed() {
    let mut files: Vec<PathBuf> = std::env::var_os("KURA_BENCH_PDF")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ingest");
    for name in [
        "manual-libreoffice.pdf",
        "predefined-unijis-ucs2.pdf",
        "predefined-90ms-rksj.pdf",
        "debian-edu-ja-excerpt.pdf",
    ] {
        files.push(data.join(name));
    }
    for path in files {
        let start = Instant::now();
        let doc = extract(&path, &Limits::default()).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let ok = doc
            .pages
            .iter()
            .filter(|p| p.quality == PageQuality::Ok)
            .count();
        let chars: usize = doc.pages.iter().map(|p| p.text.chars().count()).sum();
        println!(
            "{}: {} pages ({} ok), {} chars, via {}, {:.3} s, {:.1} pages/s, {} warnings",
            path.display(),
            doc.pages.len(),
            ok,
            chars,
            doc.extractor,
            secs,
            doc.pages.len() as f64 / secs,
            doc.warnings.len()
        );
        for w in doc.warnings.iter().take(5) {
            println!("    {w}");
        }
    }
}

/// Extracts every file of the sample manuals (`<repo>/assets/manuals`, or
/// `KURA_MANUALS_DIR`) and prints path, extractor, pages and quality — a quick survey.
#[test]
#[ignore = "survey; run explicitly with --ignored --nocapture"]
fn survey_sample_manuals() {
    let dir = std::env::var_os("KURA_MANUALS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/manuals"));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let start = Instant::now();
        match extract(&path, &Limits::default()) {
            Ok(doc) => {
                let bad: Vec<String> = doc
                    .pages
                    .iter()
                    .filter(|p| p.quality != PageQuality::Ok)
                    .map(|p| format!("p.{} {:?}", p.number, p.quality))
                    .collect();
                let first: String = doc.pages.first().map_or(String::new(), |p| {
                    p.text
                        .chars()
                        .take(40)
                        .collect::<String>()
                        .replace('\n', " / ")
                });
                println!(
                    "{}: ok via {}, {} pages, {:.3} s, not ok: {:?}, warnings: {}\n    {first}",
                    path.display(),
                    doc.extractor,
                    doc.pages.len(),
                    start.elapsed().as_secs_f64(),
                    bad,
                    doc.warnings.len()
                );
            }
            Err(e) => println!("{}: ERROR {e}", path.display()),
        }
    }
}
