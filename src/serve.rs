//! `kura serve`: the OpenAI-compatible HTTP server (see [`kura_server`]).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::term::print_json;
use kura::adapters::AdapterRegistry;
use kura::ingest::roots::SourceRoots;
use kura::llm::DeviceChoice;
use kura::paths::Paths;
use kura_server::{self as server, ModelChoice, ServerOptions, ServerState};

/// `kura serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. The default serves this machine only; `0.0.0.0` serves
    /// the LAN (give it a `--token` then).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Chat model to load (repeatable; the first answers requests that name none).
    /// Default: the default chat model.
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
    /// Embedding model for /v1/embeddings (default: the default embedding model;
    /// `none` for no embeddings).
    #[arg(long, value_name = "NAME")]
    pub embedding_model: Option<String>,
    /// Generations that run at once; more wait in line (first come, first served).
    /// 1 suits a CPU, where one generation uses every core.
    #[arg(long, default_value_t = 1)]
    pub max_concurrent: usize,
    /// Requests that may wait for the model before new ones are refused (503).
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Cap on prompt + reply tokens per request (default: the model's context).
    #[arg(long, value_name = "TOKENS")]
    pub context_length: Option<usize>,
    /// The built web UI served at `/` (default: the checkout's `ui/dist`).
    #[arg(long, env = "KURA_UI_DIR", value_name = "DIR")]
    pub ui_dir: Option<std::path::PathBuf>,
    /// Where the chat models run: cpu, or cuda[:N] (builds with `--features cuda`).
    #[arg(long, default_value = "cpu", env = "KURA_DEVICE")]
    pub device: DeviceChoice,
    /// LoRA adapters to serve from the start (names under `<data>/adapters/`, or PEFT
    /// folders; repeatable). Requests pick one with `"model": "NAME"`; more can be
    /// loaded and unloaded while running (`POST /api/adapters/NAME/load`).
    #[arg(long = "adapter", value_name = "NAME")]
    pub adapters: Vec<String>,
    /// Access token that /api and /v1 require (`Authorization: Bearer TOKEN`, the
    /// `api_key` of OpenAI clients; browsers open the UI once with `?token=TOKEN`).
    #[arg(
        long,
        env = "KURA_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A folder clients may have the server ingest documents from (repeatable;
    /// `KURA_SOURCE_ROOTS` takes a `:`-separated list). Default: none — the API
    /// reads only the folders `kura ingest` added to a collection.
    #[arg(
        long = "source-root",
        value_name = "DIR",
        env = "KURA_SOURCE_ROOTS",
        value_delimiter = ':'
    )]
    pub source_roots: Vec<std::path::PathBuf>,
    /// A LAN name of this server that requests may be addressed to (repeatable);
    /// IP addresses, `localhost` and the machine's host name always are.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Another web origin (`http://host:port`) whose pages may send requests that
    /// change something (repeatable); the server's own pages always may.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Largest file an ingest started through the API reads, in megabytes.
    #[arg(long, default_value_t = 200)]
    pub max_file_mb: u64,
    /// Most passages one file may give in an ingest started through the API.
    #[arg(long, default_value_t = kura::ingest::pipeline::DEFAULT_MAX_CHUNKS_PER_FILE)]
    pub max_chunks_per_file: usize,
    /// Also run the training-job queue (what `kura jobs run` does), on `--device`:
    /// jobs queued from the Training screen or `kura train submit` train here.
    #[arg(long)]
    pub run_jobs: bool,
}

pub(super) fn serve_cmd(args: ServeArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    if args.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        anyhow::bail!("--token / KURA_API_TOKEN is empty");
    }
    if !json_out {
        eprintln!("kura serve: verifying and loading models…");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let choice = ModelChoice {
        chat: args.models.clone(),
        embedding: args.embedding_model.clone(),
        device: args.device,
    };
    let options = ServerOptions {
        max_concurrent: args.max_concurrent,
        max_waiting: args.max_queue,
        context_length: args.context_length,
        ui_dir: args.ui_dir.clone().or_else(server::ui::default_dir),
        api_token: args.token.clone(),
        source_roots: SourceRoots::new(&args.source_roots).context("--source-root")?,
        allowed_hosts: args.allowed_hosts.clone(),
        allowed_origins: args.allowed_origins.clone(),
        max_file_bytes: args.max_file_mb * 1024 * 1024,
        max_chunks_per_file: args.max_chunks_per_file,
        run_jobs: args.run_jobs,
        ..ServerOptions::default()
    };
    let state = runtime.block_on(ServerState::open(paths, &choice, options))?;
    for spec in &args.adapters {
        let adapter = AdapterRegistry::new(paths).resolve(spec)?;
        let served = state
            .models
            .load_adapter(&adapter.name, &adapter.dir, None)?;
        if !json_out {
            eprintln!(
                "  adapter `{}` on {} → model `{}`",
                served.name,
                served.base,
                served.model_id()
            );
        }
    }
    let names = state.models.names();
    let result = runtime.block_on(async {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another server using the port?)")
        })?;
        let local = listener.local_addr()?;
        if json_out {
            print_json(&json!({"listening": format!("http://{local}"), "models": names}));
        } else {
            println!("kura serve: listening on http://{local}");
            println!(
                "  models: {}; OpenAI base_url: http://{local}/v1 — Ctrl-C to stop",
                names.join(", ")
            );
            let roots = options_roots(&args.source_roots);
            println!("  source roots: {roots}");
            if args.run_jobs {
                println!("  training jobs: run here as they fall due (kura jobs list)");
            }
            if args.token.is_some() {
                println!("  web UI: http://{local}/?token=TOKEN (once per browser; the API needs `Authorization: Bearer TOKEN`)");
            } else {
                println!("  web UI: http://{local}/");
            }
        }
        if !args.host.is_loopback() && args.token.is_none() {
            eprintln!(
                "warning: listening on {} with no --token — every machine that can reach it \
                 may use the API / トークンなしでネットワーク上の誰でも API を利用できます",
                args.host
            );
        }
        server::serve(listener, state, server::shutdown_signal()).await?;
        anyhow::Ok(())
    });
    // Generations were cancelled on shutdown; give their threads a moment to end.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result?;
    if !json_out {
        eprintln!("kura serve: stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// The source roots as printed at start-up.
fn options_roots(roots: &[std::path::PathBuf]) -> String {
    if roots.is_empty() {
        "none (the API ingests only folders `kura ingest` added; add --source-root DIR) / なし"
            .into()
    } else {
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
