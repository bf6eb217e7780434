//! `infermesh pipeline behavior`: `user.behavior` (the gateway's `POST /api/v1/events`, the
//! tracker's beacons) -> each user's last 10 viewed products and the cache of their
//! recommendations (the gateway's store, the same Redis layout: a view makes the product the
//! most recent and drops the user's cached lists, a purchase drops them), and the session's
//! viewed products, `session_views:session_product_views` in the feature store.
//!
//! It runs in the pipelines' runtime (`infermesh_pipelines::runtime`): at least once,
//! deduplicated by message id (a redelivered view is not applied twice), dead letters to
//! `user.behavior.dlq` with the reason in headers, graceful drain on SIGTERM, metrics on
//! `--metrics-port` (8085). Events are keyed by user, so one user's events arrive in order.
//!
//! Session state: `{prefix}session:{user}:{session}`, a Redis list of the session's distinct
//! viewed products, most recent first (LREM, LPUSH, LTRIM, PEXPIRE, LRANGE in one MULTI), or
//! this process's memory without Redis. A Redis failure retries the event after a back-off:
//! nothing is lost, the event waits.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_common::metrics_names as m;
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::store::{OnlineStore, RedisStore};
use infermesh_features::types::{StringList, Value, value::Val};
use infermesh_features::write::RowWrite;
use infermesh_features::writer::{FeatureWriter, WriterConfig};
use infermesh_gateway::config::Settings;
use infermesh_gateway::events::{Event, EventKind};
use infermesh_gateway::store::Store;
use infermesh_pipelines::bus::{BoxFuture, EventBus, Subscription};
use infermesh_pipelines::kafka::{KafkaArgs, KafkaBus};
use infermesh_pipelines::runtime::{Dedupe, Handler, Incoming, Outcome, RunStats, RuntimeConfig};
use tracing::Instrument as _;

/// The feature view and feature the session's views are written to.
pub const SESSION_VIEW: (&str, &str) = ("session_views", "session_product_views");

/// Why the pipeline could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A flag or file is wrong.
    #[error("{0}")]
    Config(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] infermesh_pipelines::bus::BusError),
    /// Metrics or I/O set-up failed.
    #[error("{0}")]
    Io(String),
}

/// `infermesh pipeline behavior` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BehaviorArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Redis of the gateway's store (recent views, cached recommendations), the session lists
    /// and the dedupe window; without it all of them live in this process's memory (useful
    /// only in tests: the gateway cannot see them).
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The gateway's Redis key prefix (its `--redis-key-prefix`).
    #[arg(long, env = "INFERMESH_REDIS_KEY_PREFIX", default_value = "infermesh:")]
    pub redis_key_prefix: String,
    /// Feature definitions (Feast's registry.db or infermesh's TOML) holding the
    /// session_views view; with --features-redis-url, session_product_views is written.
    #[arg(long, env = "INFERMESH_FEATURES_REGISTRY")]
    pub features_registry: Option<PathBuf>,
    /// The Feast project (needed when the registry holds several).
    #[arg(long, env = "INFERMESH_FEATURES_PROJECT")]
    pub features_project: Option<String>,
    /// The online store's Redis (Feast's layout).
    #[arg(long, env = "INFERMESH_FEATURES_REDIS_URL")]
    pub features_redis_url: Option<String>,
    /// Most products kept per session.
    #[arg(long, default_value_t = 20)]
    pub session_items: usize,
    /// A browsing session's list expires this long after its last view, seconds (the view's TTL).
    #[arg(long, default_value_t = 7200)]
    pub session_ttl_seconds: u64,
    /// Address the metrics port listens on.
    #[arg(long, env = "INFERMESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Prometheus /metrics port (0 picks a free port, printed at start).
    #[arg(long, env = "INFERMESH_METRICS_PORT", default_value_t = 8085)]
    pub metrics_port: u16,
    /// Topic read.
    #[arg(long, default_value = "user.behavior")]
    pub input_topic: String,
    /// Consumer group.
    #[arg(
        long,
        env = "INFERMESH_BEHAVIOR_GROUP",
        default_value = "pipeline-behavior"
    )]
    pub group: String,
    /// Most events handled as one batch.
    #[arg(long, default_value_t = 512)]
    pub max_batch: usize,
    /// How long processed message ids are remembered, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub dedupe_ttl_seconds: u64,
}

