//! `kura dataset …`: training data for LoRA fine-tuning: import (validate +
//! split), list, draft from a collection with the local model (synth), review.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;

use crate::load::load_llm;
use crate::term::print_json;
use kura::llm::DeviceChoice;
use kura::paths::Paths;
use kura::train::synth::{review, synthesize, DraftStatus, DraftStore};
use kura::train::DatasetStore;

/// `kura dataset …`
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Validate a JSONL file (OpenAI `messages` or Alpaca lines), split it and store it.
    Import {
        /// The JSONL file.
        file: PathBuf,
        /// The name to store it under (used as `dataset = "NAME"` in job.toml).
        #[arg(long)]
        name: String,
        /// Share of examples held out for evaluation.
        #[arg(long, default_value_t = 0.1)]
        eval_fraction: f64,
        /// Seed of the split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Held-out examples written on purpose (e.g. paraphrased questions): FILE
        /// is then all training data, and --eval-fraction is not used.
        #[arg(long, value_name = "FILE.jsonl")]
        eval: Option<PathBuf>,
    },
    /// List the imported datasets.
    List,
    /// Draft question/answer pairs from a collection's chunks with the local model
    /// (each keeps its source chunk), stored as pending drafts for review.
    Synth {
        /// The collection to draft from.
        #[arg(long)]
        collection: String,
        /// The dataset the drafts belong to.
        #[arg(long)]
        name: String,
        /// Chunks to draft from (spread over the collection; chunks drafted before are skipped).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Chat model (default: the default chat model).
        #[arg(long)]
        model: Option<String>,
        /// Tokens per drafted pair.
        #[arg(long, default_value_t = 160)]
        max_tokens: usize,
    },
    /// List a dataset's drafts; approve, reject or edit them. Approved pairs become
    /// the dataset's train/eval files at once.
    Review {
        /// The dataset.
        name: String,
        /// Draft ids to approve.
        #[arg(long, num_args = 1.., value_name = "ID")]
        approve: Vec<u64>,
        /// Draft ids to reject.
        #[arg(long, num_args = 1.., value_name = "ID")]
        reject: Vec<u64>,
        /// Approve every pending draft whose answer is at least this grounded in its
        /// source (0-1), e.g. 0.8.
        #[arg(long, value_name = "SHARE")]
        approve_grounded: Option<f32>,
        /// A draft id to edit (with --question and/or --answer).
        #[arg(long, value_name = "ID")]
        edit: Option<u64>,
        /// The edited question.
        #[arg(long, requires = "edit")]
        question: Option<String>,
        /// The edited answer.
        #[arg(long, requires = "edit")]
        answer: Option<String>,
        /// Share of approved pairs held out for evaluation.
        #[arg(long, default_value_t = 0.1)]
        eval_fraction: f64,
    },
}

