//! `infermesh pipeline fraud`: `finance.transactions` (plain JSON or Debezium change events)
//! -> stream features (Redis velocity counters, an exact event-time sliding window, running
//! spend) -> the tree model (in process, or an inference server over gRPC) -> rules ->
//! `fraud.alerts` keyed by user, with idempotent alert ids, TreeSHAP reasons, rule hits, model
//! name and version; `user_avg_spend` goes to the feature store.
//!
//! It runs in the pipelines' runtime (`infermesh_pipelines::runtime`): at least once,
//! deduplicated by message id, dead letters to `finance.transactions.dlq` with the reason in
//! headers, graceful drain on SIGTERM, metrics on `--metrics-port` (8084).
//!
//! Without Redis the stream state, the dedupe windows and the produced-alert window live in
//! this process's memory: correct while it runs, forgotten at restart (replays then count
//! again). With Redis they are shared by every process of the group and survive restarts.
//! Redis failing mid-run degrades scoring (stream features missing, `features_degraded` on the
//! alert), never the delivery.

pub mod alerts;
pub mod celery;
pub mod event;
pub mod handler;
pub mod stream;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use infermesh_features::registry::FeatureRegistry;
use infermesh_features::store::{OnlineStore, RedisStore};
use infermesh_features::writer::{FeatureWriter, WriterConfig};
use infermesh_pipelines::bus::{EventBus, Subscription};
use infermesh_pipelines::kafka::{KafkaArgs, KafkaBus};
use infermesh_pipelines::runtime::{Dedupe, RunStats, RuntimeConfig};
use infermesh_server::features::FeatureStoreArgs;
use infermesh_server::local::{LocalConfig, LocalModels};

use crate::handler::{FraudHandler, Scorer};
use crate::stream::{StreamConfig, StreamState};

/// Why the pipeline could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A flag or file is wrong.
    #[error("{0}")]
    Config(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] infermesh_pipelines::bus::BusError),
    /// Serving set-up failed.
    #[error(transparent)]
    Serve(#[from] infermesh_server::ServeError),
    /// Metrics or I/O set-up failed.
    #[error("{0}")]
    Io(String),
}

