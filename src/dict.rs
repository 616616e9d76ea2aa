//! `kura dict`: the user dictionary of company terms and product codes for keyword search.
//!
//! The file is `<data>/index/userdict.csv` (lindera's simple IPADIC format:
//! `surface,part of speech,reading`); administrators may also edit it by hand. Any
//! change re-analyses the BM25 index from the catalog at the next sync, which these
//! commands run at once so the effect is visible immediately.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;

use crate::term::print_json;
use kura::catalog::Catalog;
use kura::index::bm25::USER_DICTIONARY;
use kura::index::SearchIndex;
use kura::paths::Paths;

/// `kura dict …`
#[derive(Debug, Subcommand)]
pub enum DictCommand {
    /// List the terms of the user dictionary.
    List,
    /// Add a term (a company word or product code) so keyword search treats it as one word.
    Add {
        /// The term as written, e.g. くら精機 or KR-200X.
        term: String,
        /// Its reading in katakana (optional).
        #[arg(long)]
        reading: Option<String>,
        /// Part of speech (default カスタム名詞, a custom noun).
        #[arg(long, default_value = "カスタム名詞")]
        pos: String,
    },
    /// Remove a term.
    Remove {
        /// The term as written.
        term: String,
    },
    /// Show how keyword search splits a text into words (with the user dictionary).
    Tokenize {
        /// The text.
        text: String,
    },
}

/// One line of the dictionary file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Term {
    term: String,
    pos: String,
    reading: String,
}

fn read_terms(path: &std::path::Path) -> Result<Vec<Term>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let term = f.next().unwrap_or_default().to_string();
            let pos = f.next().unwrap_or_default().to_string();
            let reading = f.next().unwrap_or_default().to_string();
            Term { term, pos, reading }
        })
        .collect())
}

fn write_terms(path: &std::path::Path, terms: &[Term]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let body: String = terms
        .iter()
        .map(|t| format!("{},{},{}\n", t.term, t.pos, t.reading))
        .collect();
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Opens the index (loading the dictionary) and brings BM25 in step with it.
fn resync(paths: &Paths) -> Result<SearchIndex> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut index = SearchIndex::open(&paths.index_dir())?;
        if paths.catalog_db().exists() {
            let catalog = Catalog::open(&paths.catalog_db()).await?;
            index.sync(&catalog).await?;
        }
        Ok(index)
    })
}

pub(super) fn dict_cmd(cmd: DictCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let path = paths.index_dir().join(USER_DICTIONARY);
    let mut terms = read_terms(&path)?;
    match cmd {
        DictCommand::List => {
            if json_out {
                print_json(&json!({"file": path, "terms": terms}));
            } else if terms.is_empty() {
                println!(
                    "the user dictionary is empty ({}) / ユーザー辞書は空です",
                    path.display()
                );
            } else {
                for t in &terms {
                    println!("{}\t{}\t{}", t.term, t.pos, t.reading);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        DictCommand::Add { term, reading, pos } => {
            let term = term.trim().to_string();
            if term.is_empty() || term.contains([',', '\n', '\r']) || pos.contains([',', '\n']) {
                bail!("a term may not be empty or contain commas or line breaks / 用語にカンマや改行は使えません: {term:?}");
            }
            let reading = reading.unwrap_or_else(|| term.clone());
            terms.retain(|t| t.term != term);
            terms.push(Term { term, pos, reading });
        }
        DictCommand::Remove { term } => {
            let before = terms.len();
            terms.retain(|t| t.term != term);
            if terms.len() == before {
                bail!("{term:?} is not in the user dictionary / ユーザー辞書にありません");
            }
        }
        DictCommand::Tokenize { text } => {
            let index = SearchIndex::open(&paths.index_dir())?;
            let text = kura::ingest::normalize::normalize_text(&text);
            let tokens = index.bm25.tokenize(&text);
            if json_out {
                print_json(&json!({"tokens": tokens}));
            } else {
                println!("{}", tokens.join(" | "));
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    if terms.is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    } else {
        write_terms(&path, &terms)?;
    }
    let index = resync(paths)?;
    if json_out {
        print_json(&json!({"file": path, "terms": terms.len(), "bm25_chunks": index.bm25.len()}));
    } else {
        println!(
            "{} terms in {}; keyword index re-analysed ({} chunks) / キーワード索引を更新しました",
            terms.len(),
            path.display(),
            index.bm25.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