/// Session lists by `user\u{1f}session`, and their order of creation (oldest first).
type SessionLists = (HashMap<String, VecDeque<String>>, VecDeque<String>);

/// Each session's distinct viewed products.
#[derive(Debug)]
pub enum Sessions {
    /// Shared, in Redis.
    Redis {
        /// The connection.
        conn: redis::aio::ConnectionManager,
        /// Key prefix.
        prefix: String,
        /// Most products per session.
        items: usize,
        /// Expiry after the last view.
        ttl: Duration,
    },
    /// This process only: the last `capacity` sessions written.
    Memory {
        /// Lists and write order.
        lists: Mutex<SessionLists>,
        /// Most products per session.
        items: usize,
        /// Most sessions kept.
        capacity: usize,
    },
}

impl Sessions {
    /// Sessions in memory.
    pub fn memory(items: usize, capacity: usize) -> Self {
        Sessions::Memory {
            lists: Mutex::default(),
            items: items.max(1),
            capacity: capacity.max(1),
        }
    }

    /// Records a view; returns the session's products, most recent first.
    pub async fn view(
        &self,
        user: &str,
        session: &str,
        product: &str,
    ) -> Result<Vec<String>, String> {
        match self {
            Sessions::Redis {
                conn,
                prefix,
                items,
                ttl,
            } => {
                let key = format!("{prefix}session:{user}:{session}");
                let mut c = conn.clone();
                let (list,): (Vec<String>,) = redis::pipe()
                    .atomic()
                    .lrem(&key, 0, product)
                    .ignore()
                    .lpush(&key, product)
                    .ignore()
                    .ltrim(&key, 0, *items as isize - 1)
                    .ignore()
                    .pexpire(&key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
                    .ignore()
                    .lrange(&key, 0, -1)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list)
            }
            Sessions::Memory {
                lists,
                items,
                capacity,
            } => {
                let key = format!("{user}\u{1f}{session}");
                let mut g = lists
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (map, order) = &mut *g;
                if !map.contains_key(&key) {
                    if map.len() >= *capacity
                        && let Some(old) = order.pop_front()
                    {
                        map.remove(&old);
                    }
                    order.push_back(key.clone());
                }
                let list = map.entry(key).or_default();
                list.retain(|p| p != product);
                list.push_front(product.to_string());
                list.truncate(*items);
                Ok(list.iter().cloned().collect())
            }
        }
    }
}

/// The pipeline's processing of one batch.
#[derive(Debug)]
pub struct BehaviorHandler {
    /// The gateway's store (recent views, cached recommendations).
    pub store: Arc<Store>,
    /// Session lists.
    pub sessions: Sessions,
    /// Writes session_product_views, if a feature store is configured.
    pub writer: Option<FeatureWriter>,
}

/// Why an event is not one: the dead-letter reason and detail.
fn parse(payload: &[u8]) -> Result<Event, (&'static str, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| ("malformed_json", e.to_string()))?;
    let e: Event = serde_json::from_value(v).map_err(|e| ("invalid_value", e.to_string()))?;
    for (field, s) in [("user_id", &e.user_id), ("product_id", &e.product_id)] {
        if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
            return Err((
                "invalid_value",
                format!("{field} must be 1..256 bytes, no controls"),
            ));
        }
    }
    Ok(e)
}

