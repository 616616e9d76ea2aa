//! The one error type of the LLM engine.
//!
//! Every error that comes from a model file names that file, so that a person reading a
//! log line ("models/x.gguf: missing tensor `blk.3.attn_q.weight`") knows which file to
//! replace and why, without a backtrace.

use std::path::PathBuf;

/// Errors of the local LLM engine: loading, tokenizing, templating and generating.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The file could not be opened or read.
    #[error("{}: cannot read the file: {source}", .path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic bytes.
    #[error("{}: not a GGUF file (it starts with {found})", .path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// What the first bytes were instead, for the message.
        found: String,
    },
    /// The file is a GGUF but truncated or otherwise corrupt.
    #[error("{}: truncated or corrupt GGUF: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// `general.architecture` names a model family this engine has no code for.
    #[error("{}: unsupported architecture `{arch}` (supported: qwen2, llama)", .path.display())]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture found in the metadata.
        arch: String,
    },
    /// A metadata key the architecture needs is absent.
    #[error("{}: missing metadata `{key}`", .path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has the wrong type or an impossible value.
    #[error("{}: invalid metadata `{key}`: {reason}", .path.display())]
    InvalidMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{}: missing tensor `{name}`", .path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor is present but has the wrong shape or cannot be read.
    #[error("{}: tensor `{name}`: {reason}", .path.display())]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The tokenizer could not be built from the file's metadata, or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt plus the requested new tokens do not fit into the model's context.
    #[error("prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the model's context of {context}")]
    ContextLength {
        /// Prompt length in tokens.
        prompt: usize,
        /// Requested number of new tokens.
        max_tokens: usize,
        /// The model's (or the session's) context length.
        context: usize,
    },
    /// The prompt was empty: there is nothing to condition on.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A LoRA adapter does not fit the model, or an unknown adapter was asked for.
    #[error("adapter: {0}")]
    Adapter(String),
    /// A caller passed an argument the engine cannot use (e.g. an unknown
    /// quantization type).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The requested device cannot be used (no CUDA in this build, no GPU present).
    #[error("device: {0}")]
    Device(String),
    /// A session was used with a model it was not created for.
    #[error("session does not belong to this model: {0}")]
    SessionMismatch(String),
    /// An error from the tensor library.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the LLM engine.
pub type Result<T> = std::result::Result<T, LlmError>;
