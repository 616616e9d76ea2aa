//! The durable queue of training jobs: what is waiting, what runs, what finished.
//!
//! A company schedules fine-tunes for the night (`kura train submit job.toml --at
//! 22:00`) and expects to find them done — or, after a power cut, continuing — in
//! the morning. The queue is a table in the catalog's SQLite file
//! (`migrations/0003_training_jobs.sql`); each job's real state (data, checkpoints,
//! metrics) is its folder on disk ([`crate::train::TrainRun`]), so the queue only
//! has to say *which* folder to work on next:
//!
//! ```text
//! queued ──claim──▶ running ──▶ done | failed
//!    ▲                  │ cancel (checkpoint first) ──▶ cancelled
//!    └── resume / runner found dead (kill -9, power loss) ◀┘
//! ```
//!
//! A runner claims a due job in one `UPDATE … RETURNING` (so two runners never take
//! the same job), records its pid and a heartbeat with every step's progress, and
//! checks the job's cancel flag between steps. A job left `running` by a runner that
//! no longer exists is put back in the queue and resumes from its last checkpoint.

pub mod runner;

pub use runner::{BackgroundRunner, JobRunner, RunnerEvent, RunnerObserver, RunnerOptions};

use crate::catalog::{Catalog, CatalogError};
use serde::Serialize;
use sqlx::Row;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the job queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The catalog could not be opened or queried.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A query failed.
    #[error("job queue query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// No job with this id.
    #[error("no training job #{0} / 学習ジョブ #{0} はありません")]
    NotFound(i64),
    /// The job is in a state that does not allow the action.
    #[error("job #{id} is {state}: cannot {action}")]
    WrongState {
        /// The job.
        id: i64,
        /// Its state.
        state: String,
        /// What was asked.
        action: &'static str,
    },
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its start time and a runner.
    Queued,
    /// A runner is training it.
    Running,
    /// Finished; the adapter is saved.
    Done,
    /// Stopped by an error (resumable after fixing the cause).
    Failed,
    /// Cancelled by a person (resumable).
    Cancelled,
}

