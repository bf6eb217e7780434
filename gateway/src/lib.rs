//! The infermesh gateway: JSON APIs for product services in front of the inference servers.
//!
//! `POST /api/v1/fraud/score` (and `/score/batch`) call `infermesh.v1.FraudScoring` over
//! gRPC, `POST /api/v1/resumes/rank` `infermesh.v1.ResumeMatcher`, and
//! `GET /api/v1/recommendations/{user_id}` `infermesh.v1.Recommender` (cached, with A/B arms
//! and a shadow model, [`recs`]); `POST /api/v1/events` takes user behaviour and `GET /t.js`
//! is the browser tracker that sends it ([`events`]); `POST /api/v1/reviews` publishes a
//! review on the event bus for the reviews pipeline ([`reviews`]; 503 while no bus is
//! configured); `GET /api/v1/experiments` serves the A/B
//! counts ([`experiment`]) that `infermesh ab report` ([`ab`]) analyses. `/healthz` says the
//! process is up, `/readyz` that the inference server answers; `/api/v1/openapi.json`
//! documents the API. Every response carries an `x-request-id` (the caller's, or a new UUID),
//! every request a tracing span, and metrics go to their own port. The gateway never links
//! model code; Redis (`--redis-url`) is optional ([`store`]).

pub mod ab;
pub mod alerts;
pub mod config;
pub mod events;
pub mod experiment;
pub mod fraud;
pub mod openapi;
pub mod recs;
pub mod resumes;
pub mod reviews;
pub mod store;
pub mod transactions;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderName, StatusCode};
use infermesh_common::{ErrorKind, ServiceError, metrics_names as m, telemetry};
use infermesh_pipelines::bus::EventBus;
use infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use infermesh_proto::v1::recommender_client::RecommenderClient;
use infermesh_proto::v1::resume_matcher_client::ResumeMatcherClient;
use tonic::transport::{Channel, Endpoint};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Bad flags.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A port could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Telemetry set-up failed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// A listener failed.
    #[error("gateway failed: {0}")]
    Serve(String),
    /// The config file is missing, unreadable or invalid.
    #[error(transparent)]
    Settings(#[from] config::ConfigError),
}

/// `infermesh gateway` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0 or an interface's address
    /// to be reached from elsewhere).
    #[arg(long, env = "INFERMESH_GATEWAY_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// HTTP port of the JSON API (0 picks a free port).
    #[arg(long, env = "INFERMESH_GATEWAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Prometheus /metrics port (0 picks a free port).
    #[arg(long, env = "INFERMESH_GATEWAY_METRICS_PORT", default_value_t = 8082)]
    pub metrics_port: u16,
    /// gRPC address of the inference server.
    #[arg(
        long,
        env = "INFERMESH_INFERENCE_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub inference_url: String,
    /// Timeout of one upstream call, in milliseconds.
    #[arg(long, env = "INFERMESH_GATEWAY_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "INFERMESH_GATEWAY_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Gateway config file (TOML): the recommendations model, cache TTLs and the A/B
    /// experiment (see gateway/src/config.rs). Default: no experiment, model "recs" (latest
    /// version), cache TTL 300 s.
    #[arg(long, env = "INFERMESH_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL (e.g. redis://127.0.0.1:6379) for cached recommendations, recent views and
    /// A/B counts, shared by every gateway process. Default: unset, kept in this process's
    /// memory. When Redis fails, requests go on uncached.
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Timeout of one Redis call, in milliseconds; a slower call counts as a cache error.
    #[arg(long, env = "INFERMESH_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key the gateway reads and writes.
    #[arg(long, env = "INFERMESH_REDIS_KEY_PREFIX", default_value = "infermesh:")]
    pub redis_key_prefix: String,
    /// Per-port request timeout and in-flight bound.
    #[command(flatten)]
    pub limits: infermesh_common::limits::PortLimitArgs,
    /// Kafka bootstrap brokers (HOST:PORT[,...]): `POST /api/v1/transactions` produces to
    /// finance.transactions, `/api/v1/reviews` to reviews.submitted, `/api/v1/events` to
    /// user.behavior (recent views and cache invalidation then left to `infermesh pipeline
    /// behavior`), and the alert streams (`/api/v1/fraud/alerts/stream`, `/ws`) read
    /// fraud.alerts. Unset: transactions, reviews and alerts answer 503, events are applied
    /// here and dropped.
    #[arg(long = "kafka-brokers", env = "INFERMESH_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
}

