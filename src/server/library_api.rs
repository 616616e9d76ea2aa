//! The documents, models and feedback part of Kura's own API — what the web UI's
//! Documents and Models screens and its 👍/👎 buttons use.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/collections/{name}/documents` | the documents of a collection: status, pages, problem pages, failure reason |
//! | `DELETE /api/documents/{id}` | removes a document and its chunks from the catalog and both indexes |
//! | `POST /api/ingest` | `{"collection", "paths": [...]}`: starts an ingest in the background → `202 {"id", "files"}` |
//! | `POST /api/collections/{name}/reindex` | the same over the collection's own files (changed files re-read, deleted ones removed) |
//! | `GET /api/ingest`, `GET /api/ingest/{id}` | the jobs of this server, one job's state (for polling) |
//! | `GET /api/ingest/{id}/events` | the job's progress as server-sent events, replayed from its start |
//! | `GET /api/models` | the models of `models.toml` and the imported ones: role, size, sha256, licence, presence |
//! | `POST /api/feedback`, `GET /api/feedback` | 👍/👎 on an answer, stored in the catalog |
//!
//! # Ingest from the UI
//!
//! The paths are paths **on the server** — the workstation that holds the
//! documents (a shared drive mounted there, a folder copied onto it); nothing is
//! uploaded. Only paths inside the server's source roots are read
//! ([`crate::ingest::roots`]): its `--source-root` folders and the folders
//! `kura ingest` recorded for the collection; anything else is a 403 that does not
//! say whether the path exists. A job runs the same incremental pipeline as `kura ingest`
//! ([`crate::ingest::pipeline`]) on its own thread, on the shared catalog and
//! search index of [`Library`]; the index's write lock is taken only while the
//! pipeline syncs new chunks into it, so answers go on during an ingest. Jobs run
//! one at a time, in the order they were started.
//!
//! The event stream of a job (`text/event-stream`; also replayed in full to a
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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::error::ApiError;
use super::library::{internal, Library};
use super::openai::parse_json;
use super::ServerState;
use crate::catalog::feedback::Feedback;
use crate::catalog::Catalog;
use crate::index::IndexError;
use crate::ingest::pipeline::{self, IndexSync, IngestOptions, IngestSummary, Progress};
use crate::ingest::roots::{RootError, SourceRoots};
use crate::models::Registry;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/collections/{name}/documents", get(documents))
        .route("/api/collections/{name}/reindex", post(reindex))
        .route("/api/documents/{id}", delete(delete_document))
        .route("/api/ingest", post(start_ingest).get(list_jobs))
        .route("/api/ingest/{id}", get(job_state))
        .route("/api/ingest/{id}/events", get(job_events))
        .route("/api/models", get(models))
        .route("/api/feedback", post(add_feedback).get(list_feedback))
}

fn library(state: &ServerState) -> Result<Arc<Library>, ApiError> {
    state.library.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this server has no document library (it was started without an embedding model) / \
             このサーバーには文書ライブラリがありません(埋め込みモデルなしで起動されています)",
            "no_library",
        )
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------
// Documents

/// `GET /api/collections/{name}/documents`
async fn documents(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let coll = lib
        .catalog
        .find_collection(&name)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_collection(&name))?;
    let mut out = Vec::new();
    for d in lib.catalog.documents(coll.id).await.map_err(internal)? {
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
    Ok(Json(json!({"collection": coll.name, "documents": out})))
}

fn no_collection(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no collection named `{name}` / コレクション「{name}」はありません"
    ))
    .with_code("collection_not_found")
}

/// The library's shared search index as an ingest run sees it: the write lock is
/// taken only while the run syncs new chunks into it, on a blocking thread (the
/// lock is a plain `RwLock`, which must not be held across an `.await`).
pub struct SharedIndex(pub Arc<Library>);

