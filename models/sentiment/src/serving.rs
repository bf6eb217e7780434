//! The sentiment family behind the serving seam: platform `sentiment`.
//!
//! A version folder is what `infermesh train sentiment` writes: a classifier in the Hugging
//! Face layout (`config.json`, `model.safetensors`, `tokenizer.json`, optionally the lexical
//! head `lexical.json` + `lexical.safetensors`), loaded by the text family
//! ([`TextServable::load`], as `bert-classifier` or `distilbert-classifier` after
//! `config.json`'s `model_type`), so it runs on the same engines and token-budget batcher.
//!
//! With an `[llm]` section, each text is also put to an LLM over Ollama's API
//! ([`infermesh_ollama::OllamaClient`]; `infermesh llm serve` or a real Ollama) as a zero-shot
//! question ([`crate::zeroshot`]: sanitised text, the model's labels as a JSON-schema enum).
//! Both run at once; the LLM's answer is used when it is valid and comes before the deadline
//! (`timeout_ms`, or a request's shorter `deadline_ms`), otherwise the classifier's, and the
//! reason is counted (`infermesh_sentiment_fallbacks_total`): `timeout`, `unavailable` (down,
//! or an error status), `malformed` (not JSON of a label the model has and a score in 0..1),
//! `overloaded` (`max_in_flight` calls already out: the request does not queue behind them),
//! `invalid_input` (nothing left after sanitising) and `disabled` (asked for, none configured).
//! A caller never waits longer than the deadline for the LLM, and an LLM that is down costs
//! one refused connection per text. Results say which model answered.
//!
//! Identical texts are never sent to the LLM twice ([`llm`]): a valid answer is cached (this
//! version's memory, or a Redis every server shares) under the SHA-256 of the model, the
//! sanitised prompt and the options with the schema, answered from there while it lives and
//! validated again; identical texts asked at once share one call. Lookups count in
//! `infermesh_llm_cache_requests_total{source="sentiment", result}` (hit, miss, error); a
//! Redis that fails or is slower than `cache_timeout_ms` is a miss, never an error.
//!
//! - KServe V2: BYTES `text` `[N]` (or `[N, 1]`) → BYTES `label` `[N]`, FP32 `score` `[N]`,
//!   BYTES `source` `[N]` (`llm` or `classifier`); request parameter `use_llm` (BOOL) overrides
//!   `[llm] enabled`.
//! - Typed `infermesh.v1.Sentiment/Analyze`; model `sentiment` when a request names none.
//!
//! Config keys (`config.toml`), besides the common ones:
//!
//! ```toml
//! platform = "sentiment"
//! max_text_bytes = 16384           # bytes per text (<= 16,777,216); longer texts are refused
//! # the text family's keys, for the classifier (see infermesh_text::serving):
//! max_client_batch_size = 512      # texts per request
//! engine = "auto"                  # max_batch_tokens, max_queue_tokens, intra_op_threads, ...
//! [llm]                            # absent: the classifier answers every text
//! enabled = true                   # default true when the section is there
//! url = "http://127.0.0.1:11434"   # default: INFERMESH_OLLAMA_URL, else this
//! model = "smollm2:135m"           # the model the Ollama API serves
//! timeout_ms = 300                 # longest wait for the LLM (1..=60000)
//! max_in_flight = 4                # LLM calls out at once for this version (1..=1024)
//! max_tokens = 512                 # the sanitiser's cap on a text (1..=8192)
//! cache = true                     # cache the LLM's valid answers (default true)
//! cache_url = "redis://127.0.0.1:6379"  # default: INFERMESH_LLM_CACHE_URL, else this
//!                                  # version's memory ("" = memory whatever the environment)
//! cache_prefix = "infermesh:llm:"  # Redis keys <prefix>cache:<sha256>
//! cache_ttl_secs = 86400           # how long an answer is reused (1..=2592000)
//! cache_entries = 10000            # answers kept in memory, least recent evicted (1..=1000000)
//! cache_timeout_ms = 50            # longest Redis call; past it a lookup is a miss (1..=10000)
//! [limits]                         # the classifier's TextLoadLimits (max_file_bytes, ...)
//! ```

mod llm;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_common::ServiceError;
use infermesh_common::metrics_names::{SENTIMENT_ANSWERS_TOTAL, SENTIMENT_FALLBACKS_TOTAL};
use infermesh_inference::tensor::text_input;
use infermesh_inference::{
    BoxFuture, Description, Family, LoadContext, ModelManager, OutputTensor, Servable, TensorData,
    TensorMeta, V2Request,
};
use infermesh_registry::ModelConfig;
pub use infermesh_text::serving::{DEFAULT_MAX_TEXT_BYTES, MAX_TEXT_BYTES_LIMIT};
use infermesh_text::serving::{TextServable, check_texts, take_max_text_bytes};
use serde_json::Value;
use tonic::{Request, Response, Status};

