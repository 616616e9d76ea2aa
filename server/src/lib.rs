//! The HTTP server: an OpenAI-compatible `/v1` API and Kura's own `/api`.
//!
//! `kura serve` puts the engine on the network (loopback by default) so that other
//! internal systems can use the local model through the API they already speak —
//! the official `openai` SDKs, LangChain, anything with a configurable `base_url` —
//! and so that the desktop app and the web UI talk to the same engine.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | chat, streamed (SSE) or not ([`openai`]) |
//! | `POST /v1/embeddings` | sentence embeddings ([`openai`]) |
//! | `GET /v1/models`, `/v1/models/{id}` | the loaded models |
//! | `POST /api/ask` | a grounded answer with citations, streamed (SSE) ([`ask`]) |
//! | `GET /api/collections`, `/api/chunks/{id}/page` | the library, for the UI ([`ask`]) |
//! | `/api/ingest…`, `/api/collections/{name}/documents`, `/api/documents/{id}`, `/api/models`, `/api/feedback` | documents, ingest jobs, models, feedback, for the UI ([`library_api`]) |
//! | `GET /api/adapters`, `POST /api/adapters/{name}/load`, `…/unload`, `…/report.png` | LoRA adapters served by name, loaded and unloaded live ([`adapters_api`]) |
//! | `/api/datasets…` | training datasets: import, draft from a collection, review ([`datasets_api`]) |
//! | `/api/training/jobs…` | the training-job queue: list, submit, metrics, cancel, resume ([`jobs_api`]) |
//! | `GET /api/health` | status, models, queue and counters, version (open even with a token) |
//! | `GET /…` (anything else) | the web UI ([`ui`]): files of `ui/dist`, else `index.html` |
//!
//! # Design
//!
//! **Shared weights, one session per request.** The weights of a model ([`Llm`]) are
//! loaded once and only read while generating, so every request shares them through
//! an `Arc`. Everything a generation changes — the KV cache and the tokens it holds —
//! lives in a [`Session`](kura::llm::Session) that the request creates and owns. Two
//! requests therefore cannot corrupt each other's state however they interleave, and
//! a LoRA adapter chosen for one request (a per-session setting) never leaks into
//! another.
//!
//! **A fair queue in front of the model** ([`queue`]). One generation already keeps
//! every CPU core busy; running several at once only makes each slower and adds
//! memory for their caches. Requests wait first come, first served for one of
//! `max_concurrent` slots (default 1 on the CPU; raise it on a GPU). Waiting is an
//! `await`, so a long queue blocks no thread and `/api/health` answers at once.
//! Generation itself runs on blocking threads ([`worker`]), never on the async
//! executor. A full queue answers 503 at once instead of growing without bound.
//!
//! **Cancellation follows the connection.** The request's side of a generation is a
//! [`GenerationHandle`](worker::GenerationHandle) whose `Drop` sets the generation's cancel flag.
//! axum drops the response future when a non-streaming client disconnects, and the
//! SSE body when a streaming client does, so either way the engine stops within one
//! token and the slot goes to the next request in line; a request still in the queue
//! just leaves it. `/api/health` counts cancelled generations and the tokens they had
//! produced.
//!
//! **Graceful shutdown.** Ctrl-C or SIGTERM stops accepting connections, refuses
//! queued requests with 503, cancels running generations (their clients get an error
//! event) and waits a few seconds for connections to close.
//!
//! **Training inside the server, when asked.** With [`ServerOptions::run_jobs`]
//! (`kura serve --run-jobs`; the desktop app's default) the training-job runner of
//! `kura jobs run` ([`kura::jobs::runner`]) works on a thread of its own, so what
//! the Training screen queues is trained here. Shutdown stops it at the next step,
//! with a checkpoint; the job resumes when a runner next starts.
//!
//! **An access token when others can reach it** ([`auth`]). With
//! [`ServerOptions::api_token`] set, `/api` and `/v1` need `Authorization: Bearer` or
//! the cookie the UI gets when opened with `?token=`; the desktop app always sets one.
//!
//! [`ServerState::open`] loads what `kura serve` and the desktop app serve (models,
//! library) from the same choices, so the two start the engine the same way.
//!
//! Errors are OpenAI-shaped JSON ([`error`]). [`ServerState`] holds what handlers
//! share; new parts of the API (e.g. grounded answers at `/api/ask`) add their state
//! there and their routes in [`routes`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use kura::pool::ModelPool;
//! use kura_server::{self as server, ServerOptions, ServerState};
//! let registry = kura::models::Registry::open(std::path::Path::new("models"))?;
//! let models = ModelPool::load(&registry, &["smollm2-135m-instruct".into()], None,
//!     &candle_core::Device::Cpu)?;
//! let state = ServerState::new(models, ServerOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server::serve(listener, state, server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod adapters_api;
pub mod ask;
pub mod auth;
pub mod datasets_api;
pub mod error;
pub mod guard;
pub mod jobs_api;
pub mod library;
pub mod library_api;
pub mod openai;
pub mod queue;
pub mod ui;
pub mod worker;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use kura::library::{Library, LibraryError};
pub use kura::pool::{ChatModel, ChatRoute, EmbeddingModel, ModelPool, PoolError, ServedAdapter};
pub use queue::{QueueStats, Scheduler};

