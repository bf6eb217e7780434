//! The topic-model family behind the serving seam: platform `topics`, texts embedded by the
//! version's own sentence encoder, then assigned to the topics it was fitted with.
//!
//! A version folder holds the topic artifact ([`crate::artifact`]: `topics.json` +
//! `topics.safetensors`) and `embedder/`, the sentence encoder the training embedded with
//! (all-MiniLM-L6-v2's layout: `config.json`, `model.safetensors`, `tokenizer.json`,
//! `1_Pooling/`), as `infermesh train topics` writes it. The encoder is loaded by the text
//! family ([`infermesh_text::serving::TextServable::load`], platform `bert-embedding`), so it
//! runs on the same engines (`engine = "auto"`: OpenVINO bf16, ONNX Runtime or candle) with
//! the same token-budget batcher; its unit-length embeddings then go through UMAP `transform`
//! and HDBSCAN `approximate_predict` ([`TopicModel::transform`]) on a second batcher's thread.
//!
//! - KServe V2: BYTES `text` `[N]` (or `[N, 1]`) → `topic` INT64 `[N]` (`-1` for an outlier)
//!   and `probability` FP32 `[N]`.
//! - Typed `infermesh.v1.Topics`: `Assign` (texts → topic, probability, label, keywords per
//!   text) and `List` (every topic: id, label, size, keywords with weights); model `topics`
//!   when a request names none.
//!
//! Each request is transformed on its own: UMAP's transform optimises a request's rows with
//! one seeded generator, so batching requests together would make an answer depend on what
//! else was queued. The same texts in one request always get the same answer.
//!
//! Config keys (`config.toml`), besides the common ones:
//!
//! ```toml
//! platform = "topics"
//! max_text_bytes = 16384           # bytes per text (<= 16,777,216); longer texts are refused
//! # the text family's keys, for the encoder (see infermesh_text::serving):
//! max_client_batch_size = 512      # texts per request
//! engine = "auto"                  # or "candle", "onnxruntime", "openvino"
//! # max_batch_tokens, max_batch_requests, max_queue_tokens, intra_op_threads, quantize, precision
//! [limits]                         # LoadLimits of the topic artifact; max_file_bytes also bounds
//!                                  # each file of embedder/
//! ```
//!
//! `max_batch_size` and `max_queue_rows` (common keys) size the transform's batcher.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::batcher::{Backend, BatchConfig, Batcher};
use infermesh_inference::tensor::text_input;
use infermesh_inference::{
    BatchUnit, Batching, BoxFuture, Description, Family, LoadContext, ModelManager, OutputTensor,
    Servable, TensorData, TensorMeta, V2Request, family_limits,
};
use infermesh_registry::ModelConfig;
use infermesh_text::serving::take_max_text_bytes;
pub use infermesh_text::serving::{
    DEFAULT_MAX_TEXT_BYTES, MAX_TEXT_BYTES_LIMIT, TextServable, check_texts,
};
use tonic::{Request, Response, Status};

use crate::{LoadLimits, Matrix, TopicInfo, TopicModel};

/// The generated `infermesh.v1.Topics` service and messages.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("infermesh.v1");
}

/// The encoded `FileDescriptorSet` of `topics.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/topics_descriptor.bin"));

/// The topic-model family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "topics",
    platforms: &["topics"],
    load,
    grpc: Some(grpc),
    file_descriptor_set: Some(FILE_DESCRIPTOR_SET),
};

/// The model the typed API uses when a request names none.
pub const DEFAULT_MODEL: &str = "topics";

/// The sub-folder of a version holding its sentence encoder.
pub const EMBEDDER_DIR: &str = "embedder";

/// The family's own keys, and the config its encoder is loaded with.
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    /// Most bytes in one text.
    pub max_text_bytes: usize,
    /// The encoder's config: platform `bert-embedding`, every key of the model's config but
    /// this family's own, and `[limits]` `max_file_bytes` when set.
    pub encoder: ModelConfig,
}

