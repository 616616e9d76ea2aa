//! Kura's desktop app: the engine in-process, the web UI in a window.
//!
//! Everything a user sees is the web UI (`ui/`), served by the same HTTP server as
//! `kura serve`, started inside this process on a loopback port with a per-launch
//! token ([`engine`]). The app itself only does what a web page cannot
//! ([`native`]: folder chooser, opening a source at its page) and shows running
//! training jobs in the tray ([`tray`]). The product lives in the `kura` crate.
//!
//! Settings come from the environment, as for the `kura` command: `KURA_HOME` (data
//! folder), `KURA_MODELS` (model files), `KURA_MODEL` (chat model), `KURA_DEVICE`,
//! `KURA_UI_DIR`.
//!
//! Start-up: the window opens at once on a small embedded page ("starting the
//! engine…", `splash/`) while the models are verified and loaded on another
//! thread; then it navigates to the engine's UI, or shows why the engine failed.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod engine;
mod native;
mod tray;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use kura::library::Library;
use kura::paths::Paths;
use tauri::{Manager, RunEvent, WebviewUrl, WebviewWindowBuilder};
use tokio::runtime::Runtime;

use engine::Engine;

/// What the app shares between its window, commands and tray.
pub struct Desktop {
    runtime: Runtime,
    engine: Mutex<Option<Engine>>,
}

impl Desktop {
    /// The engine's library, once it runs.
    pub fn library(&self) -> Option<Arc<Library>> {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        engine.as_ref().and_then(|e| e.state.library.clone())
    }
}

fn env_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tao=warn,wry=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let paths = Paths::resolve(env_path("KURA_HOME"), env_path("KURA_MODELS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Tauri's commands and the engine share one runtime (and so one SQLite pool).
    tauri::async_runtime::set(runtime.handle().clone());

    let app = tauri::Builder::default()
        .manage(Desktop {
            runtime,
            engine: Mutex::new(None),
        })
        .invoke_handler(tauri::generate_handler![
            native::pick_folder,
            native::open_source
        ])
        .setup(move |app| {
            WebviewWindowBuilder::new(app, "main", WebviewUrl::App("index.html".into()))
                .title("Kura 蔵")
                .inner_size(1280.0, 860.0)
                .min_inner_size(800.0, 560.0)
                .build()?;
            if let Err(e) = tray::install(app.handle()) {
                // No tray on this desktop (e.g. no StatusNotifier host): the app works without.
                tracing::warn!("no tray icon: {e}");
            }
            // Ctrl-C or SIGTERM: leave as when the window is closed (token file removed).
            let quitting = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                kura_server::shutdown_signal().await;
                quitting.exit(0);
            });
            let handle = app.handle().clone();
            let resources = app.path().resource_dir().ok();
            std::thread::spawn(move || start_engine(handle, paths, resources));
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("starting the desktop app")?;

    app.run(|app, event| {
        if let RunEvent::Exit = event {
            let desktop = app.state::<Desktop>();
            let engine = desktop
                .engine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(mut engine) = engine {
                engine.stop();
            }
        }
    });
    Ok(())
}

/// Starts the engine, then shows its UI in the window (or the reason it failed).
fn start_engine(app: tauri::AppHandle, paths: Paths, resources: Option<std::path::PathBuf>) {
    let desktop = app.state::<Desktop>();
    let ui_dir = engine::ui_dir(resources.as_deref());
    let started = Engine::start(&desktop.runtime, &paths, ui_dir);
    let Some(window) = app.get_webview_window("main") else {
        return;
    };
    match started {
        Ok(engine) => {
            let url = engine.window_url();
            *desktop.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some(engine);
            match url.parse() {
                Ok(url) => {
                    if let Err(e) = window.navigate(url) {
                        tracing::error!("opening the UI: {e}");
                    }
                }
                Err(e) => tracing::error!("the engine's address {url}: {e}"),
            }
        }
        Err(e) => {
            let message =
                format!("エンジンを起動できませんでした / The engine did not start:\n{e:#}");
            eprintln!("kura-desktop: {message}");
            let js = format!(
                "document.getElementById('status').textContent = {};",
                serde_json::Value::String(message)
            );
            let _ = window.eval(js);
        }
    }
}