use kura::ingest::roots::SourceRoots;
use kura::jobs::{BackgroundRunner, JobQueue, JobRunner, RunnerOptions};
use kura::llm::{DeviceChoice, Llm, LlmError};
use kura::models::{ModelError, Registry};
use kura::paths::Paths;

/// How often a runner inside the server looks for due training jobs.
pub const JOB_POLL: Duration = Duration::from_secs(5);

/// How long shutdown waits for open connections after cancelling the generations.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of a server (beyond its models and address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Generations that may run at once (default 1: one saturates a CPU).
    pub max_concurrent: usize,
    /// Requests that may wait for a slot before new ones get 503 (default 64).
    pub max_waiting: usize,
    /// Cap on prompt + reply tokens per request, below the model's own context
    /// (bounds the KV cache memory of each request). `None`: the model's context.
    pub context_length: Option<usize>,
    /// Embedding requests computed at once (default 1).
    pub embedding_concurrency: usize,
    /// The built web UI (`ui/dist`) served at `/`; `None`: `/` says how to build it.
    pub ui_dir: Option<std::path::PathBuf>,
    /// The models folder, for `/api/models` (`None`: that route answers 503).
    pub models_dir: Option<std::path::PathBuf>,
    /// The trained adapters (`<data>/adapters`), for `/api/adapters` (`None`: 503).
    pub adapters_dir: Option<std::path::PathBuf>,
    /// The access token `/api` and `/v1` require ([`auth`]); `None`: open to all
    /// who can connect (fine on loopback).
    pub api_token: Option<String>,
    /// The folders clients may have the server read documents from
    /// ([`kura::ingest::roots`]); empty: none, beyond what `kura ingest` recorded.
    pub source_roots: SourceRoots,
    /// Host names (beyond this machine's own names and any IP address) that requests
    /// may be addressed to: the LAN names of the server ([`guard`]).
    pub allowed_hosts: Vec<String>,
    /// Origins (`http://host:port`) of other web pages that may send requests that
    /// change something, beside the server's own ([`guard`]).
    pub allowed_origins: Vec<String>,
    /// Largest file an ingest started through the API reads, in bytes.
    pub max_file_bytes: u64,
    /// Most passages one file may give in an ingest started through the API.
    pub max_chunks_per_file: usize,
    /// Run the training-job queue inside the server ([`kura::jobs::runner`]): what
    /// the Training screen queues then trains here, on the chat models' device.
    pub run_jobs: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_concurrent: 1,
            max_waiting: 64,
            context_length: None,
            embedding_concurrency: 1,
            ui_dir: None,
            models_dir: None,
            adapters_dir: None,
            api_token: None,
            source_roots: SourceRoots::default(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_file_bytes: kura::ingest::Limits::default().max_file_bytes,
            max_chunks_per_file: kura::ingest::pipeline::DEFAULT_MAX_CHUNKS_PER_FILE,
            run_jobs: false,
        }
    }
}

