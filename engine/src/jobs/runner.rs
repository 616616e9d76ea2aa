//! The training-job runner: the one loop that works through the queue, whoever hosts
//! it — `kura jobs run` in a terminal, `kura serve --run-jobs` inside the server, or
//! the desktop app.
//!
//! One job goes: recover (jobs left `running` by a dead runner go back in the queue)
//! → claim (atomic, so two runners never take the same job) → train, reporting every
//! step as the heartbeat and reading the cancel flag back → publish the adapter to
//! `<data>/adapters/NAME/` → score it against the base model (its report) → finish.
//! The host only says what to show: every stage reaches it as a [`RunnerEvent`]
//! through its [`RunnerObserver`]. Stopping the runner (Ctrl-C, server shutdown)
//! ends the running job at its next step with a checkpoint and puts it back in the
//! queue, so the next runner resumes it where it stopped.
//!
//! The queue lives in SQLite behind async calls; the training is CPU-bound and
//! blocking. The runner therefore runs on a thread of its own and drives the queue
//! through a Tokio runtime [`Handle`] (a multi-threaded runtime's).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::runtime::Handle;

use super::{JobError, JobQueue, JobState, TrainingJob, TrainingProgress};
use crate::adapters::{report, AdapterError, AdapterRegistry};
use crate::paths::Paths;
use crate::train::evaluate::EvalProgress;
use crate::train::{AdapterReport, StepReport, TrainError, TrainOutcome, TrainRun, Trainer};

/// Why the runner (not one job) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The queue could not be read or written.
    #[error(transparent)]
    Queue(#[from] JobError),
}

/// Why one job failed; recorded as the job's error, and the runner goes on.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// The job's folder could not be opened.
    #[error("opening the job folder {}: {source}", .folder.display())]
    Folder {
        /// The folder.
        folder: PathBuf,
        /// Why.
        source: TrainError,
    },
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The adapter could not be published.
    #[error(transparent)]
    Publish(#[from] AdapterError),
    /// The queue could not record a step.
    #[error(transparent)]
    Queue(#[from] JobError),
}

/// What the runner tells its host.
#[derive(Debug)]
pub enum RunnerEvent<'a> {
    /// A job left running by a runner that is gone is queued again.
    Recovered(i64),
    /// Training of a claimed job starts (at `resumed_at` > 0 after a checkpoint).
    Started {
        /// The job.
        job: &'a TrainingJob,
        /// The step it resumes from.
        resumed_at: u64,
        /// Its steps in all.
        total_steps: u64,
    },
    /// A step is done.
    Step {
        /// The job.
        job: &'a TrainingJob,
        /// The step.
        report: &'a StepReport,
    },
    /// The finished job's adapter is published.
    Published {
        /// The job.
        job: &'a TrainingJob,
        /// How training ended.
        outcome: &'a TrainOutcome,
        /// `<data>/adapters/NAME`.
        adapter: &'a Path,
    },
    /// The base-vs-adapter report is being made.
    Scoring {
        /// The job.
        job: &'a TrainingJob,
        /// Where scoring is.
        progress: EvalProgress,
    },
    /// The report is written (next to the job and the adapter).
    Reported {
        /// The job.
        job: &'a TrainingJob,
        /// The report.
        report: &'a AdapterReport,
    },
    /// The report failed; the adapter is published all the same.
    ReportFailed {
        /// The job.
        job: &'a TrainingJob,
        /// Why.
        error: &'a AdapterError,
    },
    /// The job ended in `state` (`queued`: the runner was stopped; it resumes later).
    Finished {
        /// The job.
        job: &'a TrainingJob,
        /// Its new state.
        state: JobState,
        /// Why it failed.
        error: Option<&'a JobFailure>,
    },
}

/// A runner's host: shows what the runner does.
pub trait RunnerObserver {
    /// One event.
    fn event(&mut self, event: RunnerEvent<'_>);
}

/// An observer that writes each event to the log (`tracing`): the server's.
#[derive(Debug, Default)]
pub struct LogObserver;

impl RunnerObserver for LogObserver {
    fn event(&mut self, event: RunnerEvent<'_>) {
        match event {
            RunnerEvent::Recovered(id) => {
                tracing::warn!("training job #{id} was interrupted: queued again to resume")
            }
            RunnerEvent::Started {
                job, resumed_at, ..
            } => tracing::info!(
                "training job #{} `{}` starts (from step {resumed_at})",
                job.id,
                job.name
            ),
            RunnerEvent::Step { .. } | RunnerEvent::Scoring { .. } => {}
            RunnerEvent::Published { job, adapter, .. } => tracing::info!(
                "training job #{}: adapter published to {}",
                job.id,
                adapter.display()
            ),
            RunnerEvent::Reported { job, report } => {
                tracing::info!("training job #{}: {}", job.id, report.summary)
            }
            RunnerEvent::ReportFailed { job, error } => tracing::warn!(
                "training job #{}: the base-vs-adapter report failed: {error} (the adapter is saved)",
                job.id
            ),
            RunnerEvent::Finished { job, state, error } => match error {
                Some(e) => tracing::warn!("training job #{} failed: {e}", job.id),
                None => tracing::info!("training job #{} {state}", job.id),
            },
        }
    }
}

/// How a runner works through the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Return when no job is due instead of waiting for the next one.
    pub once: bool,
    /// Time between looks at the queue while idle.
    pub poll: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            once: false,
            poll: Duration::from_secs(30),
        }
    }
}

