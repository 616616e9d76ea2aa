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