/// Strictly increasing wall-clock nanoseconds of this process: the event time of the session
/// rows. The list is state built from every view so far, so it is stamped when built; the store
/// keeps a view's newest row and skips one as old as it (Feast's rule), so two views within one
/// tick must still get distinct times. One user's events come from one partition, so one process.
fn stamp() -> infermesh_features::Timestamp {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut prev = LAST.load(std::sync::atomic::Ordering::Relaxed);
    let ns = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(
            prev,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    infermesh_features::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn session_row(e: &Event, products: Vec<String>) -> RowWrite {
    RowWrite {
        view: SESSION_VIEW.0.into(),
        entity: vec![(
            "user_id".into(),
            Value {
                val: Some(Val::StringVal(e.user_id.clone())),
            },
        )],
        features: vec![(
            SESSION_VIEW.1.into(),
            Value {
                val: Some(Val::StringListVal(StringList { val: products })),
            },
        )],
        event_time: stamp(),
    }
}

impl BehaviorHandler {
    async fn one(&self, e: &Event) -> Outcome {
        metrics::counter!(m::BEHAVIOR_EVENTS_TOTAL, "event" => e.event.as_str()).increment(1);
        match e.event {
            EventKind::View => {
                if let Err(err) = self.store.push_recent(&e.user_id, &e.product_id).await {
                    return Outcome::Retry(format!("recent views: {err}"));
                }
                let session = e.session_id.as_deref().unwrap_or("-");
                let products = match self.sessions.view(&e.user_id, session, &e.product_id).await {
                    Ok(p) => p,
                    Err(err) => return Outcome::Retry(format!("session views: {err}")),
                };
                if let Some(w) = &self.writer
                    && let Err(err) = w.write(session_row(e, products)).await
                {
                    tracing::warn!(error = %err, "session_product_views not written");
                    metrics::counter!(m::BEHAVIOR_FEATURE_WRITE_ERRORS_TOTAL).increment(1);
                }
                Outcome::Done
            }
            EventKind::Purchase => match self.store.invalidate(&e.user_id).await {
                Ok(()) => Outcome::Done,
                Err(err) => Outcome::Retry(format!("cache invalidation: {err}")),
            },
            EventKind::Click => Outcome::Done,
        }
    }
}

impl Handler for BehaviorHandler {
    fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(batch.len());
            // In order: a user's view then purchase must apply in that order.
            for inc in batch {
                out.push(match parse(&inc.delivery.message.payload) {
                    Ok(e) => self.one(&e).instrument(inc.span.clone()).await,
                    Err((reason, detail)) => Outcome::Poison { reason, detail },
                });
            }
            out
        })
    }
}

/// A running pipeline: `shutdown` drains it, `wait` runs it until a signal.
pub type RunningPipeline = infermesh_pipelines::runtime::Running<RunStats, PipelineError>;

impl From<infermesh_pipelines::runtime::TaskError> for PipelineError {
    fn from(e: infermesh_pipelines::runtime::TaskError) -> Self {
        PipelineError::Io(e.0)
    }
}

