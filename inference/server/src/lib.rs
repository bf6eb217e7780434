//! The infermesh inference server: every model of a repository behind KServe V2 REST
//! (default port 8000) and gRPC (8001, with the typed `infermesh.v1` services), and
//! Prometheus metrics (8002).
//!
//! [`start`] binds and serves in the background (tests use port 0); [`run`] serves until
//! Ctrl-C.

pub mod families;
pub mod features;
#[cfg(feature = "trees")]
pub mod fraud;
pub mod grpc;
pub mod local;
pub mod metadata;
#[cfg(feature = "recs")]
pub mod recs;
pub mod registry;
pub mod rest;
#[cfg(feature = "text")]
pub mod resume;
#[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
pub mod sample;
pub mod state;
#[cfg(feature = "text")]
pub mod tei;
pub mod tensor;
#[cfg(feature = "text")]
pub mod text;
pub mod v2;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use infermesh_common::telemetry;
use infermesh_inference::{ManagerConfig, ModelManager};
use infermesh_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use state::AppState;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag is out of range or flags contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The repository could not be opened.
    #[error("{0}")]
    Repository(#[from] infermesh_common::ServiceError),
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
    /// A server task failed.
    #[error("server failed: {0}")]
    Serve(String),
}

pub use infermesh_monitor::{MonitorArgs, MonitorConfig};

/// `infermesh serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Model repository directory: <repo>/<model>/config.toml (or a Triton FIL config.pbtxt)
    /// and integer version folders.
    #[arg(long, env = "INFERMESH_MODEL_REPOSITORY")]
    pub model_repository: PathBuf,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0 or an interface's address
    /// to be reached from elsewhere).
    #[arg(long, env = "INFERMESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// KServe V2 REST port (0 picks a free port).
    #[arg(long, env = "INFERMESH_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// gRPC port: KServe V2 and infermesh.v1 services (0 picks a free port).
    #[arg(long, env = "INFERMESH_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
    /// Prometheus /metrics port (0 picks a free port).
    #[arg(long, env = "INFERMESH_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,
    /// How often to rescan the repository for new, changed or removed versions, in seconds
    /// (fractions allowed); 0 turns polling off.
    #[arg(long, env = "INFERMESH_POLL_INTERVAL", default_value_t = 5.0)]
    pub poll_interval: f64,
    /// Largest request body (REST) or message (gRPC) accepted, in bytes.
    #[arg(long, env = "INFERMESH_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Model the typed FraudScoring service uses when a request names none.
    #[arg(long, env = "INFERMESH_FRAUD_MODEL", default_value = "fraud")]
    pub fraud_model: String,
    /// Model the typed TextEmbedding and ResumeMatcher services use when a request names none.
    #[arg(long, env = "INFERMESH_EMBEDDING_MODEL", default_value = "minilm")]
    pub embedding_model: String,
    /// Model the typed Categorizer service uses when a request names none.
    #[arg(
        long,
        env = "INFERMESH_CATEGORIZER_MODEL",
        default_value = "categorizer"
    )]
    pub categorizer_model: String,
    /// Model the typed Recommender service uses when a request names none.
    #[arg(long, env = "INFERMESH_RECOMMENDER_MODEL", default_value = "recs")]
    pub recommender_model: String,
    /// Allow the repository API (REST `/v2/repository/models/{m}/load|unload`, gRPC
    /// RepositoryModelLoad/Unload) to load and unload models, as Triton's
    /// `--model-control-mode=explicit` does. Off by default: those calls answer 403 /
    /// PERMISSION_DENIED and the repository index stays readable.
    #[arg(long, env = "INFERMESH_ENABLE_MODEL_CONTROL")]
    pub enable_model_control: bool,
    /// Per-port request timeout and in-flight bound.
    #[command(flatten)]
    pub limits: infermesh_common::limits::PortLimitArgs,
    /// Models served from a registry by alias.
    #[command(flatten)]
    pub registry: registry::RegistryArgs,
    /// The inference log and live drift.
    #[command(flatten)]
    pub monitor: infermesh_monitor::MonitorArgs,
    /// The feature store typed requests' missing inputs are read from.
    #[command(flatten)]
    pub features: features::FeatureStoreArgs,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Model repository.
    pub model_repository: PathBuf,
    /// REST address.
    pub http_addr: SocketAddr,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Repository poll interval; `None` when off.
    pub poll_interval: Option<Duration>,
    /// Body / message size limit.
    pub max_request_bytes: usize,
    /// Default FraudScoring model.
    pub fraud_model: String,
    /// Default TextEmbedding / ResumeMatcher model.
    pub embedding_model: String,
    /// Default Categorizer model.
    pub categorizer_model: String,
    /// Default Recommender model.
    pub recommender_model: String,
    /// Models served from a registry by alias, if any.
    pub registry: Option<registry::RegistryConfig>,
    /// Whether the repository API may load and unload models.
    pub enable_model_control: bool,
    /// Per-port request timeout and in-flight bound.
    pub limits: infermesh_common::limits::PortLimits,
    /// The inference log and live drift.
    pub monitor: infermesh_monitor::MonitorConfig,
    /// The feature store's flags (opened at start).
    pub features: features::FeatureStoreArgs,
    /// A feature source given in process (`infermesh up` shares its in-memory store); wins
    /// over `features`.
    pub feature_source: Option<std::sync::Arc<features::FeatureSource>>,
}

