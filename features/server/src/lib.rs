//! `infermesh features serve`: a Feast-compatible online feature server, and
//! `infermesh features materialize`.
//!
//! One port (6566, Feast's) carries both protocols, told apart by content type, as Feast's
//! servers use it:
//! - gRPC `feast.serving.ServingService` (`GetFeastServingInfo`, `GetOnlineFeatures`: what
//!   Feast's Go and Java servers serve) and `GrpcFeatureServer` (`GetOnlineFeatures`, `Push`,
//!   `WriteToOnlineStore`: what `feast listen` serves), with gRPC health and reflection;
//! - HTTP `POST /get-online-features`, `POST /push`, `POST /write-to-online-store` with the
//!   JSON of `feast serve`, so Feast's `remote` online store works against it; `GET /health`
//!   and `GET /metrics` (Prometheus).
//!
//! Feature definitions come from Feast's `registry.db` or infermesh's TOML
//! ([`infermesh_features::registry`]), re-read when the file changes; values live in Redis in
//! Feast's layout, or in this process's memory without `--redis-url`. Errors are
//! `{"error": ...}` with 400/404/413/429/503, or gRPC INVALID_ARGUMENT / NOT_FOUND /
//! RESOURCE_EXHAUSTED / UNAVAILABLE; `docs/feast.md` is the contract.

mod api;
pub mod columns;
mod grpc;
pub mod materialize;
pub mod sample;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use infermesh_common::ServiceError;
use infermesh_features::FeatureError;
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::store::{MemoryStore, OnlineStore, RedisStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Feast's feature-server port.
pub const DEFAULT_PORT: u16 = 6566;

/// Why the feature server or a feature job failed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureServerError {
    /// A flag or file is not valid.
    #[error("{0}")]
    Config(String),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A feature-store call failed.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// The server stopped with an error.
    #[error("{0}")]
    Serve(String),
}

/// `infermesh features ...`.
#[derive(Debug, clap::Subcommand)]
pub enum FeaturesCommand {
    /// Serve online features over Feast's HTTP API and its two gRPC services on one port
    /// (default 6566), from Redis in Feast's layout (`--redis-url`) or memory.
    Serve(FeaturesServeArgs),
    /// Write the latest value per entity of a feature view from a CSV or Parquet file
    /// (read with Polars) to the online store, as `feast materialize` does.
    Materialize(materialize::MaterializeArgs),
}

impl FeaturesCommand {
    /// Runs the command (a server runs until Ctrl-C or SIGTERM).
    pub async fn run(self) -> Result<(), FeatureServerError> {
        match self {
            FeaturesCommand::Serve(args) => run(args.validate()?).await,
            FeaturesCommand::Materialize(args) => {
                let report = materialize::run(args).await?;
                let _ = writeln!(std::io::stdout().lock(), "{report}");
                Ok(())
            }
        }
    }
}

/// Where feature definitions come from.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Feature definitions: Feast's registry file (`registry.db`, what `feast apply` writes)
    /// or infermesh's TOML (a `.toml` file).
    #[arg(long, env = "INFERMESH_FEATURES_REGISTRY")]
    pub registry: PathBuf,
    /// The Feast project to serve (needed when the registry holds several).
    #[arg(long, env = "INFERMESH_FEATURES_PROJECT")]
    pub project: Option<String>,
}

impl RegistryArgs {
    /// Loads the registry.
    pub fn load(&self) -> Result<FeatureRegistry, FeatureServerError> {
        Ok(FeatureRegistry::load(
            &self.registry,
            self.project.as_deref(),
        )?)
    }
}

/// The online store's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Redis of the online store, in Feast's Redis layout (`redis://HOST:PORT[/DB]`). Without
    /// it, values live in this process's memory and are lost when it exits.
    #[arg(long, env = "INFERMESH_FEATURES_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Longest one store call may take, in milliseconds, before the request fails with 503 /
    /// UNAVAILABLE.
    #[arg(
        long,
        env = "INFERMESH_FEATURES_STORE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub store_timeout_ms: u64,
    /// Expiry set on a Redis key at every write, in seconds (Feast's `key_ttl_seconds`); 0:
    /// none.
    #[arg(long, env = "INFERMESH_FEATURES_KEY_TTL_SECONDS", default_value_t = 0)]
    pub key_ttl_seconds: u64,
    /// Entity keys the in-memory store holds at most (writes of new keys past it fail).
    #[arg(
        long,
        env = "INFERMESH_FEATURES_MEMORY_MAX_KEYS",
        default_value_t = 1_000_000
    )]
    pub memory_max_keys: usize,
}

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            store_timeout_ms: 1000,
            key_ttl_seconds: 0,
            memory_max_keys: 1_000_000,
        }
    }
}

