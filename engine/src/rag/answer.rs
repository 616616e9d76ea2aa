//! [`Answerer`]: the question-to-checked-answer pipeline, with events for the
//! terminal, the HTTP server and the evaluation alike.
//!
//! ```text
//! question ─▶ [standalone rewrite, if a follow-up] ─▶ hybrid search (caller's collections)
//!          ─▶ gate 1: relevant? ── no ─▶ refusal + closest sources (model not called)
//!          ─▶ prompt with numbered sources ─▶ model, streamed ─▶ citation check
//!          ─▶ gate 2: model refused, or nothing supported? ─▶ refusal + closest sources
//!          ─▶ answer + citations (doc, page, chunk, quote) + flagged sentences
//! ```
//!
//! Events come in this order: [`AskEvent::Query`] (only when the question was
//! rewritten), [`AskEvent::Sources`], zero or more [`AskEvent::Token`]s,
//! [`AskEvent::Citations`], [`AskEvent::Done`]. The streamed tokens are the model's
//! raw text; the checked text (out-of-range markers removed, inferred ones added,
//! or the refusal) is in `Citations` and in the returned [`Answer`].
//!
//! Wiring for a server (`POST /api/ask`): hold `Arc`s of the [`Llm`], the
//! [`Embedder`], the [`Catalog`] and the [`SearchIndex`]; in
//! `tokio::task::spawn_blocking`, build an `Answerer` from references and call
//! [`Answerer::ask`] with `tokio::runtime::Handle::current()`, the user's readable
//! collection ids, a cancel flag set when the client disconnects, and a callback
//! that sends each event to the SSE stream (events are `Serialize`, tagged by
//! `"event"`).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::Catalog;
use crate::embed::Embedder;
use crate::index::{FusionParams, SearchIndex};
use crate::llm::{FinishReason, GenerateParams, Llm, SamplingParams};

use super::citation::{check, CheckedAnswer, Citation, SentenceCheck};
use super::lang::{is_refusal, Lang};
use super::prompt;
use super::refusal::{RefusalPolicy, Relevance};
use super::retrieve::{retrieve, Source};
use super::rewrite::{standalone_query, Turn};
use super::RagError;

/// Options of one answer.
#[derive(Debug, Clone, Serialize)]
pub struct AskOptions {
    /// Sources placed in the prompt.
    pub top_k: usize,
    /// Characters of each source's excerpt in the prompt.
    pub max_source_chars: usize,
    /// Most tokens of the answer.
    pub max_tokens: usize,
    /// Refusal thresholds.
    pub policy: RefusalPolicy,
    /// Rewrite follow-ups with the model (else by rule only).
    pub rewrite_with_model: bool,
    /// Fusion settings of the hybrid search.
    #[serde(skip)]
    pub fusion: FusionParams,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            top_k: 4,
            max_source_chars: 400,
            max_tokens: 256,
            policy: RefusalPolicy::default(),
            rewrite_with_model: true,
            fusion: FusionParams::ANSWERS,
        }
    }
}

/// A source as shown to a client (no scores' internals beyond what explains a refusal).
#[derive(Debug, Clone, Serialize)]
pub struct SourceRef {
    /// Its number in the prompt.
    pub n: usize,
    /// Document path.
    pub doc: String,
    /// 1-based page.
    pub page: i64,
    /// The chunk.
    pub chunk_id: i64,
    /// The first characters of the chunk.
    pub snippet: String,
    /// Query–chunk cosine.
    pub cosine: f32,
    /// Share of the question's content units in the chunk.
    pub coverage: f32,
}

impl From<&Source> for SourceRef {
    fn from(s: &Source) -> Self {
        SourceRef {
            n: s.n,
            doc: s.doc.clone(),
            page: s.page,
            chunk_id: s.chunk_id,
            snippet: s
                .text
                .chars()
                .take(160)
                .collect::<String>()
                .replace('\n', " "),
            cosine: s.cosine,
            coverage: s.coverage,
        }
    }
}

