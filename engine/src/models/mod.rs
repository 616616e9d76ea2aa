//! Model files: which ones Kura knows, where they are, and whether they are intact.
//!
//! Kura never downloads at run time. Its default models are files in the models
//! folder, listed in `models/models.toml` with their size and sha256; that
//! manifest is compiled into the binary, so a copied-in or tampered manifest
//! cannot vouch for a tampered file. Models a company brings itself (a GGUF on a
//! USB stick) are added with [`Registry::import`], which records their hash in
//! `imported.toml` in the models folder at the moment of import.
//!
//! Every loader goes through [`Registry::verify`] first: a file whose size or
//! sha256 differs from the record is refused with a message naming the file and
//! both hashes.
//!
//! ```no_run
//! use kura::models::{Registry, Role};
//! let registry = Registry::open("models".as_ref())?;
//! let chat = registry.default_for(Role::Chat)?;
//! let verified = registry.verify(chat)?; // hashes every file of the model
//! println!("loading {}", verified.primary().display());
//! # Ok::<(), kura::models::ModelError>(())
//! ```

mod import;
mod manifest;
mod verify;

use std::path::{Path, PathBuf};

pub use import::ImportOptions;
pub use manifest::{Manifest, ModelEntry, ModelFile, Origin, Part, Role};
pub use verify::{sha256_file, FileCheck, FileState};

/// What can go wrong with a model file or the model registry.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model of that name is known.
    #[error("unknown model '{name}' (known: {known}) / モデル '{name}' は登録されていません")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names that are known.
        known: String,
    },
    /// No default model of that role.
    #[error("no default {role} model is listed in models.toml")]
    NoDefault {
        /// The role asked for.
        role: Role,
    },
    /// A file of the model is not in the models folder.
    #[error("model file {path} is missing: run `installer/fetch-models` on a connected machine, or copy the file there / モデルファイルがありません")]
    Missing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// A file has the wrong size (truncated or a different file).
    #[error("model file {path} has {actual} bytes, expected {expected}: it is truncated or not the listed file / サイズが一致しません")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size recorded in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A file's content differs from the recorded hash: refused.
    #[error("model file {path} is corrupt or was altered: sha256 {actual}, expected {expected}; refusing to load it / ハッシュ値が一致しないため読み込みを拒否しました")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// sha256 recorded in the manifest.
        expected: String,
        /// sha256 of the file on disk.
        actual: String,
    },
    /// A manifest could not be read or parsed.
    #[error("model manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file to import is not a usable GGUF.
    #[error("cannot import {path}: {reason}")]
    NotImportable {
        /// The file offered.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The models Kura knows: the built-in defaults plus the imported ones.
#[derive(Debug, Clone)]
pub struct Registry {
    models_dir: PathBuf,
    entries: Vec<ModelEntry>,
}

/// A model whose every file was just checked against its recorded hash.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    /// The registry entry.
    pub entry: ModelEntry,
    /// Absolute paths of its files, in manifest order.
    pub files: Vec<PathBuf>,
}

impl VerifiedModel {
    /// The model's main file (the GGUF, the E5S1 container, the safetensors).
    pub fn primary(&self) -> &Path {
        &self.files[0]
    }
}

impl Registry {
    /// The file, in the models folder, where imported models are recorded.
    pub const IMPORTED: &'static str = "imported.toml";

    /// Opens the registry for a models folder: the compiled-in default manifest
    /// plus `imported.toml` there, if any. Touches no model file.
    pub fn open(models_dir: &Path) -> Result<Self, ModelError> {
        let mut entries = Manifest::builtin()?.model;
        let imported = models_dir.join(Self::IMPORTED);
        if imported.is_file() {
            entries.extend(Manifest::load(&imported, Origin::Imported)?.model);
        }
        Ok(Registry {
            models_dir: models_dir.to_owned(),
            entries,
        })
    }

    /// The models folder this registry reads.
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// Every known model, defaults first.
    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The model of this name.
    pub fn get(&self, name: &str) -> Result<&ModelEntry, ModelError> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ModelError::Unknown {
                name: name.to_owned(),
                known: self
                    .entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The default model of a role (`default = true` in models.toml).
    pub fn default_for(&self, role: Role) -> Result<&ModelEntry, ModelError> {
        self.entries
            .iter()
            .find(|e| e.role == role && e.default)
            .ok_or(ModelError::NoDefault { role })
    }

    /// Where a file of a model lives.
    pub fn file_path(&self, file: &ModelFile) -> PathBuf {
        self.models_dir.join(&file.path)
    }

    /// Checks every file of a model (size, then sha256) without failing fast:
    /// for reports such as `kura models verify`.
    pub fn check(&self, entry: &ModelEntry) -> Vec<FileCheck> {
        entry
            .files
            .iter()
            .map(|f| verify::check_file(&self.file_path(f), f))
            .collect()
    }

    /// Verifies a model before loading it: every file present, of the recorded
    /// size and sha256. The first problem is returned as the error.
    pub fn verify(&self, entry: &ModelEntry) -> Result<VerifiedModel, ModelError> {
        let mut files = Vec::with_capacity(entry.files.len());
        for check in self.check(entry) {
            check.into_result()?;
        }
        for f in &entry.files {
            files.push(self.file_path(f));
        }
        Ok(VerifiedModel {
            entry: entry.clone(),
            files,
        })
    }

    /// Verifies the model of this name, or the role's default when `name` is None.
    pub fn verify_named(
        &self,
        name: Option<&str>,
        role: Role,
    ) -> Result<VerifiedModel, ModelError> {
        let entry = match name {
            Some(n) => self.get(n)?,
            None => self.default_for(role)?,
        };
        self.verify(entry)
    }
}
