//! A model's serving configuration, from `config.toml` or a Triton FIL `config.pbtxt`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::RegistryError;
use crate::pbtxt::{self, Message};

/// The model family that serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// XGBoost JSON (`model.json`) or UBJSON (`model.ubj`).
    Xgboost,
    /// LightGBM text model (`model.txt`).
    Lightgbm,
    /// A BERT-family sentence encoder (Hugging Face layout: `config.json`,
    /// `model.safetensors`, `tokenizer.json`, optional `1_Pooling/config.json`).
    BertEmbedding,
    /// `BertForSequenceClassification` (Hugging Face layout, `id2label` in `config.json`).
    BertClassifier,
    /// `DistilBertForSequenceClassification` (Hugging Face layout).
    DistilbertClassifier,
    /// The LightFM-style hybrid recommender (`recs.json` + `model.safetensors`, written by
    /// `infermesh train recs`).
    Recommender,
}

impl Platform {
    /// The platform name as configs and metadata spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Xgboost => "xgboost",
            Platform::Lightgbm => "lightgbm",
            Platform::BertEmbedding => "bert-embedding",
            Platform::BertClassifier => "bert-classifier",
            Platform::DistilbertClassifier => "distilbert-classifier",
            Platform::Recommender => "recommender",
        }
    }

    /// True for the transformer text platforms (BYTES `text` in, token-budget batching).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Platform::BertEmbedding | Platform::BertClassifier | Platform::DistilbertClassifier
        )
    }

    /// True for the text classifier platforms.
    pub fn is_classifier(self) -> bool {
        matches!(
            self,
            Platform::BertClassifier | Platform::DistilbertClassifier
        )
    }

    fn default_input(self) -> &'static str {
        match self {
            p if p.is_text() => "text",
            Platform::Recommender => "user_id",
            _ => "input__0",
        }
    }

    fn default_output(self) -> &'static str {
        match self {
            Platform::BertEmbedding => "embedding",
            Platform::BertClassifier | Platform::DistilbertClassifier => "probabilities",
            Platform::Xgboost | Platform::Lightgbm => "output__0",
            Platform::Recommender => "item_id",
        }
    }
}

/// What the recommender does with a user it does not know who brings no known features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownUsers {
    /// The most popular items within the request's filter (cold start).
    #[default]
    Popularity,
    /// NOT_FOUND / 404.
    NotFound,
}

/// Serving options of a `recommender` model (`[recommender]` in `config.toml`); the blend
/// weights left unset keep the values the model was trained with (`recs.json`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderOptions {
    /// Largest `k` a request may ask for. Default 1000.
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// Requests computing at once; past it requests are refused (RESOURCE_EXHAUSTED).
    /// Default 1024.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Unknown users. Default popularity.
    #[serde(default)]
    pub unknown_users: UnknownUsers,
    /// Weight of the collaborative score.
    pub cf_weight: Option<f32>,
    /// Weight of the content (TF-IDF) score.
    pub content_weight: Option<f32>,
    /// Weight of a recent item in the content profile.
    pub recent_weight: Option<f32>,
    /// Boost of recent items, in standard deviations of the user's scores.
    pub recent_boost: Option<f32>,
}

fn default_max_k() -> usize {
    1000
}

fn default_max_in_flight() -> usize {
    1024
}

impl Default for RecommenderOptions {
    fn default() -> Self {
        Self {
            max_k: default_max_k(),
            max_in_flight: default_max_in_flight(),
            unknown_users: UnknownUsers::Popularity,
            cf_weight: None,
            content_weight: None,
            recent_weight: None,
            recent_boost: None,
        }
    }
}

/// Which engine runs a text model's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEngine {
    /// For the architectures the exported graph covers (BERT encoders and BERT classifiers):
    /// OpenVINO in bf16 on a CPU with native bf16 (AVX-512 BF16 or AMX) when its library
    /// loads, else ONNX Runtime when its library loads; candle otherwise. OpenVINO bf16
    /// measured ~1.6x ONNX Runtime f32, and ONNX Runtime ~2x candle (BENCHMARKS.md); with
    /// `quantize = "int8"` or `precision = "f32"`, ONNX Runtime comes first.
    #[default]
    Auto,
    /// candle (pure Rust; every text platform).
    Candle,
    /// ONNX Runtime (`ort`, graph exported from the safetensors at load); an error when the
    /// library is missing.
    Onnxruntime,
    /// OpenVINO (`openvino`, the same exported graph); an error when the library is missing.
    Openvino,
}

impl TextEngine {
    /// The engine name as configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEngine::Auto => "auto",
            TextEngine::Candle => "candle",
            TextEngine::Onnxruntime => "onnxruntime",
            TextEngine::Openvino => "openvino",
        }
    }
}

/// The arithmetic of a text model's matrix products (`precision = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPrecision {
    /// bf16 where the engine and the CPU compute it natively (OpenVINO on AVX-512 BF16 or
    /// AMX), f32 elsewhere.
    #[default]
    Auto,
    /// bf16 products, f32 accumulation (OpenVINO only; embeddings within cosine ~0.99995 of
    /// the f64 reference for MiniLM); an error on a CPU without native bf16.
    Bf16,
    /// f32 throughout.
    F32,
}

/// Token-budget batching of a text model (TEI's `max_batch_tokens` / `max_batch_requests` /
/// `max_client_batch_size`) and the engine that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Largest batch in tokens (a forward pass holds at most this many padded tokens).
    pub max_batch_tokens: usize,
    /// Largest batch in texts.
    pub max_batch_requests: usize,
    /// Tokens admitted (queued or running) at once; past it requests are refused.
    pub max_queue_tokens: usize,
    /// Most texts in one request.
    pub max_client_batch_size: usize,
    /// The engine.
    pub engine: TextEngine,
    /// ONNX Runtime intra-op threads (0: one per core).
    pub intra_op_threads: usize,
    /// ONNX Runtime only: int8 dynamic quantisation of the encoder's linear layers
    /// (`quantize = "int8"`; faster, embeddings no longer equal the f32 model's).
    pub int8: bool,
    /// The arithmetic (`precision`).
    pub precision: TextPrecision,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_queue_tokens: 262_144,
            max_client_batch_size: 512,
            engine: TextEngine::Auto,
            intra_op_threads: 0,
            int8: false,
            precision: TextPrecision::Auto,
        }
    }
}