/// `infermesh pipeline fraud` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FraudArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Redis for the stream state (velocity, sliding window, spend) and the dedupe windows,
    /// shared by the group's processes and kept across restarts. Without it they live in this
    /// process's memory.
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the pipeline writes.
    #[arg(
        long,
        env = "INFERMESH_FRAUD_REDIS_PREFIX",
        default_value = "infermesh:fraud:"
    )]
    pub redis_prefix: String,
    /// Address the metrics port listens on.
    #[arg(long, env = "INFERMESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Prometheus /metrics port (0 picks a free port, printed at start).
    #[arg(long, env = "INFERMESH_METRICS_PORT", default_value_t = 8084)]
    pub metrics_port: u16,
    /// Score in this process with the models of this repository (hot reload as `infermesh
    /// serve`). One of this and --inference-url.
    #[arg(
        long,
        env = "INFERMESH_MODEL_REPOSITORY",
        required_unless_present = "inference_url",
        conflicts_with = "inference_url"
    )]
    pub model_repository: Option<PathBuf>,
    /// Score on this inference server's infermesh.v1.FraudScoring (gRPC, e.g.
    /// http://127.0.0.1:8001).
    #[arg(long, env = "INFERMESH_INFERENCE_URL")]
    pub inference_url: Option<String>,
    /// The fraud model.
    #[arg(long, env = "INFERMESH_FRAUD_MODEL", default_value = "fraud")]
    pub model: String,
    /// How often the model repository is rescanned for new versions, in seconds; 0: never.
    #[arg(long, env = "INFERMESH_POLL_INTERVAL", default_value_t = 5.0)]
    pub poll_interval: f64,
    /// The feature store: model inputs it maps are filled from it, and `user_avg_spend` is
    /// written to it.
    #[command(flatten)]
    pub features: FeatureStoreArgs,
    /// Topic read.
    #[arg(long, default_value = "finance.transactions")]
    pub input_topic: String,
    /// Topic alerts go to.
    #[arg(long, default_value = "fraud.alerts")]
    pub alerts_topic: String,
    /// Consumer group.
    #[arg(long, env = "INFERMESH_FRAUD_GROUP", default_value = "pipeline-fraud")]
    pub group: String,
    /// Sliding window length, seconds.
    #[arg(long, default_value_t = 60)]
    pub window_seconds: u64,
    /// Transactions of one user within one window that raise an alert.
    #[arg(long, default_value_t = 5)]
    pub window_threshold: u64,
    /// How far behind a user's latest event an event may arrive and still enter the window,
    /// seconds.
    #[arg(long, default_value_t = 10)]
    pub allowed_lateness_seconds: u64,
    /// TreeSHAP reasons per alert.
    #[arg(long, default_value_t = 3)]
    pub top_k_reasons: u32,
    /// Most transactions handled as one batch (2,048 sustained 18% more than 512 on the stream
    /// bench, peak RSS 75 MB against 55 MB; BENCHMARKS.md, "Streaming").
    #[arg(long, default_value_t = 2048)]
    pub max_batch: usize,
    /// Most batches whose alerts are in flight at once: the next batch is read and scored
    /// while the broker acknowledges the previous ones' alerts (1: one batch at a time).
    #[arg(long, default_value_t = infermesh_pipelines::runtime::MAX_BATCHES_IN_FLIGHT)]
    pub max_batches_in_flight: usize,
    /// How long processed message ids and transaction features are remembered, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub dedupe_ttl_seconds: u64,
    /// How far back the alerts topic is read when partitions are assigned, seconds (alerts a
    /// killed process produced but had not recorded).
    #[arg(long, default_value_t = 900)]
    pub alert_lookback_seconds: u64,
    /// Most messages read back per alerts partition when the broker cannot find the lookback's
    /// start by time (librdkafka's MockCluster, for one).
    #[arg(long, default_value_t = 100_000)]
    pub alert_lookback_max_messages: i64,
    /// Scale of Debezium precise decimals that come without a schema.
    #[arg(long, default_value_t = 2)]
    pub decimal_scale: u32,
    /// Redis of the platform's Celery broker: each alert queues an email job there (never
    /// waited on). Unset: no email jobs.
    #[arg(long, env = "INFERMESH_CELERY_REDIS_URL")]
    pub celery_redis_url: Option<String>,
    /// The Celery queue the email jobs go to.
    #[arg(long, env = "INFERMESH_CELERY_QUEUE", default_value = "celery")]
    pub celery_queue: String,
    /// The Celery task the email jobs call (one argument: the alert).
    #[arg(
        long,
        env = "INFERMESH_CELERY_TASK",
        default_value = "fraud.send_alert_email"
    )]
    pub celery_task: String,
}

/// The consumer group of `pipeline fraud`.
pub const GROUP: &str = "pipeline-fraud";

/// The name of the velocity rule: `velocity_<threshold>_in_<seconds>s`.
pub fn window_rule(threshold: u64, seconds: u64) -> String {
    format!("velocity_{threshold}_in_{seconds}s")
}

/// A running pipeline: `shutdown` drains it, `wait` runs it until a signal.
pub type RunningPipeline = infermesh_pipelines::runtime::Running<RunStats, PipelineError>;

impl From<infermesh_pipelines::runtime::TaskError> for PipelineError {
    fn from(e: infermesh_pipelines::runtime::TaskError) -> Self {
        PipelineError::Io(e.0)
    }
}

fn redis(url: &str, flag: &str) -> Result<redis::aio::ConnectionManager, PipelineError> {
    infermesh_pipelines::llm::cache::redis_manager(url, Duration::from_secs(2))
        .map_err(|e| PipelineError::Config(format!("{flag}: {e}")))
}

