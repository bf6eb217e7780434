//! `infermesh`: one binary, a subcommand per service. Parses flags, starts telemetry, and
//! calls the service library's `run`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use infermesh_common::telemetry::{TelemetryConfig, init_tracing};
use infermesh_training::write_stdout;

#[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
mod up;
#[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
use up::{UpArgs, up};

/// infermesh: a Rust ML inference mesh (KServe V2 inference server, JSON gateway, jobs).
#[derive(Debug, Parser)]
#[command(name = "infermesh", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "INFERMESH_LOG_JSON")]
    log_json: bool,
    /// Export traces over OTLP/gRPC to this endpoint (e.g. http://127.0.0.1:4317); off when unset.
    #[arg(long, global = true, env = "INFERMESH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every model of a model repository over KServe V2 REST (8000) and gRPC (8001),
    /// with Prometheus metrics on 8002.
    Serve(infermesh_server::ServeArgs),
    /// Run the JSON gateway (8080, metrics 8082) in front of an inference server.
    Gateway(infermesh_gateway::GatewayArgs),
    /// The embedded default: write the sample model repository (a fraud model the project
    /// trained) if missing, then run the inference server and the gateway in one process.
    #[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
    Up(UpArgs),
    /// Train a model (e.g. `infermesh train categorizer`).
    #[command(subcommand)]
    Train(infermesh_training::TrainCommand),
    /// Evaluate a trained model (e.g. `infermesh eval categorizer`).
    #[command(subcommand)]
    Eval(infermesh_training::EvalCommand),
    /// Data drift between a reference and a current table (CSV, TSV or Parquet), as
    /// Evidently 0.7's DataDriftPreset computes it (e.g. `infermesh drift --reference
    /// train.parquet --current today.parquet --json`).
    Drift(infermesh_training::drift::DriftArgs),
    /// Point an alias of a registered model (MLflow, or the local registry without a
    /// tracking URI) at a version, optionally gated on metrics (e.g.
    /// `infermesh promote fraud --from challenger --require "pr_auc>=champion"`).
    Promote(infermesh_training::promote::PromoteArgs),
    /// Register a model version directory (what `infermesh train` wrote) in MLflow, or in the
    /// local registry without a tracking URI, and point an alias (challenger) at it.
    Register(infermesh_training::promote::RegisterArgs),
    /// A/B experiments (e.g. `infermesh ab report --gateway http://127.0.0.1:8080`).
    #[command(subcommand)]
    Ab(infermesh_gateway::ab::AbCommand),
    /// The embedded LLM (e.g. `infermesh llm serve`: Ollama's API on 11434).
    #[cfg(feature = "llm")]
    #[command(subcommand)]
    Llm(LlmCommand),
    /// The Feast-compatible feature store: `infermesh features serve` (Feast's HTTP and gRPC
    /// APIs on 6566, over Redis in Feast's layout or memory) and `infermesh features
    /// materialize` (a CSV/Parquet file's latest values per entity into the store).
    #[command(subcommand)]
    Features(infermesh_feature_server::FeaturesCommand),
    /// Pipelines (`infermesh pipeline llm`: the LLM side-channel worker; `reviews`, `fraud`,
    /// `behavior`, `resumes`: the streaming pipelines).
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Kafka administration (`infermesh kafka init`: the platform's topics).
    #[command(subcommand)]
    Kafka(KafkaCommand),
    /// Change data capture (`infermesh cdc postgres`: a table's changes to a topic as Debezium
    /// change events).
    #[command(subcommand)]
    Cdc(CdcCommand),
}

