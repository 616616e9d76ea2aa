// The desktop app's native helpers (src-tauri/src/native.rs). Inside the desktop
// window Tauri provides `window.__TAURI__` (`withGlobalTauri`); in a browser it is
// absent and the UI falls back to what a web page can do (typing a path).

interface TauriGlobal {
  core: { invoke<T>(cmd: string, args?: Record<string, unknown>): Promise<T> };
}

function tauri(): TauriGlobal | undefined {
  return (window as unknown as { __TAURI__?: TauriGlobal }).__TAURI__;
}

export const desktop = {
  /** Whether the UI runs in the desktop window. */
  available: (): boolean => tauri() !== undefined,
  /** The system's folder chooser; `null` when cancelled. */
  pickFolder: (): Promise<string | null> => tauri()!.core.invoke<string | null>("pick_folder"),
  /** Opens the document of a chunk in the default viewer, at its page. */
  openSource: (chunkId: number): Promise<void> => tauri()!.core.invoke<void>("open_source", { chunkId }),
};
