//! `infermesh.v1.TextEmbedding` and `infermesh.v1.Categorizer`: sentence embeddings and text
//! classification by name, for product APIs that want texts in and labels out, not tensors.
//! Both run through the model version's token-budget batcher, like the V2 routes.

use std::sync::Arc;
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::LoadedVersion;
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::categorizer_server::Categorizer;
use infermesh_proto::v1::text_embedding_server::TextEmbedding;
use infermesh_text::serving::{EmbedOptions, TextServable as TextVersion};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::state::{AppState, Protocol, record};

/// The typed text services.
#[derive(Debug, Clone)]
pub struct TextService {
    state: AppState,
}

impl TextService {
    /// The services over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The encoder behind `h`, or INVALID_ARGUMENT for a classifier.
/// The text family's side of a version, or INVALID_ARGUMENT naming its platform.
pub(crate) fn text_family(h: &LoadedVersion) -> Result<&TextVersion, ServiceError> {
    h.family::<TextVersion>("text")
}

pub(crate) fn encoder(h: &LoadedVersion) -> Result<&TextVersion, ServiceError> {
    let text = text_family(h)?;
    if text.is_classifier() {
        return Err(ServiceError::invalid(format!(
            "model '{}' is a classifier; embeddings need an embedding model",
            h.name
        )));
    }
    Ok(text)
}

/// Resolves `model` (or `default`, when empty) at `version` (empty: the latest ready one),
/// runs `f` on it under `span`, and records the request under `protocol`. Shared by the typed
/// services and TEI's and OpenAI's HTTP routes ([`crate::tei`]).
pub(crate) async fn with_text_model<T, F, Fut>(
    state: &AppState,
    model: &str,
    default: &str,
    version: &str,
    protocol: Protocol,
    span: tracing::Span,
    f: F,
) -> Result<T, ServiceError>
where
    F: FnOnce(Arc<LoadedVersion>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let started = Instant::now();
    let name = if model.is_empty() { default } else { model };
    let handle = state.resolve(name, version, protocol, started)?;
    let v = handle.version.to_string();
    let res = f(handle).instrument(span).await;
    record(name, &v, protocol, started, res.as_ref().map(|_| ()));
    res
}

#[tonic::async_trait]
impl TextEmbedding for TextService {
    async fn embed(
        &self,
        req: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let r = req.into_inner();
        let span = tracing::info_span!("embed", n = r.texts.len(), model = %r.model_name);
        let default = self.state.default_embedding_model.clone();
        let resp = with_text_model(
            &self.state,
            &r.model_name,
            &default,
            &r.model_version,
            Protocol::Typed,
            span,
            |h| async move {
                let text = encoder(&h)?;
                let options = EmbedOptions {
                    normalize: r.normalize.unwrap_or(true),
                    truncate: r.truncate.unwrap_or(true),
                    truncate_left: false,
                };
                let out = text.run_with(r.texts, options).await?;
                Ok(pb::EmbedResponse {
                    embeddings: out
                        .rows
                        .into_iter()
                        .map(|values| pb::Embedding { values })
                        .collect(),
                    dimensions: text.output_width() as u32,
                    model_name: h.name.clone(),
                    model_version: h.version.to_string(),
                    prompt_tokens: out.tokens as u64,
                })
            },
        )
        .await?;
        Ok(Response::new(resp))
    }
}

#[tonic::async_trait]
impl Categorizer for TextService {
    async fn classify(
        &self,
        req: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let r = req.into_inner();
        let span = tracing::info_span!("classify", n = r.texts.len(), model = %r.model_name);
        let default = self.state.default_categorizer_model.clone();
        let top_k = r.top_k as usize;
        let resp = with_text_model(
            &self.state,
            &r.model_name,
            &default,
            &r.model_version,
            Protocol::Typed,
            span,
            |h| async move {
                let text = text_family(&h)?;
                let labels = text.labels();
                let results = text
                    .classify(r.texts)
                    .await?
                    .into_iter()
                    .map(|c| {
                        let mut order: Vec<usize> = (0..c.probabilities.len()).collect();
                        order.sort_by(|&a, &b| c.probabilities[b].total_cmp(&c.probabilities[a]));
                        if top_k > 0 {
                            order.truncate(top_k);
                        }
                        pb::Classification {
                            label: labels[c.best].clone(),
                            probability: c.probabilities[c.best],
                            probabilities: order
                                .into_iter()
                                .map(|i| pb::LabelProbability {
                                    label: labels[i].clone(),
                                    probability: c.probabilities[i],
                                })
                                .collect(),
                        }
                    })
                    .collect();
                Ok(pb::ClassifyResponse {
                    results,
                    model_name: h.name.clone(),
                    model_version: h.version.to_string(),
                })
            },
        )
        .await?;
        Ok(Response::new(resp))
    }
}
