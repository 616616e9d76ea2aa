//! `kura ask`: one question answered from the indexed documents, citing document
//! and page.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::load::{load_embedder, load_llm, readable_collections, runtime};
use crate::term::{cancel_on_ctrl_c, print_json, print_outcome};
use kura::adapters::AdapterRegistry;
use kura::catalog::Catalog;
use kura::index::SearchIndex;
use kura::llm::{DeviceChoice, Llm};
use kura::paths::Paths;
use kura::rag::{Answer, Answerer, AskEvent, AskOptions, Lang};

/// `kura ask`
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    /// Collections to answer from (repeatable; default: all).
    #[arg(long, short)]
    pub collection: Vec<String>,
    /// Chat model name (default: the default chat model).
    #[arg(long)]
    pub model: Option<String>,
    /// Sources placed in the prompt.
    #[arg(long, default_value_t = 4)]
    pub top_k: usize,
    /// Characters of each source in the prompt.
    #[arg(long, default_value_t = 400)]
    pub max_source_chars: usize,
    /// The most tokens of the answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Embedding model (must be the one the collection was indexed with).
    #[arg(long)]
    pub embedding_model: Option<String>,
    /// A LoRA adapter to answer with: a name under `<data>/adapters/` (see `kura
    /// train`) or a PEFT folder.
    #[arg(long)]
    pub adapter: Option<String>,
}

/// Loads the chat model on another thread while the caller does other work.
fn load_llm_in_background(
    paths: &Paths,
    name: Option<String>,
) -> std::thread::JoinHandle<Result<Llm>> {
    let paths = paths.clone();
    std::thread::spawn(move || load_llm(&paths, name.as_deref(), DeviceChoice::from_env()))
}

fn answer_json(a: &Answer) -> serde_json::Value {
    json!({
        "answer": a.answer,
        "grounded": a.grounded,
        "refused": a.refused,
        "refusal_reason": a.refusal_reason,
        "lang": a.lang,
        "question": a.question,
        "query": a.query,
        "citations": a.citations.iter().map(|c| json!({
            "n": c.n, "doc": c.doc, "page": c.page, "chunk_id": c.chunk_id, "quote": c.quote,
            "supported": c.supported, "inferred": c.inferred,
        })).collect::<Vec<_>>(),
        "unsupported_sentences": a.unsupported,
        "removed_citations": a.removed_citations,
        "model_answer": a.model_answer,
        "sources": a.sources.iter().map(|s| json!({
            "n": s.n, "doc": s.doc, "page": s.page, "chunk_id": s.chunk_id,
            "cosine": s.cosine, "coverage": s.coverage,
        })).collect::<Vec<_>>(),
        "relevance": a.relevance,
        "time_to_first_token_s": a.time_to_first_token.as_secs_f64(),
        "total_s": a.total_time.as_secs_f64(),
        "prompt_tokens": a.prompt_tokens,
        "generated_tokens": a.generated_tokens,
    })
}

pub(super) fn ask_cmd(args: AskArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let model =
        AdapterRegistry::new(paths).model_for(args.model.as_deref(), args.adapter.as_deref());
    let llm = load_llm_in_background(paths, model);
    let embedder = load_embedder(paths, args.embedding_model.as_deref())?;
    let rt = runtime()?;
    let opts = AskOptions {
        top_k: args.top_k,
        max_source_chars: args.max_source_chars,
        max_tokens: args.max_tokens,
        ..AskOptions::default()
    };
    let (catalog, index, sources) = rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let collections = readable_collections(&catalog, &args.collection).await?;
        let mut index = SearchIndex::open(&paths.index_dir())?;
        index.sync(&catalog).await?;
        let sources = kura::rag::retrieve(
            &catalog,
            &index,
            &embedder,
            &args.question,
            &collections,
            opts.top_k,
            &opts.fusion,
        )
        .await?;
        anyhow::Ok((catalog, index, sources))
    })?;
    let mut llm = llm
        .join()
        .map_err(|_| anyhow::anyhow!("loading the chat model panicked"))??;
    let adapters: Vec<_> = match &args.adapter {
        Some(spec) => vec![AdapterRegistry::new(paths).attach(&mut llm.model, spec)?],
        None => Vec::new(),
    };
    let cancel = cancel_on_ctrl_c();
    let answerer = Answerer {
        llm: &llm,
        embedder: &embedder,
        catalog: &catalog,
        index: &index,
        adapters: &adapters,
    };
    let mut stdout = std::io::stdout();
    let mut streamed = false;
    let lang = Lang::detect(&args.question);
    let a = answerer.answer_from(
        args.question.trim(),
        &args.question,
        lang,
        sources,
        &opts,
        Some(&cancel),
        &mut |e| {
            if let (AskEvent::Token { text }, false) = (&e, json_out) {
                streamed = true;
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
        },
        started,
    )?;
    if json_out {
        print_json(&answer_json(&a));
    } else {
        print_outcome(&a, streamed);
        eprintln!(
            "[first token after {:.1} s (model loading included), {} prompt tokens, {} generated, {:.1} s in all]",
            a.time_to_first_token.as_secs_f64(),
            a.prompt_tokens,
            a.generated_tokens,
            a.total_time.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