pub use llm::{
    Asked, DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_PREFIX, DEFAULT_CACHE_TIMEOUT_MS,
    DEFAULT_CACHE_TTL_SECS, DEFAULT_LLM_MAX_IN_FLIGHT, DEFAULT_LLM_MODEL, DEFAULT_LLM_TIMEOUT_MS,
    LLM_CACHE_URL_ENV, LlmCacheSettings, LlmSettings, Origin, ZeroShotArm, cache_key,
    zero_shot_request,
};

/// The generated `infermesh.v1.Sentiment` service and messages.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("infermesh.v1");
}

/// The encoded `FileDescriptorSet` of `sentiment.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sentiment_descriptor.bin"));

/// The sentiment family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "sentiment",
    platforms: &["sentiment"],
    load,
    grpc: Some(grpc),
    file_descriptor_set: Some(FILE_DESCRIPTOR_SET),
};

/// The model the typed API uses when a request names none.
pub const DEFAULT_MODEL: &str = "sentiment";

/// Which model answered a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The LLM's zero-shot answer.
    Llm,
    /// The local classifier.
    Classifier,
}

impl Source {
    /// `llm` or `classifier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Llm => "llm",
            Source::Classifier => "classifier",
        }
    }
}

/// Why the classifier answered a text the LLM was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The request asked for the LLM; the model has none configured (or it is disabled).
    Disabled,
    /// No answer before the deadline.
    Timeout,
    /// The LLM is down or answered with an error status.
    Unavailable,
    /// The answer is not JSON of one of the model's labels and a score in 0..1.
    Malformed,
    /// `max_in_flight` LLM calls were already out.
    Overloaded,
    /// Nothing was left of the text after sanitising.
    InvalidInput,
}

impl Fallback {
    /// The reason as the metric label and the typed API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Disabled => "disabled",
            Fallback::Timeout => "timeout",
            Fallback::Unavailable => "unavailable",
            Fallback::Malformed => "malformed",
            Fallback::Overloaded => "overloaded",
            Fallback::InvalidInput => "invalid_input",
        }
    }
}

/// The answer for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct SentimentAnswer {
    /// Index into [`SentimentServable::labels`].
    pub label: usize,
    /// Confidence in the label, in `0..=1`.
    pub score: f32,
    /// Which model answered.
    pub source: Source,
    /// Why the classifier answered where the LLM was asked.
    pub fallback: Option<Fallback>,
    /// The classifier's probability per label.
    pub probabilities: Vec<f32>,
}

/// The family's own keys, and the config its classifier is loaded with.
#[derive(Debug, Clone)]
pub struct SentimentConfig {
    /// Most bytes in one text.
    pub max_text_bytes: usize,
    /// The LLM, when `[llm]` is there.
    pub llm: Option<LlmSettings>,
    /// The classifier's config: every key but this family's own, platform set by
    /// [`SentimentConfig::classifier_config`].
    pub classifier: ModelConfig,
}

impl SentimentConfig {
    /// Splits `config`'s keys: `max_text_bytes` and `[llm]` are this family's, every other
    /// key goes to the classifier (the text family refuses the ones it does not know).
    pub fn parse(config: &ModelConfig) -> Result<Self, String> {
        let mut parameters = config.parameters.clone();
        let max_text_bytes = take_max_text_bytes(&mut parameters)?;
        let llm = parameters
            .remove("llm")
            .map(|v| LlmSettings::parse(&v))
            .transpose()?;
        let classifier = ModelConfig {
            platform: "bert-classifier".into(),
            model_file: None,
            parameters,
            ..config.clone()
        };
        infermesh_text::serving::TextLimits::parse(&classifier).map_err(|e| {
            format!(
                "{e} (platform sentiment reads max_text_bytes, [llm] and the text family's keys)"
            )
        })?;
        Ok(Self {
            max_text_bytes,
            llm,
            classifier,
        })
    }