#[derive(Debug, Subcommand)]
enum CdcCommand {
    /// Stream a table's inserts, updates and deletes (default `transactions`) from PostgreSQL
    /// logical replication (pgoutput; a publication and slot it creates) into a topic (default
    /// finance.transactions) as Debezium change events with schemas, keyed by --key-column
    /// (user_id); each transaction is confirmed to the slot once the broker has it. Migrates
    /// the database and creates monthly partitions ahead first; metrics on 8088.
    Postgres(Box<infermesh_cdc::CdcArgs>),
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// The LLM side channel: takes jobs (review sentiment, theme labels, fraud reasons, skill
    /// fills, recommendation explanations) from the queue (Redis, or memory) and runs them on
    /// the Ollama API, sanitised and cached; metrics on 8087.
    Llm(infermesh_pipelines::llm::LlmWorkerArgs),
    /// The reviews pipeline: consumes reviews.submitted, scores sentiment and topic on the
    /// inference server (gRPC), upserts table `reviews` in PostgreSQL, publishes each review
    /// on Redis Pub/Sub (infermesh:reviews) and queues LLM theme labels; metrics on 8083.
    Reviews(infermesh_pipelines::reviews::ReviewsArgs),
    /// The fraud pipeline: consumes finance.transactions (plain JSON or Debezium change
    /// events), keeps Redis velocity counters, an exact 60 s sliding window and spend per user,
    /// scores with the tree model in process (--model-repository) or over gRPC
    /// (--inference-url), and produces alerts to fraud.alerts (idempotent ids, TreeSHAP
    /// reasons, rule hits); poison messages go to finance.transactions.dlq; metrics on 8084.
    Fraud(Box<infermesh_pipeline_fraud::FraudArgs>),
    /// The behaviour pipeline: consumes user.behavior (the gateway's events) and keeps each
    /// user's last 10 viewed products, drops their cached recommendations on a view or
    /// purchase (the gateway's Redis store), and writes session_views:session_product_views
    /// to the feature store; bad events go to user.behavior.dlq; metrics on 8085.
    Behavior(Box<infermesh_pipeline_behavior::BehaviorArgs>),
    /// The resumes pipeline: consumes resume.uploaded (text, a base64 PDF/DOCX or an object
    /// key), ranks each resume against its job on the inference server's ResumeMatcher (gRPC;
    /// the job's description from the event or table jobs), upserts resume_scores in
    /// PostgreSQL and produces resume.scored; bad events go to resume.uploaded.dlq; metrics on
    /// 8086.
    Resumes(Box<infermesh_pipeline_resumes::ResumesArgs>),
}

#[derive(Debug, Subcommand)]
enum KafkaCommand {
    /// Create the platform's topics and their dead-letter topics (partitions, replication and
    /// retention from a TOML plan; default: the embedded one), leaving existing ones as they
    /// are; fraud.alerts is the append-only audit log (delete policy, one year).
    Init(infermesh_pipelines::kafka::topics::InitArgs),
}

#[cfg(feature = "llm")]
#[derive(Debug, Subcommand)]
enum LlmCommand {
    /// Serve a GGUF LLM (default SmolLM2-135M-Instruct as `smollm2:135m`) and MiniLM
    /// embeddings (`all-minilm`) over Ollama's HTTP API on 11434: /api/generate, /api/chat,
    /// /api/embed, /api/tags, /api/show, /api/version; Prometheus at /metrics.
    Serve(infermesh_ollama::server::LlmServeArgs),
}

/// oneDNN (inside OpenVINO's CPU plugin) keeps a JIT-compiled primitive per operator and input
/// shape, 1024 by default: about 170 MB more for MiniLM, since text batches come in many
/// shapes. 128 keeps memory flat with no measurable loss of speed (BENCHMARKS.md); a value
/// the caller sets wins.
const ONEDNN_CACHE: (&str, &str) = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128");

