//! `kura chat`: an interactive chat with the local model in the terminal
//! (streaming); with `--rag`, a conversation over the documents with citations.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::Args;

use crate::load::{load_embedder, load_llm, messages, readable_collections, runtime, ModelArgs};
use crate::term::{cancel_on_ctrl_c, print_outcome};
use kura::adapters::AdapterRegistry;
use kura::catalog::Catalog;
use kura::index::SearchIndex;
use kura::llm::ChatMessage;
use kura::paths::Paths;
use kura::rag::{Answerer, AskEvent, AskOptions, AskRequest, Turn};

/// `kura chat`: plain chat, or with `--rag` grounded answers from the documents.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model and sampling options.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Answer from the indexed documents, with citations (follow-ups are rewritten
    /// into standalone questions).
    #[arg(long)]
    pub rag: bool,
    /// With --rag: collections to answer from (repeatable; default: all).
    #[arg(long, short)]
    pub collection: Vec<String>,
    /// With --rag: sources placed in the prompt (`--top-k` is the sampling setting).
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// A LoRA adapter to chat with: a name under `<data>/adapters/` or a PEFT folder.
    #[arg(long)]
    pub adapter: Option<String>,
}

pub(super) fn chat_cmd(args: ModelArgs, adapter: Option<&str>, paths: &Paths) -> Result<ExitCode> {
    let model = AdapterRegistry::new(paths).model_for(args.model.as_deref(), adapter);
    let mut llm = load_llm(paths, model.as_deref(), args.device)?;
    let adapter = match adapter {
        Some(spec) => Some(AdapterRegistry::new(paths).attach(&mut llm.model, spec)?),
        None => None,
    };
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
    session.set_adapters(adapter.into_iter().collect());
    let mut history: Vec<ChatMessage> = Vec::new();
    eprintln!("kura chat — /reset で履歴を消去 (clear history), /exit または Ctrl-D で終了 (quit); Ctrl-C stops an answer");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                session.clear();
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        cancel.store(false, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        let g = llm.chat(
            &mut session,
            &messages(&args.system, &history),
            &args.params(),
            Some(&cancel),
            &mut |p| {
                let _ = write!(stdout, "{p}");
                let _ = stdout.flush();
            },
        );
        println!();
        match g {
            Ok(g) => history.push(ChatMessage::assistant(g.text)),
            Err(e) => {
                eprintln!("error: {e}");
                history.pop();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura chat --rag`: a conversation over the documents; each follow-up is
/// rewritten into a standalone question before retrieval.
pub(super) fn chat_rag_cmd(args: ChatArgs, paths: &Paths) -> Result<ExitCode> {
    let model =
        AdapterRegistry::new(paths).model_for(args.model.model.as_deref(), args.adapter.as_deref());
    let mut llm = load_llm(paths, model.as_deref(), args.model.device)?;
    let embedder = load_embedder(paths, None)?;
    let rt = runtime()?;
    let (catalog, index, collections) = rt.block_on(async {
        let catalog = Catalog::open(&paths.catalog_db()).await?;
        let collections = readable_collections(&catalog, &args.collection).await?;
        let mut index = SearchIndex::open(&paths.index_dir())?;
        index.sync(&catalog).await?;
        anyhow::Ok((catalog, index, collections))
    })?;
    let adapters: Vec<_> = match &args.adapter {
        Some(spec) => vec![AdapterRegistry::new(paths).attach(&mut llm.model, spec)?],
        None => Vec::new(),
    };
    let answerer = Answerer {
        llm: &llm,
        embedder: &embedder,
        catalog: &catalog,
        index: &index,
        adapters: &adapters,
    };
    let opts = AskOptions {
        top_k: args.sources,
        max_tokens: args.model.max_tokens.min(512),
        ..AskOptions::default()
    };
    let cancel = cancel_on_ctrl_c();
    let mut history: Vec<Turn> = Vec::new();
    eprintln!("kura chat --rag — 資料に基づいて回答します (answers from your documents). /reset で履歴を消去, /exit または Ctrl-D で終了");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                continue;
            }
            _ => {}
        }
        cancel.store(false, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        let mut streamed = false;
        let request = AskRequest {
            question: line,
            history: &history,
            collections: &collections,
        };
        let result = answerer.ask(
            rt.handle(),
            &request,
            &opts,
            Some(&cancel),
            &mut |e| match e {
                AskEvent::Query { query } => eprintln!("(検索クエリ / query: {query})"),
                AskEvent::Token { text } => {
                    streamed = true;
                    let _ = write!(stdout, "{text}");
                    let _ = stdout.flush();
                }
                _ => {}
            },
        );
        match result {
            Ok(a) => {
                print_outcome(&a, streamed);
                history.push(Turn {
                    question: a.query.clone(),
                    answer: a.answer.clone(),
                });
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
