//! Where Kura keeps its data and its model files.
//!
//! An appliance has one place for everything it writes (catalog, indexes,
//! adapters, jobs) and one place for the model weights it reads, so that an
//! administrator can back them up, move them to a larger disk, or run two
//! instances side by side. Both are chosen once, at start-up, in this order:
//!
//! | what | 1st | 2nd | 3rd | default |
//! |---|---|---|---|---|
//! | data | `--data-dir` | `KURA_HOME` | | the platform data dir (`~/.local/share/kura` on Linux) |
//! | models | `--models-dir` | `KURA_MODELS` | the checkout's `models/` when run from one | `<data>/models` |
//!
//! ```
//! use kura::paths::Paths;
//! let paths = Paths::resolve(Some("/srv/kura".into()), Some("/srv/models".into()));
//! assert_eq!(paths.catalog_db(), std::path::Path::new("/srv/kura/catalog.sqlite"));
//! ```

use std::path::{Path, PathBuf};

/// The folders one Kura instance reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Catalog, indexes, adapters, jobs: everything Kura writes.
    pub data_dir: PathBuf,
    /// Model weights (read-only at run time) and `imported.toml`.
    pub models_dir: PathBuf,
}

impl Paths {
    /// Resolves both folders from explicit choices (command-line flags, which
    /// the command line already fills from `KURA_HOME` / `KURA_MODELS`), falling back to
    /// the defaults in the module docs.
    pub fn resolve(data_dir: Option<PathBuf>, models_dir: Option<PathBuf>) -> Self {
        let data_dir = data_dir.unwrap_or_else(default_data_dir);
        let models_dir = models_dir
            .or_else(checkout_models_dir)
            .unwrap_or_else(|| data_dir.join("models"));
        Paths {
            data_dir,
            models_dir,
        }
    }

    /// The SQLite catalog of collections, documents, chunks, jobs.
    pub fn catalog_db(&self) -> PathBuf {
        self.data_dir.join("catalog.sqlite")
    }

    /// The folder of the search indexes (BM25 and vectors).
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// The folder of trained LoRA adapters.
    pub fn adapters_dir(&self) -> PathBuf {
        self.data_dir.join("adapters")
    }

    /// The folder of imported training datasets.
    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// The folder of training jobs (checkpoints, logs, reports).
    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("kura"))
        .unwrap_or_else(|| PathBuf::from(".kura"))
}

/// The `models/` folder of the source checkout this binary was built from, when
/// it still exists (developers and the quick start run from a checkout).
fn checkout_models_dir() -> Option<PathBuf> {
    let dir = checkout_dir().join("models");
    dir.join("models.toml").is_file().then_some(dir)
}

/// The root of the source checkout this build came from (the engine crate is its
/// `engine/` folder): developers' runs find the checkout's models and test data here.
pub fn checkout_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_folders_win() {
        let p = Paths::resolve(Some("/a".into()), Some("/b".into()));
        assert_eq!(p.data_dir, PathBuf::from("/a"));
        assert_eq!(p.models_dir, PathBuf::from("/b"));
        assert_eq!(p.index_dir(), PathBuf::from("/a/index"));
    }

    #[test]
    fn models_default_to_the_checkout() {
        let p = Paths::resolve(Some("/a".into()), None);
        assert_eq!(p.models_dir, checkout_dir().join("models"));
    }
}
