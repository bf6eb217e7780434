//! The text family behind the serving seam ([`infermesh_inference::Servable`]): platforms
//! `bert-embedding`, `bert-classifier` and `distilbert-classifier` (Hugging Face layout),
//! BYTES texts batched by tokens (TEI's token budget), on OpenVINO, ONNX Runtime or candle;
//! [`TextServable`] is what the typed embedding, categoriser, TEI and OpenAI APIs call.
//!
//! Config keys (`config.toml`), with their defaults and bounds:
//!
//! ```toml
//! max_batch_tokens = 16384         # padded tokens per forward pass (<= 1,048,576)
//! max_batch_requests = 64          # texts per batch (<= 65,536)
//! max_queue_tokens = 262144        # admission capacity in tokens (<= 67,108,864)
//! max_client_batch_size = 512      # texts per request (<= 65,536)
//! engine = "auto"                  # or "candle", "onnxruntime", "openvino"
//! intra_op_threads = 0             # threads per forward pass (0: all cores; <= 1024)
//! quantize = "none"                # or "int8": ONNX Runtime int8 dynamic quantisation
//! precision = "auto"               # or "bf16", "f32": bf16 products where OpenVINO and the CPU can
//! [limits]                         # TextLoadLimits: max_file_bytes, max_vocabulary
//! ```

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use infermesh_common::ServiceError;
use infermesh_inference::batcher::{Backend, BatchConfig, Batcher};
use infermesh_inference::tensor::text_input;
use infermesh_inference::{
    BatchUnit, Batching, BoxFuture, Description, Family, LoadContext, OutputTensor, Servable,
    TensorData, TensorMeta, V2Request, family_limits,
};
use infermesh_registry::ModelConfig;
use tokenizers::Tokenizer;

use crate::classifier::{argmax, softmax};
use crate::lexical::LexicalHead;
use crate::limits::TextLoadLimits;
use crate::openvino;
use crate::tokenize::{self, Token};
use crate::{
    OnnxOptions, OnnxTask, OnnxTextModel, OpenVinoOptions, OpenVinoTextModel, SentenceEncoder,
    TextClassifier, TextError, TextModel, normalize,
};

/// The text family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "text",
    platforms: &["bert-embedding", "bert-classifier", "distilbert-classifier"],
    load,
    grpc: None,
    file_descriptor_set: None,
};

mod config;
mod texts;

pub use config::{
    INTRA_OP_THREADS_LIMIT, MAX_BATCH_REQUESTS_LIMIT, MAX_BATCH_TOKENS_LIMIT,
    MAX_CLIENT_BATCH_SIZE_LIMIT, MAX_QUEUE_TOKENS_LIMIT, TextEngine, TextLimits, TextPrecision,
};
pub use texts::{DEFAULT_MAX_TEXT_BYTES, MAX_TEXT_BYTES_LIMIT, check_texts, take_max_text_bytes};

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    Ok(Arc::new(TextServable::load(cx.config, cx.version, cx.dir)?))
}

fn is_classifier(platform: &str) -> bool {
    matches!(platform, "bert-classifier" | "distilbert-classifier")
}