/// What happens while answering, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AskEvent {
    /// The follow-up was rewritten into this standalone query.
    Query {
        /// The query used for retrieval and in the prompt.
        query: String,
    },
    /// The retrieved sources, numbered; `relevant` is gate 1's verdict.
    Sources {
        /// The sources.
        sources: Vec<SourceRef>,
        /// Whether retrieval found something relevant (else a refusal follows).
        relevant: bool,
    },
    /// A piece of the model's answer, as it is generated.
    Token {
        /// The text.
        text: String,
    },
    /// The checked answer: final text, citations, flagged sentences.
    Citations {
        /// The answer after the check (or the refusal).
        answer: String,
        /// Cited sources with quotes.
        citations: Vec<Citation>,
        /// Claims not backed by their sources.
        unsupported: Vec<String>,
        /// Out-of-range citation numbers removed.
        removed: Vec<usize>,
    },
    /// Finished.
    Done {
        /// Every claim is backed by a cited source.
        grounded: bool,
        /// Kura said the documents do not hold the answer.
        refused: bool,
    },
}

/// Why an answer is a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Gate 1: nothing relevant retrieved (the model was not called).
    NotRelevant,
    /// The model said the documents do not answer.
    ModelRefused,
    /// Gate 2: no claim of the model's answer is supported by the sources.
    Unsupported,
}

/// A finished answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The question as asked.
    pub question: String,
    /// The standalone query used (differs from `question` for rewritten follow-ups).
    pub query: String,
    /// Language of the question (and the answer).
    pub lang: Lang,
    /// The answer to show (checked; the refusal when refused).
    pub answer: String,
    /// The model's raw text (empty when the model was not called).
    pub model_answer: String,
    /// Every claim is backed by a cited source.
    pub grounded: bool,
    /// Kura said the documents do not hold the answer.
    pub refused: bool,
    /// Why, when refused.
    pub refusal_reason: Option<RefusalReason>,
    /// Cited sources with quotes (empty when refused).
    pub citations: Vec<Citation>,
    /// Claims not backed by their sources.
    pub unsupported: Vec<String>,
    /// Out-of-range citation numbers removed from the text.
    pub removed_citations: Vec<usize>,
    /// Per-sentence verdicts.
    pub sentences: Vec<SentenceCheck>,
    /// The retrieved sources (the closest ones, for a refusal).
    pub sources: Vec<Source>,
    /// Gate-1 features.
    pub relevance: Relevance,
    /// Time from the question to the first token of the answer (or to the refusal).
    #[serde(serialize_with = "ser_secs")]
    pub time_to_first_token: Duration,
    /// Time for the whole answer.
    #[serde(serialize_with = "ser_secs")]
    pub total_time: Duration,
    /// Prompt tokens (0 when the model was not called).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub generated_tokens: usize,
    /// Whether the caller cancelled.
    pub cancelled: bool,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One question to answer.
#[derive(Debug, Clone, Copy)]
pub struct AskRequest<'r> {
    /// The question as asked.
    pub question: &'r str,
    /// Earlier turns of the conversation, oldest first (empty for a single question).
    pub history: &'r [Turn],
    /// The collections the caller may read: nothing else is searched.
    pub collections: &'r [i64],
}

/// The answering pipeline over borrowed parts (see the module docs).
pub struct Answerer<'a> {
    /// The chat model.
    pub llm: &'a Llm,
    /// The embedding model the collections were indexed with.
    pub embedder: &'a Embedder,
    /// The catalog.
    pub catalog: &'a Catalog,
    /// The search index.
    pub index: &'a SearchIndex,
    /// LoRA adapters of `llm` to answer with (empty: the base model).
    pub adapters: &'a [crate::llm::AdapterId],
}

