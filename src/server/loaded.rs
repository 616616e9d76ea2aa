//! [`LoadedModels`]: the models this server holds in memory, and how a request's
//! `model` field picks one.
//!
//! Chat models are loaded once, verified against `models.toml` first, and shared
//! read-only (`Arc<Llm>`) by every request. A request names its model by its registry
//! name (`kura models list`); no name means the first chat model loaded. The result is
//! a [`ChatRoute`]: the weights plus the LoRA adapters to run them with. Adapters are
//! empty today; when the LoRA issue serves tuned models, a name such as
//! `qwen2.5-coder-0.5b-instruct+manuals` resolves here to the base model with the
//! adapter's [`AdapterId`] — nothing else in the server has to change, because each
//! request's session selects its adapters.

use std::sync::Arc;

use candle_core::Device;

use super::error::ApiError;
use crate::embed::Embedder;
use crate::llm::{AdapterId, Llm};
use crate::models::{ModelError, Registry, Role};

/// A loaded chat model.
#[derive(Debug, Clone)]
pub struct ChatModel {
    /// Registry name, as clients send it in `model`.
    pub name: String,
    /// Weights, tokenizer and template.
    pub llm: Arc<Llm>,
}

/// A loaded embedding model.
#[derive(Debug, Clone)]
pub struct EmbeddingModel {
    /// Registry name.
    pub name: String,
    /// The encoder.
    pub embedder: Arc<Embedder>,
}

/// What a request's `model` resolves to: a base model and the adapters to apply.
#[derive(Debug, Clone)]
pub struct ChatRoute {
    /// The name the response reports in `model`.
    pub name: String,
    /// The base model.
    pub llm: Arc<Llm>,
    /// LoRA adapters attached to `llm` to run with (empty: the base model).
    pub adapters: Vec<AdapterId>,
}

/// Why the server could not load its models.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The registry refused the model (unknown, missing file, wrong sha256).
    #[error(transparent)]
    Registry(#[from] ModelError),
    /// A model of the wrong role was named.
    #[error("`{name}` is a {actual} model, not a {expected} model (see `kura models list`)")]
    WrongRole {
        /// The model.
        name: String,
        /// Its role.
        actual: String,
        /// The role asked for.
        expected: String,
    },
    /// The chat model file could not be loaded.
    #[error("loading the chat model `{name}`: {source}")]
    Chat {
        /// The model.
        name: String,
        /// Why.
        source: crate::llm::LlmError,
    },
    /// The embedding model file could not be loaded.
    #[error("loading the embedding model `{name}`: {source}")]
    Embedding {
        /// The model.
        name: String,
        /// Why.
        source: crate::embed::EmbedError,
    },
}

/// The models a server holds.
#[derive(Debug, Clone)]
pub struct LoadedModels {
    chat: Vec<ChatModel>,
    embedding: Option<EmbeddingModel>,
}

impl LoadedModels {
    /// Verifies and loads the named chat models (none named: the default chat model)
    /// and the embedding model (`None`: the default one; `Some("none")`: no embeddings).
    pub fn load(
        registry: &Registry,
        chat: &[String],
        embedding: Option<&str>,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let mut names: Vec<Option<&str>> = chat.iter().map(|n| Some(n.as_str())).collect();
        if names.is_empty() {
            names.push(None);
        }
        let mut models: Vec<ChatModel> = Vec::new();
        for name in names {
            let verified = registry.verify_named(name, Role::Chat)?;
            let entry = &verified.entry;
            if entry.role != Role::Chat {
                return Err(LoadError::WrongRole {
                    name: entry.name.clone(),
                    actual: entry.role.to_string(),
                    expected: Role::Chat.to_string(),
                });
            }
            if models.iter().any(|m| m.name == entry.name) {
                continue;
            }
            let llm = Llm::load(verified.primary(), device).map_err(|source| LoadError::Chat {
                name: entry.name.clone(),
                source,
            })?;
            models.push(ChatModel {
                name: entry.name.clone(),
                llm: Arc::new(llm),
            });
        }
        let embedding = match embedding {
            Some("none") => None,
            name => {
                let verified = registry.verify_named(name, Role::Embedding)?;
                let entry = &verified.entry;
                if entry.role != Role::Embedding {
                    return Err(LoadError::WrongRole {
                        name: entry.name.clone(),
                        actual: entry.role.to_string(),
                        expected: Role::Embedding.to_string(),
                    });
                }
                let embedder = Embedder::load(verified.primary(), device).map_err(|source| {
                    LoadError::Embedding {
                        name: entry.name.clone(),
                        source,
                    }
                })?;
                Some(EmbeddingModel {
                    name: entry.name.clone(),
                    embedder: Arc::new(embedder),
                })
            }
        };
        Ok(Self {
            chat: models,
            embedding,
        })
    }

    /// Models loaded elsewhere (tests, an embedding application).
    pub fn from_parts(chat: Vec<ChatModel>, embedding: Option<EmbeddingModel>) -> Self {
        Self { chat, embedding }
    }

    /// The chat models, the default first.
    pub fn chat(&self) -> &[ChatModel] {
        &self.chat
    }

    /// The embedding model, if one is loaded.
    pub fn embedding(&self) -> Option<&EmbeddingModel> {
        self.embedding.as_ref()
    }

    /// Every loaded model's name (chat first).
    pub fn names(&self) -> Vec<String> {
        self.chat
            .iter()
            .map(|m| m.name.clone())
            .chain(self.embedding.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// The chat model a request asked for (`None` or empty: the default).
    pub fn resolve_chat(&self, requested: Option<&str>) -> Result<ChatRoute, ApiError> {
        let requested = requested.map(str::trim).filter(|n| !n.is_empty());
        let model = match requested {
            None => self.chat.first(),
            Some(name) => self.chat.iter().find(|m| m.name == name),
        };
        match model {
            Some(m) => Ok(ChatRoute {
                name: m.name.clone(),
                llm: m.llm.clone(),
                adapters: Vec::new(),
            }),
            None => {
                let name = requested.unwrap_or_default();
                if self.embedding.as_ref().is_some_and(|e| e.name == name) {
                    return Err(ApiError::bad_request(
                        format!("`{name}` is an embedding model: use it with /v1/embeddings"),
                        Some("model"),
                    ));
                }
                Err(ApiError::model_not_found(name, &self.names()))
            }
        }
    }

    /// The embedding model a request asked for (`None` or empty: the loaded one).
    pub fn resolve_embedding(&self, requested: Option<&str>) -> Result<&EmbeddingModel, ApiError> {
        let requested = requested.map(str::trim).filter(|n| !n.is_empty());
        let Some(model) = self.embedding.as_ref() else {
            return Err(ApiError::bad_request(
                "this server was started without an embedding model",
                Some("model"),
            ));
        };
        match requested {
            None => Ok(model),
            Some(name) if name == model.name => Ok(model),
            Some(name) if self.chat.iter().any(|m| m.name == name) => Err(ApiError::bad_request(
                format!("`{name}` is a chat model: use it with /v1/chat/completions"),
                Some("model"),
            )),
            Some(name) => Err(ApiError::model_not_found(name, &self.names())),
        }
    }
}
