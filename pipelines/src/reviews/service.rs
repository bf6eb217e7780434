//! `infermesh pipeline reviews`: flags, checked config, and the service that runs the
//! [`Processor`](crate::reviews::processor::Processor) on consumer group `pipeline-reviews` of
//! `reviews.submitted`, with `/metrics` on its own port (8083).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use infermesh_common::{shutdown, telemetry};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bus::{EventBus, InProcessBus};
use crate::llm::queue::{JobQueue, QueueConfig};
use crate::llm::sanitise::{DEFAULT_MAX_TOKENS, EstimateCounter, Sanitiser};
use crate::reviews::event::TOPIC;
use crate::reviews::live::{CHANNEL, LiveFeed, RedisLiveFeed};
use crate::reviews::processor::{Processor, ProcessorParts, RetryPolicy, ThemeJobs};
use crate::reviews::scoring::{GrpcSentiment, GrpcTopics, channel, endpoint};
use crate::reviews::store::{PgStore, StoreError};

/// The default metrics port (pipelines use 8083 and up).
pub const DEFAULT_METRICS_PORT: u16 = 8083;
/// The consumer group of the pipeline.
pub const GROUP: &str = "pipeline-reviews";

/// Flags of `infermesh pipeline reviews`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReviewsArgs {
    /// gRPC address of the inference server (infermesh.v1.Sentiment and infermesh.v1.Topics).
    #[arg(
        long,
        env = "INFERMESH_INFERENCE_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub inference_url: String,
    /// The sentiment model on the inference server.
    #[arg(
        long,
        env = "INFERMESH_REVIEWS_SENTIMENT_MODEL",
        default_value = "sentiment"
    )]
    pub sentiment_model: String,
    /// The topics model on the inference server.
    #[arg(long, env = "INFERMESH_REVIEWS_TOPICS_MODEL", default_value = "topics")]
    pub topics_model: String,
    /// Deadline of one model call, in milliseconds.
    #[arg(long, env = "INFERMESH_REVIEWS_TIMEOUT_MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// PostgreSQL URL (postgres://user[:password]@host[:port]/db) of table `reviews`
    /// (created by the pipeline's migrations at start-up). Required.
    #[arg(long, env = "INFERMESH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Schema of table `reviews` (created if missing); default: the user's search_path.
    #[arg(long, env = "INFERMESH_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Redis URL (e.g. redis://127.0.0.1:6379): the live feed (Pub/Sub), the LLM job queue
    /// that `infermesh pipeline llm` takes theme-label jobs from, and the topics whose label
    /// job is queued (shared by every pipeline process). Unset: no live feed, and the queue and
    /// the topics are in this process's memory.
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Pub/Sub channel of the live feed.
    #[arg(long, env = "INFERMESH_REVIEWS_CHANNEL", default_value = CHANNEL)]
    pub channel: String,
    /// Key prefix of the LLM job queue (the LLM worker's --key-prefix).
    #[arg(
        long,
        env = "INFERMESH_LLM_KEY_PREFIX",
        default_value = "infermesh:llm:"
    )]
    pub llm_key_prefix: String,
    /// Most LLM jobs waiting; a theme-label job past it is counted and skipped.
    #[arg(long, env = "INFERMESH_LLM_QUEUE_DEPTH", default_value_t = 1000)]
    pub llm_queue_depth: usize,
    /// Most tokens of review text the models see (the sanitiser's cap).
    #[arg(long, env = "INFERMESH_LLM_MAX_INPUT_TOKENS", default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_input_tokens: usize,
    /// Reviews processed at once (consumers of the group).
    #[arg(long, env = "INFERMESH_REVIEWS_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Address of the metrics listener.
    #[arg(long, env = "INFERMESH_REVIEWS_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port of `/metrics`; 0 picks a free one and prints it.
    #[arg(long, env = "INFERMESH_REVIEWS_METRICS_PORT", default_value_t = DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Kafka bootstrap brokers (HOST:PORT[,...]): reviews.submitted is read by consumer group
    /// pipeline-reviews, offsets committed once a review's row is written. Unset: an
    /// in-process bus, fed only by a gateway in the same process (`infermesh up`).
    #[arg(long = "kafka-brokers", env = "INFERMESH_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
}

