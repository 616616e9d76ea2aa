//! The tokenizer, built from a GGUF file's own metadata.
//!
//! No `tokenizer.json` ships with Kura's models: the GGUF carries the vocabulary
//! (`tokenizer.ggml.tokens`), the BPE merges, the token types (normal, control,
//! user-defined, …), the special ids and a name for the pre-tokenizer
//! (`tokenizer.ggml.pre`). [`Tokenizer::from_gguf`] turns that into a
//! `tokenizers::Tokenizer` with the same pipeline the model was trained with:
//!
//! - `qwen2`: NFC normalization, Qwen's split regex (single digits, letters with one
//!   leading non-letter, …), then GPT-2 byte-level mapping;
//! - `smollm` (and other StarCoder-family vocabularies): single digits split off, then
//!   the GPT-2 regex and byte-level mapping;
//! - `llama-bpe` (Llama 3): the Llama 3 regex (digits in groups of up to three);
//! - anything else (`gpt2`, `default`): the GPT-2 regex.
//!
//! Control and user-defined tokens (`<|im_start|>`, `<|im_end|>`, …) are registered as
//! added tokens, so they are matched in the text before the BPE and always come out as
//! one id.
//!
//! Decoding goes through bytes, not strings: every token maps to the bytes it stands
//! for, and [`TextStream`] emits only complete UTF-8 characters. A Japanese character
//! split over two byte-level tokens is held back until its last byte arrives, so a
//! streaming client never sees a broken character.
//!
//! ```no_run
//! # fn main() -> Result<(), kura::llm::LlmError> {
//! let file = kura::llm::GgufFile::open("models/qwen2.5-coder-0.5b-instruct.gguf")?;
//! let tok = kura::llm::Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("<|im_start|>user\n日本語<|im_end|>")?;
//! assert_eq!(tok.decode(&ids), "<|im_start|>user\n日本語<|im_end|>");
//! # Ok(()) }
//! ```