/// Starts the pipeline on Kafka; returns once it is consuming.
pub async fn start(args: FraudArgs) -> Result<RunningPipeline, PipelineError> {
    if !args.poll_interval.is_finite() || args.poll_interval < 0.0 {
        return Err(PipelineError::Config(format!(
            "--poll-interval must be >= 0, got {}",
            args.poll_interval
        )));
    }
    if args.window_seconds == 0 || args.window_threshold == 0 {
        return Err(PipelineError::Config(
            "--window-seconds and --window-threshold must be positive".into(),
        ));
    }
    let kcfg = args.kafka.config("infermesh-pipeline-fraud")?;
    let bus = Arc::new(KafkaBus::new(kcfg.clone())?);
    let stream_cfg = StreamConfig {
        window: Duration::from_secs(args.window_seconds),
        allowed_lateness: Duration::from_secs(args.allowed_lateness_seconds),
        dedupe_ttl: Duration::from_secs(args.dedupe_ttl_seconds.max(1)),
        prefix: args.redis_prefix.clone(),
        ..StreamConfig::default()
    };
    let dedupe_ttl = Duration::from_secs(args.dedupe_ttl_seconds.max(1));
    let (state, dedupe, produced) = match &args.redis_url {
        Some(url) => {
            let conn = redis(url, "--redis-url")?;
            // The stream state on a connection of its own: the dedupe windows' reads would
            // otherwise wait behind the batches of scripts queued on it.
            (
                StreamState::redis(redis(url, "--redis-url")?, stream_cfg),
                Dedupe::Redis {
                    conn: conn.clone(),
                    prefix: format!("{}msg:{}:", args.redis_prefix, args.group),
                    ttl: dedupe_ttl,
                },
                Dedupe::Redis {
                    conn,
                    prefix: format!("{}alert:", args.redis_prefix),
                    ttl: dedupe_ttl,
                },
            )
        }
        None => (
            StreamState::memory(stream_cfg, 1_000_000),
            Dedupe::memory(1_000_000),
            Dedupe::memory(1_000_000),
        ),
    };
    let source = args.features.open().map_err(PipelineError::Config)?;
    let writer = match (
        &args.features.features_registry,
        &args.features.features_redis_url,
    ) {
        (Some(path), Some(url)) => {
            let registry = FeatureRegistry::load(path, args.features.features_project.as_deref())
                .map_err(|e| PipelineError::Config(e.to_string()))?;
            let store: Arc<dyn OnlineStore> = Arc::new(
                RedisStore::new(url, Duration::from_secs(1), None)
                    .map_err(|e| PipelineError::Config(format!("--features-redis-url: {e}")))?,
            );
            Some(FeatureWriter::start(
                Arc::new(registry),
                store,
                WriterConfig::default(),
            ))
        }
        _ => None,
    };
    let (scorer, local) = match (&args.model_repository, &args.inference_url) {
        (Some(repo), _) => {
            let local = LocalModels::open(LocalConfig {
                model_repository: repo.clone(),
                poll_interval: (args.poll_interval > 0.0)
                    .then(|| Duration::from_secs_f64(args.poll_interval)),
                fraud_model: args.model.clone(),
                features: source,
            })
            .await?;
            (Scorer::InProcess(local.fraud()), Some(local))
        }
        (None, Some(url)) => {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| PipelineError::Config(format!("--inference-url: {e}")))?
                .connect_lazy();
            (
                Scorer::Grpc(
                    infermesh_proto::v1::fraud_scoring_client::FraudScoringClient::new(channel)
                        .max_decoding_message_size(64 << 20),
                ),
                None,
            )
        }
        (None, None) => {
            return Err(PipelineError::Config(
                "one of --model-repository and --inference-url is needed".into(),
            ));
        }
    };
    let recover_cfg = kcfg.clone();
    let alerts_topic = args.alerts_topic.clone();
    let lookback = Duration::from_secs(args.alert_lookback_seconds);
    let max_tail = args.alert_lookback_max_messages;
    let recover: handler::Recover = Arc::new(move || {
        let (cfg, topic) = (recover_cfg.clone(), alerts_topic.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                alerts::produced_ids(&cfg, &topic, lookback, max_tail)
            })
            .await
            .map_err(|e| e.to_string())?
        })
    });
    let email = match &args.celery_redis_url {
        Some(url) => Some(celery::CeleryQueue::new(
            redis(url, "--celery-redis-url")?,
            &args.celery_queue,
            &args.celery_task,
        )),
        None => None,
    };
    let handler = FraudHandler {
        email,
        state,
        scorer,
        model: args.model.clone(),
        top_k_reasons: args.top_k_reasons,
        bus: bus.clone(),
        alerts_topic: args.alerts_topic.clone(),
        produced,
        recover: Some(recover),
        writer,
        window_threshold: args.window_threshold,
        window_rule: window_rule(args.window_threshold, args.window_seconds),
        decimal_scale: args.decimal_scale,
        in_flight: Default::default(),
        spend_turn: Default::default(),
    };
    let sub = bus.subscribe_kafka(&args.input_topic, &args.group)?;
    let rt = RuntimeConfig {
        max_batch: args.max_batch.max(1),
        max_batches_in_flight: args.max_batches_in_flight.max(1),
        ..RuntimeConfig::new("fraud")
    };
    start_with(
        rt,
        Box::new(sub),
        bus,
        dedupe,
        handler,
        local,
        Some(SocketAddr::new(args.host, args.metrics_port)),
    )
    .await
}

