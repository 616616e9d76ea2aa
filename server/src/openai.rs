//! The OpenAI-compatible API: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.
//!
//! Other internal systems (and the official `openai` SDKs pointed at
//! `base_url="http://127.0.0.1:8080/v1"`) talk to Kura as they would to OpenAI. This
//! file holds the wire format — request and response types with OpenAI's field names —
//! and the handlers that translate between it and the engine.
//!
//! Differences from OpenAI, all deliberate:
//!
//! * Sampling fields left out of a request take llama.cpp's defaults (temperature 0.8,
//!   top-k 40, top-p 0.95, min-p 0.05, no repetition penalty), which suit small local
//!   models better than OpenAI's temperature 1. `temperature: 0` is greedy and
//!   deterministic. The vLLM extension fields `top_k`, `min_p`, `repetition_penalty`
//!   and `ignore_eos` are honoured; `frequency_penalty`, `presence_penalty` and `user`
//!   are accepted and ignored. `n` must be 1; tools and log-probabilities are refused.
//! * Without `max_tokens` (or `max_completion_tokens`) a reply may use the rest of the
//!   context, up to [`DEFAULT_MAX_TOKENS`].
//! * Embeddings: multilingual-e5 expects `query: ` or `passage: ` in front of every
//!   text and OpenAI's API has no such notion, so an input is embedded as a
//!   **passage** unless it already starts with `query: ` or `passage: `, in which case
//!   it is embedded as written. To embed a search query, send `"query: …"`. A text
//!   longer than the model's window is refused (400) rather than silently cut.
//! * Responses carry a llama.cpp-style `timings` object (prompt and decode times).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::worker::{spawn_generation, GenerationEvent, GenerationHandle, GenerationRequest};
use super::ServerState;
use kura::embed::ModelKind;
use kura::llm::{ChatMessage, FinishReason, GenerateParams, Generation, Role, SamplingParams};
use kura::pool::EmbeddingModel;

/// Reply length when a request sets no `max_tokens` (less if the context is shorter).
pub const DEFAULT_MAX_TOKENS: usize = 2048;
/// The most texts one embeddings request may carry (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// The `/v1` routes.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
}

/// Parses a JSON request body; a malformed one is a 400 naming the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

