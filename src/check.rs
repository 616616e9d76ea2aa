//! `kura check`: whether the catalog and both indexes agree (`--repair` brings the
//! indexes back in step).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::load::runtime;
use crate::term::print_json;
use kura::catalog::Catalog;
use kura::index::SearchIndex;
use kura::paths::Paths;

pub(super) fn check_cmd(paths: &Paths, json_out: bool, repair: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let mut index = SearchIndex::open(&paths.index_dir())?;
        let mut report = index.check(&catalog).await?;
        let mut repaired = false;
        if !report.consistent && repair {
            index.sync(&catalog).await?;
            report = index.check(&catalog).await?;
            repaired = true;
        }
        if json_out {
            print_json(&json!({"report": report, "repaired": repaired}));
        } else {
            println!(
                "catalog {} chunks, BM25 {}, vectors {}: {}",
                report.catalog_chunks,
                report.bm25_chunks,
                report.vector_chunks,
                if report.consistent {
                    "consistent"
                } else {
                    "NOT consistent (run `kura check --repair`, or any ingest/search, to catch up)"
                }
            );
        }
        Ok(if report.consistent {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
