//! The training part of Kura's own API — what the web UI's Training screen uses.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/training/jobs` | the job queue: state, step, loss, tokens/s, ETA of every job |
//! | `POST /api/training/jobs` | `{"job": "<job.toml text>", "at": "22:00"?}`: prepares the job's folder and queues it → `201` job |
//! | `GET /api/training/jobs/{id}` | one job and its metrics (every step's loss, eval loss, tokens/s: the loss curve) |
//! | `POST /api/training/jobs/{id}/cancel` | cancels (a running job stops after its next checkpoint) |
//! | `POST /api/training/jobs/{id}/resume` | queues a cancelled or failed job again, from its last checkpoint |
//!
//! The API only reads and writes the queue ([`kura::jobs::JobQueue`], in the
//! catalog) and the jobs' folders. The training is done by a runner
//! ([`kura::jobs::runner`]): inside this server when it was started with
//! `--run-jobs` (the desktop app's default; `training_runner` in `/api/health`
//! says so), or `kura jobs run` as a process of its own (a long fine-tune then does
//! not share the server's CPU budget, nor die with it). A job submitted here starts
//! when a runner is running and its start time has come. Progress is what the runner
//! reports: the queue row for the latest step, `metrics.jsonl` in the job's folder
//! for the curve; the UI polls both.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::parse_json;
use super::ServerState;
use kura::jobs::{next_local_time, now, JobError, JobQueue};

use kura::paths::Paths;
use kura::train::{read_metrics, JobSpec, TrainRun};

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/training/jobs", get(list).post(submit))
        .route("/api/training/jobs/{id}", get(show))
        .route("/api/training/jobs/{id}/cancel", post(cancel))
        .route("/api/training/jobs/{id}/resume", post(resume))
}

fn queue(state: &ServerState) -> Result<JobQueue, ApiError> {
    let library = state.library.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server has no catalog (it was started without an embedding model) / \
             このサーバーにはカタログがありません",
            "no_library",
        )
    })?;
    Ok(JobQueue::new(library.catalog.clone()))
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::NotFound(_) => ApiError::not_found(e.to_string()),
        JobError::WrongState { .. } => {
            let mut conflict = ApiError::bad_request(e.to_string(), None).with_code("wrong_state");
            conflict.status = StatusCode::CONFLICT;
            conflict
        }
        other => ApiError::internal(format!("job queue: {other}")),
    }
}

/// `GET /api/training/jobs`
async fn list(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let jobs = queue(&state)?.list().await.map_err(job_error)?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /api/training/jobs/{id}`: the job and its metrics so far.
async fn show(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let job = queue(&state)?.get(id).await.map_err(job_error)?;
    let folder = job.folder.clone();
    let metrics = tokio::task::spawn_blocking(move || {
        let path = folder.join("metrics.jsonl");
        if path.is_file() {
            read_metrics(&path).unwrap_or_default()
        } else {
            Vec::new()
        }
    })
    .await
    .unwrap_or_default();
    Ok(Json(json!({ "job": job, "metrics": metrics })))
}

/// `POST /api/training/jobs/{id}/cancel`
async fn cancel(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let job = queue(&state)?.cancel(id).await.map_err(job_error)?;
    Ok(Json(json!({ "job": job })))
}

/// `POST /api/training/jobs/{id}/resume`
async fn resume(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let job = queue(&state)?.resume(id, None).await.map_err(job_error)?;
    Ok(Json(json!({ "job": job })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    /// The text of a `job.toml`.
    job: String,
    /// Local start time `HH:MM` (the next one); absent: now.
    #[serde(default)]
    at: Option<String>,
}

/// `POST /api/training/jobs`
async fn submit(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: SubmitRequest = parse_json(&body)?;
    let queue = queue(&state)?;
    let run_at = match req.at.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => now(),
        Some(at) => next_local_time(at).ok_or_else(|| {
            ApiError::bad_request(
                format!("`at` must be a local time HH:MM, not `{at}` / 開始時刻は HH:MM で指定してください"),
                Some("at"),
            )
        })?,
    };
    let mut job: JobSpec = toml::from_str(&req.job).map_err(|e| {
        ApiError::bad_request(format!("job.toml: {e} / ジョブ設定が不正です"), Some("job"))
    })?;
    // `model` and `dataset` may name files on the server: only inside its source roots.
    job.model = server_file(&state, &job.model)?;
    job.dataset = server_file(&state, &job.dataset)?;
    let paths = Paths {
        data_dir: state
            .library
            .as_ref()
            .map(|l| l.data_dir.clone())
            .unwrap_or_default(),
        models_dir: state.options.models_dir.clone().ok_or_else(|| {
            ApiError::unavailable("this server does not know its models folder", "no_models")
        })?,
    };
    let run = tokio::task::spawn_blocking(move || prepare(&job, &paths))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the job: {e}")))??;
    let queued = queue
        .submit(&run.job.name, &run.dir, run_at)
        .await
        .map_err(job_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "job": queued }))).into_response())
}

/// A job's `model` or `dataset`: a name (registry model, imported dataset) as it is;
/// an absolute path only inside the server's source roots ([`kura::ingest::roots`]);
/// a relative path (which would be read from the server's working folder) refused.
fn server_file(state: &ServerState, value: &str) -> Result<String, ApiError> {
    let path = std::path::Path::new(value);
    if path.is_absolute() {
        return state
            .options
            .source_roots
            .resolve(path)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(super::library::root_error);
    }
    if value.contains('/') || value.contains('\\') || value.starts_with('.') {
        return Err(ApiError::bad_request(
            format!(
                "`{value}`: give a model or dataset name, or a full path inside the server's \
                 source roots / 名前、またはソースルート内の絶対パスを指定してください"
            ),
            Some("job"),
        ));
    }
    Ok(value.to_owned())
}

/// [`kura::train::prepare_run`], with its errors as 400s.
fn prepare(job: &JobSpec, paths: &Paths) -> Result<TrainRun, ApiError> {
    kura::train::prepare_run(job, paths, None)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("job")))
}