impl JobState {
    /// The word stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingJob {
    /// Id.
    pub id: i64,
    /// The job's name.
    pub name: String,
    /// Its folder.
    pub folder: PathBuf,
    /// Its state.
    pub state: JobState,
    /// Earliest start (unix seconds).
    pub run_at: i64,
    /// When it was submitted.
    pub submitted_at: i64,
    /// When it last started running.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The runner's process id while running.
    pub runner_pid: Option<i64>,
    /// Last sign of life from the runner.
    pub heartbeat_at: Option<i64>,
    /// A person asked to cancel it.
    pub cancel_requested: bool,
    /// Steps done.
    pub step: i64,
    /// Steps in total.
    pub total_steps: Option<i64>,
    /// Loss of the last step.
    pub loss: Option<f64>,
    /// Learning rate of the last step.
    pub lr: Option<f64>,
    /// Throughput of the last step.
    pub tokens_per_s: Option<f64>,
    /// Estimated seconds left (evaluations included).
    pub eta_s: Option<f64>,
    /// Last eval loss.
    pub eval_loss: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The latest progress of a running job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingProgress {
    /// Steps done.
    pub step: u64,
    /// Steps in total.
    pub total_steps: u64,
    /// Loss.
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Seconds left.
    pub eta_s: f64,
    /// Eval loss, when this step evaluated.
    pub eval_loss: Option<f64>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether process `pid` is alive on this machine.
fn alive(pid: i64) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// A runner is considered gone when it has not reported for this long (for systems
/// where its pid cannot be checked).
pub const HEARTBEAT_TIMEOUT_S: i64 = 30 * 60;

/// The job queue, in the catalog's SQLite file.
#[derive(Debug, Clone)]
pub struct JobQueue {
    catalog: Catalog,
}

macro_rules! columns {
    () => {
        "id, name, folder, state, run_at, submitted_at, started_at, finished_at, runner_pid, \
         heartbeat_at, cancel_requested, step, total_steps, loss, lr, tokens_per_s, eta_s, \
         eval_loss, error"
    };
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> TrainingJob {
    TrainingJob {
        id: r.get("id"),
        name: r.get("name"),
        folder: PathBuf::from(r.get::<String, _>("folder")),
        state: JobState::parse(&r.get::<String, _>("state")),
        run_at: r.get("run_at"),
        submitted_at: r.get("submitted_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        runner_pid: r.get("runner_pid"),
        heartbeat_at: r.get("heartbeat_at"),
        cancel_requested: r.get::<i64, _>("cancel_requested") != 0,
        step: r.get("step"),
        total_steps: r.get("total_steps"),
        loss: r.get("loss"),
        lr: r.get("lr"),
        tokens_per_s: r.get("tokens_per_s"),
        eta_s: r.get("eta_s"),
        eval_loss: r.get("eval_loss"),
        error: r.get("error"),
    }
}

impl JobQueue {
    /// The queue in an open catalog.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }

    /// Adds a job whose folder is ready (see [`crate::train::TrainRun::create`]),
    /// to start at `run_at` or later.
    pub async fn submit(
        &self,
        name: &str,
        folder: &std::path::Path,
        run_at: i64,
    ) -> Result<TrainingJob, JobError> {
        let id: i64 = sqlx::query(
            "INSERT INTO training_jobs (name, folder, state, run_at, submitted_at) \
             VALUES (?, ?, 'queued', ?, ?) RETURNING id",
        )
        .bind(name)
        .bind(folder.to_string_lossy().to_string())
        .bind(run_at)
        .bind(now())
        .fetch_one(self.catalog.pool())
        .await?
        .get(0);
        self.get(id).await
    }

    /// One job.
    pub async fn get(&self, id: i64) -> Result<TrainingJob, JobError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM training_jobs WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.catalog.pool())
        .await?
        .ok_or(JobError::NotFound(id))?;
        Ok(from_row(&row))
    }

    /// All jobs, newest first.
    pub async fn list(&self) -> Result<Vec<TrainingJob>, JobError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM training_jobs ORDER BY id DESC"
        ))
        .fetch_all(self.catalog.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Puts jobs left `running` by a runner that no longer exists back in the queue
    /// (they resume from their last checkpoint). Returns their ids.
    pub async fn recover_interrupted(&self) -> Result<Vec<i64>, JobError> {
        let mut out = Vec::new();
        let me = std::process::id() as i64;
        for job in self.list().await? {
            if job.state != JobState::Running {
                continue;
            }
            let gone = match job.runner_pid {
                Some(pid) if pid == me => false,
                Some(pid) => {
                    !alive(pid)
                        || job
                            .heartbeat_at
                            .is_some_and(|h| now() - h > HEARTBEAT_TIMEOUT_S)
                }
                None => true,
            };
            if gone {
                sqlx::query(
                    "UPDATE training_jobs SET state = 'queued', runner_pid = NULL \
                     WHERE id = ? AND state = 'running'",
                )
                .bind(job.id)
                .execute(self.catalog.pool())
                .await?;
                out.push(job.id);
            }
        }
        Ok(out)
    }

    /// Takes the next due job (earliest start first) for this process, atomically.
    pub async fn claim_next(&self) -> Result<Option<TrainingJob>, JobError> {
        let t = now();
        let row = sqlx::query(concat!(
            "UPDATE training_jobs SET state = 'running', runner_pid = ?, started_at = ?, \
             heartbeat_at = ?, error = NULL \
             WHERE id = (SELECT id FROM training_jobs WHERE state = 'queued' AND run_at <= ? \
                         ORDER BY run_at, id LIMIT 1) AND state = 'queued' \
             RETURNING ",
            columns!()
        ))
        .bind(std::process::id() as i64)
        .bind(t)
        .bind(t)
        .bind(t)
        .fetch_optional(self.catalog.pool())
        .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Records a step's progress and the runner's heartbeat; returns whether a
    /// person asked to cancel the job.
    pub async fn report(&self, id: i64, p: &TrainingProgress) -> Result<bool, JobError> {
        let row = sqlx::query(
            "UPDATE training_jobs SET step = ?, total_steps = ?, loss = ?, lr = ?, \
             tokens_per_s = ?, eta_s = ?, eval_loss = COALESCE(?, eval_loss), heartbeat_at = ? \
             WHERE id = ? RETURNING cancel_requested",
        )
        .bind(p.step as i64)
        .bind(p.total_steps as i64)
        .bind(p.loss)
        .bind(p.lr)
        .bind(p.tokens_per_s)
        .bind(p.eta_s)
        .bind(p.eval_loss)
        .bind(now())
        .bind(id)
        .fetch_optional(self.catalog.pool())
        .await?
        .ok_or(JobError::NotFound(id))?;
        Ok(row.get::<i64, _>(0) != 0)
    }

    /// Whether a person asked to cancel the job.
    pub async fn cancel_requested(&self, id: i64) -> Result<bool, JobError> {
        Ok(self.get(id).await?.cancel_requested)
    }

    /// Ends a running job in `state` (`done`, `failed` with `error`, `cancelled`, or
    /// `queued` when the runner itself was stopped and the job should continue later).
    pub async fn finish(
        &self,
        id: i64,
        state: JobState,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let finished = matches!(
            state,
            JobState::Done | JobState::Failed | JobState::Cancelled
        );
        sqlx::query(
            "UPDATE training_jobs SET state = ?, error = ?, runner_pid = NULL, \
             finished_at = CASE WHEN ? THEN ? ELSE finished_at END, \
             cancel_requested = CASE WHEN ? = 'cancelled' THEN 0 ELSE cancel_requested END \
             WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(finished)
        .bind(now())
        .bind(state.as_str())
        .bind(id)
        .execute(self.catalog.pool())
        .await?;
        Ok(())
    }

    /// Cancels a job: a queued one at once, a running one at its runner's next step
    /// (after a checkpoint). Returns the job as it is now.
    pub async fn cancel(&self, id: i64) -> Result<TrainingJob, JobError> {
        let job = self.get(id).await?;
        match job.state {
            JobState::Queued => {
                sqlx::query(
                    "UPDATE training_jobs SET state = 'cancelled', finished_at = ? \
                     WHERE id = ? AND state = 'queued'",
                )
                .bind(now())
                .bind(id)
                .execute(self.catalog.pool())
                .await?;
            }
            JobState::Running => {
                sqlx::query("UPDATE training_jobs SET cancel_requested = 1 WHERE id = ?")
                    .bind(id)
                    .execute(self.catalog.pool())
                    .await?;
            }
            state => {
                return Err(JobError::WrongState {
                    id,
                    state: state.to_string(),
                    action: "cancel",
                })
            }
        }
        self.get(id).await
    }

    /// Queues a cancelled or failed job again, to continue from its last checkpoint
    /// (now, or at `run_at`).
    pub async fn resume(&self, id: i64, run_at: Option<i64>) -> Result<TrainingJob, JobError> {
        let job = self.get(id).await?;
        if !matches!(job.state, JobState::Cancelled | JobState::Failed) {
            return Err(JobError::WrongState {
                id,
                state: job.state.to_string(),
                action: "resume",
            });
        }
        sqlx::query(
            "UPDATE training_jobs SET state = 'queued', run_at = ?, cancel_requested = 0, \
             finished_at = NULL WHERE id = ?",
        )
        .bind(run_at.unwrap_or_else(now))
        .bind(id)
        .execute(self.catalog.pool())
        .await?;
        self.get(id).await
    }
}

/// The next time the local clock shows `hh:mm` (today if still ahead, else
/// tomorrow), as unix seconds; `None` if `at` is not `HH:MM`.
pub fn next_local_time(at: &str) -> Option<i64> {
    let (h, m) = at.split_once(':')?;
    let (h, m): (i8, i8) = (h.trim().parse().ok()?, m.trim().parse().ok()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    let now = jiff::Zoned::now();
    let today = now
        .date()
        .at(h, m, 0, 0)
        .to_zoned(now.time_zone().clone())
        .ok()?;
    let when = if today > now {
        today
    } else {
        today.checked_add(jiff::Span::new().days(1)).ok()?
    };
    Some(when.timestamp().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn queue() -> (tempfile::TempDir, JobQueue) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite"))
            .await
            .unwrap();
        (dir, JobQueue::new(catalog))
    }

    #[tokio::test]
    async fn jobs_run_in_start_order_and_only_when_due() {
        let (_d, q) = queue().await;
        let later = q
            .submit("later", "/j/later".as_ref(), now() + 3600)
            .await
            .unwrap();
        let second = q.submit("b", "/j/b".as_ref(), now() - 5).await.unwrap();
        let first = q.submit("a", "/j/a".as_ref(), now() - 10).await.unwrap();
        assert_eq!(q.claim_next().await.unwrap().unwrap().id, first.id);
        assert_eq!(q.claim_next().await.unwrap().unwrap().id, second.id);
        assert!(
            q.claim_next().await.unwrap().is_none(),
            "`later` is not due"
        );
        assert_eq!(q.get(later.id).await.unwrap().state, JobState::Queued);
        let running = q.get(first.id).await.unwrap();
        assert_eq!(running.runner_pid, Some(std::process::id() as i64));
    }

    #[tokio::test]
    async fn cancel_resume_and_recovery_after_a_dead_runner() {
        let (_d, q) = queue().await;
        let a = q.submit("a", "/j/a".as_ref(), now()).await.unwrap();
        let b = q.submit("b", "/j/b".as_ref(), now() + 60).await.unwrap();
        // Queued: cancelled at once. Running: flagged for the runner.
        assert_eq!(q.cancel(b.id).await.unwrap().state, JobState::Cancelled);
        q.claim_next().await.unwrap().unwrap();
        let flagged = q.cancel(a.id).await.unwrap();
        assert_eq!(flagged.state, JobState::Running);
        let p = TrainingProgress {
            step: 3,
            total_steps: 10,
            loss: 1.5,
            lr: 1e-4,
            tokens_per_s: 100.0,
            eta_s: 7.0,
            eval_loss: None,
        };
        assert!(
            q.report(a.id, &p).await.unwrap(),
            "the runner sees the cancel request"
        );
        q.finish(a.id, JobState::Cancelled, None).await.unwrap();
        let a_now = q.get(a.id).await.unwrap();
        assert_eq!(
            (a_now.state, a_now.step, a_now.loss),
            (JobState::Cancelled, 3, Some(1.5))
        );
        assert!(matches!(
            q.cancel(a.id).await,
            Err(JobError::WrongState { .. })
        ));
        assert_eq!(q.resume(a.id, None).await.unwrap().state, JobState::Queued);

        // A runner that died (pid gone) leaves its job running: recovery re-queues it.
        q.claim_next().await.unwrap().unwrap();
        sqlx::query("UPDATE training_jobs SET runner_pid = 999999999 WHERE id = ?")
            .bind(a.id)
            .execute(q.catalog.pool())
            .await
            .unwrap();
        assert_eq!(q.recover_interrupted().await.unwrap(), vec![a.id]);
        assert_eq!(q.get(a.id).await.unwrap().state, JobState::Queued);
        assert!(matches!(q.get(99).await, Err(JobError::NotFound(99))));
    }

    #[test]
    fn start_times_are_the_next_occurrence() {
        let t = next_local_time("23:59").unwrap();
        assert!(t > now() && t <= now() + 24 * 3600);
        assert!(next_local_time("24:00").is_none());
        assert!(next_local_time("tonight").is_none());
    }
}
