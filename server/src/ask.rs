//! Kura's own API for grounded answers — what the web UI and the desktop app use.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/ask` | a grounded answer, streamed as server-sent events |
//! | `GET /api/collections` | collections with their document, chunk and problem counts |
//! | `GET /api/chunks/{id}/page` | the page a chunk comes from, with the chunk's span |
//!
//! # `POST /api/ask`
//!
//! Body: `{"question": "...", "collections": ["manuals"], "history": [{"question",
//! "answer"}], "top_k": 4, "max_tokens": 256, "model": "..."}` — only `question` is
//! required; no collections means every collection. The reply is `text/event-stream`
//! with one named event per step of [`Answerer::ask`], each `data` the JSON of
//! [`AskEvent`]:
//!
//! ```text
//! event: query      {"query"}                      (only when a follow-up was rewritten)
//! event: sources    {"sources":[{"n","doc","page","chunk_id","snippet","cosine","coverage"}],"relevant"}
//! event: token      {"text"}                       (many: the answer as it is generated)
//! event: citations  {"answer","citations":[{"n","doc","page","chunk_id","quote","supported","inferred"}],"unsupported","removed"}
//! event: done       {"grounded","refused"}
//! event: error      {"error":{"message","type",...}}   (instead of the rest, on failure)
//! ```
//!
//! The UI shows tokens as they come and replaces the text with the checked answer of
//! `citations` (out-of-range markers removed, unsupported sentences listed). An
//! answer waits in the same fair queue as `/v1/chat/completions` — retrieval and
//! generation both keep the CPU busy — and, like there, a client that disconnects
//! cancels it within one token.
//!
//! # `GET /api/chunks/{id}/page`
//!
//! For the source panel: `{"doc","page","chunk_id","text","highlight":{"start",
//! "end"}}` where `text` is the page rebuilt from its chunks (each chunk is exactly
//! `page[char_start..char_end]`, so overlapping chunks rebuild the page exactly;
//! stretches no chunk covers — blank lines, dropped garbage — become spaces) and
//! `highlight` is the cited chunk's span in it, in characters.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::library::{internal, library};
use super::openai::parse_json;
use super::queue::Outcome;
use super::ServerState;
use kura::catalog::ChunkRecord;
use kura::rag::{Answerer, AskEvent, AskOptions, AskRequest, RagError, Turn};

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/ask", post(ask))
        .route("/api/collections", get(collections))
        .route("/api/chunks/{id}/page", get(chunk_page))
}

/// One earlier turn, as the client sends it.
#[derive(Debug, Deserialize)]
struct TurnBody {
    question: String,
    answer: String,
}

/// The body of `POST /api/ask`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    question: String,
    #[serde(default)]
    collections: Vec<String>,
    #[serde(default)]
    history: Vec<TurnBody>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
    model: Option<String>,
}

/// The SSE name of an event.
fn event_name(e: &AskEvent) -> &'static str {
    match e {
        AskEvent::Query { .. } => "query",
        AskEvent::Sources { .. } => "sources",
        AskEvent::Token { .. } => "token",
        AskEvent::Citations { .. } => "citations",
        AskEvent::Done { .. } => "done",
    }
}

fn error_event(e: &ApiError) -> Event {
    Event::default().event("error").data(e.body().to_string())
}

impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        match e {
            RagError::Llm(e) => e.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// What the answering thread sends to the response.
enum Step {
    Event(AskEvent),
    Failed(ApiError),
}

/// The response body: events as they come. Dropping it (the client left) sets the
/// answer's cancel flag.
struct AskStream {
    rx: mpsc::UnboundedReceiver<Step>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl Drop for AskStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

impl futures_core::Stream for AskStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Step::Event(e))) => {
                if matches!(e, AskEvent::Done { .. }) {
                    this.finished = true;
                }
                let data = serde_json::to_string(&e).expect("events serialise");
                Poll::Ready(Some(Ok(Event::default().event(event_name(&e)).data(data))))
            }
            Poll::Ready(Some(Step::Failed(e))) => {
                this.finished = true;
                Poll::Ready(Some(Ok(error_event(&e))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(Some(Ok(error_event(&ApiError::internal(
                    "the answer stopped without finishing",
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The most sources an answer may be given (`top_k`).
pub const MAX_TOP_K: usize = 20;
/// The longest answer that may be asked for (`max_tokens`).
pub const MAX_ANSWER_TOKENS: usize = 2048;

/// `value` (or `default`), refused with a 400 that says the range unless in `1..=max`.
fn in_range(
    value: Option<usize>,
    default: usize,
    max: usize,
    field: &str,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(v) => Err(ApiError::bad_request(
            format!("`{field}` must be between 1 and {max}, not {v} / {field} は 1〜{max} で指定してください"),
            Some(field),
        )),
    }
}

/// `POST /api/ask`
pub async fn ask(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let body: AskBody = parse_json(&body)?;
    let question = body.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::bad_request(
            "the question is empty / 質問が空です",
            Some("question"),
        ));
    }
    let defaults = AskOptions::default();
    let opts = AskOptions {
        top_k: in_range(body.top_k, defaults.top_k, MAX_TOP_K, "top_k")?,
        max_tokens: in_range(
            body.max_tokens,
            defaults.max_tokens,
            MAX_ANSWER_TOKENS,
            "max_tokens",
        )?,
        ..defaults
    };
    let lib = library(&state)?;
    let collections = lib.collection_ids(&body.collections).await?;
    if collections.is_empty() {
        return Err(ApiError::bad_request(
            "nothing is indexed yet: add documents first / まだ文書が登録されていません",
            Some("collections"),
        )
        .with_code("empty_library"));
    }
    let route = state.models.resolve_chat(body.model.as_deref())?;
    state.scheduler.check_open()?;
    let history: Vec<Turn> = body
        .history
        .into_iter()
        .map(|t| Turn {
            question: t.question,
            answer: t.answer,
        })
        .collect();

    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let scheduler = state.scheduler.clone();
    let flag = cancel.clone();
    tokio::spawn(async move {
        let slot = tokio::select! {
            slot = scheduler.admit(flag.clone()) => slot,
            () = tx.closed() => return,
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(e) => {
                let _ = tx.send(Step::Failed(e));
                return;
            }
        };
        let runtime = tokio::runtime::Handle::current();
        let worker_tx = tx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let index = lib.read_index();
            let answerer = Answerer {
                llm: &route.llm,
                embedder: &lib.embedder,
                catalog: &lib.catalog,
                index: &index,
                adapters: &route.adapters,
            };
            let request = AskRequest {
                question: &question,
                history: &history,
                collections: &collections,
            };
            let result = answerer.ask(&runtime, &request, &opts, Some(&flag), &mut |e| {
                if worker_tx.send(Step::Event(e)).is_err() {
                    flag.store(true, Ordering::SeqCst);
                }
            });
            match &result {
                Ok(a) if a.cancelled => slot.finish(Outcome::Cancelled, a.generated_tokens),
                Ok(a) => slot.finish(Outcome::Completed, a.generated_tokens),
                Err(_) => slot.finish(Outcome::Failed, 0),
            }
            drop(slot);
            result.map(|a| {
                tracing::info!(
                    "answered in {:.1} s (first token {:.1} s): grounded {}, refused {}",
                    a.total_time.as_secs_f64(),
                    a.time_to_first_token.as_secs_f64(),
                    a.grounded,
                    a.refused
                );
            })
        })
        .await;
        let failure = match joined {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ApiError::from(e)),
            Err(e) => Some(ApiError::internal(format!("the answer crashed: {e}"))),
        };
        if let Some(e) = failure {
            let _ = tx.send(Step::Failed(e));
        }
    });
    let stream = AskStream {
        rx,
        cancel,
        finished: false,
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /api/collections`
pub async fn collections(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let summaries = lib.catalog.summaries().await.map_err(internal)?;
    let problems = lib.catalog.problem_page_counts().await.map_err(internal)?;
    let list: Vec<Value> = summaries
        .iter()
        .map(|s| {
            json!({
                "id": s.collection.id,
                "name": s.collection.name,
                "documents": s.documents,
                "failed": s.failed,
                "chunks": s.chunks,
                "problem_pages": problems.get(&s.collection.id).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({ "collections": list })))
}

/// The page text rebuilt from its chunks, and the span of `chunk` in it.
pub fn rebuild_page(chunks: &[ChunkRecord], chunk: &ChunkRecord) -> (String, usize, usize) {
    let len = chunks
        .iter()
        .map(|c| c.char_end.max(0) as usize)
        .max()
        .unwrap_or(0)
        .max(chunk.char_end.max(0) as usize);
    let mut page = vec![' '; len];
    for c in chunks.iter().chain(std::iter::once(chunk)) {
        let start = c.char_start.max(0) as usize;
        for (i, ch) in c.text.chars().enumerate() {
            if let Some(slot) = page.get_mut(start + i) {
                *slot = ch;
            }
        }
    }
    (
        page.into_iter().collect(),
        chunk.char_start.max(0) as usize,
        chunk.char_end.max(0) as usize,
    )
}

/// `GET /api/chunks/{id}/page`
pub async fn chunk_page(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let chunk = lib
        .catalog
        .chunks(&[id])
        .await
        .map_err(internal)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no chunk {id} (the document may have been re-indexed) / チャンク{id}はありません"
            ))
        })?;
    // Only documents inside the source roots are shown: a file read any other way
    // (a catalog from before the roots, a path planted in the database) never is.
    let roots = lib
        .source_roots(&state.options.source_roots, Some(chunk.collection_id))
        .await?;
    if !roots.contains_real(std::path::Path::new(&chunk.path)) {
        return Err(ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            ..ApiError::bad_request(
                format!(
                    "chunk {id} is from a document outside the source roots of this server / \
                     このチャンクの文書はソースルートの外にあるため表示できません"
                ),
                None,
            )
        }
        .with_code("outside_source_roots"));
    }
    let on_page = lib
        .catalog
        .chunks_on_page(chunk.document_id, chunk.page)
        .await
        .map_err(internal)?;
    let (text, start, end) = rebuild_page(&on_page, &chunk);
    Ok(Json(json!({
        "doc": chunk.path,
        "page": chunk.page,
        "chunk_id": chunk.id,
        "heading": chunk.heading,
        "text": text,
        "highlight": {"start": start, "end": end},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: i64, start: i64, text: &str) -> ChunkRecord {
        ChunkRecord {
            id,
            document_id: 1,
            collection_id: 1,
            path: "規程.pdf".into(),
            page: 3,
            char_start: start,
            char_end: start + text.chars().count() as i64,
            heading: None,
            text: text.into(),
        }
    }

    #[test]
    fn overlapping_chunks_rebuild_the_page_and_the_span_marks_the_cited_one() {
        let page = "第21条 年次有給休暇は3営業日前までに申請する。承認は所属長が行う。";
        let chars: Vec<char> = page.chars().collect();
        let a = chunk(1, 0, &chars[0..20].iter().collect::<String>());
        let b = chunk(2, 15, &chars[15..].iter().collect::<String>());
        let (text, start, end) = rebuild_page(&[a, b.clone()], &b);
        assert_eq!(text, page);
        let cited: String = text.chars().skip(start).take(end - start).collect();
        assert_eq!(cited, b.text);
    }

    #[test]
    fn an_uncovered_stretch_becomes_spaces_not_a_shift() {
        let a = chunk(1, 0, "前文");
        let b = chunk(2, 5, "本文");
        let (text, start, _) = rebuild_page(&[a, b.clone()], &b);
        assert_eq!(text, "前文   本文");
        assert_eq!(text.chars().skip(start).collect::<String>(), "本文");
    }
}