impl SharedIndex {
    async fn sync_now(&self) -> Result<usize, IndexError> {
        let lib = self.0.clone();
        let dir = lib.data_dir.join("index");
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere while the lock was held leaves the index as committed on disk.
            let mut index = lib.index.write().unwrap_or_else(|e| e.into_inner());
            runtime.block_on(index.sync(&lib.catalog))
        })
        .await
        .unwrap_or_else(|e| {
            Err(IndexError::Io {
                path: dir,
                source: std::io::Error::other(format!("index sync crashed: {e}")),
            })
        })
    }
}

impl IndexSync for SharedIndex {
    /// Syncs from the library's own catalog (the one every run of the server uses).
    async fn sync_from(&mut self, _catalog: &Catalog) -> Result<usize, IndexError> {
        self.sync_now().await
    }
}

/// Brings the shared index up to date with the catalog.
async fn sync_index(lib: &Arc<Library>) -> Result<(), ApiError> {
    SharedIndex(lib.clone())
        .sync_now()
        .await
        .map_err(|e| ApiError::internal(format!("index: {e}")))?;
    Ok(())
}

/// `DELETE /api/documents/{id}`
async fn delete_document(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let lib = library(&state)?;
    let doc = lib
        .catalog
        .document(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found(format!("no document {id} / 文書{id}はありません")))?;
    lib.catalog.remove_document(id).await.map_err(internal)?;
    sync_index(&lib).await?;
    tracing::info!("removed document {} ({})", doc.id, doc.path);
    Ok(Json(json!({"deleted": doc.id, "path": doc.path})))
}

// ---------------------------------------------------------------------------------
// Ingest jobs

/// One event of a job, as sent on its stream.
#[derive(Debug, Clone)]
struct JobEvent {
    name: &'static str,
    data: Value,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the job before it to finish.
    Queued,
    /// Running.
    Running,
    /// Finished (some files may have failed: see the summary).
    Done,
    /// Stopped by an error.
    Failed,
}

/// An ingest started from the API.
#[derive(Debug)]
pub struct IngestJob {
    /// Its id (`ingest-N`).
    pub id: String,
    /// The collection it adds to.
    pub collection: String,
    /// When it was started (Unix seconds).
    pub started: u64,
    inner: Mutex<JobInner>,
    /// The number of events so far, for streams waiting on more.
    changed: watch::Sender<usize>,
}

#[derive(Debug)]
struct JobInner {
    state: JobState,
    files: Vec<String>,
    done_files: usize,
    events: Vec<JobEvent>,
    summary: Option<IngestSummary>,
    error: Option<String>,
    /// The file being embedded: `{"path","done","total"}` passages.
    current: Option<Value>,
}

