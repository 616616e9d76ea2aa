//! [`Model`]: one type over the supported architectures, chosen by the file's
//! `general.architecture`, and [`Session`], the per-conversation state.
//!
//! A `Model` is read-only during inference (`&self`), so one loaded model can serve
//! many requests at once; everything that changes while generating — the KV cache and
//! the tokens it holds — lives in a [`Session`] that the caller owns. Two requests with
//! two sessions never see each other's state.

use super::decoder::Decoder;
use super::error::{LlmError, Result};
use super::gguf::GgufFile;
use super::layers::{self, KvCache};
use super::linear::{AdapterId, Linear, LoraAdapter, LoraDropout};
use super::{llama, qwen2};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prompts are fed in chunks of this many tokens, which bounds the memory of the
/// attention scores (`heads × chunk × context`) for long prompts.
pub const PREFILL_CHUNK: usize = 512;

/// The prefill chunk on a CPU with AMX: 31 tokens, one under the 32 rows from which
/// candle 0.11 runs a Q4_K matmul on AMX tiles.
///
/// That AMX path costs more than it gives in a server that prefills and then decodes.
/// It repacks every Q4_K weight a second time (≈ 2.2× its bytes, kept for the life of
/// the model, beside the AVX-512 VNNI copy that decode uses), and decode is slower after
/// it: candle configures the tiles on its pool threads and never releases them.
/// Measured on the 1.5B Q4_K_M, 1,024-token prompt, 2 threads (`kura bench generate
/// --no-reference --prompt-tokens 1024 --decode-tokens 64`): 512-token chunks (AMX)
/// prefill 95 tok/s, decode 10.4 tok/s, peak RSS 3,540 MB; 31-token chunks (VNNI)
/// 87 tok/s, 14.0 tok/s, 2,201 MB.
pub const PREFILL_CHUNK_AMX: usize = 31;

/// Whether this CPU has AMX-INT8 tiles (CPUID leaf 7: AMX-TILE and AMX-INT8), which
/// candle's quantized matmul would use for prefill.
fn cpu_has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let info = core::arch::x86_64::__cpuid_count(7, 0);
        info.edx & (1 << 24) != 0 && info.edx & (1 << 25) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// How many prompt tokens one forward pass takes on `device`. [`PREFILL_CHUNK_AMX`]
/// only matters where candle serves Q4_K weights — on an AMX CPU Kura's own kernels
/// ([`super::kquant`]) do, unless `KURA_CPU_KERNELS=candle` — and `KURA_CPU_AMX=1`
/// keeps [`PREFILL_CHUNK`] even then (faster prefill, slower decode, more memory).
pub fn prefill_chunk(device: &Device) -> usize {
    let amx_wanted = std::env::var("KURA_CPU_AMX").as_deref() == Ok("1");
    if device.is_cpu() && cpu_has_amx() && !amx_wanted && !super::kquant::cpu_supported() {
        PREFILL_CHUNK_AMX
    } else {
        PREFILL_CHUNK
    }
}

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// The supported model families.
#[derive(Debug, Clone)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5.
    Qwen2(Decoder),
    /// Llama-family (Llama 2/3, SmolLM2).
    Llama(Decoder),
}

impl Architecture {
    /// The decoder, whichever family it belongs to.
    pub fn decoder(&self) -> &Decoder {
        match self {
            Self::Qwen2(d) | Self::Llama(d) => d,
        }
    }

    fn decoder_mut(&mut self) -> &mut Decoder {
        match self {
            Self::Qwen2(d) | Self::Llama(d) => d,
        }
    }
}

/// Facts about a loaded model that callers need (context size, vocabulary, …).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// Trained context length in tokens.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
}

/// A loaded chat model (weights only) with its attached LoRA adapters.
#[derive(Debug, Clone)]
pub struct Model {
    arch: Architecture,
    info: ModelInfo,
    id: u64,
    adapters: HashMap<String, AdapterId>,
    next_adapter: u32,
}

/// Per-sequence state: the KV cache of every layer and the tokens it holds.
#[derive(Debug, Clone)]
pub struct Session {
    model_id: u64,
    caches: Vec<KvCache>,
    tokens: Vec<u32>,
    context_length: usize,
    adapters: Vec<AdapterId>,
}

