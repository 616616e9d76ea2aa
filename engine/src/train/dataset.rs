//! Instruction datasets: importing JSONL, validating it, splitting it, and turning each
//! conversation into token ids plus a loss mask.
//!
//! People bring training data in the two shapes every fine-tuning tool speaks:
//!
//! ```text
//! {"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}   (OpenAI)
//! {"instruction": "…", "input": "…", "output": "…"}                                        (Alpaca)
//! ```
//!
//! Both become a list of [`ChatMessage`]s ([`Example`]). A file with a bad line is
//! rejected as a whole, and the error names the line and the field
//! (`line 7: messages[1].role: expected one of system, user, assistant, found "tool"`),
//! because a training job that silently drops rows teaches something other than what
//! the person meant.
//!
//! The train/eval split is a seeded shuffle with our own generator ([`SplitMix64`]),
//! so the same file and seed give the same split on every machine and every version.
//!
//! Tokenization renders the conversation through the model's own chat template (the
//! prompt format it was tuned on) and marks which tokens the loss counts: only the
//! assistant's replies, up to and including their end-of-turn token. The model learns
//! to answer — and to stop — not to imitate the questions.
//!
//! ```
//! use kura::train::dataset::parse_jsonl;
//! let text = r#"{"instruction": "Capital of France?", "output": "Paris."}"#;
//! let examples = parse_jsonl(text).unwrap();
//! assert_eq!(examples[0].messages.len(), 2);
//! let err = parse_jsonl(r#"{"instruction": "Hi"}"#).unwrap_err();
//! assert_eq!(err.to_string(), "line 1: `output`: missing (必須項目がありません)");
//! ```

use crate::llm::{ChatMessage, ChatTemplate, LlmError, Role, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What is wrong with a dataset file; every variant about content names the line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not valid JSON.
    #[error("line {line}: not valid JSON: {reason} (JSON として読めません)")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        reason: String,
    },
    /// A line is JSON but neither of the two accepted shapes.
    #[error(
        "line {line}: expected an object with `messages` (OpenAI) or `instruction` and \
         `output` (Alpaca) (形式が違います)"
    )]
    UnknownFormat {
        /// 1-based line number.
        line: usize,
    },
    /// A required field is absent.
    #[error("line {line}: `{field}`: missing (必須項目がありません)")]
    MissingField {
        /// 1-based line number.
        line: usize,
        /// The field, as a path (`messages[2].content`).
        field: String,
    },
    /// A field is present but unusable.
    #[error("line {line}: `{field}`: {reason}")]
    InvalidField {
        /// 1-based line number.
        line: usize,
        /// The field, as a path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no examples.
    #[error("{}: no examples (空のファイルです)", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A stored dataset name that does not exist.
    #[error("no dataset named `{name}` in {} (import it with `kura dataset import`)", .dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where datasets live.
        dir: PathBuf,
    },
    /// A dataset name that cannot be a folder name.
    #[error("invalid dataset name `{0}`: use letters, digits, `-`, `_` and `.`")]
    InvalidName(String),
    /// The chat template produced text that the mask cannot be computed from.
    #[error("example {index}: {reason}")]
    Template {
        /// 0-based example index.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// Tokenizing failed.
    #[error("tokenizing: {0}")]
    Llm(#[from] LlmError),
}

/// One training conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The messages, in order; at least one is the assistant's.
    pub messages: Vec<ChatMessage>,
}

/// Parses a JSONL text (OpenAI or Alpaca lines, mixed is fine). Blank lines are
/// skipped; any bad line fails the whole text with an error naming it.
pub fn parse_jsonl(text: &str) -> Result<Vec<Example>, DatasetError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| DatasetError::Json {
            line,
            reason: e.to_string(),
        })?;
        out.push(parse_example(&value, line)?);
    }
    Ok(out)
}

/// Reads and parses a JSONL file.
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let examples = parse_jsonl(&text)?;
    if examples.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Writes examples as OpenAI-style JSONL (atomically: a temporary file, then rename).
