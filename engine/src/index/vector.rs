//! Nearest-neighbour search over chunk embeddings: an exact int8 scan, and an
//! hnsw_rs graph for indexes past [`EXACT_MAX`] points.
//!
//! **Storage.** Every vector lives in one append-only row file (`rows-<gen>.bin`:
//! chunk id, collection id, the f32 values), and `current/state.json` says how many
//! of its rows the last commit holds, plus the index-log position and the
//! tombstones. A commit appends the new rows, syncs them, and only then renames a
//! new `state.json` into place (through a staging folder, as before), so a crash
//! leaves the old commit or the new one; rows past the committed count are cut off
//! by the next commit. Earlier versions kept the vectors only in the hnsw dump, rewritten whole
//! at every commit, and building the graph was most of an ingest: about 9 ms per
//! 384-d point on two cores, 15 minutes at 100k chunks, 2.5 hours at 1M — for a
//! graph that searches below `EXACT_MAX` never walk.
//!
//! **Search.** Up to [`EXACT_MAX`] points every vector is scanned as int8 codes
//! (one scale per vector: a quarter of the bytes of f32, and the scan is bound by
//! memory bandwidth) and the best candidates are re-scored in f32 ([`Flat`]). That
//! is both faster and better there: on 10k random vectors the graph search took
//! 5.8 ms at ef = 64, the f32 scan under 1 ms; and an approximate search of a
//! freshly built graph lost about 1.5 points of nDCG@10 on JSQuAD against exact
//! search (see the README). Past `EXACT_MAX` the graph is built once from the rows
//! (the ingest that crosses the line pays for it), kept up to date, dumped beside
//! the state at each commit (hard-linked when unchanged) and walked instead.
//!
//! **Deletions.** A removed chunk becomes a tombstone that both searches skip; when
//! tombstones pass a quarter of the points the index is rebuilt from the live
//! vectors into a new row file ([`VectorIndex::needs_compaction`]).

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
/// Points up to which searches scan every vector instead of walking the graph.
///
/// The scan's cost grows with the points: `kura bench index` on two cores measured
/// 1.7 ms at 100k and 24 ms at 1M (int8, 384-d), so 1.5M keeps a hybrid query near
/// the 50 ms budget. Past it the graph is built — hours on two cores at that size
/// (≈ 9 ms per point), once, in the ingest that crosses the line.
pub const EXACT_MAX: usize = 1_500_000;
/// Points per thread from which the exact scan is split across threads.
const SCAN_PARALLEL_MIN: usize = 8_192;
/// Candidates of the int8 scan re-scored in f32, per requested hit (at least 64).
const RERANK_PER_HIT: usize = 4;

/// Every point's vector in one array, for the exact scan of small indexes.
///
/// The scan reads int8 codes (one scale per vector: a quarter of the bytes of
/// f32, and the scan is bound by memory bandwidth), keeps the best
/// `max(4k, 64)` candidates, and re-scores those in f32 — so the order returned
/// is the exact one unless int8 rounding pushed a true top-k point below
/// hundreds of others (rounding moves a similarity by well under 0.01, the
/// bound `int8_codes_keep_the_similarity_within_rounding` holds it to).
#[derive(Debug, Default)]
struct Flat {
    ids: Vec<i64>,
    collections: Vec<i64>,
    /// `ids.len() × dim` values (tombstones stay; the state filters them).
    data: Vec<f32>,
    /// The same vectors as int8 codes, `ids.len() × dim`.
    codes: Vec<i8>,
    /// Each vector's code scale: value ≈ code × scale.
    scales: Vec<f32>,
}

/// Appends `v` as int8 codes to `out` and returns the scale.
fn quantize(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    out.extend(v.iter().map(|x| (x / scale).round() as i8));
    scale
}