    /// The classifier's config for the version in `dir`: platform `distilbert-classifier`
    /// when its `config.json` says `"model_type": "distilbert"`, else `bert-classifier`.
    pub fn classifier_config(&self, dir: &Path) -> Result<ModelConfig, String> {
        const MAX_CONFIG_BYTES: u64 = 1 << 20;
        let path = dir.join("config.json");
        let len = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if len > MAX_CONFIG_BYTES {
            return Err(format!(
                "{} is {len} bytes; a classifier's config.json is at most {MAX_CONFIG_BYTES}",
                path.display()
            ));
        }
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let platform = match json.get("model_type").and_then(Value::as_str) {
            Some("distilbert") => "distilbert-classifier",
            Some("bert") | None => "bert-classifier",
            Some(other) => {
                return Err(format!(
                    "{}: model_type {other:?} is not a BERT or DistilBERT classifier",
                    path.display()
                ));
            }
        };
        Ok(ModelConfig {
            platform: platform.into(),
            ..self.classifier.clone()
        })
    }
}

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    let keys = SentimentConfig::parse(cx.config)?;
    let classifier_config = keys.classifier_config(cx.dir)?;
    let classifier = TextServable::load(&classifier_config, cx.version, cx.dir)?;
    tracing::info!(
        model = %cx.config.name,
        version = cx.version,
        labels = classifier.labels().len(),
        engine = classifier.engine().as_str(),
        llm = keys.llm.as_ref().map_or("none", |l| l.model.as_str()),
        "sentiment model loaded"
    );
    Ok(Arc::new(SentimentServable::new(
        cx.config,
        classifier,
        keys.llm,
        keys.max_text_bytes,
    )?))
}

fn grpc(manager: Arc<ModelManager>, routes: &mut tonic::service::RoutesBuilder) {
    routes.add_service(pb::sentiment_server::SentimentServer::new(
        SentimentService { manager },
    ));
}

/// A loaded sentiment version: the classifier (the text family's servable) and, when
/// configured, the LLM it races.
#[derive(Debug)]
pub struct SentimentServable {
    name: String,
    classifier: TextServable,
    llm: Option<ZeroShotArm>,
    max_text_bytes: usize,
    input_name: String,
    description: Description,
}

impl SentimentServable {
    /// Serves `classifier` (and the LLM `llm` names) as `config` says.
    pub fn new(
        config: &ModelConfig,
        classifier: TextServable,
        llm: Option<LlmSettings>,
        max_text_bytes: usize,
    ) -> Result<Self, String> {
        if !classifier.is_classifier() {
            return Err("a sentiment version must hold a classifier, not an encoder".into());
        }
        if classifier.labels().is_empty() {
            return Err("the sentiment classifier has no labels".into());
        }
        let llm = llm
            .map(|s| ZeroShotArm::new(&config.name, s, classifier.labels()))
            .transpose()?;
        let input_name = config.input_name_or("text").to_string();
        let mut description = classifier.description().clone();
        description.backend = "infermesh-sentiment".into();
        description.inputs = vec![TensorMeta::new(&input_name, "BYTES", vec![-1])];
        description.outputs = vec![
            TensorMeta::new("label", "BYTES", vec![-1]),
            TensorMeta::new("score", "FP32", vec![-1]),
            TensorMeta::new("source", "BYTES", vec![-1]),
        ];
        description.parameters.retain(|(k, _)| k != "model_type");
        description
            .parameters
            .push(("model_type".into(), "sentiment".into()));
        description
            .parameters
            .push(("labels".into(), classifier.labels().join(",")));
        description
            .parameters
            .push(("max_text_bytes".into(), max_text_bytes.to_string()));
        if let Some(arm) = &llm {
            let s = arm.settings();
            description.parameters.extend([
                ("llm_enabled".into(), s.enabled.to_string()),
                ("llm_model".into(), s.model.clone()),
                ("llm_timeout_ms".into(), s.timeout.as_millis().to_string()),
                ("llm_max_in_flight".into(), s.max_in_flight.to_string()),
                ("llm_cache".into(), s.cache.backend().to_string()),
            ]);
        }
        Ok(Self {
            name: config.name.clone(),
            classifier,
            llm,
            max_text_bytes,
            input_name,
            description,
        })
    }

    /// The labels, as the classifier's training data named them.
    pub fn labels(&self) -> &[String] {
        self.classifier.labels()
    }

    /// The LLM settings, when the version has an `[llm]` section.
    pub fn llm(&self) -> Option<&LlmSettings> {
        self.llm.as_ref().map(ZeroShotArm::settings)
    }

