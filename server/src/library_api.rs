//! The documents, models and feedback part of Kura's own API — what the web UI's
//! Documents and Models screens and its 👍/👎 buttons use.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/collections/{name}/documents` | the documents of a collection: status, pages, problem pages, failure reason |
//! | `DELETE /api/documents/{id}` | removes a document and its chunks from the catalog and both indexes |
//! | `POST /api/ingest` | `{"collection", "paths": [...]}`: starts an ingest in the background → `202 {"id", "files"}` |
//! | `POST /api/collections/{name}/reindex` | the same over the collection's own files (changed files re-read, deleted ones removed) |
//! | `GET /api/ingest`, `GET /api/ingest/{id}` | the ingest runs of this server, one run's state (for polling) |
//! | `GET /api/ingest/{id}/events` | the run's progress as server-sent events, replayed from its start |
//! | `GET /api/models` | the models of `models.toml` and the imported ones: role, size, sha256, licence, presence |
//! | `POST /api/feedback`, `GET /api/feedback` | 👍/👎 on an answer, stored in the catalog |
//!
//! # Ingest from the UI
//!
//! The paths are paths **on the server** — the workstation that holds the
//! documents (a shared drive mounted there, a folder copied onto it); nothing is
//! uploaded. Only paths inside the server's source roots are read
//! ([`kura::ingest::roots`]): its `--source-root` folders and the folders
//! `kura ingest` recorded for the collection; anything else is a 403 that does not
//! say whether the path exists. A run is the engine's background ingest
//! ([`kura::library::runs`]): the same incremental pipeline as `kura ingest`, on its
//! own thread, on the shared catalog and search index; answers go on during it.
//! Runs go one at a time, in the order they were started.
//!
//! The event stream of a run (`text/event-stream`; also replayed in full to a
//! client that connects late or reconnects):
//!
//! ```text
//! event: start  {"collection","files":[path,...]}      (the files found, in processing order)
//! event: embedding {"path","done","total"}             (passages of the file being read, at most twice a second)
//! event: file   {"path","outcome","pages"}             (outcome: added|updated|unchanged|failed)
//! event: done   {"summary":{"added","updated","unchanged","removed","failed":[{"path","reason"}],"problem_pages":[...],"pages","chunks","seconds"}}
//! event: error  {"error":{"message","type"}}           (instead of done, when the run could not go on)
//! ```

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::library::{internal, library};
use super::openai::parse_json;
use super::ServerState;
use kura::catalog::feedback::Feedback;
use kura::ingest::pipeline::IngestOptions;
use kura::library::{IngestEvent, IngestRun};
use kura::models::Registry;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/collections/{name}/documents", get(documents))
        .route("/api/collections/{name}/reindex", post(reindex))
        .route("/api/documents/{id}", delete(delete_document))
        .route("/api/ingest", post(start_ingest).get(list_runs))
        .route("/api/ingest/{id}", get(run_state))
        .route("/api/ingest/{id}/events", get(run_events))
        .route("/api/models", get(models))
        .route("/api/feedback", post(add_feedback).get(list_feedback))
}

// ---------------------------------------------------------------------------------
// Documents

/// `GET /api/collections/{name}/documents`
async fn documents(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let id = lib.collection_id(&name).await?;
    let mut out = Vec::new();
    for d in lib.catalog.documents(id).await.map_err(internal)? {
        let problems: Vec<Value> = lib
            .catalog
            .problem_pages(d.id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|p| json!({"page": p.number, "quality": p.quality, "reason": p.reason}))
            .collect();
        out.push(json!({
            "id": d.id,
            "path": d.path,
            "status": d.status,
            "pages": d.page_count,
            "size": d.size,
            "extractor": d.extractor,
            "error": d.error,
            "problem_pages": problems,
        }));
    }
    Ok(Json(json!({"collection": name, "documents": out})))
}

/// `DELETE /api/documents/{id}`
async fn delete_document(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let doc = library(&state)?.delete_document(id).await?;
    Ok(Json(json!({"deleted": doc.id, "path": doc.path})))
}

// ---------------------------------------------------------------------------------
// Ingest runs

/// What a run started from the API may read and how much: the server's limits.
fn ingest_options(state: &ServerState) -> IngestOptions {
    IngestOptions {
        max_chunks_per_file: state.options.max_chunks_per_file,
        limits: kura::ingest::Limits {
            max_file_bytes: state.options.max_file_bytes,
            ..Default::default()
        },
        ..IngestOptions::default()
    }
}