/// Integer dot product of two code vectors, in 32 lanes so that it vectorises
/// (one `vpmaddwd` per 16 codes with AVX2).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x as i32 * *y as i32)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            lanes[i] += x[i] as i32 * y[i] as i32;
        }
    }
    lanes.iter().sum::<i32>() + tail
}

impl Flat {
    fn push(&mut self, id: i64, collection: i64, v: &[f32]) {
        self.ids.push(id);
        self.collections.push(collection);
        self.data.extend_from_slice(v);
        let scale = quantize(v, &mut self.codes);
        self.scales.push(scale);
    }

    /// The `k` best (id, similarity) among points whose collection is allowed and
    /// that are not tombstones, best first.
    fn search(
        &self,
        query: &[f32],
        allowed: &[i64],
        tombstones: &HashSet<i64>,
        k: usize,
    ) -> Vec<(i64, f32)> {
        let dim = query.len();
        let n = self.ids.len();
        if k == 0 || n == 0 {
            return Vec::new();
        }
        let mut qcodes = Vec::with_capacity(dim);
        let qscale = quantize(query, &mut qcodes);
        let r = (k * RERANK_PER_HIT).max(64);
        // Best `r` (row, approximate similarity) of a range of rows.
        let scan = |range: std::ops::Range<usize>| -> Vec<(usize, f32)> {
            let mut best: Vec<(usize, f32)> = Vec::with_capacity(r + 1);
            for i in range {
                if !allowed.contains(&self.collections[i]) {
                    continue;
                }
                let dot = dot_i8(&qcodes, &self.codes[i * dim..(i + 1) * dim]);
                let sim = dot as f32 * qscale * self.scales[i];
                if best.len() == r && best[r - 1].1 >= sim {
                    continue;
                }
                if tombstones.contains(&self.ids[i]) {
                    continue;
                }
                let at = best.partition_point(|(_, s)| *s >= sim);
                best.insert(at, (i, sim));
                best.truncate(r);
            }
            best
        };
        let threads = rayon::current_num_threads()
            .min(n / SCAN_PARALLEL_MIN)
            .max(1);
        let candidates: Vec<(usize, f32)> = if threads == 1 {
            scan(0..n)
        } else {
            use rayon::prelude::*;
            let per = n.div_ceil(threads);
            (0..threads)
                .into_par_iter()
                .flat_map_iter(|t| scan(t * per..((t + 1) * per).min(n)))
                .collect()
        };
        let mut exact: Vec<(i64, f32)> = candidates
            .into_iter()
            .map(|(i, _)| {
                let sim = 1.0 - UnitCosine.eval(query, &self.data[i * dim..(i + 1) * dim]);
                (self.ids[i], sim)
            })
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        exact.truncate(k);
        exact
    }
}

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

/// Version of the on-disk layout written by this build: 2 = own row file, graph
/// dump only past `EXACT_MAX`; 1 (or absent) = hnsw dump of every point, with the
/// collections in `state.json`.
const FORMAT: u32 = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    format: u32,
    seq: i64,
    dim: usize,
    /// Which row file holds the vectors (`rows-<generation>.bin`); a compaction
    /// starts the next one.
    #[serde(default)]
    generation: u64,
    /// Rows of that file that belong to this commit (a longer file is the tail of
    /// an interrupted commit).
    #[serde(default)]
    rows: usize,
    /// Format 1 only: chunk id → collection id (format 2 keeps it in the rows).
    #[serde(default, skip_serializing)]
    collections: HashMap<i64, i64>,
    tombstones: HashSet<i64>,
}

/// The vector index.
pub struct VectorIndex {
    dir: PathBuf,
    state: State,
    /// Every point, tombstones included, in insertion order.
    flat: Flat,
    /// chunk id → row of `flat`.
    row_of: HashMap<i64, usize>,
    /// Rows of `flat` already in the row file.
    written: usize,
    /// The hnsw graph, present only past `exact_max` points.
    graph: Option<Hnsw<'static, f32, UnitCosine>>,
    /// Whether the graph changed since it was last dumped.
    graph_dirty: bool,
    dirty: bool,
    exact_max: usize,
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

/// Bytes of one row of the row file: chunk id, collection id (both i64 LE), then
/// `dim` f32 LE.
fn row_bytes(dim: usize) -> usize {
    16 + 4 * dim
}

fn rows_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("rows-{generation}.bin"))
}