pub fn write_jsonl(path: &Path, examples: &[Example]) -> Result<(), DatasetError> {
    let mut text = String::new();
    for e in examples {
        text.push_str(&serde_json::to_string(e).expect("examples always serialise"));
        text.push('\n');
    }
    crate::train::checkpoint::write_atomic(path, text.as_bytes()).map_err(|source| {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn parse_example(v: &Value, line: usize) -> Result<Example, DatasetError> {
    let Some(obj) = v.as_object() else {
        return Err(DatasetError::UnknownFormat { line });
    };
    if let Some(messages) = obj.get("messages") {
        return parse_messages(messages, line);
    }
    if obj.contains_key("instruction") || obj.contains_key("output") {
        let instruction = string_field(obj.get("instruction"), "instruction", line, true)?;
        let input = match obj.get("input") {
            None | Some(Value::Null) => String::new(),
            v => string_field(v, "input", line, false)?,
        };
        let output = string_field(obj.get("output"), "output", line, true)?;
        let user = if input.trim().is_empty() {
            instruction
        } else {
            format!("{instruction}\n\n{input}")
        };
        return Ok(Example {
            messages: vec![ChatMessage::user(user), ChatMessage::assistant(output)],
        });
    }
    Err(DatasetError::UnknownFormat { line })
}

fn string_field(
    v: Option<&Value>,
    field: &str,
    line: usize,
    non_empty: bool,
) -> Result<String, DatasetError> {
    match v {
        None => Err(DatasetError::MissingField {
            line,
            field: field.to_string(),
        }),
        Some(Value::String(s)) if non_empty && s.trim().is_empty() => {
            Err(DatasetError::InvalidField {
                line,
                field: field.to_string(),
                reason: "empty text (空です)".into(),
            })
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DatasetError::InvalidField {
            line,
            field: field.to_string(),
            reason: format!("expected a string, found {}", json_kind(other)),
        }),
    }
}

fn parse_messages(v: &Value, line: usize) -> Result<Example, DatasetError> {
    let Some(items) = v.as_array() else {
        return Err(DatasetError::InvalidField {
            line,
            field: "messages".into(),
            reason: format!("expected an array, found {}", json_kind(v)),
        });
    };
    if items.is_empty() {
        return Err(DatasetError::InvalidField {
            line,
            field: "messages".into(),
            reason: "empty list (空です)".into(),
        });
    }
    let mut messages = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let at = |name: &str| format!("messages[{j}].{name}");
        let Some(obj) = item.as_object() else {
            return Err(DatasetError::InvalidField {
                line,
                field: format!("messages[{j}]"),
                reason: format!("expected an object, found {}", json_kind(item)),
            });
        };
        let role = match obj.get("role") {
            None => {
                return Err(DatasetError::MissingField {
                    line,
                    field: at("role"),
                })
            }
            Some(Value::String(r)) => match r.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(DatasetError::InvalidField {
                        line,
                        field: at("role"),
                        reason: format!("expected one of system, user, assistant, found {other:?}"),
                    })
                }
            },
            Some(other) => {
                return Err(DatasetError::InvalidField {
                    line,
                    field: at("role"),
                    reason: format!("expected a string, found {}", json_kind(other)),
                })
            }
        };
        let content = string_field(obj.get("content"), &at("content"), line, false)?;
        if role == Role::Assistant && content.trim().is_empty() {
            return Err(DatasetError::InvalidField {
                line,
                field: at("content"),
                reason: "an assistant reply must not be empty (空です)".into(),
            });
        }
        messages.push(ChatMessage { role, content });
    }
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(DatasetError::InvalidField {
            line,
            field: "messages".into(),
            reason: "no assistant message: nothing to learn (assistant の発言がありません)".into(),
        });
    }
    Ok(Example { messages })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A small, portable, seeded generator (SplitMix64): the data order, the train/eval
/// split and the LoRA initialisation depend only on the seed, never on a library
/// version.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A uniform index in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

/// Splits examples into (train, eval): a seeded shuffle, then the first
/// `round(n · eval_fraction)` go to eval (at least one when the fraction is positive
/// and there are two or more examples; train always keeps at least one).
pub fn split(examples: &[Example], eval_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let mut n_eval = (n as f64 * eval_fraction.clamp(0.0, 1.0)).round() as usize;
    if eval_fraction > 0.0 && n >= 2 {
        n_eval = n_eval.max(1);
    }
    n_eval = n_eval.min(n.saturating_sub(1));
    let eval = order[..n_eval]
        .iter()
        .map(|&i| examples[i].clone())
        .collect();
    let train = order[n_eval..]
        .iter()
        .map(|&i| examples[i].clone())
        .collect();
    (train, eval)
}