/// Which versions of a model are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    /// The highest `n` versions.
    Latest(usize),
    /// Every version on disk.
    All,
    /// Exactly these versions (those present on disk).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// Picks the versions to serve from those on disk.
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = on_disk.to_vec();
        v.sort_unstable();
        v.dedup();
        match self {
            VersionPolicy::All => v,
            VersionPolicy::Latest(n) => v.iter().rev().take(*n).rev().copied().collect(),
            VersionPolicy::Specific(want) => v.into_iter().filter(|x| want.contains(x)).collect(),
        }
    }
}

/// How a tree model's prediction becomes the `output__0` tensor (Triton FIL semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputMode {
    /// The model is a classifier: outputs are classes or class probabilities.
    pub output_class: bool,
    /// With `output_class`, return per-class probabilities (`[n, classes]`, `[n, 2]` for
    /// binary) instead of the class index.
    pub predict_proba: bool,
    /// Probability above which a binary prediction is the positive class (Triton FIL's
    /// `threshold`).
    pub threshold: f32,
}

impl Default for OutputMode {
    fn default() -> Self {
        Self {
            output_class: false,
            predict_proba: false,
            threshold: 0.5,
        }
    }
}

/// Where a config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// infermesh's `config.toml`.
    Toml,
    /// A Triton FIL-backend `config.pbtxt`.
    TritonFil,
}

/// The serving configuration of one model, whichever file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model name (the directory name).
    pub name: String,
    /// The model family.
    pub platform: Platform,
    /// Artifact format as Triton FIL names it (`xgboost_json`, `xgboost_ubj`, `lightgbm`), or
    /// `None` to pick by the file found.
    pub model_type: Option<String>,
    /// Artifact file name inside a version folder, or `None` for the platform's defaults.
    pub model_file: Option<String>,
    /// Where the config came from.
    pub source: ConfigSource,
    /// Largest batch (rows) the batcher builds.
    pub max_batch_size: usize,
    /// How long the batcher may wait for more rows before running a partial batch.
    pub max_queue_delay: Duration,
    /// Rows admitted (queued or running) at once; past it requests are refused.
    pub max_queue_rows: usize,
    /// Which versions to serve.
    pub version_policy: VersionPolicy,
    /// Feature names in column order, overriding the artifact's.
    pub feature_names: Option<Vec<String>>,
    /// Output semantics.
    pub output: OutputMode,
    /// Name of the input tensor.
    pub input_name: String,
    /// Name of the output tensor (text classifiers: the probabilities; `logits` and `label`
    /// are their other outputs).
    pub output_name: String,
    /// Token-budget batching of text platforms.
    pub text: TextLimits,
    /// Serving options of the recommender platform.
    pub recommender: RecommenderOptions,
    /// The `[limits]` section, as written: bounds on what loading this model's artifact may
    /// take (features, nodes, depth, vocabulary, bytes...). Each model family reads the keys
    /// it knows and refuses the others; an absent section means the family's defaults.
    pub limits: toml::Table,
}

/// Default batch size in rows.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1024;
/// Default admission capacity in rows.
pub const DEFAULT_MAX_QUEUE_ROWS: usize = 262_144;

// Upper bounds of the sizes a config sets. The serving core sizes semaphores, batches and
// buffers from these numbers (tokio's `Semaphore::new` panics past `usize::MAX >> 3`, a
// batch of `max_batch_size` rows is allocated whole), so a config file must not be able to
// ask for an absurd allocation or a panic: past a bound the config is refused with an error
// naming the field and the bound. Each is far above any workload the server handles.

/// Largest config file read (`config.toml`, `config.pbtxt`): 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `max_batch_size`: 1,048,576 rows.
pub const MAX_BATCH_SIZE_LIMIT: usize = 1 << 20;
/// Largest `max_queue_rows`: 16,777,216 rows.
pub const MAX_QUEUE_ROWS_LIMIT: usize = 1 << 24;
/// Longest `max_queue_delay_us` / `max_queue_delay_microseconds`: 60 s.
pub const MAX_QUEUE_DELAY_LIMIT: Duration = Duration::from_secs(60);
/// Largest `max_batch_tokens`: 1,048,576 padded tokens per forward pass.
pub const MAX_BATCH_TOKENS_LIMIT: usize = 1 << 20;
/// Largest `max_batch_requests`: 65,536 texts per batch.
pub const MAX_BATCH_REQUESTS_LIMIT: usize = 1 << 16;
/// Largest `max_queue_tokens`: 67,108,864 tokens admitted at once.
pub const MAX_QUEUE_TOKENS_LIMIT: usize = 1 << 26;
/// Largest `max_client_batch_size`: 65,536 texts per request.
pub const MAX_CLIENT_BATCH_SIZE_LIMIT: usize = 1 << 16;
/// Largest `intra_op_threads`: 1024.
pub const INTRA_OP_THREADS_LIMIT: usize = 1024;
/// Largest recommender `max_k`: 100,000 items per answer.
pub const MAX_K_LIMIT: usize = 100_000;
/// Largest recommender `max_in_flight`: 1,048,576 requests.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 20;

/// Reads a config file, refusing one larger than [`MAX_CONFIG_BYTES`] before holding it:
/// a config is a page of settings, and a multi-gigabyte file is a mistake or an attack.
pub(crate) fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    // One byte past the bound tells "too large" from "exactly at it".
    f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("config file larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// Refuses config text larger than [`MAX_CONFIG_BYTES`].
fn check_config_len(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "config is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            text.len()
        ));
    }
    Ok(())
}

