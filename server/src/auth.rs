//! Access tokens: who may use the API of a server that others can reach.
//!
//! On loopback with no token (`kura serve` by default) every request is served, as
//! before. With a token ([`ServerOptions::api_token`](super::ServerOptions), `kura
//! serve --token` or `KURA_API_TOKEN`, and always in the desktop app, which picks a
//! random one per launch), every request to `/api/…` and `/v1/…` must show it, in
//! one of two ways:
//!
//! - `Authorization: Bearer TOKEN` — what the OpenAI SDKs send as their `api_key`,
//!   and what scripts use;
//! - the cookie [`cookie_name`] — what a browser sends. Opening any page of the UI
//!   with `?token=TOKEN` (the link `kura serve` prints, the URL the desktop window
//!   loads) sets it and redirects to the same page without the token, so the token
//!   does not stay in the address bar or the history. The cookie is `HttpOnly`
//!   (page scripts never read it) and `SameSite=Strict` (other sites cannot make the
//!   browser send it); `EventSource` streams carry it like any request.
//!
//! `/api/health` stays open so monitoring and the desktop app can see the server
//! come up. The UI's own files (`/`, `/assets/…`) are public: they hold no data.
//!
//! The cookie's name includes a short hash of the token, so two servers on one host
//! (cookies ignore the port) do not overwrite each other's. Tokens are compared in
//! constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{ui, ApiError, ServerState};

/// A fresh random token: 32 bytes as 64 hex digits.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// The name of the cookie that carries `token` (`kura_token_` + 12 hex digits of
/// its SHA-256).
pub fn cookie_name(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("kura_token_{}", &hex::encode(digest)[..12])
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the request carries `token`, as a bearer token or as the cookie.
pub fn presents(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|t| same(t.trim(), token));
    if bearer {
        return true;
    }
    let name = cookie_name(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(k, v)| k == name && same(v, token))
}

/// The value of `token=` in a query string, if any.
fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

/// The query string without its `token=` parameter.
fn query_without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with("token=") && !p.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

fn unauthorized() -> Response {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "this server needs its access token: send `Authorization: Bearer TOKEN`, or \
                  open the web UI with `?token=TOKEN` / このサーバーにはアクセストークンが必要です"
            .into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
    }
    .into_response()
}

/// The middleware: see the module docs. A no-op when the server has no token.
pub async fn require_token(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.options.api_token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if ui::is_api_path(path) {
        if path == "/api/health" || presents(request.headers(), token) {
            return next.run(request).await;
        }
        return unauthorized();
    }
    // A UI page opened with `?token=`: set the cookie, then show the page without it.
    if let Some(given) = request.uri().query().and_then(query_token) {
        if !same(given, token) {
            return unauthorized();
        }
        let rest = query_without_token(request.uri().query().unwrap_or(""));
        let location = if rest.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{rest}")
        };
        let cookie = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict",
            cookie_name(token)
        );
        let mut resp = StatusCode::SEE_OTHER.into_response();
        let h = resp.headers_mut();
        if let (Ok(loc), Ok(c)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&cookie),
        ) {
            h.insert(header::LOCATION, loc);
            h.insert(header::SET_COOKIE, c);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        return StatusCode::BAD_REQUEST.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
    }

    #[test]
    fn a_bearer_token_or_the_cookie_is_accepted_and_nothing_else() {
        let token = "s3cret";
        let mut h = HeaderMap::new();
        assert!(!presents(&h, token));
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(!presents(&h, token));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(presents(&h, token));

        let mut h = HeaderMap::new();
        let name = cookie_name(token);
        h.insert(
            header::COOKIE,
            format!("a=b; {name}=s3cre").parse().unwrap(),
        );
        assert!(!presents(&h, token));
        h.insert(
            header::COOKIE,
            "kura_token_000000000000=s3cret".parse().unwrap(),
        );
        assert!(!presents(&h, token), "another server's cookie name");
        h.insert(
            header::COOKIE,
            format!("a=b; {name}=s3cret").parse().unwrap(),
        );
        assert!(presents(&h, token));
    }

    #[test]
    fn the_token_is_taken_out_of_the_query() {
        assert_eq!(query_token("a=1&token=xyz"), Some("xyz"));
        assert_eq!(query_token("a=1"), None);
        assert_eq!(query_without_token("token=xyz"), "");
        assert_eq!(query_without_token("a=1&token=xyz&b=2"), "a=1&b=2");
        assert_ne!(cookie_name("a"), cookie_name("b"));
    }
}