impl TopicsConfig {
    /// Splits `config`'s keys: `max_text_bytes` is this family's, every other one goes to the
    /// encoder's config (the text family refuses the ones it does not know).
    pub fn parse(config: &ModelConfig) -> Result<Self, String> {
        let mut parameters = config.parameters.clone();
        let max_text_bytes = take_max_text_bytes(&mut parameters)?;
        let mut limits = toml::Table::new();
        if let Some(v) = config.limits.get("max_file_bytes") {
            limits.insert("max_file_bytes".into(), v.clone());
        }
        let encoder = ModelConfig {
            platform: "bert-embedding".into(),
            model_file: None,
            input_name: None,
            output_name: None,
            parameters,
            limits,
            ..config.clone()
        };
        // The encoder's keys are checked here, so a bad one names this family too.
        infermesh_text::serving::TextLimits::parse(&encoder).map_err(|e| {
            format!("{e} (platform topics reads max_text_bytes and the text family's keys)")
        })?;
        Ok(Self {
            max_text_bytes,
            encoder,
        })
    }
}

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    let keys = TopicsConfig::parse(cx.config)?;
    let limits: LoadLimits = family_limits(cx.config)?;
    let model = TopicModel::load(cx.dir, &limits).map_err(|e| e.to_string())?;
    let embedder = cx.dir.join(EMBEDDER_DIR);
    if !embedder.is_dir() {
        return Err(format!(
            "{} is missing: a topics version holds its sentence encoder in {EMBEDDER_DIR}/",
            embedder.display()
        ));
    }
    let encoder = TextServable::load(&keys.encoder, cx.version, &embedder)
        .map_err(|e| format!("{EMBEDDER_DIR}/: {e}"))?;
    tracing::info!(
        model = %cx.config.name,
        version = cx.version,
        topics = model.n_topics(),
        engine = encoder.engine().as_str(),
        "topic model loaded"
    );
    Ok(Arc::new(TopicsServable::new(
        cx.config,
        cx.version,
        Arc::new(model),
        encoder,
        keys.max_text_bytes,
    )?))
}

fn grpc(manager: Arc<ModelManager>, routes: &mut tonic::service::RoutesBuilder) {
    routes.add_service(pb::topics_server::TopicsServer::new(TopicsService {
        manager,
    }));
}

/// UMAP `transform` + HDBSCAN `approximate_predict` of embedding rows, on the batcher's
/// thread. A request is row-major embeddings; the reply `(topic, probability)` per row. Every
/// request of a batch is transformed on its own (see the module doc).
#[derive(Debug)]
pub struct TransformBackend {
    model: Arc<TopicModel>,
}

impl TransformBackend {
    /// Wraps `model`.
    pub fn new(model: Arc<TopicModel>) -> Self {
        Self { model }
    }

    /// Topics and probabilities of row-major `embeddings` (whole rows of the model's input
    /// width).
    pub fn transform(&self, embeddings: &[f32]) -> Result<Vec<(i64, f32)>, ServiceError> {
        let dim = self.model.umap().input_dim().max(1);
        let m = Matrix::new(embeddings.len() / dim, dim, embeddings.to_vec())
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        let (topics, probabilities) = self
            .model
            .transform::<&str>(None, &m)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        Ok(topics.into_iter().zip(probabilities).collect())
    }
}

impl Backend for TransformBackend {
    type Request = Vec<f32>;
    type Reply = Vec<(i64, f32)>;

    fn run(&self, batch: &[&Vec<f32>]) -> Result<Vec<Vec<(i64, f32)>>, ServiceError> {
        batch.iter().map(|r| self.transform(r)).collect()
    }
}

/// A loaded topic-model version: the topic model, its encoder (the text family's servable)
/// and the transform's batcher.
#[derive(Debug)]
pub struct TopicsServable {
    model: Arc<TopicModel>,
    encoder: TextServable,
    transform: Batcher<TransformBackend>,
    /// Topic id -> its index in [`TopicModel::topics`].
    index: HashMap<i64, usize>,
    max_text_bytes: usize,
    input_name: String,
    description: Description,
}

