//! What a web page cannot do and the window does for the UI: choose a folder with
//! the system's dialog, and open a cited document at its page in the user's viewer.
//!
//! The UI calls these as Tauri commands (`window.__TAURI__.core.invoke`) when it
//! runs in the desktop window, and falls back to typing a path in a browser.
//! `open_source` takes a chunk id, not a path: it opens only documents that are in
//! the catalog, so a page cannot make the app launch an arbitrary file.

use std::path::Path;
use std::process::{Command, Stdio};

use tauri::State;

use crate::Desktop;

/// Shows the system's folder chooser over the window; `None` when cancelled.
#[tauri::command]
pub async fn pick_folder(window: tauri::WebviewWindow) -> Result<Option<String>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let parent = window.clone();
    window
        .run_on_main_thread(move || {
            let _ = tx.send(choose_folder(&parent));
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|e| e.to_string())
}

#[cfg(target_os = "linux")]
fn choose_folder(window: &tauri::WebviewWindow) -> Option<String> {
    use gtk::prelude::{DialogExt, FileChooserExt, GtkWindowExt};
    let parent = window.gtk_window().ok();
    let dialog = gtk::FileChooserDialog::with_buttons(
        Some("フォルダーを選択 / Choose a folder"),
        parent.as_ref(),
        gtk::FileChooserAction::SelectFolder,
        &[
            ("キャンセル / Cancel", gtk::ResponseType::Cancel),
            ("選択 / Select", gtk::ResponseType::Accept),
        ],
    );
    let picked = (dialog.run() == gtk::ResponseType::Accept)
        .then(|| dialog.filename())
        .flatten();
    dialog.close();
    picked.map(|p| p.to_string_lossy().into_owned())
}

#[cfg(not(target_os = "linux"))]
fn choose_folder(_window: &tauri::WebviewWindow) -> Option<String> {
    None
}

/// Opens the document of chunk `chunk_id` in the default viewer, at the chunk's
/// page where the viewer takes a page argument.
#[tauri::command]
pub async fn open_source(state: State<'_, Desktop>, chunk_id: i64) -> Result<(), String> {
    let library = state
        .library()
        .ok_or("the engine is not running / エンジンが起動していません")?;
    let chunk = library
        .catalog
        .chunks(&[chunk_id])
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| format!("no chunk {chunk_id} / チャンク{chunk_id}はありません"))?;
    let page = u32::try_from(chunk.page).unwrap_or(1).max(1);
    open_at_page(Path::new(&chunk.path), page)
        .map_err(|e| format!("cannot open {}: {e} / 開けません", chunk.path))
}

/// The command that shows page `page` of a PDF in `viewer` (the `.desktop` name of
/// the default PDF application), for the viewers that take a page argument.
pub fn page_command(viewer: &str, path: &Path, page: u32) -> Option<Command> {
    let v = viewer.to_ascii_lowercase();
    let (program, page_arg): (&str, String) = if v.contains("evince") {
        ("evince", format!("--page-index={page}"))
    } else if v.contains("okular") {
        ("okular", format!("--page={page}"))
    } else if v.contains("zathura") {
        ("zathura", format!("--page={page}"))
    } else if v.contains("atril") {
        ("atril", format!("--page-index={page}"))
    } else if v.contains("xreader") {
        ("xreader", format!("--page-index={page}"))
    } else if v.contains("qpdfview") {
        let mut c = Command::new("qpdfview");
        c.arg(format!("{}#{page}", path.display()));
        return Some(c);
    } else {
        return None;
    };
    let mut c = Command::new(program);
    c.arg(page_arg).arg(path);
    Some(c)
}

/// Opens `path` with the desktop's default application; PDFs at `page` when the
/// default viewer is one that takes a page ([`page_command`]).
pub fn open_at_page(path: &Path, page: u32) -> std::io::Result<()> {
    if !path.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the file is gone (moved or deleted since it was indexed)",
        ));
    }
    let is_pdf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pdf"));
    let viewer = is_pdf.then(default_pdf_viewer).flatten();
    let mut command = viewer
        .and_then(|v| page_command(&v, path, page))
        .unwrap_or_else(|| {
            let mut c = Command::new("xdg-open");
            c.arg(path);
            c
        });
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Reap it when the viewer (or xdg-open) exits, so no zombie stays behind.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// The `.desktop` name of the default PDF application (`xdg-mime`), if any.
fn default_pdf_viewer() -> Option<String> {
    let out = Command::new("xdg-mime")
        .args(["query", "default", "application/pdf"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn known_viewers_open_the_cited_page() {
        let p = Path::new("/srv/規程.pdf");
        let evince = page_command("org.gnome.Evince.desktop", p, 7).unwrap();
        assert_eq!(argv(&evince), ["evince", "--page-index=7", "/srv/規程.pdf"]);
        let okular = page_command("okularApplication_pdf.desktop", p, 3).unwrap();
        assert_eq!(argv(&okular), ["okular", "--page=3", "/srv/規程.pdf"]);
        let q = page_command("qpdfview.desktop", p, 2).unwrap();
        assert_eq!(argv(&q), ["qpdfview", "/srv/規程.pdf#2"]);
        assert!(page_command("firefox.desktop", p, 2).is_none());
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_launch() {
        let e = open_at_page(Path::new("/nonexistent/kura/規程.pdf"), 1).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