/// A tokenized conversation: ids and a loss mask of the same length (1 on the
/// assistant's tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Token ids of the whole rendered conversation.
    pub ids: Vec<u32>,
    /// 1 where the token is part of an assistant reply (its content and its
    /// end-of-turn token), else 0.
    pub mask: Vec<u8>,
}

impl TokenizedExample {
    /// Number of tokens the loss counts: masked-in positions after the first (the
    /// first token has nothing before it to be predicted from).
    pub fn target_tokens(&self) -> usize {
        self.mask.iter().skip(1).filter(|&&m| m == 1).count()
    }
}

/// Renders `example` through `template` and tokenizes it with a loss mask.
///
/// The text is built from the template's own renderings of growing prefixes of the
/// conversation; each assistant reply is the text between "conversation so far + the
/// opening of an assistant turn" and "conversation including this reply". Each
/// segment is tokenized on its own (the boundaries are the template's control tokens,
/// so this matches tokenizing the whole text). Tokens after the reply's end-of-turn
/// token (ChatML's trailing newline) are not trained on. Sequences are cut to
/// `max_len` tokens.
pub fn tokenize(
    example: &Example,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    max_len: usize,
    index: usize,
) -> Result<TokenizedExample, DatasetError> {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut done = String::new();
    let end_ids = tokenizer.end_of_turn_ids();
    let mismatch = |what: &str| DatasetError::Template {
        index,
        reason: format!("the chat template does not render {what} as a prefix of the whole"),
    };
    for (i, m) in example.messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let prompt = template.render(&example.messages[..i], true)?;
        let full = template.render(&example.messages[..=i], false)?;
        let Some(prompt_part) = prompt.strip_prefix(done.as_str()) else {
            return Err(mismatch("the conversation so far"));
        };
        let Some(reply) = full.strip_prefix(prompt.as_str()) else {
            return Err(mismatch("the prompt"));
        };
        let p = tokenizer.encode(prompt_part)?;
        // Only the very first segment may carry a BOS; later segments are continuations.
        let p = strip_bos(p, tokenizer, !ids.is_empty());
        mask.extend(std::iter::repeat_n(0u8, p.len()));
        ids.extend(p);
        let r = strip_bos(tokenizer.encode(reply)?, tokenizer, true);
        let end = r
            .iter()
            .position(|t| end_ids.contains(t))
            .map_or(r.len(), |e| e + 1);
        mask.extend((0..r.len()).map(|k| u8::from(k < end)));
        ids.extend(r);
        done = full;
    }
    let whole = template.render(&example.messages, false)?;
    if let Some(rest) = whole.strip_prefix(done.as_str()) {
        if !rest.is_empty() {
            let t = strip_bos(tokenizer.encode(rest)?, tokenizer, !ids.is_empty());
            mask.extend(std::iter::repeat_n(0u8, t.len()));
            ids.extend(t);
        }
    } else {
        return Err(mismatch("the last reply"));
    }
    ids.truncate(max_len);
    mask.truncate(max_len);
    Ok(TokenizedExample { ids, mask })
}

fn strip_bos(mut ids: Vec<u32>, tokenizer: &Tokenizer, strip: bool) -> Vec<u32> {
    if strip && !ids.is_empty() && tokenizer.bos_id() == Some(ids[0]) {
        ids.remove(0);
    }
    ids
}

/// Facts about a stored dataset (`meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The dataset's name.
    pub name: String,
    /// The file it was imported from.
    pub source: PathBuf,
    /// Examples in the train split.
    pub train: usize,
    /// Examples in the eval split.
    pub eval: usize,
    /// The fraction asked for the eval split.
    pub eval_fraction: f64,
    /// The split's seed.
    pub seed: u64,
}

/// Whether `name` (of a dataset, job or adapter) is safe as one folder's name:
/// letters, digits, `-`, `_`, `.`, not empty, not hidden — nothing that leaves the
/// parent folder.
pub fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Dataset names become folder names: letters, digits, `-`, `_`, `.`; not hidden.
fn check_name(name: &str) -> Result<(), DatasetError> {
    if is_folder_name(name) {
        Ok(())
    } else {
        Err(DatasetError::InvalidName(name.to_string()))
    }
}

/// Imported datasets under one folder (`<data>/datasets/<name>/{train,eval}.jsonl`).
#[derive(Debug, Clone)]
pub struct DatasetStore {
    dir: PathBuf,
}