use super::error::{LlmError, Result};
use super::gguf::GgufFile;
use std::collections::HashMap;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// Qwen2's pre-tokenizer split pattern (from its `tokenizer.json`).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split pattern (`tokenizer.ggml.pre = llama-bpe`).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp defines them.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A BPE tokenizer with the model's special tokens and a byte-exact decoder.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each token stands for (control tokens: their literal text).
    token_bytes: Vec<Vec<u8>>,
    /// Control tokens: never part of the visible text.
    control: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    end_of_turn: Vec<u32>,
    pre: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.token_bytes.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// GPT-2's reversible byte ↔ printable-character mapping used by byte-level BPE.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).expect("valid code point");
            n += 1;
            c
        };
    }
    table
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path().display().to_string();
        let err = |m: String| LlmError::Tokenizer(format!("{path}: {m}"));
        let model = file.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens = file.string_array("tokenizer.ggml.tokens")?;
        let merges = file.string_array("tokenizer.ggml.merges")?;
        let types = file.i64_array_opt("tokenizer.ggml.token_type")?;
        let pre = file
            .string_opt("tokenizer.ggml.pre")?
            .unwrap_or("default")
            .to_string();
        let bos = file.u32_opt("tokenizer.ggml.bos_token_id")?;
        let eos = file.u32_opt("tokenizer.ggml.eos_token_id")?;
        let add_bos = file
            .bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false);
        if let Some(types) = &types {
            if types.len() != tokens.len() {
                return Err(err(format!(
                    "{} token types for {} tokens",
                    types.len(),
                    tokens.len()
                )));
            }
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<_>>()?;
        let type_of = |i: usize| types.as_ref().map_or(1, |t| t[i]);
        Self::build(&tokens, &|i| type_of(i), merges, &pre, bos, eos, add_bos).map_err(
            |e| match e {
                LlmError::Tokenizer(m) => err(m),
                e => e,
            },
        )
    }

    fn build(
        tokens: &[&str],
        token_type: &dyn Fn(usize) -> i64,
        merges: Vec<(String, String)>,
        pre: &str,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let terr = |e: tokenizers::Error| LlmError::Tokenizer(e.to_string());
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(terr)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        let byte_level = ByteLevel::new(false, true, false);
        let gpt2_regex = ByteLevel::new(false, true, true);
        let pre_tokenizer: Vec<PreTokenizerWrapper> = match pre {
            "qwen2" => vec![
                Split::new(
                    SplitPattern::Regex(QWEN2_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(terr)?
                .into(),
                byte_level.into(),
            ],
            "llama-bpe" | "llama3" => vec![
                Split::new(
                    SplitPattern::Regex(LLAMA3_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(terr)?
                .into(),
                byte_level.into(),
            ],
            "smollm" | "starcoder" | "refact" | "codeshell" => {
                vec![Digits::new(true).into(), gpt2_regex.into()]
            }
            other => {
                tracing::warn!(pre = other, "unknown pre-tokenizer, using GPT-2's regex");
                vec![gpt2_regex.into()]
            }
        };
        inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizer)));
        if pre == "qwen2" {
            inner.with_normalizer(Some(NFC)).map_err(terr)?;
        }
        inner.with_decoder(Some(ByteLevel::default()));

        // Control and user-defined tokens are matched before the BPE, as whole tokens.
        let mut control = vec![false; tokens.len()];
        let mut added = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            match token_type(i) {
                TOKEN_TYPE_CONTROL => {
                    control[i] = true;
                    added.push(AddedToken::from(t.to_string(), true));
                }
                TOKEN_TYPE_USER_DEFINED => {
                    added.push(AddedToken::from(t.to_string(), false).normalized(false));
                }
                _ => {}
            }
        }
        inner.add_special_tokens(added).map_err(terr)?;

        let table = byte_to_char_table();
        let mut char_to_byte: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, c) in table.iter().enumerate() {
            char_to_byte.insert(*c, b as u8);
        }
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if matches!(token_type(i), TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED) {
                    return t.as_bytes().to_vec();
                }
                // A byte-level token: each char stands for one byte. A token with chars
                // outside the table (should not happen) keeps its UTF-8 text.
                t.chars()
                    .map(|c| char_to_byte.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| t.as_bytes().to_vec())
            })
            .collect();

        let mut end_of_turn: Vec<u32> = eos.into_iter().collect();
        for name in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end_of_text|>",
        ] {
            if let Some(id) = tokens.iter().position(|t| *t == name) {
                if control[id] && !end_of_turn.contains(&(id as u32)) {
                    end_of_turn.push(id as u32);
                }
            }
        }
        Ok(Self {
            inner,
            token_bytes,
            control,
            bos,
            eos,
            add_bos,
            end_of_turn,
            pre: pre.to_string(),
        })
    }

    /// Builds a tokenizer from in-memory parts (used by test fixtures).
    ///
    /// `tokens` are byte-level BPE tokens; `control` lists the ids of control tokens.
    pub fn from_parts(
        tokens: &[&str],
        merges: &[(&str, &str)],
        control: &[u32],
        pre: &str,
        eos: Option<u32>,
    ) -> Result<Self> {
        let merges = merges
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let is_control = |i: usize| {
            if control.contains(&(i as u32)) {
                TOKEN_TYPE_CONTROL
            } else {
                1
            }
        };
        Self::build(tokens, &is_control, merges, pre, None, eos, false)
    }

    /// The underlying `tokenizers` tokenizer (for offsets, batch encoding, …).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The pre-tokenizer name from the file (`qwen2`, `smollm`, …).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre
    }

    /// Beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Ids that end a turn: the EOS id plus known end markers (`<|im_end|>`,
    /// `<|endoftext|>`, …) present in the vocabulary as control tokens.
    pub fn end_of_turn_ids(&self) -> &[u32] {
        &self.end_of_turn
    }

    /// The id of a token given by its exact text (`"<|im_end|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a control token (not visible text).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes text; special tokens written in the text (`<|im_start|>`) become their
    /// ids. Prepends BOS when the model file asks for it (`add_bos_token`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            if let Some(bos) = self.bos {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes a token stands for (empty for unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text, including special tokens' text. Invalid UTF-8 (a cut-off
    /// character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Decodes ids to visible text: control tokens are left out.
    pub fn decode_visible(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&id| !self.is_control(id))
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            pending: Vec::new(),
        }
    }
}

/// Incremental detokenizer: feed ids one at a time, get back only complete characters.
///
/// Control tokens are skipped. The concatenation of everything returned by
/// [`TextStream::push`] and [`TextStream::finish`] equals
/// [`Tokenizer::decode_visible`] of all ids pushed.
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl TextStream<'_> {
    /// Adds one token; returns the text that is now complete (may be empty).
    pub fn push(&mut self, id: u32) -> String {
        if self.tokenizer.is_control(id) {
            return String::new();
        }
        self.pending
            .extend_from_slice(self.tokenizer.token_bytes(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes are valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or(""));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is still pending (an unfinished character) comes out
    /// as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