fn graph_files(folder: &Path) -> [PathBuf; 2] {
    [
        folder.join(format!("{BASENAME}.hnsw.graph")),
        folder.join(format!("{BASENAME}.hnsw.data")),
    ]
}

/// Loads the graph dumped in `folder`.
fn load_graph(folder: &Path) -> Result<Hnsw<'static, f32, UnitCosine>, IndexError> {
    // HnswIo must outlive the graph it loads; the index lives as long as the
    // process, so it is leaked once per load (a few hundred bytes).
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(folder, BASENAME)));
    let mut g: Hnsw<'static, f32, UnitCosine> = io
        .load_hnsw()
        .map_err(|e| IndexError::Vector(format!("loading {}: {e}", folder.display())))?;
    g.set_searching_mode(true);
    Ok(g)
}

impl VectorIndex {
    fn empty(dir: &Path, exact_max: usize) -> Self {
        VectorIndex {
            dir: dir.to_owned(),
            state: State {
                format: FORMAT,
                ..State::default()
            },
            flat: Flat::default(),
            row_of: HashMap::new(),
            written: 0,
            graph: None,
            graph_dirty: false,
            dirty: false,
            exact_max,
        }
    }

    /// Opens the index kept in `dir` (empty if there is none yet).
    ///
    /// A row file shorter than its commit says (damaged on disk) is not an error the
    /// user can act on: the index starts empty at log position 0 and the next
    /// [`super::SearchIndex::sync`] re-adds every vector from the catalog.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        Self::open_with_exact_max(dir, EXACT_MAX)
    }

    /// [`open`](Self::open) with another point count up to which searches are exact
    /// (tests and benchmarks; 0 always walks the graph).
    pub fn open_with_exact_max(dir: &Path, exact_max: usize) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let current = dir.join("current");
        let old = dir.join("previous");
        // A crash between the two renames of a commit leaves only `previous`.
        if !current.exists() && old.exists() {
            std::fs::rename(&old, &current).map_err(|e| IndexError::io(&old, e))?;
        }
        let state_path = current.join("state.json");
        if !state_path.is_file() {
            return Ok(Self::empty(dir, exact_max));
        }
        let state: State = serde_json::from_slice(
            &std::fs::read(&state_path).map_err(|e| IndexError::io(&state_path, e))?,
        )
        .map_err(|e| IndexError::Vector(format!("{}: {e}", state_path.display())))?;
        let mut index = Self::empty(dir, exact_max);
        if state.format < 2 {
            index.migrate_format_1(&current, state)?;
            return Ok(index);
        }
        let path = rows_path(dir, state.generation);
        match read_rows(&path, state.dim, state.rows) {
            Ok(rows) => {
                index.state = state;
                for (id, collection, v) in rows.iter() {
                    index.push(id, collection, &v);
                }
                index.written = index.flat.ids.len();
            }
            Err(reason) => {
                tracing::warn!(
                    "{}: {reason}; the vector index starts empty and is rebuilt from the catalog",
                    path.display()
                );
                index.dirty = true;
                return Ok(index);
            }
        }
        if index.flat.ids.len() > index.exact_max {
            if graph_files(&current).iter().all(|p| p.is_file()) {
                index.graph = Some(load_graph(&current)?);
            } else {
                index.build_graph();
            }
        }
        Ok(index)
    }

    /// Reads an index written before the row file existed (every vector in the hnsw
    /// dump); the next commit writes it in the current layout.
    fn migrate_format_1(&mut self, current: &Path, state: State) -> Result<(), IndexError> {
        if !state.collections.is_empty() {
            let graph = load_graph(current)?;
            for point in graph.get_point_indexation() {
                let id = point.get_origin_id() as i64;
                let collection = state.collections.get(&id).copied().unwrap_or(-1);
                self.push(id, collection, point.get_v());
            }
        }
        self.state.seq = state.seq;
        self.state.dim = state.dim;
        self.state.tombstones = state.tombstones;
        self.dirty = true;
        self.ensure_graph();
        Ok(())
    }

    fn push(&mut self, id: i64, collection: i64, v: &[f32]) {
        self.row_of.insert(id, self.flat.ids.len());
        self.flat.push(id, collection, v);
    }

    /// Builds the graph from every live row (once the index outgrows `exact_max`).
    fn build_graph(&mut self) {
        let n = self.flat.ids.len();
        let dim = self.state.dim;
        let mut graph = new_graph(n);
        let data: Vec<(&[f32], usize)> = (0..n)
            .filter(|&i| !self.state.tombstones.contains(&self.flat.ids[i]))
            .map(|i| {
                (
                    &self.flat.data[i * dim..(i + 1) * dim],
                    self.flat.ids[i] as usize,
                )
            })
            .collect();
        graph.parallel_insert_slice(&data);
        graph.set_searching_mode(true);
        self.graph = Some(graph);
        self.graph_dirty = true;
    }

    /// The graph is built the first time the index holds more than `exact_max` points.
    fn ensure_graph(&mut self) {
        if self.graph.is_none() && self.flat.ids.len() > self.exact_max {
            self.build_graph();
        }
    }

    /// Whether searches walk the graph rather than scan every vector.
    fn walks_graph(&self) -> bool {
        self.graph.is_some() && self.flat.ids.len() > self.exact_max
    }

    /// Whether something changed since the last commit (also after reading an index
    /// in the older layout, which the next commit rewrites).
    pub fn has_unsaved_changes(&self) -> bool {
        self.dirty
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
        self.add_many(&[(chunk_id, collection_id, vector.to_vec())])
    }

    /// Adds many embeddings at once (graph insertions, when there is a graph, in
    /// parallel). A chunk already present is left as it is (a replayed log entry).
    pub fn add_many(&mut self, items: &[(i64, i64, Vec<f32>)]) -> Result<(), IndexError> {
        let mut seen = HashSet::new();
        let fresh: Vec<_> = items
            .iter()
            .filter(|(id, _, _)| !self.row_of.contains_key(id) && seen.insert(*id))
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
                    "embedding of chunk {id} has {} dimensions, the index has {}: re-index with one embedding model",
                    v.len(),
                    self.state.dim
                )));
            }
        }
        for (id, c, v) in &fresh {
            self.push(*id, *c, v);
        }
        if let Some(graph) = self.graph.as_mut() {
            graph.set_searching_mode(false);
            let data: Vec<(&[f32], usize)> = fresh
                .iter()
                .map(|(id, _, v)| (v.as_slice(), *id as usize))
                .collect();
            graph.parallel_insert_slice(&data);
            graph.set_searching_mode(true);
            self.graph_dirty = true;
        } else {
            self.ensure_graph();
        }
        self.dirty = true;
        Ok(())
    }

    /// Marks a chunk as removed.
    pub fn remove(&mut self, chunk_id: i64) {
        if self.row_of.contains_key(&chunk_id) && self.state.tombstones.insert(chunk_id) {
            self.dirty = true;
        }
    }

    /// Whether enough points are tombstones that the index should be rebuilt.
    pub fn needs_compaction(&self) -> bool {
        let n = self.flat.ids.len();
        n > 0 && self.state.tombstones.len() * 4 > n
    }

    /// Ids of the live points (for rebuilding and checks).
    pub fn chunk_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .flat
            .ids
            .iter()
            .filter(|id| !self.state.tombstones.contains(id))
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Drops everything (before a rebuild); the next commit starts a new row file.
    pub fn clear(&mut self) {
        let (generation, seq) = (self.state.generation + 1, self.state.seq);
        *self = Self::empty(&self.dir, self.exact_max);
        self.state.generation = generation;
        self.state.seq = seq;
        self.dirty = true;
    }

    /// Writes the new rows, the graph (if any) and the state to disk at index-log
    /// position `seq`.
    ///
    /// Rows are appended to the row file and synced before the state that counts
    /// them is renamed into place; the state (and graph dump) go through a staging
    /// folder renamed over `current`, so a crash leaves the old commit or the new
    /// one. A crash can leave rows past the committed count: the next commit cuts
    /// them off before appending.
    pub fn commit(&mut self, seq: i64) -> Result<(), IndexError> {
        if !self.dirty && self.state.seq == seq {
            return Ok(());
        }
        self.write_rows()?;
        self.state.seq = seq;
        self.state.rows = self.written;
        self.state.format = FORMAT;
        let staging = self.dir.join("staging");
        let current = self.dir.join("current");
        let previous = self.dir.join("previous");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| IndexError::io(&staging, e))?;
        if let Some(graph) = self.graph.as_ref() {
            let old = graph_files(&current);
            let reuse = !self.graph_dirty && old.iter().all(|p| p.is_file());
            let linked = reuse
                && old
                    .iter()
                    .zip(graph_files(&staging))
                    .all(|(from, to)| std::fs::hard_link(from, to).is_ok());
            if !linked {
                let name = graph.file_dump(&staging, BASENAME).map_err(|e| {
                    IndexError::Vector(format!("writing {}: {e}", staging.display()))
                })?;
                if name != BASENAME {
                    return Err(IndexError::Vector(format!(
                        "hnsw dump chose the name {name}"
                    )));
                }
            }
        }
        let state_path = staging.join("state.json");
        let bytes =
            serde_json::to_vec(&self.state).map_err(|e| IndexError::Vector(e.to_string()))?;
        std::fs::write(&state_path, bytes).map_err(|e| IndexError::io(&state_path, e))?;
        let _ = std::fs::remove_dir_all(&previous);
        if current.exists() {
            std::fs::rename(&current, &previous).map_err(|e| IndexError::io(&current, e))?;
        }
        std::fs::rename(&staging, &current).map_err(|e| IndexError::io(&staging, e))?;
        let _ = std::fs::remove_dir_all(&previous);
        self.remove_other_row_files();
        self.graph_dirty = false;
        self.dirty = false;
        Ok(())
    }

    /// Appends the rows not yet in the row file and syncs it.
    fn write_rows(&mut self) -> Result<(), IndexError> {
        use std::io::Write;
        let path = rows_path(&self.dir, self.state.generation);
        let dim = self.state.dim;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| IndexError::io(&path, e))?;
        // Whatever an interrupted commit left past the committed rows goes.
        file.set_len((self.written * row_bytes(dim)) as u64)
            .map_err(|e| IndexError::io(&path, e))?;
        let n = self.flat.ids.len();
        if self.written < n {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            std::io::Seek::seek(&mut out, std::io::SeekFrom::End(0))
                .map_err(|e| IndexError::io(&path, e))?;
            for i in self.written..n {
                let mut row = Vec::with_capacity(row_bytes(dim));
                row.extend_from_slice(&self.flat.ids[i].to_le_bytes());
                row.extend_from_slice(&self.flat.collections[i].to_le_bytes());
                for x in &self.flat.data[i * dim..(i + 1) * dim] {
                    row.extend_from_slice(&x.to_le_bytes());
                }
                out.write_all(&row).map_err(|e| IndexError::io(&path, e))?;
            }
            out.flush().map_err(|e| IndexError::io(&path, e))?;
        }
        file.sync_data().map_err(|e| IndexError::io(&path, e))?;
        self.written = n;
        Ok(())
    }

    /// Deletes row files of other generations (left by a compaction, or by one
    /// interrupted before its commit).
    fn remove_other_row_files(&self) {
        let keep = rows_path(&self.dir, self.state.generation);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("rows-") && name.ends_with(".bin") && path != keep {
                let _ = std::fs::remove_file(&path);
            }
        }
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
        if query.len() != self.state.dim || self.flat.ids.is_empty() {
            return Vec::new();
        }
        let (true, Some(graph)) = (self.walks_graph(), &self.graph) else {
            return self
                .flat
                .search(query, collections, &self.state.tombstones, k);
        };
        let allowed: HashSet<i64> = collections.iter().copied().collect();
        let filter = |id: &usize| {
            let id = *id as i64;
            !self.state.tombstones.contains(&id)
                && self
                    .row_of
                    .get(&id)
                    .is_some_and(|&r| allowed.contains(&self.flat.collections[r]))
        };
        graph
            .search_filter(query, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| (n.d_id as i64, 1.0 - n.distance))
            .collect()
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.flat.ids.len() - self.state.tombstones.len()
    }

    /// Whether no live point exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first `rows` rows of a row file, or why they cannot be read.
