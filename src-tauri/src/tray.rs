//! The tray icon: whether training jobs are running, without opening the window.
//!
//! Fine-tunes run for hours in `kura jobs run`, outside this app; IT staff want to
//! see at a glance that one is going. Every few seconds the icon reads the job
//! queue (`kura::jobs`, the table every runner reports to) and shows the count in
//! its menu, its tooltip and — where the tray shows one (AppIndicator) — its label.

use std::time::Duration;

use kura::jobs::{JobQueue, JobState, TrainingJob};
use tauri::menu::{Menu, MenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager};

use crate::Desktop;

/// How often the queue is read.
const POLL: Duration = Duration::from_secs(5);

/// The line for `jobs`: running and queued counts, in Japanese and English.
pub fn jobs_label(jobs: &[TrainingJob]) -> String {
    let count = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
    let (running, queued) = (count(JobState::Running), count(JobState::Queued));
    if running == 0 && queued == 0 {
        return "学習ジョブなし / No training jobs".to_owned();
    }
    format!("学習ジョブ: 実行中 {running}・待機 {queued} / Training: {running} running, {queued} queued")
}

/// Puts the icon in the tray and keeps its job count current.
pub fn install(app: &AppHandle) -> tauri::Result<()> {
    let jobs = MenuItem::with_id(app, "jobs", jobs_label(&[]), false, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Kura を開く / Open Kura", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "終了 / Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&jobs, &open, &quit])?;
    let mut builder = TrayIconBuilder::with_id("kura")
        .menu(&menu)
        .tooltip("Kura 蔵")
        .on_menu_event(|app, event| match event.id().as_ref() {
            "open" => {
                if let Some(w) = app.get_webview_window("main") {
                    let _ = w.show();
                    let _ = w.unminimize();
                    let _ = w.set_focus();
                }
            }
            "quit" => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let tray = builder.build(app)?;
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            let library = app.state::<Desktop>().library();
            if let Some(library) = library {
                match JobQueue::new(library.catalog.clone()).list().await {
                    Ok(list) => {
                        let label = jobs_label(&list);
                        let running = list.iter().filter(|j| j.state == JobState::Running).count();
                        let _ = jobs.set_text(&label);
                        let _ = tray.set_tooltip(Some(&label));
                        let _ = tray.set_title((running > 0).then(|| running.to_string()));
                    }
                    Err(e) => tracing::warn!("reading the training jobs: {e}"),
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Ok(())
}
