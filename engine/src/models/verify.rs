//! Checking a model file against its recorded size and sha256.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ModelError, ModelFile};

/// The sha256 of a file, as lower-case hex. Streams the file (model files are
/// gigabytes); `sha2` uses the CPU's SHA extensions where present (~1 GB/s).
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The state of one model file on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FileState {
    /// Present, right size and hash.
    Ok,
    /// Not there.
    Missing,
    /// Wrong size.
    SizeMismatch {
        /// Size on disk.
        actual: u64,
    },
    /// Right size, wrong content.
    HashMismatch {
        /// sha256 on disk.
        actual: String,
    },
    /// Could not be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// The result of checking one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    /// Where the file is expected.
    pub path: PathBuf,
    /// The recorded sha256.
    pub expected_sha256: String,
    /// The recorded size.
    pub expected_size: u64,
    /// What was found.
    #[serde(flatten)]
    pub state: FileState,
}

impl FileCheck {
    /// Whether the file is intact.
    pub fn is_ok(&self) -> bool {
        self.state == FileState::Ok
    }

    /// Turns a failed check into the error a loader reports.
    pub fn into_result(self) -> Result<(), ModelError> {
        match self.state {
            FileState::Ok => Ok(()),
            FileState::Missing => Err(ModelError::Missing { path: self.path }),
            FileState::SizeMismatch { actual } => Err(ModelError::SizeMismatch {
                path: self.path,
                expected: self.expected_size,
                actual,
            }),
            FileState::HashMismatch { actual } => Err(ModelError::HashMismatch {
                path: self.path,
                expected: self.expected_sha256,
                actual,
            }),
            FileState::Unreadable { error } => {
                Err(ModelError::io(&self.path, std::io::Error::other(error)))
            }
        }
    }
}

/// Checks one file: existence, then size (cheap), then sha256.
pub(crate) fn check_file(path: &Path, file: &ModelFile) -> FileCheck {
    let state = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
        Err(e) => FileState::Unreadable {
            error: e.to_string(),
        },
        Ok(meta) if meta.len() != file.size => FileState::SizeMismatch { actual: meta.len() },
        Ok(_) => match sha256_file(path) {
            Ok(actual) if actual == file.sha256 => FileState::Ok,
            Ok(actual) => FileState::HashMismatch { actual },
            Err(e) => FileState::Unreadable {
                error: e.to_string(),
            },
        },
    };
    FileCheck {
        path: path.to_owned(),
        expected_sha256: file.sha256.clone(),
        expected_size: file.size,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn one_flipped_byte_is_a_hash_mismatch_naming_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, b"abc").unwrap();
        let file = ModelFile {
            path: "m.gguf".into(),
            sha256: sha256_file(&p).unwrap(),
            size: 3,
            parts: vec![],
        };
        assert!(check_file(&p, &file).is_ok());
        std::fs::write(&p, b"abd").unwrap();
        let err = check_file(&p, &file).into_result().unwrap_err().to_string();
        assert!(err.contains("m.gguf"), "{err}");
        assert!(err.contains(&file.sha256), "{err}");
        assert!(err.contains(&sha256_file(&p).unwrap()), "{err}");
    }
}