#[derive(Debug, Deserialize)]
struct IngestBody {
    collection: String,
    paths: Vec<String>,
}

/// `POST /api/ingest`
async fn start_ingest(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: IngestBody = parse_json(&body)?;
    let paths: Vec<PathBuf> = body
        .paths
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let run = library(&state)?
        .start_ingest(
            &body.collection,
            &paths,
            &state.options.source_roots,
            ingest_options(&state),
        )
        .await?;
    Ok(accepted(&run))
}

/// `POST /api/collections/{name}/reindex`
async fn reindex(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let run = library(&state)?
        .reindex(&name, &state.options.source_roots, ingest_options(&state))
        .await?;
    Ok(accepted(&run))
}

fn accepted(run: &IngestRun) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": run.id, "collection": run.collection, "files": run.files()})),
    )
        .into_response()
}

/// `GET /api/ingest`
async fn list_runs(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let runs: Vec<Value> = state
        .library
        .as_ref()
        .map(|lib| lib.runs())
        .unwrap_or_default()
        .iter()
        .map(|r| json!(r.view()))
        .collect();
    Json(json!({ "jobs": runs }))
}

fn find_run(state: &ServerState, id: &str) -> Result<Arc<IngestRun>, ApiError> {
    state
        .library
        .as_ref()
        .and_then(|lib| lib.run(id))
        .ok_or_else(|| ApiError::not_found(format!("no ingest job `{id}`")))
}

/// `GET /api/ingest/{id}`
async fn run_state(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(find_run(&state, &id)?.view())))
}

/// `GET /api/ingest/{id}/events`
async fn run_events(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = find_run(&state, &id)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut changed = run.subscribe();
        let mut sent = 0;
        loop {
            let (batch, ended) = run.events_since(sent);
            for e in batch {
                if tx.send(e).is_err() {
                    return;
                }
                sent += 1;
            }
            if ended && run.events_since(sent).0.is_empty() {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(RunStream { rx })
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct RunStream {
    rx: mpsc::UnboundedReceiver<IngestEvent>,
}

impl futures_core::Stream for RunStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|e| e.map(|e| Ok(Event::default().event(e.name()).data(e.data().to_string()))))
    }
}

// ---------------------------------------------------------------------------------
// Models

/// `GET /api/models`
async fn models(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let dir = state.options.models_dir.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this server was started without a models folder",
            "no_models_dir",
        )
    })?;
    let registry =
        Registry::open(&dir).map_err(|e| ApiError::internal(format!("model registry: {e}")))?;
    let loaded = state.models.names();
    let list: Vec<Value> = registry
        .entries()
        .iter()
        .map(|m| {
            let files: Vec<Value> = m
                .files
                .iter()
                .map(|f| {
                    // Presence by size only: hashing gigabytes per page view is for
                    // `kura models verify` (and every load).
                    let present =
                        std::fs::metadata(registry.file_path(f)).is_ok_and(|md| md.len() == f.size);
                    json!({"path": f.path, "size": f.size, "sha256": f.sha256, "present": present})
                })
                .collect();
            let present = files.iter().all(|f| f["present"] == true);
            json!({
                "name": m.name,
                "role": m.role,
                "default": m.default,
                "format": m.format,
                "description": m.description,
                "licence": m.licence,
                "source": m.source,
                "caveat": m.caveat,
                "origin": m.origin,
                "size": m.files.iter().map(|f| f.size).sum::<u64>(),
                "files": files,
                "present": present,
                "loaded": loaded.contains(&m.name),
            })
        })
        .collect();
    Ok(Json(json!({ "models": list })))
}

// ---------------------------------------------------------------------------------
// Feedback

/// `POST /api/feedback`
async fn add_feedback(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let feedback: Feedback = parse_json(&body)?;
    if feedback.question.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the question is empty / 質問が空です",
            Some("question"),
        ));
    }
    let lib = library(&state)?;
    let id = lib
        .catalog
        .record_feedback(&feedback)
        .await
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

#[derive(Debug, Deserialize)]
struct FeedbackQuery {
    limit: Option<i64>,
}

/// `GET /api/feedback?limit=N` (newest first; default 100)
async fn list_feedback(
    State(state): State<Arc<ServerState>>,
    Query(q): Query<FeedbackQuery>,
) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let list = lib
        .catalog
        .feedback(q.limit.unwrap_or(100).clamp(1, 10_000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "feedback": list })))
}
