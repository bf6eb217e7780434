//! `infermesh.v1.FraudScoring`: fraud probability, decision and TreeSHAP reasons by feature
//! name, for product APIs that want names, not tensors.

use std::sync::Arc;
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::{LoadedVersion, OutputTensor, TensorData};
use infermesh_model_core::Task;
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::fraud_scoring_server::FraudScoring;
use infermesh_trees::serving::TreeServable as TabularVersion;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::features::{FillRequest, Filled};
use crate::state::{AppState, Protocol, record, record_unresolved};

/// The trees family's side of a version, or INVALID_ARGUMENT naming its platform.
fn tabular(h: &LoadedVersion) -> Result<&TabularVersion, ServiceError> {
    h.family::<TabularVersion>("tabular")
}

/// Reasons returned when the request does not say.
pub const DEFAULT_TOP_K: usize = 5;
/// Most transactions in one ScoreBatch call.
pub const MAX_BATCH: usize = 10_000;

/// What a ScoreBatch request says for all its transactions.
#[derive(Debug, Clone, Copy, Default)]
struct BatchOptions {
    /// Reasons when a transaction does not say.
    top_k_reasons: Option<u32>,
    /// Drop features the model does not take instead of refusing them.
    ignore_unknown_features: bool,
    /// Reasons only over the threshold, for requests that do not set their own count.
    reasons_over_threshold_only: bool,
}

/// The typed fraud-scoring service.
#[derive(Debug, Clone)]
pub struct FraudService {
    state: AppState,
}

impl FraudService {
    /// A service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn resolve(
        &self,
        model: &str,
        version: &str,
        started: Instant,
    ) -> Result<Arc<LoadedVersion>, ServiceError> {
        let name = if model.is_empty() {
            self.state.default_fraud_model.as_str()
        } else {
            model
        };
        let handle = self
            .state
            .resolve(name, version, Protocol::Typed, started)?;
        let task = tabular(&handle).map(|t| t.model.task());
        match task {
            Ok(Task::BinaryClassification) => Ok(handle),
            Ok(other) => Err(ServiceError::invalid(format!(
                "model '{name}' is not a binary classifier ({other:?}); FraudScoring needs one"
            ))),
            Err(e) => Err(e),
        }
        .inspect_err(|e| record_unresolved(&self.state.manager, name, Protocol::Typed, started, e))
    }

    /// Scores many transactions in one batch through the model's queue.
    async fn score_many(
        &self,
        handle: &Arc<LoadedVersion>,
        requests: Vec<pb::ScoreRequest>,
        opts: BatchOptions,
    ) -> Result<Vec<pb::ScoreResponse>, ServiceError> {
        let tab = tabular(handle)?;
        let nf = tab.num_features();
        let filled = self.store_inputs(handle, &requests).await?;
        let mut rows = Vec::with_capacity(requests.len() * nf);
        for (i, r) in requests.iter().enumerate() {
            let mut row = feature_row(handle, tab, r, opts.ignore_unknown_features)?;
            for (name, value) in filled.values.get(i).into_iter().flatten() {
                let bad = |why: &str| {
                    ServiceError::invalid(format!(
                        "model '{}': [feature_store] maps {name:?}, {why}",
                        handle.name
                    ))
                };
                let at = tab
                    .feature_index(name)
                    .ok_or_else(|| bad("which is not one of its features"))?;
                row[at] = crate::features::number(value)
                    .ok_or_else(|| bad("whose stored value is not a finite number"))?
                    as f32;
            }
            rows.extend_from_slice(&row);
        }
        let probs = tab.predict_raw(rows.clone()).await?;
        observe(handle, tab.feature_names(), &rows, &probs);
        let threshold = tab.output_mode().threshold;
        let tops: Vec<usize> = requests
            .iter()
            .zip(&probs)
            .map(|(r, &p)| {
                if opts.reasons_over_threshold_only && r.top_k_reasons.is_none() && p <= threshold {
                    return 0;
                }
                let k = r
                    .top_k_reasons
                    .or(opts.top_k_reasons)
                    .map_or(DEFAULT_TOP_K, |k| k as usize);
                k.min(nf)
            })
            .collect();
        let h = handle.clone();
        let reasons = if tops.iter().all(|&k| k == 0) {
            // No reasons asked for: no TreeSHAP, no thread hop.
            vec![Vec::new(); tops.len()]
        } else {
            // TreeSHAP is CPU work: keep it off the async workers.
            tokio::task::spawn_blocking(move || -> Result<Vec<Vec<pb::Reason>>, ServiceError> {
                rows.chunks(nf.max(1))
                    .zip(tops)
                    .map(|(row, k)| reasons_for(tabular(&h)?, row, k))
                    .collect()
            })
            .await
            .map_err(ServiceError::internal)??
        };
        Ok(requests
            .into_iter()
            .zip(probs)
            .zip(reasons)
            .map(|((r, p), reasons)| pb::ScoreResponse {
                transaction_id: r.transaction_id,
                probability: f64::from(p),
                is_fraud: p > threshold,
                threshold: f64::from(threshold),
                reasons,
                model_name: handle.name.clone(),
                model_version: handle.version.to_string(),
                margin: logit(f64::from(p)),
                features_degraded: filled.degraded,
            })
            .collect())
    }

    /// The inputs the feature store fills for `requests` (nothing without a store, or when the
    /// model maps none).
    async fn store_inputs(
        &self,
        handle: &LoadedVersion,
        requests: &[pb::ScoreRequest],
    ) -> Result<Filled, ServiceError> {
        let mapping = &handle.config.feature_store.features;
        let Some(source) = self.state.features.as_ref().filter(|_| !mapping.is_empty()) else {
            return Ok(Filled::default());
        };
        let asks: Vec<FillRequest<'_>> = requests
            .iter()
            .map(|r| FillRequest {
                entities: [
                    ("user_id", r.user_id.as_str()),
                    ("device_id", r.device_id.as_str()),
                ]
                .into_iter()
                .chain(r.entities.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect(),
                present: r.features.keys().map(String::as_str).collect(),
            })
            .collect();
        source
            .fill(&handle.name, mapping, &asks)
            .instrument(tracing::info_span!("feature_store", n = requests.len()))
            .await
    }
}