/// `config.toml` as written on disk. Sizes are bounded ([`MAX_BATCH_SIZE_LIMIT`] and the
/// other `*_LIMIT` constants of this module); a file over [`MAX_CONFIG_BYTES`] is refused.
///
/// ```toml
/// platform = "xgboost"            # or "lightgbm"
/// model_file = "model.json"       # optional
/// max_batch_size = 1024
/// max_queue_delay_us = 0          # wait for a fuller batch at most this long
/// max_queue_rows = 262144         # admission capacity
/// version_policy = { latest = 1 } # or "all", or { specific = [1, 3] }
/// feature_names = ["amount", "hour"]
/// threshold = 0.5                # a binary prediction is positive when p > threshold
/// output_class = false            # true: classes or class probabilities, as Triton FIL
/// predict_proba = false           # with output_class: [n, classes] probabilities
/// input_name = "input__0"           # text platforms: "text"
/// output_name = "output__0"          # "embedding" (bert-embedding), "probabilities" (classifiers)
/// # text platforms (bert-embedding, bert-classifier, distilbert-classifier):
/// max_batch_tokens = 16384         # padded tokens per forward pass
/// max_batch_requests = 64          # texts per batch
/// max_queue_tokens = 262144        # admission capacity in tokens
/// max_client_batch_size = 512      # texts per request
/// engine = "auto"                  # or "candle", "onnxruntime", "openvino"
/// intra_op_threads = 0             # ONNX Runtime / OpenVINO threads per forward pass (0: all cores)
/// quantize = "none"                # or "int8": ONNX Runtime int8 dynamic quantisation
/// precision = "auto"               # or "bf16", "f32": bf16 products where OpenVINO and the CPU can
/// # recommender:
/// [recommender]
/// max_k = 1000                     # largest k a request may ask for
/// max_in_flight = 1024             # requests computing at once (admission)
/// unknown_users = "popularity"     # or "not_found"
/// content_weight = 0.3             # blend overrides (default: the model's recs.json)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TomlConfig {
    /// Model family.
    pub platform: Platform,
    /// Artifact format (`xgboost_json`, `xgboost_ubj`, `lightgbm`).
    pub model_type: Option<String>,
    /// Artifact file name.
    pub model_file: Option<String>,
    /// Largest batch in rows.
    pub max_batch_size: Option<usize>,
    /// Batching delay in microseconds.
    pub max_queue_delay_us: Option<u64>,
    /// Admission capacity in rows.
    pub max_queue_rows: Option<usize>,
    /// Version policy.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Feature names in column order.
    pub feature_names: Option<Vec<String>>,
    /// Decision threshold for binary classifiers.
    pub threshold: Option<f32>,
    /// Classifier outputs.
    pub output_class: Option<bool>,
    /// Class probabilities instead of class indices.
    pub predict_proba: Option<bool>,
    /// Input tensor name.
    pub input_name: Option<String>,
    /// Output tensor name.
    pub output_name: Option<String>,
    /// Text platforms: padded tokens per forward pass.
    pub max_batch_tokens: Option<usize>,
    /// Text platforms: texts per batch.
    pub max_batch_requests: Option<usize>,
    /// Text platforms: admission capacity in tokens.
    pub max_queue_tokens: Option<usize>,
    /// Text platforms: texts per request.
    pub max_client_batch_size: Option<usize>,
    /// Text platforms: the engine.
    pub engine: Option<TextEngine>,
    /// Text platforms: ONNX Runtime intra-op threads.
    pub intra_op_threads: Option<usize>,
    /// Text platforms: `"none"` or `"int8"`.
    pub quantize: Option<String>,
    /// Text platforms: `"auto"`, `"bf16"` or `"f32"`.
    pub precision: Option<TextPrecision>,
    /// Recommender platform options.
    pub recommender: Option<RecommenderOptions>,
    /// `[limits]`: load limits, read by the model's family (see [`ModelConfig::limits`]).
    pub limits: Option<toml::Table>,
}

impl ModelConfig {
    /// Reads the config of the model in `dir` (named `name`): `config.toml` first, else
    /// `config.pbtxt`.
    pub fn read(name: &str, dir: &Path) -> Result<Self, RegistryError> {
        let toml_path = dir.join("config.toml");
        let pbtxt_path = dir.join("config.pbtxt");
        if toml_path.is_file() {
            let text = read(&toml_path)?;
            Self::from_toml(name, &text)
        } else if pbtxt_path.is_file() {
            let text = read(&pbtxt_path)?;
            Self::from_pbtxt(name, &text)
        } else {
            Err(RegistryError::NoConfig(name.to_string()))
        }
    }

