//! Export of a GGUF's dequantized base to a Hugging Face model folder
//! (`config.json` + `model.safetensors`, f32), so that Python tools — `transformers`
//! and `peft` — run on the very weights Kura trains on.
//!
//! Why: no package on these machines ships unquantized weights, so the only way to put
//! PyTorch + PEFT beside Kura on the *same* model (the PEFT round-trip test, `kura bench
//! train`) is to hand them the weights Kura's trainer sees. Every tensor is dequantized
//! exactly as [`crate::llm::Model::to_training`] dequantizes it (`QTensor::dequantize`,
//! f32) and renamed to the Hugging Face Qwen2 / Llama layout:
//!
//! | GGUF | Hugging Face |
//! |---|---|
//! | `token_embd.weight` | `model.embed_tokens.weight` |
//! | `blk.{i}.attn_norm.weight` | `model.layers.{i}.input_layernorm.weight` |
//! | `blk.{i}.attn_{q,k,v}.{weight,bias}` | `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}` |
//! | `blk.{i}.attn_output.weight` | `model.layers.{i}.self_attn.o_proj.weight` |
//! | `blk.{i}.ffn_norm.weight` | `model.layers.{i}.post_attention_layernorm.weight` |
//! | `blk.{i}.ffn_{gate,up,down}.weight` | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` |
//! | `output_norm.weight` | `model.norm.weight` |
//! | `output.weight` (absent: tied) | `lm_head.weight` (absent: `tie_word_embeddings`) |
//!
//! Llama GGUFs store the rows of `attn_q`/`attn_k` permuted for interleaved RoPE
//! (llama.cpp's converter); they are permuted back to Hugging Face's half-split order,
//! the same permutation [`super::lora::PeftLayout`] applies to adapters. Qwen2 needs
//! none. `rope_theta`, `rms_norm_eps`, head counts and tied embeddings come from the
//! GGUF metadata.
//!
//! The safetensors file is written tensor by tensor (the header first, from the
//! shapes), so peak memory is one dequantized tensor, not the whole model — the 0.5B
//! is 2 GB in f32.
//!
//! ```no_run
//! # fn main() -> Result<(), kura::train::TrainError> {
//! let out = kura::train::export::export_hf(
//!     "models/smollm2-135m-instruct-q4_1.gguf".as_ref(),
//!     "target/smollm2-hf".as_ref(),
//! )?;
//! println!("{} tensors, {} bytes", out.tensors, out.bytes);
//! # Ok(()) }
//! ```

