//! What every front end shares: the model manager, and the protocol-independent infer call
//! with its metrics and span.

use std::sync::Arc;
use std::time::Instant;

use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_inference::{EmbedOptions, LoadedVersion, ModelManager, OutputTensor, TensorData};
use tracing::Instrument;

use crate::tensor::{InputTensor, tabular_rows, text_input};

/// A KServe V2 inference request, decoded from REST or gRPC.
#[derive(Debug, Clone)]
pub struct InferRequest {
    /// Model name.
    pub model: String,
    /// Model version; empty or `None` for the latest ready one.
    pub version: Option<String>,
    /// Request id, echoed back.
    pub id: String,
    /// Inputs.
    pub inputs: Vec<InputTensor>,
    /// Names of the outputs asked for (empty: all).
    pub outputs: Vec<String>,
    /// Text models' options from the request's `parameters` (`normalize`, `truncate`).
    pub text_options: EmbedOptions,
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
}

/// Which front end a request came through (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// KServe V2 REST.
    Rest,
    /// KServe V2 gRPC.
    Grpc,
    /// infermesh.v1 typed gRPC.
    Typed,
    /// Hugging Face TEI's HTTP routes (`/embed`, `/predict`).
    Tei,
    /// The OpenAI-compatible `/v1/embeddings`.
    OpenAi,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::Typed => "typed",
            Protocol::Tei => "tei",
            Protocol::OpenAi => "openai",
        }
    }
}

/// The V2 request parameters text models read, `normalize` and `truncate` (booleans, both
/// true when absent; the other parameters are not theirs). `get` gives a parameter's boolean
/// value, or `Err` with its type when it is not a boolean.
pub fn text_options(
    get: impl Fn(&str) -> Option<Result<bool, &'static str>>,
) -> Result<EmbedOptions, ServiceError> {
    let read = |key: &str| match get(key) {
        None => Ok(true),
        Some(Ok(b)) => Ok(b),
        Some(Err(kind)) => Err(ServiceError::invalid(format!(
            "parameter '{key}' must be a boolean, not {kind}"
        ))),
    };
    Ok(EmbedOptions {
        normalize: read("normalize")?,
        truncate: read("truncate")?,
        truncate_left: false,
    })
}

/// Records a finished request in the request counter and latency histogram.
pub fn record(
    model: &str,
    version: &str,
    protocol: Protocol,
    started: Instant,
    result: Result<(), &ServiceError>,
) {
    let outcome = match result {
        Ok(()) => "ok",
        Err(e) => e.kind.as_str(),
    };
    metrics::counter!(m::INFER_REQUESTS_TOTAL,
        "model" => model.to_string(), "version" => version.to_string(),
        "protocol" => protocol.as_str(), "outcome" => outcome)
    .increment(1);
    metrics::histogram!(m::INFER_REQUEST_SECONDS,
        "model" => model.to_string(), "version" => version.to_string(),
        "protocol" => protocol.as_str())
    .record(started.elapsed().as_secs_f64());
}

/// Records a request refused before a model version was resolved (unknown model, version
/// not ready...). The model label is the model's name only when the repository knows it,
/// else `unknown`, and the version label is empty: names a client makes up never become
/// label values (each would be a new time series, kept for the life of the process).
pub fn record_unresolved(
    manager: &ModelManager,
    model: &str,
    protocol: Protocol,
    started: Instant,
    err: &ServiceError,
) {
    let label = if manager.model(model).is_ok() {
        model
    } else {
        UNKNOWN_MODEL_LABEL
    };
    record(label, "", protocol, started, Err(err));
}

/// The `model` label of requests for models the repository does not know.
pub const UNKNOWN_MODEL_LABEL: &str = "unknown";

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
        self.manager
            .get(name, (!version.is_empty()).then_some(version))
            .inspect_err(|e| record_unresolved(&self.manager, name, protocol, started, e))
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
        let res = run_infer(&handle, req).instrument(span).await;
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