    /// Parses `config.toml` text.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, RegistryError> {
        let err = |message: String| RegistryError::Toml {
            model: name.to_string(),
            message,
        };
        check_config_len(text).map_err(err)?;
        let t: TomlConfig = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let defaults = OutputMode::default();
        let text_defaults = TextLimits::default();
        let cfg = ModelConfig {
            name: name.to_string(),
            platform: t.platform,
            model_type: t.model_type,
            model_file: t.model_file,
            source: ConfigSource::Toml,
            max_batch_size: t.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE),
            max_queue_delay: Duration::from_micros(t.max_queue_delay_us.unwrap_or(0)),
            max_queue_rows: t.max_queue_rows.unwrap_or(DEFAULT_MAX_QUEUE_ROWS),
            version_policy: t.version_policy,
            feature_names: t.feature_names,
            output: OutputMode {
                output_class: t.output_class.unwrap_or(defaults.output_class),
                predict_proba: t.predict_proba.unwrap_or(defaults.predict_proba),
                threshold: t.threshold.unwrap_or(defaults.threshold),
            },
            input_name: t
                .input_name
                .unwrap_or_else(|| t.platform.default_input().into()),
            output_name: t
                .output_name
                .unwrap_or_else(|| t.platform.default_output().into()),
            text: TextLimits {
                max_batch_tokens: t.max_batch_tokens.unwrap_or(text_defaults.max_batch_tokens),
                max_batch_requests: t
                    .max_batch_requests
                    .unwrap_or(text_defaults.max_batch_requests),
                max_queue_tokens: t.max_queue_tokens.unwrap_or(text_defaults.max_queue_tokens),
                max_client_batch_size: t
                    .max_client_batch_size
                    .unwrap_or(text_defaults.max_client_batch_size),
                engine: t.engine.unwrap_or(text_defaults.engine),
                intra_op_threads: t.intra_op_threads.unwrap_or(text_defaults.intra_op_threads),
                int8: match t.quantize.as_deref() {
                    None | Some("none") => false,
                    Some("int8") => {
                        if matches!(t.engine, Some(TextEngine::Candle | TextEngine::Openvino))
                            || t.precision == Some(TextPrecision::Bf16)
                        {
                            return Err(err(
                                "quantize = \"int8\" needs the onnxruntime engine (and f32)".into(),
                            ));
                        }
                        true
                    }
                    Some(other) => {
                        return Err(err(format!(
                            "quantize {other:?} is not supported (\"none\", \"int8\")"
                        )));
                    }
                },
                precision: match (t.precision, t.engine) {
                    (
                        Some(TextPrecision::Bf16),
                        Some(TextEngine::Candle | TextEngine::Onnxruntime),
                    ) => {
                        return Err(err(
                            "precision = \"bf16\" needs the openvino engine (or \"auto\")".into(),
                        ));
                    }
                    (p, _) => p.unwrap_or(text_defaults.precision),
                },
            },
            recommender: t.recommender.unwrap_or_default(),
            limits: t.limits.unwrap_or_default(),
        };
        if t.recommender.is_some() && t.platform != Platform::Recommender {
            return Err(err(
                "a [recommender] section needs platform = \"recommender\"".into(),
            ));
        }
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Parses a Triton FIL-backend `config.pbtxt`.
    pub fn from_pbtxt(name: &str, text: &str) -> Result<Self, RegistryError> {
        let err = |message: String| RegistryError::Pbtxt {
            model: name.to_string(),
            message,
        };
        check_config_len(text).map_err(err)?;
        let msg = pbtxt::parse(text).map_err(|e| err(e.to_string()))?;
        let backend = msg.str("backend").unwrap_or_default();
        if backend != "fil" {
            return Err(err(format!(
                "backend '{backend}' is not supported (only Triton's \"fil\" backend is served from config.pbtxt)"
            )));
        }
        if let Some(n) = msg.str("name")
            && n != name
        {
            return Err(err(format!(
                "config names the model '{n}' but its directory is '{name}'"
            )));
        }
        let params = fil_parameters(&msg);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let model_type = param("model_type")
            .ok_or_else(|| err("parameters must set model_type".into()))?
            .to_string();
        let platform = match model_type.as_str() {
            "xgboost_json" | "xgboost_ubj" => Platform::Xgboost,
            "lightgbm" => Platform::Lightgbm,
            other => {
                return Err(err(format!(
                    "model_type '{other}' is not supported (xgboost_json, xgboost_ubj, lightgbm)"
                )));
            }
        };
        let parse_bool = |k: &str, default: bool| -> Result<bool, RegistryError> {
            match param(k) {
                None => Ok(default),
                Some("true") | Some("True") | Some("1") => Ok(true),
                Some("false") | Some("False") | Some("0") => Ok(false),
                Some(v) => Err(err(format!(
                    "parameter {k} must be true or false, got '{v}'"
                ))),
            }
        };
        let output_class = parse_bool("output_class", true)?;
        let predict_proba = parse_bool("predict_proba", false)?;
        let threshold = match param("threshold") {
            None => 0.5,
            Some(v) => v
                .parse::<f32>()
                .map_err(|_| err(format!("parameter threshold must be a number, got '{v}'")))?,
        };
        // A number that does not fit an i64 is an error, not a silent default.
        let int_field = |m: &Message, field: &str| -> Result<Option<i64>, RegistryError> {
            match m.str(field) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| err(format!("{field} must be an integer within i64, got '{v}'"))),
            }
        };
        let max_batch_size = match int_field(&msg, "max_batch_size")? {
            // Past usize (32-bit targets): the largest, which validation then refuses.
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            // 0 is Triton's "no batch dimension": batch with the default.
            _ => DEFAULT_MAX_BATCH_SIZE,
        };
        // Bounded before it is multiplied into max_queue_rows below.
        check_max("max_batch_size", max_batch_size, MAX_BATCH_SIZE_LIMIT).map_err(err)?;
        let max_queue_delay = match msg.message("dynamic_batching") {
            Some(d) => int_field(d, "max_queue_delay_microseconds")?
                .map(|us| Duration::from_micros(us.max(0).unsigned_abs()))
                .unwrap_or_default(),
            None => Duration::ZERO,
        };
        let tensor_name = |field: &str, default: &str| {
            msg.messages(field)
                .next()
                .and_then(|t| t.str("name"))
                .unwrap_or(default)
                .to_string()
        };
        let version_policy = match msg.message("version_policy") {
            None => VersionPolicy::default(),
            Some(vp) => {
                if let Some(l) = vp.message("latest") {
                    VersionPolicy::Latest(l.int("num_versions").unwrap_or(1).max(1) as usize)
                } else if vp.message("all").is_some() {
                    VersionPolicy::All
                } else if let Some(s) = vp.message("specific") {
                    VersionPolicy::Specific(
                        s.ints("versions")
                            .into_iter()
                            .map(|v| v.max(0) as u64)
                            .collect(),
                    )
                } else {
                    return Err(err("version_policy must be latest, all or specific".into()));
                }
            }
        };
        let model_file = param("model_filename")
            .map(str::to_string)
            .or_else(|| msg.str("default_model_filename").map(str::to_string));
        let cfg = ModelConfig {
            name: name.to_string(),
            platform,
            model_type: Some(model_type),
            model_file,
            source: ConfigSource::TritonFil,
            max_batch_size,
            max_queue_delay,
            max_queue_rows: DEFAULT_MAX_QUEUE_ROWS.max(max_batch_size.saturating_mul(4)),
            version_policy,
            feature_names: None,
            output: OutputMode {
                output_class,
                predict_proba,
                threshold,
            },
            input_name: tensor_name("input", "input__0"),
            output_name: tensor_name("output", "output__0"),
            text: TextLimits::default(),
            recommender: RecommenderOptions::default(),
            limits: toml::Table::new(),
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 {
            return Err("max_batch_size must be at least 1".into());
        }
        let t = &self.text;
        let r = &self.recommender;
        for (field, value, max) in [
            ("max_batch_size", self.max_batch_size, MAX_BATCH_SIZE_LIMIT),
            ("max_queue_rows", self.max_queue_rows, MAX_QUEUE_ROWS_LIMIT),
            (
                "max_batch_tokens",
                t.max_batch_tokens,
                MAX_BATCH_TOKENS_LIMIT,
            ),
            (
                "max_batch_requests",
                t.max_batch_requests,
                MAX_BATCH_REQUESTS_LIMIT,
            ),
            (
                "max_queue_tokens",
                t.max_queue_tokens,
                MAX_QUEUE_TOKENS_LIMIT,
            ),
            (
                "max_client_batch_size",
                t.max_client_batch_size,
                MAX_CLIENT_BATCH_SIZE_LIMIT,
            ),
            (
                "intra_op_threads",
                t.intra_op_threads,
                INTRA_OP_THREADS_LIMIT,
            ),
            ("recommender max_k", r.max_k, MAX_K_LIMIT),
            (
                "recommender max_in_flight",
                r.max_in_flight,
                MAX_IN_FLIGHT_LIMIT,
            ),
        ] {
            check_max(field, value, max)?;
        }
        if self.max_queue_delay > MAX_QUEUE_DELAY_LIMIT {
            return Err(format!(
                "max_queue_delay {:?} is longer than the {:?} accepted",
                self.max_queue_delay, MAX_QUEUE_DELAY_LIMIT
            ));
        }
        if self.max_queue_rows < self.max_batch_size {
            return Err(format!(
                "max_queue_rows ({}) must be at least max_batch_size ({})",
                self.max_queue_rows, self.max_batch_size
            ));
        }
        if !(0.0..=1.0).contains(&self.output.threshold) {
            return Err(format!(
                "threshold {} is not within [0, 1]",
                self.output.threshold
            ));
        }
        if t.max_batch_tokens == 0
            || t.max_batch_requests == 0
            || t.max_client_batch_size == 0
            || t.max_queue_tokens < t.max_batch_tokens
        {
            return Err(format!(
                "text limits must be positive and max_queue_tokens ({}) at least max_batch_tokens ({})",
                t.max_queue_tokens, t.max_batch_tokens
            ));
        }
        if r.max_k == 0 || r.max_in_flight == 0 {
            return Err("recommender max_k and max_in_flight must be at least 1".into());
        }
        let weights = [
            r.cf_weight,
            r.content_weight,
            r.recent_weight,
            r.recent_boost,
        ];
        if weights.iter().flatten().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("recommender weights must be finite and >= 0".into());
        }
        if let VersionPolicy::Latest(0) = self.version_policy {
            return Err("version_policy latest must keep at least 1 version".into());
        }
        if let Some(mt) = &self.model_type
            && !matches!(mt.as_str(), "xgboost_json" | "xgboost_ubj" | "lightgbm")
        {
            return Err(format!(
                "model_type '{mt}' is not one of xgboost_json, xgboost_ubj, lightgbm"
            ));
        }
        if let Some(f) = &self.model_file
            && (f.contains('/') || f.contains('\\') || f == ".." || f.is_empty())
        {
            return Err(format!("model_file '{f}' must be a plain file name"));
        }
        Ok(())
    }

    /// The artifact file names to look for in a version folder, in order.
    pub fn candidate_files(&self) -> Vec<String> {
        if let Some(f) = &self.model_file {
            return vec![f.clone()];
        }
        match (self.platform, self.model_type.as_deref()) {
            (p, _) if p.is_text() => vec!["model.safetensors".into()],
            (Platform::Recommender, _) => vec!["recs.json".into()],
            (Platform::Lightgbm, _) => vec!["model.txt".into()],
            (Platform::Xgboost, Some("xgboost_json")) => {
                vec!["xgboost.json".into(), "model.json".into()]
            }
            (Platform::Xgboost, Some("xgboost_ubj")) => {
                vec!["xgboost.ubj".into(), "model.ubj".into()]
            }
            (_, _) => vec![
                "model.json".into(),
                "model.ubj".into(),
                "xgboost.json".into(),
                "xgboost.ubj".into(),
            ],
        }
    }
}

