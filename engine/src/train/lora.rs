//! LoRA adapters being trained: which projections get one, how they start, and how
//! they are saved so that Hugging Face tools can read them.
//!
//! An adapter adds `s · B(A(x))` to a frozen projection (`s = alpha / rank`). Kura
//! keeps `A: [in, rank]` and `B: [rank, out]` as `candle_core::Var`s, attached to the
//! training model through the engine's own [`crate::llm::Linear`], so the adapter
//! trained is the adapter served. They start as PEFT starts them: `A` uniform in
//! `±1/√in` (Kaiming-uniform with `a = √5`, PyTorch's default for a linear layer) and
//! `B = 0`, so the untrained adapter changes nothing.
//!
//! On disk an adapter is a PEFT folder:
//!
//! ```text
//! adapter_model.safetensors   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  [rank, in]
//!                             base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight  [out, rank]
//! adapter_config.json         {"peft_type": "LORA", "r": …, "lora_alpha": …, "target_modules": […], …}
//! ```
//!
//! Llama GGUFs store q/k rows permuted for interleaved RoPE (llama.cpp's converter);
//! the rows of `B` for those two projections are permuted back on export and forward
//! again on import ([`PeftLayout`]), so a PEFT adapter means the same thing on both
//! sides. Qwen2 needs no permutation.

use super::dataset::SplitMix64;
use super::TrainError;
use crate::llm::{Architecture, LoraAdapter, Model};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A projection that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Attention query.
    Q,
    /// Attention key.
    K,
    /// Attention value.
    V,
    /// Attention output.
    O,
    /// MLP gate.
    Gate,
    /// MLP up.
    Up,
    /// MLP down.
    Down,
}

impl Target {
    /// All seven projections.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The GGUF tensor suffix (`attn_q`).
    pub fn gguf(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// The Hugging Face module path inside a decoder layer (`self_attn.q_proj`).
    pub fn hf(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The PEFT `target_modules` name (`q_proj`).
    pub fn peft(self) -> &'static str {
        self.hf().split('.').nth(1).expect("two parts")
    }

    /// Parses `q`, `q_proj`, `attn_q`, … (case-insensitive).
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.to_ascii_lowercase();
        Target::ALL
            .into_iter()
            .find(|t| s == format!("{t:?}").to_ascii_lowercase() || s == t.peft() || s == t.gguf())
    }
}

/// The shape of the adapters: where, how big, how strong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// `alpha`; the update is scaled by `alpha / rank`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    #[serde(default)]
    pub dropout: f64,
    /// The projections that get adapters (`q`, `k`, `v`, `o`, `gate`, `up`, `down`,
    /// or the PEFT names `q_proj`, …).
    #[serde(default = "default_targets", with = "target_names")]
    pub targets: Vec<Target>,
}

fn default_rank() -> usize {
    16
}
fn default_alpha() -> f64 {
    32.0
}
fn default_targets() -> Vec<Target> {
    Target::ALL.to_vec()
}

