//! `kura models import`: registering a GGUF a company brings on a USB stick.
//!
//! The file is checked to be a complete GGUF (header, metadata and every tensor's
//! bytes inside the file), copied into `<models>/imported/`, hashed while
//! copying, and recorded in `imported.toml`, so that from then on it is verified
//! like a default model before every load.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ModelEntry, ModelFile, Origin, Role};
use super::{ModelError, Registry};

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The name to register it under (default: from the GGUF's `general.name`,
    /// else the file stem).
    pub name: Option<String>,
    /// Licence, when the GGUF does not declare one.
    pub licence: Option<String>,
}

/// What a GGUF says about itself.
struct GgufSummary {
    name: Option<String>,
    architecture: String,
    licence: Option<String>,
    tensors: usize,
}

fn not_importable(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::NotImportable {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the GGUF header and checks that every tensor lies inside the file.
fn inspect_gguf(path: &Path) -> Result<GgufSummary, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(not_importable(path, "not a GGUF file (no GGUF magic)"));
    }
    let mut file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?);
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| not_importable(path, format!("unreadable GGUF header: {e}")))?;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = elems / block * info.ggml_dtype.type_size() as u64;
        let end = content.tensor_data_offset + info.offset + bytes;
        if end > len {
            return Err(not_importable(
                path,
                format!("truncated: tensor '{name}' ends at byte {end}, the file has {len}"),
            ));
        }
    }
    let text = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let architecture = text("general.architecture")
        .ok_or_else(|| not_importable(path, "no general.architecture in the GGUF metadata"))?;
    Ok(GgufSummary {
        name: text("general.name"),
        architecture,
        licence: text("general.license"),
        tensors: content.tensor_infos.len(),
    })
}

/// Turns a free-form model name into a safe registry and file name.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.replace("..", "-").trim_matches('-').to_owned()
}

/// Copies `src` to `dst` (through a `.part` file), returning its sha256 and size.
fn copy_hashing(src: &Path, dst: &Path) -> Result<(String, u64), ModelError> {
    let mut input = std::fs::File::open(src).map_err(|e| ModelError::io(src, e))?;
    let partial = dst.with_extension("gguf.part");
    let mut output = std::fs::File::create(&partial).map_err(|e| ModelError::io(&partial, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| ModelError::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| ModelError::io(&partial, e))?;
        size += n as u64;
    }
    output.sync_all().map_err(|e| ModelError::io(&partial, e))?;
    std::fs::rename(&partial, dst).map_err(|e| ModelError::io(dst, e))?;
    Ok((hex::encode(hasher.finalize()), size))
}

impl Registry {
    /// Imports a chat GGUF: validates it, copies it into `<models>/imported/`,
    /// and records its sha256 in `imported.toml`. Returns the new entry.
    pub fn import(&mut self, src: &Path, opts: &ImportOptions) -> Result<ModelEntry, ModelError> {
        let summary = inspect_gguf(src)?;
        let stem = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let name = slug(
            opts.name
                .as_deref()
                .or(summary.name.as_deref())
                .unwrap_or(&stem),
        );
        if name.is_empty() {
            return Err(not_importable(src, "give it a name with --name"));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(not_importable(
                src,
                format!("a model named '{name}' is already registered; choose another with --name"),
            ));
        }
        let rel = PathBuf::from("imported").join(format!("{name}.gguf"));
        let dst = self.models_dir.join(&rel);
        std::fs::create_dir_all(dst.parent().expect("has a parent"))
            .map_err(|e| ModelError::io(&dst, e))?;
        let (sha256, size) = copy_hashing(src, &dst)?;
        let entry = ModelEntry {
            name,
            role: Role::Chat,
            default: false,
            format: "gguf".into(),
            description: format!(
                "{} ({} tensors, architecture {})",
                summary.name.as_deref().unwrap_or(&stem),
                summary.tensors,
                summary.architecture
            ),
            licence: opts
                .licence
                .clone()
                .or(summary.licence)
                .unwrap_or_else(|| "unknown (not declared in the GGUF)".into()),
            source: format!("imported from {}", src.display()),
            caveat: None,
            origin: Origin::Imported,
            files: vec![ModelFile {
                path: rel.to_string_lossy().into_owned(),
                sha256,
                size,
                parts: vec![],
            }],
        };
        let manifest_path = self.models_dir.join(Self::IMPORTED);
        let mut manifest = if manifest_path.is_file() {
            Manifest::load(&manifest_path, Origin::Imported)?
        } else {
            Manifest::default()
        };
        manifest.model.push(entry.clone());
        manifest.save(&manifest_path)?;
        self.entries.push(entry.clone());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("Kura Company Model v1/β"), "kura-company-model-v1");
        assert_eq!(slug("../x"), "x");
    }

    #[test]
    fn a_non_gguf_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.gguf");
        std::fs::write(&p, b"hello").unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let err = reg
            .import(&p, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notes.gguf") && err.contains("not a GGUF"),
            "{err}"
        );
    }
}
