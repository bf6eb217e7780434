//! `infermesh pipeline llm`: the worker that takes LLM jobs from the queue and runs them at a
//! bounded concurrency, each under a deadline, retrying with exponential backoff and
//! dead-lettering after the last attempt. `infermesh up` runs the same worker in process
//! ([`start`] with in-memory queue, cache and results). With `--database-url` (feature
//! `reviews`), finished theme-label jobs are written to the reviews pipeline's tables
//! ([`TopicLabelSink`](crate::reviews::labels::TopicLabelSink)) before they are acknowledged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_common::metrics_names::{
    LLM_JOB_DEAD_LETTERS_TOTAL, LLM_JOB_ERRORS_TOTAL, LLM_JOB_QUEUE_WAIT_SECONDS,
    LLM_JOB_RETRIES_TOTAL, LLM_JOB_SECONDS, LLM_JOBS_TOTAL,
};
use infermesh_common::{shutdown, telemetry};
use infermesh_ollama::{DEFAULT_OLLAMA_URL, OllamaClient};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::bus::BoxFuture;
use crate::llm::cache::{CacheConfig, OutputCache};
use crate::llm::jobs::{JobInput, LlmJobs};
use crate::llm::queue::{JobQueue, QueueConfig, QueuedJob, Taken, now_ms};
use crate::llm::sanitise::{DEFAULT_MAX_TOKENS, Sanitiser};
use crate::llm::sink::{
    FanoutSink, JobOutcome, JobResult, JobSink, MemoryResultSink, RedisResultSink,
};

/// The model jobs ask for by default (Ollama's name for SmolLM2-135M-Instruct, which
/// `infermesh llm serve` serves).
pub const DEFAULT_MODEL: &str = "smollm2:135m";
/// The worker's default metrics port (pipelines use 8083 and up).
pub const DEFAULT_METRICS_PORT: u16 = 8087;

/// Flags of `infermesh pipeline llm`.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmWorkerArgs {
    /// Redis for the job queue, the output cache and results (e.g. redis://127.0.0.1:6379);
    /// unset: all three in this process's memory.
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The Ollama API (a real Ollama or `infermesh llm serve`).
    #[arg(long, env = "INFERMESH_OLLAMA_URL", default_value = DEFAULT_OLLAMA_URL)]
    pub ollama_url: String,
    /// The model jobs ask for.
    #[arg(long, env = "INFERMESH_LLM_JOB_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Jobs run at once (LLM calls in flight).
    #[arg(long, env = "INFERMESH_LLM_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Deadline of one attempt (cache, LLM call and parsing), in milliseconds.
    #[arg(long, env = "INFERMESH_LLM_JOB_TIMEOUT_MS", default_value_t = 60_000)]
    pub job_timeout_ms: u64,
    /// Attempts before a job is dead-lettered.
    #[arg(long, env = "INFERMESH_LLM_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubled on each further attempt (at most 60 s).
    #[arg(long, env = "INFERMESH_LLM_BACKOFF_MS", default_value_t = 1000)]
    pub backoff_ms: u64,
    /// Jobs that may wait; more are refused at once (HTTP 429 at the API).
    #[arg(long, env = "INFERMESH_LLM_QUEUE_DEPTH", default_value_t = 1000)]
    pub queue_depth: usize,
    /// How long an LLM answer stays cached, in seconds.
    #[arg(long, env = "INFERMESH_LLM_CACHE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub cache_ttl_secs: u64,
    /// How long a job's result is kept in Redis, in seconds.
    #[arg(long, env = "INFERMESH_LLM_RESULT_TTL_SECS", default_value_t = 24 * 3600)]
    pub result_ttl_secs: u64,
    /// Prefix of every Redis key and channel.
    #[arg(
        long,
        env = "INFERMESH_LLM_KEY_PREFIX",
        default_value = "infermesh:llm:"
    )]
    pub key_prefix: String,
    /// A GGUF file whose tokenizer counts prompt tokens (the model's own); unset: a
    /// pessimistic estimate.
    #[arg(long, env = "INFERMESH_LLM_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// Most tokens of user text per input.
    #[arg(long, env = "INFERMESH_LLM_MAX_INPUT_TOKENS", default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_input_tokens: usize,
    /// Address of the metrics listener.
    #[arg(long, env = "INFERMESH_LLM_WORKER_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port of `/metrics`; 0 picks a free one and prints it.
    #[arg(long, env = "INFERMESH_LLM_WORKER_METRICS_PORT", default_value_t = DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// PostgreSQL of the reviews pipeline (postgres://user[:password]@host[:port]/db): a
    /// finished theme-label job's label is written to its `topic_labels` table and to the
    /// topic's rows of `reviews` before the job is acknowledged. Unset: results go to Redis
    /// (or memory) only.
    #[cfg(feature = "reviews")]
    #[arg(long, env = "INFERMESH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Schema of those tables (the reviews pipeline's --database-schema).
    #[cfg(feature = "reviews")]
    #[arg(long, env = "INFERMESH_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
}