mod target_names {
    use super::Target;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(t: &[Target], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(t.iter().map(|t| t.peft()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut out = Vec::new();
        for n in names {
            let t = Target::parse(&n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown LoRA target `{n}` (use q, k, v, o, gate, up, down)"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: default_rank(),
            alpha: default_alpha(),
            dropout: 0.0,
            targets: default_targets(),
        }
    }
}

impl LoraConfig {
    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.rank == 0 {
            return Err(TrainError::Config("lora.rank must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::Config(format!(
                "lora.dropout must be in [0, 1), not {}",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(TrainError::Config("lora.targets is empty".into()));
        }
        Ok(())
    }
}

/// One adapter's trainable pair.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `A: [in, rank]`.
    pub a: Var,
    /// `B: [rank, out]`.
    pub b: Var,
}

/// The adapters of a whole model, by GGUF layer name (`blk.3.attn_q`), in a fixed
/// order (so sums over them, such as the gradient norm, are reproducible).
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// Their configuration.
    pub config: LoraConfig,
    /// Layer name → trainable pair.
    pub layers: BTreeMap<String, LoraPair>,
}

/// Parses `blk.{i}.{suffix}` into (i, target).
fn parse_layer_name(name: &str) -> Option<(usize, Target)> {
    let rest = name.strip_prefix("blk.")?;
    let (i, suffix) = rest.split_once('.')?;
    let t = Target::ALL.into_iter().find(|t| t.gguf() == suffix)?;
    Some((i.parse().ok()?, t))
}

impl LoraWeights {
    /// Fresh adapters for every targeted projection of `model`, PEFT-initialised from
    /// `seed`, in `dtype`.
    pub fn init(
        model: &mut Model,
        config: &LoraConfig,
        seed: u64,
        dtype: DType,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let device = model.device().clone();
        let mut rng = SplitMix64::new(seed);
        let mut layers = BTreeMap::new();
        let mut shapes: Vec<(String, usize, usize)> = model
            .linears_mut()
            .iter()
            .filter(|l| {
                parse_layer_name(l.name()).is_some_and(|(_, t)| config.targets.contains(&t))
            })
            .map(|l| (l.name().to_string(), l.in_dim(), l.out_dim()))
            .collect();
        shapes.sort();
        for (name, in_dim, out_dim) in shapes {
            let bound = 1.0 / (in_dim as f64).sqrt();
            let a: Vec<f64> = (0..in_dim * config.rank)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
                .collect();
            let a = Tensor::from_vec(a, (in_dim, config.rank), &device)?.to_dtype(dtype)?;
            let b = Tensor::zeros((config.rank, out_dim), dtype, &device)?;
            layers.insert(
                name,
                LoraPair {
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                },
            );
        }
        Ok(Self {
            config: config.clone(),
            layers,
        })
    }

    /// Every trainable tensor with a stable name (`blk.0.attn_q.A`, `….B`).
    pub fn vars(&self) -> Vec<(String, &Var)> {
        self.layers
            .iter()
            .flat_map(|(n, p)| [(format!("{n}.A"), &p.a), (format!("{n}.B"), &p.b)])
            .collect()
    }

    /// Attaches the adapters to `model` under `name` (see [`Model::attach_adapter`]);
    /// the model then reads the live `Var`s, so optimizer steps show up at once.
    pub fn attach(
        &self,
        model: &mut Model,
        name: &str,
    ) -> Result<crate::llm::AdapterId, TrainError> {
        Ok(model.attach_adapter(name, self.adapters()?)?)
    }

    /// The adapters as the engine's [`LoraAdapter`]s (sharing the `Var`s' storage).
    pub fn adapters(&self) -> Result<HashMap<String, LoraAdapter>, TrainError> {
        self.layers
            .iter()
            .map(|(n, p)| {
                Ok((
                    n.clone(),
                    LoraAdapter::new(
                        p.a.as_tensor().clone(),
                        p.b.as_tensor().clone(),
                        self.config.alpha,
                    )?,
                ))
            })
            .collect()
    }

    /// Sets every `Var` from `tensors` (named as in [`LoraWeights::vars`]).
    pub fn load_values(&self, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        for (name, var) in self.vars() {
            let t = tensors.get(&name).ok_or_else(|| {
                TrainError::Checkpoint(format!("tensor `{name}` missing from the checkpoint"))
            })?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Saves the adapters as a PEFT folder (`adapter_model.safetensors` +
    /// `adapter_config.json`), written atomically file by file.
    pub fn save_peft(
        &self,
        dir: &Path,
        layout: &PeftLayout,
        base_model: &str,
    ) -> Result<(), TrainError> {
        let adapters = self.adapters()?;
        save_peft(dir, &adapters, &self.config, layout, base_model)
    }
}

/// How Kura's layer layout maps to Hugging Face's for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeftLayout {
    /// For Llama GGUFs: (query heads, key/value heads) whose q/k rows are permuted
    /// for interleaved RoPE. `None` for Qwen2.
    pub permuted_qk: Option<(usize, usize)>,
}

impl PeftLayout {
    /// The layout of `model`.
    pub fn of(model: &Model) -> Self {
        match model.architecture() {
            Architecture::Qwen2(_) => Self { permuted_qk: None },
            Architecture::Llama(m) => Self {
                permuted_qk: Some((m.config().num_heads, m.config().num_kv_heads)),
            },
        }
    }

    fn heads_for(&self, t: Target) -> Option<usize> {
        match (self.permuted_qk, t) {
            (Some((h, _)), Target::Q) => Some(h),
            (Some((_, kv)), Target::K) => Some(kv),
            _ => None,
        }
    }
}

/// Rows of `b_t: [out, r]` from GGUF's interleaved order to Hugging Face's halves
/// (`to_hf`) or back.
fn permute_rows(b_t: &Tensor, heads: usize, to_hf: bool) -> Result<Tensor, TrainError> {
    let (out, r) = b_t.dims2()?;
    let hd = out / heads;
    let t = if to_hf {
        b_t.reshape((heads, hd / 2, 2, r))?.transpose(1, 2)?
    } else {
        b_t.reshape((heads, 2, hd / 2, r))?.transpose(1, 2)?
    };
    Ok(t.contiguous()?.reshape((out, r))?)
}

/// The PEFT tensor name of one adapter matrix.
pub fn peft_name(layer: usize, target: Target, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{which}.weight",
        target.hf()
    )
}

/// `adapter_config.json` as PEFT writes it (the fields PEFT needs to load it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    pub task_type: String,
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub lora_alpha: f64,
    /// Dropout used in training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names (`q_proj`, …).
    pub target_modules: Vec<String>,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `none`: biases are not trained.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// PEFT's flag for Conv1D-style weights; always false here.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// rsLoRA scaling (`alpha/√r`); Kura uses plain `alpha/r` and refuses rsLoRA.
    #[serde(default)]
    pub use_rslora: bool,
}

fn default_bias() -> String {
    "none".into()
}

/// Writes a PEFT folder from engine adapters (Kura layout, keyed by GGUF layer name).
pub fn save_peft(
    dir: &Path,
    adapters: &HashMap<String, LoraAdapter>,
    config: &LoraConfig,
    layout: &PeftLayout,
    base_model: &str,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, ad) in adapters {
        let (layer, target) = parse_layer_name(name)
            .ok_or_else(|| TrainError::Adapter(format!("`{name}` is not a LoRA target layer")))?;
        let a_t = ad.a().t()?.contiguous()?.to_dtype(DType::F32)?;
        let mut b_t = ad.b().t()?.contiguous()?.to_dtype(DType::F32)?;
        if let Some(h) = layout.heads_for(target) {
            b_t = permute_rows(&b_t, h, true)?;
        }
        tensors.insert(peft_name(layer, target, 'A'), a_t);
        tensors.insert(peft_name(layer, target, 'B'), b_t);
    }
    let path = dir.join("adapter_model.safetensors");
    super::checkpoint::save_safetensors_atomic(&path, &tensors)?;
    let peft = PeftConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        r: config.rank,
        lora_alpha: config.alpha,
        lora_dropout: config.dropout,
        target_modules: config
            .targets
            .iter()
            .map(|t| t.peft().to_string())
            .collect(),
        base_model_name_or_path: Some(base_model.to_string()),
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        use_rslora: false,
    };
    let json = serde_json::to_string_pretty(&peft).expect("serialisable");
    super::checkpoint::write_atomic(&dir.join("adapter_config.json"), json.as_bytes())
        .map_err(|e| TrainError::io(&dir.join("adapter_config.json"), e))?;
    Ok(())
}