impl Answerer<'_> {
    /// Retrieval only (async: the catalog is).
    pub async fn retrieve(
        &self,
        query: &str,
        collections: &[i64],
        opts: &AskOptions,
    ) -> Result<Vec<Source>, RagError> {
        retrieve(
            self.catalog,
            self.index,
            self.embedder,
            query,
            collections,
            opts.top_k,
            &opts.fusion,
        )
        .await
    }

    /// Answers `request.question` from the documents of `request.collections` (the
    /// ids the caller may read), after `request.history` (earlier turns of a
    /// conversation, oldest first). Blocking: call it from a thread that is not
    /// running async tasks (the CLI's main thread, or `spawn_blocking`), with a
    /// handle of the runtime that serves the catalog.
    pub fn ask(
        &self,
        runtime: &tokio::runtime::Handle,
        request: &AskRequest<'_>,
        opts: &AskOptions,
        cancel: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<Answer, RagError> {
        let AskRequest {
            question,
            history,
            collections,
        } = *request;
        let started = Instant::now();
        let lang = Lang::detect(question);
        let llm_for_rewrite = opts.rewrite_with_model.then_some(self.llm);
        let query = standalone_query(llm_for_rewrite, history, question);
        if query != question.trim() {
            on_event(AskEvent::Query {
                query: query.clone(),
            });
        }
        let sources = runtime.block_on(self.retrieve(&query, collections, opts))?;
        self.answer_from(
            &query, question, lang, sources, opts, cancel, on_event, started,
        )
    }

    /// Answers from already retrieved `sources` (the evaluation uses this to score
    /// retrieval and generation from one search).
    #[allow(clippy::too_many_arguments)]
    pub fn answer_from(
        &self,
        query: &str,
        question: &str,
        lang: Lang,
        sources: Vec<Source>,
        opts: &AskOptions,
        cancel: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(AskEvent),
        started: Instant,
    ) -> Result<Answer, RagError> {
        let relevance = Relevance::of(&sources);
        let relevant = !sources.is_empty() && opts.policy.is_relevant(relevance);
        on_event(AskEvent::Sources {
            sources: sources.iter().map(SourceRef::from).collect(),
            relevant,
        });
        let mut out = Answer {
            question: question.to_string(),
            query: query.to_string(),
            lang,
            answer: String::new(),
            model_answer: String::new(),
            grounded: false,
            refused: false,
            refusal_reason: None,
            citations: Vec::new(),
            unsupported: Vec::new(),
            removed_citations: Vec::new(),
            sentences: Vec::new(),
            sources,
            relevance,
            time_to_first_token: Duration::ZERO,
            total_time: Duration::ZERO,
            prompt_tokens: 0,
            generated_tokens: 0,
            cancelled: false,
        };
        if !relevant {
            out.refused = true;
            out.refusal_reason = Some(RefusalReason::NotRelevant);
            out.answer = lang.refusal().to_string();
            out.time_to_first_token = started.elapsed();
            return Ok(self.finish(out, started, on_event));
        }
        let messages = prompt::messages(query, lang, &out.sources, opts.max_source_chars);
        for m in &messages {
            tracing::debug!(role = ?m.role, "prompt message:\n{}", m.content);
        }
        let params = GenerateParams {
            max_tokens: opts.max_tokens,
            sampling: SamplingParams {
                repeat_penalty: 1.05,
                repeat_last_n: 64,
                ..SamplingParams::greedy()
            },
            ..GenerateParams::default()
        };
        let mut session = self.llm.model.new_session();
        session.set_adapters(self.adapters.to_vec());
        let mut first: Option<Duration> = None;
        let g = self
            .llm
            .chat(&mut session, &messages, &params, cancel, &mut |piece| {
                if first.is_none() {
                    first = Some(started.elapsed());
                }
                on_event(AskEvent::Token {
                    text: piece.to_string(),
                });
            })?;
        out.time_to_first_token = first.unwrap_or_else(|| started.elapsed());
        out.prompt_tokens = g.prompt_tokens;
        out.generated_tokens = g.generated_tokens;
        out.cancelled = g.finish_reason == FinishReason::Cancelled;
        out.model_answer = g.text.clone();
        let checked: CheckedAnswer = check(&g.text, query, &out.sources, opts.policy.min_support);
        out.sentences = checked.sentences.clone();
        out.removed_citations = checked.removed.clone();
        if checked.refused || is_refusal(&g.text) {
            out.refused = true;
            out.refusal_reason = Some(RefusalReason::ModelRefused);
            out.answer = lang.refusal().to_string();
        } else if !checked.any_supported() {
            out.refused = true;
            out.refusal_reason = Some(RefusalReason::Unsupported);
            out.answer = lang.refusal().to_string();
            out.unsupported = checked.unsupported.clone();
        } else {
            out.answer = checked.text;
            out.citations = checked.citations;
            out.unsupported = checked.unsupported;
            out.grounded = checked.grounded;
        }
        Ok(self.finish(out, started, on_event))
    }

    fn finish(
        &self,
        mut out: Answer,
        started: Instant,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Answer {
        out.total_time = started.elapsed();
        on_event(AskEvent::Citations {
            answer: out.answer.clone(),
            citations: out.citations.clone(),
            unsupported: out.unsupported.clone(),
            removed: out.removed_citations.clone(),
        });
        on_event(AskEvent::Done {
            grounded: out.grounded,
            refused: out.refused,
        });
        out
    }
}
