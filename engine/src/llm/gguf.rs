//! Reading GGUF model files: metadata and quantized tensors.
//!
//! A GGUF file holds everything Kura needs to run a chat model: the architecture and its
//! sizes, the tokenizer (vocabulary, merges, special ids), the chat template and the
//! (quantized) weights. [`GgufFile`] wraps candle's reader with two additions:
//!
//! - every error names the file and says what is wrong ([`LlmError`]), and
//! - the header is validated up front (tensor shapes, sizes and offsets against the file
//!   length), so a truncated or corrupt download fails at [`GgufFile::open`] with an error,
//!   never with a panic or a huge allocation half-way through loading.
//!
//! ```no_run
//! # fn main() -> Result<(), kura::llm::LlmError> {
//! let mut file = kura::llm::GgufFile::open("models/smollm2-135m-instruct-q4_1.gguf")?;
//! assert_eq!(file.architecture()?, "llama");
//! let layers = file.u32(&format!("{}.block_count", file.architecture()?))?;
//! let norm = file.tensor("output_norm.weight", &candle_core::Device::Cpu)?;
//! # let _ = (layers, norm); Ok(()) }
//! ```

use super::error::{LlmError, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use candle_core::quantized::gguf_file::Value as MetadataValue;

/// An open GGUF file: parsed header, validated tensor directory, and a reader for the
/// tensor data.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: gguf_file::Content,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .field("metadata", &self.content.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens `path`, parses the header and checks that every tensor lies inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| LlmError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);

        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic).map_err(io)?;
        if got < 4 || &magic != b"GGUF" {
            let found = if got == 0 {
                "nothing: the file is empty".to_string()
            } else {
                format!("{:?}", String::from_utf8_lossy(&magic[..got]))
            };
            return Err(LlmError::NotGguf { path, found });
        }
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = gguf_file::Content::read(&mut reader).map_err(|e| LlmError::Corrupt {
            path: path.clone(),
            reason: reason_of(&e),
        })?;
        validate_tensors(&path, &content, file_len)?;
        Ok(Self {
            path,
            reader,
            content,
        })
    }

    /// The file's path, as given to [`GgufFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header (metadata and tensor directory) as candle sees it.
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.content.metadata.get(key)
    }

    /// `general.architecture`, e.g. `qwen2` or `llama`.
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    fn required(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| LlmError::MissingMetadata {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    fn invalid(&self, key: &str, e: impl std::fmt::Display) -> LlmError {
        LlmError::InvalidMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        }
    }

    /// A required unsigned integer (any integer width in the file).
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.required(key)?;
        let n = match v {
            MetadataValue::U8(x) => Some(*x as u64),
            MetadataValue::U16(x) => Some(*x as u64),
            MetadataValue::U32(x) => Some(*x as u64),
            MetadataValue::U64(x) => Some(*x),
            MetadataValue::I8(x) => u64::try_from(*x).ok(),
            MetadataValue::I16(x) => u64::try_from(*x).ok(),
            MetadataValue::I32(x) => u64::try_from(*x).ok(),
            MetadataValue::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.invalid(key, format!("expected an unsigned integer, got {v:?}")))
    }

    /// An optional unsigned integer: `None` if absent, an error if present but invalid.
    pub fn u32_opt(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.u32(key).map(Some),
        }
    }

    /// A required float (f32 or f64 in the file).
    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.required(key)? {
            MetadataValue::F32(x) => Ok(*x),
            MetadataValue::F64(x) => Ok(*x as f32),
            v => Err(self.invalid(key, format!("expected a float, got {v:?}"))),
        }
    }

    /// An optional float.
    pub fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.f32(key).map(Some),
        }
    }

    /// An optional boolean.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(key, format!("expected a boolean, got {v:?}"))),
        }
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.required(key)? {
            MetadataValue::String(s) => Ok(s),
            v => Err(self.invalid(key, format!("expected a string, got {}", type_name(v)))),
        }
    }

    /// An optional string.
    pub fn string_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// A required array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.required(key)? {
            MetadataValue::Array(items) => items
                .iter()
                .map(|v| match v {
                    MetadataValue::String(s) => Ok(s.as_str()),
                    v => Err(self.invalid(
                        key,
                        format!("expected an array of strings, found {}", type_name(v)),
                    )),
                })
                .collect(),
            v => Err(self.invalid(key, format!("expected an array, got {}", type_name(v)))),
        }
    }

    /// An optional array of integers (e.g. `tokenizer.ggml.token_type`).
    pub fn i64_array_opt(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            MetadataValue::Array(items) => items
                .iter()
                .map(|v| match v {
                    MetadataValue::I32(x) => Ok(*x as i64),
                    MetadataValue::U32(x) => Ok(*x as i64),
                    MetadataValue::I8(x) => Ok(*x as i64),
                    MetadataValue::U8(x) => Ok(*x as i64),
                    MetadataValue::I16(x) => Ok(*x as i64),
                    MetadataValue::U16(x) => Ok(*x as i64),
                    MetadataValue::I64(x) => Ok(*x),
                    v => Err(self.invalid(
                        key,
                        format!("expected an array of integers, found {}", type_name(v)),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            v => Err(self.invalid(key, format!("expected an array, got {}", type_name(v)))),
        }
    }

    /// Whether the file has a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// The type and shape (candle order: rows first) of a tensor, without reading it.
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, Vec<usize>)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| (t.ggml_dtype, t.shape.dims().to_vec()))
    }

    /// Reads one tensor onto `device`, in its stored (possibly quantized) type.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LlmError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        info.read(&mut self.reader, self.content.tensor_data_offset, device)
            .map_err(|e| LlmError::InvalidTensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: reason_of(&e),
            })
    }

    /// Reads a tensor and checks its shape (candle order, e.g. `[out, in]` for a matmul
    /// weight).
    pub fn tensor_shaped(
        &mut self,
        name: &str,
        dims: &[usize],
        device: &Device,
    ) -> Result<QTensor> {
        let t = self.tensor(name, device)?;
        if t.shape().dims() != dims {
            return Err(LlmError::InvalidTensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: format!("expected shape {dims:?}, found {:?}", t.shape().dims()),
            });
        }
        Ok(t)
    }
}

