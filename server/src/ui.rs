//! The web UI's files (`ui/dist`, built by `npm run build` in `ui/`), served at `/`.
//!
//! `kura serve` is the only thing a browser on the LAN (or the desktop window)
//! talks to, so the same server hands out the UI and its API: one origin, no CORS,
//! no second process. The UI is a single-page app that keeps its screen in the URL
//! hash, so every path that is not a file and not an API path (`/api/…`, `/v1/…`)
//! gets `index.html` ("SPA fallback"); an unknown API path stays a JSON 404.
//!
//! The files are read from disk on each request (they are small and the OS caches
//! them), so rebuilding the UI needs no server restart. Vite names the bundles in
//! `assets/` by their content hash, which makes them safe to cache for good;
//! `index.html` is never cached. When the UI was not built, `/` answers a short
//! page that says how to build it, in Japanese and English.
//!
//! Where the files are: `--ui-dir` (or `KURA_UI_DIR`), else the checkout's
//! `ui/dist` when the binary runs from a source checkout ([`default_dir`]).

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The built UI of the source checkout this binary was compiled from, if any.
pub fn default_dir() -> Option<PathBuf> {
    let dir = kura::paths::checkout_dir().join("ui").join("dist");
    dir.is_dir().then_some(dir)
}

/// Whether a request path belongs to the API rather than to the UI.
pub fn is_api_path(path: &str) -> bool {
    ["/api", "/v1"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The content type of a UI file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("otf") => "font/otf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file under `root` that a request path names, refusing anything that could
/// leave `root` (`..`, absolute parts, backslashes, NUL).
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(request_path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let rel = Path::new(decoded.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>Kura — UI not built</title>
<style>body{font-family:"Noto Sans JP","Hiragino Sans",Meiryo,sans-serif;max-width:640px;margin:12vh auto;padding:0 20px;color:#1c2430;line-height:1.8}
code{background:#f1f3f6;padding:2px 6px;border-radius:4px}</style></head>
<body><h1>Kura 蔵</h1>
<p>Web UI がビルドされていません。ソースのチェックアウトで次を実行してから、ページを再読み込みしてください。</p>
<p>The web UI has not been built. In the source checkout, run the following, then reload this page.</p>
<p><code>cd ui &amp;&amp; npm ci &amp;&amp; npm run build</code> &nbsp;(or <code>installer/setup</code>)</p>
<p>API はこのままで利用できます / The API works regardless: <code>/api/health</code>, <code>/v1/models</code>.</p>
<p style="color:#6b7280">UI folder looked for / 参照したフォルダー: {DIR}</p>
</body></html>"#;

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn file_response(path: &Path, method: &Method) -> std::io::Result<Response> {
    let bytes = tokio::fs::read(path).await?;
    let immutable = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "assets");
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// Answers a request for a UI path from `dir` (`None`: no UI folder was found).
pub async fn serve(dir: Option<&Path>, method: &Method, path: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let index = dir.map(|d| d.join("index.html"));
    let (Some(dir), Some(index)) = (dir, index.filter(|i| i.is_file())) else {
        let shown = dir.map_or_else(
            || "(none: pass --ui-dir or set KURA_UI_DIR)".to_owned(),
            |d| d.display().to_string(),
        );
        let page = NOT_BUILT.replace("{DIR}", &escape_html(&shown));
        return html(StatusCode::SERVICE_UNAVAILABLE, page);
    };
    let Some(file) = resolve(dir, path) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let target = if file.is_file() {
        file
    } else if Path::new(path).extension().is_some() {
        // A missing asset is a 404, not the app: a stale bundle name must not load HTML.
        return StatusCode::NOT_FOUND.into_response();
    } else {
        index
    };
    match file_response(&target, method).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("serving {}: {e}", target.display());
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_told_apart_from_ui_paths() {
        assert!(is_api_path("/api/ask"));
        assert!(is_api_path("/v1/models"));
        assert!(is_api_path("/api"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/apix"));
        assert!(!is_api_path("/assets/index.js"));
    }

    #[test]
    fn paths_cannot_escape_the_ui_folder() {
        let root = Path::new("/srv/ui");
        assert_eq!(
            resolve(root, "/assets/a.js"),
            Some(PathBuf::from("/srv/ui/assets/a.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/assets/%2e%2e/%2e%2e/etc/passwd"), None);
        assert_eq!(resolve(root, "/a%5c..%5cb"), None);
        assert_eq!(resolve(root, "/%zz"), None);
        assert_eq!(
            resolve(root, "/%E8%94%B5.txt"),
            Some(PathBuf::from("/srv/ui/蔵.txt"))
        );
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("a.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.svg")), "image/svg+xml");
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }

    #[tokio::test]
    async fn the_app_is_served_for_unknown_pages_and_missing_assets_are_404() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>app</p>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app-1.js"), "1").unwrap();
        let get = |p: &'static str| {
            let d = dir.path().to_path_buf();
            async move { serve(Some(&d), &Method::GET, p).await }
        };
        let r = get("/documents").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let r = get("/assets/app-1.js").await;
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(r.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert_eq!(
            get("/assets/gone-2.js").await.status(),
            StatusCode::NOT_FOUND
        );
        let none = serve(None, &Method::GET, "/").await;
        assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = serve(Some(&dir.path().join("nope")), &Method::GET, "/").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
