//! A typed async client for MLflow's REST API 2.0: experiments, runs (parameters, metrics,
//! tags, search), artifacts through the `mlflow-artifacts` proxy, registered models, model
//! versions and aliases.
//!
//! Written by hand over reqwest: the MLflow crates on crates.io are unmaintained and cover
//! neither the artifacts proxy nor aliases. Names follow MLflow's REST reference. MLflow's
//! error bodies (`{"error_code", "message"}`) become [`MlflowError::Api`]; a server that cannot
//! be reached becomes [`MlflowError::Unreachable`]. Idempotent reads are retried on connection
//! failures and 429/502/503/504 (three attempts, 200 ms then 800 ms apart); writes are not.
//! An idle pooled connection is dropped after [`POOL_IDLE_TIMEOUT`], below the keep-alive of
//! the servers MLflow runs under (gunicorn 2 s, uvicorn 5 s): a request written into a
//! connection the server is closing fails without a response, and a write cannot be retried.
//!
//! Artifact locations: a run's `artifact_uri` is `mlflow-artifacts:/<path>` (or
//! `mlflow-artifacts://host:port/<path>`) when the server proxies artifacts, which maps to
//! `GET|PUT /api/2.0/mlflow-artifacts/artifacts/<path>`; `file:` and plain paths (a server on
//! this machine without the proxy) are read and written directly, but only when
//! [`MlflowOptions::allow_local_artifacts`] is set: the location comes from the tracking
//! server, and `file:///etc` must not make this process copy its own disk into a model
//! repository.
//!
//! Downloads are streamed to a temporary file beside their destination and renamed into
//! place, counted against a per-file and a per-download byte cap
//! ([`MlflowOptions::max_artifact_file_bytes`], [`MlflowOptions::max_artifact_total_bytes`]);
//! artifact paths the server lists are checked to stay inside the destination, and local
//! artifact directories are walked without following symbolic links (a link is refused).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::uri::redact_uri;

/// What an MLflow call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// No answer: connection refused, DNS, timeout.
    #[error("MLflow at {uri} is unreachable: {detail}")]
    Unreachable {
        /// The tracking URI.
        uri: String,
        /// What reqwest said.
        detail: String,
    },
    /// MLflow answered with an error body.
    #[error("MLflow {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`...).
        code: String,
        /// MLflow's `message`.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from MLflow ({context}): {detail}")]
    Protocol {
        /// The call.
        context: String,
        /// What was wrong.
        detail: String,
    },
    /// A bad argument, refused before calling.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing local files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An artifact location on this machine's disk (`file:` or an absolute path) while
    /// [`MlflowOptions::allow_local_artifacts`] is off.
    #[error(
        "artifact location '{uri}' is on this machine's disk; local artifacts are refused \
         unless allowed (--allow-local-artifacts), serve artifacts through the tracking \
         server's proxy (mlflow server --serve-artifacts) instead"
    )]
    LocalArtifactsRefused {
        /// The artifact URI (credentials removed).
        uri: String,
    },
    /// An artifact larger than a download cap.
    #[error("artifact '{path}' exceeds the {scope} size cap of {limit} bytes")]
    TooLarge {
        /// The artifact path.
        path: String,
        /// `"per-file"` or `"per-download"`.
        scope: &'static str,
        /// The cap in bytes.
        limit: u64,
    },
}

impl MlflowError {
    /// MLflow's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the named thing does not exist. A missing alias is reported by MLflow as
    /// `INVALID_PARAMETER_VALUE` ("Registered model alias ... not found"), so that counts too.
    pub fn is_not_found(&self) -> bool {
        match self {
            MlflowError::Api {
                status,
                code,
                message,
            } => {
                code == "RESOURCE_DOES_NOT_EXIST"
                    || *status == 404
                    || (code == "INVALID_PARAMETER_VALUE" && message.contains("not found"))
            }
            _ => false,
        }
    }

    /// Whether the thing created already exists.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some("RESOURCE_ALREADY_EXISTS")
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        MlflowError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An `i64` MLflow may write as a JSON number or a string.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        S(String),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        S(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::I(i)) => Ok(Some(i)),
        Some(N::S(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// A metric value: a JSON number, or `"NaN"` / `"Infinity"` / `"-Infinity"` as protobuf JSON
/// writes the non-finite ones.
fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        S(String),
    }
    match N::deserialize(d)? {
        N::F(f) => Ok(f),
        N::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(serde::de::Error::custom),
        },
    }
}

/// A key/value pair (parameters, tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    /// A pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One metric point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Name.
    pub key: String,
    /// Value.
    #[serde(deserialize_with = "de_f64")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "de_i64", default)]
    pub timestamp: i64,
    /// Step (iteration).
    #[serde(deserialize_with = "de_i64", default)]
    pub step: i64,
}

impl Metric {
    /// A point stamped now.
    pub fn now(key: impl Into<String>, value: f64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp: now_ms(),
            step,
        }
    }
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Experiment {
    /// Id.
    pub experiment_id: String,
    /// Name.
    pub name: String,
    /// Where its runs' artifacts go.
    #[serde(default)]
    pub artifact_location: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Running.
    Running,
    /// Scheduled.
    Scheduled,
    /// Ended well.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped.
    Killed,
}

/// A run's metadata.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunInfo {
    /// Id.
    pub run_id: String,
    /// Experiment.
    pub experiment_id: String,
    /// Name.
    #[serde(default)]
    pub run_name: String,
    /// Status.
    pub status: RunStatus,
    /// Start, ms since the epoch.
    #[serde(deserialize_with = "de_opt_i64", default)]
    pub start_time: Option<i64>,
    /// End, ms since the epoch.
    #[serde(deserialize_with = "de_opt_i64", default)]
    pub end_time: Option<i64>,
    /// Root of its artifacts.
    #[serde(default)]
    pub artifact_uri: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// A run's logged data (latest value per metric).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunData {
    /// Latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Parameters.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Run {
    /// Metadata.
    pub info: RunInfo,
    /// Data.
    #[serde(default)]
    pub data: RunData,
}

impl Run {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.data
            .params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// A metric's latest value.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.data
            .metrics
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value)
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// One page of a run search.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunsPage {
    /// Runs.
    #[serde(default)]
    pub runs: Vec<Run>,
    /// Token of the next page, if any.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A run search (`runs/search`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSearch {
    /// Experiments searched.
    pub experiment_ids: Vec<String>,
    /// MLflow filter string (`metrics.pr_auc > 0.8 and tags.kind = 'fraud'`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Ordering (`metrics.pr_auc DESC`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order_by: Vec<String>,
    /// Page size (MLflow's default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
    /// Page token from the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// An alias and the version it points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AliasEntry {
    /// Alias.
    pub alias: String,
    /// Version.
    pub version: String,
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Aliases.
    #[serde(default)]
    pub aliases: Vec<AliasEntry>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A version of a registered model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelVersion {
    /// Registered model.
    pub name: String,
    /// Version (MLflow writes it as a string).
    pub version: String,
    /// Where its files are.
    #[serde(default)]
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// `PENDING_REGISTRATION`, `READY` or `FAILED_REGISTRATION`.
    #[serde(default)]
    pub status: String,
    /// Created, ms since the epoch.
    #[serde(deserialize_with = "de_opt_i64", default)]
    pub creation_timestamp: Option<i64>,
    /// Aliases pointing here (`get`, `get by alias`; not `search`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    /// Description.
    #[serde(default)]
    pub description: String,
}

impl ModelVersion {
    /// The version as a number.
    pub fn number(&self) -> Result<u64, MlflowError> {
        self.version.parse().map_err(|_| MlflowError::Protocol {
            context: "model version".into(),
            detail: format!("version '{}' is not an integer", self.version),
        })
    }
}

/// A file or directory in an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileInfo {
    /// Path relative to the listed directory's root.
    pub path: String,
    /// Whether it is a directory.
    #[serde(default)]
    pub is_dir: bool,
    /// Size in bytes (files).
    #[serde(deserialize_with = "de_opt_i64", default)]
    pub file_size: Option<i64>,
}