/// Reads as many bytes as are available, up to `buf.len()`.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn reason_of(e: &candle_core::Error) -> String {
    // candle wraps I/O errors; an unexpected EOF means the file was cut short.
    let s = e.to_string();
    if s.contains("failed to fill whole buffer") || s.contains("UnexpectedEof") {
        "the file ends early (truncated download?)".to_string()
    } else {
        s.lines().next().unwrap_or("").to_string()
    }
}

fn type_name(v: &MetadataValue) -> &'static str {
    match v {
        MetadataValue::U8(_) => "u8",
        MetadataValue::I8(_) => "i8",
        MetadataValue::U16(_) => "u16",
        MetadataValue::I16(_) => "i16",
        MetadataValue::U32(_) => "u32",
        MetadataValue::I32(_) => "i32",
        MetadataValue::U64(_) => "u64",
        MetadataValue::I64(_) => "i64",
        MetadataValue::F32(_) => "f32",
        MetadataValue::F64(_) => "f64",
        MetadataValue::Bool(_) => "bool",
        MetadataValue::String(_) => "string",
        MetadataValue::Array(_) => "array",
    }
}

/// Checks every tensor's size arithmetic and extent against the file length, so that later
/// reads can neither overflow nor run past the end.
fn validate_tensors(path: &Path, content: &gguf_file::Content, file_len: u64) -> Result<()> {
    let corrupt = |reason: String| LlmError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    for (name, info) in &content.tensor_infos {
        let dims = info.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| corrupt(format!("tensor `{name}` has an impossible shape {dims:?}")))?;
        let block = info.ggml_dtype.block_size() as u64;
        if elems % block != 0
            || dims
                .last()
                .is_some_and(|&d| !(d as u64).is_multiple_of(block))
        {
            return Err(corrupt(format!(
                "tensor `{name}` of shape {dims:?} does not fit {:?} blocks of {block}",
                info.ggml_dtype
            )));
        }
        let bytes = (elems / block)
            .checked_mul(info.ggml_dtype.type_size() as u64)
            .ok_or_else(|| corrupt(format!("tensor `{name}` is impossibly large")))?;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| s.checked_add(bytes))
            .ok_or_else(|| corrupt(format!("tensor `{name}` has an impossible offset")))?;
        if end > file_len {
            return Err(corrupt(format!(
                "tensor `{name}` needs bytes up to {end} but the file has only {file_len} \
                 (truncated download?)"
            )));
        }
    }
    Ok(())
}