/// Refuses `value` past `max`.
fn check_max(field: &str, value: usize, max: usize) -> Result<(), String> {
    if value > max {
        return Err(format!("{field} = {value} is more than the {max} accepted"));
    }
    Ok(())
}

/// `parameters [{ key: "k" value: { string_value: "v" } }]` (or `parameters { key ... }`
/// repeated) as pairs.
fn fil_parameters(msg: &Message) -> Vec<(String, String)> {
    msg.messages("parameters")
        .filter_map(|p| {
            let key = p.str("key")?.to_string();
            let value = p.message("value")?.str("string_value")?.to_string();
            Some((key, value))
        })
        .collect()
}

fn read(path: &Path) -> Result<String, RegistryError> {
    read_config_text(path).map_err(|source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_and_fields() {
        let c = ModelConfig::from_toml(
            "fraud",
            r#"
platform = "xgboost"
max_batch_size = 64
max_queue_delay_us = 250
version_policy = { latest = 2 }
feature_names = ["a", "b"]
threshold = 0.7
"#,
        )
        .unwrap();
        assert_eq!(c.platform, Platform::Xgboost);
        assert_eq!(c.max_batch_size, 64);
        assert_eq!(c.max_queue_delay, Duration::from_micros(250));
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(
            c.feature_names.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(c.output.threshold, 0.7);
        assert_eq!(c.input_name, "input__0");
        assert_eq!(c.candidate_files()[0], "model.json");
    }

    #[test]
    fn text_platforms_have_text_defaults_and_limits() {
        let c = ModelConfig::from_toml("minilm", "platform = \"bert-embedding\"").unwrap();
        assert!(c.platform.is_text() && !c.platform.is_classifier());
        assert_eq!(
            (c.input_name.as_str(), c.output_name.as_str()),
            ("text", "embedding")
        );
        assert_eq!(c.text, TextLimits::default());
        let c = ModelConfig::from_toml(
            "cat",
            "platform = \"distilbert-classifier\"\nmax_batch_tokens = 512\nmax_batch_requests = 4",
        )
        .unwrap();
        assert!(c.platform.is_classifier());
        assert_eq!(c.output_name, "probabilities");
        assert_eq!(
            (c.text.max_batch_tokens, c.text.max_batch_requests),
            (512, 4)
        );
        assert_eq!(c.text.engine, TextEngine::Auto);
        let c = ModelConfig::from_toml(
            "m",
            "platform = \"bert-embedding\"\nengine = \"onnxruntime\"\nintra_op_threads = 2",
        )
        .unwrap();
        assert_eq!(
            (c.text.engine, c.text.intra_op_threads),
            (TextEngine::Onnxruntime, 2)
        );
        let err =
            ModelConfig::from_toml("m", "platform = \"bert-embedding\"\nengine = \"tensorrt\"")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("tensorrt") || err.contains("unknown variant"),
            "{err}"
        );
        let c = ModelConfig::from_toml("m", "platform = \"bert-embedding\"\nquantize = \"int8\"")
            .unwrap();
        assert!(c.text.int8);
        let c = ModelConfig::from_toml(
            "m",
            "platform = \"bert-embedding\"\nengine = \"openvino\"\nprecision = \"f32\"",
        )
        .unwrap();
        assert_eq!(
            (c.text.engine, c.text.precision),
            (TextEngine::Openvino, TextPrecision::F32)
        );
        let c = ModelConfig::from_toml("m", "platform = \"bert-embedding\"").unwrap();
        assert_eq!(c.text.precision, TextPrecision::Auto);
        for bad in [
            "quantize = \"int4\"",
            "quantize = \"int8\"\nengine = \"candle\"",
            "quantize = \"int8\"\nengine = \"openvino\"",
            "quantize = \"int8\"\nprecision = \"bf16\"",
            "precision = \"bf16\"\nengine = \"onnxruntime\"",
            "precision = \"bf16\"\nengine = \"candle\"",
            "precision = \"f16\"",
        ] {
            let toml = format!("platform = \"bert-embedding\"\n{bad}");
            assert!(ModelConfig::from_toml("m", &toml).is_err(), "{bad}");
        }
        assert!(
            ModelConfig::from_toml(
                "m",
                "platform = \"bert-embedding\"\nmax_batch_tokens = 100\nmax_queue_tokens = 10"
            )
            .is_err()
        );
    }

    #[test]
    fn toml_policies_parse() {
        let all = ModelConfig::from_toml("m", "platform = \"lightgbm\"\nversion_policy = \"all\"")
            .unwrap();
        assert_eq!(all.version_policy, VersionPolicy::All);
        let spec = ModelConfig::from_toml(
            "m",
            "platform = \"lightgbm\"\nversion_policy = { specific = [1, 3] }",
        )
        .unwrap();
        assert_eq!(spec.version_policy, VersionPolicy::Specific(vec![1, 3]));
    }

    #[test]
    fn toml_rejects_unknown_and_bad_values() {
        assert!(ModelConfig::from_toml("m", "platform = \"pytorch\"").is_err());
        assert!(ModelConfig::from_toml("m", "platform = \"xgboost\"\nbogus = 1").is_err());
        assert!(ModelConfig::from_toml("m", "platform = \"xgboost\"\nthreshold = 2.0").is_err());
        assert!(ModelConfig::from_toml("m", "platform = \"xgboost\"\nmax_batch_size = 0").is_err());
        assert!(
            ModelConfig::from_toml("m", "platform = \"xgboost\"\nmodel_file = \"../x\"").is_err()
        );
        assert!(ModelConfig::from_toml("m", "platform = [").is_err());
    }

    #[test]
    fn policy_selects_versions() {
        let disk = [3, 1, 2, 10];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![10]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![3, 10]);
        assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 3, 10]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&disk), vec![2]);
    }

    const FIL: &str = r#"
