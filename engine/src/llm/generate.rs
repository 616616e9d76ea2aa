//! The generation loop, and [`Llm`]: a model with its tokenizer and chat template.
//!
//! [`generate`] feeds the prompt once (prefill, in chunks), then produces one token per
//! step from the KV cache (decode), so no step recomputes the prompt and only the last
//! position is projected to the vocabulary. It stops at an end-of-turn token, a stop
//! token, a stop string or `max_tokens`, or when the caller's cancel flag is set
//! (checked before every step, so at most one more token is produced).
//!
//! Text is handed to the `on_text` callback as it is produced, in pieces that are always
//! whole UTF-8 characters; text that might be the beginning of a stop string is held
//! back until it is clear that it is not, so a stop string never reaches the client.
//! The pieces concatenate to [`Generation::text`].
//!
//! A session that already holds the beginning of the prompt (the previous turns of a
//! chat) only runs the new tokens.
//!
//! ```no_run
//! # fn main() -> Result<(), kura::llm::LlmError> {
//! use kura::llm::{ChatMessage, GenerateParams, Llm};
//! let llm = Llm::load("models/qwen2.5-coder-0.5b-instruct.gguf", &candle_core::Device::Cpu)?;
//! let mut session = llm.model.new_session();
//! let params = GenerateParams { max_tokens: 256, ..Default::default() };
//! let out = llm.chat(&mut session, &[ChatMessage::user("日本の首都は？")], &params, None,
//!     &mut |piece| print!("{piece}"))?;
//! println!("\n{} tokens, {:.1} tok/s", out.generated_tokens, out.decode_tokens_per_second());
//! # Ok(()) }
//! ```

use super::error::{LlmError, Result};
use super::gguf::GgufFile;
use super::model::{Model, Session};
use super::sampling::{Sampler, SamplingParams};
use super::template::{ChatMessage, ChatTemplate};
use super::tokenizer::Tokenizer;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to generate and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    /// The most new tokens to produce.
    pub max_tokens: usize,
    /// How to choose tokens.
    pub sampling: SamplingParams,
    /// Stop when the text contains one of these; the stop string is not returned.
    pub stop: Vec<String>,
    /// Stop when one of these tokens is produced (in addition to end-of-turn tokens).
    pub stop_tokens: Vec<u32>,
    /// Stop at the model's end-of-turn tokens (EOS, `<|im_end|>`, …). Default true.
    pub stop_at_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            stop_tokens: Vec::new(),
            stop_at_eos: true,
        }
    }
}

impl GenerateParams {
    /// Greedy decoding of at most `max_tokens`, stopping at end of turn: the one
    /// preset for every answer that must be reproducible (query rewriting, drafted
    /// training data, adapter evaluation, benchmarks).
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            sampling: SamplingParams::greedy(),
            ..Self::default()
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-turn token or one of `stop_tokens`.
    Eos,
    /// The text reached one of the stop strings.
    StopString,
    /// `max_tokens` were produced.
    MaxTokens,
    /// The cancel flag was set.
    Cancelled,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without the stop string or end-of-turn token).
    pub text: String,
    /// The generated token ids (including a final end-of-turn/stop token, if any).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens that were already in the session's cache and not recomputed.
    pub cached_prompt_tokens: usize,
    /// Tokens generated (`tokens.len()`).
    pub generated_tokens: usize,
    /// Time spent on the prompt (up to the first token's logits).
    pub prefill: Duration,
    /// Time spent on the decode steps after the first token.
    pub decode: Duration,
    /// Decode steps (forward passes of one token) taken.
    pub decode_steps: usize,
}

