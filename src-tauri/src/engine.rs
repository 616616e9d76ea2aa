//! The engine, in-process: the same HTTP server as `kura serve`, for this window only.
//!
//! The desktop app does not talk to the engine through Tauri commands: it runs the
//! very router `kura serve` runs (`kura::server`), on `127.0.0.1` with a port the OS
//! picks, and loads the web UI from it. One API and one UI for the browser on the
//! LAN and the desktop window; nothing to keep in step.
//!
//! Other programs on this machine can reach a loopback port too, so every launch
//! draws a random access token (`kura_server::auth`): the window opens the UI with
//! `?token=…` (the server turns it into an `HttpOnly` cookie) and anything else must
//! present the token. Where the engine listens, and its token, are written to
//! `desktop.json` in the data folder (readable by this user only) for scripts and
//! tests, and removed on exit; stdout gets one line with the address.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kura::ingest::roots::SourceRoots;
use kura::llm::DeviceChoice;
use kura::paths::Paths;
use kura_server::{self as server, auth, ModelChoice, ServerOptions, ServerState};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// A running engine.
pub struct Engine {
    /// Where the UI and the API are (`http://127.0.0.1:PORT`).
    pub url: String,
    /// This launch's access token.
    pub token: String,
    /// What the server shares (the library, for the native helpers).
    pub state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    info_file: PathBuf,
}

/// The models to load: `KURA_MODEL` (a chat model name; default: the default chat
/// model) and `KURA_DEVICE`, as for `kura serve`.
pub fn model_choice() -> ModelChoice {
    ModelChoice {
        chat: std::env::var("KURA_MODEL")
            .ok()
            .filter(|m| !m.is_empty())
            .into_iter()
            .collect(),
        embedding: None,
        device: DeviceChoice::from_env(),
    }
}

/// The built web UI: `KURA_UI_DIR`, else the copy bundled with the installed app
/// (`<resources>/ui`), else the source checkout's `ui/dist`.
pub fn ui_dir(resources: Option<&Path>) -> Option<PathBuf> {
    let bundled = resources
        .map(|r| r.join("ui"))
        .filter(|d| d.join("index.html").is_file());
    std::env::var_os("KURA_UI_DIR")
        .map(PathBuf::from)
        .or(bundled)
        .or_else(server::ui::default_dir)
}

/// Whether the window trains the jobs it queues: yes, unless `KURA_RUN_JOBS=0` (for
/// a machine where `kura jobs run` or a server already runs the queue).
pub fn run_jobs() -> bool {
    std::env::var("KURA_RUN_JOBS").map_or(true, |v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The folders the desktop app may ingest from: `KURA_SOURCE_ROOTS` (`:`-separated),
/// else the user's home folder — the window is the user's own, and the folder
/// chooser opens there.
pub fn source_roots() -> Result<SourceRoots> {
    let dirs: Vec<PathBuf> = match std::env::var_os("KURA_SOURCE_ROOTS") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .into_iter()
            .collect(),
    };
    SourceRoots::new(&dirs).context("KURA_SOURCE_ROOTS")
}

impl Engine {
    /// Loads the models and the library, starts the server on a free loopback port
    /// and records where it is. Runs on `runtime`; returns once the server listens.
    pub fn start(runtime: &Runtime, paths: &Paths, ui_dir: Option<PathBuf>) -> Result<Engine> {
        std::fs::create_dir_all(&paths.data_dir)
            .with_context(|| format!("creating the data folder {}", paths.data_dir.display()))?;
        let token = auth::random_token();
        let options = ServerOptions {
            ui_dir,
            api_token: Some(token.clone()),
            source_roots: source_roots()?,
            run_jobs: run_jobs(),
            ..ServerOptions::default()
        };
        let state = runtime.block_on(ServerState::open(paths, &model_choice(), options))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("listening on 127.0.0.1")?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server::serve(listener, serving, shutdown).await {
                tracing::error!("the engine's server stopped: {e}");
            }
        });
        let info_file = paths.data_dir.join("desktop.json");
        write_private(
            &info_file,
            &serde_json::json!({"url": url, "token": token, "pid": std::process::id()}).to_string(),
        )
        .with_context(|| format!("writing {}", info_file.display()))?;
        println!("kura-desktop: engine listening on {url}");
        Ok(Engine {
            url,
            token,
            state,
            stop: Some(stop),
            info_file,
        })
    }

    /// The address the window opens: the UI in the desktop's language, handing it
    /// this launch's token.
    pub fn window_url(&self) -> String {
        format!(
            "{}/?lang={}&token={}",
            self.url,
            desktop_language(),
            self.token
        )
    }

    /// Stops the server (running generations are cancelled) and forgets the address.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            // Give the server a moment to cancel generations and close connections.
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = std::fs::remove_file(&self.info_file);
    }
}

/// The UI language of the desktop session: `ja` when the locale (`LC_ALL`,
/// `LC_MESSAGES`, `LANG`, then `LANGUAGE`) is Japanese, else `en`. The web view's
/// own `navigator.language` cannot be trusted for this: WebKitGTK reports `en-US`
/// when the C library lacks the locale, as on minimal installs.
pub fn desktop_language() -> &'static str {
    let locale = ["LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty());
    match locale {
        Some(l) if l.starts_with("ja") => "ja",
        _ => "en",
    }
}

/// Writes `text` to `path`, readable and writable by this user only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}