name: "fil_model"
backend: "fil"
max_batch_size: 32768
input [
  {
    name: "input__0"
    data_type: TYPE_FP32
    dims: [ 30 ]
  }
]
output [
  {
    name: "output__0"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }
]
instance_group [{ kind: KIND_CPU }]
version_policy: { specific: { versions: [1, 2] } }
parameters [
  {
    key: "model_type"
    value: { string_value: "xgboost_json" }
  },
  {
    key: "output_class"
    value: { string_value: "true" }
  },
  {
    key: "threshold"
    value: { string_value: "0.4" }
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 100
}
"#;

    #[test]
    fn triton_fil_config_is_read() {
        let c = ModelConfig::from_pbtxt("fil_model", FIL).unwrap();
        assert_eq!(c.platform, Platform::Xgboost);
        assert_eq!(c.source, ConfigSource::TritonFil);
        assert_eq!(c.model_type.as_deref(), Some("xgboost_json"));
        assert_eq!(c.max_batch_size, 32768);
        assert_eq!(c.max_queue_delay, Duration::from_micros(100));
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 2]));
        assert!(c.output.output_class);
        assert!(!c.output.predict_proba);
        assert_eq!(c.output.threshold, 0.4);
        assert_eq!(c.candidate_files()[0], "xgboost.json");
    }

    #[test]
    fn non_fil_backends_and_bad_types_are_refused() {
        let onnx = FIL.replace("backend: \"fil\"", "backend: \"onnxruntime\"");
        assert!(ModelConfig::from_pbtxt("fil_model", &onnx).is_err());
        let bad = FIL.replace("xgboost_json", "treelite_checkpoint");
        assert!(ModelConfig::from_pbtxt("fil_model", &bad).is_err());
        assert!(ModelConfig::from_pbtxt("other_name", FIL).is_err());
    }

    #[test]
    fn recommender_options_are_read_checked_and_defaulted() {
        let c = ModelConfig::from_toml("recs", "platform = \"recommender\"\n").unwrap();
        assert_eq!(c.platform, Platform::Recommender);
        assert_eq!(c.recommender, RecommenderOptions::default());
        assert_eq!(
            (c.input_name.as_str(), c.output_name.as_str()),
            ("user_id", "item_id")
        );
        assert_eq!(c.candidate_files(), vec!["recs.json".to_string()]);
        let c = ModelConfig::from_toml(
            "recs",
            "platform = \"recommender\"\n[recommender]\nmax_k = 50\nunknown_users = \"not_found\"\ncontent_weight = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.recommender.max_k, 50);
        assert_eq!(c.recommender.unknown_users, UnknownUsers::NotFound);
        assert_eq!(c.recommender.content_weight, Some(0.5));
        for bad in [
            "platform = \"recommender\"\n[recommender]\nmax_k = 0\n",
            "platform = \"recommender\"\n[recommender]\ncf_weight = -1.0\n",
            "platform = \"recommender\"\n[recommender]\nunknown_users = \"guess\"\n",
            "platform = \"recommender\"\n[recommender]\nmax_kk = 5\n",
            "platform = \"lightgbm\"\n[recommender]\nmax_k = 5\n",
        ] {
            assert!(ModelConfig::from_toml("recs", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_past_their_bounds_are_refused_naming_the_field() {
        for (field, bad) in [
            ("max_batch_size", "1048577"),
            ("max_batch_size", "9223372036854775807"),
            ("max_queue_rows", "16777217"),
            ("max_queue_delay_us", "60000001"),
            ("max_queue_delay_us", "18446744073709551615"),
            ("max_batch_tokens", "1048577"),
            ("max_batch_requests", "65537"),
            ("max_queue_tokens", "67108865"),
            ("max_client_batch_size", "65537"),
            ("intra_op_threads", "1025"),
            ("max_batch_size", "1e18"),
        ] {
            let toml = format!("platform = \"bert-embedding\"\n{field} = {bad}\n");
            let e = ModelConfig::from_toml("m", &toml).unwrap_err().to_string();
            // toml itself refuses what is not an i64 (or not an integer) with its own words.
            if bad.parse::<i64>().is_ok() && bad != "18446744073709551615" {
                assert!(e.contains(field.trim_end_matches("_us")), "{field}: {e}");
            }
        }
        for (field, bad) in [("max_k", "100001"), ("max_in_flight", "1048577")] {
            let toml = format!("platform = \"recommender\"\n[recommender]\n{field} = {bad}\n");
            let e = ModelConfig::from_toml("m", &toml).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        // At the bounds is fine.
        let c = ModelConfig::from_toml(
            "m",
            "platform = \"xgboost\"\nmax_batch_size = 1048576\nmax_queue_rows = 16777216\nmax_queue_delay_us = 60000000\n",
        )
        .unwrap();
        assert_eq!(c.max_batch_size, MAX_BATCH_SIZE_LIMIT);
    }

    #[test]
    fn pbtxt_sizes_are_bounded_before_use() {
        let with =
            |mbs: &str| FIL.replace("max_batch_size: 32768", &format!("max_batch_size: {mbs}"));
        // 10^18 rows once overflowed `max_batch_size * 4` (a panic in debug builds).
        for bad in [
            "1000000000000000000",
            "9223372036854775807",
            "99999999999999999999",
            "1048577",
            "x",
        ] {
            let e = ModelConfig::from_pbtxt("fil_model", &with(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("max_batch_size"), "{bad}: {e}");
        }
        let c = ModelConfig::from_pbtxt("fil_model", &with("1048576")).unwrap();
        assert_eq!((c.max_batch_size, c.max_queue_rows), (1 << 20, 1 << 22));
        // Triton's 0 (no batch dimension) and negatives keep the default.
        assert_eq!(
            ModelConfig::from_pbtxt("fil_model", &with("0"))
                .unwrap()
                .max_batch_size,
            DEFAULT_MAX_BATCH_SIZE
        );
        let slow = FIL.replace(
            "max_queue_delay_microseconds: 100",
            "max_queue_delay_microseconds: 60000001",
        );
        assert!(ModelConfig::from_pbtxt("fil_model", &slow).is_err());
        let huge = FIL.replace(
            "max_queue_delay_microseconds: 100",
            "max_queue_delay_microseconds: 99999999999999999999",
        );
        assert!(ModelConfig::from_pbtxt("fil_model", &huge).is_err());
    }

    #[test]
    fn config_files_past_the_size_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("platform = \"xgboost\"\n");
        text.push_str(&"# padding\n".repeat((MAX_CONFIG_BYTES as usize) / 10 + 1));
        std::fs::write(dir.path().join("config.toml"), &text).unwrap();
        let e = ModelConfig::read("m", dir.path()).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        assert!(ModelConfig::from_toml("m", &text).is_err());
        assert!(ModelConfig::from_pbtxt("m", &text).is_err());
        // Just under it parses.
        text.truncate(MAX_CONFIG_BYTES as usize - 20);
        assert!(ModelConfig::from_toml("m", &text).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep_toml = format!(
            "platform = \"xgboost\"\nfeature_names = {}",
            "[".repeat(100_000)
        );
        assert!(ModelConfig::from_toml("m", &deep_toml).is_err());
        let deep_table = format!("platform = \"xgboost\"\nx = {}", "{ a = ".repeat(50_000));
        assert!(ModelConfig::from_toml("m", &deep_table).is_err());
        let dotted = format!(
            "platform = \"xgboost\"\n{} = 1",
            vec!["a"; 50_000].join(".")
        );
        assert!(ModelConfig::from_toml("m", &dotted).is_err());
        let deep_pbtxt = format!("backend: \"fil\"\n{}", "a { ".repeat(100_000));
        assert!(ModelConfig::from_pbtxt("m", &deep_pbtxt).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::select;
        use std::time::Instant;

        /// Every parse ends within this, even in a debug build on a loaded machine: parsing
        /// is linear and the inputs are small.
        const PARSE_BOUND: Duration = Duration::from_secs(1);

        /// Parses `text` both ways, each under the time bound; whatever parses has every
        /// size within its documented bound.
        fn check(text: &str) {
            for pbtxt in [false, true] {
                let started = Instant::now();
                let parsed = if pbtxt {
                    ModelConfig::from_pbtxt("fil_model", text)
                } else {
                    ModelConfig::from_toml("fil_model", text)
                };
                let took = started.elapsed();
                assert!(took < PARSE_BOUND, "took {took:?} on {text:?}");
                if let Ok(c) = parsed {
                    assert!(c.max_batch_size >= 1 && c.max_batch_size <= MAX_BATCH_SIZE_LIMIT);
                    assert!(c.max_queue_rows <= MAX_QUEUE_ROWS_LIMIT);
                    assert!(c.max_queue_delay <= MAX_QUEUE_DELAY_LIMIT);
                    let t = &c.text;
                    assert!(t.max_batch_tokens <= MAX_BATCH_TOKENS_LIMIT);
                    assert!(t.max_batch_requests <= MAX_BATCH_REQUESTS_LIMIT);
                    assert!(t.max_queue_tokens <= MAX_QUEUE_TOKENS_LIMIT);
                    assert!(t.max_client_batch_size <= MAX_CLIENT_BATCH_SIZE_LIMIT);
                    assert!(t.intra_op_threads <= INTRA_OP_THREADS_LIMIT);
                    assert!(c.recommender.max_k <= MAX_K_LIMIT);
                    assert!(c.recommender.max_in_flight <= MAX_IN_FLIGHT_LIMIT);
                }
            }
        }

        /// Valid configs to mutate: the FIL example and TOML configs of each platform kind.
        const BASES: [&str; 4] = [
            FIL,
            "platform = \"xgboost\"\nmax_batch_size = 64\nmax_queue_delay_us = 250\nmax_queue_rows = 4096\nversion_policy = { latest = 2 }\nfeature_names = [\"a\", \"b\"]\nthreshold = 0.7\noutput_class = true\n",
            "platform = \"bert-embedding\"\nmax_batch_tokens = 512\nmax_batch_requests = 4\nmax_queue_tokens = 8192\nmax_client_batch_size = 32\nengine = \"onnxruntime\"\nintra_op_threads = 2\nquantize = \"int8\"\n",
            "platform = \"recommender\"\nversion_policy = { specific = [1, 3] }\n[recommender]\nmax_k = 50\nmax_in_flight = 16\nunknown_users = \"not_found\"\ncontent_weight = 0.5\n",
        ];

        /// Pieces of both syntaxes and numbers that have broken parsers before.
        const TOKENS: [&str; 48] = [
            "max_batch_size",
            "max_queue_rows",
            "max_queue_delay_us",
            "max_batch_tokens",
            "max_batch_requests",
            "max_queue_tokens",
            "max_client_batch_size",
            "intra_op_threads",
            "max_k",
            "max_in_flight",
            "max_queue_delay_microseconds",
            "platform = \"xgboost\"\n",
            "platform = \"recommender\"\n",
            "[recommender]\n",
            "backend: \"fil\"\n",
            "parameters",
            "key",
            "value",
            "string_value",
            "version_policy",
            "dynamic_batching",
            "latest",
            "specific",
            "versions",
            "num_versions",
            " = ",
            ": ",
            "{",
            "}",
            "[",
            "]",
            "<",
            ">",
            "\"",
            "'",
            "\\",
            "\n",
            ", ",
            "#",
            "1e18",
            "18446744073709551615",
            "9223372036854775807",
            "-9223372036854775808",
            "0",
            "-1",
            "1048577",
            "nan",
            "\"\"",
        ];

        /// Applies `(position, op, token)` edits to `base`: delete a byte, insert a token, or
        /// overwrite the bytes at the position with a token. Everything is ASCII, so the
        /// result stays UTF-8.
        fn mutate(base: &str, edits: &[(usize, u8, usize)]) -> String {
            let mut b = base.as_bytes().to_vec();
            for &(pos, op, tok) in edits {
                let tok = TOKENS[tok % TOKENS.len()].as_bytes();
                let at = pos % (b.len() + 1);
                match op {
                    0 if at < b.len() => {
                        b.remove(at);
                    }
                    1 => {
                        b.splice(at..at, tok.iter().copied());
                    }
                    _ => {
                        let end = (at + tok.len()).min(b.len());
                        b.splice(at..end, tok.iter().copied());
                    }
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        }

        const NUMERIC_FIELDS: [&str; 10] = [
            "max_batch_size",
            "max_queue_rows",
            "max_queue_delay_us",
            "max_batch_tokens",
            "max_batch_requests",
            "max_queue_tokens",
            "max_client_batch_size",
            "intra_op_threads",
            "threshold",
            "version_policy = { latest",
        ];

        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                (0u32..64).prop_map(|p| (1u64 << p).to_string()),
                any::<f64>().prop_map(|v| format!("{v:e}")),
                select(
                    &[
                        "1e18",
                        "inf",
                        "nan",
                        "-0",
                        "0x7fffffffffffffff",
                        "1_000_000_000_000"
                    ][..]
                )
                .prop_map(str::to_string),
            ]
        }

        proptest! {
            // Cases: proptest's default (256), or PROPTEST_CASES.
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_text_parses_or_errs(text in any::<String>()) {
                check(&text);
            }

            #[test]
            fn token_soup_parses_or_errs(tokens in prop::collection::vec(select(&TOKENS[..]), 0..300)) {
                check(&tokens.concat());
            }

            #[test]
            fn mutated_valid_configs_parse_or_err(
                base in select(&BASES[..]),
                edits in prop::collection::vec((any::<usize>(), 0u8..3, any::<usize>()), 1..12),
            ) {
                check(&mutate(base, &edits));
            }

            #[test]
            fn any_number_in_a_size_field_is_bounded(
                field in select(&NUMERIC_FIELDS[..]),
                value in number(),
                recommender in any::<bool>(),
            ) {
                let close = if field.contains('{') { " }" } else { "" };
                let text = if recommender {
                    format!("platform = \"recommender\"\n[recommender]\nmax_k = {value}\nmax_in_flight = {value}\n")
                } else {
                    format!("platform = \"bert-embedding\"\n{field} = {value}{close}\n")
                };
                check(&text);
                let pbtxt = FIL
                    .replace("max_batch_size: 32768", &format!("max_batch_size: {value}"))
                    .replace("max_queue_delay_microseconds: 100", &format!("max_queue_delay_microseconds: {value}"))
                    .replace("versions: [1, 2]", &format!("versions: [{value}, 2]"));
                check(&pbtxt);
            }
        }
    }
}
