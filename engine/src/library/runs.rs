//! Background ingest runs: [`IngestRun`] is one incremental ingest started by a
//! front end (the UI's "add files", "re-index"), run on its own thread while answers
//! go on, with its progress kept as a list of [`IngestEvent`]s that any number of
//! watchers can replay from the start and follow.
//!
//! Runs go one at a time, in the order they were started: two runs on one catalog
//! would only contend for the same cores and the index's write lock. A run that
//! panics ends as [`RunState::Failed`] with a message; the catalog keeps what the
//! pipeline committed before (every file is its own transaction), so nothing already
//! stored is lost. The list of runs is in memory (the last 100); the catalog records
//! each run's documents.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{Library, LibraryError, SharedIndex};
use crate::ingest::pipeline::{self, IngestOptions, IngestProgress, IngestSummary};
use crate::ingest::roots::SourceRoots;

/// How many finished runs are remembered.
const KEPT_RUNS: usize = 100;

/// Where an ingest run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Waiting for the run before it to finish.
    Queued,
    /// Running.
    Running,
    /// Finished (some files may have failed: see the summary).
    Done,
    /// Stopped by an error.
    Failed,
}

/// One step of a run, in the order it happened.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    /// The files found, in processing order.
    Start {
        /// The collection.
        collection: String,
        /// The files.
        files: Vec<String>,
    },
    /// Passages of the file being read embedded so far (at most twice a second).
    Embedding {
        /// The file.
        path: String,
        /// Passages embedded.
        done: usize,
        /// Passages in the file.
        total: usize,
    },
    /// A file is done.
    File {
        /// The file.
        path: String,
        /// `added`, `updated`, `unchanged` or `failed`.
        outcome: String,
        /// Pages extracted from it.
        pages: usize,
    },
    /// The run finished.
    Done(IngestSummary),
    /// The run could not go on.
    Error(String),
}

impl IngestEvent {
    /// The event's name on an event stream.
    pub fn name(&self) -> &'static str {
        match self {
            IngestEvent::Start { .. } => "start",
            IngestEvent::Embedding { .. } => "embedding",
            IngestEvent::File { .. } => "file",
            IngestEvent::Done(_) => "done",
            IngestEvent::Error(_) => "error",
        }
    }

    /// The event's data as JSON (the shape the HTTP API documents).
    pub fn data(&self) -> Value {
        match self {
            IngestEvent::Start { collection, files } => {
                json!({"collection": collection, "files": files})
            }
            IngestEvent::Embedding { path, done, total } => {
                json!({"path": path, "done": done, "total": total})
            }
            IngestEvent::File {
                path,
                outcome,
                pages,
            } => json!({"path": path, "outcome": outcome, "pages": pages}),
            IngestEvent::Done(summary) => json!({ "summary": summary }),
            IngestEvent::Error(message) => {
                json!({"error": {"message": message, "type": "server_error"}})
            }
        }
    }

    /// Whether the run ends with this event.
    pub fn is_last(&self) -> bool {
        matches!(self, IngestEvent::Done(_) | IngestEvent::Error(_))
    }
}

/// What a run looks like now, for listing and polling.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRunView {
    /// Its id (`ingest-N`).
    pub id: String,
    /// The collection it adds to.
    pub collection: String,
    /// When it was started (Unix seconds).
    pub started: u64,
    /// Where it stands.
    pub state: RunState,
    /// The files it reads.
    pub files: Vec<String>,
    /// How many of them are done.
    pub done_files: usize,
    /// The file being embedded: `{"path","done","total"}` passages.
    pub current: Option<Value>,
    /// The result, once done.
    pub summary: Option<IngestSummary>,
    /// Why it stopped, once failed.
    pub error: Option<String>,
}

/// One background ingest.
#[derive(Debug)]
pub struct IngestRun {
    /// Its id (`ingest-N`).
    pub id: String,
    /// The collection it adds to.
    pub collection: String,
    /// When it was started (Unix seconds).
    pub started: u64,
    inner: Mutex<RunInner>,
    /// The number of events so far, for watchers waiting on more.
    changed: watch::Sender<usize>,
}

#[derive(Debug)]
struct RunInner {
    state: RunState,
    files: Vec<String>,
    done_files: usize,
    events: Vec<IngestEvent>,
    summary: Option<IngestSummary>,
    error: Option<String>,
    current: Option<Value>,
}

impl IngestRun {
    fn push(&self, event: IngestEvent) {
        let n = {
            let mut inner = self.lock();
            match &event {
                IngestEvent::File { .. } => {
                    inner.done_files += 1;
                    inner.current = None;
                }
                IngestEvent::Embedding { .. } => inner.current = Some(event.data()),
                _ => {}
            }
            inner.events.push(event);
            inner.events.len()
        };
        self.changed.send_replace(n);
    }

    fn lock(&self) -> MutexGuard<'_, RunInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the run stands now.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// The files the run reads, in processing order.
    pub fn files(&self) -> Vec<String> {
        self.lock().files.clone()
    }

    /// The run as it is now.
    pub fn view(&self) -> IngestRunView {
        let inner = self.lock();
        IngestRunView {
            id: self.id.clone(),
            collection: self.collection.clone(),
            started: self.started,
            state: inner.state,
            files: inner.files.clone(),
            done_files: inner.done_files,
            current: inner.current.clone(),
            summary: inner.summary.clone(),
            error: inner.error.clone(),
        }
    }