impl IngestJob {
    fn push(&self, name: &'static str, data: Value) {
        let n = {
            let mut inner = self.lock();
            if name == "file" {
                inner.done_files += 1;
            }
            inner.events.push(JobEvent { name, data });
            inner.events.len()
        };
        self.changed.send_replace(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Value {
        let inner = self.lock();
        json!({
            "id": self.id,
            "collection": self.collection,
            "started": self.started,
            "state": inner.state,
            "files": inner.files,
            "done_files": inner.done_files,
            "current": inner.current,
            "summary": inner.summary,
            "error": inner.error,
        })
    }
}

/// The ingest jobs of a server (kept in memory; the catalog records each run).
#[derive(Debug, Default)]
pub struct IngestJobs {
    jobs: Mutex<Vec<Arc<IngestJob>>>,
    /// Held by the running job: jobs run one at a time.
    running: Arc<Mutex<()>>,
    next: Mutex<u64>,
}

impl IngestJobs {
    fn get(&self, id: &str) -> Option<Arc<IngestJob>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    fn add(&self, collection: &str, files: Vec<String>) -> Arc<IngestJob> {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            format!("ingest-{}", *next)
        };
        let job = Arc::new(IngestJob {
            id,
            collection: collection.to_owned(),
            started: unix_now(),
            inner: Mutex::new(JobInner {
                state: JobState::Queued,
                files: files.clone(),
                done_files: 0,
                events: Vec::new(),
                summary: None,
                error: None,
                current: None,
            }),
            changed: watch::Sender::new(0),
        });
        job.push("start", json!({"collection": collection, "files": files}));
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the last 100 jobs.
        if jobs.len() >= 100 {
            jobs.remove(0);
        }
        jobs.push(job.clone());
        job
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
    let collection = body.collection.trim().to_owned();
    if collection.is_empty() {
        return Err(ApiError::bad_request(
            "the collection name is empty / コレクション名が空です",
            Some("collection"),
        ));
    }
    let paths: Vec<PathBuf> = body
        .paths
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return Err(ApiError::bad_request(
            "no paths given / パスが指定されていません",
            Some("paths"),
        ));
    }
    let lib = library(&state)?;
    let existing = lib
        .catalog
        .find_collection(&collection)
        .await
        .map_err(internal)?;
    let roots = lib
        .source_roots(&state.options.source_roots, existing.map(|c| c.id))
        .await?;
    let paths = paths
        .iter()
        .map(|p| roots.resolve(p).map_err(root_error))
        .collect::<Result<Vec<_>, _>>()?;
    let job = spawn_job(&state, lib, &collection, paths, Vec::new(), roots)?;
    Ok(accepted(&job))
}

/// `POST /api/collections/{name}/reindex`
async fn reindex(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let lib = library(&state)?;
    let coll = lib
        .catalog
        .find_collection(&name)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_collection(&name))?;
    let docs = lib.catalog.documents(coll.id).await.map_err(internal)?;
    let (present, gone): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| std::path::Path::new(&d.path).exists());
    let paths = present.iter().map(|d| PathBuf::from(&d.path)).collect();
    let gone = gone.into_iter().map(|d| d.id).collect();
    let roots = lib
        .source_roots(&state.options.source_roots, Some(coll.id))
        .await?;
    let job = spawn_job(&state, lib, &coll.name, paths, gone, roots)?;
    Ok(accepted(&job))
}

/// A path a client may not have read: 403 when outside the roots (whether it exists
/// or not), 400 otherwise.
pub(crate) fn root_error(e: RootError) -> ApiError {
    match e {
        RootError::Outside(_) => ApiError {
            status: StatusCode::FORBIDDEN,
            ..ApiError::bad_request(e.to_string(), Some("paths"))
        }
        .with_code("outside_source_roots"),
        other => ApiError::bad_request(other.to_string(), Some("paths")),
    }
}

fn accepted(job: &IngestJob) -> Response {
    let files = job.lock().files.clone();
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": job.id, "collection": job.collection, "files": files})),
    )
        .into_response()
}