/// The runner of one data folder's queue, training on one device.
#[derive(Debug, Clone)]
pub struct JobRunner {
    queue: JobQueue,
    adapters: AdapterRegistry,
    device: Device,
    handle: Handle,
}

impl JobRunner {
    /// A runner over `queue` that publishes into the adapters of `paths` and trains on
    /// `device`; `handle` drives the queue's queries (a multi-threaded runtime's: the
    /// runner blocks its own thread on them).
    pub fn new(queue: JobQueue, paths: &Paths, device: Device, handle: Handle) -> Self {
        Self {
            queue,
            adapters: AdapterRegistry::new(paths),
            device,
            handle,
        }
    }

    /// Works through the queue until `stop` is set (or, with `options.once`, until no
    /// job is due). A job running when `stop` is set ends at its next step, with a
    /// checkpoint, and goes back in the queue.
    pub fn run(
        &self,
        stop: &AtomicBool,
        options: RunnerOptions,
        observer: &mut dyn RunnerObserver,
    ) -> Result<(), RunnerError> {
        loop {
            for id in self.handle.block_on(self.queue.recover_interrupted())? {
                observer.event(RunnerEvent::Recovered(id));
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some(job) = self.handle.block_on(self.queue.claim_next())? else {
                if options.once {
                    return Ok(());
                }
                let ticks = (options.poll.as_millis() / 100).max(1);
                for _ in 0..ticks {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            };
            let (state, error) = match self.train(&job, stop, observer) {
                Ok(state) => (state, None),
                Err(e) => (JobState::Failed, Some(e)),
            };
            let text = error.as_ref().map(|e| e.to_string());
            self.handle
                .block_on(self.queue.finish(job.id, state, text.as_deref()))?;
            observer.event(RunnerEvent::Finished {
                job: &job,
                state,
                error: error.as_ref(),
            });
        }
    }

    /// Trains one claimed job, publishes and scores its adapter when it finishes;
    /// returns the state it ends in.
    fn train(
        &self,
        job: &TrainingJob,
        stop_all: &AtomicBool,
        observer: &mut dyn RunnerObserver,
    ) -> Result<JobState, JobFailure> {
        let run = TrainRun::open(&job.folder).map_err(|source| JobFailure::Folder {
            folder: job.folder.clone(),
            source,
        })?;
        let name = run.job.name.clone();
        let mut trainer = Trainer::new(run, &self.device)?;
        observer.event(RunnerEvent::Started {
            job,
            resumed_at: trainer.step_count(),
            total_steps: trainer.total_steps(),
        });
        let stop = AtomicBool::new(self.handle.block_on(self.queue.cancel_requested(job.id))?);
        let cancelled = AtomicBool::new(stop.load(Ordering::SeqCst));
        let mut report_err: Option<JobError> = None;
        let mut on_step = |r: &StepReport| {
            observer.event(RunnerEvent::Step { job, report: r });
            match self
                .handle
                .block_on(self.queue.report(job.id, &TrainingProgress::from(r)))
            {
                Ok(true) => {
                    cancelled.store(true, Ordering::SeqCst);
                    stop.store(true, Ordering::SeqCst);
                }
                Ok(false) => {}
                Err(e) => report_err = Some(e),
            }
            if stop_all.load(Ordering::SeqCst) {
                stop.store(true, Ordering::SeqCst);
            }
        };
        let outcome = trainer.run(Some(&stop), &mut on_step)?;
        drop(trainer);
        if let Some(e) = report_err {
            return Err(e.into());
        }
        if !outcome.finished {
            return Ok(if cancelled.load(Ordering::SeqCst) {
                JobState::Cancelled
            } else {
                JobState::Queued
            });
        }
        let adapter = match &outcome.adapter {
            Some(from) => self.adapters.publish(&name, from)?,
            None => self.adapters.dir().join(&name),
        };
        observer.event(RunnerEvent::Published {
            job,
            outcome: &outcome,
            adapter: &adapter,
        });
        if outcome.base_eval_loss.is_some() {
            let scored = report::after_training(
                &job.folder,
                &adapter,
                &self.device,
                Some(stop_all),
                &mut |progress| observer.event(RunnerEvent::Scoring { job, progress }),
            );
            match scored {
                Ok(Some(report)) => observer.event(RunnerEvent::Reported {
                    job,
                    report: &report,
                }),
                Ok(None) => {}
                Err(error) => observer.event(RunnerEvent::ReportFailed { job, error: &error }),
            }
        }
        Ok(JobState::Done)
    }
}

/// A runner working on a thread of its own (inside `kura serve` and the desktop app).
#[derive(Debug)]
pub struct BackgroundRunner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundRunner {
    /// Starts `runner` on a new thread, logging what it does.
    pub fn spawn(runner: JobRunner, options: RunnerOptions) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kura-job-runner".into())
            .spawn(move || {
                if let Err(e) = runner.run(&flag, options, &mut LogObserver) {
                    tracing::error!("the training-job runner stopped: {e}");
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the runner thread is still working.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Asks the runner to stop: a running job checkpoints at its next step and goes
    /// back in the queue. Returns at once; [`Self::stop`] waits.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Asks the runner to stop and waits until it has. Blocking.
    pub fn stop(mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BackgroundRunner {
    fn drop(&mut self) {
        self.request_stop();
    }
}

impl From<&StepReport> for TrainingProgress {
    fn from(r: &StepReport) -> Self {
        TrainingProgress {
            step: r.step,
            total_steps: r.total_steps,
            loss: r.loss,
            lr: r.lr,
            tokens_per_s: r.tokens_per_s,
            eta_s: r.eta_s,
            eval_loss: r.eval_loss,
        }
    }
}
