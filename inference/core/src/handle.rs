//! A loaded model version: the model, its batcher, and what its outputs mean.
//!
//! Two families share the serving core: tabular models (trees; rows of `f32` features,
//! batched by rows) and transformer text models (BYTES texts, batched by tokens).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use infermesh_common::ServiceError;
use infermesh_model_core::{TabularModel, Task};
use infermesh_registry::{
    ModelConfig, OutputMode, Platform, TextEngine, TextLimits, TextPrecision, VersionEntry,
};
use infermesh_text::classifier::{argmax, softmax};
use infermesh_text::lexical::LexicalHead;
use infermesh_text::limits::TextLoadLimits;
use infermesh_text::openvino;
use infermesh_text::tokenize::{self, Token};
use infermesh_text::{
    OnnxOptions, OnnxTask, OnnxTextModel, OpenVinoOptions, OpenVinoTextModel, SentenceEncoder,
    TextClassifier, TextError, TextModel, normalize,
};
use infermesh_trees::{LoadLimits, ModelFormat, TreeEnsemble};
use tokenizers::Tokenizer;

use crate::backends::{TabularBackend, TextBackend};
use crate::batcher::{BatchConfig, Batcher, INLINE_MAX_ROWS};
use crate::recs::RecsVersion;

/// The values of an output tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `FP32`, row-major.
    Fp32(Vec<f32>),
    /// `BYTES` elements (labels).
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The V2 datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            TensorData::Fp32(_) => "FP32",
            TensorData::Bytes(_) => "BYTES",
        }
    }
}

/// An output tensor of the V2 API.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, rows first.
    pub shape: Vec<i64>,
    /// Values.
    pub data: TensorData,
}

/// One servable version of a model. Shared by `Arc`: a request holds its version until it
/// answers, so retiring a version never fails a request in flight.
#[derive(Debug)]
pub struct LoadedVersion {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The config it was loaded with.
    pub config: Arc<ModelConfig>,
    /// Fingerprint of the version folder when it was loaded.
    pub fingerprint: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Tabular(TabularVersion),
    Text(TextVersion),
    Recs(RecsVersion),
}

impl LoadedVersion {
    /// Loads the artifact of `entry` as `config` says and starts its batcher. A `config.toml`
    /// inside the version folder (what `infermesh train` writes beside its artifacts) is that
    /// version's own config and wins over the model-level one, so versions with different
    /// thresholds or features coexist.
    pub fn load(config: Arc<ModelConfig>, entry: &VersionEntry) -> Result<Self, String> {
        let own = entry.dir.join("config.toml");
        let config = if own.is_file() {
            let text =
                std::fs::read_to_string(&own).map_err(|e| format!("{}: {e}", own.display()))?;
            let mut c = ModelConfig::from_toml(&config.name, &text)
                .map_err(|e| format!("version {}: {e}", entry.version))?;
            c.version_policy = config.version_policy.clone();
            Arc::new(c)
        } else {
            config
        };
        let kind = if config.platform.is_text() {
            Kind::Text(TextVersion::load(&config, entry.version, &entry.dir)?)
        } else if config.platform == Platform::Recommender {
            Kind::Recs(RecsVersion::load(&config, &entry.dir)?)
        } else {
            let (path, format) = find_artifact(&config, &entry.dir)?;
            let limits: LoadLimits = family_limits(&config)?;
            let model = TreeEnsemble::load_with_limits(&path, format, &limits)
                .map_err(|e| e.to_string())?;
            Kind::Tabular(TabularVersion::new(
                &config,
                entry.version,
                Arc::new(model),
            )?)
        };
        Ok(Self::with_kind(
            config,
            entry.version,
            entry.fingerprint,
            kind,
        ))
    }

    /// Wraps an already built tabular model (used by loaders and tests).
    pub fn from_model(
        config: Arc<ModelConfig>,
        version: u64,
        fingerprint: u64,
        model: Arc<dyn TabularModel>,
    ) -> Result<Self, String> {
        let kind = Kind::Tabular(TabularVersion::new(&config, version, model)?);
        Ok(Self::with_kind(config, version, fingerprint, kind))
    }