// ---------------------------------------------------------------------------------
// Chat completions: request

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatCompletionRequest {
    /// Which loaded model (default: the server's first chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<RequestMessage>,
    /// The most tokens to generate (legacy name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The most tokens to generate (current name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// 0 = greedy; default 0.8.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling; default 0.95.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed for sampling (default: a random one).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stop strings: one or a list.
    #[serde(default)]
    pub stop: Option<StopSpec>,
    /// Stream the reply as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of replies; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// Accepted, ignored.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Accepted, ignored.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Not supported when true.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Not supported (tool calling).
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// Only `{"type": "text"}` is supported.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Accepted, ignored.
    #[serde(default)]
    pub user: Option<String>,
    /// Extension (vLLM): keep only the k most likely tokens; default 40, 0 = off.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Extension (vLLM): drop tokens less likely than min_p × the best; default 0.05.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Extension (vLLM): repetition penalty; default 1 (off).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Extension (vLLM): do not stop at the end-of-turn token (benchmarks, tests).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// One message of the request's conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or a list of content parts (only `text` parts are supported).
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": "…"}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl ChatCompletionRequest {
    /// The conversation in the engine's terms.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "`messages` must hold at least one message",
                Some("messages"),
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(ApiError::bad_request(
                            format!(
                                "messages[{i}]: role `{other}` is not supported \
                                 (system, developer, user, assistant)"
                            ),
                            Some("messages"),
                        ))
                    }
                };
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::bad_request(
                                        format!(
                                            "messages[{i}]: content part `{kind}` is not \
                                             supported (only text)"
                                        ),
                                        Some("messages"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                Ok(ChatMessage { role, content })
            })
            .collect()
    }

    /// Refuses what the server does not do, rather than quietly doing something else.
    pub fn check_supported(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::bad_request(
                "logprobs are not supported",
                Some("logprobs"),
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad_request(
                "tool calling is not supported",
                Some("tools"),
            ));
        }
        if let Some(rf) = &self.response_format {
            if rf.get("type").and_then(Value::as_str) != Some("text") {
                return Err(ApiError::bad_request(
                    "only response_format {\"type\": \"text\"} is supported",
                    Some("response_format"),
                ));
            }
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::bad_request(
                    format!("temperature {t} is outside 0..2"),
                    Some("temperature"),
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_request(
                    format!("top_p {p} is outside (0, 1]"),
                    Some("top_p"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the reply is streamed.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Generation settings for a prompt of `prompt_tokens` in a context of `context`.
    pub fn generate_params(
        &self,
        prompt_tokens: usize,
        context: usize,
    ) -> Result<GenerateParams, ApiError> {
        let requested = self.max_completion_tokens.or(self.max_tokens);
        let param = if self.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let max_tokens = match requested {
            Some(0) => {
                return Err(ApiError::bad_request(
                    format!("{param} must be at least 1"),
                    Some(param),
                ))
            }
            Some(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if prompt_tokens.saturating_add(n) > context {
                    return Err(ApiError::context_length(context, prompt_tokens, n));
                }
                n
            }
            None => {
                if prompt_tokens >= context {
                    return Err(ApiError::context_length(context, prompt_tokens, 1));
                }
                (context - prompt_tokens).min(DEFAULT_MAX_TOKENS)
            }
        };
        let temperature = self.temperature.unwrap_or(0.8);
        let repeat_penalty = self.repetition_penalty.unwrap_or(1.0);
        let sampling = if temperature <= 0.0 {
            SamplingParams {
                repeat_penalty,
                repeat_last_n: 64,
                ..SamplingParams::greedy()
            }
        } else {
            SamplingParams {
                temperature,
                top_k: self.top_k.unwrap_or(40),
                top_p: self.top_p.unwrap_or(0.95),
                min_p: self.min_p.unwrap_or(0.05),
                repeat_penalty,
                repeat_last_n: 64,
                seed: self.seed.map_or_else(rand::random, |s| s as u64),
            }
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        Ok(GenerateParams {
            max_tokens,
            sampling,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            stop_tokens: Vec::new(),
            stop_at_eos: !self.ignore_eos.unwrap_or(false),
        })
    }
}

// ---------------------------------------------------------------------------------
// Chat completions: response

/// Token counts of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
}

/// Where the time went (llama.cpp's field names).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timings {
    /// Prompt tokens processed.
    pub prompt_n: usize,
    /// Milliseconds on the prompt (up to the first token's logits).
    pub prompt_ms: f64,
    /// Decode steps after the first token.
    pub predicted_n: usize,
    /// Milliseconds on those decode steps.
    pub predicted_ms: f64,
    /// Decode speed.
    pub predicted_per_second: f64,
}

impl Usage {
    fn of(g: &Generation) -> Self {
        Self {
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.generated_tokens,
            total_tokens: g.prompt_tokens + g.generated_tokens,
        }
    }
}

impl Timings {
    fn of(g: &Generation) -> Self {
        Self {
            prompt_n: g.prompt_tokens - g.cached_prompt_tokens,
            prompt_ms: g.prefill.as_secs_f64() * 1e3,
            predicted_n: g.decode_steps,
            predicted_ms: g.decode.as_secs_f64() * 1e3,
            predicted_per_second: g.decode_tokens_per_second(),
        }
    }
}

/// OpenAI's `finish_reason` for the engine's.
pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::StopString => "stop",
        FinishReason::MaxTokens => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

/// `chat.completion`: the non-streaming answer.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The one reply.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
}

/// One reply of a `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The assistant's message.
    pub message: AssistantMessage,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// The reply message.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// `chat.completion.chunk`: one server-sent event of a streamed answer.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    /// Same for every chunk of one answer.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// One choice, or none in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the usage chunk (with `stream_options.include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Only in the chunk that carries the finish reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// The choice of a chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Always null.
    pub logprobs: Option<()>,
    /// Set in the last content chunk.
    pub finish_reason: Option<&'static str>,
}

/// The new part of the message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant`, in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// What every chunk of one answer repeats.
#[derive(Debug, Clone)]
struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
}

