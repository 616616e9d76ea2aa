//! Folder watching: [`FolderWatch`] waits until something under a set of paths
//! changed, so that `kura ingest --watch` (and any other front end) can run the
//! incremental ingest again.
//!
//! Polling, not file-system events: it works the same on network shares (where
//! inotify sees nothing of changes made by other machines), and a look at a folder
//! of manuals is a few `stat` calls. The incremental ingest decides what changed;
//! the fingerprint only says whether to run it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::ingest::pipeline;

/// What a watch compares between two looks: every file's path, size and
/// modification time, or the error that stopped the walk (a share that went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Result<Vec<(PathBuf, u64, Option<SystemTime>)>, String>);

impl Fingerprint {
    /// Takes the fingerprint of `paths` now.
    pub fn of(paths: &[PathBuf]) -> Self {
        Self(
            pipeline::walk(paths, None)
                .map_err(|e| e.to_string())
                .map(|walked| {
                    walked
                        .files
                        .into_iter()
                        .map(|f| {
                            let meta = std::fs::metadata(&f).ok();
                            let size = meta.as_ref().map_or(0, |m| m.len());
                            let mtime = meta.and_then(|m| m.modified().ok());
                            (f, size, mtime)
                        })
                        .collect()
                }),
        )
    }
}

/// Watches a set of files and folders by looking at them every `interval`.
#[derive(Debug)]
pub struct FolderWatch {
    paths: Vec<PathBuf>,
    interval: Duration,
    seen: Fingerprint,
}

impl FolderWatch {
    /// Starts watching: what is there now is the state later looks compare with, so
    /// take it before the first ingest to catch files changed during it.
    pub fn new(paths: &[PathBuf], interval: Duration) -> Self {
        Self {
            paths: paths.to_vec(),
            interval: interval.max(Duration::from_secs(1)),
            seen: Fingerprint::of(paths),
        }
    }

    /// The watched paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Waits until the paths look different from the last time, and remembers how
    /// they look now.
    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(self.interval).await;
            let now = Fingerprint::of(&self.paths);
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_added_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "社内規程 第1条").unwrap();
        let paths = vec![dir.path().to_path_buf()];
        let before = Fingerprint::of(&paths);
        assert_eq!(before, Fingerprint::of(&paths), "nothing changed");
        std::fs::write(dir.path().join("a.txt"), "社内規程 第1条 改訂").unwrap();
        let edited = Fingerprint::of(&paths);
        assert_ne!(before, edited, "a file grew");
        std::fs::write(dir.path().join("b.md"), "# 新しい手順").unwrap();
        assert_ne!(edited, Fingerprint::of(&paths), "a file was added");
    }

    #[tokio::test]
    async fn a_watch_wakes_once_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("manual.txt");
        std::fs::write(&file, "version 1").unwrap();
        let mut watch = FolderWatch::new(&[dir.path().to_path_buf()], Duration::from_secs(1));
        std::fs::write(&file, "version 2, longer").unwrap();
        tokio::time::timeout(Duration::from_secs(30), watch.changed())
            .await
            .expect("the change is seen on the next look");
    }
}