/// Where the gateway's Redis is (the URL's password is not shown by `Debug`).
#[derive(Clone)]
pub struct RedisTarget {
    /// Redis URL.
    pub url: String,
    /// Key prefix.
    pub key_prefix: String,
    /// Timeout of one call.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &store::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// API address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Upstream endpoint.
    pub inference: Endpoint,
    /// Body limit.
    pub max_request_bytes: usize,
    /// The checked config file (defaults without one).
    pub settings: config::Settings,
    /// Redis, if configured.
    pub redis: Option<RedisTarget>,
    /// Request timeout and in-flight bound of the API port.
    pub limits: infermesh_common::limits::PortLimits,
    /// The event bus `POST /api/v1/reviews` publishes to (reviews.submitted); none, and no
    /// `--kafka-brokers`, answers that route with 503. A process that runs the reviews
    /// pipeline too (tests, `infermesh up`) sets its in-process bus here.
    pub reviews_bus: Option<Arc<dyn EventBus>>,
    /// Kafka brokers (`--kafka-brokers`): the transactions, reviews and behaviour buses and
    /// the alerts feed, unless set here.
    pub kafka_brokers: Option<String>,
    /// The bus `POST /api/v1/transactions` publishes to (finance.transactions).
    pub transactions_bus: Option<Arc<dyn EventBus>>,
    /// Where the alert streams read fraud.alerts from.
    pub alerts: Option<Arc<alerts::AlertFeed>>,
    /// The bus `POST /api/v1/events` publishes to (user.behavior); none: events are counted
    /// and applied in this process (unless `--kafka-brokers` is set).
    pub behavior_bus: Option<Arc<dyn EventBus>>,
}

impl GatewayArgs {
    /// Checks the flags.
    pub fn validate(self) -> Result<GatewayConfig, GatewayError> {
        if self.port != 0 && self.port == self.metrics_port {
            return Err(GatewayError::Config(
                "--port and --metrics-port are the same".into(),
            ));
        }
        let limits = self.limits.validate().map_err(GatewayError::Config)?;
        if self.timeout_ms == 0 {
            return Err(GatewayError::Config("--timeout-ms must be positive".into()));
        }
        let inference = Endpoint::from_shared(self.inference_url.clone())
            .map_err(|e| {
                GatewayError::Config(format!("--inference-url '{}': {e}", self.inference_url))
            })?
            .timeout(Duration::from_millis(self.timeout_ms))
            .connect_timeout(Duration::from_millis(self.timeout_ms))
            .tcp_nodelay(true);
        if self.redis_timeout_ms == 0 {
            return Err(GatewayError::Config(
                "--redis-timeout-ms must be positive".into(),
            ));
        }
        let redis = match self.redis_url {
            Some(url) if !url.is_empty() => {
                // Parse now so a typo stops start-up; connecting is left to the first call.
                redis::Client::open(url.as_str()).map_err(|e| {
                    GatewayError::Config(format!(
                        "--redis-url '{}' is not a Redis URL \
                         (redis://[user:password@]host[:port][/db]): {:?}",
                        store::redact_url(&url),
                        e.kind()
                    ))
                })?;
                Some(RedisTarget {
                    url,
                    key_prefix: self.redis_key_prefix,
                    timeout: Duration::from_millis(self.redis_timeout_ms),
                })
            }
            _ => None,
        };
        let settings = match &self.config {
            Some(path) => config::Settings::load(path)?,
            None => config::Settings::default(),
        };
        Ok(GatewayConfig {
            addr: SocketAddr::new(self.host, self.port),
            metrics_addr: SocketAddr::new(self.host, self.metrics_port),
            inference,
            max_request_bytes: self.max_request_bytes,
            settings,
            redis,
            limits,
            reviews_bus: None,
            kafka_brokers: self.kafka_brokers.filter(|b| !b.trim().is_empty()),
            transactions_bus: None,
            behavior_bus: None,
            alerts: None,
        })
    }
}