/// A PEFT adapter read from disk, in Kura's layout.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// Its `adapter_config.json`.
    pub config: PeftConfig,
    /// GGUF layer name → adapter (`A: [in, r]`, `B: [r, out]`, scale `alpha / r`).
    pub adapters: HashMap<String, LoraAdapter>,
}

impl PeftAdapter {
    /// The LoRA configuration the adapter was saved with.
    pub fn lora_config(&self) -> LoraConfig {
        let mut targets: Vec<Target> = self
            .config
            .target_modules
            .iter()
            .filter_map(|m| Target::parse(m))
            .collect();
        targets.sort();
        LoraConfig {
            rank: self.config.r,
            alpha: self.config.lora_alpha,
            dropout: self.config.lora_dropout,
            targets,
        }
    }
}

/// Reads a PEFT folder (Kura's own or one trained with Hugging Face PEFT on the same
/// base model) onto `device`.
pub fn load_peft(
    dir: &Path,
    layout: &PeftLayout,
    device: &Device,
) -> Result<PeftAdapter, TrainError> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
    let config: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| TrainError::Adapter(format!("{}: {e}", cfg_path.display())))?;
    if config.peft_type != "LORA" {
        return Err(TrainError::Adapter(format!(
            "{}: peft_type {} (only LORA is supported)",
            cfg_path.display(),
            config.peft_type
        )));
    }
    if config.use_rslora {
        return Err(TrainError::Adapter(format!(
            "{}: rsLoRA scaling is not supported",
            cfg_path.display()
        )));
    }
    let st_path = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&st_path, device)
        .map_err(|e| TrainError::Adapter(format!("{}: {e}", st_path.display())))?;
    let mut pairs: BTreeMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        let parsed = parse_peft_name(&name).ok_or_else(|| {
            TrainError::Adapter(format!("{}: unexpected tensor `{name}`", st_path.display()))
        })?;
        let (layer, target, which) = parsed;
        let slot = pairs.entry((layer, target)).or_default();
        if which == 'A' {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    let mut adapters = HashMap::new();
    for ((layer, target), (a, b)) in pairs {
        let (Some(a_t), Some(b_t)) = (a, b) else {
            return Err(TrainError::Adapter(format!(
                "{}: layer {layer} {} has only one of lora_A / lora_B",
                st_path.display(),
                target.peft()
            )));
        };
        let b_t = match layout.heads_for(target) {
            Some(h) => permute_rows(&b_t.to_dtype(DType::F32)?, h, false)?,
            None => b_t.to_dtype(DType::F32)?,
        };
        let a = a_t.to_dtype(DType::F32)?.t()?.contiguous()?;
        let b = b_t.t()?.contiguous()?;
        adapters.insert(
            format!("blk.{layer}.{}", target.gguf()),
            LoraAdapter::new(a, b, config.lora_alpha)?,
        );
    }
    Ok(PeftAdapter { config, adapters })
}

