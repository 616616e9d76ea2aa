//! The adapter registry: the LoRA adapters a company has trained or imported, kept in
//! `<data>/adapters/NAME/` as PEFT folders, and everything done with them by name.
//!
//! An adapter is only worth something with its base model and its evidence, so one
//! module answers, for the CLI, the HTTP server and the desktop app alike:
//! - which adapters there are ([`AdapterRegistry::list`]: base model, rank, targets,
//!   size, sha256 and the "did it help?" verdict);
//! - what a name or a folder refers to ([`AdapterRegistry::resolve`]), with one rule
//!   everywhere: a PEFT folder as given, else a name under `<data>/adapters/`;
//! - which chat model it belongs to ([`AdapterRegistry::base_model`]: the one its
//!   config names, when Kura has it — an adapter only fits the model it was trained on);
//! - publishing a finished job's adapter ([`AdapterRegistry::publish`]) and importing
//!   one trained elsewhere, e.g. with Hugging Face PEFT ([`AdapterRegistry::import`]);
//! - attaching it to a loaded model ([`attach`]);
//! - its report ([`report`]): base vs base + adapter on held-out examples.
//!
//! Every read of `adapter_config.json` goes through the typed [`PeftConfig`]: a
//! folder whose config does not parse is refused by name, never half-read.

pub mod report;

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::llm::{AdapterId, Model};
use crate::models::Registry;
use crate::paths::Paths;
use crate::train::lora::PeftConfig;
use crate::train::{dataset, load_peft, AdapterReport, PeftLayout, RunInfo, TrainError};

/// The two files of a PEFT LoRA folder.
pub const PEFT_FILES: [&str; 2] = ["adapter_model.safetensors", "adapter_config.json"];

/// Why an adapter could not be found, read, published or attached.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The name would not be a plain folder name.
    #[error("invalid adapter name `{0}`: letters, digits, -, _ and . only (アダプタ名が不正です)")]
    InvalidName(String),
    /// Neither a PEFT folder nor a published adapter.
    #[error(
        "no adapter `{spec}`: give a PEFT folder (with adapter_config.json) or the name of one in {} (アダプタが見つかりません)",
        .adapters_dir.display()
    )]
    NotFound {
        /// What was asked for.
        spec: String,
        /// Where published adapters live.
        adapters_dir: PathBuf,
    },
    /// Neither a job nor an adapter goes by this name.
    #[error(
        "no job or adapter `{spec}`: give a job name ({}), an adapter name ({}) or a folder (ジョブまたはアダプタが見つかりません)",
        .jobs_dir.display(), .adapters_dir.display()
    )]
    NoJobOrAdapter {
        /// What was asked for.
        spec: String,
        /// Where jobs live.
        jobs_dir: PathBuf,
        /// Where published adapters live.
        adapters_dir: PathBuf,
    },
    /// A folder without `adapter_config.json`.
    #[error("{} is not a PEFT folder (no adapter_config.json)", .0.display())]
    NotPeft(PathBuf),
    /// `adapter_config.json` does not parse.
    #[error("{}: {reason} (アダプタ設定を読めません)", .path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The config names no base model that Kura has, and none was given.
    #[error(
        "which base model is adapter `{0}` for? Its config names none that Kura has: pass --model NAME (see `kura models list`)"
    )]
    UnknownBase(String),
    /// A job has no finished adapter yet.
    #[error(
        "job `{job}` has no finished adapter yet ({} is missing): let it finish or `kura train resume {}` first",
        .missing.display(), .job_dir.display()
    )]
    NotFinished {
        /// The job's name.
        job: String,
        /// Its folder.
        job_dir: PathBuf,
        /// The file that is not there.
        missing: PathBuf,
    },
    /// The adapter's shapes or layers do not match the base model.
    #[error("{} does not fit {model}: {reason} (ベースモデルに合いません)", .dir.display())]
    DoesNotFit {
        /// The adapter folder.
        dir: PathBuf,
        /// The base model.
        model: String,
        /// What does not match.
        reason: String,
    },
    /// A file could not be read, written or copied.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The adapter's tensors could not be read, or do not fit the model.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The base model could not be loaded, or the adapter not attached to it.
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AdapterError + '_ {
    move |source| AdapterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An adapter that a name or folder resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAdapter {
    /// The name it goes by (its folder's name).
    pub name: String,
    /// Its PEFT folder.
    pub dir: PathBuf,
}

