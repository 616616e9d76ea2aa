//! Running one generation for one request: in line, on a blocking thread, cancellable.
//!
//! [`spawn_generation`] starts a small async task that waits in the [`Scheduler`]'s
//! queue and then runs the engine's `generate` on a blocking thread
//! (`spawn_blocking`), never on the async executor: a forward pass takes tens of
//! milliseconds of pure CPU and would otherwise stall every other connection. Each
//! generation gets a fresh [`Session`](kura::llm::Session) (its own KV cache) over
//! the shared read-only weights, so concurrent requests cannot see or disturb each
//! other's state.
//!
//! The request side holds a [`GenerationHandle`]: the receiving end of the generation's events and
//! its cancel flag. Dropping the handle — which happens when axum drops the response
//! future (non-streaming) or the SSE body (streaming) because the client went away —
//! sets the flag; the engine checks it before every token, so an abandoned generation
//! stops within one token and frees its slot for the next request in line. A generation that
//! is still waiting in the queue notices the dropped handle (its channel closes) and
//! leaves the queue without ever running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::error::ApiError;
use super::queue::{Outcome, Scheduler};
use kura::llm::{generate, FinishReason, GenerateParams, Generation};
use kura::pool::ChatRoute;

/// What a running generation reports to the request that started it.
#[derive(Debug)]
pub enum GenerationEvent {
    /// The generation got a slot and is starting on the prompt.
    Started,
    /// A piece of generated text (whole UTF-8 characters; only when streaming).
    Text(String),
    /// The generation ended; the text is in `Generation::text`.
    Done(Box<Generation>),
    /// The generation could not run or failed.
    Error(ApiError),
}

/// A generation to run.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The model (and adapters) to run.
    pub route: ChatRoute,
    /// The prompt's token ids (chat template already applied).
    pub prompt: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerateParams,
    /// The most tokens the session may hold (prompt + completion).
    pub context_length: usize,
    /// Send [`GenerationEvent::Text`] for each piece (streaming responses).
    pub stream_text: bool,
}

/// The request's end of a generation: its events, and cancellation when dropped.
#[derive(Debug)]
pub struct GenerationHandle {
    /// Events from the generation, ending with `Done` or `Error`.
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
    cancel: Arc<AtomicBool>,
}

impl GenerationHandle {
    /// Waits for the generation to end and returns its generation (non-streaming use).
    pub async fn finish(mut self) -> Result<Generation, ApiError> {
        while let Some(ev) = self.events.recv().await {
            match ev {
                GenerationEvent::Started | GenerationEvent::Text(_) => {}
                GenerationEvent::Done(g) => return Ok(*g),
                GenerationEvent::Error(e) => return Err(e),
            }
        }
        Err(ApiError::internal(
            "the generation worker stopped without an answer",
        ))
    }
}

impl Drop for GenerationHandle {
    fn drop(&mut self) {
        // Harmless when the generation already finished; stops it when it has not.
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Queues `request` and runs it when its turn comes; see the module docs.
pub fn spawn_generation(
    scheduler: &Arc<Scheduler>,
    request: GenerationRequest,
) -> GenerationHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let handle = GenerationHandle {
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
                let _ = tx.send(GenerationEvent::Error(e));
                return;
            }
        };
        let _ = tx.send(GenerationEvent::Started);
        let worker_tx = tx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let tx = worker_tx;
            let started = Instant::now();
            let llm = &request.route.llm;
            let mut session = llm.model.new_session();
            session.set_context_length(request.context_length);
            session.set_adapters(request.route.adapters.clone());
            let mut on_text = |piece: &str| {
                if request.stream_text && tx.send(GenerationEvent::Text(piece.to_string())).is_err()
                {
                    cancel.store(true, Ordering::SeqCst);
                }
            };
            let result = generate(
                &llm.model,
                &llm.tokenizer,
                &mut session,
                &request.prompt,
                &request.params,
                Some(&cancel),
                &mut on_text,
            );
            // Count before the slot is freed, so the next request in line already
            // sees this one in the counters.
            match &result {
                Ok(g) if g.finish_reason == FinishReason::Cancelled => {
                    slot.finish(Outcome::Cancelled, g.generated_tokens);
                    tracing::info!(
                        model = %request.route.name,
                        "generation cancelled after {} of at most {} tokens ({:.1} s)",
                        g.generated_tokens,
                        request.params.max_tokens,
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(g) => {
                    slot.finish(Outcome::Completed, g.generated_tokens);
                    tracing::info!(
                        model = %request.route.name,
                        "generated {} tokens after a {}-token prompt ({:.1} tok/s decode, {:?})",
                        g.generated_tokens,
                        g.prompt_tokens,
                        g.decode_tokens_per_second(),
                        g.finish_reason
                    );
                }
                Err(e) => {
                    slot.finish(Outcome::Failed, 0);
                    tracing::warn!(model = %request.route.name, "generation failed: {e}");
                }
            }
            drop(slot);
            result
        })
        .await;
        let event = match joined {
            Ok(Ok(g)) => GenerationEvent::Done(Box::new(g)),
            Ok(Err(e)) => GenerationEvent::Error(e.into()),
            Err(e) => GenerationEvent::Error(ApiError::internal(format!(
                "the generation worker crashed: {e}"
            ))),
        };
        let _ = tx.send(event);
    });
    handle
}