impl ChunkMeta {
    fn chunk(&self, delta: Delta, finish: Option<&'static str>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
            timings: None,
        }
    }
}

fn sse_json<T: Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("response types serialise"))
}

/// The SSE body of a streamed answer. It owns the [`GenerationHandle`], so when the client
/// goes away and axum drops the body, the generation is cancelled.
struct ChunkStream {
    job: GenerationHandle,
    meta: ChunkMeta,
    include_usage: bool,
    pending: VecDeque<Event>,
    finished: bool,
}

impl ChunkStream {
    fn new(job: GenerationHandle, meta: ChunkMeta, include_usage: bool) -> Self {
        let first = meta.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(String::new()),
            },
            None,
        );
        Self {
            job,
            pending: VecDeque::from([sse_json(&first)]),
            meta,
            include_usage,
            finished: false,
        }
    }

    fn on_event(&mut self, ev: Option<GenerationEvent>) {
        match ev {
            Some(GenerationEvent::Started) => {}
            Some(GenerationEvent::Text(t)) => {
                let chunk = self.meta.chunk(
                    Delta {
                        role: None,
                        content: Some(t),
                    },
                    None,
                );
                self.pending.push_back(sse_json(&chunk));
            }
            Some(GenerationEvent::Done(g)) if g.finish_reason == FinishReason::Cancelled => {
                // The client is still here, so the server stopped it: shutdown.
                self.fail(ApiError::unavailable(
                    "the server is shutting down",
                    "shutting_down",
                ));
            }
            Some(GenerationEvent::Done(g)) => {
                let mut last = self
                    .meta
                    .chunk(Delta::default(), Some(finish_reason(g.finish_reason)));
                last.timings = Some(Timings::of(&g));
                self.pending.push_back(sse_json(&last));
                if self.include_usage {
                    let mut usage = self.meta.chunk(Delta::default(), None);
                    usage.choices.clear();
                    usage.usage = Some(Usage::of(&g));
                    self.pending.push_back(sse_json(&usage));
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.finished = true;
            }
            Some(GenerationEvent::Error(e)) => self.fail(e),
            None => self.fail(ApiError::internal(
                "the generation worker stopped without an answer",
            )),
        }
    }

    fn fail(&mut self, e: ApiError) {
        self.pending.push_back(sse_json(&e.body()));
        self.finished = true;
    }
}

impl futures_core::Stream for ChunkStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ev) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.job.events.poll_recv(cx) {
                Poll::Ready(ev) => this.on_event(ev),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse_json(&body)?;
    req.check_supported()?;
    let route = state.models.resolve_chat(req.model.as_deref())?;
    let messages = req.chat_messages()?;
    state.scheduler.check_open()?;
    let llm = route.llm.clone();
    let prompt = tokio::task::spawn_blocking(move || llm.chat_prompt(&messages))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt crashed: {e}")))??;
    let context = state.context_length(&route.llm);
    let params = req.generate_params(prompt.len(), context)?;
    let stream = req.is_stream();
    let meta = ChunkMeta {
        id: random_id("chatcmpl"),
        created: unix_now(),
        model: route.name.clone(),
    };
    let job = spawn_generation(
        &state.scheduler,
        GenerationRequest {
            route,
            prompt,
            params,
            context_length: context,
            stream_text: stream,
        },
    );
    if stream {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let body = ChunkStream::new(job, meta, include_usage);
        return Ok(Sse::new(body)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    // If the client disconnects, axum drops this future and with it `job`: cancelled.
    let g = job.finish().await?;
    if g.finish_reason == FinishReason::Cancelled {
        return Err(ApiError::unavailable(
            "the server is shutting down",
            "shutting_down",
        ));
    }
    Ok(Json(ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: g.text.clone(),
            },
            logprobs: None,
            finish_reason: finish_reason(g.finish_reason),
        }],
        usage: Usage::of(&g),
        timings: Timings::of(&g),
    })
    .into_response())
}

// ---------------------------------------------------------------------------------
// Embeddings

