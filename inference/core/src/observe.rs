//! Request metrics and the version lookup every front end shares (KServe V2, the typed
//! services, and the typed services a family brings), so every request is counted the same
//! way with bounded labels.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use infermesh_common::{ServiceError, metrics_names as m};

use crate::handle::LoadedVersion;
use crate::manager::ModelManager;

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

impl ModelManager {
    /// The version of `name` a request asks for (`version` empty: the served one). When there
    /// is none, the refusal is recorded as the request's outcome (see [`record_unresolved`]).
    pub fn resolve(
        &self,
        name: &str,
        version: &str,
        protocol: Protocol,
        started: Instant,
    ) -> Result<Arc<LoadedVersion>, ServiceError> {
        self.get(name, (!version.is_empty()).then_some(version))
            .inspect_err(|e| record_unresolved(self, name, protocol, started, e))
    }
}

impl ModelManager {
    /// One typed request to a model, as a family's own typed service serves it: resolves
    /// `name` / `version` (an unresolved request is counted under bounded labels), runs `f` on
    /// the version (and its version label) inside the span `span` makes from that label, and
    /// counts the outcome.
    pub async fn typed<T, Fut>(
        &self,
        name: &str,
        version: &str,
        started: Instant,
        span: impl FnOnce(&str) -> tracing::Span,
        f: impl FnOnce(Arc<LoadedVersion>, String) -> Fut,
    ) -> Result<T, ServiceError>
    where
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let handle = self.resolve(name, version, Protocol::Typed, started)?;
        let version = handle.version.to_string();
        let result = f(handle, version.clone()).instrument(span(&version)).await;
        record(
            name,
            &version,
            Protocol::Typed,
            started,
            result.as_ref().map(|_| ()),
        );
        result
    }
}
