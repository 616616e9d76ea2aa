//! `kura eval retrieval`, `kura eval rag` and `kura eval adapter`: evaluations on
//! real data, printed as tables (or JSON).
//!
//! - retrieval: Recall@k, MRR@10 and nDCG@10 of BM25, vectors and hybrid;
//! - rag: grounded answers vs the same model without retrieval (`--calibrate`: the
//!   refusal thresholds' data);
//! - adapter: a LoRA adapter vs its base model on held-out examples.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde_json::json;

use crate::load::{load_embedder, load_llm, runtime, tempfile_dir};
use crate::term::{bar, cancel_on_ctrl_c, eval_progress, print_json, print_report};
use kura::adapters::report::ReportTarget;
use kura::catalog::Catalog;
use kura::embed::Embedder;
use kura::eval::rag::{self as eval_rag, RagQuestion};
use kura::eval::retrieval::{self, KeyBy, Query};
use kura::index::{FusionMethod, FusionParams, SearchIndex};
use kura::ingest::chunk::ChunkParams;
use kura::ingest::pipeline::{ingest, IngestOptions, IngestProgress};
use kura::llm::{DeviceChoice, GenerateParams, SamplingParams};
use kura::paths::Paths;
use kura::rag::refusal::{calibrate, FeatureCalibration, OUT_OF_CORPUS};
use kura::rag::{prompt, Answerer, AskOptions, AskRequest, Lang};
use kura::train::{dataset, EvalOptions};

/// `kura eval …`
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Recall@k, MRR@10 and nDCG@10 of BM25, vectors and hybrid on a data set.
    Retrieval(EvalRetrievalArgs),
    /// Grounded answers vs the same model without retrieval: accuracy, citation
    /// precision, refusals (`--calibrate`: the refusal thresholds' data).
    Rag(EvalRagArgs),
    /// "Did it help?": a LoRA adapter vs its base model on held-out examples (loss,
    /// perplexity, exact match, character F1); writes report.json + report.png.
    Adapter(EvalAdapterArgs),
}

/// Runs one `kura eval …` command.
pub(super) fn eval_cmd(cmd: EvalCommand, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Retrieval(args) => eval_retrieval_cmd(args, paths, json_out),
        EvalCommand::Rag(args) => eval_rag_cmd(args, paths, json_out),
        EvalCommand::Adapter(args) => eval_adapter_cmd(args, paths, json_out),
    }
}

/// `kura eval retrieval`
#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// SQuAD-format JSON (e.g. JSQuAD), or a Kura questions.jsonl with --corpus.
    #[arg(long)]
    pub dataset: PathBuf,
    /// For a questions.jsonl: the folder of documents the questions are about.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Score only this many questions (spread evenly over the set).
    #[arg(long)]
    pub max_questions: Option<usize>,
    /// Chunk size in tokens.
    #[arg(long, default_value_t = 256)]
    pub chunk_tokens: usize,
    /// How BM25 and vectors are fused: `scores` (normalised scores) or `rrf` (reciprocal ranks).
    #[arg(long, default_value_t = FusionParams::default().method)]
    pub fusion: FusionMethod,
    /// RRF constant k (with `--fusion rrf`).
    #[arg(long, default_value_t = FusionParams::default().k)]
    pub rrf_k: f32,
    /// Weight of BM25 in the fusion.
    #[arg(long, default_value_t = FusionParams::default().bm25_weight)]
    pub bm25_weight: f32,
    /// Weight of the vectors in the fusion.
    #[arg(long, default_value_t = FusionParams::default().vector_weight)]
    pub vector_weight: f32,
    /// Keep the evaluation index here (default: a temporary folder). A SQuAD corpus
    /// already indexed there is reused, not embedded again.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Instead of one fusion setting, score a grid of RRF k × vector weight ×
    /// candidates from one search per query (for tuning on `valid`).
    #[arg(long)]
    pub sweep: bool,
}

/// One line of `assets/questions.jsonl`.
#[derive(serde::Deserialize)]
struct QuestionLine {
    question: String,
    doc: Option<String>,
    page: Option<i64>,
    #[serde(default = "yes")]
    answerable: bool,
}

fn yes() -> bool {
    true
}

