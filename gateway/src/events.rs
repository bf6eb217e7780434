//! `POST /api/v1/events` (user behaviour: view, click, purchase) and `GET /t.js`, the
//! browser tracker that posts them.
//!
//! Fields are those of the Kafka topic `user.behavior` (docs/ARCHITECTURE.md). The body is
//! read as bytes and parsed here rather than through axum's `Json` extractor because
//! `navigator.sendBeacon` with a string body sends `text/plain;charset=UTF-8` (the only way a
//! cross-origin beacon avoids a CORS preflight), which `Json` refuses.
//!
//! What an event does besides being published: a view becomes the user's most recent item
//! (and drops their cached recommendations: recent views are an input of the model); a
//! purchase drops their cached recommendations; a click with `"source": "recommendations"`
//! counts for the user's A/B arm. Publishing goes through [`EventSink`]: [`CountingSink`]
//! without an event bus, [`BusSink`] (`user.behavior`, keyed by user) with one. Behind a bus,
//! recent views and cache invalidation are left to `infermesh pipeline behavior`, which
//! applies them from the topic (once per event, in the user's order); the A/B click count stays
//! here.
//!
//! RFC 3339 timestamps are parsed by hand ([`parse_rfc3339_ms`]): one fixed format, so a date
//! crate would add a dependency for forty lines.

use std::future::Future;
use std::pin::Pin;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use infermesh_common::{ErrorKind, ServiceError, metrics_names as m};
use serde::{Deserialize, Serialize};

use crate::store::{Counter, counted};
use crate::{GatewayState, validate_id};

/// The tracker served at `/t.js`.
pub const TRACKER_JS: &str = include_str!("../static/t.js");
/// Largest tracker the project accepts (bytes as served).
pub const TRACKER_MAX_BYTES: usize = 200;
/// `source` of a click on a recommendation.
pub const SOURCE_RECOMMENDATIONS: &str = "recommendations";

/// What the user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Viewed a product.
    View,
    /// Clicked a product.
    Click,
    /// Bought a product.
    Purchase,
}

impl EventKind {
    /// Lower-case name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::Purchase => "purchase",
        }
    }
}

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventJson {
    /// view, click or purchase.
    pub event: EventKind,
    /// The user.
    pub user_id: String,
    /// The product.
    pub product_id: String,
    /// The browsing session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// When: integer Unix milliseconds or an RFC 3339 string (default: when received).
    #[serde(default)]
    pub ts: Option<serde_json::Value>,
    /// Where it happened (e.g. "recommendations").
    #[serde(default)]
    pub source: Option<String>,
}

/// A checked event, as published to `user.behavior`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What the user did.
    pub event: EventKind,
    /// The user.
    pub user_id: String,
    /// The product.
    pub product_id: String,
    /// The browsing session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Unix milliseconds.
    pub ts: i64,
    /// Where it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl EventJson {
    /// Checks ids and the timestamp (`now_ms` when absent).
    pub fn check(self, now_ms: i64) -> Result<Event, ServiceError> {
        validate_id("user_id", &self.user_id)?;
        validate_id("product_id", &self.product_id)?;
        if let Some(s) = &self.session_id {
            validate_id("session_id", s)?;
        }
        if let Some(s) = &self.source {
            validate_id("source", s)?;
        }
        let ts = match self.ts {
            None => now_ms,
            Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad_ts)?,
            Some(serde_json::Value::String(s)) => parse_rfc3339_ms(&s).ok_or_else(bad_ts)?,
            Some(_) => return Err(bad_ts()),
        };
        Ok(Event {
            event: self.event,
            user_id: self.user_id,
            product_id: self.product_id,
            session_id: self.session_id,
            ts,
            source: self.source,
        })
    }
}

fn bad_ts() -> ServiceError {
    ServiceError::invalid(
        "ts must be integer Unix milliseconds or an RFC 3339 string (2026-11-05T10:00:00Z)",
    )
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct SinkError(pub String);

/// The future [`EventSink::publish`] returns.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where accepted events go (the `user.behavior` topic, once a producer is configured).
/// Object-safe, so the route holds an `Arc<dyn EventSink>`.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Publishes one event; an error makes the request a 503 (the caller may retry).
    fn publish<'a>(&'a self, event: &'a Event) -> PublishFuture<'a>;

    /// Whether a consumer of the published events keeps the recent views and drops cached
    /// recommendations (`pipeline behavior`); otherwise the route does it itself.
    fn applied_downstream(&self) -> bool {
        false
    }
}

