//! Running one generation for one request: in line, on a blocking thread, cancellable.
//!
//! [`spawn_generation`] starts a small async task that waits in the [`Scheduler`]'s
//! queue and then runs the engine's `generate` on a blocking thread
//! (`spawn_blocking`), never on the async executor: a forward pass takes tens of
//! milliseconds of pure CPU and would otherwise stall every other connection. Each
//! generation gets a fresh [`Session`](crate::llm::Session) (its own KV cache) over
//! the shared read-only weights, so concurrent requests cannot see or disturb each
//! other's state.
//!
//! The request side holds a [`JobHandle`]: the receiving end of the job's events and
//! its cancel flag. Dropping the handle — which happens when axum drops the response
//! future (non-streaming) or the SSE body (streaming) because the client went away —
//! sets the flag; the engine checks it before every token, so an abandoned generation
//! stops within one token and frees its slot for the next request in line. A job that
//! is still waiting in the queue notices the dropped handle (its channel closes) and
//! leaves the queue without ever running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::error::ApiError;
use super::loaded::ChatRoute;
use super::queue::{Outcome, Scheduler};
use crate::llm::{generate, FinishReason, GenerateParams, Generation};

/// What a running job reports to the request that started it.
#[derive(Debug)]
pub enum JobEvent {
    /// The job got a slot and is starting on the prompt.
    Started,
    /// A piece of generated text (whole UTF-8 characters; only when streaming).
    Text(String),
    /// The generation ended; the text is in `Generation::text`.
    Done(Box<Generation>),
    /// The job could not run or failed.
    Error(ApiError),
}

/// A generation to run.
#[derive(Debug, Clone)]
pub struct GenerationJob {
    /// The model (and adapters) to run.
    pub route: ChatRoute,
    /// The prompt's token ids (chat template already applied).
    pub prompt: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerateParams,
    /// The most tokens the session may hold (prompt + completion).
    pub context_length: usize,
    /// Send [`JobEvent::Text`] for each piece (streaming responses).
    pub stream_text: bool,
}

/// The request's end of a job: its events, and cancellation when dropped.
#[derive(Debug)]
pub struct JobHandle {
    /// Events from the job, ending with `Done` or `Error`.
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    cancel: Arc<AtomicBool>,
}

impl JobHandle {
    /// Waits for the job to end and returns its generation (non-streaming use).
    pub async fn finish(mut self) -> Result<Generation, ApiError> {
        while let Some(ev) = self.events.recv().await {
            match ev {
                JobEvent::Started | JobEvent::Text(_) => {}
                JobEvent::Done(g) => return Ok(*g),
                JobEvent::Error(e) => return Err(e),
            }
        }
        Err(ApiError::internal(
            "the generation worker stopped without an answer",
        ))
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        // Harmless when the job already finished; stops it when it has not.
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Queues `job` and runs it when its turn comes; see the module docs.
pub fn spawn_generation(scheduler: &Arc<Scheduler>, job: GenerationJob) -> JobHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let handle = JobHandle {
        events: rx,
        cancel: cancel.clone(),
    };
    let scheduler = scheduler.clone();
    tokio::spawn(async move {
        let slot = tokio::select! {
            slot = scheduler.admit(cancel.clone()) => slot,
            // The client left while waiting: leave the queue.
            () = tx.closed() => return,
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(e) => {
                let _ = tx.send(JobEvent::Error(e));
                return;
            }
        };
        let _ = tx.send(JobEvent::Started);
        let worker_tx = tx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let tx = worker_tx;
            let started = Instant::now();
            let llm = &job.route.llm;
            let mut session = llm.model.new_session();
            session.set_context_length(job.context_length);
            session.set_adapters(job.route.adapters.clone());
            let mut on_text = |piece: &str| {
                if job.stream_text && tx.send(JobEvent::Text(piece.to_string())).is_err() {
                    cancel.store(true, Ordering::SeqCst);
                }
            };
            let result = generate(
                &llm.model,
                &llm.tokenizer,
                &mut session,
                &job.prompt,
                &job.params,
                Some(&cancel),
                &mut on_text,
            );
            // Count before the slot is freed, so the next request in line already
            // sees this one in the counters.
            match &result {
                Ok(g) if g.finish_reason == FinishReason::Cancelled => {
                    slot.finish(Outcome::Cancelled, g.generated_tokens);
                    tracing::info!(
                        model = %job.route.name,
                        "generation cancelled after {} of at most {} tokens ({:.1} s)",
                        g.generated_tokens,
                        job.params.max_tokens,
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(g) => {
                    slot.finish(Outcome::Completed, g.generated_tokens);
                    tracing::info!(
                        model = %job.route.name,
                        "generated {} tokens after a {}-token prompt ({:.1} tok/s decode, {:?})",
                        g.generated_tokens,
                        g.prompt_tokens,
                        g.decode_tokens_per_second(),
                        g.finish_reason
                    );
                }
                Err(e) => {
                    slot.finish(Outcome::Failed, 0);
                    tracing::warn!(model = %job.route.name, "generation failed: {e}");
                }
            }
            drop(slot);
            result
        })
        .await;
        let event = match joined {
            Ok(Ok(g)) => JobEvent::Done(Box::new(g)),
            Ok(Err(e)) => JobEvent::Error(e.into()),
            Err(e) => JobEvent::Error(ApiError::internal(format!(
                "the generation worker crashed: {e}"
            ))),
        };
        let _ = tx.send(event);
    });
    handle
}
