//! [`ModelPool`]: the chat and embedding models a running Kura holds in memory, the
//! LoRA adapters served on them, and how a request's `model` name picks one.
//!
//! The HTTP server holds one (and so does the desktop app, which runs the server
//! in-process); the engine owns the rules
//! (which model a name means, which base an adapter runs on) so that every front end
//! resolves names the same way.
//!
//! Chat models are loaded once, verified against `models.toml` first, and shared
//! read-only (`Arc<Llm>`) by every request. A request names its model by its registry
//! name (`kura models list`); no name means the first chat model loaded. The result is
//! a [`ChatRoute`]: the weights plus the LoRA adapters to run them with.
//!
//! **Adapters are served by name.** A LoRA adapter (a PEFT folder, usually one trained
//! by `kura train` and published in `<data>/adapters/NAME`) is loaded onto a shallow
//! copy of its base model — the quantized weights are shared, only the small A/B
//! matrices are new — and requests select it with `"model": "NAME"` or
//! `"model": "BASE+NAME"`. Loading and unloading swap entries in a list under a lock
//! held for microseconds; a request resolves its route once and keeps its own `Arc`
//! of the model, so requests in flight finish on what they started with and the
//! server never restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use candle_core::Device;

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

/// A LoRA adapter the pool can route requests to.
#[derive(Debug, Clone)]
pub struct ServedAdapter {
    /// The adapter's name (its folder's name).
    pub name: String,
    /// The chat model it was trained on.
    pub base: String,
    /// Its PEFT folder.
    pub dir: PathBuf,
    /// A copy of the base model sharing its weights, with this adapter attached.
    pub llm: Arc<Llm>,
    /// The adapter's id in `llm`.
    pub id: AdapterId,
}

impl ServedAdapter {
    /// The name `/v1/models` lists: `BASE+NAME`.
    pub fn model_id(&self) -> String {
        format!("{}+{}", self.base, self.name)
    }
}

/// Why the pool could not load a model or an adapter.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The registry refused the model (unknown, missing file, wrong sha256).
    #[error(transparent)]
    Registry(Box<ModelError>),
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
        source: Box<crate::llm::LlmError>,
    },
    /// A LoRA adapter could not be served.
    #[error("adapter `{name}`: {reason} (アダプタを読み込めません)")]
    Adapter {
        /// The adapter.
        name: String,
        /// Why.
        reason: String,
    },
    /// The embedding model file could not be loaded.
    #[error("loading the embedding model `{name}`: {source}")]
    Embedding {
        /// The model.
        name: String,
        /// Why.
        source: Box<crate::embed::EmbedError>,
    },
}

impl From<ModelError> for PoolError {
    fn from(e: ModelError) -> Self {
        PoolError::Registry(Box::new(e))
    }
}

/// Why a requested model name leads nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No loaded model or served adapter has this name.
    #[error("the model `{name}` does not exist or is not loaded. Loaded: {}.", loaded.join(", "))]
    NotLoaded {
        /// The name asked for.
        name: String,
        /// What is loaded.
        loaded: Vec<String>,
    },
    /// An embedding model named where a chat model is needed.
    #[error("`{0}` is an embedding model: use it with /v1/embeddings")]
    EmbeddingNotChat(String),
    /// A chat model named where an embedding model is needed.
    #[error("`{0}` is a chat model: use it with /v1/chat/completions")]
    ChatNotEmbedding(String),
    /// Embeddings asked of a pool that holds no embedding model.
    #[error("no embedding model is loaded / 埋め込みモデルが読み込まれていません")]
    NoEmbeddingModel,
}

/// The models a running Kura holds.
#[derive(Debug, Clone)]
pub struct ModelPool {
    chat: Vec<ChatModel>,
    embedding: Option<EmbeddingModel>,
    adapters: Arc<RwLock<Vec<ServedAdapter>>>,
}