impl Default for LlmWorkerArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            ollama_url: DEFAULT_OLLAMA_URL.into(),
            model: DEFAULT_MODEL.into(),
            concurrency: 1,
            job_timeout_ms: 60_000,
            max_attempts: 3,
            backoff_ms: 1000,
            queue_depth: 1000,
            cache_ttl_secs: 7 * 24 * 3600,
            result_ttl_secs: 24 * 3600,
            key_prefix: "infermesh:llm:".into(),
            tokenizer: None,
            max_input_tokens: DEFAULT_MAX_TOKENS,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics_port: DEFAULT_METRICS_PORT,
            #[cfg(feature = "reviews")]
            database_url: None,
            #[cfg(feature = "reviews")]
            database_schema: None,
        }
    }
}

/// Where theme labels are written (the reviews pipeline's PostgreSQL); the URL's password is
/// not shown by `Debug`.
#[cfg(feature = "reviews")]
#[derive(Clone)]
pub struct LabelDatabase {
    /// PostgreSQL URL.
    pub url: String,
    /// Schema of `reviews` and `topic_labels`.
    pub schema: Option<String>,
}

#[cfg(feature = "reviews")]
impl std::fmt::Debug for LabelDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelDatabase")
            .field("url", &crate::reviews::service::redact_url(&self.url))
            .field("schema", &self.schema)
            .finish()
    }
}

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A flag is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The tokenizer file could not be read.
    #[error("cannot read the tokenizer: {0}")]
    Tokenizer(String),
    /// Binding the metrics listener failed.
    #[error("metrics listener: {0}")]
    Metrics(String),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// The theme labels' database is unreachable or its migration failed.
    #[cfg(feature = "reviews")]
    #[error(transparent)]
    Store(#[from] crate::reviews::store::StoreError),
}

/// How the worker loop runs jobs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs at once.
    pub concurrency: usize,
    /// Deadline of one attempt.
    pub job_timeout: Duration,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay (doubled per attempt).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Longest wait for a job in one take (also how soon shutdown is noticed).
    pub poll: Duration,
    /// How often due retries are promoted and expired leases recovered.
    pub maintain_every: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 1,
            job_timeout: Duration::from_secs(60),
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            maintain_every: Duration::from_millis(200),
        }
    }
}

