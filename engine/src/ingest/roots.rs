//! Source roots: the folders a server may read documents from.
//!
//! Paths that reach the engine over the network (`POST /api/ingest`, a dataset
//! import, a `job.toml` submitted from the Training screen) name files **on the
//! server**. Without a bound, any client could have the server read `/etc/shadow`
//! into a collection and show it back as a "page". So a server reads only inside its
//! source roots: the folders its administrator named (`kura serve --source-root`,
//! `KURA_SOURCE_ROOTS`), and the folders the administrator ingested at the shell
//! with `kura ingest`, which the catalog records per collection. A server with no
//! roots reads nothing it is sent.
//!
//! A path is checked after `.` and `..` are taken out and every symlink is followed,
//! so neither `/srv/docs/../../etc/passwd` nor a link inside a root that points out
//! of it gets through. A path outside every root gets the same answer whether it
//! exists or not, so the check cannot be used to probe the server's disk.
//!
//! ```
//! use kura::ingest::roots::{SourceRoots, RootError};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("規程.txt"), "第1条").unwrap();
//! let roots = SourceRoots::new(&[dir.path().to_path_buf()]).unwrap();
//! assert!(roots.resolve(&dir.path().join("規程.txt")).is_ok());
//! assert!(matches!(roots.resolve("/etc/hostname".as_ref()), Err(RootError::Outside(_))));
//! ```

use std::path::{Component, Path, PathBuf};

/// Why a path may not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// Relative paths mean nothing on a server.
    #[error("{0}: give the full path on the server, starting with / / サーバー上の絶対パスを指定してください")]
    NotAbsolute(PathBuf),
    /// Outside every source root (whether or not it exists: the answer is the same).
    #[error(
        "{0} is not inside a source root of this server; the administrator adds folders with \
         `kura serve --source-root DIR` / このパスはサーバーの取り込み対象フォルダ(ソースルート)の外にあります"
    )]
    Outside(PathBuf),
    /// Inside a root, but not there.
    #[error("{0} does not exist on the server / サーバー上にこのパスはありません")]
    Missing(PathBuf),
    /// A configured root is not a readable folder.
    #[error("source root {path}: {reason} / ソースルートを開けません")]
    BadRoot {
        /// The root as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One root, as given (made absolute, `..` removed) and with its symlinks resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Root {
    given: PathBuf,
    real: PathBuf,
}

/// A set of folders that may be read. Empty: nothing may be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRoots {
    roots: Vec<Root>,
}

