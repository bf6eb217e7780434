//! `POST /api/v1/fraud/score` and `/api/v1/fraud/score/batch`: JSON in front of
//! `infermesh.v1.FraudScoring`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use infermesh_common::ServiceError;
use infermesh_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{GatewayState, json_rejection, upstream_error, with_request_id};

/// Most transactions in one batch call.
pub const MAX_BATCH: usize = 1000;
/// Most reasons a caller may ask for.
pub const MAX_TOP_K: u32 = 100;

/// A transaction to score.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// The transaction's id, echoed back.
    pub transaction_id: String,
    /// Features by name; null or absent means missing.
    #[serde(default)]
    pub features: BTreeMap<String, Option<f64>>,
    /// Model name (default: the server's fraud model).
    #[serde(default)]
    pub model: Option<String>,
    /// Model version (default: the latest ready one).
    #[serde(default)]
    pub version: Option<String>,
    /// How many reasons to return: 0 for none; absent: 5.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// The transaction's user: with a feature store, the model's store-mapped inputs that
    /// `features` leaves out (user_avg_spend, ...) are read for it.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The transaction's device (device_risk_score, ...), as user_id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Other entities by join key, as user_id.
    #[serde(default)]
    pub entities: BTreeMap<String, String>,
}

/// A batch of transactions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreBatchRequest {
    /// The transactions.
    pub transactions: Vec<ScoreRequest>,
    /// Model name for all of them.
    #[serde(default)]
    pub model: Option<String>,
    /// Model version for all of them.
    #[serde(default)]
    pub version: Option<String>,
}

/// One reason for a score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reason {
    /// Feature name.
    pub feature: String,
    /// Its TreeSHAP contribution to the log-odds.
    pub contribution: f64,
    /// The value it had (null when missing).
    pub value: Option<f64>,
}

/// A scored transaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreResponse {
    /// The transaction's id.
    pub transaction_id: String,
    /// Fraud probability.
    pub probability: f64,
    /// `probability > threshold`.
    pub is_fraud: bool,
    /// The model's decision threshold.
    pub threshold: f64,
    /// The features that moved the score most.
    pub reasons: Vec<Reason>,
    /// Model that answered.
    pub model: String,
    /// Version that answered.
    pub version: String,
    /// The feature store failed or was too slow: inputs it would have filled were scored as
    /// missing.
    #[serde(default)]
    pub features_degraded: bool,
}

/// A scored batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreBatchResponse {
    /// In request order.
    pub results: Vec<ScoreResponse>,
}

fn to_proto(r: ScoreRequest) -> Result<pb::ScoreRequest, ServiceError> {
    if r.transaction_id.is_empty() {
        return Err(ServiceError::invalid("transaction_id must not be empty"));
    }
    let top_k = r.top_k;
    if top_k.is_some_and(|k| k > MAX_TOP_K) {
        return Err(ServiceError::invalid(format!(
            "top_k must be at most {MAX_TOP_K}"
        )));
    }
    let mut features = HashMap::with_capacity(r.features.len());
    for (k, v) in r.features {
        if let Some(v) = v {
            features.insert(k, v);
        }
    }
    Ok(pb::ScoreRequest {
        transaction_id: r.transaction_id,
        features,
        model_name: r.model.unwrap_or_default(),
        model_version: r.version.unwrap_or_default(),
        top_k_reasons: top_k,
        user_id: r.user_id.unwrap_or_default(),
        device_id: r.device_id.unwrap_or_default(),
        entities: r.entities.into_iter().collect(),
    })
}

fn from_proto(r: pb::ScoreResponse) -> ScoreResponse {
    ScoreResponse {
        transaction_id: r.transaction_id,
        probability: r.probability,
        is_fraud: r.is_fraud,
        threshold: r.threshold,
        reasons: r
            .reasons
            .into_iter()
            .map(|x| Reason {
                feature: x.feature,
                contribution: x.contribution,
                value: (!x.missing).then_some(x.value),
            })
            .collect(),
        model: r.model_name,
        version: r.model_version,
        features_degraded: r.features_degraded,
    }
}

/// Scores one transaction.
pub async fn score(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Json<ScoreRequest>, JsonRejection>,
) -> Result<Json<ScoreResponse>, ServiceError> {
    let Json(req) = body.map_err(json_rejection)?;
    let msg = to_proto(req)?;
    let mut client = st.fraud.clone();
    let resp = client
        .score(with_request_id(&headers, msg))
        .await
        .map_err(|s| upstream_error("inference", s))?;
    Ok(Json(from_proto(resp.into_inner())))
}

/// Scores a batch of transactions in one upstream call.
pub async fn score_batch(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Json<ScoreBatchRequest>, JsonRejection>,
) -> Result<Json<ScoreBatchResponse>, ServiceError> {
    let Json(req) = body.map_err(json_rejection)?;
    if req.transactions.is_empty() || req.transactions.len() > MAX_BATCH {
        return Err(ServiceError::invalid(format!(
            "a batch holds 1 to {MAX_BATCH} transactions, got {}",
            req.transactions.len()
        )));
    }
    let requests = req
        .transactions
        .into_iter()
        .map(to_proto)
        .collect::<Result<Vec<_>, _>>()?;
    let msg = pb::ScoreBatchRequest {
        requests,
        model_name: req.model.unwrap_or_default(),
        model_version: req.version.unwrap_or_default(),
        top_k_reasons: None,
        ignore_unknown_features: false,
        reasons_over_threshold_only: false,
    };
    let mut client = st.fraud.clone();
    let resp = client
        .score_batch(with_request_id(&headers, msg))
        .await
        .map_err(|s| upstream_error("inference", s))?;
    Ok(Json(ScoreBatchResponse {
        results: resp
            .into_inner()
            .responses
            .into_iter()
            .map(from_proto)
            .collect(),
    }))
}