    /// The events from number `from` on, and whether the run has ended with the
    /// last of them.
    pub fn events_since(&self, from: usize) -> (Vec<IngestEvent>, bool) {
        let inner = self.lock();
        let events = inner.events.get(from..).unwrap_or_default().to_vec();
        let ended = matches!(inner.state, RunState::Done | RunState::Failed)
            && inner.events.last().is_some_and(IngestEvent::is_last);
        (events, ended)
    }

    /// A receiver that changes whenever an event is added.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }
}

/// The ingest runs of one process.
#[derive(Debug, Default)]
pub struct IngestRuns {
    runs: Mutex<Vec<Arc<IngestRun>>>,
    /// Held by the running run: runs go one at a time.
    turn: Arc<Mutex<()>>,
    next: Mutex<u64>,
}

impl IngestRuns {
    /// One run by id.
    pub fn get(&self, id: &str) -> Option<Arc<IngestRun>> {
        self.list_lock().iter().find(|j| j.id == id).cloned()
    }

    /// Every remembered run, newest first.
    pub fn list(&self) -> Vec<Arc<IngestRun>> {
        self.list_lock().iter().rev().cloned().collect()
    }

    fn list_lock(&self) -> MutexGuard<'_, Vec<Arc<IngestRun>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, collection: &str, files: Vec<String>) -> Arc<IngestRun> {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            format!("ingest-{}", *next)
        };
        let run = Arc::new(IngestRun {
            id,
            collection: collection.to_owned(),
            started: unix_now(),
            inner: Mutex::new(RunInner {
                state: RunState::Queued,
                files: files.clone(),
                done_files: 0,
                events: Vec::new(),
                summary: None,
                error: None,
                current: None,
            }),
            changed: watch::Sender::new(0),
        });
        run.push(IngestEvent::Start {
            collection: collection.to_owned(),
            files,
        });
        let mut runs = self.list_lock();
        if runs.len() >= KEPT_RUNS {
            runs.remove(0);
        }
        runs.push(run.clone());
        run
    }

    /// Registers a run and starts it on its own thread: the pipeline's future
    /// borrows the index lock across awaits, so it is driven there with the caller's
    /// runtime handle rather than spawned as a task. `remove_first` are documents to
    /// drop before reading (files gone from disk, on a re-index).
    pub(super) fn start(
        &self,
        lib: Arc<Library>,
        collection: &str,
        paths: Vec<PathBuf>,
        remove_first: Vec<i64>,
        roots: SourceRoots,
        mut options: IngestOptions,
    ) -> Result<Arc<IngestRun>, LibraryError> {
        let files = pipeline::walk(&paths, Some(&roots))
            .map_err(|e| LibraryError::Walk(e.to_string()))?
            .files
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        options.roots = Some(roots);
        let run = self.add(collection, files);
        let turn = self.turn.clone();
        let runtime = tokio::runtime::Handle::current();
        let worker = run.clone();
        std::thread::Builder::new()
            .name(format!("kura-{}", run.id))
            .spawn(move || {
                let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
                worker.lock().state = RunState::Running;
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(drive(&lib, &worker, &paths, &remove_first, &options))
                }))
                .unwrap_or_else(|_| Err("the ingest crashed (see the server log)".to_owned()));
                finish(&worker, result);
            })
            .map_err(LibraryError::Thread)?;
        Ok(run)
    }
}

fn finish(run: &IngestRun, result: Result<IngestSummary, String>) {
    let mut inner = run.lock();
    match result {
        Ok(summary) => {
            tracing::info!(
                "{}: {} added, {} updated, {} unchanged, {} removed, {} failed in {:.1} s",
                run.id,
                summary.added,
                summary.updated,
                summary.unchanged,
                summary.removed,
                summary.failed.len(),
                summary.seconds
            );
            inner.state = RunState::Done;
            inner.summary = Some(summary.clone());
            drop(inner);
            run.push(IngestEvent::Done(summary));
        }
        Err(message) => {
            tracing::warn!("{}: {message}", run.id);
            inner.state = RunState::Failed;
            inner.error = Some(message.clone());
            drop(inner);
            run.push(IngestEvent::Error(message));
        }
    }
}

async fn drive(
    lib: &Arc<Library>,
    run: &IngestRun,
    paths: &[PathBuf],
    remove_first: &[i64],
    options: &IngestOptions,
) -> Result<IngestSummary, String> {
    for id in remove_first {
        lib.catalog
            .remove_document(*id)
            .await
            .map_err(|e| e.to_string())?;
    }
    let progress = |p: IngestProgress| match p {
        IngestProgress::File {
            path,
            outcome,
            pages,
        } => run.push(IngestEvent::File {
            path: path.to_string_lossy().into_owned(),
            outcome: outcome.to_string(),
            pages,
        }),
        IngestProgress::Embedding { path, done, total } => run.push(IngestEvent::Embedding {
            path: path.to_string_lossy().into_owned(),
            done,
            total,
        }),
        IngestProgress::Found(_) => {}
    };
    let mut index = SharedIndex(lib.clone());
    let mut summary = pipeline::ingest(
        paths,
        &run.collection,
        options,
        &lib.catalog,
        &mut index,
        &lib.embedder,
        &progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    summary.removed += remove_first.len();
    Ok(summary)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