impl WorkerSettings {
    /// The delay before the attempt after failed attempt `attempt` (1-based).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Checked configuration of the worker.
#[derive(Debug, Clone)]
pub struct LlmWorkerConfig {
    /// Redis, or none for memory.
    pub redis_url: Option<String>,
    /// The Ollama API.
    pub ollama_url: String,
    /// The model.
    pub model: String,
    /// Loop settings.
    pub settings: WorkerSettings,
    /// Queue settings.
    pub queue: QueueConfig,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Result TTL.
    pub result_ttl: Duration,
    /// Tokenizer file.
    pub tokenizer: Option<PathBuf>,
    /// Token cap of user text.
    pub max_input_tokens: usize,
    /// Metrics listener; none serves no metrics (the embedding process does).
    pub metrics_addr: Option<SocketAddr>,
    /// Where theme labels are written, if anywhere.
    #[cfg(feature = "reviews")]
    pub label_database: Option<LabelDatabase>,
}

impl LlmWorkerArgs {
    /// Checks the flags.
    pub fn validate(self) -> Result<LlmWorkerConfig, WorkerError> {
        let bad = |m: String| Err(WorkerError::Config(m));
        if self.concurrency == 0 || self.concurrency > 256 {
            return bad(format!("--concurrency {} (1 to 256)", self.concurrency));
        }
        if self.max_attempts == 0 {
            return bad("--max-attempts 0 (at least 1)".into());
        }
        if self.queue_depth == 0 {
            return bad("--queue-depth 0 (at least 1)".into());
        }
        if self.job_timeout_ms < 10 {
            return bad(format!(
                "--job-timeout-ms {} (at least 10)",
                self.job_timeout_ms
            ));
        }
        if self.max_input_tokens < 16 {
            return bad(format!(
                "--max-input-tokens {} (at least 16)",
                self.max_input_tokens
            ));
        }
        if self.cache_ttl_secs == 0 || self.result_ttl_secs == 0 {
            return bad("--cache-ttl-secs and --result-ttl-secs must be at least 1".into());
        }
        OllamaClient::new(&self.ollama_url, Duration::from_secs(1))
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        let redis_url = self.redis_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str())
                .map_err(|e| WorkerError::Config(format!("--redis-url: {e}")))?;
        }
        if let Some(path) = &self.tokenizer
            && !path.is_file()
        {
            return bad(format!("--tokenizer {}: no such file", path.display()));
        }
        #[cfg(feature = "reviews")]
        let label_database = match self.database_url.filter(|u| !u.trim().is_empty()) {
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return bad(format!(
                    "--database-url '{}' is not a PostgreSQL URL (postgres://user@host:port/db)",
                    crate::reviews::service::redact_url(&url)
                ));
            }
            Some(url) => Some(LabelDatabase {
                url,
                schema: self.database_schema.filter(|s| !s.is_empty()),
            }),
            None => None,
        };
        let job_timeout = Duration::from_millis(self.job_timeout_ms);
        Ok(LlmWorkerConfig {
            redis_url,
            ollama_url: self.ollama_url,
            model: self.model,
            settings: WorkerSettings {
                concurrency: self.concurrency,
                job_timeout,
                max_attempts: self.max_attempts,
                backoff: Duration::from_millis(self.backoff_ms),
                ..WorkerSettings::default()
            },
            queue: QueueConfig {
                depth: self.queue_depth,
                prefix: self.key_prefix.clone(),
                // A job is recovered only well after its own deadline would have ended it.
                lease: job_timeout + Duration::from_secs(30),
                ..QueueConfig::default()
            },
            cache: CacheConfig {
                ttl: Duration::from_secs(self.cache_ttl_secs),
                prefix: self.key_prefix,
                ..CacheConfig::default()
            },
            result_ttl: Duration::from_secs(self.result_ttl_secs),
            tokenizer: self.tokenizer,
            max_input_tokens: self.max_input_tokens,
            metrics_addr: Some(SocketAddr::new(self.host, self.metrics_port)),
            #[cfg(feature = "reviews")]
            label_database,
        })
    }
}

/// Why a job attempt failed, as the worker loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// Whether to try again (if attempts are left).
    pub retryable: bool,
    /// A metric label (`unreachable`, `timeout`, `malformed_output`...).
    pub label: &'static str,
    /// For the log and the dead-letter entry.
    pub message: String,
}

/// Runs one job's attempt.
pub trait JobHandler: Send + Sync + std::fmt::Debug {
    /// The job's output.
    fn handle<'a>(&'a self, job: &'a QueuedJob) -> BoxFuture<'a, Result<Value, HandlerError>>;
}

impl JobHandler for LlmJobs {
    fn handle<'a>(&'a self, job: &'a QueuedJob) -> BoxFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let input: JobInput =
                serde_json::from_value(job.payload.clone()).map_err(|e| HandlerError {
                    retryable: false,
                    label: "invalid_input",
                    message: format!("not an LLM job: {e}"),
                })?;
            let output = self.run(&input).await.map_err(|e| HandlerError {
                retryable: e.is_retryable(),
                label: e.label(),
                message: e.to_string(),
            })?;
            serde_json::to_value(output).map_err(|e| HandlerError {
                retryable: false,
                label: "internal",
                message: e.to_string(),
            })
        })
    }
}