/// Default [`MlflowOptions::max_artifact_file_bytes`]: 4 GiB, above any single model file
/// infermesh serves (a large BERT `model.safetensors` is ~1.3 GiB).
pub const DEFAULT_MAX_ARTIFACT_FILE_BYTES: u64 = 4 << 30;
/// Default [`MlflowOptions::max_artifact_total_bytes`]: 16 GiB for all the files of one
/// download (one model version).
pub const DEFAULT_MAX_ARTIFACT_TOTAL_BYTES: u64 = 16 << 30;
/// Most files one [`MlflowClient::download_dir`] fetches: a listing that never ends (a
/// broken or hostile server) stops here.
pub const MAX_ARTIFACT_FILES: usize = 100_000;
/// Deepest directory nesting one [`MlflowClient::download_dir`] follows.
pub const MAX_ARTIFACT_DEPTH: usize = 32;
/// Largest JSON answer read from an API call; a larger one is a protocol error, not an
/// allocation.
const MAX_API_RESPONSE_BYTES: u64 = 64 << 20;
/// Largest error body kept (the rest is dropped).
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;
/// How long an idle connection stays in the client's pool (see the module doc).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Client options. `Debug` prints the token and the password as `***`.
#[derive(Clone)]
pub struct MlflowOptions {
    /// Per-request timeout for API calls. Default 30 s.
    pub timeout: Duration,
    /// Per-request timeout for artifact transfers. Default 10 min.
    pub transfer_timeout: Duration,
    /// Connection timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// `Authorization: Bearer` token (`MLFLOW_TRACKING_TOKEN`).
    pub token: Option<String>,
    /// Basic auth (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`).
    pub basic: Option<(String, String)>,
    /// Whether artifact locations on this machine's disk (`file:` URIs and absolute paths)
    /// may be read and written. Default `false`: the tracking server names the location, and
    /// a run whose `artifact_uri` is `file:///etc` would otherwise have this process copy its
    /// own files into a model repository. Set it (`--allow-local-artifacts`) for a tracking
    /// server on this machine that does not proxy artifacts.
    pub allow_local_artifacts: bool,
    /// Largest artifact file a download accepts, in bytes. Default
    /// [`DEFAULT_MAX_ARTIFACT_FILE_BYTES`] (4 GiB).
    pub max_artifact_file_bytes: u64,
    /// Largest total of one [`MlflowClient::download_dir`] (one model version), in bytes.
    /// Default [`DEFAULT_MAX_ARTIFACT_TOTAL_BYTES`] (16 GiB).
    pub max_artifact_total_bytes: u64,
}

impl std::fmt::Debug for MlflowOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets never reach a log line, even through `{:?}` of a wrapping struct.
        f.debug_struct("MlflowOptions")
            .field("timeout", &self.timeout)
            .field("transfer_timeout", &self.transfer_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("basic", &self.basic.as_ref().map(|(user, _)| (user, "***")))
            .field("allow_local_artifacts", &self.allow_local_artifacts)
            .field("max_artifact_file_bytes", &self.max_artifact_file_bytes)
            .field("max_artifact_total_bytes", &self.max_artifact_total_bytes)
            .finish()
    }
}

impl Default for MlflowOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            token: None,
            basic: None,
            allow_local_artifacts: false,
            max_artifact_file_bytes: DEFAULT_MAX_ARTIFACT_FILE_BYTES,
            max_artifact_total_bytes: DEFAULT_MAX_ARTIFACT_TOTAL_BYTES,
        }
    }
}

impl MlflowOptions {
    /// Defaults plus credentials from MLflow's own environment variables.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            token: var("MLFLOW_TRACKING_TOKEN"),
            basic: var("MLFLOW_TRACKING_USERNAME")
                .zip(var("MLFLOW_TRACKING_PASSWORD").or(Some(String::new()))),
            ..Self::default()
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Largest batch `runs/log-batch` takes: 1000 metrics, 100 params, 100 tags, 1000 in all.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
const BATCH_TAGS: usize = 100;

/// An MLflow tracking server. `Debug` shows the tracking URI without credentials and the
/// options with their secrets redacted.
#[derive(Clone)]
pub struct MlflowClient {
    /// The tracking URI as given (it may carry `user:pass@`, which reqwest turns into basic
    /// auth): used for requests only.
    base: String,
    /// `base` through [`redact_uri`]: what [`MlflowClient::uri`], errors and `Debug` show.
    display: String,
    http: reqwest::Client,
    opts: MlflowOptions,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("uri", &self.display)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// An open artifact file.
enum ArtifactSource {
    /// The proxy's answer, read with [`reqwest::Response::chunk`].
    Http(reqwest::Response),
    /// A file on this machine.
    File(tokio::fs::File),
}

/// Where an artifact path lives.
enum Location {
    /// Through the server's `mlflow-artifacts` proxy: the path under it.
    Proxy(String),
    /// On this machine's disk: the artifact root and the path under it (`root` joined with
    /// `rel`). Kept apart so nothing below the root is followed through a symbolic link.
    Local {
        /// The artifact root.
        root: PathBuf,
        /// The path below it, `/`-separated, already free of `.` and `..`.
        rel: String,
    },
}

impl Location {
    fn local_path(root: &Path, rel: &str) -> PathBuf {
        rel.split('/')
            .filter(|c| !c.is_empty())
            .fold(root.to_path_buf(), |p, c| p.join(c))
    }
}

/// Refuses a symbolic link anywhere from below `root` down to `root/rel` (the root itself
/// may be one: the operator chose it). Components that do not exist end the check; the
/// caller's open or create then decides.
fn refuse_symlinks_below(root: &Path, rel: &str) -> Result<(), MlflowError> {
    let mut p = root.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(MlflowError::Invalid(format!(
                    "{} is a symbolic link; artifact directories are read and written without \
                     following links",
                    p.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(MlflowError::io(&p, e)),
        }
    }
    Ok(())
}

/// Checks a `/`-separated artifact path from a listing and turns it into a relative local
/// path: refused when absolute, empty, or with an empty, `.`, `..`, backslash or NUL
/// component, any of which could put a file outside the download's destination.
fn safe_relative(path: &str) -> Result<PathBuf, MlflowError> {
    let bad = |why: &str| MlflowError::Protocol {
        context: "artifact listing".into(),
        detail: format!("artifact path {path:?} {why}; refused"),
    };
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.starts_with('/') {
        return Err(bad("is absolute"));
    }
    let mut out = PathBuf::new();
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad("has an empty, '.' or '..' component"));
        }
        if c.contains(['\\', '\0']) {
            return Err(bad("has a backslash or NUL"));
        }
        out.push(c);
    }
    Ok(out)
}

/// `path` (from a listing of `root`) relative to `root`, checked by [`safe_relative`].
fn relative_to(root: &str, path: &str) -> Result<PathBuf, MlflowError> {
    let rel = if root.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
    };
    match rel {
        Some(r) => safe_relative(r),
        None => Err(MlflowError::Protocol {
            context: "artifact listing".into(),
            detail: format!("artifact path {path:?} is not under {root:?}; refused"),
        }),
    }
}

/// The byte caps of one download, and what is left of the total.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Per-file cap.
    file_cap: u64,
    /// Total cap.
    total_cap: u64,
    /// What the files fetched so far left of `total_cap`.
    total_left: u64,
}

impl Budget {
    fn new(opts: &MlflowOptions) -> Self {
        Self {
            file_cap: opts.max_artifact_file_bytes,
            total_cap: opts.max_artifact_total_bytes,
            total_left: opts.max_artifact_total_bytes,
        }
    }

    /// Refuses a file of `size` bytes (announced or counted so far).
    fn admit(&self, path: &str, size: u64) -> Result<(), MlflowError> {
        if size > self.file_cap {
            return Err(MlflowError::TooLarge {
                path: path.to_string(),
                scope: "per-file",
                limit: self.file_cap,
            });
        }
        if size > self.total_left {
            return Err(MlflowError::TooLarge {
                path: path.to_string(),
                scope: "per-download",
                limit: self.total_cap,
            });
        }
        Ok(())
    }
}

