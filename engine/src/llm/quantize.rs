//! Re-quantizing a GGUF model into another weight type.
//!
//! candle 0.11 has AVX kernels for Q4_0, Q8_0 and the K-quants but not for Q4_1, Q5_0
//! or Q5_1, so a model shipped mostly in Q5_0 (Kura's 0.5B) runs faster once its
//! matmul weights are rewritten as Q8_0. [`quantize_gguf`] does that: every 2-D
//! `*.weight` tensor is dequantized and quantized to the target type; everything else
//! (norms, biases) and all metadata are copied unchanged, except `general.file_type`.
//! A weight whose rows do not fit the target's block size (Q4_K needs multiples of
//! 256; the 0.5B's hidden size is 896) falls back to Q8_0, as llama.cpp does.
//!
//! ```no_run
//! use kura::llm::{quantize_gguf, QuantType};
//! let report = quantize_gguf(
//!     "models/qwen2.5-coder-0.5b-instruct.gguf",
//!     "models/qwen2.5-coder-0.5b-instruct-q8_0.gguf",
//!     QuantType::Q8_0,
//! ).unwrap();
//! println!("{report:?}");
//! ```

use super::error::{LlmError, Result};
use super::gguf::{GgufFile, MetadataValue};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use std::path::Path;

/// Target weight types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// 8-bit, blocks of 32 (near-lossless).
    Q8_0,
    /// 4-bit, blocks of 32.
    Q4_0,
    /// 4-bit K-quant, super-blocks of 256.
    Q4K,
}

impl QuantType {
    /// candle's type.
    pub fn ggml_dtype(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// llama.cpp's `general.file_type` for a file mostly of this type.
    fn file_type(self) -> u32 {
        match self {
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
            Self::Q4K => 14, // MOSTLY_Q4_K_S
        }
    }
}

impl std::str::FromStr for QuantType {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            "q4_k" | "q4k" | "q4_k_s" => Ok(Self::Q4K),
            other => Err(LlmError::InvalidArgument(format!(
                "unknown quantization type `{other}` (expected q8_0, q4_0 or q4_k)"
            ))),
        }
    }
}

/// What [`quantize_gguf`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// Weights rewritten in the target type.
    pub converted: usize,
    /// Weights rewritten as Q8_0 because their rows do not fit the target's blocks.
    pub fallback_q8_0: usize,
    /// Tensors copied unchanged (norms, biases, weights already in the target type).
    pub kept: usize,
    /// Size of the source file in bytes.
    pub bytes_before: u64,
    /// Size of the written file in bytes.
    pub bytes_after: u64,
}

/// Writes a copy of `src` with its matmul weights in `target` to `dst` (via a temporary
/// file in the same directory, renamed at the end, so `dst` is never half-written).
pub fn quantize_gguf(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    target: QuantType,
) -> Result<QuantizeReport> {
    let dst = dst.as_ref();
    let mut file = GgufFile::open(src)?;
    let device = Device::Cpu;
    let mut report = QuantizeReport {
        bytes_before: std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0),
        ..Default::default()
    };

    // Keep the source's tensor order (by offset).
    let mut names: Vec<(u64, String)> = file
        .content()
        .tensor_infos
        .iter()
        .map(|(n, i)| (i.offset, n.clone()))
        .collect();
    names.sort();
    let want = target.ggml_dtype();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for (_, name) in names {
        let t = file.tensor(&name, &device)?;
        let dims = t.shape().dims().to_vec();
        let is_weight = dims.len() == 2 && name.ends_with(".weight");
        let out = if !is_weight || t.dtype() == want {
            report.kept += 1;
            t
        } else {
            let cols = dims[1];
            let dtype = if cols % want.block_size() == 0 {
                report.converted += 1;
                want
            } else if cols % GgmlDType::Q8_0.block_size() == 0 {
                report.fallback_q8_0 += 1;
                GgmlDType::Q8_0
            } else {
                report.kept += 1;
                tensors.push((name, t));
                continue;
            };
            if t.dtype() == dtype {
                t
            } else {
                let f = t.dequantize(&device)?;
                QTensor::quantize(&f, dtype).map_err(|e| LlmError::InvalidTensor {
                    path: file.path().to_path_buf(),
                    name: name.clone(),
                    reason: format!("cannot quantize to {dtype:?}: {e}"),
                })?
            }
        };
        tensors.push((name, out));
    }

    let mut metadata: Vec<(String, MetadataValue)> = file
        .content()
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type" && k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.push((
        "general.file_type".into(),
        MetadataValue::U32(target.file_type()),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    write_gguf(dst, &metadata, &tensors)?;
    report.bytes_after = std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0);
    Ok(report)
}

/// Writes a GGUF file atomically (temporary file + rename).
pub(crate) fn write_gguf(
    dst: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[(String, QTensor)],
) -> Result<()> {
    let io = |source| LlmError::Io {
        path: dst.to_path_buf(),
        source,
    };
    let tmp = dst.with_extension("gguf.partial");
    {
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        let md: Vec<(&str, &MetadataValue)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut w, &md, &ts).map_err(|e| LlmError::Corrupt {
            path: dst.to_path_buf(),
            reason: format!("cannot write: {e}"),
        })?;
        use std::io::Write;
        w.flush().map_err(io)?;
    }
    std::fs::rename(&tmp, dst).map_err(io)?;
    Ok(())
}
