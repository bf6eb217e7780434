//! The Isolation Forest family behind the serving seam: platform `isolation-forest`
//! (`isolation_forest.json` in a version folder, see the crate doc), rows batched by rows.
//!
//! - KServe V2: one FP32 input `[N, F]` (as the tree models take it; any numeric datatype) →
//!   `score` FP32 `[N]` (scikit-learn's `score_samples`) and `is_anomaly` BOOL `[N]`
//!   (`decision_function < 0`).
//! - Typed `infermesh.v1.Anomaly/Score`: rows by position or by feature name → score,
//!   decision and verdict per row, in `f64`.
//!
//! A version folder holds `isolation_forest.json`, or `model.onnx` as skl2onnx exported a
//! scikit-learn IsolationForest ([`crate::onnx`]); `model_file` names another file.
//!
//! Config keys: none of its own besides the common ones (`max_batch_size`,
//! `max_queue_rows`, `max_queue_delay_us`, `input_name`...) and `[limits]` ([`LoadLimits`]).

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_common::metrics_names::ANOMALY_ROWS_TOTAL;
use infermesh_inference::backends::TabularBackend;
use infermesh_inference::batcher::Batcher;
use infermesh_inference::tensor::tabular_rows;
use infermesh_inference::{
    BatchUnit, Batching, BoxFuture, Description, Family, LoadContext, ModelManager, OutputTensor,
    Servable, TensorData, TensorMeta, V2Request, family_limits,
};
use infermesh_registry::ModelConfig;
use tonic::{Request, Response, Status};

use crate::{ARTIFACT_FILE, IsolationForest, LoadLimits, ONNX_FILE};

/// The generated `infermesh.v1.Anomaly` service and messages.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("infermesh.v1");
}

/// The encoded `FileDescriptorSet` of `anomaly.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/anomaly_descriptor.bin"));

/// The Isolation Forest family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "anomaly",
    platforms: &["isolation-forest"],
    load,
    grpc: Some(grpc),
    file_descriptor_set: Some(FILE_DESCRIPTOR_SET),
};

/// The model the typed API scores with when a request names none.
pub const DEFAULT_MODEL: &str = "anomaly";

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    if let Some(k) = cx.config.parameters.keys().next() {
        return Err(format!(
            "unknown key '{k}' for platform isolation-forest (it reads the common keys and [limits] only)"
        ));
    }
    let limits: LoadLimits = family_limits(cx.config)?;
    // The artifact, else a skl2onnx export (model.onnx) as it was written.
    let file = cx.config.model_file.as_deref().unwrap_or(
        if !cx.dir.join(ARTIFACT_FILE).exists() && cx.dir.join(ONNX_FILE).is_file() {
            ONNX_FILE
        } else {
            ARTIFACT_FILE
        },
    );
    let forest = IsolationForest::load(&cx.dir.join(file), &limits).map_err(|e| e.to_string())?;
    Ok(Arc::new(AnomalyServable::new(
        cx.config,
        cx.version,
        Arc::new(forest),
    )?))
}

fn grpc(manager: Arc<ModelManager>, routes: &mut tonic::service::RoutesBuilder) {
    routes.add_service(pb::anomaly_server::AnomalyServer::new(AnomalyService {
        manager,
    }));
}

/// A loaded Isolation Forest version: the forest and its row batcher.
#[derive(Debug)]
pub struct AnomalyServable {
    forest: Arc<IsolationForest>,
    batcher: Batcher<TabularBackend>,
    input_name: String,
    description: Description,
    /// The model's name (the metrics' label).
    model: String,
}

impl AnomalyServable {
    /// Serves `forest` as `config` says (loaders and tests).
    pub fn new(
        config: &ModelConfig,
        version: u64,
        forest: Arc<IsolationForest>,
    ) -> Result<Self, String> {
        let batcher = Batcher::for_rows(forest.clone(), config, version)?;
        let input_name = config.input_name_or("input__0").to_string();
        let n = forest.n_features();
        let description = Description {
            backend: "infermesh-anomaly".into(),
            format: crate::FORMAT.into(),
            inputs: vec![TensorMeta::new(&input_name, "FP32", vec![-1, n as i64])],
            outputs: vec![
                TensorMeta::new("score", "FP32", vec![-1]),
                TensorMeta::new("is_anomaly", "BOOL", vec![-1]),
            ],
            max_batch_size: config.max_batch_size,
            batching: Batching {
                unit: BatchUnit::Rows,
                max_batch_cost: config.max_batch_size,
                max_queue_cost: config.max_queue_rows,
            },
            width: n,
            parameters: vec![
                ("model_type".into(), crate::FORMAT.into()),
                ("trees".into(), forest.n_trees().to_string()),
                ("offset".into(), forest.offset().to_string()),
                ("feature_names".into(), forest.names().join(",")),
            ],
        };
        // Both verdicts are exported from the start, so the anomaly rate is 0, not absent,
        // before the first anomaly.
        for verdict in ["anomaly", "normal"] {
            metrics::counter!(ANOMALY_ROWS_TOTAL, "model" => config.name.clone(), "verdict" => verdict)
                .increment(0);
        }
        Ok(Self {
            forest,
            batcher,
            input_name,
            description,
            model: config.name.clone(),
        })
    }