    /// Wraps an already built text model (used by loaders and tests); `engine` is the one
    /// that runs it (reported in the model config).
    pub fn from_text_model(
        config: Arc<ModelConfig>,
        version: u64,
        fingerprint: u64,
        model: Arc<dyn TextModel>,
        engine: TextEngine,
    ) -> Result<Self, String> {
        let kind = Kind::Text(TextVersion::new(&config, version, model, engine)?);
        Ok(Self::with_kind(config, version, fingerprint, kind))
    }

    fn with_kind(config: Arc<ModelConfig>, version: u64, fingerprint: u64, kind: Kind) -> Self {
        Self {
            name: config.name.clone(),
            version,
            config,
            fingerprint,
            loaded_at: SystemTime::now(),
            kind,
        }
    }

    /// Wraps an already built recommender (used by loaders and tests).
    pub fn from_recs(
        config: Arc<ModelConfig>,
        version: u64,
        fingerprint: u64,
        recs: RecsVersion,
    ) -> Self {
        Self::with_kind(config, version, fingerprint, Kind::Recs(recs))
    }

    fn wrong_family(&self, wanted: &str) -> ServiceError {
        ServiceError::invalid(format!(
            "model '{}' is a {} model, not a {wanted} one",
            self.name,
            self.config.platform.as_str()
        ))
    }

    /// The tabular side, or `InvalidInput` naming the model's platform.
    pub fn tabular(&self) -> Result<&TabularVersion, ServiceError> {
        match &self.kind {
            Kind::Tabular(t) => Ok(t),
            _ => Err(self.wrong_family("tabular")),
        }
    }

    /// The text side, or `InvalidInput` naming the model's platform.
    pub fn text(&self) -> Result<&TextVersion, ServiceError> {
        match &self.kind {
            Kind::Text(t) => Ok(t),
            _ => Err(self.wrong_family("text")),
        }
    }

    /// The recommender side, or `InvalidInput` naming the model's platform.
    pub fn recs(&self) -> Result<&RecsVersion, ServiceError> {
        match &self.kind {
            Kind::Recs(r) => Ok(r),
            _ => Err(self.wrong_family("recommender")),
        }
    }

    /// A short name of the artifact format (`xgboost_json`, `lightgbm`, `bert-embedding`...).
    pub fn format(&self) -> &'static str {
        match &self.kind {
            Kind::Tabular(t) => t.model.format(),
            Kind::Text(_) | Kind::Recs(_) => self.config.platform.as_str(),
        }
    }

    /// Input width in features (tabular), output width (text) or catalogue size
    /// (recommender), for logs.
    pub fn width(&self) -> usize {
        match &self.kind {
            Kind::Tabular(t) => t.num_features(),
            Kind::Text(t) => t.output_width(),
            Kind::Recs(r) => r.recommender().num_items(),
        }
    }

    /// Why this version can no longer serve (its backend panicked while running a request),
    /// if so. A failed version is not ready; it serves again once reloaded.
    pub fn failure(&self) -> Option<&str> {
        match &self.kind {
            Kind::Tabular(t) => t.batcher.failure(),
            Kind::Text(t) => t.batcher.failure(),
            Kind::Recs(r) => r.failure(),
        }
    }

    /// Budget units (rows or tokens) admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        match &self.kind {
            Kind::Tabular(t) => t.batcher.in_flight(),
            Kind::Text(t) => t.batcher.in_flight(),
            Kind::Recs(r) => r.in_flight(self.config.recommender.max_in_flight),
        }
    }
}

/// A tabular model version: the model, its row batcher, feature names and output semantics.
#[derive(Debug)]
pub struct TabularVersion {
    /// The model.
    pub model: Arc<dyn TabularModel>,
    output: OutputMode,
    output_name: String,
    feature_names: Vec<String>,
    feature_index: HashMap<String, usize>,
    batcher: Batcher<TabularBackend>,
}

