//! `kura ask`, `kura chat --rag` and `kura eval rag`: grounded answers from the terminal.

use crate::adapters::AdapterRegistry;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;

use super::docs::load_embedder;
use super::llm::{load_llm, ModelArgs};
use super::print_json;
use crate::catalog::Catalog;
use crate::eval::rag::{self as eval_rag, RagQuestion};
use crate::index::SearchIndex;
use crate::ingest::chunk::ChunkParams;
use crate::llm::DeviceChoice;
use crate::llm::{GenerateParams, Llm, SamplingParams};
use crate::paths::Paths;
use crate::rag::refusal::{calibrate, FeatureCalibration, OUT_OF_CORPUS};
use crate::rag::{
    prompt, Answer, Answerer, AskEvent, AskOptions, AskRequest, Lang, RefusalReason, Turn,
};

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
    /// With --rag: sources placed in the prompt.
    #[arg(long, default_value_t = 4)]
    pub top_k: usize,
    /// A LoRA adapter to chat with: a name under `<data>/adapters/` or a PEFT folder.
    #[arg(long)]
    pub adapter: Option<String>,
}

/// `kura eval rag`
#[derive(Debug, Args)]
pub struct EvalRagArgs {
    /// SQuAD-format JSON (JSQuAD), or a Kura questions.jsonl with --corpus.
    #[arg(long)]
    pub dataset: PathBuf,
    /// For a questions.jsonl: the folder of documents the questions are about.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Answerable questions to ask (spread evenly over the set; default: all for a
    /// questions.jsonl, 40 for SQuAD).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Unanswerable questions (SQuAD: from held-out articles; default: limit / 4).
    #[arg(long)]
    pub unanswerable: Option<usize>,
    /// Only measure the refusal features of retrieval (no generation) and print the
    /// calibration of the relevance thresholds.
    #[arg(long)]
    pub calibrate: bool,
    /// Skip the closed-book baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Chat model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Sources placed in the prompt.
    #[arg(long, default_value_t = 4)]
    pub top_k: usize,
    /// The most tokens per answer.
    #[arg(long, default_value_t = 160)]
    pub max_tokens: usize,
    /// Keep the evaluation index here (default: a temporary folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Write every question's outcome here (JSON lines).
    #[arg(long)]
    pub details: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Loads the chat model on another thread while the caller does other work.
fn load_llm_in_background(
    paths: &Paths,
    name: Option<String>,
) -> std::thread::JoinHandle<Result<Llm>> {
    let paths = paths.clone();
    std::thread::spawn(move || load_llm(&paths, name.as_deref(), DeviceChoice::from_env()))
}

async fn readable_collections(catalog: &Catalog, names: &[String]) -> Result<Vec<i64>> {
    let cols = if names.is_empty() {
        catalog
            .summaries()
            .await?
            .into_iter()
            .map(|s| s.collection)
            .collect()
    } else {
        catalog.collections_named(names).await?
    };
    if cols.is_empty() {
        bail!("nothing is indexed yet: run `kura ingest PATH --collection NAME` first / まだ何も索引されていません");
    }
    Ok(cols.iter().map(|c| c.id).collect())
}

/// Prints the checked answer's aftermath: flags, citations or closest sources.
fn print_outcome(a: &Answer, streamed: bool) {
    let lang = a.lang;
    if streamed {
        println!();
    }
    if a.refused {
        if streamed {
            let why = match (a.refusal_reason, lang) {
                (Some(RefusalReason::Unsupported), Lang::Ja) => {
                    "(回答が資料で裏付けられなかったため)"
                }
                (Some(RefusalReason::Unsupported), Lang::En) => {
                    "(the answer was not backed by the documents)"
                }
                _ => "",
            };
            println!("\n→ {} {why}", a.answer);
        } else {
            println!("{}", a.answer);
        }
        if !a.sources.is_empty() {
            println!("\n{}:", lang.closest_heading());
            for s in a.sources.iter().take(3) {
                let snippet: String = s
                    .text
                    .chars()
                    .take(100)
                    .collect::<String>()
                    .replace('\n', " ");
                println!("  {} p.{}  {}", s.doc, s.page, snippet);
            }
        }
        return;
    }
    if a.answer != a.model_answer.trim() {
        let label = if lang == Lang::Ja {
            "確認済みの回答"
        } else {
            "Checked answer"
        };
        println!("\n{label}: {}", a.answer);
    }
    if !a.removed_citations.is_empty() {
        let list = a
            .removed_citations
            .iter()
            .map(|n| format!("[{n}]"))
            .collect::<Vec<_>>()
            .join(" ");
        match lang {
            Lang::Ja => println!(
                "※ 存在しない出典番号 {list} を削除しました(出典は{}件)",
                a.sources.len()
            ),
            Lang::En => println!(
                "※ removed citation(s) {list}: only {} sources were given",
                a.sources.len()
            ),
        }
    }
    for u in &a.unsupported {
        match lang {
            Lang::Ja => println!("⚠ 資料で裏付けられない文: {u}"),
            Lang::En => println!("⚠ not backed by the cited source: {u}"),
        }
    }
    println!("\n{}:", lang.sources_heading());
    for c in &a.citations {
        let mark = match (c.supported, c.inferred) {
            (false, _) => " ⚠",
            (true, true) => " (inferred)",
            _ => "",
        };
        println!(
            "  [{}] {} p.{} (chunk {}){mark}\n      「{}」",
            c.n, c.doc, c.page, c.chunk_id, c.quote
        );
    }
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
        let sources = crate::rag::retrieve(
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
    let cancel = super::llm::cancel_on_ctrl_c();
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
        top_k: args.top_k,
        max_tokens: args.model.max_tokens.min(512),
        ..AskOptions::default()
    };
    let cancel = super::llm::cancel_on_ctrl_c();
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

fn print_calibration(name: &str, cals: &[FeatureCalibration]) {
    println!("\n{name}");
    println!("| feature | answerable min/25%/50%/75%/max | unanswerable min/25%/50%/75%/max | AUC | threshold keeping 97% | answerable kept | unanswerable refused |");
    println!("|---|---|---|---|---|---|---|");
    let q = |v: &[f32; 5]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for c in cals {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            c.feature,
            q(&c.answerable),
            q(&c.unanswerable),
            c.auc,
            c.threshold,
            c.at_threshold.answerable_kept,
            c.at_threshold.unanswerable_refused
        );
    }
}

pub(super) fn eval_rag_cmd(args: EvalRagArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let embedder = load_embedder(paths, None)?;
    let dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kura-eval-rag-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let work = Paths {
        data_dir: dir.clone(),
        models_dir: paths.models_dir.clone(),
    };
    let rt = runtime()?;
    let chunking = ChunkParams {
        max_tokens: 256,
        overlap_tokens: 32,
    };
    let (catalog, index, coll, questions) = rt.block_on(async {
        let catalog = Catalog::open(&work.catalog_db()).await?;
        let mut index = SearchIndex::open(&work.index_dir())?;
        let (coll, questions) = if let Some(corpus) = &args.corpus {
            let mut qs = eval_rag::load_questions_jsonl(&args.dataset)?;
            if let Some(n) = args.limit {
                let (pos, neg): (Vec<_>, Vec<_>) = qs.into_iter().partition(|q| q.answerable);
                qs = eval_rag::spread(pos, n);
                qs.extend(eval_rag::spread(
                    neg,
                    args.unanswerable.unwrap_or(usize::MAX),
                ));
            }
            if args.calibrate
                || args.unanswerable.is_none()
                || args.unanswerable.is_some_and(|n| n > 5)
            {
                // The written out-of-corpus questions join the unanswerable side.
                for (i, q) in OUT_OF_CORPUS.iter().enumerate() {
                    qs.push(RagQuestion {
                        id: format!("ooc-{:03}", i + 1),
                        question: q.to_string(),
                        answers: vec![],
                        doc: None,
                        page: None,
                        answerable: false,
                    });
                }
            }
            let pb = if json_out {
                ProgressBar::hidden()
            } else {
                ProgressBar::new_spinner()
            };
            pb.set_message("indexing the corpus");
            let id = super::docs::index_eval_folder(
                corpus, chunking, &catalog, &mut index, &embedder, &pb,
            )
            .await?;
            (id, qs)
        } else {
            let n = args.limit.unwrap_or(if args.calibrate { 400 } else { 40 });
            let (docs, pos, neg) = eval_rag::load_squad_split(
                &args.dataset,
                n,
                args.unanswerable.unwrap_or((n / 4).max(5)),
            )?;
            let pb = if json_out {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(docs.len() as u64)
            };
            let id = crate::eval::retrieval::index_corpus(
                &docs,
                "eval",
                &catalog,
                &mut index,
                &embedder,
                &chunking,
                &|i| pb.set_position(i as u64),
            )
            .await?;
            pb.finish_and_clear();
            let mut qs = pos;
            qs.extend(neg);
            (id, qs)
        };
        anyhow::Ok((catalog, index, coll, questions))
    })?;
    let opts = AskOptions {
        top_k: args.top_k,
        max_tokens: args.max_tokens,
        ..AskOptions::default()
    };

    let mut details = args
        .details
        .as_ref()
        .map(std::fs::File::create)
        .transpose()?;
    if args.calibrate {
        let mut cos = (Vec::new(), Vec::new());
        let mut cov = (Vec::new(), Vec::new());
        let mut gold_found = 0usize;
        for q in &questions {
            let s = rt.block_on(crate::rag::retrieve(
                &catalog,
                &index,
                &embedder,
                &q.question,
                &[coll],
                opts.top_k,
                &opts.fusion,
            ))?;
            let r = crate::rag::Relevance::of(&s);
            if let Some(f) = details.as_mut() {
                writeln!(
                    f,
                    "{}",
                    json!({"id": q.id, "answerable": q.answerable, "cosine": r.cosine, "coverage": r.coverage, "question": q.question})
                )?;
            }
            if q.answerable {
                gold_found += s.iter().any(|x| eval_rag::is_gold_source(q, x)) as usize;
                cos.0.push(r.cosine);
                cov.0.push(r.coverage);
            } else {
                cos.1.push(r.cosine);
                cov.1.push(r.coverage);
            }
        }
        let cals = vec![
            calibrate("best cosine", &cos.0, &cos.1, 0.97),
            calibrate("best coverage", &cov.0, &cov.1, 0.97),
        ];
        let policy = opts.policy;
        let either = |c: &[f32], v: &[f32]| -> Vec<bool> {
            c.iter()
                .zip(v)
                .map(|(c, v)| {
                    policy.is_relevant(crate::rag::Relevance {
                        cosine: *c,
                        coverage: *v,
                    })
                })
                .collect()
        };
        let pos_kept = either(&cos.0, &cov.0).iter().filter(|x| **x).count() as f64
            / cos.0.len().max(1) as f64;
        let neg_refused = either(&cos.1, &cov.1).iter().filter(|x| !**x).count() as f64
            / cos.1.len().max(1) as f64;
        if json_out {
            print_json(
                &json!({"dataset": args.dataset, "answerable": cos.0.len(), "unanswerable": cos.1.len(),
                "gold_retrieved": gold_found as f64 / cos.0.len().max(1) as f64, "features": cals, "policy": policy,
                "policy_answerable_kept": pos_kept, "policy_unanswerable_refused": neg_refused}),
            );
        } else {
            print_calibration(
                &format!(
                    "{} — {} answerable, {} unanswerable questions (gold passage in top {}: {:.3})",
                    args.dataset.display(),
                    cos.0.len(),
                    cos.1.len(),
                    opts.top_k,
                    gold_found as f64 / cos.0.len().max(1) as f64
                ),
                &cals,
            );
            println!(
                "\ncurrent policy (cosine ≥ {} or coverage ≥ {}): answerable kept {:.3}, unanswerable refused {:.3}",
                policy.min_cosine, policy.min_coverage, pos_kept, neg_refused
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let llm = load_llm(paths, args.model.as_deref(), DeviceChoice::from_env())?;
    let answerer = Answerer {
        llm: &llm,
        embedder: &embedder,
        catalog: &catalog,
        index: &index,
        adapters: &[],
    };
    let mut rag_out = Vec::new();
    let mut cb_out = Vec::new();
    // Support of claims: RAG answers that are correct vs closed-book answers, both
    // checked against the retrieved sources (calibrates min_support).
    let mut support = (Vec::new(), Vec::new());
    let n = questions.len();
    for (i, q) in questions.iter().enumerate() {
        let t = Instant::now();
        let request = AskRequest {
            question: &q.question,
            history: &[],
            collections: &[coll],
        };
        let a = answerer.ask(rt.handle(), &request, &opts, None, &mut |_| {})?;
        let o = eval_rag::score_rag(q, &a);
        if o.correct {
            support
                .0
                .extend(a.sentences.iter().filter(|s| s.is_claim).map(|s| s.support));
        }
        let mut line = json!({"system": "rag", "question": q.question, "outcome": o, "model_answer": a.model_answer});
        rag_out.push(o);
        if !args.no_baseline {
            let lang = Lang::detect(&q.question);
            let params = GenerateParams {
                max_tokens: args.max_tokens,
                sampling: SamplingParams {
                    repeat_penalty: 1.05,
                    repeat_last_n: 64,
                    ..SamplingParams::greedy()
                },
                ..GenerateParams::default()
            };
            let mut session = llm.model.new_session();
            let t0 = Instant::now();
            let mut first = None;
            let g = llm.chat(
                &mut session,
                &prompt::closed_book_messages(&q.question, lang),
                &params,
                None,
                &mut |_| {
                    first.get_or_insert(t0.elapsed());
                },
            )?;
            let cb = eval_rag::score_closed_book(
                q,
                &g.text,
                first.unwrap_or_default().as_secs_f64(),
                t0.elapsed().as_secs_f64(),
            );
            if q.answerable && !a.sources.is_empty() {
                let c = crate::rag::check(&g.text, &q.question, &a.sources, 0.0);
                support
                    .1
                    .extend(c.sentences.iter().filter(|s| s.is_claim).map(|s| {
                        // The best support any retrieved source gives the claim.
                        a.sources
                            .iter()
                            .map(|src| {
                                crate::rag::overlap::containment(
                                    &crate::rag::overlap::content_units(&s.text),
                                    &crate::rag::overlap::content_units(&src.text),
                                )
                            })
                            .fold(0.0, f32::max)
                    }));
            }
            line["closed_book"] = json!(cb);
            cb_out.push(cb);
        }
        if let Some(f) = details.as_mut() {
            writeln!(f, "{line}")?;
        }
        if !json_out {
            let o = rag_out.last().expect("pushed");
            eprintln!(
                "[{}/{n}] {} {} {:.0}s  {}",
                i + 1,
                q.id,
                if !q.answerable {
                    if o.refused {
                        "refused(ok)"
                    } else {
                        "answered(!)"
                    }
                } else if o.correct {
                    "correct"
                } else if o.refused {
                    "refused(!)"
                } else {
                    "wrong"
                },
                t.elapsed().as_secs_f64(),
                o.answer
                    .chars()
                    .take(60)
                    .collect::<String>()
                    .replace('\n', " ")
            );
        }
    }
    let mut scores = vec![eval_rag::aggregate("rag", &rag_out)];
    if !args.no_baseline {
        scores.push(eval_rag::aggregate("closed-book", &cb_out));
    }
    let sup_cal = calibrate("claim support", &support.0, &support.1, 0.97);
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if json_out {
        print_json(
            &json!({"dataset": args.dataset, "scores": scores, "support_calibration": sup_cal}),
        );
    } else {
        println!(
            "{} ({} answerable, {} unanswerable; model {})",
            args.dataset.display(),
            scores[0].answerable,
            scores[0].unanswerable,
            args.model.as_deref().unwrap_or("default")
        );
        println!("| system | accuracy (gold contained) | char-F1 | false refusals | citation precision | gold passage retrieved | refusal rate (unanswerable) | p50 first token s | p50 total s |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into());
        for s in &scores {
            println!(
                "| {} | {:.3} | {:.3} | {:.3} | {} | {} | {:.3} | {:.1} | {:.1} |",
                s.system,
                s.accuracy,
                s.char_f1,
                s.false_refusals,
                opt(s.citation_precision),
                opt(s.gold_retrieved),
                s.refusal_rate,
                s.ttft_p50_s,
                s.total_p50_s
            );
        }
        print_calibration("claim support (correct RAG answers vs closed-book answers, against the retrieved sources)", &[sup_cal]);
    }
    Ok(ExitCode::SUCCESS)
}