/// `POST /v1/embeddings` request body.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    /// The embedding model (default: the loaded one).
    #[serde(default)]
    pub model: Option<String>,
    /// One text or a list of texts.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, what the `openai` SDK asks for).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must equal the model's dimension if given.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted, ignored.
    #[serde(default)]
    pub user: Option<String>,
}

/// `input`: text, texts, or (refused) token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// Anything else (token arrays): refused with a message.
    Other(Value),
}

/// How an input text goes into an e5 model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedAs {
    /// With `query: ` in front.
    Query,
    /// With `passage: ` in front.
    Passage,
}

/// Splits off an e5 prefix the client already wrote: `"query: x"` → (Query, "x");
/// text without a prefix is a passage.
pub fn e5_role(text: &str) -> (EmbedAs, &str) {
    if let Some(rest) = text.strip_prefix("query: ") {
        (EmbedAs::Query, rest)
    } else if let Some(rest) = text.strip_prefix("passage: ") {
        (EmbedAs::Passage, rest)
    } else {
        (EmbedAs::Passage, text)
    }
}

/// Embeds `texts` with the e5 prefix rules above; returns the vectors (in input order)
/// and the number of tokens the model read.
pub fn embed_texts(
    model: &EmbeddingModel,
    texts: &[String],
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let e = &model.embedder;
    let is_e5 = e.kind() == ModelKind::MultilingualE5;
    let mut queries: Vec<(usize, &str)> = Vec::new();
    let mut passages: Vec<(usize, &str)> = Vec::new();
    let mut tokens = 0usize;
    for (i, t) in texts.iter().enumerate() {
        let (role, body) = if is_e5 {
            e5_role(t)
        } else {
            (EmbedAs::Passage, t.as_str())
        };
        let n = e.count_tokens(body);
        if n > e.max_tokens() {
            return Err(ApiError::bad_request(
                format!(
                    "input[{i}] is {n} tokens long; the embedding model `{}` reads at most {}",
                    model.name,
                    e.max_tokens()
                ),
                Some("input"),
            ));
        }
        tokens += n;
        match role {
            EmbedAs::Query => queries.push((i, body)),
            EmbedAs::Passage => passages.push((i, body)),
        }
    }
    let mut out = vec![Vec::new(); texts.len()];
    if !queries.is_empty() {
        let texts: Vec<&str> = queries.iter().map(|(_, t)| *t).collect();
        for ((i, _), v) in queries.iter().zip(e.embed_queries(&texts)?) {
            out[*i] = v;
        }
    }
    if !passages.is_empty() {
        let texts: Vec<&str> = passages.iter().map(|(_, t)| *t).collect();
        for ((i, _), v) in passages.iter().zip(e.embed_passages(&texts)?) {
            out[*i] = v;
        }
    }
    Ok((out, tokens))
}

/// Standard base64 (with padding) of the vector's little-endian f32 bytes.
pub fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingRequest = parse_json(&body)?;
    let model = state
        .models
        .resolve_embedding(req.model.as_deref())?
        .clone();
    let texts =
        match req.input {
            EmbeddingInput::One(t) => vec![t],
            EmbeddingInput::Many(v) => v,
            EmbeddingInput::Other(_) => return Err(ApiError::bad_request(
                "`input` must be a string or a list of strings (token arrays are not supported)",
                Some("input"),
            )),
        };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad_request(
            format!("`input` must hold 1 to {MAX_EMBEDDING_INPUTS} texts"),
            Some("input"),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::bad_request(
            format!("input[{i}] is empty"),
            Some("input"),
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("encoding_format `{other}` is not supported (float, base64)"),
                Some("encoding_format"),
            ))
        }
    };
    let dim = model.embedder.dim();
    if req.dimensions.is_some_and(|d| d != dim) {
        return Err(ApiError::bad_request(
            format!("`{}` produces {dim}-dimensional vectors only", model.name),
            Some("dimensions"),
        ));
    }
    let permit = state
        .embed_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("the server is shutting down", "shutting_down"))?;
    let name = model.name.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        embed_texts(&model, &texts)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the embedding worker crashed: {e}")))??;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

// ---------------------------------------------------------------------------------
// Models