/// A temporary file beside `target`, filled chunk by chunk within a [`Budget`] and renamed
/// onto `target` by [`CappedFile::finish`]. Dropped unfinished (an error, a cap, a cancelled
/// future), it removes itself: no partial file is ever left at or beside `target`.
struct CappedFile {
    file: tokio::fs::File,
    tmp: PathBuf,
    target: PathBuf,
    /// The artifact path, for errors.
    label: String,
    written: u64,
    budget: Budget,
    finished: bool,
}

impl CappedFile {
    async fn create(target: &Path, label: &str, budget: Budget) -> Result<Self, MlflowError> {
        let name = target
            .file_name()
            .map_or("artifact".into(), |n| n.to_string_lossy().into_owned());
        // Unique per process and per call: two downloads to one target never share a file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = target.with_file_name(format!(".{name}.part-{}-{n}", std::process::id()));
        // `create_new` so a link planted at the temporary name is not written through.
        let _ = tokio::fs::remove_file(&tmp).await;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(|e| MlflowError::io(&tmp, e))?;
        Ok(Self {
            file,
            tmp,
            target: target.to_path_buf(),
            label: label.to_string(),
            written: 0,
            budget,
            finished: false,
        })
    }

    /// Appends a chunk, refusing it (before writing) when it would pass a cap.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), MlflowError> {
        let after = self.written.saturating_add(chunk.len() as u64);
        self.budget.admit(&self.label, after)?;
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| MlflowError::io(&self.tmp, e))?;
        self.written = after;
        Ok(())
    }

    /// Copies all of `reader` in.
    async fn copy_from<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> Result<(), MlflowError> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| MlflowError::io(&self.tmp, e))?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n]).await?;
        }
    }

    /// Flushes, syncs and renames onto the target; returns the bytes written.
    async fn finish(mut self) -> Result<u64, MlflowError> {
        self.file
            .flush()
            .await
            .map_err(|e| MlflowError::io(&self.tmp, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| MlflowError::io(&self.tmp, e))?;
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| MlflowError::io(&self.target, e))?;
        self.finished = true;
        Ok(self.written)
    }
}

