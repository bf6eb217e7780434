//! What every front end shares: the model manager, and the protocol-independent infer call
//! with its metrics and span.

use std::sync::Arc;
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::{LoadedVersion, ModelManager, OutputTensor, V2Request};
use tracing::Instrument;

pub use infermesh_inference::observe::{Protocol, UNKNOWN_MODEL_LABEL, record, record_unresolved};

/// A KServe V2 inference request, decoded from REST or gRPC.
#[derive(Debug, Clone)]
pub struct InferRequest {
    /// Model name.
    pub model: String,
    /// Model version; empty or `None` for the latest ready one.
    pub version: Option<String>,
    /// Request id, echoed back.
    pub id: String,
    /// Inputs, outputs asked for and parameters: what the model's family reads.
    pub v2: V2Request,
}

/// The answer to an [`InferRequest`].
#[derive(Debug, Clone)]
pub struct InferResponse {
    /// Model that answered.
    pub model: String,
    /// Version that answered.
    pub version: String,
    /// Echoed request id.
    pub id: String,
    /// Outputs.
    pub outputs: Vec<OutputTensor>,
}

/// Shared server state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The repository manager.
    pub manager: Arc<ModelManager>,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Model the typed FraudScoring service uses when the request names none.
    pub default_fraud_model: String,
    /// Model TextEmbedding (and ResumeMatcher) use when the request names none.
    pub default_embedding_model: String,
    /// Model Categorizer uses when the request names none.
    pub default_categorizer_model: String,
    /// Model the typed Recommender service uses when a request names none.
    pub default_recommender_model: String,
    /// Whether the repository API may load and unload models (`--enable-model-control`).
    pub model_control: bool,
    /// The feature store typed requests' missing inputs are read from, if any.
    pub features: Option<Arc<crate::features::FeatureSource>>,
}

impl AppState {
    /// The version of `name` a request asks for (`version` empty: the served one). When there
    /// is none, the refusal is recorded as the request's outcome (see [`record_unresolved`]).
    pub fn resolve(
        &self,
        name: &str,
        version: &str,
        protocol: Protocol,
        started: Instant,
    ) -> Result<Arc<LoadedVersion>, ServiceError> {
        self.manager.resolve(name, version, protocol, started)
    }

    /// Refuses repository load/unload unless the server was started with
    /// `--enable-model-control` (Triton's `--model-control-mode=explicit`): without it, what
    /// is served is what the repository holds, and no client can change that.
    pub fn check_model_control(&self) -> Result<(), ServiceError> {
        if self.model_control {
            Ok(())
        } else {
            Err(ServiceError::new(
                infermesh_common::ErrorKind::Forbidden,
                "loading and unloading models through the API is off; start the server with \
                 --enable-model-control to allow it",
            ))
        }
    }

    /// Runs a V2 inference request.
    pub async fn infer(
        &self,
        req: InferRequest,
        protocol: Protocol,
    ) -> Result<InferResponse, ServiceError> {
        let started = Instant::now();
        let span = tracing::info_span!("infer", model = %req.model, version = tracing::field::Empty,
            protocol = protocol.as_str(), id = %req.id);
        let model = req.model.clone();
        let handle = self.resolve(
            &model,
            req.version.as_deref().unwrap_or(""),
            protocol,
            started,
        )?;
        span.record("version", handle.version);
        let version = handle.version.to_string();
        let res = async {
            let outputs = handle.infer_with_id(req.v2, &req.id).await?;
            Ok(InferResponse {
                model: handle.name.clone(),
                version: handle.version.to_string(),
                id: req.id,
                outputs,
            })
        }
        .instrument(span)
        .await;
        record(
            &model,
            &version,
            protocol,
            started,
            res.as_ref().map(|_| ()),
        );
        res
    }
}