impl StoreArgs {
    /// Opens the store (Redis connects lazily, so this works while Redis is down). Must run
    /// inside a Tokio runtime.
    pub fn open(&self) -> Result<Arc<dyn OnlineStore>, FeatureServerError> {
        if self.store_timeout_ms == 0 {
            return Err(FeatureServerError::Config(
                "--store-timeout-ms must be > 0".into(),
            ));
        }
        let ttl = (self.key_ttl_seconds > 0).then(|| Duration::from_secs(self.key_ttl_seconds));
        Ok(match &self.redis_url {
            Some(url) => Arc::new(
                RedisStore::new(url, Duration::from_millis(self.store_timeout_ms), ttl)
                    .map_err(|e| FeatureServerError::Config(format!("--redis-url: {e}")))?,
            ),
            None => Arc::new(MemoryStore::new(self.memory_max_keys, ttl)),
        })
    }
}

/// `infermesh features serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeaturesServeArgs {
    /// Address to listen on.
    #[arg(long, env = "INFERMESH_FEATURES_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port for gRPC and HTTP both (0: a free port, printed at start).
    #[arg(long, env = "INFERMESH_FEATURES_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Where feature definitions come from.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// How often the registry file is checked for changes (and re-read when it changed), in
    /// seconds; 0: never.
    #[arg(long, env = "INFERMESH_FEATURES_REGISTRY_POLL", default_value_t = 10.0)]
    pub registry_poll_interval: f64,
    /// The online store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Largest request body or gRPC message, in bytes.
    #[arg(long, env = "INFERMESH_FEATURES_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,
    /// Per-port request timeout and in-flight bound.
    #[command(flatten)]
    pub limits: infermesh_common::limits::PortLimitArgs,
}

/// A validated feature-server configuration.
#[derive(Debug, Clone)]
pub struct FeatureServerConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Where definitions come from.
    pub registry: RegistryArgs,
    /// Registry change checks; `None`: off.
    pub registry_poll: Option<Duration>,
    /// The store.
    pub store: StoreArgs,
    /// Body and message bound.
    pub max_request_bytes: usize,
    /// Per-port limits.
    pub limits: infermesh_common::limits::PortLimits,
}

impl FeaturesServeArgs {
    /// Checks the flags; nothing is bound or read yet.
    pub fn validate(self) -> Result<FeatureServerConfig, FeatureServerError> {
        let bad = FeatureServerError::Config;
        if !self.registry_poll_interval.is_finite() || self.registry_poll_interval < 0.0 {
            return Err(bad(format!(
                "--registry-poll-interval must be >= 0 seconds, got {}",
                self.registry_poll_interval
            )));
        }
        if self.max_request_bytes < 1024 {
            return Err(bad("--max-request-bytes must be at least 1024".into()));
        }
        Ok(FeatureServerConfig {
            addr: SocketAddr::new(self.host, self.port),
            registry: self.registry,
            registry_poll: (self.registry_poll_interval > 0.0)
                .then(|| Duration::from_secs_f64(self.registry_poll_interval)),
            store: self.store,
            max_request_bytes: self.max_request_bytes,
            limits: self.limits.validate().map_err(bad)?,
        })
    }
}

/// What the handlers share: the current registry and the store.
#[derive(Debug, Clone)]
pub struct FeatureState {
    registry: Arc<RwLock<Arc<FeatureRegistry>>>,
    store: Arc<dyn OnlineStore>,
}

impl FeatureState {
    /// A state over `registry` and `store`.
    pub fn new(registry: FeatureRegistry, store: Arc<dyn OnlineStore>) -> Self {
        Self {
            registry: Arc::new(RwLock::new(Arc::new(registry))),
            store,
        }
    }

    /// The registry now.
    pub fn registry(&self) -> Arc<FeatureRegistry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    /// Answers a read from the current registry and the store.
    pub async fn read(
        &self,
        req: &infermesh_features::online::OnlineRequest,
    ) -> Result<infermesh_features::serving::GetOnlineFeaturesResponse, ServiceError> {
        let registry = self.registry();
        infermesh_features::online::get_online_features(&registry, self.store.as_ref(), req)
            .await
            .map_err(service_error)
    }

    fn replace_registry(&self, r: FeatureRegistry) {
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(r);
    }
}

/// A feature error as the service reports it.
pub(crate) fn service_error(e: FeatureError) -> ServiceError {
    match &e {
        FeatureError::Registry { .. } => ServiceError::internal(&e),
        _ => ServiceError::new(e.kind(), e.to_string()),
    }
}

/// The feature server running in the background.
#[derive(Debug)]
pub struct RunningFeatureServer {
    /// The bound address (gRPC and HTTP).
    pub addr: SocketAddr,
    /// The shared state (tests write through it).
    pub state: FeatureState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), String>>,
    poller: Option<JoinHandle<()>>,
}

impl RunningFeatureServer {
    /// Stops accepting, lets requests in flight finish, and waits for the port to close.
    pub async fn shutdown(self) -> Result<(), FeatureServerError> {
        let _ = self.shutdown.send(true);
        if let Some(p) = &self.poller {
            p.abort();
        }
        self.server
            .await
            .map_err(|e| FeatureServerError::Serve(e.to_string()))?
            .map_err(FeatureServerError::Serve)
    }

