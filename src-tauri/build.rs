//! Tauri's build step, declaring the app's commands so that the capability in
//! `capabilities/` can grant them to the window: the UI is served over
//! `http://127.0.0.1:PORT`, which Tauri treats as a remote origin whose commands
//! must each be granted.
fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(
            tauri_build::AppManifest::new().commands(&["pick_folder", "open_source"]),
        ),
    )
    .expect("tauri-build: check tauri.conf.json and capabilities/");
}