impl DatasetStore {
    /// The store in `dir` (created on first import).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder of dataset `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Validates `file`, splits it and stores it under `name` (replacing a dataset of
    /// that name).
    pub fn import(
        &self,
        file: &Path,
        name: &str,
        eval_fraction: f64,
        seed: u64,
    ) -> Result<DatasetInfo, DatasetError> {
        check_name(name)?;
        let examples = read_jsonl(file)?;
        let (train, eval) = split(&examples, eval_fraction, seed);
        self.store(name, file, &train, &eval, eval_fraction, seed)
    }

    /// Stores `file` as the train split and `eval_file` as the held-out split of
    /// dataset `name`, as given (for held-out questions written on purpose, e.g.
    /// paraphrases of the trained facts).
    pub fn import_with_eval(
        &self,
        file: &Path,
        eval_file: &Path,
        name: &str,
    ) -> Result<DatasetInfo, DatasetError> {
        let train = read_jsonl(file)?;
        let eval = read_jsonl(eval_file)?;
        let fraction = eval.len() as f64 / (train.len() + eval.len()).max(1) as f64;
        self.store(name, file, &train, &eval, fraction, 0)
    }

    fn store(
        &self,
        name: &str,
        file: &Path,
        train: &[Example],
        eval: &[Example],
        eval_fraction: f64,
        seed: u64,
    ) -> Result<DatasetInfo, DatasetError> {
        check_name(name)?;
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).map_err(|source| DatasetError::Io {
            path: dir.clone(),
            source,
        })?;
        write_jsonl(&dir.join("train.jsonl"), train)?;
        write_jsonl(&dir.join("eval.jsonl"), eval)?;
        let info = DatasetInfo {
            name: name.to_string(),
            source: file.to_path_buf(),
            train: train.len(),
            eval: eval.len(),
            eval_fraction,
            seed,
        };
        let meta = dir.join("meta.json");
        crate::train::checkpoint::write_atomic(
            &meta,
            serde_json::to_string_pretty(&info)
                .expect("serialisable")
                .as_bytes(),
        )
        .map_err(|source| DatasetError::Io { path: meta, source })?;
        Ok(info)
    }

    /// Loads the (train, eval) splits of dataset `name`.
    pub fn load(&self, name: &str) -> Result<(Vec<Example>, Vec<Example>), DatasetError> {
        let dir = self.path(name);
        if !dir.join("train.jsonl").is_file() {
            return Err(DatasetError::NotFound {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        }
        let train = read_jsonl(&dir.join("train.jsonl"))?;
        let eval_path = dir.join("eval.jsonl");
        let eval_text = std::fs::read_to_string(&eval_path).map_err(|source| DatasetError::Io {
            path: eval_path,
            source,
        })?;
        Ok((train, parse_jsonl(&eval_text)?))
    }

    /// The stored datasets' facts, by name.
    pub fn list(&self) -> Result<Vec<DatasetInfo>, DatasetError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(DatasetError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let meta = entry.path().join("meta.json");
            if let Ok(text) = std::fs::read_to_string(&meta) {
                if let Ok(info) = serde_json::from_str::<DatasetInfo>(&text) {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_alpaca_lines_become_conversations() {
        let text = concat!(
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"2+2?"},{"role":"assistant","content":"4"}]}"#,
            "\n\n",
            r#"{"instruction":"Translate","input":"猫","output":"cat"}"#,
            "\n",
            r#"{"instruction":"Say hi","input":"","output":"hi"}"#,
        );
        let ex = parse_jsonl(text).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].messages[0], ChatMessage::system("Be brief."));
        assert_eq!(
            ex[1].messages,
            vec![
                ChatMessage::user("Translate\n\n猫"),
                ChatMessage::assistant("cat")
            ]
        );
        assert_eq!(ex[2].messages[0], ChatMessage::user("Say hi"));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let ok = r#"{"instruction":"a","output":"b"}"#;
        let cases = [
            (
                format!("{ok}\n{{\"messages\": [{{\"role\": \"tool\", \"content\": \"x\"}}]}}"),
                "line 2: `messages[0].role`: expected one of system, user, assistant, found \"tool\"",
            ),
            (
                format!("{ok}\n{ok}\n{{\"messages\": [{{\"role\": \"user\"}}]}}"),
                "line 3: `messages[0].content`: missing (必須項目がありません)",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "hi"}]}"#.to_string(),
                "line 1: `messages`: no assistant message: nothing to learn (assistant の発言がありません)",
            ),
            (
                r#"{"instruction": "hi", "output": 3}"#.to_string(),
                "line 1: `output`: expected a string, found a number",
            ),
            (
                r#"{"messages": "hello"}"#.to_string(),
                "line 1: `messages`: expected an array, found a string",
            ),
            (
                r#"{"prompt": "a", "completion": "b"}"#.to_string(),
                "line 1: expected an object with `messages` (OpenAI) or `instruction` and `output` (Alpaca) (形式が違います)",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}"#.to_string(),
                "line 1: `messages[1].content`: an assistant reply must not be empty (空です)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_jsonl(&text).unwrap_err().to_string(), want);
        }
        let bad_json = format!("{ok}\n\n{{\"instruction\": ");
        let e = parse_jsonl(&bad_json).unwrap_err();
        assert!(
            matches!(e, DatasetError::Json { line: 3, .. }),
            "blank lines still count: {e}"
        );
    }

    fn numbered(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                messages: vec![
                    ChatMessage::user(format!("q{i}")),
                    ChatMessage::assistant(format!("a{i}")),
                ],
            })
            .collect()
    }

    #[test]
    fn split_is_seeded_complete_and_disjoint() {
        let ex = numbered(50);
        let (t1, e1) = split(&ex, 0.2, 7);
        let (t2, e2) = split(&ex, 0.2, 7);
        let (_, e3) = split(&ex, 0.2, 8);
        assert_eq!((t1.len(), e1.len()), (40, 10));
        assert_eq!((&t1, &e1), (&t2, &e2), "same seed, same split");
        assert_ne!(e1, e3, "another seed gives another split");
        let mut all: Vec<_> = t1.iter().chain(&e1).cloned().collect();
        all.sort_by(|a, b| a.messages[0].content.cmp(&b.messages[0].content));
        let mut want = ex.clone();
        want.sort_by(|a, b| a.messages[0].content.cmp(&b.messages[0].content));
        assert_eq!(all, want, "every example lands in exactly one split");
        let (t, e) = split(&numbered(3), 0.01, 1);
        assert_eq!(
            (t.len(), e.len()),
            (2, 1),
            "a positive fraction keeps one for eval"
        );
        let (t, e) = split(&numbered(1), 0.5, 1);
        assert_eq!((t.len(), e.len()), (1, 0), "train keeps at least one");
    }

    #[test]
    fn the_loss_mask_covers_exactly_the_assistant_replies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        crate::llm::fixtures::write_tiny_qwen2_gguf(&path, 1).unwrap();
        let file = crate::llm::GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let template = ChatTemplate::from_gguf(&file).unwrap();
        let ex = Example {
            messages: vec![
                ChatMessage::system("sys"),
                ChatMessage::user("the question"),
                ChatMessage::assistant("is an answer"),
                ChatMessage::user("and again"),
                ChatMessage::assistant("two"),
            ],
        };
        let t = tokenize(&ex, &template, &tok, 4096, 0).unwrap();
        // Same ids as tokenizing the whole rendered conversation at once.
        let whole = tok
            .encode(&template.render(&ex.messages, false).unwrap())
            .unwrap();
        assert_eq!(t.ids, whole);
        // The masked tokens decode to exactly the replies and their end tokens.
        let trained: Vec<u32> = t
            .ids
            .iter()
            .zip(&t.mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(tok.decode(&trained), "is an answer<|im_end|>two<|im_end|>");
        // Truncation keeps ids and mask aligned.
        let short = tokenize(&ex, &template, &tok, 10, 0).unwrap();
        assert_eq!((short.ids.len(), short.mask.len()), (10, 10));
        assert_eq!(
            short.target_tokens(),
            0,
            "the first 10 tokens are the prompt"
        );
    }

    #[test]
    fn store_imports_lists_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.jsonl");
        let lines: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"instruction":"q{i}","output":"a{i}"}}"#))
            .collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let store = DatasetStore::new(dir.path().join("datasets"));
        let info = store.import(&file, "faq", 0.2, 3).unwrap();
        assert_eq!((info.train, info.eval), (8, 2));
        let (train, eval) = store.load("faq").unwrap();
        assert_eq!((train.len(), eval.len()), (8, 2));
        assert_eq!(store.list().unwrap(), vec![info]);
        assert!(matches!(
            store.load("nope"),
            Err(DatasetError::NotFound { .. })
        ));
        assert!(matches!(
            store.import(&file, "../x", 0.2, 3),
            Err(DatasetError::InvalidName(_))
        ));
    }
}