struct Rows {
    bytes: Vec<u8>,
    dim: usize,
}

impl Rows {
    fn iter(&self) -> impl Iterator<Item = (i64, i64, Vec<f32>)> + '_ {
        self.bytes.chunks_exact(row_bytes(self.dim)).map(|row| {
            let id = i64::from_le_bytes(row[..8].try_into().expect("8 bytes"));
            let collection = i64::from_le_bytes(row[8..16].try_into().expect("8 bytes"));
            let v = row[16..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            (id, collection, v)
        })
    }
}

fn read_rows(path: &Path, dim: usize, rows: usize) -> Result<Rows, String> {
    use std::io::Read;
    let need = rows * row_bytes(dim);
    if need == 0 {
        return Ok(Rows {
            bytes: Vec::new(),
            dim,
        });
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(need);
    file.take(need as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() < need {
        return Err(format!(
            "{} bytes, but the index counts {rows} vectors of {dim} dimensions ({need} bytes)",
            bytes.len()
        ));
    }
    Ok(Rows { bytes, dim })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// Brute force over the live points of the allowed collections.
    fn truth(
        points: &[(i64, i64, Vec<f32>)],
        q: &[f32],
        allowed: &[i64],
        dead: &[i64],
        k: usize,
    ) -> Vec<i64> {
        let mut all: Vec<(i64, f32)> = points
            .iter()
            .filter(|(id, c, _)| allowed.contains(c) && !dead.contains(id))
            .map(|(id, _, v)| (*id, v.iter().zip(q).map(|(a, b)| a * b).sum()))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.into_iter().take(k).map(|(id, _)| id).collect()
    }

    #[test]
    fn small_indexes_search_exactly_with_filters_and_tombstones_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let points: Vec<(i64, i64, Vec<f32>)> = (1..=3000)
            .map(|id| (id, 1 + id % 3, unit(&mut rng, 48)))
            .collect();
        let mut index = VectorIndex::open(dir.path()).unwrap();
        index.add_many(&points[..2000]).unwrap();
        for (id, c, v) in &points[2000..] {
            index.add(*id, *c, v).unwrap();
        }
        let dead = [5, 17, 2999];
        for id in dead {
            index.remove(id);
        }
        index.commit(7).unwrap();
        let reopened = VectorIndex::open(dir.path()).unwrap();
        for _ in 0..20 {
            let q = unit(&mut rng, 48);
            let want = truth(&points, &q, &[1, 3], &dead, 10);
            for idx in [&index, &reopened] {
                let got: Vec<i64> = idx
                    .search(&q, &[1, 3], 10, 64)
                    .iter()
                    .map(|h| h.0)
                    .collect();
                assert_eq!(got, want);
            }
        }
        // A tombstone's own vector does not find it.
        let (_, _, v) = &points[16];
        assert!(reopened
            .search(v, &[1, 2, 3], 5, 64)
            .iter()
            .all(|h| h.0 != 17));
    }

    #[test]
    fn int8_codes_keep_the_similarity_within_rounding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let (a, b) = (unit(&mut rng, 384), unit(&mut rng, 384));
            let (mut ca, mut cb) = (Vec::new(), Vec::new());
            let (sa, sb) = (quantize(&a, &mut ca), quantize(&b, &mut cb));
            let approx = dot_i8(&ca, &cb) as f32 * sa * sb;
            let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((approx - exact).abs() < 0.01, "{approx} vs {exact}");
        }
    }

    #[test]
    fn large_indexes_walk_the_graph_with_high_recall() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let points: Vec<(i64, i64, Vec<f32>)> = (1..=3000)
            .map(|id| (id, 1 + id % 2, unit(&mut rng, 16)))
            .collect();
        let mut index = VectorIndex::open_with_exact_max(dir.path(), 1000).unwrap();
        index.add_many(&points[..900]).unwrap();
        index.commit(1).unwrap();
        // Below the line there is no graph, in memory or on disk.
        assert!(!index.walks_graph());
        assert!(!graph_files(&dir.path().join("current"))[0].exists());
        index.add_many(&points[900..2500]).unwrap();
        for (id, c, v) in &points[2500..] {
            index.add(*id, *c, v).unwrap();
        }
        index.remove(8);
        index.commit(2).unwrap();
        assert!(index.walks_graph());
        assert!(graph_files(&dir.path().join("current"))[0].is_file());
        // Reopened, the graph comes from its dump and still filters.
        let reopened = VectorIndex::open_with_exact_max(dir.path(), 1000).unwrap();
        assert!(reopened.walks_graph());
        for idx in [&index, &reopened] {
            let (mut found, mut total) = (0, 0);
            for _ in 0..50 {
                let q = unit(&mut rng, 16);
                let want = truth(&points, &q, &[2], &[8], 10);
                let got: Vec<i64> = idx.search(&q, &[2], 10, 64).iter().map(|h| h.0).collect();
                assert!(got.iter().all(|id| id % 2 == 1 && *id != 8), "{got:?}");
                found += got.iter().filter(|id| want.contains(id)).count();
                total += want.len();
            }
            let recall = found as f64 / total as f64;
            assert!(recall > 0.9, "recall@10 {recall}");
        }
    }

    fn row_file_len(dir: &Path) -> u64 {
        let state: State =
            serde_json::from_slice(&std::fs::read(dir.join("current/state.json")).unwrap())
                .unwrap();
        std::fs::metadata(rows_path(dir, state.generation))
            .unwrap()
            .len()
    }

    #[test]
    fn rows_appended_by_an_interrupted_commit_are_not_read_and_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let points: Vec<(i64, i64, Vec<f32>)> =
            (1..=300).map(|id| (id, 1, unit(&mut rng, 8))).collect();
        let mut index = VectorIndex::open(dir.path()).unwrap();
        index.add_many(&points[..100]).unwrap();
        index.commit(1).unwrap();
        assert_eq!(row_file_len(dir.path()), 100 * row_bytes(8) as u64);
        // A crash after the rows of the next commit were appended, before its state.
        index.add_many(&points[100..200]).unwrap();
        index.write_rows().unwrap();
        drop(index);
        assert_eq!(row_file_len(dir.path()), 200 * row_bytes(8) as u64);
        let mut index = VectorIndex::open(dir.path()).unwrap();
        assert_eq!(index.committed_seq(), 1);
        assert_eq!(index.chunk_ids(), (1..=100).collect::<Vec<i64>>());
        // The replay adds other chunks; the dead tail is not resurrected.
        index.add_many(&points[200..]).unwrap();
        index.commit(2).unwrap();
        assert_eq!(row_file_len(dir.path()), 200 * row_bytes(8) as u64);
        let reopened = VectorIndex::open(dir.path()).unwrap();
        let want: Vec<i64> = (1..=100).chain(201..=300).collect();
        assert_eq!(reopened.chunk_ids(), want);
        let (_, _, v) = &points[250];
        assert_eq!(reopened.search(v, &[1], 1, 64)[0].0, 251);
    }

    #[test]
    fn a_compaction_writes_a_new_row_file_and_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let points: Vec<(i64, i64, Vec<f32>)> =
            (1..=40).map(|id| (id, 1, unit(&mut rng, 8))).collect();
        let mut index = VectorIndex::open(dir.path()).unwrap();
        index.add_many(&points).unwrap();
        index.commit(1).unwrap();
        for id in 1..=20 {
            index.remove(id);
        }
        assert!(index.needs_compaction());
        index.clear();
        index.add_many(&points[20..]).unwrap();
        index.commit(2).unwrap();
        assert!(!index.needs_compaction());
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rows-"))
            .collect();
        assert_eq!(files, vec!["rows-1.bin".to_string()]);
        let reopened = VectorIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.committed_seq(), 2);
        assert_eq!(reopened.chunk_ids(), (21..=40).collect::<Vec<i64>>());
        assert_eq!(reopened.len(), 20);
    }

    #[test]
    fn a_damaged_row_file_empties_the_index_for_a_replay_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let points: Vec<(i64, i64, Vec<f32>)> =
            (1..=50).map(|id| (id, 1, unit(&mut rng, 8))).collect();
        let mut index = VectorIndex::open(dir.path()).unwrap();
        index.add_many(&points).unwrap();
        index.commit(9).unwrap();
        let rows = rows_path(dir.path(), 0);
        let len = std::fs::metadata(&rows).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&rows)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let mut index = VectorIndex::open(dir.path()).unwrap();
        // Log position 0: the next sync re-adds every chunk from the catalog.
        assert_eq!(index.committed_seq(), 0);
        assert!(index.is_empty());
        index.add_many(&points).unwrap();
        index.commit(9).unwrap();
        let reopened = VectorIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 50);
    }

    #[test]
    fn an_index_in_the_old_layout_is_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let points: Vec<(i64, i64, Vec<f32>)> = (1..=200)
            .map(|id| (id, 1 + id % 2, unit(&mut rng, 8)))
            .collect();
        // Format 1: the hnsw dump holds the vectors, state.json the collections.
        let current = dir.path().join("current");
        std::fs::create_dir_all(&current).unwrap();
        let graph = new_graph(200);
        for (id, _, v) in &points {
            graph.insert_slice((v, *id as usize));
        }
        graph.file_dump(&current, BASENAME).unwrap();
        let collections: HashMap<String, i64> = points
            .iter()
            .map(|(id, c, _)| (id.to_string(), *c))
            .collect();
        let old = serde_json::json!({
            "seq": 4, "dim": 8, "collections": collections, "tombstones": [3]
        });
        std::fs::write(current.join("state.json"), old.to_string()).unwrap();

        let mut index = VectorIndex::open(dir.path()).unwrap();
        assert_eq!(index.committed_seq(), 4);
        assert_eq!(index.len(), 199);
        let (_, _, v) = &points[9];
        assert_eq!(index.search(v, &[1], 1, 64)[0].0, 10);
        assert!(index.search(v, &[2], 5, 64).iter().all(|h| h.0 % 2 == 1));
        index.commit(4).unwrap();
        let reopened = VectorIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.state.format, FORMAT);
        assert_eq!(reopened.len(), 199);
        assert!(!reopened.chunk_ids().contains(&3));
        assert_eq!(reopened.search(v, &[1], 1, 64)[0].0, 10);
    }
}