/// Shared gateway state: lazily connected upstream clients, the recommendations context and
/// the event sink.
#[derive(Debug, Clone)]
pub struct GatewayState {
    /// Typed fraud scoring client.
    pub fraud: FraudScoringClient<Channel>,
    /// Typed resume matching client.
    pub resumes: ResumeMatcherClient<Channel>,
    /// Typed recommender client.
    pub recommender: RecommenderClient<Channel>,
    /// KServe V2 client (readiness).
    pub v2: GrpcInferenceServiceClient<Channel>,
    /// Settings, store and version memory of the recommendations and events routes.
    pub recs: Arc<recs::RecsContext>,
    /// Where behaviour events are published.
    pub events: Arc<dyn events::EventSink>,
    /// Where reviews are published (`reviews.submitted`), if a bus is configured.
    pub reviews: Option<Arc<dyn EventBus>>,
    /// Where transactions are published (`finance.transactions`), if a bus is configured.
    pub transactions: Option<Arc<dyn EventBus>>,
    /// The live fraud alerts, if a feed is configured.
    pub alerts: Option<Arc<alerts::AlertFeed>>,
}

impl GatewayState {
    /// Clients over `endpoint`; nothing connects until the first call, so the gateway starts
    /// even when the inference server is not up yet.
    pub fn new(
        endpoint: Endpoint,
        recs: recs::RecsContext,
        events: Arc<dyn events::EventSink>,
    ) -> Self {
        let channel = endpoint.connect_lazy();
        Self {
            fraud: FraudScoringClient::new(channel.clone()),
            resumes: ResumeMatcherClient::new(channel.clone()),
            recommender: RecommenderClient::new(channel.clone()),
            v2: GrpcInferenceServiceClient::new(channel),
            recs: Arc::new(recs),
            events,
            reviews: None,
            transactions: None,
            alerts: None,
        }
    }

    /// The same state, publishing reviews to `bus` (none: the reviews route answers 503).
    pub fn with_reviews_bus(mut self, bus: Option<Arc<dyn EventBus>>) -> Self {
        self.reviews = bus;
        self
    }
}

/// The transactions bus and the alerts feed: those given in the config, else Kafka's when
/// `--kafka-brokers` is set (a producer, and a tail of fraud.alerts from its latest offsets
/// with a consumer group of this process's own).
struct Feeds {
    transactions: Option<Arc<dyn EventBus>>,
    alerts: Option<Arc<alerts::AlertFeed>>,
    events: Arc<dyn events::EventSink>,
    reviews: Option<Arc<dyn EventBus>>,
}

fn kafka_feeds(cfg: &GatewayConfig) -> Result<Feeds, GatewayError> {
    let (mut transactions, mut feed) = (cfg.transactions_bus.clone(), cfg.alerts.clone());
    let mut reviews = cfg.reviews_bus.clone();
    let mut sink: Arc<dyn events::EventSink> = match &cfg.behavior_bus {
        Some(bus) => Arc::new(events::BusSink::new(bus.clone())),
        None => Arc::new(events::CountingSink),
    };
    if let Some(brokers) = &cfg.kafka_brokers {
        let bus = infermesh_pipelines::kafka::KafkaBus::new(
            infermesh_pipelines::kafka::KafkaConfig::new(brokers, "infermesh-gateway"),
        )
        .map_err(|e| GatewayError::Config(format!("--kafka-brokers: {e}")))?;
        if feed.is_none() {
            let tail = bus
                .subscribe_tail(alerts::ALERTS_TOPIC)
                .map_err(|e| GatewayError::Config(format!("--kafka-brokers: {e}")))?;
            feed = Some(alerts::AlertFeed::start(
                Box::new(tail),
                alerts::DEFAULT_RING,
            ));
        }
        let bus: Arc<dyn EventBus> = Arc::new(bus);
        if transactions.is_none() {
            transactions = Some(bus.clone());
        }
        if reviews.is_none() {
            reviews = Some(bus.clone());
        }
        if cfg.behavior_bus.is_none() {
            sink = Arc::new(events::BusSink::new(bus));
        }
    }
    Ok(Feeds {
        transactions,
        alerts: feed,
        events: sink,
        reviews,
    })
}