impl Default for ReviewsArgs {
    fn default() -> Self {
        Self {
            inference_url: "http://127.0.0.1:8001".into(),
            sentiment_model: "sentiment".into(),
            topics_model: "topics".into(),
            timeout_ms: 5000,
            database_url: None,
            database_schema: None,
            redis_url: None,
            channel: CHANNEL.into(),
            llm_key_prefix: "infermesh:llm:".into(),
            llm_queue_depth: 1000,
            max_input_tokens: DEFAULT_MAX_TOKENS,
            concurrency: 4,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics_port: DEFAULT_METRICS_PORT,
            kafka_brokers: None,
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReviewsError {
    /// A flag is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database is unreachable or its migration failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event bus refused the subscription.
    #[error("event bus: {0}")]
    Bus(String),
    /// The metrics listener could not start.
    #[error("metrics listener: {0}")]
    Metrics(String),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Checked configuration (URLs with passwords are not shown by `Debug`).
#[derive(Clone)]
pub struct ReviewsConfig {
    /// The inference server.
    pub inference_url: String,
    /// Sentiment model.
    pub sentiment_model: String,
    /// Topics model.
    pub topics_model: String,
    /// Model call deadline.
    pub timeout: Duration,
    /// PostgreSQL.
    pub database_url: String,
    /// Schema of `reviews`.
    pub database_schema: Option<String>,
    /// Redis, if any.
    pub redis_url: Option<String>,
    /// Live feed channel.
    pub channel: String,
    /// LLM job queue settings.
    pub queue: QueueConfig,
    /// Sanitiser token cap.
    pub max_input_tokens: usize,
    /// Consumers.
    pub concurrency: usize,
    /// Back-off of failed attempts.
    pub retry: RetryPolicy,
    /// Metrics listener; none serves no metrics (the embedding process does).
    pub metrics_addr: Option<SocketAddr>,
    /// Kafka brokers; none: the in-process bus.
    pub kafka_brokers: Option<String>,
}

impl std::fmt::Debug for ReviewsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewsConfig")
            .field("inference_url", &self.inference_url)
            .field("sentiment_model", &self.sentiment_model)
            .field("topics_model", &self.topics_model)
            .field("timeout", &self.timeout)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_schema", &self.database_schema)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("channel", &self.channel)
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl ReviewsArgs {
    /// Checks the flags.
    pub fn validate(self) -> Result<ReviewsConfig, ReviewsError> {
        let bad = |m: String| Err(ReviewsError::Config(m));
        let Some(database_url) = self.database_url.filter(|u| !u.trim().is_empty()) else {
            return bad("--database-url (or INFERMESH_DATABASE_URL) is required".into());
        };
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return bad(format!(
                "--database-url '{}' is not a PostgreSQL URL (postgres://user@host:port/db)",
                redact_url(&database_url)
            ));
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return bad(format!("--concurrency {} (1 to 256)", self.concurrency));
        }
        if self.timeout_ms == 0 {
            return bad("--timeout-ms must be positive".into());
        }
        if self.llm_queue_depth == 0 {
            return bad("--llm-queue-depth 0 (at least 1)".into());
        }
        if self.max_input_tokens < 16 {
            return bad(format!(
                "--max-input-tokens {} (at least 16)",
                self.max_input_tokens
            ));
        }
        if self.channel.is_empty() {
            return bad("--channel must not be empty".into());
        }
        endpoint(&self.inference_url, Duration::from_millis(self.timeout_ms))
            .map_err(|e| ReviewsError::Config(format!("--inference-url {e}")))?;
        let redis_url = self.redis_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                ReviewsError::Config(format!("--redis-url '{}': {e}", redact_url(url)))
            })?;
        }
        Ok(ReviewsConfig {
            inference_url: self.inference_url,
            sentiment_model: self.sentiment_model,
            topics_model: self.topics_model,
            timeout: Duration::from_millis(self.timeout_ms),
            database_url,
            database_schema: self.database_schema.filter(|s| !s.is_empty()),
            redis_url,
            channel: self.channel,
            queue: QueueConfig {
                depth: self.llm_queue_depth,
                prefix: self.llm_key_prefix,
                ..QueueConfig::default()
            },
            max_input_tokens: self.max_input_tokens,
            concurrency: self.concurrency,
            retry: RetryPolicy::default(),
            metrics_addr: Some(SocketAddr::new(self.host, self.metrics_port)),
            kafka_brokers: self.kafka_brokers.filter(|b| !b.trim().is_empty()),
        })
    }
}