impl TabularVersion {
    fn new(
        config: &ModelConfig,
        version: u64,
        model: Arc<dyn TabularModel>,
    ) -> Result<Self, String> {
        let n = model.num_features();
        let feature_names: Vec<String> = match (&config.feature_names, model.feature_names()) {
            (Some(names), _) => {
                if names.len() != n {
                    return Err(format!(
                        "config.toml lists {} feature_names but the model has {n} features",
                        names.len()
                    ));
                }
                names.clone()
            }
            (None, Some(names)) if names.len() == n => names.to_vec(),
            _ => (0..n).map(|i| format!("f{i}")).collect(),
        };
        let mut feature_index = HashMap::with_capacity(n);
        for (i, f) in feature_names.iter().enumerate() {
            if feature_index.insert(f.clone(), i).is_some() {
                return Err(format!("feature name '{f}' appears twice"));
            }
        }
        if config.output.output_class && matches!(model.task(), Task::Regression) {
            tracing::warn!(model = %config.name, "output_class is set but the model is a regression");
        }
        let batcher = Batcher::start(
            Arc::new(TabularBackend::new(model.clone())),
            BatchConfig {
                model: config.name.clone(),
                version: version.to_string(),
                max_batch_cost: config.max_batch_size,
                max_batch_items: config.max_batch_size,
                max_queue_delay: config.max_queue_delay,
                max_queue_cost: config.max_queue_rows,
                inline_max_cost: INLINE_MAX_ROWS,
            },
        )
        .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        Ok(Self {
            model,
            output: config.output,
            output_name: config.output_name.clone(),
            feature_names,
            feature_index,
            batcher,
        })
    }

    /// Feature names in column order (the artifact's, the config's, or `f0..fN`).
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The column of feature `name`.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.feature_index.get(name).copied()
    }

    /// Number of input features.
    pub fn num_features(&self) -> usize {
        self.model.num_features()
    }

    /// The model's own outputs per row (probabilities for classifiers), through the batcher.
    pub async fn predict_raw(&self, features: Vec<f32>) -> Result<Vec<f32>, ServiceError> {
        self.batcher
            .predict_rows(features, self.num_features())
            .await
    }

    /// Shape of the output tensor for `rows` rows, as the output mode shapes it.
    pub fn output_shape(&self, rows: i64) -> Vec<i64> {
        let k = self.model.num_outputs() as i64;
        match output_layout(self.model.task(), self.output) {
            Layout::Scalar => vec![rows],
            Layout::TwoClass => vec![rows, 2],
            Layout::PerOutput => vec![rows, k],
            Layout::ClassIndex => vec![rows],
        }
    }

    /// Runs `features` and shapes the result as the V2 output tensor (Triton FIL semantics).
    pub async fn infer(&self, features: Vec<f32>) -> Result<OutputTensor, ServiceError> {
        let rows = features.len() / self.num_features().max(1);
        let raw = self.predict_raw(features).await?;
        let data = apply_output_mode(
            self.model.task(),
            self.output,
            self.model.num_outputs(),
            raw,
        );
        Ok(OutputTensor {
            name: self.output_name.clone(),
            shape: self.output_shape(rows as i64),
            data: TensorData::Fp32(data),
        })
    }

    /// Exact per-feature contributions of one row (TreeSHAP), bias last.
    pub fn explain(&self, row: &[f32]) -> Result<Vec<f32>, ServiceError> {
        self.model
            .contributions(row)
            .map_err(|e| ServiceError::invalid(e.to_string()))
    }
}

/// A transformer text model version: an encoder (embeddings) or a classifier (logits), its
/// token-budget batcher and limits.
#[derive(Debug)]
pub struct TextVersion {
    model: Arc<dyn TextModel>,
    limits: TextLimits,
    classifier: bool,
    batcher: Batcher<TextBackend>,
    engine: TextEngine,
    /// A classifier's lexical head (`lexical.json` beside its weights), blended into its
    /// logits by [`TextVersion::classify_with`].
    lexical: Option<Arc<LexicalHead>>,
    /// The tokenizer cutting on the left, made on the first request that asks for it.
    left_tokenizer: Arc<OnceLock<Result<Tokenizer, String>>>,
}

/// Per-request options of an embedding request (TEI's `normalize`, `truncate` and
/// `truncation_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Unit-length vectors (the default); `false` returns the pooled vector as it is.
    pub normalize: bool,
    /// Cut texts at the model's maximum length (the default); `false` refuses them with
    /// INVALID_ARGUMENT, naming the text and its length.
    pub truncate: bool,
    /// Cut over-long texts on the left, keeping their end (TEI's `truncation_direction:
    /// "Left"`); the default cuts on the right.
    pub truncate_left: bool,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            normalize: true,
            truncate: true,
            truncate_left: false,
        }
    }
}