/// A request body, or the refusal of one that could not be read: 413 when over the limit,
/// else 400 (`counted` records `invalid`).
pub(crate) fn body_or_refuse(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    counted: fn(&'static str),
) -> Result<axum::body::Bytes, ServiceError> {
    body.map_err(|rej| {
        counted("invalid");
        if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::new(ErrorKind::TooLarge, "request body is too large")
        } else {
            ServiceError::invalid(rej.body_text())
        }
    })
}

/// Longest wait for a bus to take a message the gateway publishes.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes `msg` on `topic`, mapping the bus's refusals: full -> 429, failed or slower than
/// 2 s -> 503 (`what` names the thing in the message); `counted` records `bus_full` or
/// `bus_error`.
pub(crate) async fn publish_or_refuse(
    bus: &dyn EventBus,
    topic: &str,
    msg: infermesh_pipelines::bus::Message,
    what: &str,
    counted: fn(&'static str),
) -> Result<(), ServiceError> {
    match tokio::time::timeout(PUBLISH_TIMEOUT, bus.publish(topic, msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(infermesh_pipelines::bus::BusError::Overloaded { .. })) => {
            counted("bus_full");
            Err(ServiceError::overloaded(format!(
                "the {what} pipeline is busy: retry later"
            )))
        }
        Ok(Err(e)) => {
            counted("bus_error");
            tracing::warn!(error = %e, what, "cannot publish");
            Err(ServiceError::unavailable(format!(
                "the {what} could not be recorded: retry later"
            )))
        }
        Err(_) => {
            counted("bus_error");
            tracing::warn!(what, "publishing timed out");
            Err(ServiceError::unavailable(format!(
                "the {what} could not be recorded: retry later"
            )))
        }
    }
}

/// Longest user, product or session id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Ids (user, product, session) are 1 to [`MAX_ID_BYTES`] bytes without control characters:
/// they become Redis keys, log fields and Kafka keys.
pub fn validate_id(field: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::invalid(format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ServiceError::invalid(format!(
            "{field} is {} bytes, at most {MAX_ID_BYTES} are accepted",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// A gRPC request carrying the caller's `x-request-id`.
pub(crate) fn with_request_id<T>(headers: &axum::http::HeaderMap, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && let Ok(v) = id.parse()
    {
        req.metadata_mut().insert("x-request-id", v);
    }
    req
}

/// Maps an upstream gRPC status to the gateway's error, counting it.
pub fn upstream_error(upstream: &'static str, status: tonic::Status) -> ServiceError {
    let code = status.code();
    metrics::counter!(m::GATEWAY_UPSTREAM_ERRORS_TOTAL, "upstream" => upstream, "code" => format!("{code:?}"))
        .increment(1);
    let kind = match code {
        tonic::Code::InvalidArgument
        | tonic::Code::OutOfRange
        | tonic::Code::FailedPrecondition => ErrorKind::InvalidInput,
        tonic::Code::NotFound => ErrorKind::NotFound,
        tonic::Code::ResourceExhausted => ErrorKind::Overloaded,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ErrorKind::Unavailable
        }
        _ => {
            tracing::error!(upstream, %status, "upstream failed");
            return ServiceError::new(ErrorKind::Unavailable, format!("{upstream} failed"));
        }
    };
    let msg = if kind == ErrorKind::Unavailable {
        format!("{upstream} is unavailable: {}", status.message())
    } else {
        status.message().to_string()
    };
    ServiceError::new(kind, msg)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's router (tested with `oneshot`).
pub fn app(state: GatewayState, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/fraud/score", post(fraud::score))
        .route("/api/v1/fraud/score/batch", post(fraud::score_batch))
        .route("/api/v1/resumes/rank", post(resumes::rank))
        .route("/api/v1/recommendations/{user_id}", get(recs::recommend))
        .route("/api/v1/events", post(events::accept))
        .route("/api/v1/reviews", post(reviews::submit))
        .route("/api/v1/transactions", post(transactions::submit))
        .route("/api/v1/fraud/alerts/stream", get(alerts::stream))
        .route("/api/v1/fraud/alerts/ws", get(alerts::websocket))
        .route("/api/v1/experiments", get(experiment::list))
        .route("/t.js", get(events::tracker))
        .fallback(|| async { ServiceError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes))
        .layer(middleware::from_fn(observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Span, request counter and latency histogram for every request.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!("gateway", method = %req.method(), %route, %request_id);
    let resp = {
        use tracing::Instrument;
        next.run(req).instrument(span).await
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!(m::GATEWAY_REQUESTS_TOTAL, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::GATEWAY_REQUEST_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(st): State<GatewayState>) -> Response {
    let mut v2 = st.v2.clone();
    match v2
        .server_ready(infermesh_proto::inference::ServerReadyRequest {})
        .await
    {
        Ok(r) if r.get_ref().ready => {
            axum::Json(serde_json::json!({"status": "ready"})).into_response()
        }
        Ok(_) => ServiceError::unavailable("inference server is not ready").into_response(),
        Err(s) => upstream_error("inference", s).into_response(),
    }
}

/// A gateway running in the background.
#[derive(Debug)]
pub struct RunningGateway {
    /// Bound API address.
    pub addr: SocketAddr,
    /// Bound metrics address.
    pub metrics_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningGateway {
    /// Stops gracefully.
    pub async fn shutdown(self) -> Result<(), GatewayError> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            t.await
                .map_err(|e| GatewayError::Serve(e.to_string()))?
                .map_err(|e| GatewayError::Serve(e.to_string()))?;
        }
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, GatewayError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })
}

/// Binds and serves in the background.
pub async fn start(cfg: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let prometheus = telemetry::install_prometheus()?;
    let api = bind(cfg.addr).await?;
    let metrics = bind(cfg.metrics_addr).await?;
    let addr = api
        .local_addr()
        .map_err(|e| GatewayError::Serve(e.to_string()))?;
    let metrics_addr = metrics
        .local_addr()
        .map_err(|e| GatewayError::Serve(e.to_string()))?;
    let store = match &cfg.redis {
        Some(r) => {
            let store = store::Store::redis(&r.url, &r.key_prefix, r.timeout, &cfg.settings.recs)
                .map_err(|e| GatewayError::Config(format!("--redis-url: {e}")))?;
            // Redis down at start-up is not fatal: the gateway answers uncached until it is back.
            match store.ping().await {
                Ok(()) => tracing::info!(redis = %store::redact_url(&r.url), "redis answers"),
                Err(e) => {
                    store::counted::<()>("connect", Err(e));
                    tracing::warn!(
                        redis = %store::redact_url(&r.url),
                        "redis does not answer: serving uncached until it does"
                    );
                }
            }
            store
        }
        None => store::Store::memory(&cfg.settings.recs),
    };
    if let Some(e) = &cfg.settings.experiment {
        tracing::info!(
            experiment = %e.name,
            arms = e.arms.len(),
            shadow = e.shadow.is_some(),
            "A/B experiment on the recommendations route"
        );
    }
    let ctx = recs::RecsContext::new(cfg.settings.clone(), store);
    let feeds = kafka_feeds(&cfg)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut state =
        GatewayState::new(cfg.inference, ctx, feeds.events).with_reviews_bus(feeds.reviews);
    state.transactions = feeds.transactions;
    state.alerts = feeds.alerts;
    let router = app(state, cfg.max_request_bytes).layer(middleware::from_fn_with_state(
        cfg.limits.guard(),
        infermesh_common::limits::http_limits,
    ));
    let sig = infermesh_common::shutdown::triggered(rx.clone());
    let api_task = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = api.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(sig)
            .await
    });
    let metrics_task = tokio::spawn(telemetry::serve_metrics(
        metrics,
        prometheus,
        infermesh_common::shutdown::triggered(rx),
    ));
    tracing::info!(%addr, %metrics_addr, "gateway listening");
    Ok(RunningGateway {
        addr,
        metrics_addr,
        shutdown: tx,
        tasks: vec![api_task, metrics_task],
    })
}

/// Serves until `stop` resolves.
pub async fn run(
    cfg: GatewayConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gw = start(cfg).await?;
    // Not `println!`: it panics when stdout is a closed pipe, and a banner must not stop a server.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh gateway: http {} metrics {}",
        gw.addr,
        gw.metrics_addr
    );
    stop.await;
    gw.shutdown().await
}

/// The status a JSON body rejection deserves, as our error.
pub fn json_rejection(rej: axum::extract::rejection::JsonRejection) -> ServiceError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ServiceError::new(ErrorKind::TooLarge, "request body is too large")
    } else {
        ServiceError::invalid(rej.body_text())
    }
}