    /// Refuses more texts than `max_client_batch_size`, or a text over `max_text_bytes`.
    fn check_texts(&self, texts: &[String]) -> Result<(), ServiceError> {
        check_texts(
            texts,
            self.classifier.limits().max_client_batch_size,
            self.max_text_bytes,
        )?;
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ServiceError::invalid(format!("text {i} is empty")));
        }
        Ok(())
    }

    /// One answer per text. `use_llm` overrides `[llm] enabled`; `deadline` shortens the
    /// wait for the LLM (never past `timeout_ms`). The classifier runs on every text, at the
    /// same time as the LLM calls.
    pub async fn analyze(
        &self,
        texts: Vec<String>,
        use_llm: Option<bool>,
        deadline: Option<Duration>,
    ) -> Result<Vec<SentimentAnswer>, ServiceError> {
        self.check_texts(&texts)?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let want_llm =
            use_llm.unwrap_or_else(|| self.llm.as_ref().is_some_and(|a| a.settings().enabled));
        let llm = async {
            match (&self.llm, want_llm) {
                (_, false) => vec![None; texts.len()],
                (None, true) => vec![Some(Err(Fallback::Disabled)); texts.len()],
                (Some(arm), true) => {
                    let timeout = arm.settings().timeout;
                    let wait = deadline.map_or(timeout, |d| d.min(timeout));
                    let until = tokio::time::Instant::now() + wait;
                    futures::future::join_all(texts.iter().map(|t| arm.ask(t, until)))
                        .await
                        .into_iter()
                        .map(|r| Some(r.map(|a| a.answer)))
                        .collect()
                }
            }
        };
        let (classified, llm) = tokio::join!(self.classifier.classify(texts.clone()), llm);
        let classified = classified?;
        Ok(classified
            .into_iter()
            .zip(llm)
            .map(|(c, asked)| {
                let answer = match asked {
                    Some(Ok(a)) => SentimentAnswer {
                        label: a.label,
                        score: a.score,
                        source: Source::Llm,
                        fallback: None,
                        probabilities: c.probabilities,
                    },
                    other => SentimentAnswer {
                        label: c.best,
                        score: c.probabilities.get(c.best).copied().unwrap_or(0.0),
                        source: Source::Classifier,
                        fallback: other.and_then(Result::err),
                        probabilities: c.probabilities,
                    },
                };
                metrics::counter!(SENTIMENT_ANSWERS_TOTAL, "model" => self.name.clone(), "source" => answer.source.as_str())
                    .increment(1);
                if let Some(f) = answer.fallback {
                    metrics::counter!(SENTIMENT_FALLBACKS_TOTAL, "model" => self.name.clone(), "reason" => f.as_str())
                        .increment(1);
                }
                answer
            })
            .collect())
    }
}

fn bytes_tensor(name: &str, values: impl Iterator<Item = Vec<u8>>) -> OutputTensor {
    let data: Vec<Vec<u8>> = values.collect();
    OutputTensor {
        name: name.into(),
        shape: vec![data.len() as i64],
        data: TensorData::Bytes(data),
    }
}

