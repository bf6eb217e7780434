//! `POST /api/v1/transactions`: takes a payment transaction and publishes it, as it came, on
//! `finance.transactions` for `pipeline fraud` (keyed by user, so one user's transactions stay
//! in order). It answers 202 as soon as the bus holds it; alerts arrive on
//! `/api/v1/fraud/alerts/stream` and `/ws`.
//!
//! Body: a JSON object with at least `transaction_id` and `user_id` (ids as everywhere in the
//! gateway: 1..256 bytes, no control characters); the pipeline reads the rest (ARCHITECTURE.md,
//! "Events": amount, created_at, ...) and dead-letters what it cannot. Answers: 202
//! `{"transaction_id", "status": "accepted"}`; 400 not a JSON object or a bad id; 413 over the
//! body limit; 429 the bus is full; 503 no bus configured (`--kafka-brokers`) or the bus failed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_pipelines::bus::Message;

use crate::{GatewayState, validate_id};

/// The topic transactions go to.
pub const TOPIC: &str = "finance.transactions";

fn counted(outcome: &'static str) {
    metrics::counter!(m::GATEWAY_TRANSACTIONS_TOTAL, "outcome" => outcome).increment(1);
}

fn id_of<'a>(v: &'a serde_json::Value, field: &str) -> Result<&'a str, ServiceError> {
    let id = v
        .get(field)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ServiceError::invalid(format!("{field} is required (a string)")))?;
    validate_id(field, id)?;
    Ok(id)
}

/// The route.
pub async fn submit(
    State(st): State<GatewayState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ServiceError> {
    let Some(bus) = st.transactions.clone() else {
        counted("disabled");
        return Err(ServiceError::unavailable(
            "no event bus: start the gateway with --kafka-brokers (infermesh up has one in process)",
        ));
    };
    let body = crate::body_or_refuse(body, counted)?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        counted("invalid");
        ServiceError::invalid(format!("not JSON: {e}"))
    })?;
    if !v.is_object() {
        counted("invalid");
        return Err(ServiceError::invalid("a transaction is a JSON object"));
    }
    let (tx_id, user) = match (id_of(&v, "transaction_id"), id_of(&v, "user_id")) {
        (Ok(t), Ok(u)) => (t.to_string(), u.to_string()),
        (Err(e), _) | (_, Err(e)) => {
            counted("invalid");
            return Err(e);
        }
    };
    let mut msg = Message::new(user, body.to_vec());
    msg.headers
        .push(("content-type".into(), "application/json".into()));
    crate::publish_or_refuse(bus.as_ref(), TOPIC, msg, "transaction", counted).await?;
    counted("accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"transaction_id": tx_id, "status": "accepted"})),
    ))
}