/// `base_model.model.model.layers.{i}.{module}.lora_{A|B}[.default].weight`.
fn parse_peft_name(name: &str) -> Option<(usize, Target, char)> {
    let rest = name.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let rest = rest.strip_suffix(".weight")?;
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A") {
        (m, 'A')
    } else {
        (rest.strip_suffix(".lora_B")?, 'B')
    };
    let t = Target::ALL.into_iter().find(|t| t.hf() == module)?;
    Some((i.parse().ok()?, t, which))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_parse_every_spelling() {
        assert_eq!(Target::parse("q"), Some(Target::Q));
        assert_eq!(Target::parse("Q_PROJ"), Some(Target::Q));
        assert_eq!(Target::parse("attn_output"), Some(Target::O));
        assert_eq!(Target::parse("down_proj"), Some(Target::Down));
        assert_eq!(Target::parse("lm_head"), None);
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.12.mlp.up_proj.lora_B.default.weight"),
            Some((12, Target::Up, 'B'))
        );
        let cfg: LoraConfig = toml::from_str("targets = [\"q_proj\", \"v\"]").unwrap();
        assert_eq!(cfg.targets, vec![Target::Q, Target::V]);
        assert!(toml::from_str::<LoraConfig>("targets = [\"lm_head\"]").is_err());
    }

    #[test]
    fn llama_row_permutation_round_trips() {
        let t = Tensor::arange(0f32, 48., &Device::Cpu)
            .unwrap()
            .reshape((12, 4))
            .unwrap();
        let hf = permute_rows(&t, 2, true).unwrap();
        assert_ne!(hf.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        // Head 0, hd = 6: GGUF rows (0,1),(2,3),(4,5) are pairs → HF rows 0,3 / 1,4 / 2,5.
        assert_eq!(
            hf.get(3).unwrap().to_vec1::<f32>().unwrap(),
            t.get(1).unwrap().to_vec1::<f32>().unwrap()
        );
        let back = permute_rows(&hf, 2, false).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }
}