impl TopicsServable {
    /// Serves `model` with `encoder` as `config` says (loaders and tests); the encoder's
    /// width must be the model's input width.
    pub fn new(
        config: &ModelConfig,
        version: u64,
        model: Arc<TopicModel>,
        encoder: TextServable,
        max_text_bytes: usize,
    ) -> Result<Self, String> {
        let dim = model.umap().input_dim();
        if encoder.output_width() != dim {
            return Err(format!(
                "{EMBEDDER_DIR}/ gives {}-d embeddings but the topic model was fitted on {dim}-d ones",
                encoder.output_width()
            ));
        }
        if encoder.is_classifier() {
            return Err(format!(
                "{EMBEDDER_DIR}/ must be a sentence encoder, not a classifier"
            ));
        }
        let transform = Batcher::start(
            Arc::new(TransformBackend::new(model.clone())),
            BatchConfig {
                model: config.name.clone(),
                version: version.to_string(),
                max_batch_cost: config.max_batch_size,
                max_batch_items: config.max_batch_size,
                max_queue_delay: config.max_queue_delay,
                max_queue_cost: config.max_queue_rows,
                // A transform takes milliseconds (kNN over the training rows, then SGD):
                // never on an async worker.
                inline_max_cost: 0,
            },
        )
        .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        let index = model
            .topics()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i))
            .collect();
        let limits = encoder.limits();
        let input_name = config.input_name_or("text").to_string();
        let p = model.params();
        let description = Description {
            backend: "infermesh-topics".into(),
            format: crate::artifact::FORMAT.into(),
            inputs: vec![TensorMeta::new(&input_name, "BYTES", vec![-1])],
            outputs: vec![
                TensorMeta::new("topic", "INT64", vec![-1]),
                TensorMeta::new("probability", "FP32", vec![-1]),
            ],
            max_batch_size: limits.max_client_batch_size,
            batching: Batching {
                unit: BatchUnit::Tokens,
                max_batch_cost: limits.max_batch_tokens,
                max_queue_cost: limits.max_queue_tokens,
            },
            width: model.n_topics(),
            parameters: vec![
                ("model_type".into(), "topics".into()),
                ("engine".into(), encoder.engine().as_str().to_string()),
                ("topics".into(), model.n_topics().to_string()),
                ("embedding_dim".into(), dim.to_string()),
                ("n_components".into(), p.umap.n_components.to_string()),
                (
                    "min_topic_size".into(),
                    p.hdbscan.min_cluster_size.to_string(),
                ),
                ("max_text_bytes".into(), max_text_bytes.to_string()),
                (
                    "max_client_batch_size".into(),
                    limits.max_client_batch_size.to_string(),
                ),
                ("max_len".into(), encoder.max_len().to_string()),
            ],
        };
        Ok(Self {
            model,
            encoder,
            transform,
            index,
            max_text_bytes,
            input_name,
            description,
        })
    }

    /// The topic model.
    pub fn model(&self) -> &TopicModel {
        &self.model
    }

    /// The topic `id` (`-1`: the outlier topic, present when the training data had
    /// outliers).
    pub fn topic(&self, id: i64) -> Option<&TopicInfo> {
        self.index.get(&id).map(|&i| &self.model.topics()[i])
    }

    /// `(topic, probability)` per text: bounded by `max_client_batch_size` and
    /// `max_text_bytes`, embedded through the encoder's batcher, transformed on the topic
    /// batcher's thread.
    pub async fn assign(&self, texts: Vec<String>) -> Result<Vec<(i64, f32)>, ServiceError> {
        check_texts(
            &texts,
            self.encoder.limits().max_client_batch_size,
            self.max_text_bytes,
        )?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.encoder.run(texts).await?;
        let n = rows.len();
        let embeddings = rows.concat();
        self.transform.submit(embeddings, n.max(1), n).await
    }
}