/// A transformer text model version: an encoder (embeddings) or a classifier (logits), its
/// token-budget batcher and limits.
#[derive(Debug)]
pub struct TextServable {
    model: Arc<dyn TextModel>,
    limits: TextLimits,
    classifier: bool,
    batcher: Batcher<TextBackend>,
    engine: TextEngine,
    /// A classifier's lexical head (`lexical.json` beside its weights), blended into its
    /// logits by [`TextServable::classify_with`].
    lexical: Option<Arc<LexicalHead>>,
    /// The tokenizer cutting on the left, made on the first request that asks for it.
    left_tokenizer: Arc<OnceLock<Result<Tokenizer, String>>>,
    input_name: String,
    output_name: String,
    description: Description,
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

impl TextServable {
    /// Loads the text model in `dir` as `config` says (its platform, the text keys, the
    /// engine choice and `[limits]` as [`TextLoadLimits`]): what this family's loader does,
    /// and what another family serving an encoder inside its own versions calls (the topic
    /// models' `embedder/`).
    pub fn load(config: &ModelConfig, version: u64, dir: &Path) -> Result<Self, String> {
        let limits: TextLoadLimits = family_limits(config)?;
        let text_limits = TextLimits::parse(config)?;
        limits.check_files(dir).map_err(|e| e.to_string())?;
        let (model, engine) = load_text_model(config, &text_limits, dir)?;
        limits
            .check_vocabulary("tokenizer.json", model.tokenizer().get_vocab_size(true))
            .map_err(|e| e.to_string())?;
        tracing::info!(
            model = %config.name,
            version,
            engine = engine.as_str(),
            "text model loaded"
        );
        let lexical = if is_classifier(&config.platform) {
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

    /// Serves an already built text model (loaders and tests); `engine` is the one that
    /// runs it (reported in the model configuration).
    pub fn new(
        config: &ModelConfig,
        version: u64,
        model: Arc<dyn TextModel>,
        engine: TextEngine,
    ) -> Result<Self, String> {
        let classifier = is_classifier(&config.platform);
        if classifier && model.labels().len() != model.output_width() {
            return Err(format!(
                "the classifier has {} outputs but {} labels",
                model.output_width(),
                model.labels().len()
            ));
        }
        let limits = TextLimits::parse(config)?;
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
        let input_name = config.input_name_or("text").to_string();
        let output_name = config
            .output_name_or(if classifier {
                "probabilities"
            } else {
                "embedding"
            })
            .to_string();
        let w = model.output_width() as i64;
        let outputs = if classifier {
            vec![
                TensorMeta::new(&output_name, "FP32", vec![-1, w]),
                TensorMeta::new("logits", "FP32", vec![-1, w]),
                TensorMeta::new("label", "BYTES", vec![-1]),
            ]
        } else {
            vec![TensorMeta::new(&output_name, "FP32", vec![-1, w])]
        };
        let description = Description {
            backend: engine.as_str().to_string(),
            format: config.platform.clone(),
            inputs: vec![TensorMeta::new(&input_name, "BYTES", vec![-1])],
            outputs,
            max_batch_size: limits.max_client_batch_size,
            batching: Batching {
                unit: BatchUnit::Tokens,
                max_batch_cost: limits.max_batch_tokens,
                max_queue_cost: limits.max_queue_tokens,
            },
            width: model.output_width(),
            parameters: vec![
                ("model_type".into(), config.platform.clone()),
                ("engine".into(), engine.as_str().to_string()),
                ("max_len".into(), model.max_len().to_string()),
                (
                    "max_batch_tokens".into(),
                    limits.max_batch_tokens.to_string(),
                ),
                (
                    "max_batch_requests".into(),
                    limits.max_batch_requests.to_string(),
                ),
                (
                    "max_client_batch_size".into(),
                    limits.max_client_batch_size.to_string(),
                ),
                ("labels".into(), model.labels().join(",")),
            ],
        };
        Ok(Self {
            model,
            limits,
            classifier,
            batcher,
            engine,
            lexical: None,
            left_tokenizer: Arc::default(),
            input_name,
            output_name,
            description,
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

    /// As [`TextServable::run`], with the request's options (`normalize` applies to encoders
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

    /// As [`TextServable::run_with`] for texts the caller tokenised already (TEI's and the
    /// OpenAI API's token-id inputs): each id must be in the tokenizer's vocabulary and each
    /// sequence non-empty; longer than [`TextServable::max_len`] is cut (on the side
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
        let mut rows = run_texts(&self.batcher, ids).await?;
        if !self.classifier && options.normalize {
            rows.iter_mut().for_each(|r| normalize(r));
        }
        Ok(TextRows { rows, tokens })
    }

    /// Classifies `texts` (classifier versions only).
    pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<Classified>, ServiceError> {
        self.classify_with(texts, EmbedOptions::default()).await
    }

    /// As [`TextServable::classify`], refusing over-long texts unless `options.truncate`. With
    /// a lexical head, `logits` are the blended log-probabilities (see
    /// [`crate::lexical`]).
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
    /// `logits` `[n, labels]` and BYTES `label` `[n]` for classifiers (the first one named as
    /// the config's `output_name`). `options` come from the request's parameters.
    pub async fn infer_texts(
        &self,
        texts: Vec<String>,
        options: EmbedOptions,
    ) -> Result<Vec<OutputTensor>, ServiceError> {
        let n = texts.len() as i64;
        let width = self.output_width() as i64;
        if !self.classifier {
            let rows = self.run_with(texts, options).await?.rows;
            return Ok(vec![OutputTensor {
                name: self.output_name.clone(),
                shape: vec![n, width],
                data: TensorData::Fp32(rows.concat()),
            }]);
        }
        let classified = self.classify_with(texts, options).await?;
        Ok(vec![
            OutputTensor {
                name: self.output_name.clone(),
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
        ])
    }
}

impl Servable for TextServable {
    fn description(&self) -> &Description {
        &self.description
    }

    /// V2 parameters `normalize` and `truncate` (booleans, both true when absent) are the
    /// request's embedding options.
    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(async move {
            let options = EmbedOptions {
                normalize: request.bool_param("normalize", true)?,
                truncate: request.bool_param("truncate", true)?,
                truncate_left: false,
            };
            let texts = text_input(request.inputs, &self.input_name)?;
            self.infer_texts(texts, options).await
        })
    }

    fn failure(&self) -> Option<String> {
        self.batcher.failure().map(str::to_string)
    }

    fn in_flight(&self) -> usize {
        self.batcher.in_flight()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Loads a text model on the engine its config asks for. `Auto`, for the architectures the
/// exported graph covers (BERT encoders and classifiers), tries OpenVINO in bf16 (when the
/// precision allows it and the CPU computes bf16 natively), then ONNX Runtime, then candle,
/// saying in the log why it passed one by. What the config demands (an engine, int8, bf16)
/// is an error when it cannot be had, never a silent fallback.
fn load_text_model(
    config: &ModelConfig,
    text: &TextLimits,
    dir: &Path,
) -> Result<(Arc<dyn TextModel>, TextEngine), String> {
    let task = match config.platform.as_str() {
        "bert-embedding" => OnnxTask::Embedding,
        "bert-classifier" | "distilbert-classifier" => OnnxTask::Classifier,
        other => return Err(format!("{other} is not a text platform")),
    };
    let name = &config.name;
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
    let distilbert = config.platform == "distilbert-classifier";
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
            match crate::onnx::runtime() {
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

/// A text model batched by tokens: a request is the token ids of one or more texts; the
/// reply is one output row (embedding or logits) per text.
///
/// A batch is run as forward passes over sequences sorted by length, each holding at most
/// `max_items` sequences and `max_padded_tokens` tokens once padded, so one request with many
/// long texts never builds an attention tensor past that budget, and short texts are not
/// padded to a long one's length.
#[derive(Debug)]
pub struct TextBackend {
    model: Arc<dyn TextModel>,
    max_items: usize,
    max_padded_tokens: usize,
}

impl TextBackend {
    /// Wraps `model`; forward passes hold at most `max_items` sequences and
    /// `max_padded_tokens` padded tokens (one sequence at least).
    pub fn new(model: Arc<dyn TextModel>, max_items: usize, max_padded_tokens: usize) -> Self {
        Self {
            model,
            max_items: max_items.max(1),
            max_padded_tokens,
        }
    }

    /// One output row per sequence, in the order given.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ServiceError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        let mut at = 0;
        while at < order.len() {
            // Sorted longest first: the chunk's padded length is its first sequence's.
            let longest = seqs[order[at]].len().max(1);
            let fit = (self.max_padded_tokens / longest).clamp(1, self.max_items);
            let chunk = &order[at..(at + fit).min(order.len())];
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i]).collect();
            let rows = self.model.forward_tokens(&batch).map_err(text_error)?;
            if rows.len() != chunk.len() {
                return Err(ServiceError::internal(format!(
                    "text model answered {} of {} sequences",
                    rows.len(),
                    chunk.len()
                )));
            }
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
            at += chunk.len();
        }
        Ok(out)
    }
}

fn text_error(e: TextError) -> ServiceError {
    match e {
        TextError::Tokenizer(m) => ServiceError::invalid(format!("cannot tokenize: {m}")),
        other => ServiceError::internal(other),
    }
}

impl Backend for TextBackend {
    type Request = Vec<Vec<u32>>;
    type Reply = Vec<Vec<f32>>;

    fn run(&self, batch: &[&Vec<Vec<u32>>]) -> Result<Vec<Vec<Vec<f32>>>, ServiceError> {
        let seqs: Vec<&[u32]> = batch
            .iter()
            .flat_map(|r| r.iter().map(Vec::as_slice))
            .collect();
        let mut out = self.forward(&seqs)?.into_iter();
        Ok(batch
            .iter()
            .map(|r| out.by_ref().take(r.len()).collect())
            .collect())
    }
}

/// Runs tokenised texts through `batcher`: one output row per text. The request costs its
/// token count.
async fn run_texts(
    batcher: &Batcher<TextBackend>,
    ids: Vec<Vec<u32>>,
) -> Result<Vec<Vec<f32>>, ServiceError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let n = ids.len();
    batcher.submit(ids, tokens.max(1), n).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ModelConfig {
        ModelConfig::from_toml("m", text).unwrap()
    }

    #[test]
    fn text_engines_refuse_what_they_cannot_run() {
        let load = |platform: &str, engine: &str| {
            let c = cfg(&format!("platform = \"{platform}\"\nengine = \"{engine}\""));
            let limits = TextLimits::parse(&c).unwrap();
            load_text_model(&c, &limits, Path::new("/nonexistent/infermesh-model"))
                .err()
                .unwrap()
        };
        let err = load("distilbert-classifier", "onnxruntime");
        assert!(err.contains("does not run distilbert-classifier"), "{err}");
        for engine in ["candle", "auto", "onnxruntime"] {
            let err = load("bert-embedding", engine);
            // Either the model's files or the ONNX Runtime library is named.
            assert!(
                err.contains("config.json") || err.contains("ONNX Runtime library"),
                "{engine}: {err}"
            );
        }
        let err = load("xgboost", "auto");
        assert!(err.contains("not a text platform"), "{err}");
    }
}