async fn run_infer(
    handle: &Arc<LoadedVersion>,
    req: InferRequest,
) -> Result<InferResponse, ServiceError> {
    let cfg = &handle.config;
    if let Ok(recs) = handle.recs() {
        let outputs = recs_infer(recs, req.inputs, cfg).await?;
        let outputs = filter_outputs(outputs, &req.outputs)?;
        return Ok(InferResponse {
            model: handle.name.clone(),
            version: handle.version.to_string(),
            id: req.id,
            outputs,
        });
    }
    let outputs = match handle.text() {
        Ok(text) => {
            let known = text.output_meta(&cfg.output_name);
            for o in &req.outputs {
                if !known.iter().any(|(name, _, _)| name == o) {
                    return Err(ServiceError::invalid(format!(
                        "unknown output '{o}': the model's outputs are {}",
                        known
                            .iter()
                            .map(|(n, _, _)| format!("'{n}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            let texts = text_input(req.inputs, &cfg.input_name)?;
            text.infer(texts, req.text_options, &cfg.output_name, &req.outputs)
                .await?
        }
        Err(_) => {
            let tab = handle.tabular()?;
            for o in &req.outputs {
                if o != &cfg.output_name {
                    return Err(ServiceError::invalid(format!(
                        "unknown output '{o}': the model's output is '{}'",
                        cfg.output_name
                    )));
                }
            }
            let rows = tabular_rows(req.inputs, &cfg.input_name, tab.num_features())?;
            vec![tab.infer(rows).await?]
        }
    };
    Ok(InferResponse {
        model: handle.name.clone(),
        version: handle.version.to_string(),
        id: req.id,
        outputs,
    })
}

/// Default `k` of a V2 recommender request without a `k` input.
pub const DEFAULT_RECS_K: usize = 10;

/// V2 for recommenders: BYTES user ids in; BYTES `item_id` and FP32 `score`, both
/// `[n, k]`, out (training items excluded). A user with fewer than k candidates gets
/// empty ids and zero scores in the remaining cells.
async fn recs_infer(
    recs: &infermesh_inference::RecsVersion,
    inputs: Vec<InputTensor>,
    cfg: &infermesh_registry::ModelConfig,
) -> Result<Vec<OutputTensor>, ServiceError> {
    let (users, k) = crate::tensor::recs_input(inputs, &cfg.input_name)?;
    if users.len() > cfg.max_batch_size {
        return Err(ServiceError::invalid(format!(
            "{} users in one request; this model takes at most {} (max_batch_size)",
            users.len(),
            cfg.max_batch_size
        )));
    }
    let k = k.unwrap_or(DEFAULT_RECS_K);
    // `k` sizes the answer (users x k cells): check it against the model's bound before
    // anything is allocated from it.
    let max_k = cfg.recommender.max_k;
    if k > max_k {
        return Err(ServiceError::invalid(format!(
            "k = {k} is more than this model's max_k ({max_k})"
        )));
    }
    let mut ids = Vec::with_capacity(users.len() * k);
    let mut scores = Vec::with_capacity(users.len() * k);
    for user_id in &users {
        let a = recs
            .recommend(infermesh_inference::RecsRequest {
                user_id: user_id.clone(),
                k,
                exclude_seen: true,
                ..Default::default()
            })
            .await?;
        let got = a.items.len();
        for (id, s) in a.items {
            ids.push(id.into_bytes());
            scores.push(s);
        }
        ids.extend(std::iter::repeat_n(Vec::new(), k - got));
        scores.extend(std::iter::repeat_n(0.0, k - got));
    }
    let shape = vec![users.len() as i64, k as i64];
    Ok(vec![
        OutputTensor {
            name: cfg.output_name.clone(),
            shape: shape.clone(),
            data: TensorData::Bytes(ids),
        },
        OutputTensor {
            name: "score".into(),
            shape,
            data: TensorData::Fp32(scores),
        },
    ])
}

/// Keeps the outputs named in `wanted` (all when empty); an unknown name is an error.
fn filter_outputs(
    mut outputs: Vec<OutputTensor>,
    wanted: &[String],
) -> Result<Vec<OutputTensor>, ServiceError> {
    if let Some(o) = wanted
        .iter()
        .find(|w| !outputs.iter().any(|x| &x.name == *w))
    {
        return Err(ServiceError::invalid(format!(
            "unknown output '{o}': the model's outputs are {}",
            outputs
                .iter()
                .map(|x| format!("'{}'", x.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !wanted.is_empty() {
        outputs.retain(|o| wanted.contains(&o.name));
    }
    Ok(outputs)
}
