//! `infermesh`: one binary, a subcommand per service. Parses flags, starts telemetry, and
//! calls the service library's `run`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use infermesh_common::telemetry::{TelemetryConfig, init_tracing};
use infermesh_training::write_stdout;

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
    Up(UpArgs),
    /// Train a model (e.g. `infermesh train categorizer`).
    #[command(subcommand)]
    Train(infermesh_training::TrainCommand),
    /// Evaluate a trained model (e.g. `infermesh eval categorizer`).
    #[command(subcommand)]
    Eval(infermesh_training::EvalCommand),
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
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where the sample model repository is written (kept if it already exists).
    #[arg(
        long,
        env = "INFERMESH_MODEL_REPOSITORY",
        default_value = "run/model-repository"
    )]
    model_repository: PathBuf,
    /// Address both services listen on.
    #[arg(long, env = "INFERMESH_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// KServe V2 REST port.
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// gRPC port.
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
    /// Inference metrics port.
    #[arg(long, default_value_t = 8002)]
    metrics_port: u16,
    /// Gateway port.
    #[arg(long, default_value_t = 8080)]
    gateway_port: u16,
    /// Gateway metrics port.
    #[arg(long, default_value_t = 8082)]
    gateway_metrics_port: u16,
    /// Repository poll interval in seconds (0 = off).
    #[arg(long, default_value_t = 2.0)]
    poll_interval: f64,
    /// Model cache holding all-MiniLM-L6-v2 (filled by scripts/fetch_models.sh); when it is
    /// there, `minilm` (sentence embeddings, resume ranking) is served too. Default:
    /// ~/.cache/infermesh/models.
    #[arg(long, env = "INFERMESH_MODEL_CACHE")]
    model_cache: Option<PathBuf>,
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
            Command::Up(_) => "infermesh-up",
            Command::Train(_)
            | Command::Eval(_)
            | Command::Ab(_)
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
            Command::Up(args) => up(args).await?,
            Command::Ab(cmd) => write_stdout(&cmd.run().await?)?,
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
            Command::Train(_) | Command::Eval(_) => {} // handled above
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
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
    let serve = infermesh_server::ServeArgs {
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
    }
    .validate()?;
    let server = infermesh_server::start(serve).await?;
    let gw_cfg = infermesh_gateway::GatewayArgs {
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
    }
    .validate()?;
    let gateway = infermesh_gateway::start(gw_cfg).await?;
    let gw = gateway.addr;
    let http = server.http_addr;
    writeln!(
        banner,
        "infermesh up: inference http {http} grpc {} metrics {} | gateway http {gw} metrics {}",
        server.grpc_addr, server.metrics_addr, gateway.metrics_addr
    )?;
    writeln!(banner, "try:")?;
    writeln!(banner, "  curl -s http://{http}/v2/models/fraud")?;
    writeln!(
        banner,
        "  curl -s -X POST http://{gw}/api/v1/fraud/score -H 'content-type: application/json' \\\n    -d '{}'",
        infermesh_server::sample::EXAMPLE_SCORE_REQUEST
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
    writeln!(
        banner,
        "  curl -s http://{}/metrics | grep infermesh_",
        server.metrics_addr
    )?;
    writeln!(banner, "Ctrl-C stops both.")?;
    // A banner that cannot be written (stdout closed or failing) must not stop the servers.
    let _ = write_stdout(&banner);
    let res = server.wait(infermesh_server::stop_signal()).await;
    gateway.shutdown().await?;
    res?;
    Ok(())
}