impl ServeArgs {
    /// Checks the flags and builds the config; nothing is bound yet.
    pub fn validate(self) -> Result<ServeConfig, ServeError> {
        if !self.poll_interval.is_finite() || self.poll_interval < 0.0 {
            return Err(ServeError::Config(format!(
                "--poll-interval must be >= 0 seconds, got {}",
                self.poll_interval
            )));
        }
        if self.max_request_bytes < 1024 {
            return Err(ServeError::Config(
                "--max-request-bytes must be at least 1024".into(),
            ));
        }
        let limits = self.limits.validate().map_err(ServeError::Config)?;
        let monitor = self
            .monitor
            .validate()
            .map_err(|e| ServeError::Config(e.to_string()))?;
        let ports = [self.http_port, self.grpc_port, self.metrics_port];
        for (i, a) in ports.iter().enumerate() {
            if *a != 0 && ports[i + 1..].contains(a) {
                return Err(ServeError::Config(format!(
                    "port {a} is given to two listeners"
                )));
            }
        }
        if !self.registry.models.is_empty() && !self.model_repository.exists() {
            // Registry models need only a place to land.
            std::fs::create_dir_all(&self.model_repository).map_err(|e| {
                ServeError::Config(format!(
                    "cannot create --model-repository {}: {e}",
                    self.model_repository.display()
                ))
            })?;
        }
        if !self.model_repository.is_dir() {
            return Err(ServeError::Config(format!(
                "--model-repository {} is not a directory",
                self.model_repository.display()
            )));
        }
        let repo_sources =
            infermesh_registry::sync::read_repository_sources(&self.model_repository)
                .map_err(|e| ServeError::Config(e.to_string()))?;
        let registry = self
            .registry
            .validate(&self.model_repository, repo_sources)
            .map_err(ServeError::Config)?;
        Ok(ServeConfig {
            model_repository: self.model_repository,
            http_addr: SocketAddr::new(self.host, self.http_port),
            grpc_addr: SocketAddr::new(self.host, self.grpc_port),
            metrics_addr: SocketAddr::new(self.host, self.metrics_port),
            poll_interval: (self.poll_interval > 0.0)
                .then(|| Duration::from_secs_f64(self.poll_interval)),
            max_request_bytes: self.max_request_bytes,
            fraud_model: self.fraud_model,
            embedding_model: self.embedding_model,
            categorizer_model: self.categorizer_model,
            recommender_model: self.recommender_model,
            registry,
            enable_model_control: self.enable_model_control,
            limits,
            monitor,
            features: self.features,
            feature_source: None,
        })
    }
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    /// Bound REST address.
    pub http_addr: SocketAddr,
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound metrics address.
    pub metrics_addr: SocketAddr,
    /// The repository manager (tests poke at it).
    pub manager: std::sync::Arc<ModelManager>,
    /// The inference log and live drift (tests flush and evaluate it).
    pub monitoring: std::sync::Arc<infermesh_monitor::Monitoring>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    poller: Option<JoinHandle<()>>,
    registry_poller: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits for the listeners to close.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        for p in [self.poller.take(), self.registry_poller.take()]
            .into_iter()
            .flatten()
        {
            p.abort();
        }
        for t in self.tasks.drain(..) {
            t.await
                .map_err(|e| ServeError::Serve(e.to_string()))?
                .map_err(ServeError::Serve)?;
        }
        // The inference log's buffered rows are written before the process goes.
        let monitoring = self.monitoring.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(log) = monitoring.log() {
                log.flush(std::time::Duration::from_secs(10));
            }
        })
        .await;
        Ok(())
    }

    /// Serves until `stop` resolves (then shuts down gracefully) or a listener fails.
    pub async fn wait(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let failed = tokio::select! {
            (res, idx, _) = futures::future::select_all(self.tasks.iter_mut()) => Some((res, idx)),
            () = stop => None,
        };
        // A finished JoinHandle must not be awaited again.
        let failed = failed.map(|(res, idx)| {
            drop(self.tasks.remove(idx));
            res
        });
        let shut = self.shutdown().await;
        match failed {
            None => shut,
            Some(Ok(Ok(()))) => Err(ServeError::Serve("a listener stopped unexpectedly".into())),
            Some(Ok(Err(e))) => Err(ServeError::Serve(e)),
            Some(Err(e)) => Err(ServeError::Serve(e.to_string())),
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Opens the repository, binds every port and serves in the background.
pub async fn start(cfg: ServeConfig) -> Result<RunningServer, ServeError> {
    let prometheus = telemetry::install_prometheus()?;
    let repo = cfg.model_repository.clone();
    let families = families::compiled().map_err(ServeError::Config)?;
    let monitoring = infermesh_monitor::Monitoring::start(cfg.monitor.clone())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let monitor = monitoring
        .is_on()
        .then(|| monitoring.clone() as std::sync::Arc<dyn infermesh_inference::MonitorFactory>);
    let manager = tokio::task::spawn_blocking(move || {
        ModelManager::open(ManagerConfig {
            repository: repo,
            poll_interval: None,
            families,
            monitor,
        })
    })
    .await
    .map_err(|e| ServeError::Serve(e.to_string()))??;
    // Registry models are fetched and loaded before the ports open; a registry that is down
    // leaves them as they are on disk (and the poll keeps trying).
    let registry_sync = match cfg.registry.clone() {
        Some(rc) => {
            let rs = registry::RegistrySync::new(rc, manager.clone());
            let outcomes = rs.sync_all().await;
            tracing::info!(models = ?rs.sources().iter().map(ToString::to_string).collect::<Vec<_>>(),
                ?outcomes, "registry models synced");
            Some(rs)
        }
        None => None,
    };
    let state = AppState {
        manager: manager.clone(),
        max_request_bytes: cfg.max_request_bytes,
        default_fraud_model: cfg.fraud_model.clone(),
        default_embedding_model: cfg.embedding_model.clone(),
        default_categorizer_model: cfg.categorizer_model.clone(),
        default_recommender_model: cfg.recommender_model.clone(),
        model_control: cfg.enable_model_control,
        features: match cfg.feature_source.clone() {
            Some(s) => Some(s),
            None => cfg.features.open().map_err(ServeError::Config)?,
        },
    };
    let http = bind(cfg.http_addr).await?;
    let grpc = bind(cfg.grpc_addr).await?;
    let metrics = bind(cfg.metrics_addr).await?;
    let (http_addr, grpc_addr, metrics_addr) = (
        http.local_addr()
            .map_err(|e| ServeError::Serve(e.to_string()))?,
        grpc.local_addr()
            .map_err(|e| ServeError::Serve(e.to_string()))?,
        metrics
            .local_addr()
            .map_err(|e| ServeError::Serve(e.to_string()))?,
    );
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let app = rest::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            cfg.limits.guard(),
            infermesh_common::limits::http_limits,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &http::Request<_>| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        );
    let sig = infermesh_common::shutdown::triggered(rx.clone());
    tasks.push(tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = http.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(sig)
            .await
            .map_err(|e| e.to_string())
    }));

    let (routes, reflection) = grpc_routes(&state, &manager, cfg.max_request_bytes).await?;
    let grpc_guard = cfg.limits.guard();
    let sig = infermesh_common::shutdown::triggered(rx.clone());
    tasks.push(tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                infermesh_common::error::fix_decode_status,
            ))
            .layer(
                tower_http::trace::TraceLayer::new_for_grpc().make_span_with(
                    |req: &http::Request<_>| tracing::info_span!("grpc", path = %req.uri().path()),
                ),
            )
            // Inside the trace layer, so a refusal is traced like any answer.
            .layer(infermesh_common::limits::GrpcLimitsLayer::new(grpc_guard))
            .add_routes(routes)
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming, sig)
            .await
            .map_err(|e| e.to_string())
    }));

    let sig = infermesh_common::shutdown::triggered(rx.clone());
    tasks.push(tokio::spawn(async move {
        telemetry::serve_metrics(metrics, prometheus, sig)
            .await
            .map_err(|e| e.to_string())
    }));

    let poller = cfg.poll_interval.map(|i| manager.spawn_poller(i));
    let registry_poller = registry_sync.as_ref().map(registry::RegistrySync::spawn);
    tracing::info!(%http_addr, %grpc_addr, %metrics_addr, repository = %cfg.model_repository.display(),
        models = manager.models().len(), "inference server listening");
    Ok(RunningServer {
        http_addr,
        grpc_addr,
        metrics_addr,
        manager,
        monitoring,
        shutdown: tx,
        tasks,
        poller,
        registry_poller,
    })
}

