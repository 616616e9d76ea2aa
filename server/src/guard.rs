//! Requests from other web sites: refused before any handler runs.
//!
//! A server on `127.0.0.1` with no token is reachable from every web page the
//! workstation's browser opens. Two well-known attacks follow, and this middleware
//! closes both (the same defence Ollama added to its loopback server):
//!
//! - **Cross-site requests.** A page on `evil.example` may make the browser send a
//!   "simple" POST (`text/plain` or form-encoded, no preflight) to
//!   `http://127.0.0.1:8080/api/ingest`. So every request that changes something
//!   (any method but GET, HEAD and OPTIONS) whose `Origin` header is present must come
//!   from the server's own origin (or one named with `--allowed-origin`), and every
//!   body sent to `/api/…` or `/v1/…` must be `Content-Type: application/json`, which
//!   a page on another site cannot send without a CORS preflight that this server never
//!   grants.
//! - **DNS rebinding.** `evil.example` may resolve to `127.0.0.1` a moment after the
//!   page loaded, making the browser treat the server as same-origin with the
//!   attacker. Such a request still carries `Host: evil.example`, so only requests
//!   addressed to this machine's own names are served: any IP address, `localhost`
//!   (and `*.localhost`), the machine's host name, and the LAN names given with
//!   `--allowed-host`.
//!
//! Refusals are OpenAI-shaped JSON (403 or 415) that say what to change. Oversized
//! bodies get an OpenAI-shaped 413 here too.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ui, ApiError, ServerState, MAX_BODY_BYTES};

/// This machine's host name (lower case), read once.
fn machine_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
        // within it on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase()
    })
}

/// The host part of a `Host` header value or an origin's authority (`[::1]:80` →
/// `::1`, `Example.COM:8080` → `example.com`).
pub fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if a.matches(':').count() > 1 {
        a // a bare IPv6 address
    } else {
        a.split(':').next().unwrap_or(a)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request addressed to `host` (a `Host` header value) is for this server.
pub fn host_allowed(host: &str, extra: &[String]) -> bool {
    let name = host_name(host);
    if name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let own = machine_name();
    if !own.is_empty() && (name == own || name == format!("{own}.local")) {
        return true;
    }
    extra.iter().any(|e| host_name(e) == name)
}

/// Whether `origin` (an `Origin` header value) is the server's own origin, as the
/// request's `host` names it, or one of `extra`.
pub fn origin_allowed(origin: &str, host: Option<&str>, extra: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    if extra
        .iter()
        .any(|e| e.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false; // "null" (sandboxed frames, file:// pages) and anything else
    };
    host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority))
}

/// Whether a request that may carry a body declares JSON, or carries none.
fn json_or_empty(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(ct) => ct.to_str().is_ok_and(|ct| {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        }),
        None => {
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let chunked = headers.contains_key(header::TRANSFER_ENCODING);
            !chunked && length.unwrap_or(0) == 0
        }
    }
}

fn refused(status: StatusCode, message: String, code: &'static str) -> Response {
    ApiError {
        status,
        message,
        kind: "invalid_request_error",
        param: None,
        code: Some(code),
    }
    .into_response()
}

fn too_large() -> Response {
    refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {} MB / リクエストが大きすぎます",
            MAX_BODY_BYTES >> 20
        ),
        "request_too_large",
    )
}

/// The middleware: see the module docs.
pub async fn same_site_only(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    // HTTP/2 carries the host in the URI instead.
    let host = host.or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(h) = host {
        if !host_allowed(h, &state.options.allowed_hosts) {
            return refused(
                StatusCode::FORBIDDEN,
                format!(
                    "requests addressed to `{}` are refused: this server answers only to its own \
                     names and addresses (add a LAN name with `kura serve --allowed-host NAME`) / \
                     このホスト名宛てのリクエストは受け付けません",
                    host_name(h)
                ),
                "host_not_allowed",
            );
        }
    }
    let changes_something = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_something {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(origin, host, &state.options.allowed_origins) {
                return refused(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a request from the web page at `{origin}` is refused: only this server's \
                         own pages may change anything (allow another with \
                         `kura serve --allowed-origin ORIGIN`) / 他のサイトからのリクエストは受け付けません"
                    ),
                    "origin_not_allowed",
                );
            }
        }
        if ui::is_api_path(request.uri().path()) && !json_or_empty(headers) {
            return refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with `Content-Type: application/json` / \
                 本文は Content-Type: application/json の JSON で送ってください"
                    .into(),
                "unsupported_media_type",
            );
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return too_large();
        }
    }
    let response = next.run(request).await;
    // A streamed body over the limit is found while a handler reads it; axum's own
    // answer to that is plain text.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_and_addresses_pass_and_foreign_names_do_not() {
        for h in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
            "LOCALHOST:1",
            "10.0.0.7",
            "app.localhost",
        ] {
            assert!(host_allowed(h, &[]), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil",
        ] {
            assert!(!host_allowed(h, &[]), "{h}");
        }
        assert!(host_allowed("kura.lan:8080", &["kura.lan".into()]));
        assert!(host_allowed(&format!("{}:9", machine_name()), &[]) || machine_name().is_empty());
    }

    #[test]
    fn only_the_servers_own_origin_may_change_things() {
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed("http://127.0.0.1:8080", host, &[]));
        assert!(
            !origin_allowed("http://127.0.0.1:9999", host, &[]),
            "another local site"
        );
        assert!(!origin_allowed("http://evil.example", host, &[]));
        assert!(!origin_allowed("null", host, &[]));
        assert!(origin_allowed(
            "http://localhost:5173",
            host,
            &["http://localhost:5173/".into()]
        ));
    }

    #[test]
    fn a_body_must_be_json_and_an_empty_one_may_have_no_type() {
        let mut h = HeaderMap::new();
        assert!(json_or_empty(&h));
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(!json_or_empty(&h), "a body with no type");
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!json_or_empty(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(!json_or_empty(&h));
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(json_or_empty(&h));
    }
}