/// glibc gives each thread that meets a locked heap a new arena, up to 8 per core, and an
/// arena keeps what it held at its peak. The inference engines allocate from their own worker
/// threads, so a server ends up holding many half-empty arenas: with OpenVINO serving MiniLM
/// on 2 cores, one arena per core cut the peak RSS under load from 314-319 to 282-283 MiB, at
/// the same batched throughput and +0.6 ms single-sentence p50 (BENCHMARKS.md).
/// `MALLOC_ARENA_MAX` set by the caller wins (glibc has read it before `main`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only changes an allocator setting (under glibc's own lock); it is
    // called from `main` before any other thread starts, with a valid parameter and value.
    // Its result (1 on success) is not needed: on failure glibc keeps its default.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> anyhow::Result<std::process::ExitCode> {
    if std::env::var_os(ONEDNN_CACHE.0).is_none() {
        // SAFETY: the first statement of `main`: no other thread exists yet, so nothing can
        // read the environment while it changes. oneDNN reads the variable when OpenVINO
        // creates its first primitive, so it cannot be set any later.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(ONEDNN_CACHE.0, ONEDNN_CACHE.1)
        };
    }
    limit_malloc_arenas();
    let cli = Cli::parse();
    // Training and evaluation are CPU-bound batch jobs: no runtime, no telemetry.
    let command = match cli.command {
        Command::Train(job) => return Ok(job.run().map(|()| std::process::ExitCode::SUCCESS)?),
        Command::Eval(job) => return Ok(job.run().map(|()| std::process::ExitCode::SUCCESS)?),
        Command::Drift(args) => {
            let (text, drifted) = args.run_with_status()?;
            write_stdout(&text)?;
            if drifted {
                eprintln!("infermesh drift: the dataset drifted (--fail-on-drift)");
                return Ok(std::process::ExitCode::from(
                    infermesh_training::promote::GATE_FAILED_EXIT,
                ));
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        other => other,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    rt.block_on(async move {
        let service_name = match &command {
            Command::Serve(_) => "infermesh-serve",
            Command::Gateway(_) => "infermesh-gateway",
            #[cfg(feature = "llm")]
            Command::Llm(_) => "infermesh-llm",
            Command::Features(infermesh_feature_server::FeaturesCommand::Serve(_)) => {
                "infermesh-features"
            }
            Command::Pipeline(PipelineCommand::Llm(_)) => "infermesh-pipeline-llm",
            Command::Pipeline(PipelineCommand::Reviews(_)) => "infermesh-pipeline-reviews",
            Command::Pipeline(PipelineCommand::Fraud(_)) => "infermesh-pipeline-fraud",
            Command::Cdc(_) => "infermesh-cdc",
            Command::Pipeline(PipelineCommand::Behavior(_)) => "infermesh-pipeline-behavior",
            Command::Pipeline(PipelineCommand::Resumes(_)) => "infermesh-pipeline-resumes",
            #[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
            Command::Up(_) => "infermesh-up",
            Command::Train(_)
            | Command::Eval(_)
            | Command::Drift(_)
            | Command::Ab(_)
            | Command::Features(_)
            | Command::Kafka(_)
            | Command::Promote(_)
            | Command::Register(_) => "infermesh-job",
        };
        let _telemetry = init_tracing(&TelemetryConfig {
            json_logs: cli.log_json,
            otlp_endpoint: cli.otlp_endpoint.clone(),
            service_name: service_name.into(),
        })?;
        match command {
            Command::Serve(args) => {
                let cfg = args.validate()?;
                infermesh_server::run(cfg).await?;
            }
            Command::Gateway(args) => {
                let cfg = args.validate()?;
                infermesh_gateway::run(cfg, infermesh_server::stop_signal()).await?;
            }
            #[cfg(all(feature = "trees", feature = "text", feature = "recs"))]
            Command::Up(args) => up(args).await?,
            Command::Ab(cmd) => write_stdout(&cmd.run().await?)?,
            Command::Features(cmd) => cmd.run().await?,
            #[cfg(feature = "llm")]
            Command::Llm(LlmCommand::Serve(args)) => {
                let cfg = args.validate()?;
                infermesh_ollama::server::run(cfg, infermesh_server::stop_signal()).await?;
            }
            Command::Pipeline(PipelineCommand::Llm(args)) => {
                let cfg = args.validate()?;
                infermesh_pipelines::llm::run(cfg, infermesh_server::stop_signal()).await?;
            }
            Command::Pipeline(PipelineCommand::Reviews(args)) => {
                let cfg = args.validate()?;
                infermesh_pipelines::reviews::run(cfg, infermesh_server::stop_signal()).await?;
            }
            Command::Pipeline(PipelineCommand::Fraud(args)) => {
                infermesh_pipeline_fraud::run(*args).await?;
            }
            Command::Pipeline(PipelineCommand::Behavior(args)) => {
                infermesh_pipeline_behavior::run(*args).await?;
            }
            Command::Pipeline(PipelineCommand::Resumes(args)) => {
                infermesh_pipeline_resumes::run(*args).await?;
            }
            Command::Cdc(CdcCommand::Postgres(args)) => infermesh_cdc::run(*args).await?,
            Command::Kafka(KafkaCommand::Init(args)) => {
                write_stdout(&infermesh_pipelines::kafka::topics::run_init(&args).await?)?;
            }
            Command::Promote(args) => match args.run().await {
                Ok(done) => write_stdout(&done)?,
                // Not better: a distinct status, so a scheduler can skip rather than fail.
                Err(e @ infermesh_training::promote::PromoteError::GateFailed(_)) => {
                    eprintln!("infermesh promote: {e}");
                    return Ok(std::process::ExitCode::from(
                        infermesh_training::promote::GATE_FAILED_EXIT,
                    ));
                }
                Err(e) => return Err(e.into()),
            },
            Command::Register(args) => write_stdout(&args.run().await?)?,
            Command::Train(_) | Command::Eval(_) | Command::Drift(_) => {} // handled above
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