impl Drop for CappedFile {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a response body, at most `cap` bytes: `Ok(None)` past it. The body arrives in
/// chunks, so a server that sends more than it announced stops being read at the cap.
async fn read_capped(
    r: &mut reqwest::Response,
    cap: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if r.content_length().is_some_and(|n| n > cap) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

impl MlflowClient {
    /// A client for the tracking server at `uri` (`http://127.0.0.1:5000`).
    pub fn new(uri: &str, opts: MlflowOptions) -> Result<Self, MlflowError> {
        let base = uri.trim_end_matches('/').to_string();
        // Errors name the URI without its credentials: they end up in logs.
        let shown = redact_uri(uri);
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| MlflowError::Invalid(format!("tracking URI '{shown}': {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MlflowError::Invalid(format!(
                "tracking URI '{shown}' must be http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| MlflowError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            display: redact_uri(&base),
            base,
            http,
            opts,
        })
    }

    /// The tracking URI, without credentials ([`redact_uri`]): safe to log or write down.
    pub fn uri(&self) -> &str {
        &self.display
    }

    /// The options.
    pub fn options(&self) -> &MlflowOptions {
        &self.opts
    }

    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.opts.token, &self.opts.basic) {
            (Some(t), _) => rb.bearer_auth(t),
            (None, Some((u, p))) => rb.basic_auth(u, Some(p)),
            (None, None) => rb,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> MlflowError {
        MlflowError::Unreachable {
            uri: self.display.clone(),
            detail: if e.is_timeout() {
                "timed out".to_string()
            } else {
                // reqwest's Display hides the cause ("error sending request"); keep the chain.
                let mut s = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(c) = src {
                    s.push_str(": ");
                    s.push_str(&c.to_string());
                    src = c.source();
                }
                s
            },
        }
    }

    /// Sends, retrying idempotent requests on connection failures and 429/502/503/504.
    async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        idempotent: bool,
    ) -> Result<reqwest::Response, MlflowError> {
        let attempts = if idempotent { 3 } else { 1 };
        let mut delay = Duration::from_millis(200);
        let mut last = None;
        for attempt in 1..=attempts {
            match self.authorize(make()).send().await {
                Ok(mut r)
                    if attempt < attempts && matches!(r.status().as_u16(), 429 | 502..=504) =>
                {
                    let body = read_capped(&mut r, MAX_ERROR_BODY_BYTES)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    last = Some(MlflowError::Api {
                        status: r.status().as_u16(),
                        code: "TEMPORARILY_UNAVAILABLE".into(),
                        message: String::from_utf8_lossy(&body).into_owned(),
                    });
                }
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() || e.is_timeout() => last = Some(self.unreachable(&e)),
                Err(e) => return Err(self.unreachable(&e)),
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
        Err(last.unwrap_or_else(|| MlflowError::Invalid("no attempt made".into())))
    }

    /// Turns an error status into [`MlflowError::Api`].
    async fn check(mut r: reqwest::Response) -> Result<reqwest::Response, MlflowError> {
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        // An error body is read only up to a cap: it is a message, not a payload.
        let body = read_capped(&mut r, MAX_ERROR_BODY_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).into_owned();
        let (code, message) = match serde_json::from_str::<Value>(&text) {
            Ok(v) => (
                v["error_code"].as_str().unwrap_or("").to_string(),
                v["message"].as_str().unwrap_or(&text).to_string(),
            ),
            Err(_) => (String::new(), text.chars().take(500).collect()),
        };
        let code = if code.is_empty() {
            match status.as_u16() {
                404 => "RESOURCE_DOES_NOT_EXIST".to_string(),
                401 => "UNAUTHENTICATED".to_string(),
                403 => "PERMISSION_DENIED".to_string(),
                _ => "INTERNAL_ERROR".to_string(),
            }
        } else {
            code
        };
        Err(MlflowError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn json<T: DeserializeOwned>(
        context: &str,
        r: reqwest::Response,
    ) -> Result<T, MlflowError> {
        let mut r = Self::check(r).await?;
        let bytes = read_capped(&mut r, MAX_API_RESPONSE_BYTES)
            .await
            .map_err(|e| MlflowError::Protocol {
                context: context.into(),
                detail: e.to_string(),
            })?
            .ok_or_else(|| MlflowError::Protocol {
                context: context.into(),
                detail: format!("answer larger than {MAX_API_RESPONSE_BYTES} bytes"),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| MlflowError::Protocol {
            context: context.into(),
            detail: format!(
                "{e}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let r = self
            .send(
                || self.http.get(&url).query(query).timeout(self.opts.timeout),
                true,
            )
            .await?;
        Self::json(endpoint, r).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<T, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let r = self
            .send(
                || {
                    self.http
                        .request(method.clone(), &url)
                        .json(body)
                        .timeout(self.opts.timeout)
                },
                idempotent,
            )
            .await?;
        Self::json(endpoint, r).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Value,
    ) -> Result<T, MlflowError> {
        self.call(reqwest::Method::POST, endpoint, body, false)
            .await
    }

    fn field<T: DeserializeOwned>(
        context: &str,
        mut v: Value,
        key: &str,
    ) -> Result<T, MlflowError> {
        serde_json::from_value(v[key].take()).map_err(|e| MlflowError::Protocol {
            context: context.into(),
            detail: format!("field '{key}': {e}"),
        })
    }

    // ---- experiments ----

    /// Creates an experiment; returns its id.
    pub async fn create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if name.trim().is_empty() {
            return Err(MlflowError::Invalid("experiment name is empty".into()));
        }
        let v: Value = self
            .post("experiments/create", &json!({ "name": name }))
            .await?;
        Self::field("experiments/create", v, "experiment_id")
    }

    /// The experiment called `name`; `None` when there is none.
    pub async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, MlflowError> {
        match self
            .get::<Value>("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => Self::field("experiments/get-by-name", v, "experiment").map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The experiment called `name`, created when missing (also when another client creates it
    /// at the same moment); returns its id.
    pub async fn ensure_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(e) = self.experiment_by_name(name).await? {
            return Ok(e.experiment_id);
        }
        match self.create_experiment(name).await {
            Ok(id) => Ok(id),
            Err(e) if e.is_already_exists() => self
                .experiment_by_name(name)
                .await?
                .map(|e| e.experiment_id)
                .ok_or_else(|| MlflowError::Protocol {
                    context: "experiments/create".into(),
                    detail: format!("'{name}' exists but cannot be read"),
                }),
            Err(e) => Err(e),
        }
    }

    // ---- runs ----

    /// Starts a run in `experiment_id`; `parent` makes it a nested run (the
    /// `mlflow.parentRunId` tag MLflow's UI and client use).
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        tags: &[KeyValue],
        parent: Option<&str>,
    ) -> Result<Run, MlflowError> {
        let mut tags = tags.to_vec();
        if let Some(p) = parent {
            tags.push(KeyValue::new("mlflow.parentRunId", p));
        }
        tags.push(KeyValue::new("mlflow.source.name", "infermesh"));
        tags.push(KeyValue::new("mlflow.source.type", "JOB"));
        if let Ok(user) = std::env::var("USER") {
            tags.push(KeyValue::new("mlflow.user", user));
        }
        let v: Value = self
            .post(
                "runs/create",
                &json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": now_ms(),
                    "tags": tags,
                }),
            )
            .await?;
        Self::field("runs/create", v, "run")
    }

    /// A run.
    pub async fn get_run(&self, run_id: &str) -> Result<Run, MlflowError> {
        let v: Value = self.get("runs/get", &[("run_id", run_id)]).await?;
        Self::field("runs/get", v, "run")
    }

    /// Sets a run's status; terminal statuses also set its end time.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
    ) -> Result<RunInfo, MlflowError> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if matches!(
            status,
            RunStatus::Finished | RunStatus::Failed | RunStatus::Killed
        ) {
            body["end_time"] = json!(now_ms());
        }
        let v: Value = self.post("runs/update", &body).await?;
        Self::field("runs/update", v, "run_info")
    }

    /// Logs one parameter (parameters are write-once in MLflow).
    pub async fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<(), MlflowError> {
        let _: Value = self
            .post(
                "runs/log-parameter",
                &json!({ "run_id": run_id, "key": key, "value": value }),
            )
            .await?;
        Ok(())
    }

    /// Logs one metric point.
    pub async fn log_metric(&self, run_id: &str, metric: &Metric) -> Result<(), MlflowError> {
        let _: Value = self
            .post(
                "runs/log-metric",
                &json!({
                    "run_id": run_id,
                    "key": metric.key,
                    "value": finite_or_string(metric.value),
                    "timestamp": metric.timestamp,
                    "step": metric.step,
                }),
            )
            .await?;
        Ok(())
    }

    /// Sets one tag.
    pub async fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<(), MlflowError> {
        let _: Value = self
            .post(
                "runs/set-tag",
                &json!({ "run_id": run_id, "key": key, "value": value }),
            )
            .await?;
        Ok(())
    }

    /// Logs metrics, parameters and tags, in as many `log-batch` calls as MLflow's limits need.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        let (mut m, mut p, mut t) = (metrics, params, tags);
        while !(m.is_empty() && p.is_empty() && t.is_empty()) {
            let np = p.len().min(BATCH_PARAMS);
            let nt = t.len().min(BATCH_TAGS);
            let nm = m.len().min(BATCH_METRICS - np - nt);
            let metrics: Vec<Value> = m[..nm]
                .iter()
                .map(|x| {
                    json!({ "key": x.key, "value": finite_or_string(x.value),
                            "timestamp": x.timestamp, "step": x.step })
                })
                .collect();
            let _: Value = self
                .post(
                    "runs/log-batch",
                    &json!({ "run_id": run_id, "metrics": metrics,
                             "params": &p[..np], "tags": &t[..nt] }),
                )
                .await?;
            (m, p, t) = (&m[nm..], &p[np..], &t[nt..]);
        }
        Ok(())
    }

    /// Every point of one metric of a run, by step.
    pub async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<Metric>, MlflowError> {
        let v: Value = self
            .get(
                "metrics/get-history",
                &[("run_id", run_id), ("metric_key", key)],
            )
            .await?;
        let mut m: Vec<Metric> = if v.get("metrics").is_some() {
            Self::field("metrics/get-history", v, "metrics")?
        } else {
            Vec::new()
        };
        m.sort_by_key(|x| (x.step, x.timestamp));
        Ok(m)
    }

    /// One page of runs.
    pub async fn search_runs(&self, search: &RunSearch) -> Result<RunsPage, MlflowError> {
        let body = serde_json::to_value(search).map_err(|e| MlflowError::Invalid(e.to_string()))?;
        // A search only reads: safe to retry.
        self.call(reqwest::Method::POST, "runs/search", &body, true)
            .await
    }

    /// Every run a search finds, following page tokens.
    pub async fn search_all_runs(&self, search: &RunSearch) -> Result<Vec<Run>, MlflowError> {
        let mut s = search.clone();
        let mut all = Vec::new();
        loop {
            let page = self.search_runs(&s).await?;
            all.extend(page.runs);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => s.page_token = Some(t),
                None => return Ok(all),
            }
        }
    }

    // ---- artifacts ----

    /// Where `<artifact_uri>/<rel>` lives.
    fn locate(&self, artifact_uri: &str, rel: &str) -> Result<Location, MlflowError> {
        let rel = rel.trim_matches('/');
        if rel.split('/').any(|c| c == ".." || c == ".") {
            return Err(MlflowError::Invalid(format!(
                "artifact path '{rel}' must not contain '.' or '..'"
            )));
        }
        let join = |root: &str| {
            let root = root.trim_end_matches('/');
            if rel.is_empty() {
                root.to_string()
            } else if root.is_empty() {
                rel.to_string()
            } else {
                format!("{root}/{rel}")
            }
        };
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/path or mlflow-artifacts://host:port/path
            let path = match rest.strip_prefix("//") {
                Some(hostpath) => hostpath.split_once('/').map_or("", |(_, p)| p),
                None => rest,
            };
            return Ok(Location::Proxy(join(path.trim_start_matches('/'))));
        }
        let local_root = match artifact_uri.strip_prefix("file:") {
            // file:///abs/path, file:/abs/path (what Python's pathlib writes); a host part
            // (file://host/path) is another machine's disk and not supported.
            Some(p) if p.starts_with("///") || !p.starts_with("//") => {
                Some(p.trim_start_matches("//"))
            }
            Some(_) => None,
            None if artifact_uri.starts_with('/') => Some(artifact_uri),
            None => None,
        };
        if let Some(root) = local_root.filter(|r| r.starts_with('/')) {
            if !self.opts.allow_local_artifacts {
                return Err(MlflowError::LocalArtifactsRefused {
                    uri: redact_uri(artifact_uri),
                });
            }
            return Ok(Location::Local {
                root: PathBuf::from(root),
                rel: rel.to_string(),
            });
        }
        Err(MlflowError::Invalid(format!(
            "artifact location '{}' is not supported (mlflow-artifacts:, or file: or a path \
             with --allow-local-artifacts; start the server with --artifacts-destination to \
             proxy artifacts)",
            redact_uri(artifact_uri)
        )))
    }

    fn proxy_url(&self, path: &str) -> String {
        let encoded: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(url_escape)
            .collect();
        format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            self.base,
            encoded.join("/")
        )
    }