    /// Serves until `stop` resolves, then shuts down.
    pub async fn wait(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), FeatureServerError> {
        tokio::select! {
            res = &mut self.server => {
                if let Some(p) = &self.poller { p.abort(); }
                match res {
                    Ok(Ok(())) => Err(FeatureServerError::Serve("the listener stopped unexpectedly".into())),
                    Ok(Err(e)) => Err(FeatureServerError::Serve(e)),
                    Err(e) => Err(FeatureServerError::Serve(e.to_string())),
                }
            }
            () = stop => self.shutdown().await,
        }
    }
}

/// Loads the registry, opens the store, binds the port and serves in the background.
pub async fn start(cfg: FeatureServerConfig) -> Result<RunningFeatureServer, FeatureServerError> {
    let args = cfg.registry.clone();
    let registry = tokio::task::spawn_blocking(move || args.load())
        .await
        .map_err(|e| FeatureServerError::Serve(e.to_string()))??;
    let state = FeatureState::new(registry, cfg.store.open()?);
    start_with(cfg, state).await
}

/// Serves `state` (a registry and store made in process, as `infermesh up` shares its
/// in-memory store with the inference server) on `cfg`'s address; `cfg.registry` is only
/// polled for changes when `cfg.registry_poll` is set.
pub async fn start_with(
    cfg: FeatureServerConfig,
    state: FeatureState,
) -> Result<RunningFeatureServer, FeatureServerError> {
    let prometheus = infermesh_common::telemetry::install_prometheus()
        .map_err(|e| FeatureServerError::Config(e.to_string()))?;
    let views = state.registry().views().len();
    // The error counters exist from the start (at 0), so dashboards and alerts see a series.
    for op in ["read", "write"] {
        metrics::counter!(infermesh_common::metrics_names::FEATURE_STORE_ERRORS_TOTAL,
            "store" => state.store.name(), "op" => op)
        .increment(0);
    }
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| FeatureServerError::Bind {
            addr: cfg.addr,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| FeatureServerError::Serve(e.to_string()))?;
    let app = router(state.clone(), prometheus, &cfg).await?;
    let (tx, rx) = watch::channel(false);
    let sig = infermesh_common::shutdown::triggered(rx);
    let server = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(sig)
            .await
            .map_err(|e| e.to_string())
    });
    let poller = cfg
        .registry_poll
        .map(|every| tokio::spawn(poll_registry(state.clone(), cfg.registry.clone(), every)));
    tracing::info!(%addr, views, store = state.store.name(), registry = %cfg.registry.registry.display(),
        "feature server listening");
    Ok(RunningFeatureServer {
        addr,
        state,
        shutdown: tx,
        server,
        poller,
    })
}

/// The one port's service: gRPC requests (content type `application/grpc*`) to the tonic
/// services, everything else to the HTTP API; each side with its own limits and spans.
async fn router(
    state: FeatureState,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    cfg: &FeatureServerConfig,
) -> Result<axum::Router, FeatureServerError> {
    let guard = cfg.limits.guard();
    let http = api::router(state.clone(), prometheus, cfg.max_request_bytes)
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            infermesh_common::limits::http_limits,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &http::Request<_>| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        );
    let grpc = grpc::service(state, guard, cfg.max_request_bytes).await?;
    let mux = tower::service_fn(move |req: axum::extract::Request| {
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let http = http.clone();
        let grpc = grpc.clone();
        async move {
            use tower::ServiceExt;
            if is_grpc {
                let resp = grpc.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(axum::body::Body::new))
            } else {
                http.oneshot(req).await
            }
        }
    });
    Ok(axum::Router::new().fallback_service(mux))
}

/// Re-reads the registry file when its modification time or size changes; a file that no
/// longer loads is logged and the last good registry kept.
async fn poll_registry(state: FeatureState, args: RegistryArgs, every: Duration) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut seen = stamp(&args.registry);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = stamp(&args.registry);
        if now == seen {
            continue;
        }
        seen = now;
        let a = args.clone();
        match tokio::task::spawn_blocking(move || a.load()).await {
            Ok(Ok(r)) => {
                tracing::info!(views = r.views().len(), "feature registry reloaded");
                state.replace_registry(r);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "feature registry changed but does not load; keeping the last one")
            }
            Err(e) => tracing::warn!(error = %e, "feature registry reload failed"),
        }
    }
}

/// Serves until Ctrl-C or SIGTERM, printing the bound address first.
pub async fn run(cfg: FeatureServerConfig) -> Result<(), FeatureServerError> {
    let server = start(cfg).await?;
    // Not `println!`: it panics when stdout is a closed pipe.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh features serve: grpc+http {}",
        server.addr
    );
    server.wait(infermesh_common::shutdown::stop_signal()).await
}
