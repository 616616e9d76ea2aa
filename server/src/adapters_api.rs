//! LoRA adapters on a running server: which exist, which are served, and their
//! "did it help?" reports — what the Training screen's "activate" button uses.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/adapters` | adapters in `<data>/adapters/`: base model, rank, targets, whether served (and as which `model`), the report's verdict and scores |
//! | `POST /api/adapters/{name}/load` | serves it (`{"base": "..."}` optional) → the `model` id to send to `/v1/chat/completions` or `/api/ask` |
//! | `POST /api/adapters/{name}/unload` | stops serving it; requests already running with it finish |
//! | `GET /api/adapters/{name}/report.png` | the report's plot (loss curves, base vs adapter scores) |
//!
//! Loading reads the adapter on a blocking thread and swaps it into the model list
//! ([`super::loaded`]); nothing restarts and no request in flight is disturbed.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use super::ServerState;
use kura::adapters::{AdapterError, AdapterRegistry};
use kura::pool::ServedAdapter;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/adapters", get(list))
        .route("/api/adapters/{name}/load", post(load))
        .route("/api/adapters/{name}/unload", post(unload))
        .route("/api/adapters/{name}/report.png", get(report_png))
}

fn registry(state: &ServerState) -> Result<AdapterRegistry, ApiError> {
    let dir = state.options.adapters_dir.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this server was started without an adapters folder",
            "no_adapters_dir",
        )
    })?;
    Ok(AdapterRegistry::at(
        dir,
        state.options.models_dir.clone().unwrap_or_default(),
    ))
}

/// The folder of adapter `name`, refusing names that would leave the adapters folder.
fn adapter_folder(state: &ServerState, name: &str) -> Result<PathBuf, ApiError> {
    registry(state)?.folder(name).map_err(|e| match e {
        AdapterError::InvalidName(_) => ApiError::bad_request(e.to_string(), Some("name")),
        other => ApiError::not_found(other.to_string()),
    })
}

fn served_json(a: &ServedAdapter) -> Value {
    json!({"name": a.name, "base": a.base, "model": a.model_id(), "dir": a.dir})
}

/// `GET /api/adapters`
async fn list(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let registry = registry(&state)?;
    let served = state.models.adapters();
    let entries = tokio::task::spawn_blocking(move || registry.list())
        .await
        .map_err(|e| ApiError::internal(format!("listing adapters: {e}")))?;
    let out: Vec<Value> = entries
        .iter()
        .map(|a| {
            let name = &a.name;
            let report = a.report.as_ref().map(|r| {
                json!({
                    "verdict": r.verdict, "summary": r.summary, "examples": r.examples,
                    "base": r.base, "tuned": r.tuned,
                    "plot": a.has_plot.then(|| format!("/api/adapters/{name}/report.png")),
                })
            });
            let serving = served.iter().find(|s| &s.name == name);
            json!({
                "name": name,
                "dir": a.dir,
                "base_model": a.config.base_model_name_or_path,
                "rank": a.config.r,
                "alpha": a.config.lora_alpha,
                "targets": a.config.target_modules,
                "size": a.size,
                "sha256": a.sha256,
                "served": serving.is_some(),
                "model": serving.map(ServedAdapter::model_id),
                "report": report,
            })
        })
        .collect();
    Ok(Json(json!({"adapters": out})))
}

/// `POST /api/adapters/{name}/load`
async fn load(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let dir = adapter_folder(&state, &name)?;
    let base = if body.is_empty() {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), None))?;
        v.get("base").and_then(|b| b.as_str()).map(str::to_string)
    };
    let st = state.clone();
    let served =
        tokio::task::spawn_blocking(move || st.models.load_adapter(&name, &dir, base.as_deref()))
            .await
            .map_err(|e| ApiError::internal(format!("loading the adapter: {e}")))?
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("name")))?;
    Ok(Json(served_json(&served)))
}

/// `POST /api/adapters/{name}/unload`
async fn unload(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.models.unload_adapter(&name) {
        Ok(Json(json!({"name": name, "served": false})))
    } else {
        Err(ApiError::not_found(format!(
            "adapter `{name}` is not being served"
        )))
    }
}

/// `GET /api/adapters/{name}/report.png`
async fn report_png(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let png = adapter_folder(&state, &name)?.join("report/report.png");
    let bytes = tokio::fs::read(&png)
        .await
        .map_err(|_| ApiError::not_found(format!("adapter `{name}` has no report yet")))?;
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
}