impl Servable for TopicsServable {
    fn description(&self) -> &Description {
        &self.description
    }

    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(async move {
            let texts = text_input(request.inputs, &self.input_name)?;
            let n = texts.len() as i64;
            let assigned = self.assign(texts).await?;
            Ok(vec![
                OutputTensor {
                    name: "topic".into(),
                    shape: vec![n],
                    data: TensorData::Int64(assigned.iter().map(|a| a.0).collect()),
                },
                OutputTensor {
                    name: "probability".into(),
                    shape: vec![n],
                    data: TensorData::Fp32(assigned.iter().map(|a| a.1).collect()),
                },
            ])
        })
    }

    fn failure(&self) -> Option<String> {
        self.encoder
            .failure()
            .or_else(|| self.transform.failure().map(str::to_string))
    }

    /// Tokens in the encoder plus rows in the transform: work admitted and not answered.
    fn in_flight(&self) -> usize {
        self.encoder.in_flight() + self.transform.in_flight()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The typed `infermesh.v1.Topics` service.
#[derive(Debug, Clone)]
pub struct TopicsService {
    manager: Arc<ModelManager>,
}

fn model_name(requested: &str) -> &str {
    if requested.is_empty() {
        DEFAULT_MODEL
    } else {
        requested
    }
}

impl TopicsService {
    /// A service over the server's models.
    pub fn new(manager: Arc<ModelManager>) -> Self {
        Self { manager }
    }

    async fn assign(
        &self,
        req: pb::TopicsAssignRequest,
        started: Instant,
    ) -> Result<pb::TopicsAssignResponse, ServiceError> {
        let name = model_name(&req.model);
        let texts = req.texts;
        let n = texts.len();
        let span = |version: &str| tracing::info_span!("topics.assign", model = %name, version = %version, texts = n);
        self.manager
            .typed(
                name,
                &req.version,
                started,
                span,
                |handle, version| async move {
                    let servable = handle.family::<TopicsServable>("topics")?;
                    let assignments = servable
                        .assign(texts)
                        .await?
                        .into_iter()
                        .map(|(topic, probability)| {
                            let info = servable.topic(topic);
                            pb::TopicAssignment {
                                topic,
                                probability,
                                label: info.map_or_else(|| topic.to_string(), |t| t.label.clone()),
                                keywords: info
                                    .map(|t| t.keywords.iter().map(|(w, _)| w.clone()).collect())
                                    .unwrap_or_default(),
                            }
                        })
                        .collect();
                    Ok(pb::TopicsAssignResponse {
                        model: name.to_string(),
                        version,
                        assignments,
                    })
                },
            )
            .await
    }

    async fn list(
        &self,
        req: pb::TopicsListRequest,
        started: Instant,
    ) -> Result<pb::TopicsListResponse, ServiceError> {
        let name = model_name(&req.model);
        let span =
            |version: &str| tracing::info_span!("topics.list", model = %name, version = %version);
        self.manager
            .typed(
                name,
                &req.version,
                started,
                span,
                |handle, version| async move {
                    let servable = handle.family::<TopicsServable>("topics")?;
                    Ok(pb::TopicsListResponse {
                        model: name.to_string(),
                        version,
                        topics: servable.model().topics().iter().map(summary).collect(),
                    })
                },
            )
            .await
    }
}

fn summary(t: &TopicInfo) -> pb::TopicSummary {
    pb::TopicSummary {
        id: t.id,
        label: t.label.clone(),
        size: t.size as u64,
        keywords: t
            .keywords
            .iter()
            .map(|(word, weight)| pb::TopicKeyword {
                word: word.clone(),
                weight: *weight,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::topics_server::Topics for TopicsService {
    async fn assign(
        &self,
        request: Request<pb::TopicsAssignRequest>,
    ) -> Result<Response<pb::TopicsAssignResponse>, Status> {
        let started = Instant::now();
        Ok(Response::new(
            TopicsService::assign(self, request.into_inner(), started).await?,
        ))
    }

    async fn list(
        &self,
        request: Request<pb::TopicsListRequest>,
    ) -> Result<Response<pb::TopicsListResponse>, Status> {
        let started = Instant::now();
        Ok(Response::new(
            TopicsService::list(self, request.into_inner(), started).await?,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{HdbscanParams, TopicParams, UmapParams};
    use infermesh_common::ErrorKind;

    fn cfg(text: &str) -> ModelConfig {
        ModelConfig::from_toml("topics", text).unwrap()
    }

    #[test]
    fn own_keys_are_split_from_the_encoders_and_bounded() {
        let c = TopicsConfig::parse(&cfg("platform = \"topics\"")).unwrap();
        assert_eq!(c.max_text_bytes, DEFAULT_MAX_TEXT_BYTES);
        assert_eq!(c.encoder.platform, "bert-embedding");
        assert!(c.encoder.parameters.is_empty());

        let c = TopicsConfig::parse(&cfg(
            "platform = \"topics\"\nmax_text_bytes = 100\nengine = \"candle\"\nmax_client_batch_size = 4\n[limits]\nmax_file_bytes = 1000\nmax_topics = 10",
        ))
        .unwrap();
        assert_eq!(c.max_text_bytes, 100);
        assert!(!c.encoder.parameters.contains_key("max_text_bytes"));
        assert_eq!(c.encoder.parameters["engine"].as_str(), Some("candle"));
        // The encoder sees max_file_bytes only: the topic limits are not the text family's.
        assert_eq!(c.encoder.limits.len(), 1);
        let l = infermesh_text::serving::TextLimits::parse(&c.encoder).unwrap();
        assert_eq!(l.max_client_batch_size, 4);

        for (bad, why) in [
            ("max_text_bytes = 0", "max_text_bytes"),
            ("max_text_bytes = \"big\"", "max_text_bytes"),
            ("max_text_bytes = 16777217", "max_text_bytes"),
            ("threshold = 0.5", "threshold"),
            ("engine = \"tensorrt\"", "tensorrt"),
        ] {
            let e =
                TopicsConfig::parse(&cfg(&format!("platform = \"topics\"\n{bad}"))).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn texts_past_the_count_or_byte_limit_are_invalid_input_naming_the_key() {
        let texts = |n: usize, len: usize| vec!["x".repeat(len); n];
        assert!(check_texts(&texts(3, 10), 3, 10).is_ok());
        let e = check_texts(&texts(4, 1), 3, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("max_client_batch_size"), "{}", e.message);
        let mut t = texts(2, 10);
        t.push("é".repeat(6)); // 12 bytes, 6 characters: bytes are what is bounded.
        let e = check_texts(&t, 3, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(
            e.message.contains("text 2 is 12 bytes") && e.message.contains("max_text_bytes"),
            "{}",
            e.message
        );
    }

    /// Two blobs of 20 rows in 8 dimensions (orthogonal centres, a little noise from a
    /// fixed generator), plus the params that find them.
    fn fitted() -> (TopicModel, Matrix) {
        let mut state = 7u64;
        let mut noise = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        };
        let mut rows = Vec::new();
        let mut texts = Vec::new();
        for i in 0..40 {
            let blob = i % 2;
            let mut r: Vec<f32> = (0..8).map(|_| noise()).collect();
            r[blob * 4] += 1.0;
            rows.push(r);
            texts.push(if blob == 0 {
                "football goal league match"
            } else {
                "oven flour butter cake"
            });
        }
        let m = Matrix::from_rows(&rows).unwrap();
        // Ten neighbours, so that each blob's neighbour graph is connected (with five, a
        // 20-row blob can fall apart into pieces that HDBSCAN then keeps apart).
        let params = TopicParams {
            umap: UmapParams {
                n_neighbors: 10,
                n_components: 2,
                ..UmapParams::default()
            },
            hdbscan: HdbscanParams {
                min_cluster_size: 5,
                ..HdbscanParams::default()
            },
            ..TopicParams::default()
        };
        (TopicModel::fit(&texts, &m, &params).unwrap(), m)
    }

    #[test]
    fn the_transform_backend_answers_each_request_as_if_alone() {
        let (model, m) = fitted();
        assert_eq!(model.n_topics(), 2, "{:?}", model.topics());
        let model = Arc::new(model);
        let backend = TransformBackend::new(model.clone());
        let a: Vec<f32> = (0..4).flat_map(|i| m.row(i).to_vec()).collect();
        let b: Vec<f32> = (10..13).flat_map(|i| m.row(i).to_vec()).collect();
        let alone = backend.run(&[&a]).unwrap();
        let together = backend.run(&[&b, &a]).unwrap();
        assert_eq!(alone[0], together[1]);
        assert_eq!(together[0].len(), 3);
        // The same answer as the model's own transform of those rows.
        let direct = model
            .transform::<&str>(None, &Matrix::new(4, 8, a.clone()).unwrap())
            .unwrap();
        let got: (Vec<i64>, Vec<f32>) = alone[0].iter().copied().unzip();
        assert_eq!(got, direct);
        // Rows of the two blobs land in two different topics.
        assert_ne!(alone[0][0].0, alone[0][1].0);
        assert!(alone[0].iter().all(|&(t, _)| t >= 0));
        // A row that is not finite is the caller's error.
        let bad = vec![f32::NAN; 8];
        assert_eq!(
            backend.run(&[&bad]).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_version_without_its_embedder_or_with_a_corrupt_artifact_is_refused() {
        let (model, _) = fitted();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let config = cfg("platform = \"topics\"");
        let cx = LoadContext {
            config: &config,
            version: 1,
            dir: dir.path(),
        };
        let e = load(&cx).unwrap_err();
        assert!(e.contains("embedder") && e.contains("missing"), "{e}");
        // An embedder folder without a model: the encoder's loader names the file.
        std::fs::create_dir(dir.path().join(EMBEDDER_DIR)).unwrap();
        let e = load(&cx).unwrap_err();
        assert!(e.starts_with("embedder/:"), "{e}");
        // A truncated topics.safetensors is refused before the encoder is read.
        let t = dir.path().join(crate::artifact::TENSORS_FILE);
        let bytes = std::fs::read(&t).unwrap();
        std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&cx).unwrap_err();
        assert!(e.contains("invalid topic model artifact"), "{e}");
        // Load limits come from [limits].
        model.save(dir.path()).unwrap();
        let small = cfg("platform = \"topics\"\n[limits]\nmax_topics = 1");
        let e = load(&LoadContext {
            config: &small,
            ..cx
        })
        .unwrap_err();
        assert!(e.contains("max_topics"), "{e}");
    }
}