/// One published adapter, as the adapter lists show it.
#[derive(Debug, Clone)]
pub struct AdapterEntry {
    /// Its name (the folder's).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Its `adapter_config.json`.
    pub config: PeftConfig,
    /// Size of `adapter_model.safetensors` in bytes.
    pub size: u64,
    /// sha256 of `adapter_model.safetensors` (adapters are megabytes: cheap to hash).
    pub sha256: Option<String>,
    /// Its "did it help?" report, when one was made (`report/report.json`).
    pub report: Option<AdapterReport>,
    /// Whether `report/report.png` exists.
    pub has_plot: bool,
}

/// What [`AdapterRegistry::import`] brought in.
#[derive(Debug, Clone)]
pub struct ImportedAdapter {
    /// The name it is served under.
    pub name: String,
    /// Kura's name for its base model (now in its config).
    pub base_model: String,
    /// Layers it adapts.
    pub layers: usize,
    /// Its new folder.
    pub dir: PathBuf,
}

/// Reads and checks a PEFT folder's `adapter_config.json`.
pub fn read_config(dir: &Path) -> Result<PeftConfig, AdapterError> {
    let path = dir.join("adapter_config.json");
    if !path.is_file() {
        return Err(AdapterError::NotPeft(dir.to_path_buf()));
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| AdapterError::Config {
        path,
        reason: e.to_string(),
    })
}

/// Attaches the adapter in `adapter.dir` to `model`; returns its id for the session.
pub fn attach(model: &mut Model, adapter: &ResolvedAdapter) -> Result<AdapterId, AdapterError> {
    let layout = PeftLayout::of(model);
    let device = model.device().clone();
    let peft = load_peft(&adapter.dir, &layout, &device)?;
    Ok(model.attach_adapter(&adapter.name, peft.adapters)?)
}

/// The adapters in one data folder's `adapters/`.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    dir: PathBuf,
    models_dir: PathBuf,
}

impl AdapterRegistry {
    /// The registry of a data folder (`<data>/adapters`), with its models folder
    /// (to tell which base models Kura has).
    pub fn new(paths: &Paths) -> Self {
        Self::at(paths.adapters_dir(), paths.models_dir.clone())
    }

    /// A registry in `dir`, with the models in `models_dir`.
    pub fn at(dir: PathBuf, models_dir: PathBuf) -> Self {
        Self { dir, models_dir }
    }

    /// Where the published adapters are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of the published adapter `name`; refuses names that would leave
    /// the adapters folder, and names with no adapter.
    pub fn folder(&self, name: &str) -> Result<PathBuf, AdapterError> {
        if !dataset::is_folder_name(name) {
            return Err(AdapterError::InvalidName(name.to_string()));
        }
        let dir = self.dir.join(name);
        if !dir.join("adapter_config.json").is_file() {
            return Err(self.not_found(name));
        }
        Ok(dir)
    }

    fn not_found(&self, spec: &str) -> AdapterError {
        AdapterError::NotFound {
            spec: spec.to_string(),
            adapters_dir: self.dir.clone(),
        }
    }