/// Which models a server loads: the choices of `kura serve`'s flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChoice {
    /// Chat models (the first answers requests that name none); empty: the default.
    pub chat: Vec<String>,
    /// The embedding model (`None`: the default; `Some("none")`: no embeddings, and
    /// so no library: a model-only server).
    pub embedding: Option<String>,
    /// Where the chat models run.
    pub device: DeviceChoice,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The model registry or a model file (missing, wrong hash).
    #[error(transparent)]
    Registry(#[from] ModelError),
    /// The device (e.g. CUDA asked for on a build without it).
    #[error(transparent)]
    Device(#[from] LlmError),
    /// Loading a model.
    #[error(transparent)]
    Load(#[from] PoolError),
    /// The catalog or the search index.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// The training-job runner could not start.
    #[error(transparent)]
    Runner(#[from] RunnerStartError),
}

/// Why the training-job runner could not start inside the server.
#[derive(Debug, thiserror::Error)]
pub enum RunnerStartError {
    /// Training jobs were asked for on a server without a catalog (no embedding model).
    #[error(
        "--run-jobs needs the catalog, which a server without an embedding model does not open"
    )]
    NoCatalog,
    /// The runner's thread could not be started.
    #[error("starting the training-job runner: {0}")]
    Thread(#[from] std::io::Error),
}

/// What every handler shares: the models, the queue, the settings.
///
/// Other parts of the API extend this struct with their own shared state (a
/// retriever for `/api/ask`, the job list for training) and add their routes in
/// [`routes`].
#[derive(Debug)]
pub struct ServerState {
    /// The loaded models.
    pub models: ModelPool,
    /// The fair queue of generations.
    pub scheduler: Arc<Scheduler>,
    /// Slots for embedding requests (separate from generation, so an embedding does
    /// not wait behind a long answer).
    pub embed_slots: Arc<Semaphore>,
    /// The settings.
    pub options: ServerOptions,
    /// When the server started (for uptime).
    pub started: Instant,
    /// The same, as Unix seconds (the `created` of `/v1/models`).
    pub started_unix: u64,
    /// The indexed documents `/api/ask` answers from (`None`: a model-only server).
    pub library: Option<Arc<Library>>,
    /// Datasets being drafted from a collection ([`datasets_api`]).
    pub draft_runs: kura::train::synth::DraftRuns,
    /// The training-job runner working inside this server (`run_jobs`).
    pub job_runner: std::sync::Mutex<Option<BackgroundRunner>>,
}

impl ServerState {
    /// State for a server over `models`.
    pub fn new(models: ModelPool, options: ServerOptions) -> Arc<Self> {
        Self::with_library(models, options, None)
    }

    /// State for a server over `models` that also answers from `library`.
    pub fn with_library(
        models: ModelPool,
        options: ServerOptions,
        library: Option<Arc<Library>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            models,
            scheduler: Scheduler::new(options.max_concurrent, options.max_waiting),
            embed_slots: Arc::new(Semaphore::new(options.embedding_concurrency.max(1))),
            options,
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            library,
            draft_runs: kura::train::synth::DraftRuns::default(),
            job_runner: std::sync::Mutex::new(None),
        })
    }

    /// Verifies and loads the models of `choice` (on a blocking thread: it reads
    /// gigabytes) and opens the library in `paths.data_dir` (when an embedding model
    /// is loaded): what `kura serve` and the desktop app serve. `options.models_dir`
    /// is filled in from `paths` when unset.
    pub async fn open(
        paths: &Paths,
        choice: &ModelChoice,
        mut options: ServerOptions,
    ) -> Result<Arc<Self>, StartError> {
        let registry = Registry::open(&paths.models_dir)?;
        let device = choice.device.open()?;
        let (chat, embedding) = (choice.chat.clone(), choice.embedding.clone());
        let load_device = device.clone();
        let models = tokio::task::spawn_blocking(move || {
            ModelPool::load(&registry, &chat, embedding.as_deref(), &load_device)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        // The documents `/api/ask` answers from: the same data folder as `kura ingest`.
        let library = match models.embedding() {
            Some(embedding) => Some(Arc::new(
                Library::open(paths, embedding.embedder.clone(), &embedding.name).await?,
            )),
            None => None,
        };
        options
            .models_dir
            .get_or_insert_with(|| paths.models_dir.clone());
        options
            .adapters_dir
            .get_or_insert_with(|| paths.adapters_dir());
        let run_jobs = options.run_jobs;
        let state = Self::with_library(models, options, library);
        if run_jobs {
            state.start_job_runner(paths, device)?;
        }
        Ok(state)
    }

    /// Starts the training-job runner on a thread of its own, over this server's
    /// catalog (the caller must be inside a multi-threaded Tokio runtime).
    pub fn start_job_runner(
        &self,
        paths: &Paths,
        device: candle_core::Device,
    ) -> Result<(), RunnerStartError> {
        let library = self.library.as_ref().ok_or(RunnerStartError::NoCatalog)?;
        let runner = JobRunner::new(
            JobQueue::new(library.catalog.clone()),
            paths,
            device,
            tokio::runtime::Handle::current(),
        );
        let background = BackgroundRunner::spawn(
            runner,
            RunnerOptions {
                once: false,
                poll: JOB_POLL,
            },
        )?;
        *self.job_runner.lock().expect("job runner lock") = Some(background);
        Ok(())
    }

    /// Whether a training-job runner works inside this server.
    pub fn runs_jobs(&self) -> bool {
        self.job_runner
            .lock()
            .expect("job runner lock")
            .as_ref()
            .is_some_and(BackgroundRunner::is_running)
    }

    /// The context a request to `llm` may use: the model's, lowered by the server's
    /// `context_length` option.
    pub fn context_length(&self, llm: &Llm) -> usize {
        let model = llm.model.info().context_length;
        self.options.context_length.map_or(model, |c| c.min(model))
    }

    /// Stops taking work: queued requests get 503, running generations are cancelled,
    /// and a training job running here stops at its next step (with a checkpoint).
    pub fn shutdown(&self) {
        self.scheduler.shutdown();
        self.embed_slots.close();
        if let Some(r) = self.job_runner.lock().expect("job runner lock").as_ref() {
            r.request_stop();
        }
    }

    /// Waits until the training-job runner (if any) has stopped. Blocking.
    pub fn join_job_runner(&self) {
        let runner = self.job_runner.lock().expect("job runner lock").take();
        if let Some(r) = runner {
            r.stop();
        }
    }
}

/// Every route of the API, before the state is attached. Extend here.
pub fn routes() -> Router<Arc<ServerState>> {
    openai::routes()
        .merge(ask::routes())
        .merge(library_api::routes())
        .merge(adapters_api::routes())
        .merge(jobs_api::routes())
        .merge(datasets_api::routes())
        .route("/api/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The complete application for `state`, behind its access token ([`auth`]).
pub fn router(state: Arc<ServerState>) -> Router {
    routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Outermost: a request from another site or to a foreign name is refused
        // before the token is even looked at.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_site_only,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The largest request body, in bytes (a JSON body is never near it; a bigger one
/// gets an OpenAI-shaped 413).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Unknown API paths are a JSON 404; every other path belongs to the web UI.
async fn not_found(
    State(state): State<Arc<ServerState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if ui::is_api_path(uri.path()) {
        return ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response();
    }
    ui::serve(state.options.ui_dir.as_deref(), &method, uri.path()).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// `GET /api/health`: for the desktop app, monitoring and tests.
pub async fn health(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let chat: Vec<Value> = state
        .models
        .chat()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "architecture": m.llm.model.info().architecture,
                "context_length": state.context_length(&m.llm),
            })
        })
        .collect();
    let embedding: Vec<Value> = state
        .models
        .embedding()
        .iter()
        .map(|e| json!({"name": e.name, "dimensions": e.embedder.dim()}))
        .collect();
    let status = if state.scheduler.is_shutting_down() {
        "shutting_down"
    } else {
        "ok"
    };
    Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "models": {"chat": chat, "embedding": embedding},
        "training_runner": state.runs_jobs(),
        "queue": state.scheduler.stats(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then shuts down
/// gracefully: see the module docs. Returns after the connections closed, or after
/// [`SHUTDOWN_GRACE`] if some did not.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (fired_tx, mut fired_rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: cancelling generations, closing connections");
        st.shutdown();
        let _ = fired_tx.send(true);
    };
    let runner_state = state.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .into_future();
    let deadline = async move {
        if fired_rx.wait_for(|f| *f).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
            Ok(())
        }
    };
    // A training job running here checkpoints at its next step before the process ends.
    let _ = tokio::task::spawn_blocking(move || runner_state.join_job_runner()).await;
    served
}
