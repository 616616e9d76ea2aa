//! Nearest-neighbour search over chunk embeddings, in hnsw_rs.
//!
//! The graph is kept in memory and dumped to disk at each commit into a fresh
//! folder that replaces the old one by rename, so a crash leaves either the old
//! or the new dump, never half of one. Next to the dump, `state.json` records
//! the index-log position, each point's collection (for filtering inside the
//! search: access control) and the tombstones.
//!
//! hnsw graphs cannot delete points: a removed chunk becomes a tombstone that the
//! search filter skips, and when tombstones pass a quarter of the points the
//! graph is rebuilt from the live vectors ([`VectorIndex::needs_compaction`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Distance, Hnsw};
use serde::{Deserialize, Serialize};

use super::IndexError;

const MAX_CONNECTIONS: usize = 24;
const MAX_LAYERS: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const BASENAME: &str = "vectors";

/// Cosine distance of L2-normalised vectors, `1 - a·b`, clamped at 0.
///
/// anndists' `DistDot` asserts `a·b <= 1`, which rounding breaks for a vector
/// and itself (1.0000001): a panic inside a search. This one clamps instead,
/// and sums in 8 lanes so the compiler vectorises it.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                lanes[i] += x[i] * y[i];
            }
        }
        (1.0 - (lanes.iter().sum::<f32>() + tail)).max(0.0)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    seq: i64,
    dim: usize,
    /// chunk id → collection id, for every point in the graph (tombstoned too).
    collections: HashMap<i64, i64>,
    tombstones: HashSet<i64>,
}

/// The vector index.
pub struct VectorIndex {
    dir: PathBuf,
    graph: Option<Hnsw<'static, f32, UnitCosine>>,
    state: State,
    dirty: bool,
}

fn new_graph(capacity: usize) -> Hnsw<'static, f32, UnitCosine> {
    Hnsw::new(
        MAX_CONNECTIONS,
        capacity.max(1024),
        MAX_LAYERS,
        EF_CONSTRUCTION,
        UnitCosine,
    )
}