/// Rows of a text request and the tokens they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRows {
    /// One row per text, in request order.
    pub rows: Vec<Vec<f32>>,
    /// Tokens the texts came to after truncation, special tokens included (what TEI and the
    /// OpenAI API report as `prompt_tokens`).
    pub tokens: usize,
}

/// A text classifier's answer for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Raw scores, one per label.
    pub logits: Vec<f32>,
    /// Softmax of the logits.
    pub probabilities: Vec<f32>,
    /// Index of the most probable label.
    pub best: usize,
}

impl TextVersion {
    fn load(config: &ModelConfig, version: u64, dir: &Path) -> Result<Self, String> {
        let limits: TextLoadLimits = family_limits(config)?;
        limits.check_files(dir).map_err(|e| e.to_string())?;
        let (model, engine) = load_text_model(config, dir)?;
        limits
            .check_vocabulary("tokenizer.json", model.tokenizer().get_vocab_size(true))
            .map_err(|e| e.to_string())?;
        tracing::info!(
            model = %config.name,
            version,
            engine = engine.as_str(),
            "text model loaded"
        );
        let lexical = if config.platform.is_classifier() {
            let head =
                LexicalHead::load_optional(dir, model.labels()).map_err(|e| e.to_string())?;
            if let Some(h) = &head {
                limits
                    .check_vocabulary("lexical.json", h.tfidf().len())
                    .map_err(|e| e.to_string())?;
            }
            head.map(Arc::new)
        } else {
            None
        };
        let mut loaded = Self::new(config, version, model, engine)?;
        if let Some(head) = &lexical {
            tracing::info!(
                model = %config.name,
                version,
                features = head.tfidf().len(),
                blend_weight = head.blend_weight(),
                "lexical head loaded"
            );
        }
        loaded.lexical = lexical;
        Ok(loaded)
    }

    fn new(
        config: &ModelConfig,
        version: u64,
        model: Arc<dyn TextModel>,
        engine: TextEngine,
    ) -> Result<Self, String> {
        let classifier = config.platform.is_classifier();
        if classifier && model.labels().len() != model.output_width() {
            return Err(format!(
                "the classifier has {} outputs but {} labels",
                model.output_width(),
                model.labels().len()
            ));
        }
        let limits = config.text;
        let batcher = Batcher::start(
            Arc::new(TextBackend::new(
                model.clone(),
                limits.max_batch_requests,
                limits.max_batch_tokens,
            )),
            BatchConfig {
                model: config.name.clone(),
                version: version.to_string(),
                max_batch_cost: limits.max_batch_tokens,
                max_batch_items: limits.max_batch_requests,
                max_queue_delay: config.max_queue_delay,
                max_queue_cost: limits.max_queue_tokens,
                // A forward pass takes milliseconds: never on an async worker.
                inline_max_cost: 0,
            },
        )
        .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        Ok(Self {
            model,
            limits,
            classifier,
            batcher,
            engine,
            lexical: None,
            left_tokenizer: Arc::default(),
        })
    }

    /// The engine running the forward passes (never `Auto`).
    pub fn engine(&self) -> TextEngine {
        self.engine
    }

    /// Embedding width, or number of labels.
    pub fn output_width(&self) -> usize {
        self.model.output_width()
    }

    /// Longest input in tokens (longer texts are truncated).
    pub fn max_len(&self) -> usize {
        self.model.max_len()
    }

    /// Class labels in id order (empty for encoders).
    pub fn labels(&self) -> &[String] {
        self.model.labels()
    }

    /// True for classifiers.
    pub fn is_classifier(&self) -> bool {
        self.classifier
    }

    /// The batching limits.
    pub fn limits(&self) -> TextLimits {
        self.limits
    }