impl Session {
    /// Tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    /// Number of cached tokens (the next token's position).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// The most tokens this session may hold (the model's context unless lowered).
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    /// Lowers the context limit (e.g. to bound memory per request).
    pub fn set_context_length(&mut self, n: usize) {
        self.context_length = n.min(self.context_length);
    }
    /// Forgets everything after the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        for c in &mut self.caches {
            c.truncate(n);
        }
    }
    /// Sizes the KV cache for `tokens` tokens in total (e.g. prompt + max tokens) the
    /// next time it is allocated, instead of growing it by doubling.
    pub fn reserve(&mut self, tokens: usize) {
        let tokens = tokens.min(self.context_length);
        for c in &mut self.caches {
            c.reserve(tokens);
        }
    }
    /// Forgets everything.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
    /// The LoRA adapters this session runs with (none: the base model).
    pub fn adapters(&self) -> &[AdapterId] {
        &self.adapters
    }
    /// Chooses the adapters for this session. Changing them invalidates the cache.
    pub fn set_adapters(&mut self, adapters: Vec<AdapterId>) {
        if adapters != self.adapters {
            self.clear();
            self.adapters = adapters;
        }
    }
}

impl Model {
    /// Opens a GGUF file and loads the architecture it names.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        Self::from_gguf(&mut file, device)
    }

    /// Loads from an already open GGUF file.
    pub fn from_gguf(file: &mut GgufFile, device: &Device) -> Result<Self> {
        let arch_name = file.architecture()?.to_string();
        let name = file.string_opt("general.name")?.map(str::to_string);
        let arch = match arch_name.as_str() {
            "qwen2" => Architecture::Qwen2(qwen2::load(file, device)?),
            "llama" => Architecture::Llama(llama::load(file, device)?),
            _ => {
                return Err(LlmError::UnsupportedArchitecture {
                    path: file.path().to_path_buf(),
                    arch: arch_name,
                })
            }
        };
        let c = arch.decoder().config();
        let info = ModelInfo {
            architecture: arch_name,
            name,
            context_length: c.context_length,
            vocab_size: c.vocab_size,
            num_layers: c.num_layers,
            hidden_size: c.hidden_size,
        };
        Ok(Self {
            arch,
            info,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            adapters: HashMap::new(),
            next_adapter: 0,
        })
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The architecture-specific model.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.arch.decoder().device()
    }

    /// A new, empty session for this model.
    pub fn new_session(&self) -> Session {
        let caches = self.arch.decoder().new_caches();
        Session {
            model_id: self.id,
            caches,
            tokens: Vec::new(),
            context_length: self.info.context_length,
            adapters: Vec::new(),
        }
    }

    fn check_session(&self, session: &Session) -> Result<()> {
        if session.model_id != self.id {
            return Err(LlmError::SessionMismatch(format!(
                "created for model #{}, used with model #{}",
                session.model_id, self.id
            )));
        }
        Ok(())
    }

    /// Appends `tokens` to the session and returns the logits (`[vocab]`, f32) that
    /// predict the token after the last one. Long inputs are processed in chunks of
    /// [`prefill_chunk`] tokens; only the last position goes through the output
    /// projection.
    pub fn forward(&self, tokens: &[u32], session: &mut Session) -> Result<Tensor> {
        let logits = self.forward_unless(tokens, session, &|| false)?;
        Ok(logits.expect("never stopped"))
    }

    /// [`Model::forward`] that asks `stop` before each chunk of [`prefill_chunk`]
    /// tokens and returns `None` as soon as it says yes: a long prompt is given up
    /// within one chunk when its client has gone. The chunks already run stay in
    /// the session (a valid prefix of the prompt).
    pub fn forward_unless(
        &self,
        tokens: &[u32],
        session: &mut Session,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Tensor>> {
        self.check_session(session)?;
        if tokens.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let total = session.len() + tokens.len();
        if total > session.context_length {
            return Err(LlmError::ContextLength {
                prompt: total,
                max_tokens: 0,
                context: session.context_length,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(LlmError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.info.vocab_size
            )));
        }
        let mut logits = None;
        for chunk in tokens.chunks(prefill_chunk(self.device())) {
            if stop() {
                return Ok(None);
            }
            let start = session.len();
            let adapters = session.adapters.clone();
            let out = self
                .arch
                .decoder()
                .forward(chunk, start, &mut session.caches, &adapters);
            match out {
                Ok(l) => {
                    session.tokens.extend_from_slice(chunk);
                    logits = Some(l);
                }
                Err(e) => {
                    // Leave the session as it was before this chunk.
                    let n = session.len();
                    session.truncate(n);
                    return Err(e);
                }
            }
        }
        let logits = logits.expect("at least one chunk");
        Ok(Some(logits.flatten_all()?))
    }

    /// Like [`Model::forward`] but returns the logits as a vector.
    pub fn forward_to_vec(&self, tokens: &[u32], session: &mut Session) -> Result<Vec<f32>> {
        layers::logits_to_vec(&self.forward(tokens, session)?)
    }

    /// A training copy of this model: the frozen base weights dequantized to `dtype`
    /// (f32 on CPU; f64 for gradient checks), no adapters attached. Its
    /// [`Model::forward_train`] is differentiable end to end; the inference
    /// [`Model::forward`] keeps working on it too.
    pub fn to_training(&self, dtype: DType) -> Result<Self> {
        let arch = match &self.arch {
            Architecture::Qwen2(m) => Architecture::Qwen2(m.to_dense(dtype)?),
            Architecture::Llama(m) => Architecture::Llama(m.to_dense(dtype)?),
        };
        Ok(Self {
            arch,
            info: self.info.clone(),
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            adapters: HashMap::new(),
            next_adapter: 0,
        })
    }

    /// The training forward of a copy made by [`Model::to_training`]:
    /// `ids: [batch, seq]` → final-normed hidden states `[batch, seq, hidden]`, with
    /// the adapters `adapters` active and `dropout` on their inputs. Apply
    /// [`Model::lm_head`]'s [`Linear::forward_train`] to the positions whose next
    /// token is scored.
    pub fn forward_train(
        &self,
        ids: &Tensor,
        adapters: &[AdapterId],
        dropout: Option<&LoraDropout>,
    ) -> Result<Tensor> {
        self.arch
            .decoder()
            .forward_train_hidden(ids, adapters, dropout)
    }

    /// The weights of a training copy (see [`Model::to_training`]) in forward order;
    /// `None` for a quantized model.
    pub fn decoder_view(&self) -> Option<super::layers::DecoderView<'_>> {
        self.arch.decoder().decoder_view()
    }

    /// The output projection (hidden → vocabulary logits).
    pub fn lm_head(&self) -> &Linear {
        self.arch.decoder().lm_head()
    }

    /// Every LoRA-capable projection of the model (`blk.N.attn_q`, …, `blk.N.ffn_down`).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.arch.decoder_mut().linears_mut()
    }

    /// Attaches a LoRA adapter under `name`: `weights` maps layer names
    /// (`blk.0.attn_q`, see [`Linear::name`]) to their `A`/`B` pair. Layers not in the
    /// map are left alone. Re-attaching a name replaces it. Returns the adapter's id
    /// for [`Session::set_adapters`].
    pub fn attach_adapter(
        &mut self,
        name: &str,
        weights: HashMap<String, LoraAdapter>,
    ) -> Result<AdapterId> {
        let id = match self.adapters.get(name) {
            Some(id) => *id,
            None => {
                let id = AdapterId(self.next_adapter);
                self.next_adapter += 1;
                id
            }
        };
        let mut weights = weights;
        for lin in self.linears_mut() {
            lin.detach(id);
            if let Some(ad) = weights.remove(lin.name()) {
                lin.attach(id, ad)?;
            }
        }
        if let Some(unknown) = weights.keys().next() {
            for lin in self.linears_mut() {
                lin.detach(id);
            }
            return Err(LlmError::Adapter(format!(
                "adapter `{name}` names layer `{unknown}`, which this model does not have"
            )));
        }
        self.adapters.insert(name.to_string(), id);
        Ok(id)
    }

    /// The id of an attached adapter.
    pub fn adapter_id(&self, name: &str) -> Option<AdapterId> {
        self.adapters.get(name).copied()
    }

    /// Removes an adapter from every layer.
    pub fn detach_adapter(&mut self, name: &str) -> bool {
        match self.adapters.remove(name) {
            Some(id) => {
                for lin in self.linears_mut() {
                    lin.detach(id);
                }
                true
            }
            None => false,
        }
    }
}
