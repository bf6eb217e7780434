//! `infermesh up`: the embedded default (the sample repository, the inference server and the
//! gateway in one process). Built with the trees, text, recs, anomaly, topics and sentiment families,
//! whose sample models it writes: the topic and sentiment models are trained on the project's
//! own sample reviews when the model cache holds all-MiniLM-L6-v2.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context;
use infermesh_training::write_stdout;

/// A V2 REST request body for the sample `anomaly` model: an ordinary purchase and a large
/// one at 3 am far from home (amount, amount_to_avg_ratio, hour_of_day, txn_count_24h,
/// distance_from_home_km).
const EXAMPLE_ANOMALY_REQUEST: &str = r#"{"inputs":[{"name":"input__0","shape":[2,5],"datatype":"FP32","data":[[42.0,1.1,14,3,4.5],[2400.0,38.0,3,19,900.0]]}]}"#;

/// A V2 REST request body with two reviews, for the sample `sentiment` and `topics` models.
const EXAMPLE_REVIEWS_REQUEST: &str = r#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["The battery died after two hours, very disappointing.","Delivery was quick and the parcel arrived in perfect shape."]}]}"#;

/// A transaction for the gateway's `POST /api/v1/transactions` that the in-process fraud
/// pipeline alerts on (a large foreign card-not-present payment at 3 am on a new device).
const EXAMPLE_TRANSACTION: &str = r#"{"transaction_id":"tx-9001","user_id":"u7","device_id":"dev-3","amount":912.5,"currency":"EUR","merchant":"electronics-online","category":"electronics","created_at":"2026-12-07T03:00:00Z","merchant_risk":0.41,"distance_from_home_km":240,"is_foreign":1,"card_present":0,"account_age_days":21,"failed_logins_24h":2,"new_device":1}"#;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Where the sample model repository is written (kept if it already exists).
    #[arg(
        long,
        env = "INFERMESH_MODEL_REPOSITORY",
        default_value = "run/model-repository"
    )]
    pub(crate) model_repository: PathBuf,
    /// Address both services listen on.
    #[arg(long, env = "INFERMESH_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub(crate) host: IpAddr,
    /// KServe V2 REST port.
    #[arg(long, default_value_t = 8000)]
    pub(crate) http_port: u16,
    /// gRPC port.
    #[arg(long, default_value_t = 8001)]
    pub(crate) grpc_port: u16,
    /// Inference metrics port.
    #[arg(long, default_value_t = 8002)]
    pub(crate) metrics_port: u16,
    /// Gateway port.
    #[arg(long, default_value_t = 8080)]
    pub(crate) gateway_port: u16,
    /// Gateway metrics port.
    #[arg(long, default_value_t = 8082)]
    pub(crate) gateway_metrics_port: u16,
    /// Feature server port (Feast's HTTP and gRPC APIs over the in-memory store holding the
    /// shared features of the sample users and devices).
    #[arg(long, default_value_t = infermesh_feature_server::DEFAULT_PORT)]
    pub(crate) features_port: u16,
    /// Repository poll interval in seconds (0 = off).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) poll_interval: f64,
    /// Model cache holding all-MiniLM-L6-v2 (filled by scripts/fetch_models.sh); when it is
    /// there, `minilm` (sentence embeddings, resume ranking) is served too. Default:
    /// ~/.cache/infermesh/models.
    #[arg(long, env = "INFERMESH_MODEL_CACHE")]
    pub(crate) model_cache: Option<PathBuf>,
    /// Port of the embedded LLM's Ollama API, served when the model cache holds
    /// SmolLM2-135M-Instruct (scripts/fetch_models.sh: ensure_smollm2).
    #[cfg(feature = "llm")]
    #[arg(long, default_value_t = 11434)]
    pub(crate) llm_port: u16,
    /// PostgreSQL URL for the reviews pipeline (table `reviews`); when set, the pipeline runs
    /// in this process on an in-process event bus and the gateway's `POST /api/v1/reviews`
    /// feeds it. Unset: that route answers 503.
    #[arg(long, env = "INFERMESH_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Redis URL for the reviews pipeline's live feed and LLM job queue (unset: memory, no
    /// live feed).
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// The inference log and live drift (the sample fraud model carries a drift reference,
    /// so its gauges appear once it has served --drift-min-rows rows).
    #[command(flatten)]
    pub(crate) monitor: infermesh_server::MonitorArgs,
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    // What `up` did and how to try it, written once the servers listen.
    let mut banner = String::new();
    let written = infermesh_server::sample::write_sample_repository(&args.model_repository)
        .with_context(|| {
            format!(
                "cannot write the sample repository to {}",
                args.model_repository.display()
            )
        })?;
    if written {
        writeln!(
            banner,
            "wrote the sample model repository to {}",
            args.model_repository.display()
        )?;
    }
    let cache = args
        .model_cache
        .clone()
        .unwrap_or_else(infermesh_server::sample::default_model_cache);
    if infermesh_server::sample::link_minilm(&args.model_repository, &cache)
        .with_context(|| format!("cannot link all-MiniLM-L6-v2 from {}", cache.display()))?
    {
        writeln!(
            banner,
            "added minilm (all-MiniLM-L6-v2 from {})",
            cache.display()
        )?;
    }
    let minilm = cache.join("all-MiniLM-L6-v2");
    if minilm.join("model.safetensors").is_file() {
        // Trained once on the project's own sample reviews (seconds in a release build),
        // then kept with the repository.
        let repo = args.model_repository.clone();
        let written = tokio::task::spawn_blocking(move || {
            infermesh_training::sample_reviews::write_sample_review_models(&repo, &minilm, true)
        })
        .await
        .context("the sample review models' training stopped")?
        .context("cannot train the sample review models")?;
        if !written.is_empty() {
            writeln!(
                banner,
                "trained {} on the sample reviews (all-MiniLM-L6-v2 embeddings)",
                written.join(" and ")
            )?;
        }
    }
    // The feature store: the shared features in memory, seeded for the sample users and
    // devices, served on Feast's APIs and read in process by the fraud and recs models.
    let registry = infermesh_feature_server::sample::sample_registry()?;
    let store: std::sync::Arc<dyn infermesh_features::store::OnlineStore> =
        std::sync::Arc::new(infermesh_features::store::MemoryStore::new(1_000_000, None));
    let feature_state =
        infermesh_feature_server::FeatureState::new(registry.clone(), store.clone());
    let features = infermesh_feature_server::start_with(
        infermesh_feature_server::FeaturesServeArgs {
            host: args.host,
            port: args.features_port,
            registry: infermesh_feature_server::RegistryArgs {
                registry: "features/repo/features.toml".into(),
                project: None,
            },
            registry_poll_interval: 0.0,
            store: Default::default(),
            max_request_bytes: 16 << 20,
            limits: Default::default(),
        }
        .validate()?,
        feature_state.clone(),
    )
    .await?;
    // Seeded once the server (and the process's metrics recorder) runs, so the writes count.
    let seeded = infermesh_feature_server::sample::seed(&feature_state).await?;
    let mut serve = infermesh_server::ServeArgs {
        model_repository: args.model_repository.clone(),
        host: args.host,
        http_port: args.http_port,
        grpc_port: args.grpc_port,
        metrics_port: args.metrics_port,
        poll_interval: args.poll_interval,
        max_request_bytes: 64 * 1024 * 1024,
        fraud_model: "fraud".into(),
        embedding_model: "minilm".into(),
        categorizer_model: "categorizer".into(),
        recommender_model: "recs".into(),
        enable_model_control: false,
        limits: Default::default(),
        registry: Default::default(),
        monitor: args.monitor.clone(),
        features: Default::default(),
    }
    .validate()?;
    let registry = std::sync::Arc::new(registry);
    let feature_source = std::sync::Arc::new(infermesh_server::features::FeatureSource::new(
        registry.clone(),
        store.clone(),
        std::time::Duration::from_secs_f64(
            infermesh_server::features::DEFAULT_FEATURE_TIMEOUT_MS / 1000.0,
        ),
    ));
    serve.feature_source = Some(feature_source.clone());
    let server = infermesh_server::start(serve).await?;
    // The fraud pipeline in process: transactions posted to the gateway reach it over an
    // in-process bus; it scores them on the server's models (the store fills their inputs, and
    // it writes user_avg_spend back) and its alerts go to the gateway's SSE and WebSocket
    // streams.
    let stream_bus: std::sync::Arc<dyn infermesh_pipelines::bus::EventBus> = std::sync::Arc::new(
        infermesh_pipelines::bus::InProcessBus::new(100_000, std::time::Duration::from_secs(60)),
    );
    let alert_feed = infermesh_gateway::alerts::AlertFeed::start(
        stream_bus.subscribe("fraud.alerts", "gateway").await?,
        infermesh_gateway::alerts::DEFAULT_RING,
    );
    let fraud_pipeline = infermesh_pipeline_fraud::start_in_process(
        stream_bus.clone(),
        infermesh_pipeline_fraud::handler::Scorer::InProcess(
            infermesh_server::local::LocalModels::shared(
                server.manager.clone(),
                "fraud".into(),
                Some(feature_source),
            )
            .fraud(),
        ),
        Some(infermesh_features::writer::FeatureWriter::start(
            registry,
            store,
            infermesh_features::writer::WriterConfig::default(),
        )),
    )
    .await?;
    let mut gw_cfg = infermesh_gateway::GatewayArgs {
        host: args.host,
        port: args.gateway_port,
        metrics_port: args.gateway_metrics_port,
        inference_url: format!("http://{}", server.grpc_addr),
        timeout_ms: 2000,
        max_request_bytes: 1024 * 1024,
        config: None,
        redis_url: None,
        redis_timeout_ms: 100,
        redis_key_prefix: "infermesh:".into(),
        limits: Default::default(),
        kafka_brokers: None,
    }
    .validate()?;
    gw_cfg.transactions_bus = Some(stream_bus);
    gw_cfg.alerts = Some(alert_feed);
    let reviews = match &args.database_url {
        Some(url) if !url.trim().is_empty() => {
            let mut cfg = infermesh_pipelines::reviews::ReviewsArgs {
                inference_url: format!("http://{}", server.grpc_addr),
                database_url: Some(url.clone()),
                redis_url: args.redis_url.clone(),
                concurrency: 2,
                ..Default::default()
            }
            .validate()?;
            // Its metrics are on the gateway's port (one recorder per process).
            cfg.metrics_addr = None;
            let bus: std::sync::Arc<dyn infermesh_pipelines::bus::EventBus> =
                std::sync::Arc::new(infermesh_pipelines::bus::InProcessBus::new(
                    10_000,
                    std::time::Duration::from_secs(60),
                ));
            gw_cfg.reviews_bus = Some(bus.clone());
            Some(infermesh_pipelines::reviews::start(cfg, bus).await?)
        }
        _ => None,
    };
    let gateway = infermesh_gateway::start(gw_cfg).await?;
    #[cfg(feature = "llm")]
    let llm = start_llm(&args, &cache).await?;
    // The LLM side-channel worker, in process: it takes the reviews pipeline's theme-label
    // jobs (from its queue: in memory unless --redis-url) to the embedded LLM.
    #[cfg(feature = "llm")]
    let worker = match (&llm, &reviews) {
        (Some(llm), Some(reviews)) => {
            let gguf = cache
                .join(infermesh_ollama::server::DEFAULT_MODEL)
                .join("model.gguf");
            let mut cfg = infermesh_pipelines::llm::LlmWorkerArgs {
                redis_url: args.redis_url.clone(),
                ollama_url: format!("http://{}", llm.addr),
                tokenizer: Some(gguf),
                ..Default::default()
            }
            .validate()?;
            // Its metrics are on the gateway's port (one recorder per process).
            cfg.metrics_addr = None;
            // Theme labels go back to the reviews pipeline's tables before a job is acked.
            let labels: std::sync::Arc<dyn infermesh_pipelines::llm::JobSink> =
                std::sync::Arc::new(infermesh_pipelines::reviews::labels::TopicLabelSink::new(
                    std::sync::Arc::new(reviews.store.clone()),
                ));
            Some(
                infermesh_pipelines::llm::start_on(cfg, Some(reviews.queue.clone()), Some(labels))
                    .await?,
            )
        }
        _ => None,
    };
    let gw = gateway.addr;
    let http = server.http_addr;
    writeln!(
        banner,
        "infermesh up: inference http {http} grpc {} metrics {} | gateway http {gw} metrics {}",
        server.grpc_addr, server.metrics_addr, gateway.metrics_addr
    )?;
    writeln!(
        banner,
        "feature store (Feast APIs, in memory; {seeded} rows for users u1..u50 and devices dev-1..dev-20): grpc+http {}",
        features.addr
    )?;
    #[cfg(feature = "llm")]
    match &llm {
        Some(llm) => writeln!(
            banner,
            "embedded LLM (Ollama API, smollm2:135m): http {}",
            llm.addr
        )?,
        None => writeln!(
            banner,
            "no embedded LLM: the model cache has no SmolLM2 GGUF (scripts/fetch_models.sh: ensure_smollm2)"
        )?,
    }
    #[cfg(feature = "llm")]
    if worker.is_some() {
        writeln!(
            banner,
            "LLM side-channel worker: theme labels of new review topics, queued, cached, written to topic_labels and reviews.topic_label"
        )?;
    }
    writeln!(banner, "try:")?;
    writeln!(banner, "  curl -s http://{http}/v2/models/fraud")?;
    writeln!(
        banner,
        "  curl -s -X POST http://{gw}/api/v1/fraud/score -H 'content-type: application/json' \\\n    -d '{}'",
        infermesh_server::sample::EXAMPLE_SCORE_REQUEST
    )?;
    writeln!(
        banner,
        "  curl -s -X POST http://{gw}/api/v1/fraud/score -H 'content-type: application/json' \\\n    -d '{}'",
        infermesh_server::sample::EXAMPLE_STORE_SCORE_REQUEST
    )?;
    writeln!(
        banner,
        "  curl -s -X POST http://{}/get-online-features -H 'content-type: application/json' \\\n    -d '{{\"entities\": {{\"user_id\": [\"u7\"], \"device_id\": [\"dev-3\"]}}, \"feature_service\": \"fraud_features\"}}'",
        features.addr
    )?;
    writeln!(
        banner,
        "  curl -s -X POST http://{http}/v2/models/fraud/infer -H 'content-type: application/json' \\\n    -d '{}'",
        infermesh_server::sample::example_v2_request()
    )?;
    if args.model_repository.join("minilm/config.toml").exists() {
        writeln!(
            banner,
            "  curl -s -X POST http://{http}/v2/models/minilm/infer -H 'content-type: application/json' \\\n    -d '{}'",
            infermesh_server::sample::EXAMPLE_EMBED_REQUEST
        )?;
        writeln!(
            banner,
            "  curl -s -X POST http://{gw}/api/v1/resumes/rank -H 'content-type: application/json' \\\n    -d '{}'",
            infermesh_server::sample::EXAMPLE_RANK_REQUEST
        )?;
    }
    if args.model_repository.join("anomaly/config.toml").exists() {
        writeln!(
            banner,
            "  curl -s -X POST http://{http}/v2/models/anomaly/infer -H 'content-type: application/json' \\\n    -d '{}'",
            EXAMPLE_ANOMALY_REQUEST
        )?;
    }
    if args.model_repository.join("sentiment/config.toml").exists() {
        writeln!(
            banner,
            "  curl -s -X POST http://{http}/v2/models/sentiment/infer -H 'content-type: application/json' \\\n    -d '{}'",
            EXAMPLE_REVIEWS_REQUEST
        )?;
        writeln!(
            banner,
            "  curl -s -X POST http://{http}/v2/models/topics/infer -H 'content-type: application/json' \\\n    -d '{}'",
            EXAMPLE_REVIEWS_REQUEST
        )?;
    }
    #[cfg(feature = "llm")]
    if let Some(llm) = &llm {
        writeln!(
            banner,
            "  curl -s http://{}/api/chat -d '{{\"model\": \"smollm2:135m\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}], \"stream\": false}}'",
            llm.addr
        )?;
    }
    writeln!(
        banner,
        "  curl -s http://{}/metrics | grep infermesh_",
        server.metrics_addr
    )?;
    writeln!(
        banner,
        "  curl -sN http://{gw}/api/v1/fraud/alerts/stream   # live alerts (SSE; /ws for WebSocket)"
    )?;
    writeln!(
        banner,
        "  curl -s -X POST http://{gw}/api/v1/transactions -H 'content-type: application/json' \\\n    -d '{}'",
        EXAMPLE_TRANSACTION
    )?;
    if reviews.is_some() {
        writeln!(
            banner,
            "  curl -s -X POST http://{gw}/api/v1/reviews -H 'content-type: application/json' \\\n    -d '{{\"product_id\": \"p1\", \"text\": \"The battery lasts two days\", \"rating\": 5}}'"
        )?;
    }
    writeln!(banner, "Ctrl-C stops them all.")?;
    // A banner that cannot be written (stdout closed or failing) must not stop the servers.
    let _ = write_stdout(&banner);
    let res = server.wait(infermesh_server::stop_signal()).await;
    gateway.shutdown().await?;
    fraud_pipeline.shutdown().await?;
    features.shutdown().await?;
    if let Some(r) = reviews {
        r.shutdown().await;
    }
    #[cfg(feature = "llm")]
    if let Some(w) = worker {
        w.shutdown().await;
    }
    #[cfg(feature = "llm")]
    if let Some(llm) = llm {
        llm.shutdown().await?;
    }
    res?;
    Ok(())
}

/// The embedded LLM (and MiniLM embeddings when the cache has them) on Ollama's API, when the
/// model cache holds the default GGUF; `None` otherwise.
#[cfg(feature = "llm")]
async fn start_llm(
    args: &UpArgs,
    cache: &std::path::Path,
) -> anyhow::Result<Option<infermesh_ollama::server::RunningLlm>> {
    use infermesh_ollama::server::{self, DEFAULT_EMBED_MODEL, DEFAULT_MODEL, LlmServeArgs};
    if !cache.join(DEFAULT_MODEL).join("model.gguf").is_file() {
        return Ok(None);
    }
    let embed_model = if cache
        .join(DEFAULT_EMBED_MODEL)
        .join("config.json")
        .is_file()
    {
        DEFAULT_EMBED_MODEL.to_string()
    } else {
        "none".to_string()
    };
    let cfg = LlmServeArgs {
        host: args.host,
        port: args.llm_port,
        model_cache: Some(cache.to_path_buf()),
        embed_model,
        ..LlmServeArgs::default()
    }
    .validate()?;
    Ok(Some(server::start(cfg).await?))
}