/// What `infermesh up` runs: the pipeline on an in-process bus (transactions from the
/// gateway, alerts to its streams), scoring with `scorer`, its state in memory with the
/// defaults of `pipeline fraud`, its metrics on the process's recorder (served by the caller).
pub async fn start_in_process(
    bus: Arc<dyn EventBus>,
    scorer: Scorer,
    writer: Option<FeatureWriter>,
) -> Result<RunningPipeline, PipelineError> {
    let sub = bus.subscribe("finance.transactions", GROUP).await?;
    let handler = FraudHandler {
        state: StreamState::memory(StreamConfig::default(), 100_000),
        scorer,
        model: String::new(),
        top_k_reasons: 3,
        bus: bus.clone(),
        alerts_topic: "fraud.alerts".into(),
        produced: Dedupe::memory(100_000),
        recover: None,
        writer,
        email: None,
        window_threshold: 5,
        window_rule: window_rule(5, 60),
        decimal_scale: 2,
        in_flight: Default::default(),
        spend_turn: Default::default(),
    };
    start_with(
        RuntimeConfig::new("fraud"),
        sub,
        bus,
        Dedupe::memory(100_000),
        handler,
        None,
        None,
    )
    .await
}

/// Starts the pipeline over any bus (tests, `infermesh up`'s in-process bus).
pub async fn start_with(
    rt: RuntimeConfig,
    sub: Box<dyn Subscription>,
    bus: Arc<dyn EventBus>,
    dedupe: Dedupe,
    handler: FraudHandler,
    local: Option<LocalModels>,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningPipeline, PipelineError> {
    RunningPipeline::consume(
        "fraud pipeline",
        rt,
        sub,
        bus,
        dedupe,
        handler,
        metrics_addr,
        |h: FraudHandler| async move {
            if let Some(w) = h.writer {
                w.close().await;
            }
            // The models (and their hot-reload watcher) live as long as the pipeline.
            drop(local);
        },
    )
    .await
}

/// Runs until Ctrl-C or SIGTERM, printing the metrics address first.
pub async fn run(args: FraudArgs) -> Result<(), PipelineError> {
    start(args)
        .await?
        .run_until_signalled("infermesh pipeline fraud")
        .await?;
    Ok(())
}