    /// One output row per text (unit embeddings, or logits): tokenised off the async
    /// workers, then batched by tokens with every other request to this version.
    pub async fn run(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ServiceError> {
        Ok(self.run_with(texts, EmbedOptions::default()).await?.rows)
    }

    /// As [`TextVersion::run`], with the request's options (`normalize` applies to encoders
    /// only; a classifier's rows are logits), and the token count.
    pub async fn run_with(
        &self,
        texts: Vec<String>,
        options: EmbedOptions,
    ) -> Result<TextRows, ServiceError> {
        self.check_count(texts.len())?;
        if texts.is_empty() {
            return self.run_tokens(Vec::new(), options).await;
        }
        let model = self.model.clone();
        let left = self.left_tokenizer.clone();
        let ids = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            if !options.truncate {
                model.tokenize_exact(&refs)
            } else if options.truncate_left {
                let tokenizer = left
                    .get_or_init(|| {
                        tokenize::left_truncating(model.tokenizer()).map_err(|e| e.to_string())
                    })
                    .as_ref()
                    .map_err(|e| TextError::Tokenizer(e.clone()))?;
                tokenize::encode(tokenizer, &refs)
            } else {
                model.tokenize(&refs)
            }
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(|e| match e {
            TextError::TooLong { .. } => ServiceError::invalid(e.to_string()),
            e => ServiceError::invalid(format!("cannot tokenize: {e}")),
        })?;
        self.run_tokens(ids, options).await
    }

    /// As [`TextVersion::run_with`] for texts the caller tokenised already (TEI's and the
    /// OpenAI API's token-id inputs): each id must be in the tokenizer's vocabulary and each
    /// sequence non-empty; longer than [`TextVersion::max_len`] is cut (on the side
    /// `options.truncate_left` says) or refused as `options.truncate` says.
    pub async fn run_ids_with(
        &self,
        mut ids: Vec<Vec<u32>>,
        options: EmbedOptions,
    ) -> Result<TextRows, ServiceError> {
        self.check_count(ids.len())?;
        let vocab = self.model.tokenizer().get_vocab_size(true);
        let max = self.max_len();
        for (index, seq) in ids.iter_mut().enumerate() {
            if seq.is_empty() {
                return Err(ServiceError::invalid(format!(
                    "token sequence {index} is empty"
                )));
            }
            if let Some(bad) = seq.iter().find(|&&id| id as usize >= vocab) {
                return Err(ServiceError::invalid(format!(
                    "token sequence {index} has id {bad}; this model's vocabulary has {vocab} ids"
                )));
            }
            if seq.len() > max {
                if !options.truncate {
                    return Err(ServiceError::invalid(
                        TextError::TooLong {
                            index,
                            tokens: seq.len(),
                            max,
                        }
                        .to_string(),
                    ));
                }
                if options.truncate_left {
                    seq.drain(..seq.len() - max);
                } else {
                    seq.truncate(max);
                }
            }
        }
        self.run_tokens(ids, options).await
    }

    /// The tokens of `texts` as this model sees them (TEI's `/tokenize`), tokenised off the
    /// async workers; the same `max_client_batch_size` as inference.
    pub async fn tokens(
        &self,
        texts: Vec<String>,
        add_special_tokens: bool,
    ) -> Result<Vec<Vec<Token>>, ServiceError> {
        self.check_count(texts.len())?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            tokenize::tokens(model.tokenizer(), &refs, add_special_tokens)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(|e| ServiceError::invalid(format!("cannot tokenize: {e}")))
    }

    fn check_count(&self, n: usize) -> Result<(), ServiceError> {
        if n > self.limits.max_client_batch_size {
            return Err(ServiceError::invalid(format!(
                "{n} texts in one request; this model takes at most {} (max_client_batch_size)",
                self.limits.max_client_batch_size
            )));
        }
        Ok(())
    }

    async fn run_tokens(
        &self,
        ids: Vec<Vec<u32>>,
        options: EmbedOptions,
    ) -> Result<TextRows, ServiceError> {
        let tokens = ids.iter().map(Vec::len).sum();
        let mut rows = self.batcher.run_texts(ids).await?;
        if !self.classifier && options.normalize {
            rows.iter_mut().for_each(|r| normalize(r));
        }
        Ok(TextRows { rows, tokens })
    }

    /// Classifies `texts` (classifier versions only).
    pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<Classified>, ServiceError> {
        self.classify_with(texts, EmbedOptions::default()).await
    }

    /// As [`TextVersion::classify`], refusing over-long texts unless `options.truncate`. With
    /// a lexical head, `logits` are the blended log-probabilities (see
    /// [`infermesh_text::lexical`]).
    pub async fn classify_with(
        &self,
        texts: Vec<String>,
        options: EmbedOptions,
    ) -> Result<Vec<Classified>, ServiceError> {
        if !self.classifier {
            return Err(ServiceError::invalid(
                "this model is an encoder, not a classifier",
            ));
        }
        let lexical = self.lexical.as_ref().map(|head| (head, texts.clone()));
        let mut rows = self.run_with(texts, options).await?.rows;
        if let Some((head, texts)) = lexical {
            for (row, text) in rows.iter_mut().zip(&texts) {
                head.blend(row, text);
            }
        }
        Ok(rows
            .into_iter()
            .map(|logits| {
                let probabilities = softmax(&logits);
                let best = argmax(&probabilities);
                Classified {
                    logits,
                    probabilities,
                    best,
                }
            })
            .collect())
    }

    /// The V2 outputs for `texts`: `embedding` `[n, dim]` for encoders; `probabilities` and
    /// `logits` `[n, labels]` and BYTES `label` `[n]` for classifiers. `options` come from
    /// the request's parameters; `wanted` filters by name (empty: all).
    pub async fn infer(
        &self,
        texts: Vec<String>,
        options: EmbedOptions,
        output_name: &str,
        wanted: &[String],
    ) -> Result<Vec<OutputTensor>, ServiceError> {
        let n = texts.len() as i64;
        let width = self.output_width() as i64;
        if !self.classifier {
            let rows = self.run_with(texts, options).await?.rows;
            return Ok(vec![OutputTensor {
                name: output_name.to_string(),
                shape: vec![n, width],
                data: TensorData::Fp32(rows.concat()),
            }]);
        }
        let classified = self.classify_with(texts, options).await?;
        let mut outputs = vec![
            OutputTensor {
                name: output_name.to_string(),
                shape: vec![n, width],
                data: TensorData::Fp32(
                    classified
                        .iter()
                        .flat_map(|c| c.probabilities.clone())
                        .collect(),
                ),
            },
            OutputTensor {
                name: "logits".into(),
                shape: vec![n, width],
                data: TensorData::Fp32(classified.iter().flat_map(|c| c.logits.clone()).collect()),
            },
            OutputTensor {
                name: "label".into(),
                shape: vec![n],
                data: TensorData::Bytes(
                    classified
                        .iter()
                        .map(|c| self.labels()[c.best].as_bytes().to_vec())
                        .collect(),
                ),
            },
        ];
        if !wanted.is_empty() {
            outputs.retain(|o| wanted.contains(&o.name));
        }
        Ok(outputs)
    }

    /// The V2 output tensor names and shapes (`-1` = batch).
    pub fn output_meta(&self, output_name: &str) -> Vec<(String, &'static str, Vec<i64>)> {
        let w = self.output_width() as i64;
        if self.classifier {
            vec![
                (output_name.to_string(), "FP32", vec![-1, w]),
                ("logits".into(), "FP32", vec![-1, w]),
                ("label".into(), "BYTES", vec![-1]),
            ]
        } else {
            vec![(output_name.to_string(), "FP32", vec![-1, w])]
        }
    }
}

/// Loads a text model on the engine its config asks for. `Auto`, for the architectures the
/// exported graph covers (BERT encoders and classifiers), tries OpenVINO in bf16 (when the
/// precision allows it and the CPU computes bf16 natively), then ONNX Runtime, then candle,
/// saying in the log why it passed one by. What the config demands (an engine, int8, bf16)
/// is an error when it cannot be had, never a silent fallback.
fn load_text_model(
    config: &ModelConfig,
    dir: &Path,
) -> Result<(Arc<dyn TextModel>, TextEngine), String> {
    let task = match config.platform {
        Platform::BertEmbedding => OnnxTask::Embedding,
        Platform::BertClassifier | Platform::DistilbertClassifier => OnnxTask::Classifier,
        Platform::Xgboost | Platform::Lightgbm | Platform::Recommender => {
            return Err(format!(
                "{} is not a text platform",
                config.platform.as_str()
            ));
        }
    };
    let name = &config.name;
    let text = &config.text;
    let candle = || -> Result<(Arc<dyn TextModel>, TextEngine), String> {
        let model: Arc<dyn TextModel> = match task {
            OnnxTask::Embedding => Arc::new(SentenceEncoder::load(dir).map_err(|e| e.to_string())?),
            OnnxTask::Classifier => Arc::new(TextClassifier::load(dir).map_err(|e| e.to_string())?),
        };
        Ok((model, TextEngine::Candle))
    };
    let onnx = || {
        let options = OnnxOptions {
            intra_threads: text.intra_op_threads,
            int8: text.int8,
        };
        OnnxTextModel::load(dir, task, options)
            .map(|m| (Arc::new(m) as Arc<dyn TextModel>, TextEngine::Onnxruntime))
            .map_err(|e| e.to_string())
    };
    let openvino = |precision: openvino::Precision| {
        let options = OpenVinoOptions {
            threads: text.intra_op_threads,
            precision,
        };
        OpenVinoTextModel::load(dir, task, options)
            .map(|m| {
                tracing::info!(model = %name, bf16 = m.bf16(), threads = m.threads(), "openvino");
                (Arc::new(m) as Arc<dyn TextModel>, TextEngine::Openvino)
            })
            .map_err(|e| e.to_string())
    };
    let precision = match text.precision {
        TextPrecision::Auto => openvino::Precision::Auto,
        TextPrecision::Bf16 => openvino::Precision::Bf16,
        TextPrecision::F32 => openvino::Precision::F32,
    };
    let distilbert = config.platform == Platform::DistilbertClassifier;
    match text.engine {
        TextEngine::Candle => candle(),
        engine @ (TextEngine::Onnxruntime | TextEngine::Openvino) if distilbert => Err(format!(
            "engine \"{}\" does not run distilbert-classifier; use engine \"candle\" or \"auto\"",
            engine.as_str()
        )),
        TextEngine::Onnxruntime => onnx(),
        TextEngine::Openvino => openvino(precision),
        // The registry refuses int8 or bf16 with candle; DistilBERT has no exported graph.
        TextEngine::Auto if distilbert && (text.int8 || text.precision == TextPrecision::Bf16) => {
            Err(
                "distilbert-classifier runs on candle only, in f32: drop quantize and \
                 precision"
                    .into(),
            )
        }
        TextEngine::Auto if distilbert => candle(),
        TextEngine::Auto if text.precision == TextPrecision::Bf16 => {
            openvino(openvino::Precision::Bf16)
        }
        TextEngine::Auto if text.int8 => onnx(),
        TextEngine::Auto => {
            if text.precision == TextPrecision::Auto {
                match openvino::runtime() {
                    Ok(rt) if rt.bf16 => match openvino(openvino::Precision::Bf16) {
                        Ok(loaded) => return Ok(loaded),
                        Err(e) => tracing::warn!(model = %name, "openvino cannot load it ({e})"),
                    },
                    Ok(_) => tracing::debug!(model = %name, "no native bf16 on this CPU"),
                    Err(e) => tracing::debug!(model = %name, "{e}"),
                }
            }
            match infermesh_text::onnx::runtime() {
                Err(e) => {
                    tracing::warn!(model = %name, "{e}; serving on candle");
                    candle()
                }
                Ok(_) => onnx().or_else(|e| {
                    tracing::warn!(model = %name, "onnxruntime cannot load it ({e}); serving on candle");
                    candle()
                }),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[n]`: the prediction itself.
    Scalar,
    /// `[n, 2]`: binary class probabilities `(1 - p, p)`.
    TwoClass,
    /// `[n, k]`: per-class values.
    PerOutput,
    /// `[n]`: the predicted class index.
    ClassIndex,
}

fn output_layout(task: Task, mode: OutputMode) -> Layout {
    match (task, mode.output_class, mode.predict_proba) {
        (Task::BinaryClassification, true, true) => Layout::TwoClass,
        (Task::BinaryClassification, true, false) => Layout::ClassIndex,
        (Task::BinaryClassification, false, _) | (Task::Regression, _, _) => Layout::Scalar,
        (Task::Multiclass { .. }, true, false) => Layout::ClassIndex,
        (Task::Multiclass { .. }, _, _) => Layout::PerOutput,
    }
}

/// Turns raw model outputs (`k` per row) into the output tensor's values.
fn apply_output_mode(task: Task, mode: OutputMode, k: usize, raw: Vec<f32>) -> Vec<f32> {
    match output_layout(task, mode) {
        Layout::Scalar | Layout::PerOutput => raw,
        Layout::TwoClass => raw.iter().flat_map(|&p| [1.0 - p, p]).collect(),
        Layout::ClassIndex if k == 1 => raw
            .iter()
            .map(|&p| if p > mode.threshold { 1.0 } else { 0.0 })
            .collect(),
        Layout::ClassIndex => raw
            .chunks(k.max(1))
            .map(|row| {
                let mut best = 0;
                for (i, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = i;
                    }
                }
                best as f32
            })
            .collect(),
    }
}

/// The model's `[limits]` section read as its family's limits (defaults for absent keys; an
/// unknown key, or a value of the wrong type, is an error naming it).
pub(crate) fn family_limits<T: serde::de::DeserializeOwned>(
    config: &ModelConfig,
) -> Result<T, String> {
    toml::Value::Table(config.limits.clone())
        .try_into()
        .map_err(|e| format!("[limits]: {e}"))
}

fn find_artifact(
    config: &ModelConfig,
    dir: &Path,
) -> Result<(std::path::PathBuf, ModelFormat), String> {
    for file in config.candidate_files() {
        let path = dir.join(&file);
        if path.is_file() {
            let format = match (config.platform, config.model_type.as_deref()) {
                (Platform::Lightgbm, _) => ModelFormat::Lightgbm,
                (_, Some(t)) => ModelFormat::from_triton_model_type(t)
                    .ok_or_else(|| format!("unsupported model_type '{t}'"))?,
                (_, None) => {
                    if file.ends_with(".ubj") {
                        ModelFormat::XgboostUbj
                    } else {
                        ModelFormat::XgboostJson
                    }
                }
            };
            return Ok((path, format));
        }
    }
    Err(format!(
        "no model file in {} (looked for {})",
        dir.display(),
        config.candidate_files().join(", ")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(output_class: bool, predict_proba: bool) -> OutputMode {
        OutputMode {
            output_class,
            predict_proba,
            threshold: 0.6,
        }
    }

    #[test]
    fn binary_outputs_follow_fil_semantics() {
        let t = Task::BinaryClassification;
        let raw = vec![0.5, 0.7];
        assert_eq!(
            apply_output_mode(t, mode(false, false), 1, raw.clone()),
            raw
        );
        assert_eq!(
            apply_output_mode(t, mode(true, false), 1, raw.clone()),
            vec![0.0, 1.0]
        );
        assert_eq!(
            apply_output_mode(t, mode(true, true), 1, raw.clone()),
            vec![0.5, 0.5, 1.0 - 0.7, 0.7]
        );
    }

    #[test]
    fn multiclass_outputs_are_probabilities_or_argmax() {
        let t = Task::Multiclass { classes: 3 };
        let raw = vec![0.2, 0.5, 0.3, 0.6, 0.3, 0.1];
        assert_eq!(
            apply_output_mode(t, mode(true, false), 3, raw.clone()),
            vec![1.0, 0.0]
        );
        assert_eq!(apply_output_mode(t, mode(true, true), 3, raw.clone()), raw);
        assert_eq!(output_layout(t, mode(false, false)), Layout::PerOutput);
    }

    #[test]
    fn text_engines_refuse_what_they_cannot_run() {
        let cfg = |platform: &str, engine: &str| {
            ModelConfig::from_toml(
                "m",
                &format!("platform = \"{platform}\"\nengine = \"{engine}\""),
            )
            .map_err(|e| e.to_string())
        };
        let missing = Path::new("/nonexistent/infermesh-model");
        let err = load_text_model(
            &cfg("distilbert-classifier", "onnxruntime").unwrap(),
            missing,
        )
        .err()
        .unwrap();
        assert!(err.contains("does not run distilbert-classifier"), "{err}");
        for engine in ["candle", "auto", "onnxruntime"] {
            let err = load_text_model(&cfg("bert-embedding", engine).unwrap(), missing)
                .err()
                .unwrap();
            // Either the model's files or the ONNX Runtime library is named.
            assert!(
                err.contains("config.json") || err.contains("ONNX Runtime library"),
                "{engine}: {err}"
            );
        }
        let err = load_text_model(&cfg("xgboost", "auto").unwrap(), missing)
            .err()
            .unwrap();
        assert!(err.contains("not a text platform"), "{err}");
    }
}