/// The topic behaviour events go to.
pub const BEHAVIOR_TOPIC: &str = "user.behavior";

/// Publishes events to `user.behavior` on an event bus (Kafka with `--kafka-brokers`), keyed by
/// user so one user's events stay in order, each with a `message-id` header of its own.
#[derive(Debug, Clone)]
pub struct BusSink {
    bus: std::sync::Arc<dyn infermesh_pipelines::bus::EventBus>,
}

impl BusSink {
    /// A sink publishing on `bus`.
    pub fn new(bus: std::sync::Arc<dyn infermesh_pipelines::bus::EventBus>) -> Self {
        Self { bus }
    }
}

impl EventSink for BusSink {
    fn publish<'a>(&'a self, event: &'a Event) -> PublishFuture<'a> {
        Box::pin(async move {
            let payload = serde_json::to_vec(event).map_err(|e| SinkError(e.to_string()))?;
            let mut msg = infermesh_pipelines::bus::Message::new(event.user_id.clone(), payload);
            msg.headers
                .push(("message-id".into(), uuid::Uuid::new_v4().to_string()));
            msg.headers
                .push(("content-type".into(), "application/json".into()));
            match tokio::time::timeout(
                crate::PUBLISH_TIMEOUT,
                self.bus.publish(BEHAVIOR_TOPIC, msg),
            )
            .await
            {
                Ok(Ok(())) => {
                    metrics::counter!(m::GATEWAY_EVENTS_TOTAL, "event" => event.event.as_str())
                        .increment(1);
                    Ok(())
                }
                Ok(Err(e)) => Err(SinkError(e.to_string())),
                Err(_) => Err(SinkError("publishing timed out".into())),
            }
        })
    }

    fn applied_downstream(&self) -> bool {
        true
    }
}

/// The sink while no event bus is configured: counts events
/// (`infermesh_gateway_events_total{event}`) and drops them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink;

impl EventSink for CountingSink {
    fn publish<'a>(&'a self, event: &'a Event) -> PublishFuture<'a> {
        Box::pin(async move {
            metrics::counter!(m::GATEWAY_EVENTS_TOTAL, "event" => event.event.as_str())
                .increment(1);
            Ok(())
        })
    }
}

/// `application/json` or `text/plain` (any parameters), or no content type at all.
fn acceptable_content_type(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/plain")
}

/// Accepts one behaviour event: 202 `{"accepted": true}`.
pub async fn accept(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ServiceError> {
    if !acceptable_content_type(&headers) {
        return Err(ServiceError::invalid(
            "content-type must be application/json or text/plain",
        ));
    }
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::new(ErrorKind::TooLarge, "request body is too large")
        } else {
            ServiceError::invalid(rej.body_text())
        }
    })?;
    let parsed: EventJson = serde_json::from_slice(&body)
        .map_err(|e| ServiceError::invalid(format!("invalid event: {e}")))?;
    let now = i64::try_from(crate::recs::now_ms()).unwrap_or(i64::MAX);
    let event = parsed.check(now)?;
    st.events.publish(&event).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot publish event");
        ServiceError::unavailable("the event could not be recorded: retry later")
    })?;
    let ctx = &st.recs;
    let inline = !st.events.applied_downstream();
    match event.event {
        EventKind::View if !inline => {}
        EventKind::Purchase if !inline => {}
        EventKind::View => {
            counted(
                "recent_push",
                ctx.store
                    .push_recent(&event.user_id, &event.product_id)
                    .await,
            );
        }
        EventKind::Purchase => {
            counted("invalidate", ctx.store.invalidate(&event.user_id).await);
        }
        EventKind::Click => {
            if event.source.as_deref() == Some(SOURCE_RECOMMENDATIONS)
                && let Some(e) = &ctx.settings.experiment
            {
                let arm = e.assign(&event.user_id);
                metrics::counter!(
                    m::AB_CLICKS_TOTAL,
                    "experiment" => e.name.clone(),
                    "arm" => arm.name.clone()
                )
                .increment(1);
                counted(
                    "counts_incr",
                    ctx.store.incr(&e.name, &arm.name, Counter::Clicks, 1).await,
                );
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"accepted": true})),
    ))
}

