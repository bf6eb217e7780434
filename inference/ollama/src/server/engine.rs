//! The embedded LLM on its own thread, behind a bounded queue.
//!
//! Generation is CPU-bound, synchronous and mutates the model's KV cache, so one OS thread
//! owns the [`LlmModel`] and runs one request at a time, as Ollama runs one sequence per
//! model by default (`OLLAMA_NUM_PARALLEL=1`). Requests wait in a queue of bounded depth;
//! when it is full a new one is refused at once (Ollama's `OLLAMA_MAX_QUEUE`, 503 "server
//! busy") rather than waiting unboundedly. Text reaches the HTTP side through a small channel:
//! when the client goes away the channel closes and generation stops at the next token.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Instant;

use infermesh_common::metrics_names::{LLM_PENDING_REQUESTS, LLM_QUEUE_WAIT_SECONDS};
use infermesh_llm::{
    ChatMessage, GenerateOutput, GenerateRequest, LlmError, LlmModel, ModelInfo, Prompt,
};
use tokio::sync::mpsc;

/// What a running generation sends back.
#[derive(Debug)]
pub(crate) enum Event {
    /// The job left the queue and the prompt is being evaluated.
    Started,
    /// Generated text (whole characters, never part of a stop string).
    Text(String),
    /// The end: the counters, or why it failed.
    Done(Result<GenerateOutput, LlmError>),
}

/// What to continue, turned into tokens on the model thread (which owns the tokenizer and the
/// chat template).
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Text sent as it is (`raw: true`).
    Raw(String),
    /// Messages through the chat template, ending with the assistant's header.
    Chat(Vec<ChatMessage>),
    /// Earlier token ids (`context`), then messages through the chat template.
    Continue(Vec<u32>, Vec<ChatMessage>),
}

/// One generation: the input and Ollama's options.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) input: Input,
    pub(crate) request: GenerateRequest,
}

struct Job {
    work: Work,
    events: mpsc::Sender<Event>,
    enqueued: Instant,
    cancel: Arc<AtomicBool>,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue is full.
    Busy,
    /// The model thread has stopped.
    Stopped,
}

/// Cancels its job when dropped (the HTTP response went away), unless disarmed.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The handle the HTTP side holds.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    jobs: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    info: Arc<ModelInfo>,
    load_duration: u64,
}

impl Engine {
    /// Starts the model thread for `model`, with at most `max_queue` requests waiting
    /// besides the one running.
    pub(crate) fn start(model: LlmModel, max_queue: usize) -> std::io::Result<Self> {
        let info = Arc::new(model.info().clone());
        let load_duration = u64::try_from(model.load_duration().as_nanos()).unwrap_or(u64::MAX);
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(max_queue);
        let pending = Arc::new(AtomicUsize::new(0));
        let worker_pending = pending.clone();
        std::thread::Builder::new()
            .name("llm".into())
            .spawn(move || {
                let mut model = model;
                while let Ok(job) = receiver.recv() {
                    run_job(&mut model, job);
                    let left = worker_pending.fetch_sub(1, Ordering::Relaxed) - 1;
                    metrics::gauge!(LLM_PENDING_REQUESTS).set(left as f64);
                }
            })?;
        Ok(Self {
            jobs,
            pending,
            max_pending: max_queue + 1,
            info,
            load_duration,
        })
    }

    /// What the model file says of itself.
    pub(crate) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// How long loading took, nanoseconds.
    pub(crate) fn load_duration(&self) -> u64 {
        self.load_duration
    }

    /// Queues `request`; its events arrive on the returned receiver. The guard cancels the
    /// job when dropped (before it starts, it is skipped).
    pub(crate) fn submit(
        &self,
        mut work: Work,
    ) -> Result<(mpsc::Receiver<Event>, CancelOnDrop), SubmitError> {
        // Counted before the send so the worker's decrement can never run first.
        let before = self.pending.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(SubmitError::Busy);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        work.request.cancel = Some(cancel.clone());
        let (events, receiver) = mpsc::channel(64);
        let job = Job {
            work,
            events,
            enqueued: Instant::now(),
            cancel: cancel.clone(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                metrics::gauge!(LLM_PENDING_REQUESTS).set((before + 1) as f64);
                Ok((receiver, CancelOnDrop(cancel)))
            }
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Busy,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

fn run_job(model: &mut LlmModel, job: Job) {
    metrics::histogram!(LLM_QUEUE_WAIT_SECONDS).record(job.enqueued.elapsed().as_secs_f64());
    if job.cancel.load(Ordering::Relaxed) || job.events.blocking_send(Event::Started).is_err() {
        return; // the caller left while the job was queued
    }
    let Job { work, events, .. } = job;
    let events = &events;
    let mut request = work.request;
    let result = prompt(model, work.input).and_then(|p| {
        request.prompt = p;
        model.generate(&request, |text| {
            match events.blocking_send(Event::Text(text.to_string())) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        })
    });
    let _ = events.blocking_send(Event::Done(result));
}

fn prompt(model: &LlmModel, input: Input) -> Result<Prompt, LlmError> {
    Ok(match input {
        Input::Raw(text) => Prompt::Text(text),
        Input::Chat(messages) => Prompt::Text(model.chat_prompt(&messages, true)?),
        Input::Continue(mut ids, messages) => {
            let text = model.chat_prompt(&messages, true)?;
            ids.extend(model.tokenizer().encode(&text)?);
            Prompt::Tokens(ids)
        }
    })
}