fn model_objects(state: &ServerState) -> Vec<Value> {
    let created = state.started_unix;
    let mut out: Vec<Value> = state
        .models
        .chat()
        .iter()
        .map(|m| {
            json!({
                "id": m.name, "object": "model", "created": created, "owned_by": "kura",
                "role": "chat", "context_length": state.context_length(&m.llm),
            })
        })
        .collect();
    for a in state.models.adapters() {
        out.push(json!({
            "id": a.model_id(), "object": "model", "created": created, "owned_by": "kura",
            "role": "chat", "parent": a.base, "adapter": a.name,
            "context_length": state.context_length(&a.llm),
        }));
    }
    if let Some(e) = state.models.embedding() {
        out.push(json!({
            "id": e.name, "object": "model", "created": created, "owned_by": "kura",
            "role": "embedding", "dimensions": e.embedder.dim(),
            "max_input_tokens": e.embedder.max_tokens(),
        }));
    }
    out
}

/// `GET /v1/models`
pub async fn list_models(State(state): State<Arc<ServerState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": model_objects(&state)}))
}

/// `GET /v1/models/{model}`
pub async fn get_model(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_objects(&state)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id, &state.models.names()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn request_fields_map_to_generation_settings() {
        let r = req(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9,
            "seed": 7, "stop": "END", "frequency_penalty": 0.3, "presence_penalty": 0.1
        }));
        r.check_supported().unwrap();
        let p = r.generate_params(5, 100).unwrap();
        assert_eq!(p.max_tokens, 20, "max_completion_tokens wins");
        assert_eq!(p.sampling.temperature, 0.5);
        assert_eq!(p.sampling.top_p, 0.9);
        assert_eq!(p.sampling.seed, 7);
        assert_eq!(p.stop, vec!["END".to_string()]);
        assert!(p.stop_at_eos);

        let r = req(json!({"messages": [{"role": "user", "content": "hi"}],
            "temperature": 0, "stop": ["a", "b"], "ignore_eos": true}));
        let p = r.generate_params(5, 100).unwrap();
        assert!(p.sampling.is_greedy());
        assert_eq!(p.stop.len(), 2);
        assert!(!p.stop_at_eos);
        assert_eq!(p.max_tokens, 95, "default: the rest of a short context");
    }

    #[test]
    fn context_overflow_and_unsupported_fields_are_400() {
        let r = req(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 60}));
        let e = r.generate_params(50, 100).unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        let r = req(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert!(r.generate_params(100, 100).is_err());
        for bad in [
            json!({"messages": [], "n": 2}),
            json!({"messages": [], "logprobs": true}),
            json!({"messages": [], "tools": [{"type": "function"}]}),
            json!({"messages": [], "temperature": 3.0}),
            json!({"messages": [], "response_format": {"type": "json_object"}}),
        ] {
            assert!(req(bad.clone()).check_supported().is_err(), "{bad}");
        }
        assert!(req(json!({"messages": []})).chat_messages().is_err());
        assert!(req(json!({"messages": [{"role": "tool", "content": "x"}]}))
            .chat_messages()
            .is_err());
    }

    #[test]
    fn messages_accept_text_parts_and_developer_role() {
        let r = req(json!({"messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]}));
        let m = r.chat_messages().unwrap();
        assert_eq!(m[0], ChatMessage::system("Be brief."));
        assert_eq!(m[1], ChatMessage::user("ab"));
        let r = req(json!({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        ]}));
        assert!(r.chat_messages().is_err());
    }

    #[test]
    fn e5_prefixes_are_respected() {
        assert_eq!(e5_role("query: 首都は?"), (EmbedAs::Query, "首都は?"));
        assert_eq!(e5_role("passage: 東京"), (EmbedAs::Passage, "東京"));
        assert_eq!(e5_role("東京"), (EmbedAs::Passage, "東京"));
        assert_eq!(e5_role("Query: x"), (EmbedAs::Passage, "Query: x"));
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        // 1.0f32 = 00 00 80 3F; 2.0 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
        // Three floats = 12 bytes: no padding.
        assert_eq!(base64_f32(&[0.0, 0.0, 0.0]), "AAAAAAAAAAAAAAAA");
    }
}