impl VectorIndex {
    /// Opens the index kept in `dir` (empty if there is none yet).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let current = dir.join("current");
        let old = dir.join("previous");
        // A crash between the two renames of a commit leaves only `previous`.
        if !current.exists() && old.exists() {
            std::fs::rename(&old, &current).map_err(|e| IndexError::io(&old, e))?;
        }
        let state_path = current.join("state.json");
        if !state_path.is_file() {
            return Ok(VectorIndex {
                dir: dir.to_owned(),
                graph: None,
                state: State::default(),
                dirty: false,
            });
        }
        let state: State = serde_json::from_slice(
            &std::fs::read(&state_path).map_err(|e| IndexError::io(&state_path, e))?,
        )
        .map_err(|e| IndexError::Vector(format!("{}: {e}", state_path.display())))?;
        let graph = if state.collections.is_empty() {
            None
        } else {
            // HnswIo must outlive the graph it loads; the index lives as long as
            // the process, so it is leaked once per open (a few hundred bytes).
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&current, BASENAME)));
            let mut g: Hnsw<'static, f32, UnitCosine> = io
                .load_hnsw()
                .map_err(|e| IndexError::Vector(format!("loading {}: {e}", current.display())))?;
            g.set_searching_mode(true);
            Some(g)
        };
        Ok(VectorIndex {
            dir: dir.to_owned(),
            graph,
            state,
            dirty: false,
        })
    }

    /// The index-log position of the last commit.
    pub fn committed_seq(&self) -> i64 {
        self.state.seq
    }

    /// Adds a chunk's (L2-normalised) embedding.
    pub fn add(
        &mut self,
        chunk_id: i64,
        collection_id: i64,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        if self.state.dim == 0 {
            self.state.dim = vector.len();
        } else if self.state.dim != vector.len() {
            return Err(IndexError::Vector(format!(
                "embedding of chunk {chunk_id} has {} dimensions, the index has {}: re-index with one embedding model",
                vector.len(),
                self.state.dim
            )));
        }
        if self.state.collections.contains_key(&chunk_id) {
            return Ok(()); // already there (replayed log entry)
        }
        let graph = self.graph.get_or_insert_with(|| new_graph(100_000));
        graph.set_searching_mode(false);
        graph.insert_slice((vector, chunk_id as usize));
        self.state.collections.insert(chunk_id, collection_id);
        self.dirty = true;
        Ok(())
    }

    /// Adds many embeddings at once, in parallel.
    pub fn add_many(&mut self, items: &[(i64, i64, Vec<f32>)]) -> Result<(), IndexError> {
        let fresh: Vec<_> = items
            .iter()
            .filter(|(id, _, _)| !self.state.collections.contains_key(id))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        for (id, _, v) in &fresh {
            if self.state.dim == 0 {
                self.state.dim = v.len();
            }
            if v.len() != self.state.dim {
                return Err(IndexError::Vector(format!(
                    "embedding of chunk {id} has {} dimensions, the index has {}",
                    v.len(),
                    self.state.dim
                )));
            }
        }
        let cap = self.state.collections.len() + fresh.len();
        let graph = self.graph.get_or_insert_with(|| new_graph(cap));
        graph.set_searching_mode(false);
        let data: Vec<(&[f32], usize)> = fresh
            .iter()
            .map(|(id, _, v)| (v.as_slice(), *id as usize))
            .collect();
        graph.parallel_insert_slice(&data);
        for (id, c, _) in fresh {
            self.state.collections.insert(*id, *c);
        }
        self.dirty = true;
        Ok(())
    }

    /// Marks a chunk as removed.
    pub fn remove(&mut self, chunk_id: i64) {
        if self.state.collections.contains_key(&chunk_id) && self.state.tombstones.insert(chunk_id)
        {
            self.dirty = true;
        }
    }

    /// Whether enough points are tombstones that the graph should be rebuilt.
    pub fn needs_compaction(&self) -> bool {
        let n = self.state.collections.len();
        n > 0 && self.state.tombstones.len() * 4 > n
    }

    /// Ids of the live points (for rebuilding and checks).
    pub fn chunk_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .state
            .collections
            .keys()
            .filter(|id| !self.state.tombstones.contains(id))
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Drops everything (before a rebuild).
    pub fn clear(&mut self) {
        self.graph = None;
        self.state = State {
            seq: self.state.seq,
            ..State::default()
        };
        self.dirty = true;
    }

    /// Writes the graph and state to disk (atomically) at index-log position `seq`.
    pub fn commit(&mut self, seq: i64) -> Result<(), IndexError> {
        if !self.dirty && self.state.seq == seq {
            return Ok(());
        }
        self.state.seq = seq;
        let staging = self.dir.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| IndexError::io(&staging, e))?;
        if let Some(graph) = &self.graph {
            let name = graph
                .file_dump(&staging, BASENAME)
                .map_err(|e| IndexError::Vector(format!("writing {}: {e}", staging.display())))?;
            if name != BASENAME {
                return Err(IndexError::Vector(format!(
                    "hnsw dump chose the name {name}"
                )));
            }
        }
        let state_path = staging.join("state.json");
        let bytes =
            serde_json::to_vec(&self.state).map_err(|e| IndexError::Vector(e.to_string()))?;
        std::fs::write(&state_path, bytes).map_err(|e| IndexError::io(&state_path, e))?;
        let current = self.dir.join("current");
        let previous = self.dir.join("previous");
        let _ = std::fs::remove_dir_all(&previous);
        if current.exists() {
            std::fs::rename(&current, &previous).map_err(|e| IndexError::io(&current, e))?;
        }
        std::fs::rename(&staging, &current).map_err(|e| IndexError::io(&staging, e))?;
        let _ = std::fs::remove_dir_all(&previous);
        if let Some(g) = self.graph.as_mut() {
            g.set_searching_mode(true);
        }
        self.dirty = false;
        Ok(())
    }

    /// The `k` nearest chunks to `query` among the given collections, skipping
    /// tombstones. Returns (chunk id, cosine similarity), best first.
    pub fn search(
        &self,
        query: &[f32],
        collections: &[i64],
        k: usize,
        ef: usize,
    ) -> Vec<(i64, f32)> {
        let Some(graph) = &self.graph else {
            return Vec::new();
        };
        if query.len() != self.state.dim {
            return Vec::new();
        }
        let allowed: HashSet<i64> = collections.iter().copied().collect();
        let filter = |id: &usize| {
            let id = *id as i64;
            !self.state.tombstones.contains(&id)
                && self
                    .state
                    .collections
                    .get(&id)
                    .is_some_and(|c| allowed.contains(c))
        };
        graph
            .search_filter(query, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| (n.d_id as i64, 1.0 - n.distance))
            .collect()
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.state.collections.len() - self.state.tombstones.len()
    }

    /// Whether no live point exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
