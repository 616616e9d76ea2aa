//! [`ApiError`]: every failure the HTTP API reports, shaped like OpenAI's errors.
//!
//! Clients written for the OpenAI API (the official SDKs, LangChain, …) look at the
//! HTTP status to pick an exception class and read `error.message` to show a person,
//! so both matter: a request the server cannot serve as asked is a 4xx naming the
//! field (`param`) and the reason, and only a failure of the server itself is a 5xx.
//! The body is always
//!
//! ```json
//! {"error": {"message": "…", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
//! ```

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

/// An error answer of the API: HTTP status plus OpenAI's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error class: `invalid_request_error`, `not_found_error`,
    /// `server_error`, `service_unavailable`.
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
}

/// The JSON body of an error (`{"error": {...}}`), also sent as the last SSE event of
/// a stream that fails after it started.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorObject<'a>,
}

/// OpenAI's error object.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// What went wrong.
    pub message: &'a str,
    /// The error class.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The field at fault.
    pub param: Option<&'a str>,
    /// The machine-readable code.
    pub code: Option<&'a str>,
}

impl ApiError {
    /// 400: the request is malformed or asks for something impossible.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 404 for a `model` that is not loaded (what OpenAI answers, so that clients
    /// raise their "not found" error).
    pub fn model_not_found(model: &str, loaded: &[String]) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist or is not loaded on this server. Loaded: {}.",
                loaded.join(", ")
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 400: the prompt plus the requested completion do not fit the model's context.
    pub fn context_length(context: usize, prompt: usize, completion: usize) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "This model's maximum context length is {context} tokens. However, you requested \
                 {} tokens ({prompt} in the messages, {completion} in the completion). Please \
                 reduce the length of the messages or the completion (max_tokens).",
                prompt + completion
            ),
            kind: "invalid_request_error",
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        }
    }

    /// 404 for a path the API does not have.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "not_found_error",
            param: None,
            code: None,
        }
    }

    /// 405 for a known path called with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "method not allowed on this path".into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// 503: the server is shutting down or its queue is full; retry later.
    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "service_unavailable",
            param: None,
            code: Some(code),
        }
    }

    /// 500: the server failed (a model computation error, a crashed worker).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!(ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        }
        (self.status, Json(self.body())).into_response()
    }
}

impl From<kura::llm::LlmError> for ApiError {
    fn from(e: kura::llm::LlmError) -> Self {
        use kura::llm::LlmError;
        match e {
            LlmError::ContextLength {
                prompt,
                max_tokens,
                context,
            } => Self::context_length(context, prompt, max_tokens),
            LlmError::EmptyPrompt => Self::bad_request("the prompt is empty", Some("messages")),
            LlmError::Template(m) => Self::bad_request(
                format!("the model's chat template rejected the messages: {m}"),
                Some("messages"),
            ),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<kura::embed::EmbedError> for ApiError {
    fn from(e: kura::embed::EmbedError) -> Self {
        Self::internal(e.to_string())
    }
}

/// A request's `model` that leads nowhere: 404 for an unknown name (what OpenAI
/// answers, so clients raise their "not found" error), 400 for a model of the wrong
/// kind or one this server does not hold.
impl From<kura::pool::RouteError> for ApiError {
    fn from(e: kura::pool::RouteError) -> Self {
        use kura::pool::RouteError;
        match e {
            RouteError::NotLoaded { name, loaded } => Self::model_not_found(&name, &loaded),
            other => Self::bad_request(other.to_string(), Some("model")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::model_not_found("gpt-4", &["smollm2-135m-instruct".into()]);
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let b = e.body();
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["param"], "model");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smollm2-135m-instruct"));
    }

    #[test]
    fn context_overflow_is_a_400_with_the_numbers() {
        let e: ApiError = kura::llm::LlmError::ContextLength {
            prompt: 8000,
            max_tokens: 500,
            context: 8192,
        }
        .into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(e.message.contains("8192") && e.message.contains("8500"));
        assert!(e.body()["error"]["param"].is_string());
    }
}