/// Starts the pipeline over any bus (tests, an in-process bus).
pub async fn start_with(
    rt: RuntimeConfig,
    sub: Box<dyn Subscription>,
    bus: Arc<dyn EventBus>,
    dedupe: Dedupe,
    handler: BehaviorHandler,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningPipeline, PipelineError> {
    RunningPipeline::consume(
        "behavior pipeline",
        rt,
        sub,
        bus,
        dedupe,
        handler,
        metrics_addr,
        |h: BehaviorHandler| async move {
            if let Some(w) = h.writer {
                w.close().await;
            }
        },
    )
    .await
}

/// Starts the pipeline on Kafka.
pub async fn start(args: BehaviorArgs) -> Result<RunningPipeline, PipelineError> {
    if args.session_items == 0 {
        return Err(PipelineError::Config(
            "--session-items must be at least 1".into(),
        ));
    }
    let kcfg = args.kafka.config("infermesh-pipeline-behavior")?;
    let bus = Arc::new(KafkaBus::new(kcfg)?);
    let settings = Settings::default();
    let dedupe_ttl = Duration::from_secs(args.dedupe_ttl_seconds.max(1));
    let session_ttl = Duration::from_secs(args.session_ttl_seconds.max(1));
    let (store, sessions, dedupe) = match &args.redis_url {
        Some(url) => {
            let conn = infermesh_pipelines::llm::cache::redis_manager(url, Duration::from_secs(2))
                .map_err(|e| PipelineError::Config(format!("--redis-url: {e}")))?;
            let store = Store::redis(
                url,
                &args.redis_key_prefix,
                Duration::from_secs(2),
                &settings.recs,
            )
            .map_err(|e| PipelineError::Config(format!("--redis-url: {e}")))?;
            (
                store,
                Sessions::Redis {
                    conn: conn.clone(),
                    prefix: args.redis_key_prefix.clone(),
                    items: args.session_items,
                    ttl: session_ttl,
                },
                Dedupe::Redis {
                    conn,
                    prefix: format!("{}behavior:msg:{}:", args.redis_key_prefix, args.group),
                    ttl: dedupe_ttl,
                },
            )
        }
        None => (
            Store::memory(&settings.recs),
            Sessions::memory(args.session_items, 1_000_000),
            Dedupe::memory(1_000_000),
        ),
    };
    let writer = match (&args.features_registry, &args.features_redis_url) {
        (Some(path), Some(url)) => {
            let registry = FeatureRegistry::load(path, args.features_project.as_deref())
                .map_err(|e| PipelineError::Config(e.to_string()))?;
            if registry.view(SESSION_VIEW.0).is_none() {
                return Err(PipelineError::Config(format!(
                    "--features-registry has no feature view {}",
                    SESSION_VIEW.0
                )));
            }
            let online: Arc<dyn OnlineStore> = Arc::new(
                RedisStore::new(url, Duration::from_secs(1), None)
                    .map_err(|e| PipelineError::Config(format!("--features-redis-url: {e}")))?,
            );
            Some(FeatureWriter::start(
                Arc::new(registry),
                online,
                WriterConfig::default(),
            ))
        }
        (None, None) => None,
        _ => {
            return Err(PipelineError::Config(
                "--features-registry and --features-redis-url go together".into(),
            ));
        }
    };
    let sub = bus.subscribe_kafka(&args.input_topic, &args.group)?;
    let mut rt = RuntimeConfig::new("behavior");
    rt.max_batch = args.max_batch.max(1);
    start_with(
        rt,
        Box::new(sub),
        bus,
        dedupe,
        BehaviorHandler {
            store: Arc::new(store),
            sessions,
            writer,
        },
        Some(SocketAddr::new(args.host, args.metrics_port)),
    )
    .await
}

/// Runs until Ctrl-C or SIGTERM, printing the metrics address first.
pub async fn run(args: BehaviorArgs) -> Result<(), PipelineError> {
    start(args)
        .await?
        .run_until_signalled("infermesh pipeline behavior")
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_keep_distinct_products_most_recent_first() {
        let s = Sessions::memory(3, 2);
        for p in ["a", "b", "a", "c", "d"] {
            s.view("u", "s1", p).await.unwrap();
        }
        assert_eq!(s.view("u", "s1", "e").await.unwrap(), ["e", "d", "c"]);
        // Another session starts empty; a third evicts the oldest.
        assert_eq!(s.view("u", "s2", "x").await.unwrap(), ["x"]);
        s.view("v", "s1", "y").await.unwrap();
        assert_eq!(s.view("u", "s1", "z").await.unwrap(), ["z"]);
    }

    #[test]
    fn bad_events_are_poison_with_a_reason() {
        assert_eq!(parse(b"{").unwrap_err().0, "malformed_json");
        assert_eq!(
            parse(br#"{"event":"fly","user_id":"u","product_id":"p","ts":1}"#)
                .unwrap_err()
                .0,
            "invalid_value"
        );
        assert_eq!(
            parse(br#"{"event":"view","user_id":"","product_id":"p","ts":1}"#)
                .unwrap_err()
                .0,
            "invalid_value"
        );
        let e =
            parse(br#"{"event":"view","user_id":"u","product_id":"p","ts":5,"session_id":"s"}"#)
                .unwrap();
        assert_eq!((e.event, e.ts), (EventKind::View, 5));
    }
}