/// `GET /t.js`.
pub async fn tracker() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        TRACKER_JS,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (RFC 3339 `date-time`; `t`, `z` and a space for
/// `T` accepted) as Unix milliseconds; None when it is not one. A leap second (`:60`) counts
/// as the last millisecond of its minute's 59th second.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
        )
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 60 + om;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let (second, millis) = if second == 60 {
        (59, 999)
    } else {
        (second, millis)
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        // date -d 2026-11-05T10:00:00Z +%s -> 1793872800
        assert_eq!(
            parse_rfc3339_ms("2026-11-05T10:00:00Z"),
            Some(1_793_872_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-05T12:00:00.25+02:00"),
            Some(1_793_872_800_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-05t09:30:00.123456-00:30"),
            Some(1_793_872_800_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29 00:00:00z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2016-12-31T23:59:60Z"),
            Some(1_483_228_799_999)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "2026-11-05",
            "2026-11-05T10:00:00",
            "2026-13-05T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2026-11-05T24:00:00Z",
            "2026-11-05T10:00:00.Z",
            "2026-11-05T10:00:00+0200",
            "2026-11-05T10:00:00Zjunk",
            "２026-11-05T10:00:00Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    fn ev(json: serde_json::Value) -> Result<Event, String> {
        let parsed: EventJson = serde_json::from_value(json).map_err(|e| e.to_string())?;
        parsed.check(42).map_err(|e| e.message)
    }

    #[test]
    fn events_are_checked() {
        let ok =
            ev(serde_json::json!({"event": "view", "user_id": "u1", "product_id": "p1"})).unwrap();
        assert_eq!(ok.ts, 42);
        assert_eq!(ok.event, EventKind::View);
        let full = ev(
            serde_json::json!({"event": "click", "user_id": "u1", "product_id": "p1",
            "session_id": "s", "ts": "2026-11-05T10:00:00Z", "source": "recommendations"}),
        )
        .unwrap();
        assert_eq!(full.ts, 1_793_872_800_000);
        assert_eq!(
            ev(
                serde_json::json!({"event": "purchase", "user_id": "u", "product_id": "p", "ts": 5})
            )
            .unwrap()
            .ts,
            5
        );
        for (body, needle) in [
            (
                serde_json::json!({"event": "view", "user_id": "u", "product_id": "p", "price": 1}),
                "price",
            ),
            (
                serde_json::json!({"event": "hover", "user_id": "u", "product_id": "p"}),
                "hover",
            ),
            (
                serde_json::json!({"event": "view", "product_id": "p"}),
                "user_id",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "", "product_id": "p"}),
                "user_id",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "u\n", "product_id": "p"}),
                "user_id",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "u", "product_id": "x".repeat(257)}),
                "product_id",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "u", "product_id": "p", "ts": 1.5}),
                "ts",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "u", "product_id": "p", "ts": "now"}),
                "ts",
            ),
            (
                serde_json::json!({"event": "view", "user_id": "u", "product_id": "p", "ts": true}),
                "ts",
            ),
        ] {
            let e = ev(body.clone()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn published_events_use_the_topic_field_names() {
        let e =
            ev(serde_json::json!({"event": "view", "user_id": "u1", "product_id": "p1"})).unwrap();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"event": "view", "user_id": "u1", "product_id": "p1", "ts": 42})
        );
    }

    #[test]
    fn content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            acceptable_content_type(&h)
        };
        assert!(with("application/json"));
        assert!(with("text/plain;charset=UTF-8"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(acceptable_content_type(&HeaderMap::new()));
    }

    #[test]
    fn the_tracker_is_small_and_posts_to_the_events_route() {
        assert!(
            TRACKER_JS.len() <= TRACKER_MAX_BYTES,
            "t.js is {} bytes",
            TRACKER_JS.len()
        );
        for needle in [
            "sendBeacon",
            "\"api/v1/events\"",
            "event:",
            "user_id:",
            "product_id:",
        ] {
            assert!(TRACKER_JS.contains(needle), "{needle}");
        }
    }
}
