//! Training datasets for the Training screen: import a JSONL file, draft Q&A pairs
//! from a collection with the loaded chat model, review the drafts.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/datasets` | datasets: train/eval counts, drafts pending/approved/rejected, a running draft job |
//! | `POST /api/datasets/import` `{"path","name","eval"?}` | imports a JSONL file **on the server** (validated; errors name line and field) |
//! | `POST /api/datasets/{name}/synth` `{"collection","limit"?}` | drafts pairs in the background with the default chat model → `202` |
//! | `GET /api/datasets/{name}/drafts` | the drafts with their source (document, page) and grounding |
//! | `POST /api/datasets/{name}/review` `{"approve":[id],"reject":[id],"edit":{"id","question"?,"answer"?}}` | approved pairs become the dataset at once |
//!
//! Drafting runs on a blocking thread, one pair per chunk, saving after each, so the
//! UI sees drafts appear by polling `…/drafts`. It uses the chat model directly
//! rather than a queue slot: it is an IT-staff action, and a chat request that comes
//! meanwhile only shares the CPU.

use std::sync::Arc;

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
use kura::paths::Paths;
use kura::train::dataset::is_folder_name;
use kura::train::synth::{review, DraftRunError, DraftStatus, DraftStore};
use kura::train::DatasetStore;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/datasets", get(list))
        .route("/api/datasets/import", post(import))
        .route("/api/datasets/{name}/synth", post(synth))
        .route("/api/datasets/{name}/drafts", get(drafts))
        .route("/api/datasets/{name}/review", post(review_drafts))
}

fn store(state: &ServerState) -> Result<DatasetStore, ApiError> {
    let lib = state.library.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server was started without a data folder (no embedding model)",
            "no_library",
        )
    })?;
    let paths = Paths {
        data_dir: lib.data_dir.clone(),
        models_dir: state.options.models_dir.clone().unwrap_or_default(),
    };
    Ok(DatasetStore::new(paths.datasets_dir()))
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    if is_folder_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!("dataset name `{name}`: letters, digits, -, _ and . only"),
            Some("name"),
        ))
    }
}

/// `GET /api/datasets`
async fn list(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let infos = store
        .list()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let out: Vec<Value> = infos
        .into_iter()
        .map(|d| {
            let drafts = DraftStore::new(store.clone(), &d.name).load().unwrap_or_default();
            let count = |s: DraftStatus| drafts.iter().filter(|x| x.status == s).count();
            json!({
                "name": d.name, "train": d.train, "eval": d.eval,
                "drafts": {"pending": count(DraftStatus::Pending),
                           "approved": count(DraftStatus::Approved),
                           "rejected": count(DraftStatus::Rejected)},
                "synth": state.draft_runs.progress(&d.name).map(|(done, total)| json!({"done": done, "total": total})),
            })
        })
        .collect();
    Ok(Json(json!({ "datasets": out })))
}

#[derive(Deserialize)]
struct ImportBody {
    path: String,
    name: String,
    eval: Option<String>,
}

/// `POST /api/datasets/import`
async fn import(
    State(state): State<Arc<ServerState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut body: ImportBody = parse_json(&body)?;
    checked_name(&body.name)?;
    // A file on the server: only inside its source roots (kura::ingest::roots).
    let roots = &state.options.source_roots;
    let resolve = |p: &str| {
        roots
            .resolve(std::path::Path::new(p))
            .map(|r| r.to_string_lossy().into_owned())
            .map_err(super::library::root_error)
    };
    body.path = resolve(&body.path)?;
    if let Some(e) = &body.eval {
        body.eval = Some(resolve(e)?);
    }
    let store = store(&state)?;
    let info = tokio::task::spawn_blocking(move || match &body.eval {
        Some(e) => store.import_with_eval(body.path.as_ref(), e.as_ref(), &body.name),
        None => store.import(body.path.as_ref(), &body.name, 0.1, 42),
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::bad_request(e.to_string(), Some("path")))?;
    Ok(Json(json!({ "dataset": info })))
}

#[derive(Deserialize)]
struct SynthBody {
    collection: String,
    limit: Option<usize>,
}

/// `POST /api/datasets/{name}/synth`
async fn synth(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    checked_name(&name)?;
    let body: SynthBody = parse_json(&body)?;
    let store = store(&state)?;
    let lib = state.library.clone().expect("checked by store()");
    let llm = state
        .models
        .chat()
        .first()
        .map(|m| m.llm.clone())
        .ok_or_else(|| ApiError::unavailable("no chat model loaded", "no_model"))?;
    let id = lib.collection_id(&body.collection).await?;
    let ids = lib
        .catalog
        .collection_chunk_ids(id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let chunks = lib
        .catalog
        .chunks(&ids)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let limit = body.limit.unwrap_or(10).clamp(1, 200);
    state
        .draft_runs
        .start(store, &name, llm, chunks, limit)
        .map_err(|e| match e {
            DraftRunError::AlreadyRunning(_) => ApiError::bad_request(e.to_string(), Some("name")),
            DraftRunError::Thread(_) => ApiError::internal(e.to_string()),
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"started": true}))).into_response())
}

/// `GET /api/datasets/{name}/drafts`
async fn drafts(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_name(&name)?;
    let drafts = DraftStore::new(store(&state)?, &name)
        .load()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let running = state.draft_runs.progress(&name);
    Ok(Json(json!({
        "drafts": drafts,
        "synth": running.map(|(done, total)| json!({"done": done, "total": total})),
    })))
}

#[derive(Deserialize)]
struct Edit {
    id: u64,
    question: Option<String>,
    answer: Option<String>,
}

#[derive(Deserialize)]
struct ReviewBody {
    #[serde(default)]
    approve: Vec<u64>,
    #[serde(default)]
    reject: Vec<u64>,
    edit: Option<Edit>,
}

/// `POST /api/datasets/{name}/review`
async fn review_drafts(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    checked_name(&name)?;
    let body: ReviewBody = parse_json(&body)?;
    let drafts_store = DraftStore::new(store(&state)?, &name);
    let mut drafts = drafts_store
        .load()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    review(
        &mut drafts,
        &body.approve,
        &body.reject,
        body.edit.map(|e| (e.id, e.question, e.answer)),
    )
    .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
    let (train, eval) = drafts_store
        .save(&drafts, 0.1, 42)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        json!({"drafts": drafts, "train": train, "eval": eval}),
    ))
}