/// Every gRPC service of this build: KServe V2, the typed `infermesh.v1` services of the
/// families compiled in, the typed services families bring themselves, health, and
/// reflection over all their protos.
async fn grpc_routes(
    state: &AppState,
    manager: &std::sync::Arc<ModelManager>,
    max: usize,
) -> Result<
    (
        tonic::service::Routes,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    ),
    ServeError,
> {
    // Standard gRPC health (grpc.health.v1), so grpcurl and load balancers work.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let mut routes = tonic::service::Routes::builder();
    macro_rules! serve {
        ($server:ty, $svc:expr) => {{
            routes.add_service(
                <$server>::new($svc)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(usize::MAX),
            );
            health_reporter.set_serving::<$server>().await;
        }};
    }
    serve!(
        GrpcInferenceServiceServer<grpc::V2Grpc>,
        grpc::V2Grpc::new(state.clone())
    );
    #[cfg(feature = "trees")]
    {
        use infermesh_proto::v1::fraud_scoring_server::FraudScoringServer;
        serve!(
            FraudScoringServer<fraud::FraudService>,
            fraud::FraudService::new(state.clone())
        );
    }
    #[cfg(feature = "text")]
    {
        use infermesh_proto::v1::categorizer_server::CategorizerServer;
        use infermesh_proto::v1::resume_matcher_server::ResumeMatcherServer;
        use infermesh_proto::v1::text_embedding_server::TextEmbeddingServer;
        serve!(
            TextEmbeddingServer<text::TextService>,
            text::TextService::new(state.clone())
        );
        serve!(
            CategorizerServer<text::TextService>,
            text::TextService::new(state.clone())
        );
        serve!(
            ResumeMatcherServer<resume::ResumeService>,
            resume::ResumeService::new(state.clone())
        );
    }
    #[cfg(feature = "recs")]
    {
        use infermesh_proto::v1::recommender_server::RecommenderServer;
        serve!(
            RecommenderServer<recs::RecsService>,
            recs::RecsService::new(state.clone())
        );
    }
    routes.add_service(health);
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(infermesh_proto::FILE_DESCRIPTOR_SET);
    for family in manager.families().iter() {
        if let Some(grpc) = family.grpc {
            grpc(manager.clone(), &mut routes);
        }
        if let Some(fds) = family.file_descriptor_set {
            reflection = reflection.register_encoded_file_descriptor_set(fds);
        }
    }
    let reflection = reflection
        .build_v1()
        .map_err(|e| ServeError::Serve(format!("gRPC reflection: {e}")))?;
    Ok((routes.routes(), reflection))
}

/// Serves until Ctrl-C (or SIGTERM), printing the bound ports first.
pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    let server = start(cfg).await?;
    // Not `println!`: it panics when stdout is a closed pipe, and a banner must not stop a server.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh serve: http {} grpc {} metrics {}",
        server.http_addr,
        server.grpc_addr,
        server.metrics_addr
    );
    server.wait(stop_signal()).await
}

pub use infermesh_common::shutdown::stop_signal;