    /// What `spec` means: a PEFT folder as given, else a published adapter's name.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedAdapter, AdapterError> {
        let as_path = Path::new(spec);
        let dir = if as_path.join("adapter_config.json").is_file() {
            as_path.to_path_buf()
        } else if dataset::is_folder_name(spec)
            && self.dir.join(spec).join("adapter_config.json").is_file()
        {
            self.dir.join(spec)
        } else {
            return Err(self.not_found(spec));
        };
        let name = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| spec.to_string());
        Ok(ResolvedAdapter { name, dir })
    }

    /// The registry name of the chat model the adapter in `dir` was trained on, when
    /// its config names one that Kura has.
    pub fn base_model(&self, dir: &Path) -> Option<String> {
        let base = read_config(dir).ok()?.base_model_name_or_path?;
        let registry = Registry::open(&self.models_dir).ok()?;
        registry
            .entries()
            .iter()
            .any(|e| e.name == base)
            .then_some(base)
    }

    /// Attaches the adapter `spec` (a PEFT folder or a published name) to `model`.
    pub fn attach(&self, model: &mut Model, spec: &str) -> Result<AdapterId, AdapterError> {
        attach(model, &self.resolve(spec)?)
    }

    /// The chat model to load for `adapter` when none was named: the base model its
    /// config names (`model` wins when given).
    pub fn model_for(&self, model: Option<&str>, adapter: Option<&str>) -> Option<String> {
        if let Some(m) = model {
            return Some(m.to_string());
        }
        let resolved = self.resolve(adapter?).ok()?;
        self.base_model(&resolved.dir)
    }

    /// Every published adapter, by name. Folders whose config does not parse are
    /// left out (they cannot be served either).
    pub fn list(&self) -> Vec<AdapterEntry> {
        let mut out: Vec<AdapterEntry> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| self.entry(e.path()))
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn entry(&self, dir: PathBuf) -> Option<AdapterEntry> {
        let config = read_config(&dir).ok()?;
        let name = dir.file_name()?.to_string_lossy().into_owned();
        let weights = dir.join("adapter_model.safetensors");
        let size = std::fs::metadata(&weights).map_or(0, |m| m.len());
        let sha256 = std::fs::read(&weights)
            .ok()
            .map(|b| hex::encode(sha2::Sha256::digest(&b)));
        let report = std::fs::read_to_string(dir.join("report/report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let has_plot = dir.join("report/report.png").is_file();
        Some(AdapterEntry {
            name,
            dir,
            config,
            size,
            sha256,
            report,
            has_plot,
        })
    }

    /// Copies the PEFT files in `from` (a finished job's `adapter/`) to
    /// `<data>/adapters/NAME/`, each written beside and renamed into place, so a
    /// server listing adapters never sees half a file.
    pub fn publish(&self, name: &str, from: &Path) -> Result<PathBuf, AdapterError> {
        if !dataset::is_folder_name(name) {
            return Err(AdapterError::InvalidName(name.to_string()));
        }
        let target = self.dir.join(name);
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        for f in PEFT_FILES {
            let tmp = target.join(format!(".{f}.part"));
            std::fs::copy(from.join(f), &tmp).map_err(io(&from.join(f)))?;
            std::fs::rename(&tmp, target.join(f)).map_err(io(&target.join(f)))?;
        }
        Ok(target)
    }

    /// Imports a PEFT LoRA folder trained elsewhere on `base`: checked by attaching it
    /// to the base model, copied to `<data>/adapters/NAME`, and its config made to
    /// name Kura's model, so that serving it by name finds its base.
    pub fn import(
        &self,
        from: &Path,
        name: &str,
        base: &RunInfo,
    ) -> Result<ImportedAdapter, AdapterError> {
        if !dataset::is_folder_name(name) {
            return Err(AdapterError::InvalidName(name.to_string()));
        }
        let mut config = read_config(from)?;
        let mut llm = crate::llm::Llm::load(&base.model_path, &candle_core::Device::Cpu)?;
        let layout = PeftLayout::of(&llm.model);
        let peft = load_peft(from, &layout, &candle_core::Device::Cpu)?;
        let layers = peft.adapters.len();
        llm.model
            .attach_adapter(name, peft.adapters)
            .map_err(|e| AdapterError::DoesNotFit {
                dir: from.to_path_buf(),
                model: base.base_model.clone(),
                reason: e.to_string(),
            })?;
        let target = self.publish(name, from)?;
        config.base_model_name_or_path = Some(base.base_model.clone());
        let cfg_path = target.join("adapter_config.json");
        let json = serde_json::to_string_pretty(&config).expect("serialisable");
        crate::train::checkpoint::write_atomic(&cfg_path, json.as_bytes())
            .map_err(io(&cfg_path))?;
        Ok(ImportedAdapter {
            name: name.to_string(),
            base_model: base.base_model.clone(),
            layers,
            dir: target,
        })
    }
}
