//! `kura status`: collections, documents, failures and pages not indexed.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::load::runtime;
use crate::term::print_json;
use kura::catalog::Catalog;
use kura::paths::Paths;

pub(super) fn status_cmd(paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let mut out = Vec::new();
        for s in catalog.summaries().await? {
            let mut problems = Vec::new();
            let mut failed = Vec::new();
            for d in catalog.documents(s.collection.id).await? {
                if let Some(e) = &d.error {
                    failed.push(json!({"path": d.path, "reason": e, "status": d.status}));
                }
                for p in catalog.problem_pages(d.id).await? {
                    problems.push(json!({"path": d.path, "page": p.number, "quality": p.quality, "reason": p.reason}));
                }
            }
            out.push(json!({
                "collection": s.collection.name, "documents": s.documents, "failed_documents": s.failed,
                "chunks": s.chunks, "failed": failed, "problem_pages": problems,
            }));
        }
        if json_out {
            print_json(&json!(out));
        } else if out.is_empty() {
            println!("no collections yet: run `kura ingest PATH --collection NAME`");
        } else {
            for c in &out {
                println!("{}: {} documents, {} chunks, {} failed", c["collection"].as_str().unwrap_or(""), c["documents"], c["chunks"], c["failed_documents"]);
                for f in c["failed"].as_array().into_iter().flatten() {
                    println!("  FAILED {}: {}", f["path"].as_str().unwrap_or(""), f["reason"].as_str().unwrap_or(""));
                }
                for p in c["problem_pages"].as_array().into_iter().flatten() {
                    println!("  page {} of {} ({}): {}", p["page"], p["path"].as_str().unwrap_or(""), p["quality"].as_str().unwrap_or(""), p["reason"].as_str().unwrap_or(""));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