/// Takes jobs from `queue` and runs them with `handler` until `stop` reads true, then waits
/// for the jobs in flight.
pub async fn run_worker(
    queue: JobQueue,
    handler: Arc<dyn JobHandler>,
    sink: Arc<dyn JobSink>,
    settings: WorkerSettings,
    stop: watch::Receiver<bool>,
) {
    let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let maintenance = {
        let queue = queue.clone();
        let mut stop = stop.clone();
        let every = settings.maintain_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = queue.maintain().await {
                            tracing::warn!(error = %e, "LLM job queue maintenance failed");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let settings = Arc::new(settings);
    let mut in_flight = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = Arc::clone(&semaphore).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown::triggered(stop.clone()) => break,
        };
        // Not raced against shutdown: a take that moved a job must finish claiming it.
        match queue.take(settings.poll).await {
            Ok(Some(taken)) => {
                let (queue, handler, sink, settings) = (
                    queue.clone(),
                    Arc::clone(&handler),
                    Arc::clone(&sink),
                    Arc::clone(&settings),
                );
                let span = tracing::info_span!(
                    "llm_job",
                    id = %taken.job.id,
                    kind = %taken.job.kind,
                    attempt = taken.attempt
                );
                in_flight.spawn(
                    async move {
                        process(&queue, handler.as_ref(), sink.as_ref(), &settings, taken).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot take an LLM job");
                tokio::time::sleep(settings.poll).await;
            }
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    maintenance.abort();
}

async fn process(
    queue: &JobQueue,
    handler: &dyn JobHandler,
    sink: &dyn JobSink,
    settings: &WorkerSettings,
    taken: Taken,
) {
    let kind = taken.job.kind.clone();
    if taken.attempt > settings.max_attempts {
        // Only a recovered job gets here: its workers died while running it.
        let error = format!(
            "out of attempts ({} of {}): its workers stopped while running it",
            taken.attempt, settings.max_attempts
        );
        fail(queue, sink, &taken, &error).await;
        return;
    }
    let waited = now_ms().saturating_sub(taken.job.ready_at_ms);
    metrics::histogram!(LLM_JOB_QUEUE_WAIT_SECONDS, "kind" => kind.clone())
        .record(waited as f64 / 1000.0);
    let started = Instant::now();
    let result = match tokio::time::timeout(settings.job_timeout, handler.handle(&taken.job)).await
    {
        Ok(r) => r,
        Err(_) => Err(HandlerError {
            retryable: true,
            label: "job_timeout",
            message: format!("the job did not finish within {:?}", settings.job_timeout),
        }),
    };
    metrics::histogram!(LLM_JOB_SECONDS, "kind" => kind.clone())
        .record(started.elapsed().as_secs_f64());
    let result = match result {
        Ok(output) => {
            let done = JobResult {
                id: taken.job.id.clone(),
                kind: kind.clone(),
                attempts: taken.attempt,
                outcome: JobOutcome::Done { output },
            };
            match sink.deliver(&taken.job, &done).await {
                Ok(()) => Ok(()),
                Err(e) => Err(HandlerError {
                    retryable: true,
                    label: "sink",
                    message: e.to_string(),
                }),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            if let Err(e) = queue.complete(&taken).await {
                // The result is written; the job may run once more (at least once).
                tracing::warn!(id = %taken.job.id, error = %e, "cannot acknowledge an LLM job");
            }
            metrics::counter!(LLM_JOBS_TOTAL, "kind" => kind, "outcome" => "ok").increment(1);
        }
        Err(e) => {
            metrics::counter!(LLM_JOB_ERRORS_TOTAL, "kind" => kind.clone(), "error" => e.label)
                .increment(1);
            if e.retryable && taken.attempt < settings.max_attempts {
                let delay = settings.backoff_for(taken.attempt);
                tracing::warn!(id = %taken.job.id, kind = %kind, attempt = taken.attempt, error = %e.message, ?delay, "LLM job failed; retrying");
                if let Err(qe) = queue.retry(&taken, delay).await {
                    tracing::warn!(id = %taken.job.id, error = %qe, "cannot schedule a retry; the lease will recover the job");
                }
                metrics::counter!(LLM_JOB_RETRIES_TOTAL, "kind" => kind.clone()).increment(1);
                metrics::counter!(LLM_JOBS_TOTAL, "kind" => kind, "outcome" => "retried")
                    .increment(1);
            } else {
                fail(queue, sink, &taken, &e.message).await;
            }
        }
    }
}

/// Dead-letters a job and tells the sink it failed.
async fn fail(queue: &JobQueue, sink: &dyn JobSink, taken: &Taken, error: &str) {
    let kind = taken.job.kind.clone();
    tracing::warn!(id = %taken.job.id, kind = %kind, attempts = taken.attempt, error, "LLM job dead-lettered");
    let failed = JobResult {
        id: taken.job.id.clone(),
        kind: kind.clone(),
        attempts: taken.attempt,
        outcome: JobOutcome::Failed {
            error: error.to_string(),
        },
    };
    if let Err(e) = sink.deliver(&taken.job, &failed).await {
        tracing::warn!(id = %taken.job.id, error = %e, "cannot record a failed LLM job's result");
    }
    if let Err(e) = queue.dead_letter(taken, error).await {
        tracing::warn!(id = %taken.job.id, error = %e, "cannot dead-letter an LLM job");
    }
    metrics::counter!(LLM_JOB_DEAD_LETTERS_TOTAL, "kind" => kind.clone()).increment(1);
    metrics::counter!(LLM_JOBS_TOTAL, "kind" => kind, "outcome" => "dead_letter").increment(1);
}

/// A worker running in the background.
#[derive(Debug)]
pub struct RunningLlmWorker {
    /// The queue it takes from: API paths enqueue here.
    pub queue: JobQueue,
    /// Results in process (also filled when results go to Redis).
    pub results: Arc<MemoryResultSink>,
    /// The jobs runner (its cache included).
    pub jobs: LlmJobs,
    /// Where `/metrics` listens, if it does.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningLlmWorker {
    /// Queues `input` and returns its job id at once.
    pub async fn enqueue(&self, input: &JobInput) -> Result<String, crate::llm::queue::QueueError> {
        let payload = serde_json::to_value(input)
            .map_err(|e| crate::llm::queue::QueueError::Malformed(e.to_string()))?;
        self.queue.enqueue(input.kind().as_str(), payload).await
    }

    /// Stops taking jobs, lets the ones in flight finish, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Builds the queue, cache, sanitiser and sinks the config names, and starts the worker (and
/// its metrics listener) in the background. `extra_sink` also receives every result (an
/// in-process pipeline), before the result is published: its failure retries the job.
pub async fn start(
    cfg: LlmWorkerConfig,
    extra_sink: Option<Arc<dyn JobSink>>,
) -> Result<RunningLlmWorker, WorkerError> {
    start_on(cfg, None, extra_sink).await
}

/// As [`start`], taking jobs from `queue` when given (an in-process pipeline's in-memory
/// queue, which only its own handle reaches) instead of the one the config names.
pub async fn start_on(
    cfg: LlmWorkerConfig,
    queue: Option<JobQueue>,
    extra_sink: Option<Arc<dyn JobSink>>,
) -> Result<RunningLlmWorker, WorkerError> {
    let sanitiser = match &cfg.tokenizer {
        Some(path) => {
            let path = path.clone();
            let max = cfg.max_input_tokens;
            tokio::task::spawn_blocking(move || Sanitiser::with_gguf_tokenizer(max, &path))
                .await
                .map_err(|e| WorkerError::Tokenizer(e.to_string()))?
                .map_err(|e| WorkerError::Tokenizer(e.to_string()))?
        }
        None => {
            tracing::info!("no --tokenizer: prompt tokens are estimated (pessimistically)");
            Sanitiser::new(
                cfg.max_input_tokens,
                Arc::new(crate::llm::sanitise::EstimateCounter),
            )
        }
    };
    // The call's own deadline comes a little before the job's, so that a slow LLM reads as
    // "the LLM did not answer", not as a job that overran.
    let call_timeout = cfg.settings.job_timeout.mul_f64(0.9);
    let client = OllamaClient::new(&cfg.ollama_url, call_timeout)
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    let results = Arc::new(MemoryResultSink::new(10_000));
    // Sinks that write (theme labels, an in-process pipeline's) before those that announce
    // (Redis result and Pub/Sub, then the in-process broadcast): whoever a result wakes finds
    // its writes done, and a write that fails retries the job before anyone hears of it.
    let mut sinks: Vec<Arc<dyn JobSink>> = Vec::new();
    #[cfg(feature = "reviews")]
    if let Some(db) = &cfg.label_database {
        let store = crate::reviews::store::PgStore::connect_lazy(
            &db.url,
            db.schema.as_deref(),
            u32::try_from(cfg.settings.concurrency)
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            Duration::from_secs(5),
        )?;
        store.migrate().await?;
        sinks.push(Arc::new(crate::reviews::labels::TopicLabelSink::new(
            Arc::new(store),
        )));
    }
    sinks.extend(extra_sink);
    let (queue_from_config, cache) = match &cfg.redis_url {
        Some(url) => {
            sinks.push(Arc::new(
                RedisResultSink::new(url, &cfg.queue.prefix, cfg.result_ttl)
                    .map_err(|e| WorkerError::Config(e.to_string()))?,
            ));
            (
                JobQueue::redis(url, cfg.queue.clone())
                    .map_err(|e| WorkerError::Config(e.to_string()))?,
                OutputCache::redis(url, cfg.cache.clone())
                    .map_err(|e| WorkerError::Config(e.to_string()))?,
            )
        }
        None => (
            JobQueue::memory(cfg.queue.clone()),
            OutputCache::memory(cfg.cache.clone()),
        ),
    };
    let queue = queue.unwrap_or(queue_from_config);
    sinks.push(results.clone());
    let jobs = LlmJobs::new(client, &cfg.model, sanitiser, Arc::new(cache));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let metrics_addr = match cfg.metrics_addr {
        Some(addr) => {
            let handle = telemetry::install_prometheus()?;
            let listener = telemetry::bind(addr)
                .await
                .map_err(|e| WorkerError::Metrics(format!("cannot bind {addr}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| WorkerError::Metrics(e.to_string()))?;
            let stop_metrics = shutdown::triggered(stop_rx.clone());
            tasks.spawn(async move {
                if let Err(e) = telemetry::serve_metrics(listener, handle, stop_metrics).await {
                    tracing::warn!(error = %e, "metrics listener failed");
                }
            });
            Some(bound)
        }
        None => None,
    };
    tasks.spawn(run_worker(
        queue.clone(),
        Arc::new(jobs.clone()),
        Arc::new(FanoutSink(sinks)),
        cfg.settings.clone(),
        stop_rx,
    ));
    Ok(RunningLlmWorker {
        queue,
        results,
        jobs,
        metrics_addr,
        stop,
        tasks,
    })
}

/// Runs the worker until `stop` resolves.
pub async fn run(
    cfg: LlmWorkerConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    use std::io::Write as _;
    let backend = if cfg.redis_url.is_some() {
        "redis"
    } else {
        "memory"
    };
    let (model, ollama) = (cfg.model.clone(), cfg.ollama_url.clone());
    let worker = start(cfg, None).await?;
    // Not `println!`: it panics when stdout is a closed pipe.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh pipeline llm: {model} at {ollama}, queue in {backend}, metrics on {}",
        worker
            .metrics_addr
            .map_or_else(|| "none".to_string(), |a| format!("http://{a}/metrics"))
    );
    stop.await;
    worker.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = WorkerSettings {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..WorkerSettings::default()
        };
        let d: Vec<u128> = (1..=5).map(|a| s.backoff_for(a).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        let ok = LlmWorkerArgs::default().validate().unwrap();
        assert!(ok.redis_url.is_none());
        assert_eq!(ok.settings.concurrency, 1);
        for bad in [
            LlmWorkerArgs {
                concurrency: 0,
                ..LlmWorkerArgs::default()
            },
            LlmWorkerArgs {
                max_attempts: 0,
                ..LlmWorkerArgs::default()
            },
            LlmWorkerArgs {
                queue_depth: 0,
                ..LlmWorkerArgs::default()
            },
            LlmWorkerArgs {
                ollama_url: "127.0.0.1:11434".into(),
                ..LlmWorkerArgs::default()
            },
            LlmWorkerArgs {
                redis_url: Some("nope://x".into()),
                ..LlmWorkerArgs::default()
            },
            LlmWorkerArgs {
                tokenizer: Some("/no/such.gguf".into()),
                ..LlmWorkerArgs::default()
            },
            #[cfg(feature = "reviews")]
            LlmWorkerArgs {
                database_url: Some("mysql://u@h/db".into()),
                ..LlmWorkerArgs::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(WorkerError::Config(_))));
        }
    }
}