impl Servable for SentimentServable {
    fn description(&self) -> &Description {
        &self.description
    }

    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(async move {
            let use_llm = match request.parameters.contains_key("use_llm") {
                true => Some(request.bool_param("use_llm", false)?),
                false => None,
            };
            let texts = text_input(request.inputs, &self.input_name)?;
            let answers = self.analyze(texts, use_llm, None).await?;
            let labels = self.labels();
            Ok(vec![
                bytes_tensor(
                    "label",
                    answers.iter().map(|a| labels[a.label].as_bytes().to_vec()),
                ),
                OutputTensor {
                    name: "score".into(),
                    shape: vec![answers.len() as i64],
                    data: TensorData::Fp32(answers.iter().map(|a| a.score).collect()),
                },
                bytes_tensor(
                    "source",
                    answers
                        .iter()
                        .map(|a| a.source.as_str().as_bytes().to_vec()),
                ),
            ])
        })
    }

    fn failure(&self) -> Option<String> {
        self.classifier.failure()
    }

    fn in_flight(&self) -> usize {
        self.classifier.in_flight()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The typed `infermesh.v1.Sentiment` service.
#[derive(Debug, Clone)]
pub struct SentimentService {
    manager: Arc<ModelManager>,
}

impl SentimentService {
    /// A service over the server's models.
    pub fn new(manager: Arc<ModelManager>) -> Self {
        Self { manager }
    }

    async fn analyze(
        &self,
        req: pb::SentimentAnalyzeRequest,
        started: Instant,
    ) -> Result<pb::SentimentAnalyzeResponse, ServiceError> {
        let name = if req.model.is_empty() {
            DEFAULT_MODEL
        } else {
            req.model.as_str()
        };
        let texts = req.texts;
        let n = texts.len();
        let use_llm = req.use_llm;
        let deadline =
            (req.deadline_ms > 0).then(|| Duration::from_millis(u64::from(req.deadline_ms)));
        let span = |version: &str| tracing::info_span!("sentiment.analyze", model = %name, version = %version, texts = n);
        self.manager
            .typed(
                name,
                &req.version,
                started,
                span,
                |handle, version| async move {
                    let servable = handle.family::<SentimentServable>("sentiment")?;
                    let labels = servable.labels();
                    let results = servable
                        .analyze(texts, use_llm, deadline)
                        .await?
                        .into_iter()
                        .map(|a| pb::SentimentResult {
                            label: labels[a.label].clone(),
                            score: a.score,
                            source: a.source.as_str().into(),
                            fallback: a
                                .fallback
                                .map(|f| f.as_str().to_string())
                                .unwrap_or_default(),
                            scores: labels
                                .iter()
                                .zip(&a.probabilities)
                                .map(|(label, &score)| pb::SentimentLabelScore {
                                    label: label.clone(),
                                    score,
                                })
                                .collect(),
                        })
                        .collect();
                    Ok(pb::SentimentAnalyzeResponse {
                        model: name.to_string(),
                        version,
                        results,
                    })
                },
            )
            .await
    }
}

#[tonic::async_trait]
impl pb::sentiment_server::Sentiment for SentimentService {
    async fn analyze(
        &self,
        request: Request<pb::SentimentAnalyzeRequest>,
    ) -> Result<Response<pb::SentimentAnalyzeResponse>, Status> {
        let started = Instant::now();
        Ok(Response::new(
            SentimentService::analyze(self, request.into_inner(), started).await?,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ModelConfig {
        let text = format!("platform = \"sentiment\"\n{extra}");
        ModelConfig::from_toml("sentiment", &text).unwrap()
    }

    #[test]
    fn keys_split_between_the_family_and_the_classifier() {
        let c = SentimentConfig::parse(&config(
            "max_text_bytes = 100\nmax_batch_tokens = 512\n[llm]\nurl = \"http://127.0.0.1:9\"\ntimeout_ms = 50\n",
        ))
        .unwrap();
        assert_eq!(c.max_text_bytes, 100);
        let llm = c.llm.unwrap();
        assert!(llm.enabled);
        assert_eq!(llm.url, "http://127.0.0.1:9");
        assert_eq!(llm.model, DEFAULT_LLM_MODEL);
        assert_eq!(llm.timeout, Duration::from_millis(50));
        assert_eq!(llm.max_in_flight, DEFAULT_LLM_MAX_IN_FLIGHT);
        assert!(c.classifier.parameters.contains_key("max_batch_tokens"));
        assert!(!c.classifier.parameters.contains_key("llm"));
        let none = SentimentConfig::parse(&config("")).unwrap();
        assert!(none.llm.is_none());
        assert_eq!(none.max_text_bytes, DEFAULT_MAX_TEXT_BYTES);
    }

    #[test]
    fn bad_keys_are_refused_with_their_name() {
        for (extra, says) in [
            ("max_text_bytes = 0", "max_text_bytes"),
            ("max_text_bytes = \"big\"", "max_text_bytes"),
            ("colour = 3", "colour"),
            ("[llm]\ntimeout_ms = 0", "timeout_ms"),
            ("[llm]\nmax_in_flight = 5000", "max_in_flight"),
            ("[llm]\nmax_tokens = 0", "max_tokens"),
            ("[llm]\nmodel = \" \"", "model"),
            ("[llm]\nport = 1", "port"),
        ] {
            let e = SentimentConfig::parse(&config(extra)).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn the_classifier_platform_follows_config_json() {
        let c = SentimentConfig::parse(&config("")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for (model_type, platform) in [
            (Some("distilbert"), Some("distilbert-classifier")),
            (Some("bert"), Some("bert-classifier")),
            (None, Some("bert-classifier")),
            (Some("gpt2"), None),
        ] {
            let json = match model_type {
                Some(t) => format!("{{\"model_type\": \"{t}\"}}"),
                None => "{}".to_string(),
            };
            std::fs::write(d.join("config.json"), json).unwrap();
            let got = c.classifier_config(d).map(|m| m.platform);
            assert_eq!(got.ok().as_deref(), platform, "{model_type:?}");
        }
        std::fs::write(d.join("config.json"), "not json").unwrap();
        assert!(c.classifier_config(d).unwrap_err().contains("not JSON"));
    }
}
