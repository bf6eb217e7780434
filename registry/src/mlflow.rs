//! A typed async client for MLflow's REST API 2.0: experiments, runs (parameters, metrics,
//! tags, search), artifacts through the `mlflow-artifacts` proxy, registered models, model
//! versions and aliases.
//!
//! Written by hand over reqwest: the MLflow crates on crates.io are unmaintained and cover
//! neither the artifacts proxy nor aliases. Names follow MLflow's REST reference. MLflow's
//! error bodies (`{"error_code", "message"}`) become [`MlflowError::Api`]; a server that cannot
//! be reached becomes [`MlflowError::Unreachable`]. Idempotent reads are retried on connection
//! failures and 429/502/503/504 (three attempts, 200 ms then 800 ms apart); writes are not.
//!
//! Artifact locations: a run's `artifact_uri` is `mlflow-artifacts:/<path>` (or
//! `mlflow-artifacts://host:port/<path>`) when the server proxies artifacts, which maps to
//! `GET|PUT /api/2.0/mlflow-artifacts/artifacts/<path>`; `file:` and plain paths (a server on
//! this machine without the proxy) are read and written directly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

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

/// Client options.
#[derive(Debug, Clone)]
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
}

impl Default for MlflowOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            token: None,
            basic: None,
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

/// An MLflow tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: String,
    http: reqwest::Client,
    opts: MlflowOptions,
}

/// Where an artifact path lives.
enum Location {
    /// Through the server's `mlflow-artifacts` proxy: the path under it.
    Proxy(String),
    /// A local directory.
    Local(PathBuf),
}

impl MlflowClient {
    /// A client for the tracking server at `uri` (`http://127.0.0.1:5000`).
    pub fn new(uri: &str, opts: MlflowOptions) -> Result<Self, MlflowError> {
        let base = uri.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| MlflowError::Invalid(format!("tracking URI '{uri}': {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MlflowError::Invalid(format!(
                "tracking URI '{uri}' must be http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .build()
            .map_err(|e| MlflowError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self { base, http, opts })
    }

    /// The tracking URI.
    pub fn uri(&self) -> &str {
        &self.base
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
            uri: self.base.clone(),
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
                Ok(r) if attempt < attempts && matches!(r.status().as_u16(), 429 | 502..=504) => {
                    last = Some(MlflowError::Api {
                        status: r.status().as_u16(),
                        code: "TEMPORARILY_UNAVAILABLE".into(),
                        message: r.text().await.unwrap_or_default(),
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
    async fn check(r: reqwest::Response) -> Result<reqwest::Response, MlflowError> {
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let text = r.text().await.unwrap_or_default();
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
        let r = Self::check(r).await?;
        let bytes = r.bytes().await.map_err(|e| MlflowError::Protocol {
            context: context.into(),
            detail: e.to_string(),
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
        if let Some(p) = artifact_uri.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(join(p))));
        }
        if artifact_uri.starts_with('/') {
            return Ok(Location::Local(PathBuf::from(join(artifact_uri))));
        }
        Err(MlflowError::Invalid(format!(
            "artifact location '{artifact_uri}' is not supported (mlflow-artifacts:, file: or a path; \
             start the server with --artifacts-destination to proxy artifacts)"
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
            Location::Local(path) => {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| MlflowError::io(parent, e))?;
                }
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
                // The proxy answers paths relative to the listed directory.
                Ok(files
                    .into_iter()
                    .map(|f| FileInfo {
                        path: prefix(f.path.rsplit('/').next().unwrap_or(&f.path)),
                        ..f
                    })
                    .collect())
            }
            Location::Local(dir) => {
                let mut out = Vec::new();
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(MlflowError::io(&dir, e)),
                };
                for entry in rd {
                    let entry = entry.map_err(|e| MlflowError::io(&dir, e))?;
                    let meta = entry
                        .metadata()
                        .map_err(|e| MlflowError::io(&entry.path(), e))?;
                    out.push(FileInfo {
                        path: prefix(&entry.file_name().to_string_lossy()),
                        is_dir: meta.is_dir(),
                        file_size: (!meta.is_dir()).then_some(meta.len() as i64),
                    });
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(out)
            }
        }
    }

    /// Downloads one artifact file's bytes.
    pub async fn download_bytes(
        &self,
        artifact_uri: &str,
        rel: &str,
    ) -> Result<Vec<u8>, MlflowError> {
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
                let b = r.bytes().await.map_err(|e| self.unreachable(&e))?;
                Ok(b.to_vec())
            }
            Location::Local(path) => tokio::fs::read(&path)
                .await
                .map_err(|e| MlflowError::io(&path, e)),
        }
    }

    /// Downloads the directory `<artifact_uri>/<rel>` into `dest`, which must not exist yet:
    /// files go to a sibling temporary directory that is renamed into place only when every
    /// file arrived, so a failure leaves nothing half-written. Returns the files written.
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
                    message: format!("no artifacts under {artifact_uri}/{rel}"),
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
        let mut stack = vec![root.to_string()];
        let mut n = 0;
        while let Some(dir) = stack.pop() {
            for f in self.list_artifacts(artifact_uri, &dir).await? {
                if f.is_dir {
                    stack.push(f.path);
                    continue;
                }
                let local_rel = f
                    .path
                    .strip_prefix(root)
                    .unwrap_or(&f.path)
                    .trim_start_matches('/');
                let target = into.join(local_rel);
                if let Some(p) = target.parent() {
                    tokio::fs::create_dir_all(p)
                        .await
                        .map_err(|e| MlflowError::io(p, e))?;
                }
                let bytes = self.download_bytes(artifact_uri, &f.path).await?;
                if let Some(size) = f.file_size
                    && size >= 0
                    && bytes.len() as i64 != size
                {
                    return Err(MlflowError::Protocol {
                        context: "artifact download".into(),
                        detail: format!("{} is {} bytes, listed as {size}", f.path, bytes.len()),
                    });
                }
                tokio::fs::write(&target, &bytes)
                    .await
                    .map_err(|e| MlflowError::io(&target, e))?;
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

/// Every regular file under `root/rel`, relative to `root`, sorted.
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
        if ft.is_dir() {
            walk(root, &r, out)?;
        } else if ft.is_file() || (ft.is_symlink() && e.path().is_file()) {
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
        let c = client();
        let p = |uri: &str, rel: &str| match c.locate(uri, rel).unwrap() {
            Location::Proxy(p) => format!("proxy:{p}"),
            Location::Local(p) => format!("local:{}", p.display()),
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
        assert_eq!(p("/tmp/a/", "/b/"), "local:/tmp/a/b");
        assert!(c.locate("s3://bucket/x", "y").is_err());
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
}