impl Generation {
    /// Prompt tokens processed per second (excluding cached ones).
    pub fn prefill_tokens_per_second(&self) -> f64 {
        let n = (self.prompt_tokens - self.cached_prompt_tokens) as f64;
        n / self.prefill.as_secs_f64().max(1e-9)
    }
    /// Decode steps per second.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Byte length of the longest suffix of `text` that is a proper prefix of a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}

/// Generates a continuation of `prompt` in `session`.
///
/// The session may already hold a prefix of `prompt` (it is reused) or anything else
/// (it is cut back to the common prefix). `on_text` receives the text as it is
/// produced.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: Option<&AtomicBool>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(LlmError::EmptyPrompt);
    }
    let context = session.context_length();
    if prompt.len() + params.max_tokens > context {
        return Err(LlmError::ContextLength {
            prompt: prompt.len(),
            max_tokens: params.max_tokens,
            context,
        });
    }
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let mut out = Generation {
        text: String::new(),
        tokens: Vec::new(),
        finish_reason: FinishReason::MaxTokens,
        prompt_tokens: prompt.len(),
        cached_prompt_tokens: 0,
        generated_tokens: 0,
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
        decode_steps: 0,
    };
    if params.max_tokens == 0 {
        return Ok(out);
    }
    if cancelled() {
        out.finish_reason = FinishReason::Cancelled;
        return Ok(out);
    }

    // Reuse the cached prefix; always feed at least one token to get fresh logits.
    let common = session
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len() - 1);
    session.truncate(common);
    session.reserve(prompt.len() + params.max_tokens);
    out.cached_prompt_tokens = common;

    let t0 = Instant::now();
    // The prompt is fed chunk by chunk; a cancel between two chunks ends it there.
    let Some(prefilled) = model.forward_unless(&prompt[common..], session, &cancelled)? else {
        out.prefill = t0.elapsed();
        out.finish_reason = FinishReason::Cancelled;
        return Ok(out);
    };
    let mut logits = super::layers::logits_to_vec(&prefilled)?;
    out.prefill = t0.elapsed();
    let t1 = Instant::now();

    let mut sampler = Sampler::new(params.sampling.clone());
    let mut history = prompt.to_vec();
    let mut stream = tokenizer.stream();
    let mut emitted = 0usize;
    let end_ids = tokenizer.end_of_turn_ids();
    let mut stopped_by_string = false;
    loop {
        let tok = sampler.sample(&logits, &history);
        out.tokens.push(tok);
        if (params.stop_at_eos && end_ids.contains(&tok)) || params.stop_tokens.contains(&tok) {
            out.finish_reason = FinishReason::Eos;
            break;
        }
        history.push(tok);
        let piece = stream.push(tok);
        if !piece.is_empty() {
            out.text.push_str(&piece);
            if !params.stop.is_empty() {
                let found = params
                    .stop
                    .iter()
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| out.text[emitted..].find(s.as_str()).map(|p| emitted + p))
                    .min();
                if let Some(pos) = found {
                    out.text.truncate(pos);
                    if pos > emitted {
                        on_text(&out.text[emitted..]);
                    }
                    emitted = pos;
                    out.finish_reason = FinishReason::StopString;
                    stopped_by_string = true;
                    break;
                }
            }
            let safe = out.text.len() - held_back(&out.text, &params.stop);
            if safe > emitted {
                on_text(&out.text[emitted..safe]);
                emitted = safe;
            }
        }
        if out.tokens.len() >= params.max_tokens {
            out.finish_reason = FinishReason::MaxTokens;
            break;
        }
        if cancelled() {
            out.finish_reason = FinishReason::Cancelled;
            break;
        }
        logits = model.forward_to_vec(&[tok], session)?;
        out.decode_steps += 1;
    }
    if !stopped_by_string {
        out.text.push_str(&stream.finish());
        if out.text.len() > emitted {
            on_text(&out.text[emitted..]);
        }
    }
    out.decode = t1.elapsed();
    out.generated_tokens = out.tokens.len();
    Ok(out)
}

/// A chat model ready to use: weights, tokenizer and chat template from one GGUF file.
///
/// Cloning is cheap for the weights (the quantized tensors are shared, not copied):
/// the server clones a model to attach a LoRA adapter to the copy while requests keep
/// running on the original.
#[derive(Debug, Clone)]
pub struct Llm {
    /// The weights.
    pub model: Model,
    /// The tokenizer from the file's metadata.
    pub tokenizer: Tokenizer,
    /// The file's chat template (ChatML if it has none).
    pub template: ChatTemplate,
}

impl Llm {
    /// Loads model, tokenizer and template from `path`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let template = ChatTemplate::from_gguf(&file)?;
        let model = Model::from_gguf(&mut file, device)?;
        if tokenizer.vocab_size() > model.info().vocab_size {
            return Err(LlmError::InvalidMetadata {
                path: file.path().to_path_buf(),
                key: "tokenizer.ggml.tokens".into(),
                reason: format!(
                    "{} tokens but the model has {} embeddings",
                    tokenizer.vocab_size(),
                    model.info().vocab_size
                ),
            });
        }
        Ok(Self {
            model,
            tokenizer,
            template,
        })
    }

    /// Renders `messages` with the chat template (with the generation prompt) and
    /// tokenizes the result.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.template.render(messages, true)?;
        self.tokenizer.encode(&text)
    }

    /// [`generate`] on a raw text prompt.
    pub fn complete(
        &self,
        session: &mut Session,
        prompt: &str,
        params: &GenerateParams,
        cancel: Option<&AtomicBool>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt)?;
        generate(
            &self.model,
            &self.tokenizer,
            session,
            &ids,
            params,
            cancel,
            on_text,
        )
    }

    /// [`generate`] the assistant's reply to a conversation.
    pub fn chat(
        &self,
        session: &mut Session,
        messages: &[ChatMessage],
        params: &GenerateParams,
        cancel: Option<&AtomicBool>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let ids = self.chat_prompt(messages)?;
        generate(
            &self.model,
            &self.tokenizer,
            session,
            &ids,
            params,
            cancel,
            on_text,
        )
    }
}