pub(super) fn dataset_cmd(cmd: DatasetCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let store = DatasetStore::new(paths.datasets_dir());
    match cmd {
        DatasetCommand::Import {
            file,
            name,
            eval_fraction,
            seed,
            eval,
        } => {
            let info = match &eval {
                Some(e) => store.import_with_eval(&file, e, &name)?,
                None => store.import(&file, &name, eval_fraction, seed)?,
            };
            if json_out {
                print_json(&serde_json::to_value(&info)?);
            } else {
                println!(
                    "imported `{}`: {} train + {} eval examples → {}",
                    info.name,
                    info.train,
                    info.eval,
                    store.path(&info.name).display()
                );
            }
        }
        DatasetCommand::Synth {
            collection,
            name,
            limit,
            model,
            max_tokens,
        } => {
            return synth_cmd(
                paths,
                &collection,
                &name,
                limit,
                model.as_deref(),
                max_tokens,
                json_out,
            )
        }
        DatasetCommand::Review {
            name,
            approve,
            reject,
            approve_grounded,
            edit,
            question,
            answer,
            eval_fraction,
        } => {
            let drafts_store = DraftStore::new(store, &name);
            let mut drafts = drafts_store.load()?;
            if drafts.is_empty() {
                bail!(
                    "dataset `{name}` has no drafts: make some with `kura dataset synth --collection C --name {name}`"
                );
            }
            let mut approve = approve;
            if let Some(min) = approve_grounded {
                approve.extend(
                    drafts
                        .iter()
                        .filter(|d| d.status == DraftStatus::Pending && d.grounded >= min)
                        .map(|d| d.id),
                );
            }
            let changes = !approve.is_empty() || !reject.is_empty() || edit.is_some();
            review(
                &mut drafts,
                &approve,
                &reject,
                edit.map(|id| (id, question, answer)),
            )?;
            let (train, eval) = if changes {
                drafts_store.save(&drafts, eval_fraction, 42)?
            } else {
                (0, 0)
            };
            if json_out {
                print_json(&json!({"drafts": drafts, "train": train, "eval": eval}));
            } else {
                for d in &drafts {
                    let mark = match d.status {
                        DraftStatus::Pending => "  ",
                        DraftStatus::Approved => "✓ ",
                        DraftStatus::Rejected => "✗ ",
                    };
                    let doc = Path::new(&d.source.document)
                        .file_name()
                        .map_or(d.source.document.clone(), |n| {
                            n.to_string_lossy().to_string()
                        });
                    println!(
                        "{mark}#{:<4} [{doc} p.{} · grounded {:.2}{}]\n      Q: {}\n      A: {}",
                        d.id,
                        d.source.page,
                        d.grounded,
                        if d.edited { " · edited" } else { "" },
                        d.question,
                        d.answer
                    );
                }
                let count = |s: DraftStatus| drafts.iter().filter(|d| d.status == s).count();
                println!(
                    "{} approved, {} pending, {} rejected",
                    count(DraftStatus::Approved),
                    count(DraftStatus::Pending),
                    count(DraftStatus::Rejected)
                );
                if changes {
                    println!(
                        "dataset `{name}`: {train} train + {eval} eval examples (approved pairs)"
                    );
                }
            }
        }
        DatasetCommand::List => {
            let list = store.list()?;
            if json_out {
                print_json(&serde_json::to_value(&list)?);
            } else if list.is_empty() {
                println!(
                    "no datasets (import one with `kura dataset import FILE.jsonl --name NAME`)"
                );
            } else {
                println!("{:<24} {:>7} {:>6}  source", "name", "train", "eval");
                for d in list {
                    println!(
                        "{:<24} {:>7} {:>6}  {}",
                        d.name,
                        d.train,
                        d.eval,
                        d.source.display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn synth_cmd(
    paths: &Paths,
    collection: &str,
    name: &str,
    limit: usize,
    model: Option<&str>,
    max_tokens: usize,
    json_out: bool,
) -> Result<ExitCode> {
    let drafts_store = DraftStore::new(DatasetStore::new(paths.datasets_dir()), name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let chunks = rt.block_on(async {
        let catalog = kura::catalog::Catalog::open(&paths.catalog_db()).await?;
        let col = catalog.find_collection(collection).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "no collection `{collection}` (コレクションが見つかりません): see `kura status`"
            )
        })?;
        let ids = catalog.collection_chunk_ids(col.id).await?;
        anyhow::Ok(catalog.chunks(&ids).await?)
    })?;
    let llm = load_llm(paths, model, DeviceChoice::from_env())?;
    let (made, tried) = synthesize(
        &drafts_store,
        &llm,
        &chunks,
        limit,
        max_tokens,
        &mut |i, n| {
            if !json_out {
                eprint!("\rdrafting {}/{n}", i + 1);
            }
        },
    )?;
    if tried == 0 {
        bail!("collection `{collection}` has no chunk left to draft from");
    }
    if json_out {
        print_json(
            &json!({"drafted": made, "chunks": tried, "drafts": drafts_store.load()?.len()}),
        );
    } else {
        eprintln!();
        println!(
            "{made} drafts from {tried} chunks of `{collection}` (pending review: `kura dataset review {name}`)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