fn eval_retrieval_cmd(args: EvalRetrievalArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let embedder = load_embedder(paths, None)?;
    let tmp = tempfile_dir(args.work_dir.clone())?;
    let work = Paths {
        data_dir: tmp.clone(),
        models_dir: paths.models_dir.clone(),
    };
    let chunking = ChunkParams {
        max_tokens: args.chunk_tokens,
        overlap_tokens: 32,
    };
    let fusion = FusionParams {
        method: args.fusion,
        k: args.rrf_k,
        bm25_weight: args.bm25_weight,
        vector_weight: args.vector_weight,
        ..Default::default()
    };
    let rt = runtime()?;
    let scores = rt.block_on(async {
        let catalog = Catalog::open(&work.catalog_db()).await?;
        let mut index = SearchIndex::open(&work.index_dir())?;
        let (queries, coll_id, key_by) = if let Some(corpus) = &args.corpus {
            let text = std::fs::read_to_string(&args.dataset)
                .with_context(|| format!("reading {}", args.dataset.display()))?;
            let mut queries = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let q: QuestionLine = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", args.dataset.display(), i + 1))?;
                if let (true, Some(doc), Some(page)) = (q.answerable, q.doc, q.page) {
                    queries.push(Query {
                        question: kura::ingest::normalize::normalize_text(&q.question),
                        relevant: format!("{doc}#{page}"),
                    });
                }
            }
            let pb = if json_out {
                ProgressBar::hidden()
            } else {
                bar(0, "index corpus")
            };
            let id =
                index_eval_folder(corpus, chunking, &catalog, &mut index, &embedder, &pb).await?;
            (queries, id, KeyBy::Page)
        } else {
            let (docs, queries) = retrieval::load_squad(&args.dataset, args.max_questions)?;
            let reusable = catalog
                .summaries()
                .await?
                .into_iter()
                .find(|c| c.collection.name == "eval" && c.documents == docs.len() as i64);
            let id = if let Some(done) = reusable {
                if !json_out {
                    eprintln!(
                        "reusing the {} passages already indexed in {}",
                        done.documents,
                        tmp.display()
                    );
                }
                done.collection.id
            } else {
                let pb = if json_out {
                    ProgressBar::hidden()
                } else {
                    bar(docs.len() as u64, "index passages")
                };
                let id = retrieval::index_corpus(
                    &docs,
                    "eval",
                    &catalog,
                    &mut index,
                    &embedder,
                    &chunking,
                    &|n| pb.set_position(n as u64),
                )
                .await?;
                pb.finish_and_clear();
                id
            };
            (queries, id, KeyBy::Document)
        };
        let pb = if json_out {
            ProgressBar::hidden()
        } else {
            bar(queries.len() as u64, "questions")
        };
        if args.sweep {
            let lists = retrieval::candidate_lists(
                &queries,
                coll_id,
                key_by,
                &catalog,
                &index,
                &embedder,
                100,
                &|n| pb.set_position(n as u64),
            )
            .await?;
            pb.finish_and_clear();
            return anyhow::Ok(Err(lists));
        }
        let s = retrieval::evaluate(
            &queries,
            coll_id,
            key_by,
            &catalog,
            &index,
            &embedder,
            &fusion,
            &|n| pb.set_position(n as u64),
        )
        .await?;
        pb.finish_and_clear();
        anyhow::Ok(Ok(s))
    })?;
    let scores = match scores {
        Ok(s) => s,
        Err(lists) => {
            if args.work_dir.is_none() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            print_sweep(&args, &lists, json_out);
            return Ok(ExitCode::SUCCESS);
        }
    };
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if json_out {
        print_json(&json!({"dataset": args.dataset, "scores": scores}));
    } else {
        println!("{}", args.dataset.display());
        println!("| retriever | questions | R@1 | R@5 | R@10 | MRR@10 | nDCG@10 | p50 ms |");
        println!("|---|---|---|---|---|---|---|---|");
        for s in &scores {
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
                s.mode,
                s.questions,
                s.recall_at_1,
                s.recall_at_5,
                s.recall_at_10,
                s.mrr_at_10,
                s.ndcg_at_10,
                s.p50_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ingests the documents under `corpus` into the collection `eval` of an evaluation
/// catalog (for `kura eval retrieval` and `kura eval rag` on a question list), showing
/// progress on `pb`; returns the collection's id.
async fn index_eval_folder(
    corpus: &std::path::Path,
    chunking: ChunkParams,
    catalog: &Catalog,
    index: &mut SearchIndex,
    embedder: &Embedder,
    pb: &ProgressBar,
) -> Result<i64> {
    let progress = |p: IngestProgress| match p {
        IngestProgress::Found(n) => pb.set_length(n as u64),
        IngestProgress::File { .. } => pb.inc(1),
        IngestProgress::Embedding { .. } => {}
    };
    let opts = IngestOptions {
        chunking,
        ..Default::default()
    };
    ingest(
        &[corpus.to_path_buf()],
        "eval",
        &opts,
        catalog,
        index,
        embedder,
        &progress,
    )
    .await?;
    pb.finish_and_clear();
    Ok(catalog.collection("eval").await?.id)
}

/// Prints the fusion grid: BM25, vectors, the current defaults and the best settings.
fn print_sweep(args: &EvalRetrievalArgs, lists: &retrieval::CandidateLists, json_out: bool) {
    let ks = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 100.0];
    let weights = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25];
    let shares = [0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6];
    let candidates = [10, 20, 50, 100];
    let (bm25, vector, points) =
        retrieval::sweep_fusion(lists, &ks, &weights, &shares, &candidates);
    let d = FusionParams::default();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
    let current = points.iter().find(|p| {
        let f = &p.fusion;
        f.method == d.method
            && f.candidates == d.candidates
            && match d.method {
                FusionMethod::Rrf => {
                    f.k == d.k && close(f.vector_weight, d.vector_weight / d.bm25_weight)
                }
                FusionMethod::Scores => {
                    close(f.vector_weight, d.vector_weight) && close(f.bm25_weight, d.bm25_weight)
                }
            }
    });
    if json_out {
        print_json(&json!({
            "dataset": args.dataset,
            "bm25": bm25,
            "vector": vector,
            "defaults": current,
            "best": points.iter().take(20).collect::<Vec<_>>(),
        }));
        return;
    }
    println!(
        "{} — fusion sweep over {} settings",
        args.dataset.display(),
        points.len()
    );
    println!("| retriever | fusion | vector weight | candidates | R@1 | R@5 | MRR@10 | nDCG@10 |");
    println!("|---|---|---|---|---|---|---|---|");
    let row = |name: &str, f: Option<&FusionParams>, s: &retrieval::RetrievalScores| {
        let (k, w, n) = f.map_or(("-".into(), "-".into(), "-".into()), |f| {
            (
                match f.method {
                    FusionMethod::Rrf => format!("RRF k = {}", f.k),
                    FusionMethod::Scores => "scores".to_string(),
                },
                format!("{}", f.vector_weight),
                f.candidates.to_string(),
            )
        });
        println!(
            "| {name} | {k} | {w} | {n} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.recall_at_1, s.recall_at_5, s.mrr_at_10, s.ndcg_at_10
        );
    };
    row("bm25", None, &bm25);
    row("vector", None, &vector);
    if let Some(c) = current {
        row("hybrid (defaults)", Some(&c.fusion), &c.scores);
    }
    for p in points.iter().take(15) {
        row("hybrid", Some(&p.fusion), &p.scores);
    }
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

fn eval_rag_cmd(args: EvalRagArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
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
            let id =
                index_eval_folder(corpus, chunking, &catalog, &mut index, &embedder, &pb).await?;
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
            let id = kura::eval::retrieval::index_corpus(
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
            let s = rt.block_on(kura::rag::retrieve(
                &catalog,
                &index,
                &embedder,
                &q.question,
                &[coll],
                opts.top_k,
                &opts.fusion,
            ))?;
            let r = kura::rag::Relevance::of(&s);
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
                    policy.is_relevant(kura::rag::Relevance {
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
                let c = kura::rag::check(&g.text, &q.question, &a.sources, 0.0);
                support
                    .1
                    .extend(c.sentences.iter().filter(|s| s.is_claim).map(|s| {
                        // The best support any retrieved source gives the claim.
                        a.sources
                            .iter()
                            .map(|src| {
                                kura::rag::overlap::containment(
                                    &kura::rag::overlap::content_units(&s.text),
                                    &kura::rag::overlap::content_units(&src.text),
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

/// `kura eval adapter`
#[derive(Debug, Args)]
pub struct EvalAdapterArgs {
    /// A job (its name under `<data>/jobs/`, or its folder) or an adapter (a name
    /// under `<data>/adapters/`, or a PEFT folder).
    pub name: String,
    /// Held-out examples (JSONL, OpenAI or Alpaca lines; the last assistant message is
    /// the reference). Default: the job's eval split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The base model (registry name or GGUF path). Default: the job's, or the
    /// adapter config's `base_model_name_or_path`.
    #[arg(long)]
    pub model: Option<String>,
    /// Score at most this many examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens per held-out answer (greedy).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Where to write report.json and report.png (default: the job's or adapter's
    /// folder, `report/`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where to run.
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
}

fn eval_adapter_cmd(args: EvalAdapterArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let target = ReportTarget::resolve(&args.name, args.model.as_deref(), paths)?;
    let data = args.data.clone().or(target.eval.clone()).ok_or_else(|| {
        anyhow::anyhow!(
            "no held-out data for `{}`: pass --data FILE.jsonl (評価データを指定してください)",
            target.name
        )
    })?;
    let examples = dataset::read_jsonl(&data)?;
    let options = EvalOptions {
        max_new_tokens: args.max_tokens,
        limit: args.limit,
        ..EvalOptions::default()
    };
    let device = args.device.open()?;
    let cancel = cancel_on_ctrl_c();
    let scoring = examples.len().min(options.limit.unwrap_or(usize::MAX));
    let report = target.evaluate(&examples, &options, &device, Some(&cancel), &mut |p| {
        eval_progress(&target.name, &target.info.base_model, scoring, p, json_out)
    })?;
    let out = args.output.unwrap_or(target.report_dir);
    let written = report.write(&out);
    print_report(&report, written.as_ref().ok(), json_out);
    if let Err(e) = written {
        eprintln!("warning: report in {} incomplete: {e}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
