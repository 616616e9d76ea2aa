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
use super::loaded::ServedAdapter;
use super::ServerState;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/adapters", get(list))
        .route("/api/adapters/{name}/load", post(load))
        .route("/api/adapters/{name}/unload", post(unload))
        .route("/api/adapters/{name}/report.png", get(report_png))
}

fn adapters_dir(state: &ServerState) -> Result<PathBuf, ApiError> {
    state.options.adapters_dir.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this server was started without an adapters folder",
            "no_adapters_dir",
        )
    })
}

/// The folder of adapter `name`, refusing names that would leave the adapters folder.
fn adapter_folder(state: &ServerState, name: &str) -> Result<PathBuf, ApiError> {
    if !crate::train::dataset::is_folder_name(name) {
        return Err(ApiError::bad_request(
            format!("invalid adapter name `{name}`"),
            Some("name"),
        ));
    }
    let dir = adapters_dir(state)?.join(name);
    if !dir.join("adapter_config.json").is_file() {
        return Err(ApiError::not_found(format!(
            "no adapter `{name}` in {} (アダプタが見つかりません)",
            dir.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )));
    }
    Ok(dir)
}

fn served_json(a: &ServedAdapter) -> Value {
    json!({"name": a.name, "base": a.base, "model": a.model_id(), "dir": a.dir})
}

/// `GET /api/adapters`
async fn list(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, ApiError> {
    let dir = adapters_dir(&state)?;
    let served = state.models.adapters();
    let mut out = Vec::new();
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.path().join("adapter_config.json").is_file())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    for name in names {
        let folder = dir.join(&name);
        let config: Value = std::fs::read_to_string(folder.join("adapter_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let report: Option<Value> = std::fs::read_to_string(folder.join("report/report.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|r| {
                json!({
                    "verdict": r["verdict"], "summary": r["summary"], "examples": r["examples"],
                    "base": r["base"], "tuned": r["tuned"],
                    "plot": folder.join("report/report.png").is_file()
                        .then(|| format!("/api/adapters/{name}/report.png")),
                })
            });
        let weights = folder.join("adapter_model.safetensors");
        let size: u64 = std::fs::metadata(&weights).map_or(0, |m| m.len());
        // Adapters are megabytes: hashing them per listing is cheap.
        let sha256 = std::fs::read(&weights).ok().map(|b| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&b))
        });
        let serving = served.iter().find(|a| a.name == name);
        out.push(json!({
            "name": name,
            "dir": folder,
            "base_model": config["base_model_name_or_path"],
            "rank": config["r"],
            "alpha": config["lora_alpha"],
            "targets": config["target_modules"],
            "size": size,
            "sha256": sha256,
            "served": serving.is_some(),
            "model": serving.map(ServedAdapter::model_id),
            "report": report,
        }));
    }
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