/// `path` with `.` and `..` taken out, without touching the disk (`..` at `/` stays `/`).
pub fn lexical_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl SourceRoots {
    /// Roots from folders; each must exist (a typo in a flag should stop the server,
    /// not make it read nothing in silence).
    pub fn new(dirs: &[PathBuf]) -> Result<Self, RootError> {
        let mut roots = Self::default();
        for d in dirs {
            roots.add(d)?;
        }
        Ok(roots)
    }

    /// Adds a folder (or a single file: a document ingested by name).
    pub fn add(&mut self, dir: &Path) -> Result<(), RootError> {
        let absolute = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| RootError::BadRoot {
                    path: dir.to_path_buf(),
                    reason: e.to_string(),
                })?
                .join(dir)
        };
        let real = absolute.canonicalize().map_err(|e| RootError::BadRoot {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let root = Root {
            given: lexical_normal(&absolute),
            real,
        };
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
        Ok(())
    }

    /// Adds a folder recorded earlier with its symlinks resolved (the catalog's
    /// roots), without touching the disk: a folder that is gone matches nothing.
    pub fn add_resolved(&mut self, real: &Path) {
        let root = Root {
            given: real.to_path_buf(),
            real: real.to_path_buf(),
        };
        if real.is_absolute() && !self.roots.contains(&root) {
            self.roots.push(root);
        }
    }

    /// The roots together with `other`'s.
    pub fn union(&self, other: &SourceRoots) -> SourceRoots {
        let mut out = self.clone();
        for r in &other.roots {
            if !out.roots.contains(r) {
                out.roots.push(r.clone());
            }
        }
        out
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The folders, symlinks resolved (for messages and `/api/health`).
    pub fn folders(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.real.clone()).collect()
    }

    /// Whether an already resolved path (no symlinks, no `..`) lies inside a root.
    pub fn contains_real(&self, real: &Path) -> bool {
        self.roots.iter().any(|r| real.starts_with(&r.real))
    }

    /// The path with every symlink resolved, if it may be read; see the module docs.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, RootError> {
        if !path.is_absolute() {
            return Err(RootError::NotAbsolute(path.to_path_buf()));
        }
        let lexical = lexical_normal(path);
        // Decided before the disk is touched, so nothing outside is even looked at.
        let plausible = self
            .roots
            .iter()
            .any(|r| lexical.starts_with(&r.given) || lexical.starts_with(&r.real));
        if !plausible {
            return Err(RootError::Outside(path.to_path_buf()));
        }
        let real = lexical
            .canonicalize()
            .map_err(|_| RootError::Missing(path.to_path_buf()))?;
        if self.contains_real(&real) {
            Ok(real)
        } else {
            Err(RootError::Outside(path.to_path_buf()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_symlinks_out_of_a_root_are_refused_like_missing_paths_outside() {
        let base = tempfile::tempdir().unwrap();
        let docs = base.path().join("docs");
        let secret = base.path().join("secret");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(docs.join("sub/a.txt"), "a").unwrap();
        std::fs::write(secret.join("key.txt"), "k").unwrap();
        std::os::unix::fs::symlink(&secret, docs.join("out")).unwrap();
        let roots = SourceRoots::new(std::slice::from_ref(&docs)).unwrap();

        let ok = roots.resolve(&docs.join("sub/../sub/a.txt")).unwrap();
        assert_eq!(ok, docs.canonicalize().unwrap().join("sub/a.txt"));
        let sneaky = docs.join("sub/../../secret/key.txt");
        assert_eq!(roots.resolve(&sneaky), Err(RootError::Outside(sneaky)));
        let linked = docs.join("out/key.txt");
        assert_eq!(roots.resolve(&linked), Err(RootError::Outside(linked)));
        // Outside: the same error for a file that exists and one that does not.
        let exists = secret.join("key.txt");
        let absent = secret.join("nothing.txt");
        assert!(matches!(roots.resolve(&exists), Err(RootError::Outside(_))));
        assert!(matches!(roots.resolve(&absent), Err(RootError::Outside(_))));
        assert_eq!(
            roots
                .resolve(&exists)
                .unwrap_err()
                .to_string()
                .replace("key", "nothing"),
            roots.resolve(&absent).unwrap_err().to_string()
        );
        // Inside: a missing file may be named as missing.
        let missing = docs.join("gone.txt");
        assert_eq!(roots.resolve(&missing), Err(RootError::Missing(missing)));
        assert!(matches!(
            roots.resolve(Path::new("docs/sub/a.txt")),
            Err(RootError::NotAbsolute(_))
        ));
    }

    #[test]
    fn no_roots_read_nothing_and_a_missing_root_is_an_error() {
        let none = SourceRoots::default();
        assert!(matches!(
            none.resolve(Path::new("/etc/hostname")),
            Err(RootError::Outside(_))
        ));
        assert!(matches!(
            SourceRoots::new(&[PathBuf::from("/no/such/folder/kura")]),
            Err(RootError::BadRoot { .. })
        ));
    }

    #[test]
    fn a_root_given_through_a_symlink_accepts_paths_written_either_way() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("a.md"), "# a").unwrap();
        let alias = base.path().join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        let roots = SourceRoots::new(std::slice::from_ref(&alias)).unwrap();
        assert!(roots.resolve(&alias.join("a.md")).is_ok());
        assert!(roots.resolve(&real.join("a.md")).is_ok());
        assert_eq!(
            lexical_normal(Path::new("/../a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
