//! Chat templates: turning a conversation into the exact prompt text the model was
//! fine-tuned on.
//!
//! Instruction-tuned GGUF files carry their own Jinja template
//! (`tokenizer.chat_template`); rendering it — rather than hard-coding a format — is
//! what keeps prompts right when the model changes. [`ChatTemplate`] renders it with
//! minijinja under the same settings Hugging Face uses (`trim_blocks`,
//! `lstrip_blocks`), with the helpers templates commonly call (`raise_exception`,
//! `tojson`, Python string methods such as `.strip()`). A file without a template gets
//! ChatML, the format of both Qwen2.5 and SmolLM2.
//!
//! ```
//! use kura::llm::{ChatMessage, ChatTemplate};
//! let t = ChatTemplate::chatml();
//! let prompt = t.render(&[ChatMessage::user("こんにちは")], true).unwrap();
//! assert_eq!(prompt, "<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n");
//! ```

use super::error::{LlmError, Result};
use super::gguf::GgufFile;
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// ChatML, used when a file has no `tokenizer.chat_template`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles a Jinja template. `bos_token`/`eos_token` are exposed to it as
    /// variables, as Hugging Face does.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_filter(
            "tojson",
            |v: Value| -> std::result::Result<Value, minijinja::Error> {
                serde_json::to_string(&v)
                    .map(Value::from_safe_string)
                    .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
            },
        );
        env.set_unknown_method_callback(python_methods);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| LlmError::Template(format!("cannot compile: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// ChatML (`<|im_start|>role\n…<|im_end|>\n`).
    pub fn chatml() -> Self {
        Self::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("the built-in template compiles")
    }

    /// The file's `tokenizer.chat_template`, or ChatML if it has none.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let tokens = file.string_array("tokenizer.ggml.tokens").ok();
        let token = |key: &str| -> String {
            let id = file.u32_opt(key).ok().flatten();
            match (id, &tokens) {
                (Some(id), Some(t)) => t.get(id as usize).map(|s| s.to_string()),
                _ => None,
            }
            .unwrap_or_default()
        };
        let bos = token("tokenizer.ggml.bos_token_id");
        let eos = token("tokenizer.ggml.eos_token_id");
        match file.string_opt("tokenizer.chat_template")? {
            Some(src) => Self::new(src, &bos, &eos).map_err(|e| match e {
                LlmError::Template(m) => {
                    LlmError::Template(format!("{}: {m}", file.path().display()))
                }
                e => e,
            }),
            None => Self::new(CHATML_TEMPLATE, &bos, &eos),
        }
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation. With `add_generation_prompt`, the text ends with the
    /// opening of an assistant turn, ready for generation.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| LlmError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| LlmError::Template(format!("cannot render: {e}")))
    }
}

/// The Python `str`/`dict` methods chat templates use most.
fn python_methods(
    _state: &minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    let arg_str = |i: usize| args.get(i).and_then(|a| a.as_str().map(str::to_string));
    if let Some(s) = value.as_str() {
        let chars = arg_str(0);
        let pat = |c: char| {
            chars
                .as_deref()
                .map_or(c.is_whitespace(), |cs| cs.contains(c))
        };
        return Ok(match method {
            "strip" => Value::from(s.trim_matches(pat)),
            "lstrip" => Value::from(s.trim_start_matches(pat)),
            "rstrip" => Value::from(s.trim_end_matches(pat)),
            "lower" => Value::from(s.to_lowercase()),
            "upper" => Value::from(s.to_uppercase()),
            "startswith" => Value::from(arg_str(0).is_some_and(|p| s.starts_with(&p))),
            "endswith" => Value::from(arg_str(0).is_some_and(|p| s.ends_with(&p))),
            "replace" => match (arg_str(0), arg_str(1)) {
                (Some(a), Some(b)) => Value::from(s.replace(&a, &b)),
                _ => return Err(minijinja::Error::from(ErrorKind::MissingArgument)),
            },
            "split" => match arg_str(0) {
                Some(sep) => {
                    Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
                }
                None => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        });
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        Value::from(vec![k, v])
                    })
                    .collect::<Vec<_>>(),
            )),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key).unwrap_or_default();
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(minijinja::Error::from(ErrorKind::UnknownMethod))
}
