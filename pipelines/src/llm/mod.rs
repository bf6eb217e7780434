//! The LLM side channel: jobs that ask an Ollama-API LLM for review sentiment, theme labels,
//! fraud reason summaries, skill fills and recommendation explanations.
//!
//! API paths [`enqueue`](queue::JobQueue::enqueue) a job and return its id at once; the
//! [`worker`] takes jobs at a bounded concurrency, runs each through the [`sanitise`]r (every
//! input), the output [`cache`] (identical requests never reach the LLM twice) and the
//! [`OllamaClient`](infermesh_ollama::OllamaClient), and hands results to a
//! [`JobSink`](sink::JobSink) (Redis keys and Pub/Sub, or in process).

pub mod cache;
pub mod jobs;
pub mod queue;
pub mod sanitise;
pub mod sink;
pub mod worker;

pub use cache::{CacheConfig, CacheKey, OutputCache};
pub use jobs::{JobError, JobInput, JobKind, JobOutput, LlmJobs, Sentiment};
pub use queue::{JobQueue, QueueConfig, QueueError, QueuedJob};
pub use sanitise::{SanitiseReport, Sanitised, Sanitiser, TokenCounter};
pub use sink::{JobOutcome, JobResult, JobSink, MemoryResultSink, RedisResultSink};
pub use worker::{
    LlmWorkerArgs, LlmWorkerConfig, RunningLlmWorker, WorkerSettings, run, start, start_on,
};