use super::TrainError;
use crate::llm::layers::RopeStyle;
use crate::llm::{llama, qwen2, GgufFile, LlmError, MetadataValue};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What [`export_hf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct HfExport {
    /// The folder.
    pub dir: PathBuf,
    /// `Qwen2ForCausalLM` or `LlamaForCausalLM`.
    pub architecture: String,
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Size of `model.safetensors` in bytes.
    pub bytes: u64,
    /// Whether the output projection is tied to the embeddings.
    pub tied_embeddings: bool,
}

/// The shared hyper-parameters of the two families.
struct Shape {
    hf_arch: &'static str,
    model_type: &'static str,
    vocab: usize,
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f32,
    rms_eps: f32,
    context: usize,
    qkv_bias: bool,
    permuted_qk: bool,
}

impl Shape {
    fn of(file: &GgufFile) -> Result<Self, TrainError> {
        let (c, hf_arch, model_type) = match file.architecture()? {
            "qwen2" => (qwen2::config(file)?, "Qwen2ForCausalLM", "qwen2"),
            "llama" => (llama::config(file)?, "LlamaForCausalLM", "llama"),
            other => {
                return Err(LlmError::UnsupportedArchitecture {
                    path: file.path().to_path_buf(),
                    arch: other.to_string(),
                }
                .into())
            }
        };
        Ok(Self {
            hf_arch,
            model_type,
            vocab: c.vocab_size,
            hidden: c.hidden_size,
            ffn: c.intermediate_size,
            layers: c.num_layers,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            rope_theta: c.rope_theta,
            rms_eps: c.rms_norm_eps,
            context: c.context_length,
            qkv_bias: c.qkv_bias,
            // llama.cpp permutes q/k rows exactly where it stores interleaved RoPE.
            permuted_qk: c.rope_style == RopeStyle::Interleaved,
        })
    }
}

/// One tensor to write: its Hugging Face name, the GGUF tensor it comes from, its
/// shape, and the RoPE heads whose rows must be un-permuted (Llama q/k).
struct Entry {
    hf: String,
    gguf: String,
    dims: Vec<usize>,
    unpermute_heads: Option<usize>,
}

fn entries(s: &Shape, tied: bool) -> Vec<Entry> {
    let e = |hf: String, gguf: String, dims: Vec<usize>| Entry {
        hf,
        gguf,
        dims,
        unpermute_heads: None,
    };
    let kv = s.kv_heads * s.head_dim;
    let mut out = vec![e(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        vec![s.vocab, s.hidden],
    )];
    for i in 0..s.layers {
        let hf = |n: &str| format!("model.layers.{i}.{n}");
        let gg = |n: &str| format!("blk.{i}.{n}");
        out.push(e(
            hf("input_layernorm.weight"),
            gg("attn_norm.weight"),
            vec![s.hidden],
        ));
        for (proj, gguf, rows, heads) in [
            ("q_proj", "attn_q", s.hidden, s.heads),
            ("k_proj", "attn_k", kv, s.kv_heads),
            ("v_proj", "attn_v", kv, 0),
        ] {
            let mut w = e(
                hf(&format!("self_attn.{proj}.weight")),
                gg(&format!("{gguf}.weight")),
                vec![rows, s.hidden],
            );
            if s.permuted_qk && heads > 0 {
                w.unpermute_heads = Some(heads);
            }
            out.push(w);
            if s.qkv_bias {
                out.push(e(
                    hf(&format!("self_attn.{proj}.bias")),
                    gg(&format!("{gguf}.bias")),
                    vec![rows],
                ));
            }
        }
        out.push(e(
            hf("self_attn.o_proj.weight"),
            gg("attn_output.weight"),
            vec![s.hidden, s.hidden],
        ));
        out.push(e(
            hf("post_attention_layernorm.weight"),
            gg("ffn_norm.weight"),
            vec![s.hidden],
        ));
        out.push(e(
            hf("mlp.gate_proj.weight"),
            gg("ffn_gate.weight"),
            vec![s.ffn, s.hidden],
        ));
        out.push(e(
            hf("mlp.up_proj.weight"),
            gg("ffn_up.weight"),
            vec![s.ffn, s.hidden],
        ));
        out.push(e(
            hf("mlp.down_proj.weight"),
            gg("ffn_down.weight"),
            vec![s.hidden, s.ffn],
        ));
    }
    out.push(e(
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        vec![s.hidden],
    ));
    if !tied {
        out.push(e(
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![s.vocab, s.hidden],
        ));
    }
    out
}

/// A token id from the GGUF metadata, if present.
fn token_id(file: &GgufFile, key: &str) -> Option<u32> {
    match file.get(key)? {
        MetadataValue::U32(v) => Some(*v),
        MetadataValue::I32(v) => u32::try_from(*v).ok(),
        MetadataValue::U64(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

/// An f32 as the f64 with the same shortest decimal form (`1e-6`, not `9.99…e-7`).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

fn config_json(s: &Shape, file: &GgufFile, tied: bool) -> serde_json::Value {
    let (rms_eps, rope_theta) = (decimal(s.rms_eps), decimal(s.rope_theta));
    let mut c = json!({
        "architectures": [s.hf_arch],
        "model_type": s.model_type,
        "vocab_size": s.vocab,
        "hidden_size": s.hidden,
        "intermediate_size": s.ffn,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": s.context,
        "rms_norm_eps": rms_eps,
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "tie_word_embeddings": tied,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "dtype": "float32",
        "use_cache": true,
    });
    let obj = c.as_object_mut().expect("an object");
    if s.model_type == "qwen2" {
        obj.insert("use_sliding_window".into(), json!(false));
        obj.insert("max_window_layers".into(), json!(s.layers));
    } else {
        obj.insert("attention_bias".into(), json!(false));
        obj.insert("mlp_bias".into(), json!(false));
    }
    for (hf, key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = token_id(file, key) {
            obj.insert(hf.into(), json!(id));
        }
    }
    if let Ok(Some(name)) = file.string_opt("general.name") {
        obj.insert(
            "_kura_source".into(),
            json!(format!(
                "{} (dequantized from {})",
                name,
                file.path().display()
            )),
        );
    }
    c
}

/// Rows of `w: [out, cols]` from GGUF's interleaved RoPE order back to Hugging Face's
/// halves (the inverse of llama.cpp's `permute`).
fn unpermute_rows(w: &Tensor, heads: usize) -> Result<Tensor, TrainError> {
    let (out, cols) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, cols))?)
}

/// Writes the dequantized base of the GGUF at `gguf` as a Hugging Face model folder
/// `dir` (created if missing): `config.json` and `model.safetensors` (f32).
pub fn export_hf(gguf: &Path, dir: &Path) -> Result<HfExport, TrainError> {
    let mut file = GgufFile::open(gguf)?;
    let shape = Shape::of(&file)?;
    let tied = !file.has_tensor("output.weight");
    let list = entries(&shape, tied);
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;

    let config = config_json(&shape, &file, tied);
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config).expect("serialisable");
    super::checkpoint::write_atomic(&config_path, text.as_bytes())
        .map_err(|e| TrainError::io(&config_path, e))?;

    // The safetensors header: names, dtypes, shapes and byte ranges, known up front.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for e in &list {
        let len = 4 * e.dims.iter().product::<usize>() as u64;
        header.insert(
            e.hf.clone(),
            json!({"dtype": "F32", "shape": e.dims, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }

    let st_path = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.partial");
    let io = |e| TrainError::io(&st_path, e);
    let mut out = BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let device = Device::Cpu;
    for e in &list {
        let q = file.tensor_shaped(&e.gguf, &e.dims, &device)?;
        let mut t = q.dequantize(&device)?.to_dtype(DType::F32)?;
        if let Some(heads) = e.unpermute_heads {
            t = unpermute_rows(&t, heads)?;
        }
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&bytes).map_err(io)?;
    }
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, &st_path).map_err(io)?;
    Ok(HfExport {
        dir: dir.to_path_buf(),
        architecture: shape.hf_arch.to_string(),
        tensors: list.len(),
        bytes: 8 + header.len() as u64 + offset,
        tied_embeddings: tied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::fixtures::write_tiny_qwen2_gguf;

    #[test]
    fn tiny_qwen2_exports_every_tensor_with_hf_names_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("tiny.gguf");
        write_tiny_qwen2_gguf(&gguf, 7).unwrap();
        let out = export_hf(&gguf, &dir.path().join("hf")).unwrap();
        assert_eq!(out.architecture, "Qwen2ForCausalLM");
        assert!(out.tied_embeddings);
        // embed + 2 × (2 norms + q/k/v weight+bias + o + 3 mlp) + norm.
        assert_eq!(out.tensors, 1 + 2 * 12 + 1);
        let st = out.dir.join("model.safetensors");
        assert_eq!(std::fs::metadata(&st).unwrap().len(), out.bytes);
        let tensors = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
        assert_eq!(
            tensors["model.layers.1.self_attn.k_proj.weight"].dims(),
            &[32, 64]
        );
        assert_eq!(
            tensors["model.layers.0.self_attn.q_proj.bias"].dims(),
            &[64]
        );
        assert!(!tensors.contains_key("lm_head.weight"));
        // Values are the GGUF's, dequantized.
        let mut file = GgufFile::open(&gguf).unwrap();
        let want = file
            .tensor("blk.0.ffn_down.weight", &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let got = &tensors["model.layers.0.mlp.down_proj.weight"];
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["num_key_value_heads"], 2);
        assert_eq!(config["tie_word_embeddings"], true);
        assert_eq!(config["eos_token_id"], 282);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(out, cols).
        let hf = Tensor::arange(0f32, 48., &Device::Cpu)
            .unwrap()
            .reshape((12, 4))
            .unwrap();
        let gguf = hf
            .reshape((2, 2, 3, 4))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((12, 4))
            .unwrap();
        let back = unpermute_rows(&gguf, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
    }
}