/// Hands the scored rows to the version's monitor (inference log, live drift): the features
/// by name, and the probability under the V2 output's name when that output is one value per
/// row (so typed and V2 requests fill the same columns).
fn observe(handle: &LoadedVersion, names: &[String], rows: &[f32], probs: &[f32]) {
    let Some(pending) = infermesh_inference::monitor::observe_rows(handle, names, rows) else {
        return;
    };
    let outputs: Vec<OutputTensor> = handle
        .description()
        .outputs
        .first()
        .filter(|o| o.shape == [-1])
        .map(|o| OutputTensor {
            name: o.name.clone(),
            shape: vec![probs.len() as i64],
            data: TensorData::Fp32(probs.to_vec()),
        })
        .into_iter()
        .collect();
    pending.finish(&outputs);
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    (p / (1.0 - p)).ln()
}

/// The model's row for a transaction: features by name, absent ones missing (NaN).
fn feature_row(
    handle: &LoadedVersion,
    tab: &TabularVersion,
    r: &pb::ScoreRequest,
    ignore_unknown: bool,
) -> Result<Vec<f32>, ServiceError> {
    let mut row = vec![f32::NAN; tab.num_features()];
    for (name, value) in &r.features {
        let Some(i) = tab.feature_index(name) else {
            if ignore_unknown {
                continue;
            }
            return Err(ServiceError::invalid(format!(
                "transaction '{}': unknown feature '{name}' (model '{}' takes: {})",
                r.transaction_id,
                handle.name,
                tab.feature_names().join(", ")
            )));
        };
        if value.is_infinite() {
            return Err(ServiceError::invalid(format!(
                "transaction '{}': feature '{name}' is infinite",
                r.transaction_id
            )));
        }
        row[i] = *value as f32;
    }
    Ok(row)
}

/// The `k` features that moved this prediction most, by absolute TreeSHAP contribution.
fn reasons_for(
    handle: &TabularVersion,
    row: &[f32],
    k: usize,
) -> Result<Vec<pb::Reason>, ServiceError> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let contribs = handle.explain(row)?;
    let names = handle.feature_names();
    let mut idx: Vec<usize> = (0..names.len().min(contribs.len())).collect();
    idx.sort_by(|&a, &b| contribs[b].abs().total_cmp(&contribs[a].abs()));
    Ok(idx
        .into_iter()
        .take(k)
        .map(|i| pb::Reason {
            feature: names[i].clone(),
            contribution: f64::from(contribs[i]),
            value: if row[i].is_nan() {
                0.0
            } else {
                f64::from(row[i])
            },
            missing: row[i].is_nan(),
        })
        .collect())
}

impl FraudService {
    /// Resolves the model, scores `requests` under `span`, and records the request metrics
    /// (also for requests refused before a model was found).
    async fn scored(
        &self,
        model: &str,
        version: &str,
        requests: Vec<pb::ScoreRequest>,
        opts: BatchOptions,
        span: tracing::Span,
    ) -> Result<Vec<pb::ScoreResponse>, ServiceError> {
        let started = Instant::now();
        let handle = self.resolve(model, version, started)?;
        let res = self
            .score_many(&handle, requests, opts)
            .instrument(span)
            .await;
        let version = handle.version.to_string();
        record(
            &handle.name,
            &version,
            Protocol::Typed,
            started,
            res.as_ref().map(|_| ()),
        );
        res
    }
}

#[tonic::async_trait]
impl FraudScoring for FraudService {
    async fn score(
        &self,
        req: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let r = req.into_inner();
        let span = tracing::info_span!("fraud_score", transaction_id = %r.transaction_id, model = %r.model_name);
        let (model, version) = (r.model_name.clone(), r.model_version.clone());
        let mut out = self
            .scored(&model, &version, vec![r], BatchOptions::default(), span)
            .await?;
        out.pop()
            .map(Response::new)
            .ok_or_else(|| ServiceError::internal("empty score result").into())
    }

    async fn score_batch(
        &self,
        req: Request<pb::ScoreBatchRequest>,
    ) -> Result<Response<pb::ScoreBatchResponse>, Status> {
        let r = req.into_inner();
        if r.requests.len() > MAX_BATCH {
            return Err(ServiceError::invalid(format!(
                "{} transactions in one batch; at most {MAX_BATCH}",
                r.requests.len()
            ))
            .into());
        }
        let span =
            tracing::info_span!("fraud_score_batch", n = r.requests.len(), model = %r.model_name);
        let responses = self
            .scored(
                &r.model_name,
                &r.model_version,
                r.requests,
                BatchOptions {
                    top_k_reasons: r.top_k_reasons,
                    ignore_unknown_features: r.ignore_unknown_features,
                    reasons_over_threshold_only: r.reasons_over_threshold_only,
                },
                span,
            )
            .await?;
        Ok(Response::new(pb::ScoreBatchResponse { responses }))
    }
}