    /// Uploads one file to `<artifact_uri>/<dest>`.
    pub async fn upload_file(
        &self,
        artifact_uri: &str,
        dest: &str,
        file: &Path,
    ) -> Result<(), MlflowError> {
        if dest.trim_matches('/').is_empty() {
            return Err(MlflowError::Invalid("artifact destination is empty".into()));
        }
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| MlflowError::io(file, e))?;
        match self.locate(artifact_uri, dest)? {
            Location::Proxy(path) => {
                let url = self.proxy_url(&path);
                let r = self
                    .send(
                        || {
                            self.http
                                .put(&url)
                                .header("content-type", "application/octet-stream")
                                .body(bytes.clone())
                                .timeout(self.opts.transfer_timeout)
                        },
                        true,
                    )
                    .await?;
                Self::check(r).await?;
            }
            Location::Local { root, rel } => {
                // Nothing below the root is written through a link (it could point anywhere).
                refuse_symlinks_below(&root, &rel)?;
                let path = Location::local_path(&root, &rel);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| MlflowError::io(parent, e))?;
                }
                refuse_symlinks_below(&root, &rel)?;
                tokio::fs::write(&path, &bytes)
                    .await
                    .map_err(|e| MlflowError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Uploads every file under `dir` to `<artifact_uri>/<dest>/...`; returns the files sent.
    pub async fn upload_dir(
        &self,
        artifact_uri: &str,
        dest: &str,
        dir: &Path,
    ) -> Result<usize, MlflowError> {
        let mut files = Vec::new();
        walk(dir, Path::new(""), &mut files)?;
        if files.is_empty() {
            return Err(MlflowError::Invalid(format!(
                "{} holds no files to upload",
                dir.display()
            )));
        }
        for rel in &files {
            let rel_s = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let to = if dest.trim_matches('/').is_empty() {
                rel_s
            } else {
                format!("{}/{rel_s}", dest.trim_matches('/'))
            };
            self.upload_file(artifact_uri, &to, &dir.join(rel)).await?;
        }
        Ok(files.len())
    }

    /// The files and directories directly under `<artifact_uri>/<rel>`, paths relative to
    /// `<artifact_uri>`.
    pub async fn list_artifacts(
        &self,
        artifact_uri: &str,
        rel: &str,
    ) -> Result<Vec<FileInfo>, MlflowError> {
        let rel = rel.trim_matches('/');
        let prefix = |name: &str| {
            if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            }
        };
        match self.locate(artifact_uri, rel)? {
            Location::Proxy(path) => {
                let url = format!("{}/api/2.0/mlflow-artifacts/artifacts", self.base);
                let r = self
                    .send(
                        || {
                            self.http
                                .get(&url)
                                .query(&[("path", path.as_str())])
                                .timeout(self.opts.timeout)
                        },
                        true,
                    )
                    .await?;
                let v: Value = Self::json("mlflow-artifacts list", r).await?;
                let files: Vec<FileInfo> = if v.get("files").is_some() {
                    Self::field("mlflow-artifacts list", v, "files")?
                } else {
                    Vec::new()
                };
                // The proxy answers paths relative to the listed directory (MLflow sends the
                // base name). Whatever it sends must be a plain relative path: an empty name,
                // `..` or an absolute path would land a download outside its destination.
                files
                    .into_iter()
                    .map(|f| {
                        safe_relative(&f.path)?;
                        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                        Ok(FileInfo {
                            path: prefix(name),
                            ..f
                        })
                    })
                    .collect()
            }
            Location::Local { root, rel: under } => {
                refuse_symlinks_below(&root, &under)?;
                let dir = Location::local_path(&root, &under);
                let mut out = Vec::new();
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(MlflowError::io(&dir, e)),
                };
                for entry in rd {
                    let entry = entry.map_err(|e| MlflowError::io(&dir, e))?;
                    // The entry itself, not what a link points at: a link to `/` or to a
                    // parent would copy the disk or walk in circles.
                    let meta = std::fs::symlink_metadata(entry.path())
                        .map_err(|e| MlflowError::io(&entry.path(), e))?;
                    if meta.file_type().is_symlink() {
                        return Err(MlflowError::Invalid(format!(
                            "{} is a symbolic link; local artifacts are listed without \
                             following links",
                            entry.path().display()
                        )));
                    }
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                        return Err(MlflowError::Invalid(format!(
                            "{} is not a UTF-8 name",
                            entry.path().display()
                        )));
                    };
                    out.push(FileInfo {
                        path: prefix(&name),
                        is_dir: meta.is_dir(),
                        file_size: (!meta.is_dir()).then_some(meta.len() as i64),
                    });
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(out)
            }
        }
    }

    /// Opens one artifact file for reading: the HTTP answer of the proxy or the local file.
    /// Sizes known up front (`Content-Length`, the file's length) are checked against
    /// `budget` here, before a byte is read.
    async fn open_artifact(
        &self,
        artifact_uri: &str,
        rel: &str,
        budget: &Budget,
    ) -> Result<ArtifactSource, MlflowError> {
        match self.locate(artifact_uri, rel)? {
            Location::Proxy(path) => {
                let url = self.proxy_url(&path);
                let r = self
                    .send(
                        || self.http.get(&url).timeout(self.opts.transfer_timeout),
                        true,
                    )
                    .await?;
                let r = Self::check(r).await?;
                if let Some(n) = r.content_length() {
                    budget.admit(rel, n)?;
                }
                Ok(ArtifactSource::Http(r))
            }
            Location::Local { root, rel: under } => {
                refuse_symlinks_below(&root, &under)?;
                let path = Location::local_path(&root, &under);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| MlflowError::io(&path, e))?;
                let meta = file
                    .metadata()
                    .await
                    .map_err(|e| MlflowError::io(&path, e))?;
                if !meta.is_file() {
                    return Err(MlflowError::Invalid(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                budget.admit(rel, meta.len())?;
                Ok(ArtifactSource::File(file))
            }
        }
    }

    /// Downloads one artifact file's bytes, at most
    /// [`MlflowOptions::max_artifact_file_bytes`] of them; [`MlflowClient::download_file`]
    /// streams to disk instead of holding the file in memory.
    pub async fn download_bytes(
        &self,
        artifact_uri: &str,
        rel: &str,
    ) -> Result<Vec<u8>, MlflowError> {
        let budget = Budget::new(&self.opts);
        let mut out = Vec::new();
        match self.open_artifact(artifact_uri, rel, &budget).await? {
            ArtifactSource::Http(mut r) => {
                while let Some(chunk) = r.chunk().await.map_err(|e| self.unreachable(&e))? {
                    budget.admit(rel, out.len() as u64 + chunk.len() as u64)?;
                    out.extend_from_slice(&chunk);
                }
            }
            ArtifactSource::File(f) => {
                // One byte past the cap tells a file that grew since it was opened.
                let cap = budget.file_cap.min(budget.total_left);
                f.take(cap.saturating_add(1))
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| MlflowError::Io {
                        path: PathBuf::from(rel),
                        source: e,
                    })?;
                budget.admit(rel, out.len() as u64)?;
            }
        }
        Ok(out)
    }

    /// Downloads one artifact file to `dest`, streamed through a temporary file beside it
    /// and renamed into place (an existing `dest` is replaced), within
    /// [`MlflowOptions::max_artifact_file_bytes`]. Returns the bytes written. On any error,
    /// a cap included, nothing is left at or beside `dest`.
    pub async fn download_file(
        &self,
        artifact_uri: &str,
        rel: &str,
        dest: &Path,
    ) -> Result<u64, MlflowError> {
        let mut budget = Budget::new(&self.opts);
        self.fetch_to_file(artifact_uri, rel, dest, &mut budget, None)
            .await
    }

    /// Streams one artifact to `target` within `budget` (and takes what it wrote from the
    /// total); `listed` is the size the listing announced, checked first and at the end.
    async fn fetch_to_file(
        &self,
        artifact_uri: &str,
        rel: &str,
        target: &Path,
        budget: &mut Budget,
        listed: Option<i64>,
    ) -> Result<u64, MlflowError> {
        let listed = listed.and_then(|n| u64::try_from(n).ok());
        if let Some(n) = listed {
            budget.admit(rel, n)?;
        }
        let source = self.open_artifact(artifact_uri, rel, budget).await?;
        let mut out = CappedFile::create(target, rel, *budget).await?;
        match source {
            ArtifactSource::Http(mut r) => {
                while let Some(chunk) = r.chunk().await.map_err(|e| self.unreachable(&e))? {
                    out.write(&chunk).await?;
                }
            }
            ArtifactSource::File(f) => out.copy_from(f).await?,
        }
        if let Some(n) = listed
            && out.written != n
        {
            return Err(MlflowError::Protocol {
                context: "artifact download".into(),
                detail: format!("{rel} is {} bytes, listed as {n}", out.written),
            });
        }
        let written = out.finish().await?;
        budget.total_left = budget.total_left.saturating_sub(written);
        Ok(written)
    }

    /// Downloads the directory `<artifact_uri>/<rel>` into `dest`, which must not exist yet:
    /// files go to a sibling temporary directory that is renamed into place only when every
    /// file arrived, so a failure leaves nothing half-written. Each file is streamed to disk
    /// within [`MlflowOptions::max_artifact_file_bytes`], all of them within
    /// [`MlflowOptions::max_artifact_total_bytes`]; at most [`MAX_ARTIFACT_FILES`] files,
    /// [`MAX_ARTIFACT_DEPTH`] directories deep. Returns the files written.
    pub async fn download_dir(
        &self,
        artifact_uri: &str,
        rel: &str,
        dest: &Path,
    ) -> Result<usize, MlflowError> {
        if dest.exists() {
            return Err(MlflowError::Invalid(format!(
                "{} already exists",
                dest.display()
            )));
        }
        let parent = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| MlflowError::io(parent, e))?;
        let tmp = parent.join(format!(
            ".{}.partial-{}",
            dest.file_name()
                .map_or("download".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        let result = self.download_into(artifact_uri, rel, &tmp).await;
        match result {
            Ok(0) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                Err(MlflowError::Api {
                    status: 404,
                    code: "RESOURCE_DOES_NOT_EXIST".into(),
                    message: format!("no artifacts under {}/{rel}", redact_uri(artifact_uri)),
                })
            }
            Ok(n) => {
                tokio::fs::rename(&tmp, dest)
                    .await
                    .map_err(|e| MlflowError::io(dest, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                Err(e)
            }
        }
    }

    async fn download_into(
        &self,
        artifact_uri: &str,
        rel: &str,
        into: &Path,
    ) -> Result<usize, MlflowError> {
        tokio::fs::create_dir_all(into)
            .await
            .map_err(|e| MlflowError::io(into, e))?;
        let root = rel.trim_matches('/');
        let mut budget = Budget::new(&self.opts);
        let mut stack = vec![(root.to_string(), 0usize)];
        let mut n = 0;
        while let Some((dir, depth)) = stack.pop() {
            for f in self.list_artifacts(artifact_uri, &dir).await? {
                // Checked for directories too: their files are joined under them.
                let local_rel = relative_to(root, &f.path)?;
                if f.is_dir {
                    if depth >= MAX_ARTIFACT_DEPTH {
                        return Err(MlflowError::Protocol {
                            context: "artifact listing".into(),
                            detail: format!(
                                "{} is more than {MAX_ARTIFACT_DEPTH} directories deep",
                                f.path
                            ),
                        });
                    }
                    stack.push((f.path, depth + 1));
                    continue;
                }
                if n >= MAX_ARTIFACT_FILES {
                    return Err(MlflowError::Protocol {
                        context: "artifact listing".into(),
                        detail: format!("more than {MAX_ARTIFACT_FILES} files"),
                    });
                }
                let target = into.join(local_rel);
                if let Some(p) = target.parent() {
                    tokio::fs::create_dir_all(p)
                        .await
                        .map_err(|e| MlflowError::io(p, e))?;
                }
                self.fetch_to_file(artifact_uri, &f.path, &target, &mut budget, f.file_size)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- model registry ----

    /// Creates a registered model.
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel, MlflowError> {
        let v: Value = self
            .post(
                "registered-models/create",
                &json!({ "name": name, "description": description }),
            )
            .await?;
        Self::field("registered-models/create", v, "registered_model")
    }

    /// A registered model (with its aliases).
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, MlflowError> {
        let v: Value = self.get("registered-models/get", &[("name", name)]).await?;
        Self::field("registered-models/get", v, "registered_model")
    }

    /// The registered model, created when missing.
    pub async fn ensure_registered_model(
        &self,
        name: &str,
    ) -> Result<RegisteredModel, MlflowError> {
        match self.get_registered_model(name).await {
            Ok(m) => Ok(m),
            Err(e) if e.is_not_found() => match self.create_registered_model(name, "").await {
                Ok(m) => Ok(m),
                Err(e) if e.is_already_exists() => self.get_registered_model(name).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Registers a new version of `name` whose files are at `source` (an artifact URI),
    /// produced by `run_id`.
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        tags: &[KeyValue],
        description: &str,
    ) -> Result<ModelVersion, MlflowError> {
        let mut body = json!({ "name": name, "source": source, "tags": tags,
                               "description": description });
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        let v: Value = self.post("model-versions/create", &body).await?;
        Self::field("model-versions/create", v, "model_version")
    }

    /// One version.
    pub async fn get_model_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<ModelVersion, MlflowError> {
        let v: Value = self
            .get(
                "model-versions/get",
                &[("name", name), ("version", &version.to_string())],
            )
            .await?;
        Self::field("model-versions/get", v, "model_version")
    }

    /// Every version of `name` (`model-versions/search`, which omits aliases).
    pub async fn search_model_versions(
        &self,
        name: &str,
    ) -> Result<Vec<ModelVersion>, MlflowError> {
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("filter", filter.clone()),
                ("max_results", "200".to_string()),
            ];
            if let Some(t) = &token {
                q.push(("page_token", t.clone()));
            }
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut v: Value = self.get("model-versions/search", &q).await?;
            let next = v["next_page_token"].as_str().map(str::to_string);
            if v.get("model_versions").is_some() {
                let page: Vec<ModelVersion> =
                    Self::field("model-versions/search", v.take(), "model_versions")?;
                out.extend(page);
            }
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by_key(|m| m.version.parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    /// Where a version's files are (`model-versions/get-download-uri`).
    pub async fn model_version_download_uri(
        &self,
        name: &str,
        version: u64,
    ) -> Result<String, MlflowError> {
        let v: Value = self
            .get(
                "model-versions/get-download-uri",
                &[("name", name), ("version", &version.to_string())],
            )
            .await?;
        Self::field("model-versions/get-download-uri", v, "artifact_uri")
    }

    /// Waits until a version leaves `PENDING_REGISTRATION` (at most `timeout`).
    pub async fn wait_model_version_ready(
        &self,
        name: &str,
        version: u64,
        timeout: Duration,
    ) -> Result<ModelVersion, MlflowError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mv = self.get_model_version(name, version).await?;
            match mv.status.as_str() {
                "READY" | "" => return Ok(mv),
                "FAILED_REGISTRATION" => {
                    return Err(MlflowError::Protocol {
                        context: "model version".into(),
                        detail: format!("{name} version {version} failed registration"),
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(MlflowError::Protocol {
                        context: "model version".into(),
                        detail: format!(
                            "{name} version {version} still {} after {timeout:?}",
                            mv.status
                        ),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Points `alias` of `name` at `version`.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
    ) -> Result<(), MlflowError> {
        let _: Value = self
            .post(
                "registered-models/alias",
                &json!({ "name": name, "alias": alias, "version": version.to_string() }),
            )
            .await?;
        Ok(())
    }

    /// The version `alias` points at; `None` when the alias (or the model) does not exist.
    pub async fn get_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>, MlflowError> {
        match self
            .get::<Value>(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await
        {
            Ok(v) => Self::field("registered-models/alias", v, "model_version").map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an alias (a missing one is not an error).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), MlflowError> {
        let r: Result<Value, _> = self
            .call(
                reqwest::Method::DELETE,
                "registered-models/alias",
                &json!({ "name": name, "alias": alias }),
                true,
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn finite_or_string(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters kept).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every regular file under `root/rel`, relative to `root`, sorted. A symbolic link is
/// refused, not followed: a link to a parent would walk in circles, one to `/etc/...` would
/// upload this machine's files.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), MlflowError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| MlflowError::io(&dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| MlflowError::io(&dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type().map_err(|x| MlflowError::io(&e.path(), x))?;
        let r = rel.join(e.file_name());
        if ft.is_symlink() {
            return Err(MlflowError::Invalid(format!(
                "{} is a symbolic link; copy the files it points at into {} to upload them",
                e.path().display(),
                root.display()
            )));
        } else if ft.is_dir() {
            walk(root, &r, out)?;
        } else if ft.is_file() {
            out.push(r);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client() -> MlflowClient {
        MlflowClient::new("http://127.0.0.1:5000/", MlflowOptions::default()).unwrap()
    }

    #[test]
    fn tracking_uris_are_checked() {
        assert_eq!(client().uri(), "http://127.0.0.1:5000");
        for bad in ["127.0.0.1:5000", "ftp://x", "not a url"] {
            assert!(
                MlflowClient::new(bad, MlflowOptions::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn artifact_uris_map_to_the_proxy_or_a_directory() {
        let c = MlflowClient::new(
            "http://127.0.0.1:5000/",
            MlflowOptions {
                allow_local_artifacts: true,
                ..MlflowOptions::default()
            },
        )
        .unwrap();
        let p = |uri: &str, rel: &str| match c.locate(uri, rel).unwrap() {
            Location::Proxy(p) => format!("proxy:{p}"),
            Location::Local { root, rel } => {
                format!("local:{}", Location::local_path(&root, &rel).display())
            }
        };
        assert_eq!(
            p("mlflow-artifacts:/1/abc/artifacts", "model/model.txt"),
            "proxy:1/abc/artifacts/model/model.txt"
        );
        assert_eq!(
            p("mlflow-artifacts://h:5000/1/abc/artifacts", ""),
            "proxy:1/abc/artifacts"
        );
        assert_eq!(p("file:///tmp/a", "b"), "local:/tmp/a/b");
        assert_eq!(p("file:/tmp/a", "b/c"), "local:/tmp/a/b/c");
        assert_eq!(p("/tmp/a/", "/b/"), "local:/tmp/a/b");
        assert!(c.locate("s3://bucket/x", "y").is_err());
        // Another machine's disk, or a path relative to wherever this process runs: no.
        assert!(c.locate("file://host/tmp/a", "b").is_err());
        assert!(c.locate("file:tmp/a", "b").is_err());
        assert!(c.locate("mlflow-artifacts:/1", "../etc/passwd").is_err());
        assert_eq!(
            c.proxy_url("1/a b/c%"),
            "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/a%20b/c%25"
        );
    }

    #[test]
    fn answers_parse_with_numbers_as_strings_and_missing_fields() {
        let run: Run = serde_json::from_value(json!({
            "info": {"run_id": "r", "experiment_id": "1", "status": "FINISHED",
                     "start_time": "1700000000000", "artifact_uri": "mlflow-artifacts:/1/r/artifacts"},
            "data": {"metrics": [{"key": "auc", "value": "NaN", "timestamp": 5, "step": "2"}],
                     "params": [{"key": "lr", "value": "0.1"}]}
        }))
        .unwrap();
        assert_eq!(run.info.start_time, Some(1_700_000_000_000));
        assert_eq!(run.info.end_time, None);
        assert!(run.metric("auc").unwrap().is_nan());
        assert_eq!(run.data.metrics[0].step, 2);
        assert_eq!(run.param("lr"), Some("0.1"));
        assert_eq!(run.tag("x"), None);
        let mv: ModelVersion =
            serde_json::from_value(json!({"name": "fraud", "version": "3"})).unwrap();
        assert_eq!(mv.number().unwrap(), 3);
        assert!(mv.aliases.is_empty());
    }

    #[test]
    fn error_codes_classify() {
        let e = MlflowError::Api {
            status: 400,
            code: "INVALID_PARAMETER_VALUE".into(),
            message: "Registered model alias champion not found.".into(),
        };
        assert!(e.is_not_found());
        let e = MlflowError::Api {
            status: 400,
            code: "RESOURCE_ALREADY_EXISTS".into(),
            message: "x".into(),
        };
        assert!(e.is_already_exists() && !e.is_not_found());
        assert_eq!(finite_or_string(f64::NEG_INFINITY), json!("-Infinity"));
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_unreachable_not_a_hang() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = MlflowClient::new(
            &format!("http://127.0.0.1:{port}"),
            MlflowOptions::default(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = c.experiment_by_name("x").await.unwrap_err();
        assert!(matches!(e, MlflowError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&port.to_string()));
        // Three attempts, 200 + 800 ms apart.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn local_artifact_locations_are_refused_unless_allowed() {
        let c = client();
        for uri in ["file:///etc", "file:/etc", "/etc", "file:///"] {
            let e = c.locate(uri, "passwd").err().unwrap();
            assert!(
                matches!(e, MlflowError::LocalArtifactsRefused { .. }),
                "{uri}: {e}"
            );
            assert!(e.to_string().contains("--allow-local-artifacts"), "{e}");
        }
        // The proxy is unaffected.
        assert!(c.locate("mlflow-artifacts:/1/r/artifacts", "m").is_ok());
    }

    #[tokio::test]
    async fn a_file_uri_copies_nothing_from_this_machine_by_default() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("shadow"), "root:x").unwrap();
        let dest = tmp.path().join("repo/1");
        for uri in [
            format!("file://{}", secret.display()),
            secret.display().to_string(),
        ] {
            let e = client().download_dir(&uri, "", &dest).await.unwrap_err();
            assert!(
                matches!(e, MlflowError::LocalArtifactsRefused { .. }),
                "{e}"
            );
            let e = client().download_bytes(&uri, "shadow").await.unwrap_err();
            assert!(
                matches!(e, MlflowError::LocalArtifactsRefused { .. }),
                "{e}"
            );
            assert!(!dest.exists());
        }
        let up = client()
            .upload_file(
                &format!("file://{}", secret.display()),
                "x",
                &secret.join("shadow"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(up, MlflowError::LocalArtifactsRefused { .. }),
            "{up}"
        );
    }

    fn local_client() -> MlflowClient {
        MlflowClient::new(
            "http://127.0.0.1:5000",
            MlflowOptions {
                allow_local_artifacts: true,
                ..MlflowOptions::default()
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn local_artifacts_are_copied_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let art = tmp.path().join("art");
        std::fs::create_dir_all(art.join("sub")).unwrap();
        std::fs::write(art.join("model.txt"), "m").unwrap();
        std::fs::write(art.join("sub/card.json"), "{}").unwrap();
        let uri = format!("file://{}", art.display());
        let c = local_client();
        let dest = tmp.path().join("ok");
        assert_eq!(c.download_dir(&uri, "", &dest).await.unwrap(), 2);
        assert_eq!(std::fs::read(dest.join("sub/card.json")).unwrap(), b"{}");

        // A loop (sub/loop -> ..) is refused at once, not walked forever.
        std::os::unix::fs::symlink("..", art.join("sub/loop")).unwrap();
        let dest = tmp.path().join("looped");
        let e = c.download_dir(&uri, "", &dest).await.unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!dest.exists());
        std::fs::remove_file(art.join("sub/loop")).unwrap();

        // A link to a file elsewhere is not read through either, listed or named directly.
        std::fs::write(tmp.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), art.join("leak")).unwrap();
        let e = c
            .download_dir(&uri, "", &tmp.path().join("leak"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = c.download_bytes(&uri, "leak").await.unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = c
            .upload_file(&uri, "leak", &art.join("model.txt"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(
            std::fs::read(tmp.path().join("outside")).unwrap(),
            b"secret"
        );

        // Uploading a directory with a loop in it is refused too.
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("model.txt"), "m").unwrap();
        std::os::unix::fs::symlink(".", out.join("again")).unwrap();
        let e = c.upload_dir(&uri, "up", &out).await.unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn listed_paths_must_stay_inside_the_destination() {
        assert_eq!(safe_relative("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(
                matches!(safe_relative(bad), Err(MlflowError::Protocol { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(relative_to("", "x/y").unwrap(), PathBuf::from("x/y"));
        assert_eq!(relative_to("model", "model/x").unwrap(), PathBuf::from("x"));
        // A sibling that merely starts with the root's name is not under it.
        assert!(relative_to("model", "model2/x").is_err());
        assert!(relative_to("model", "model/../x").is_err());
    }

    #[test]
    fn debug_output_redacts_the_token_and_the_password() {
        let opts = MlflowOptions {
            token: Some("tok-s3cret".into()),
            basic: Some(("alice".into(), "pw-s3cret".into())),
            ..MlflowOptions::default()
        };
        let shown = format!("{opts:?} {opts:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***") && shown.contains("alice"), "{shown}");
        let c = MlflowClient::new("http://bob:url-s3cret@127.0.0.1:5000/", opts).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(c.uri(), "http://127.0.0.1:5000");
        let e = MlflowClient::new("ftp://bob:url-s3cret@h", MlflowOptions::default())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn errors_name_the_tracking_uri_without_credentials() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = MlflowClient::new(
            &format!("http://bob:url-s3cret@127.0.0.1:{port}"),
            MlflowOptions::default(),
        )
        .unwrap();
        let e = c.get_run("r").await.unwrap_err().to_string();
        assert!(
            !e.contains("s3cret") && e.contains(&port.to_string()),
            "{e}"
        );
    }

    fn budget(file_cap: u64, total: u64) -> Budget {
        Budget {
            file_cap,
            total_cap: total,
            total_left: total,
        }
    }

    #[tokio::test]
    async fn capped_files_stream_and_leave_nothing_past_a_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("model.bin");
        let mut f = CappedFile::create(&target, "model.bin", budget(10, 100))
            .await
            .unwrap();
        f.copy_from(&b"0123456789"[..]).await.unwrap();
        assert_eq!(f.finish().await.unwrap(), 10);
        assert_eq!(std::fs::read(&target).unwrap(), b"0123456789");

        let big = tmp.path().join("big.bin");
        for (b, scope) in [
            (budget(10, 100), "per-file"),
            (budget(100, 10), "per-download"),
        ] {
            let mut f = CappedFile::create(&big, "big.bin", b).await.unwrap();
            let e = f.copy_from(&[7u8; 11][..]).await.unwrap_err();
            assert!(
                matches!(e, MlflowError::TooLarge { scope: s, limit: 10, .. } if s == scope),
                "{e}"
            );
            drop(f);
        }
        let mut left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["model.bin"]);
    }

    /// A minimal HTTP/1.1 server for the artifact proxy: each request target (with `%2F`
    /// decoded) is looked up in `routes`, `(target, body, send Content-Length)`; anything
    /// else is a 404. Bodies without a length end when the connection closes.
    async fn artifact_server(routes: Vec<(String, Vec<u8>, bool)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let routes = std::sync::Arc::new(routes);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req);
                    let target = head.split(' ').nth(1).unwrap_or("").replace("%2F", "/");
                    let (status, body, with_len) = match routes.iter().find(|r| r.0 == target) {
                        Some((_, body, with_len)) => ("200 OK", body.clone(), *with_len),
                        None => ("404 Not Found", b"{}".to_vec(), true),
                    };
                    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                    if with_len {
                        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    const LIST: &str = "/api/2.0/mlflow-artifacts/artifacts?path=1/r/artifacts";
    const FILES: &str = "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts";
    const RUN: &str = "mlflow-artifacts:/1/r/artifacts";

    fn listing(files: Value) -> Vec<u8> {
        json!({ "files": files }).to_string().into_bytes()
    }

    /// `model.txt` (10 bytes, with a length) and `sub/big.bin` (100 bytes, streamed without
    /// one and not sized in the listing: only counting catches it).
    fn model_routes() -> Vec<(String, Vec<u8>, bool)> {
        vec![
            (
                LIST.into(),
                listing(json!([
                    {"path": "model.txt", "is_dir": false, "file_size": 10},
                    {"path": "sub", "is_dir": true}
                ])),
                true,
            ),
            (
                format!("{LIST}/sub"),
                listing(json!([{"path": "big.bin", "is_dir": false}])),
                true,
            ),
            (format!("{FILES}/model.txt"), b"0123456789".to_vec(), true),
            (format!("{FILES}/sub/big.bin"), vec![b'x'; 100], false),
        ]
    }

    fn capped(uri: &str, file: u64, total: u64) -> MlflowClient {
        MlflowClient::new(
            uri,
            MlflowOptions {
                max_artifact_file_bytes: file,
                max_artifact_total_bytes: total,
                ..MlflowOptions::default()
            },
        )
        .unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn proxy_downloads_stream_within_the_caps() {
        let uri = artifact_server(model_routes()).await;
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("v1");
        let c = capped(&uri, 1000, 1000);
        assert_eq!(c.download_dir(RUN, "", &dest).await.unwrap(), 2);
        assert_eq!(
            std::fs::read(dest.join("model.txt")).unwrap(),
            b"0123456789"
        );
        assert_eq!(std::fs::read(dest.join("sub/big.bin")).unwrap().len(), 100);
        assert_eq!(entries(&dest), ["model.txt", "sub"]);

        // One file over the per-file cap, or both over the total: a clear error, nothing left.
        for (c, scope) in [
            (capped(&uri, 50, 1000), "per-file"),
            (capped(&uri, 1000, 105), "per-download"),
        ] {
            let dest = tmp.path().join("v2");
            let e = c.download_dir(RUN, "", &dest).await.unwrap_err();
            assert!(
                matches!(e, MlflowError::TooLarge { scope: s, .. } if s == scope),
                "{e}"
            );
            assert!(!dest.exists());
            assert_eq!(entries(tmp.path()), ["v1"]);
        }

        // A length announced over the cap is refused before the body is read.
        let c = capped(&uri, 5, 1000);
        let one = tmp.path().join("one.txt");
        let e = c.download_file(RUN, "model.txt", &one).await.unwrap_err();
        assert!(matches!(e, MlflowError::TooLarge { limit: 5, .. }), "{e}");
        let e = c.download_bytes(RUN, "sub/big.bin").await.unwrap_err();
        assert!(matches!(e, MlflowError::TooLarge { limit: 5, .. }), "{e}");
        assert_eq!(entries(tmp.path()), ["v1"]);
        let c = capped(&uri, 10, 10);
        assert_eq!(c.download_file(RUN, "model.txt", &one).await.unwrap(), 10);
        assert_eq!(
            c.download_bytes(RUN, "model.txt").await.unwrap(),
            b"0123456789"
        );
    }

    #[tokio::test]
    async fn listed_paths_that_escape_are_refused() {
        for bad in ["..", "", "/etc/passwd", "a/../../x"] {
            let uri = artifact_server(vec![
                (
                    LIST.into(),
                    listing(json!([{"path": bad, "is_dir": false, "file_size": 1}])),
                    true,
                ),
                (format!("{FILES}/{bad}"), b"x".to_vec(), true),
            ])
            .await;
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("in/v1");
            let e = client_at(&uri)
                .download_dir(RUN, "", &dest)
                .await
                .unwrap_err();
            assert!(matches!(e, MlflowError::Protocol { .. }), "{bad:?}: {e}");
            assert!(entries(&tmp.path().join("in")).is_empty(), "{bad:?}");
            assert_eq!(entries(tmp.path()), ["in"]);
        }
    }

    fn client_at(uri: &str) -> MlflowClient {
        MlflowClient::new(uri, MlflowOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn a_listing_that_never_ends_stops_at_the_depth_cap() {
        // Every directory lists one directory inside it.
        let mut routes = Vec::new();
        let mut path = LIST.to_string();
        for _ in 0..=MAX_ARTIFACT_DEPTH + 1 {
            routes.push((
                path.clone(),
                listing(json!([{"path": "d", "is_dir": true}])),
                true,
            ));
            path.push_str("/d");
        }
        let uri = artifact_server(routes).await;
        let tmp = tempfile::tempdir().unwrap();
        let e = client_at(&uri)
            .download_dir(RUN, "", &tmp.path().join("v"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("deep"), "{e}");
    }
}