/// Registers a job and runs it on its own thread: the pipeline's future borrows the
/// index lock across awaits, so it is driven there with the server's runtime handle
/// rather than spawned as a task.
fn spawn_job(
    state: &ServerState,
    lib: Arc<Library>,
    collection: &str,
    paths: Vec<PathBuf>,
    remove_first: Vec<i64>,
    roots: SourceRoots,
) -> Result<Arc<IngestJob>, ApiError> {
    let files = pipeline::walk(&paths, Some(&roots))
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("paths")))?
        .files
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let opts = IngestOptions {
        roots: Some(roots),
        max_chunks_per_file: state.options.max_chunks_per_file,
        limits: crate::ingest::Limits {
            max_file_bytes: state.options.max_file_bytes,
            ..Default::default()
        },
        ..IngestOptions::default()
    };
    let job = state.ingest_jobs.add(collection, files);
    let running = state.ingest_jobs.running.clone();
    let runtime = tokio::runtime::Handle::current();
    let worker = job.clone();
    std::thread::Builder::new()
        .name(format!("kura-{}", job.id))
        .spawn(move || {
            let _turn = running.lock().unwrap_or_else(|e| e.into_inner());
            worker.lock().state = JobState::Running;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(run_job(&lib, &worker, &paths, &remove_first, &opts))
            }))
            .unwrap_or_else(|_| Err("the ingest crashed (see the server log)".to_owned()));
            let mut inner = worker.lock();
            match result {
                Ok(summary) => {
                    tracing::info!(
                        "{}: {} added, {} updated, {} unchanged, {} removed, {} failed in {:.1} s",
                        worker.id,
                        summary.added,
                        summary.updated,
                        summary.unchanged,
                        summary.removed,
                        summary.failed.len(),
                        summary.seconds
                    );
                    inner.state = JobState::Done;
                    inner.summary = Some(summary.clone());
                    drop(inner);
                    worker.push("done", json!({"summary": summary}));
                }
                Err(message) => {
                    tracing::warn!("{}: {message}", worker.id);
                    inner.state = JobState::Failed;
                    inner.error = Some(message.clone());
                    drop(inner);
                    worker.push(
                        "error",
                        json!({"error": {"message": message, "type": "server_error"}}),
                    );
                }
            }
        })
        .map_err(|e| ApiError::internal(format!("cannot start the ingest thread: {e}")))?;
    Ok(job)
}

async fn run_job(
    lib: &Arc<Library>,
    job: &IngestJob,
    paths: &[PathBuf],
    remove_first: &[i64],
    opts: &IngestOptions,
) -> Result<IngestSummary, String> {
    for id in remove_first {
        lib.catalog
            .remove_document(*id)
            .await
            .map_err(|e| e.to_string())?;
    }
    let progress = |p: Progress| match p {
        Progress::File {
            path,
            outcome,
            pages,
        } => {
            job.lock().current = None;
            job.push(
                "file",
                json!({"path": path.to_string_lossy(), "outcome": outcome, "pages": pages}),
            );
        }
        Progress::Embedding { path, done, total } => {
            let data = json!({"path": path.to_string_lossy(), "done": done, "total": total});
            job.lock().current = Some(data.clone());
            job.push("embedding", data);
        }
        Progress::Found(_) => {}
    };
    let mut index = SharedIndex(lib.clone());
    let mut summary = pipeline::ingest(
        paths,
        &job.collection,
        opts,
        &lib.catalog,
        &mut index,
        &lib.embedder,
        &progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    summary.removed += remove_first.len();
    Ok(summary)
}

/// `GET /api/ingest`
async fn list_jobs(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let jobs: Vec<Value> = state
        .ingest_jobs
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .map(|j| j.snapshot())
        .collect();
    Json(json!({ "jobs": jobs }))
}

fn find_job(state: &ServerState, id: &str) -> Result<Arc<IngestJob>, ApiError> {
    state
        .ingest_jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no ingest job `{id}`")))
}

/// `GET /api/ingest/{id}`
async fn job_state(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find_job(&state, &id)?.snapshot()))
}

/// `GET /api/ingest/{id}/events`
async fn job_events(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, &id)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut changed = job.changed.subscribe();
        let mut sent = 0;
        loop {
            let (batch, finished) = {
                let inner = job.lock();
                (inner.events[sent..].to_vec(), job_finished(&inner))
            };
            for e in batch {
                if tx.send(e).is_err() {
                    return;
                }
                sent += 1;
            }
            if finished && sent == job.lock().events.len() {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(JobStream { rx })
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn job_finished(inner: &JobInner) -> bool {
    matches!(inner.state, JobState::Done | JobState::Failed)
        && inner
            .events
            .last()
            .is_some_and(|e| e.name == "done" || e.name == "error")
}

struct JobStream {
    rx: mpsc::UnboundedReceiver<JobEvent>,
}

impl futures_core::Stream for JobStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|e| e.map(|e| Ok(Event::default().event(e.name).data(e.data.to_string()))))
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
