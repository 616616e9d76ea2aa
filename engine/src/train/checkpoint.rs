//! Checkpoints: everything a killed training job needs to continue as if it had
//! never stopped, written so that a crash can never leave a half-written one.
//!
//! A checkpoint is one folder, `checkpoints/step-000050/`:
//!
//! | file | what |
//! |---|---|
//! | `adapter/` | the adapter so far, in PEFT format (usable on its own) |
//! | `trainer.safetensors` | the exact trainable tensors (`blk.0.attn_q.A`, …) and AdamW's moments (`….m`, `….v`) |
//! | `state.json` | [`TrainState`]: step, data position, RNG, schedule, the loss history |
//!
//! It is written as `step-000050.tmp/` (every file fsynced) and then renamed into
//! place; a folder without `.tmp` is therefore always complete, and
//! [`latest_checkpoint`] ignores leftovers. Randomness is counter-based: the data order
//! of an epoch and the dropout masks of a step are derived from `(seed, epoch)` and
//! `(seed, step)`, so "the RNG state" is just the seed and the step counter, and the
//! data position is the number of examples consumed.

use super::TrainError;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder, fsync and
/// rename: readers see the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves tensors as safetensors atomically (temporary file, fsync, rename).
pub fn save_safetensors_atomic(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    let tmp = tmp_path(path);
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

/// Where a job stands, saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training examples consumed (the data position; the epoch is
    /// `examples_seen / train_examples`).
    pub examples_seen: u64,
    /// The job's seed (data order, LoRA init, dropout).
    pub seed: u64,
    /// The learning-rate schedule (its position is `step`).
    pub schedule: super::optim::LrSchedule,
    /// The loss of every step so far, in order.
    pub losses: Vec<f64>,
    /// Evaluation losses so far: (step, loss).
    #[serde(default)]
    pub eval_losses: Vec<(u64, f64)>,
    /// Seconds of training and evaluation so far (for the ETA).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// The folder name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// The complete checkpoints under `dir` (oldest first).
pub fn checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("step-") {
            if let Ok(step) = n.parse::<u64>() {
                if entry.path().join("state.json").is_file() {
                    out.push((step, entry.path()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint under `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<(u64, PathBuf)>, TrainError> {
    Ok(checkpoints(dir)?.pop())
}

/// A checkpoint being assembled in a temporary folder.
#[derive(Debug)]
pub struct CheckpointWriter {
    tmp: PathBuf,
    dest: PathBuf,
}

impl CheckpointWriter {
    /// Starts checkpoint `step` under `dir` (removing a stale temporary folder).
    pub fn begin(dir: &Path, step: u64) -> Result<Self, TrainError> {
        let dest = dir.join(checkpoint_name(step));
        let tmp = dir.join(format!("{}.tmp", checkpoint_name(step)));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        Ok(Self { tmp, dest })
    }

    /// The temporary folder to write files into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Writes `state.json`, fsyncs the folder and renames it into place.
    pub fn commit(self, state: &TrainState) -> Result<PathBuf, TrainError> {
        let json = serde_json::to_string_pretty(state).expect("serialisable");
        let state_path = self.tmp.join("state.json");
        write_atomic(&state_path, json.as_bytes()).map_err(|e| TrainError::io(&state_path, e))?;
        if let Ok(d) = std::fs::File::open(&self.tmp) {
            let _ = d.sync_all();
        }
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest).map_err(|e| TrainError::io(&self.dest, e))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| TrainError::io(&self.dest, e))?;
        if let Some(parent) = self.dest.parent() {
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(self.dest)
    }
}

/// Reads a checkpoint's state.
pub fn read_state(checkpoint: &Path) -> Result<TrainState, TrainError> {
    let path = checkpoint.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))
}

/// Removes all but the newest `keep` checkpoints under `dir`.
pub fn prune(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = checkpoints(dir)?;
    if all.len() > keep {
        for (_, path) in &all[..all.len() - keep] {
            std::fs::remove_dir_all(path).map_err(|e| TrainError::io(path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            examples_seen: step * 4,
            seed: 1,
            schedule: super::super::optim::LrSchedule {
                peak: 1e-3,
                warmup_steps: 1,
                total_steps: 10,
            },
            losses: vec![1.0; step as usize],
            eval_losses: vec![],
            elapsed_s: 0.0,
        }
    }

    #[test]
    fn only_committed_checkpoints_count() {
        let dir = tempfile::tempdir().unwrap();
        for step in [5, 10] {
            CheckpointWriter::begin(dir.path(), step)
                .unwrap()
                .commit(&state(step))
                .unwrap();
        }
        // A crash half-way through writing step 15 leaves only a .tmp folder.
        let torn = CheckpointWriter::begin(dir.path(), 15).unwrap();
        std::fs::write(torn.dir().join("trainer.safetensors"), b"partial").unwrap();
        drop(torn);
        let (step, path) = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(step, 10);
        assert_eq!(read_state(&path).unwrap(), state(10));
        prune(dir.path(), 1).unwrap();
        assert_eq!(
            checkpoints(dir.path())
                .unwrap()
                .iter()
                .map(|c| c.0)
                .collect::<Vec<_>>(),
            vec![10]
        );
    }
}