    /// The forest.
    pub fn forest(&self) -> &IsolationForest {
        &self.forest
    }

    /// `(score_samples, decision_function)` per row of `features` (row-major), through the
    /// batcher.
    pub async fn score(&self, features: Vec<f32>) -> Result<Vec<(f32, f32)>, ServiceError> {
        let out = self
            .batcher
            .predict_rows(features, self.forest.n_features())
            .await?;
        let scores: Vec<(f32, f32)> = out.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let anomalies = scores.iter().filter(|s| s.1 < 0.0).count();
        let count = |verdict: &'static str, n: usize| {
            metrics::counter!(ANOMALY_ROWS_TOTAL, "model" => self.model.clone(), "verdict" => verdict)
                .increment(n as u64);
        };
        count("anomaly", anomalies);
        count("normal", scores.len() - anomalies);
        Ok(scores)
    }

    fn check_rows(&self, rows: usize) -> Result<(), ServiceError> {
        if rows > self.description.max_batch_size {
            return Err(ServiceError::invalid(format!(
                "{rows} rows in one request; this model takes at most {} (max_batch_size)",
                self.description.max_batch_size
            )));
        }
        Ok(())
    }
}

impl Servable for AnomalyServable {
    fn description(&self) -> &Description {
        &self.description
    }

    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(async move {
            let nf = self.forest.n_features();
            let rows = tabular_rows(request.inputs, &self.input_name, nf)?;
            let n = rows.len() / nf;
            self.check_rows(n)?;
            let scores = self.score(rows).await?;
            Ok(vec![
                OutputTensor {
                    name: "score".into(),
                    shape: vec![n as i64],
                    data: TensorData::Fp32(scores.iter().map(|s| s.0).collect()),
                },
                OutputTensor {
                    name: "is_anomaly".into(),
                    shape: vec![n as i64],
                    data: TensorData::Bool(scores.iter().map(|s| s.1 < 0.0).collect()),
                },
            ])
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

/// The typed `infermesh.v1.Anomaly` service.
#[derive(Debug, Clone)]
pub struct AnomalyService {
    manager: Arc<ModelManager>,
}

impl AnomalyService {
    /// A service over the server's models.
    pub fn new(manager: Arc<ModelManager>) -> Self {
        Self { manager }
    }

    async fn score(
        &self,
        req: pb::AnomalyScoreRequest,
        started: Instant,
    ) -> Result<pb::AnomalyScoreResponse, ServiceError> {
        let name = if req.model.is_empty() {
            DEFAULT_MODEL
        } else {
            req.model.as_str()
        };
        let rows = req.rows;
        let n = rows.len();
        let span = |version: &str| tracing::info_span!("anomaly.score", model = %name, version = %version, rows = n);
        self.manager
            .typed(
                name,
                &req.version,
                started,
                span,
                |handle, version| async move {
                    let servable = handle.family::<AnomalyServable>("isolation-forest")?;
                    servable.check_rows(rows.len())?;
                    let forest = servable.forest();
                    let nf = forest.n_features();
                    let mut features = Vec::with_capacity(rows.len() * nf);
                    for (r, row) in rows.into_iter().enumerate() {
                        features.extend(row_values(forest, r, row)?);
                    }
                    let results = servable
                        .score(features)
                        .await?
                        .into_iter()
                        .map(|(score, decision)| pb::AnomalyResult {
                            score: f64::from(score),
                            decision: f64::from(decision),
                            is_anomaly: decision < 0.0,
                        })
                        .collect();
                    Ok(pb::AnomalyScoreResponse {
                        model: name.to_string(),
                        version,
                        results,
                    })
                },
            )
            .await
    }
}

/// A row's values in the model's column order: `values` as given, or every feature by name.
fn row_values(
    forest: &IsolationForest,
    r: usize,
    row: pb::AnomalyRow,
) -> Result<Vec<f32>, ServiceError> {
    let nf = forest.n_features();
    match (row.values.is_empty(), row.features.is_empty()) {
        (false, true) if row.values.len() == nf => Ok(row.values),
        (false, true) => Err(ServiceError::invalid(format!(
            "row {r} has {} values; the model takes {nf}",
            row.values.len()
        ))),
        (true, false) => {
            if let Some(unknown) = row.features.keys().find(|k| !forest.names().contains(k)) {
                return Err(ServiceError::invalid(format!(
                    "row {r}: unknown feature '{unknown}'"
                )));
            }
            forest
                .names()
                .iter()
                .map(|n| {
                    row.features.get(n).copied().ok_or_else(|| {
                        ServiceError::invalid(format!("row {r}: feature '{n}' is missing"))
                    })
                })
                .collect()
        }
        _ => Err(ServiceError::invalid(format!(
            "row {r} must give either values or features (by name), not both or neither"
        ))),
    }
}

#[tonic::async_trait]
impl pb::anomaly_server::Anomaly for AnomalyService {
    async fn score(
        &self,
        request: Request<pb::AnomalyScoreRequest>,
    ) -> Result<Response<pb::AnomalyScoreResponse>, Status> {
        let started = Instant::now();
        Ok(Response::new(
            AnomalyService::score(self, request.into_inner(), started).await?,
        ))
    }
}