/// The pipeline running in the background.
#[derive(Debug)]
pub struct RunningReviews {
    /// The processor the consumers share.
    pub processor: Arc<Processor>,
    /// The LLM job queue theme-label jobs go to (memory without Redis).
    pub queue: JobQueue,
    /// The store (its pool answers queries of tests and tools).
    pub store: PgStore,
    /// Where `/metrics` listens, if it does.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningReviews {
    /// Stops taking reviews, lets the ones in hand finish, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The Redis key prefix of the theme-label claims under the LLM queue's `prefix`: keys
/// `<prefix>reviews:theme:<topic id>`.
pub fn theme_claim_prefix(prefix: &str) -> String {
    format!("{prefix}reviews:theme:")
}

/// Starts the consumer of `processor` on group [`GROUP`] of `reviews.submitted`: the streaming
/// runtime (`crate::runtime`: batches, dedupe by message id, dead letters, retries with
/// back-off), `concurrency` reviews at a time.
pub async fn spawn_consumers(
    processor: Arc<Processor>,
    bus: Arc<dyn EventBus>,
    concurrency: usize,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), ReviewsError> {
    let mut sub = bus
        .subscribe(TOPIC, GROUP)
        .await
        .map_err(|e| ReviewsError::Bus(e.to_string()))?;
    let handler = crate::reviews::processor::ReviewsHandler {
        processor,
        concurrency,
    };
    let stopped = shutdown::triggered(stop.clone());
    tasks.spawn(async move {
        let mut rt = crate::runtime::RuntimeConfig::new("reviews");
        rt.max_batch = concurrency.max(1) * 8;
        // Reviews are idempotent by review_id (an upsert): the window only saves model calls.
        let dedupe = crate::runtime::Dedupe::memory(100_000);
        if let Err(e) =
            crate::runtime::run(&rt, sub.as_mut(), bus.as_ref(), &dedupe, &handler, stopped).await
        {
            tracing::error!(error = %e, "reviews consumer stopped");
        }
    });
    Ok(())
}

/// Connects the database (and migrates it), builds the gRPC scorers, the live feed and the
/// queue the config names, and starts the consumers on `bus` (and the metrics listener).
pub async fn start(
    cfg: ReviewsConfig,
    bus: Arc<dyn EventBus>,
) -> Result<RunningReviews, ReviewsError> {
    let store = PgStore::connect_lazy(
        &cfg.database_url,
        cfg.database_schema.as_deref(),
        u32::try_from(cfg.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(1),
        cfg.timeout,
    )?;
    store.migrate().await?;
    let ch = channel(&cfg.inference_url, cfg.timeout).map_err(ReviewsError::Config)?;
    let (live, queue): (Option<Arc<dyn LiveFeed>>, JobQueue) = match &cfg.redis_url {
        Some(url) => (
            Some(Arc::new(
                RedisLiveFeed::new(url, &cfg.channel, cfg.queue.redis_timeout)
                    .map_err(ReviewsError::Config)?,
            )),
            JobQueue::redis(url, cfg.queue.clone())
                .map_err(|e| ReviewsError::Config(e.to_string()))?,
        ),
        None => (None, JobQueue::memory(cfg.queue.clone())),
    };
    // With Redis, every pipeline process shares which topics had their label job queued.
    let themes = match &cfg.redis_url {
        Some(url) => ThemeJobs::shared(
            Some(queue.clone()),
            url,
            &theme_claim_prefix(&cfg.queue.prefix),
            cfg.queue.redis_timeout,
        )
        .map_err(ReviewsError::Config)?,
        None => ThemeJobs::new(Some(queue.clone()), cfg.queue.redis_timeout),
    };
    let processor = Arc::new(Processor::new(ProcessorParts {
        sanitiser: Sanitiser::new(cfg.max_input_tokens, Arc::new(EstimateCounter)),
        sentiment: Arc::new(GrpcSentiment::new(ch.clone(), cfg.sentiment_model.clone())),
        topics: Arc::new(GrpcTopics::new(ch, cfg.topics_model.clone())),
        store: Arc::new(store.clone()),
        live,
        themes,
        retry: cfg.retry,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let metrics_addr = match cfg.metrics_addr {
        Some(addr) => {
            let handle = telemetry::install_prometheus()?;
            let listener = telemetry::bind(addr)
                .await
                .map_err(|e| ReviewsError::Metrics(format!("cannot bind {addr}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| ReviewsError::Metrics(e.to_string()))?;
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
    spawn_consumers(
        processor.clone(),
        bus.clone(),
        cfg.concurrency,
        &stop_rx,
        &mut tasks,
    )
    .await?;
    tracing::info!(config = ?cfg, "reviews pipeline started");
    Ok(RunningReviews {
        processor,
        queue,
        store,
        metrics_addr,
        stop,
        tasks,
    })
}

/// Runs the pipeline until `stop` resolves: on Kafka with `--kafka-brokers` (each of the
/// `concurrency` consumers a member of group pipeline-reviews), else on an in-process bus,
/// which only a gateway in the same process feeds (`start` with the gateway's bus).
pub async fn run(
    cfg: ReviewsConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ReviewsError> {
    use std::io::Write as _;
    let (bus, bus_name): (Arc<dyn EventBus>, String) = match &cfg.kafka_brokers {
        Some(brokers) => (
            Arc::new(
                crate::kafka::KafkaBus::new(crate::kafka::KafkaConfig::new(
                    brokers,
                    "infermesh-pipeline-reviews",
                ))
                .map_err(|e| ReviewsError::Config(format!("--kafka-brokers: {e}")))?,
            ),
            format!("kafka {brokers}"),
        ),
        None => (
            Arc::new(InProcessBus::new(10_000, Duration::from_secs(60))),
            "in process".to_string(),
        ),
    };
    let summary = format!(
        "inference {}, database {}, live feed {}",
        cfg.inference_url,
        redact_url(&cfg.database_url),
        cfg.redis_url.as_deref().map_or_else(
            || "off".to_string(),
            |u| format!("{} {}", redact_url(u), cfg.channel)
        )
    );
    let running = start(cfg, bus).await?;
    // Not `println!`: it panics when stdout is a closed pipe.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh pipeline reviews: {summary}, bus {bus_name}, metrics on {}",
        running
            .metrics_addr
            .map_or_else(|| "none".to_string(), |a| format!("http://{a}/metrics"))
    );
    stop.await;
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReviewsArgs,
    }

    #[test]
    fn help_names_every_flag_with_its_default_and_environment_twin() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--inference-url",
            "http://127.0.0.1:8001",
            "--database-url",
            "INFERMESH_DATABASE_URL",
            "--redis-url",
            "INFERMESH_REDIS_URL",
            "--metrics-port",
            "8083",
            "--concurrency",
            "infermesh:reviews",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
        let cli = Cli::try_parse_from([
            "reviews",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "--concurrency",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.args.validate().unwrap().concurrency, 3);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:***@h:6379");
        let cfg = ReviewsArgs {
            database_url: Some("postgres://u:secret@h/db".into()),
            ..ReviewsArgs::default()
        }
        .validate()
        .unwrap();
        assert!(!format!("{cfg:?}").contains("secret"));
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        let db = Some("postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let ok = ReviewsArgs {
            database_url: db.clone(),
            ..ReviewsArgs::default()
        }
        .validate()
        .unwrap();
        assert_eq!(ok.concurrency, 4);
        assert_eq!(ok.metrics_addr.unwrap().port(), DEFAULT_METRICS_PORT);
        for bad in [
            ReviewsArgs::default(),
            ReviewsArgs {
                database_url: Some("mysql://x".into()),
                ..ReviewsArgs::default()
            },
            ReviewsArgs {
                database_url: db.clone(),
                concurrency: 0,
                ..ReviewsArgs::default()
            },
            ReviewsArgs {
                database_url: db.clone(),
                inference_url: "not a url".into(),
                ..ReviewsArgs::default()
            },
            ReviewsArgs {
                database_url: db.clone(),
                redis_url: Some("nope://x".into()),
                ..ReviewsArgs::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(ReviewsError::Config(_))));
        }
    }
}
