//! `POST /api/v1/reviews`: takes a product review, checks it, and publishes a
//! `ReviewSubmitted` on topic `reviews.submitted` of the event bus for `pipeline reviews`
//! (sentiment, topic, the `reviews` table, the live feed). It answers 202 with the review's id
//! as soon as the bus holds the message: it never waits on processing.
//!
//! Body: `{"review_id"?: string, "product_id": string, "text": string, "rating"?: 1..5,
//! "ts"?: Unix ms | RFC 3339}`; a review without `review_id` gets a new UUID (resubmitting
//! with the same id is idempotent downstream). Answers: 202 `{"review_id", "status":
//! "accepted"}`; 400 malformed JSON, non-UTF-8 body, empty text, bad rating or id; 413 text
//! over 16 KiB (or a body over the gateway's limit); 429 the bus is full (retry later); 503
//! no event bus is configured (the review pipeline is off) or the bus failed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use infermesh_common::{ErrorKind, ServiceError, metrics_names as m};
use infermesh_pipelines::reviews::{ReviewError, ReviewSubmitted, TOPIC, new_review_id};
use serde::Deserialize;

use crate::GatewayState;
use crate::events::parse_rfc3339_ms;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewJson {
    /// The review's id; a new UUID when absent.
    #[serde(default)]
    pub review_id: Option<String>,
    /// The product.
    pub product_id: String,
    /// The text, 1 byte to 16 KiB.
    pub text: String,
    /// Stars, 1..=5.
    #[serde(default)]
    pub rating: Option<i64>,
    /// When: integer Unix milliseconds or an RFC 3339 string (default: when received).
    #[serde(default)]
    pub ts: Option<serde_json::Value>,
}

fn counted(outcome: &'static str) {
    metrics::counter!(m::GATEWAY_REVIEWS_TOTAL, "outcome" => outcome).increment(1);
}

fn refuse(e: ReviewError) -> ServiceError {
    counted("invalid");
    if e.is_too_large() {
        ServiceError::new(ErrorKind::TooLarge, e.to_string())
    } else {
        ServiceError::invalid(e.to_string())
    }
}

impl ReviewJson {
    /// The event: the id assigned when absent, the timestamp `now_ms` when absent.
    pub fn into_event(self, now_ms: i64) -> Result<ReviewSubmitted, ServiceError> {
        let ts = match self.ts {
            None => now_ms,
            Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad_ts)?,
            Some(serde_json::Value::String(s)) => parse_rfc3339_ms(&s).ok_or_else(bad_ts)?,
            Some(_) => return Err(bad_ts()),
        };
        let review = ReviewSubmitted {
            review_id: self.review_id.unwrap_or_else(new_review_id),
            product_id: self.product_id,
            text: self.text,
            rating: self.rating,
            ts,
        };
        review.validate().map_err(refuse)?;
        Ok(review)
    }
}

fn bad_ts() -> ServiceError {
    counted("invalid");
    ServiceError::invalid(
        "ts must be integer Unix milliseconds or an RFC 3339 string (2026-11-05T10:00:00Z)",
    )
}

fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    v.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// Accepts one review: 202 `{"review_id", "status": "accepted"}`.
pub async fn submit(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ServiceError> {
    let Some(bus) = st.reviews.clone() else {
        counted("disabled");
        return Err(ServiceError::unavailable(
            "the review pipeline is off: this gateway has no event bus configured",
        ));
    };
    if !json_content_type(&headers) {
        counted("invalid");
        return Err(ServiceError::invalid(
            "content-type must be application/json",
        ));
    }
    let body = crate::body_or_refuse(body, counted)?;
    let text =
        std::str::from_utf8(&body).map_err(|e| refuse(ReviewError::NotUtf8(e.valid_up_to())))?;
    let parsed: ReviewJson =
        serde_json::from_str(text).map_err(|e| refuse(ReviewError::Malformed(e.to_string())))?;
    let now = i64::try_from(crate::recs::now_ms()).unwrap_or(i64::MAX);
    let review = parsed.into_event(now)?;
    crate::publish_or_refuse(bus.as_ref(), TOPIC, review.to_message(), "review", counted).await?;
    counted("accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"review_id": review.review_id, "status": "accepted"})),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> ReviewJson {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_id_and_a_time_are_assigned_when_absent() {
        let r = body(serde_json::json!({"product_id": "p", "text": "ok"}))
            .into_event(42)
            .unwrap();
        assert_eq!(r.ts, 42);
        assert_eq!(r.review_id.len(), 36);
        let r = body(
            serde_json::json!({"review_id": "r9", "product_id": "p", "text": "ok",
            "rating": 3, "ts": "2026-11-05T10:00:00Z"}),
        )
        .into_event(42)
        .unwrap();
        assert_eq!(r.review_id, "r9");
        assert_eq!(r.rating, Some(3));
        assert_eq!(r.ts, 1_793_872_800_000);
    }

    #[test]
    fn bad_reviews_are_400_or_413() {
        let status = |v: serde_json::Value| {
            body(v)
                .into_event(0)
                .unwrap_err()
                .kind
                .http_status()
                .as_u16()
        };
        assert_eq!(
            status(serde_json::json!({"product_id": "p", "text": ""})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"product_id": "p", "text": "x", "rating": 9})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"product_id": "p", "text": "x", "ts": "yesterday"})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"product_id": "p", "text": "x".repeat(17 * 1024)})),
            413
        );
    }
}