impl ModelPool {
    /// Verifies and loads the named chat models (none named: the default chat model)
    /// and the embedding model (`None`: the default one; `Some("none")`: no embeddings).
    pub fn load(
        registry: &Registry,
        chat: &[String],
        embedding: Option<&str>,
        device: &Device,
    ) -> Result<Self, PoolError> {
        let mut names: Vec<Option<&str>> = chat.iter().map(|n| Some(n.as_str())).collect();
        if names.is_empty() {
            names.push(None);
        }
        let mut models: Vec<ChatModel> = Vec::new();
        for name in names {
            let verified = registry.verify_named(name, Role::Chat)?;
            let entry = &verified.entry;
            if entry.role != Role::Chat {
                return Err(PoolError::WrongRole {
                    name: entry.name.clone(),
                    actual: entry.role.to_string(),
                    expected: Role::Chat.to_string(),
                });
            }
            if models.iter().any(|m| m.name == entry.name) {
                continue;
            }
            let llm = Llm::load(verified.primary(), device).map_err(|source| PoolError::Chat {
                name: entry.name.clone(),
                source: Box::new(source),
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
                    return Err(PoolError::WrongRole {
                        name: entry.name.clone(),
                        actual: entry.role.to_string(),
                        expected: Role::Embedding.to_string(),
                    });
                }
                let embedder = Embedder::load(verified.primary(), device).map_err(|source| {
                    PoolError::Embedding {
                        name: entry.name.clone(),
                        source: Box::new(source),
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
            adapters: Arc::default(),
        })
    }

    /// Models loaded elsewhere (tests, an embedding application).
    pub fn from_parts(chat: Vec<ChatModel>, embedding: Option<EmbeddingModel>) -> Self {
        Self {
            chat,
            embedding,
            adapters: Arc::default(),
        }
    }

    /// The adapters being served.
    pub fn adapters(&self) -> Vec<ServedAdapter> {
        self.adapters.read().expect("adapter list lock").clone()
    }

    /// Serves the PEFT adapter in `dir` as `name` (replacing one of that name). Its
    /// base is `base`, else the chat model its `adapter_config.json` names, else the
    /// only chat model loaded. Blocking (reads the file): call it off the executor.
    pub fn load_adapter(
        &self,
        name: &str,
        dir: &Path,
        base: Option<&str>,
    ) -> Result<ServedAdapter, PoolError> {
        let fail = |reason: String| PoolError::Adapter {
            name: name.to_string(),
            reason,
        };
        let cfg = crate::adapters::read_config(dir).map_err(|e| fail(e.to_string()))?;
        let named = base
            .map(str::to_string)
            .or(cfg.base_model_name_or_path.clone());
        let model = match named.as_deref() {
            Some(b) => self
                .chat
                .iter()
                .find(|m| m.name == b)
                .or(match self.chat.as_slice() {
                    [only] if base.is_none() => Some(only),
                    _ => None,
                }),
            None => self.chat.first(),
        }
        .ok_or_else(|| {
            fail(format!(
                "its base model `{}` is not loaded (loaded: {})",
                named.unwrap_or_default(),
                self.chat
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let mut llm = (*model.llm).clone();
        let adapter = crate::adapters::ResolvedAdapter {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        };
        let id =
            crate::adapters::attach(&mut llm.model, &adapter).map_err(|e| fail(e.to_string()))?;
        let served = ServedAdapter {
            name: name.to_string(),
            base: model.name.clone(),
            dir: dir.to_path_buf(),
            llm: Arc::new(llm),
            id,
        };
        let mut list = self.adapters.write().expect("adapter list lock");
        list.retain(|a| a.name != name);
        list.push(served.clone());
        Ok(served)
    }

    /// Stops serving adapter `name`; requests already running with it finish.
    /// Returns whether it was served.
    pub fn unload_adapter(&self, name: &str) -> bool {
        let mut list = self.adapters.write().expect("adapter list lock");
        let before = list.len();
        list.retain(|a| a.name != name);
        list.len() != before
    }

    fn find_adapter(&self, requested: &str) -> Option<ServedAdapter> {
        let list = self.adapters.read().expect("adapter list lock");
        list.iter()
            .find(|a| a.name == requested || a.model_id() == requested)
            .cloned()
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
            .chain(self.adapters().iter().map(ServedAdapter::model_id))
            .chain(self.embedding.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// The chat model a request asked for (`None` or empty: the default).
    pub fn resolve_chat(&self, requested: Option<&str>) -> Result<ChatRoute, RouteError> {
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
                if let Some(a) = self.find_adapter(name) {
                    return Ok(ChatRoute {
                        name: a.model_id(),
                        llm: a.llm,
                        adapters: vec![a.id],
                    });
                }
                if self.embedding.as_ref().is_some_and(|e| e.name == name) {
                    return Err(RouteError::EmbeddingNotChat(name.to_string()));
                }
                Err(self.not_loaded(name))
            }
        }
    }

    /// The embedding model a request asked for (`None` or empty: the loaded one).
    pub fn resolve_embedding(
        &self,
        requested: Option<&str>,
    ) -> Result<&EmbeddingModel, RouteError> {
        let requested = requested.map(str::trim).filter(|n| !n.is_empty());
        let Some(model) = self.embedding.as_ref() else {
            return Err(RouteError::NoEmbeddingModel);
        };
        match requested {
            None => Ok(model),
            Some(name) if name == model.name => Ok(model),
            Some(name) if self.chat.iter().any(|m| m.name == name) => {
                Err(RouteError::ChatNotEmbedding(name.to_string()))
            }
            Some(name) => Err(self.not_loaded(name)),
        }
    }

    /// The error for a name nothing loaded answers to.
    pub fn not_loaded(&self, name: &str) -> RouteError {
        RouteError::NotLoaded {
            name: name.to_string(),
            loaded: self.names(),
        }
    }
}
