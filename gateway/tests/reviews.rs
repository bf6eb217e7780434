//! `POST /api/v1/reviews` over HTTP (no inference server needed): 503 without a bus; with an
//! in-process bus, 202 and the `ReviewSubmitted` on `reviews.submitted`; bad input as 4xx JSON;
//! a full bus as 429, counted; behaviour events on their bus. Alone in its test binary: the
//! metrics recorder is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::{dead_addr, expect_error, metrics_text, sample};
use infermesh_gateway::GatewayArgs;
use infermesh_pipelines::bus::{EventBus, InProcessBus};
use infermesh_pipelines::reviews::{ReviewSubmitted, TOPIC};
use serde_json::{Value, json};

async fn gateway(bus: Option<Arc<dyn EventBus>>) -> infermesh_gateway::RunningGateway {
    let mut cfg = GatewayArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        metrics_port: 0,
        inference_url: format!("http://{}", dead_addr()),
        timeout_ms: 2000,
        max_request_bytes: 64 * 1024,
        config: None,
        redis_url: None,
        redis_timeout_ms: 100,
        redis_key_prefix: "infermesh:".into(),
        limits: Default::default(),
        kafka_brokers: None,
    }
    .validate()
    .unwrap();
    cfg.reviews_bus = bus;
    infermesh_gateway::start(cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_checked_published_and_refused_when_the_bus_is_off_or_full() {
    let c = reqwest::Client::new();
    // No bus: the pipeline is off.
    let off = gateway(None).await;
    let r = c
        .post(format!("http://{}/api/v1/reviews", off.addr))
        .json(&json!({"product_id": "p1", "text": "fine"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 503, "review pipeline is off").await;
    off.shutdown().await.unwrap();

    let bus = InProcessBus::new(2, Duration::from_secs(60));
    let mut sub = bus.subscribe(TOPIC, "test").await.unwrap();
    let gw = gateway(Some(Arc::new(bus.clone()))).await;
    let url = format!("http://{}/api/v1/reviews", gw.addr);
    // Accepted with the caller's id, then with a new one.
    let r = c
        .post(&url)
        .json(
            &json!({"review_id": "r1", "product_id": "p1", "text": "Battery lasts, love it",
                      "rating": 5, "ts": "2026-11-05T10:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"review_id": "r1", "status": "accepted"})
    );
    let d = sub.next().await.unwrap();
    assert_eq!(d.message.key.as_deref(), Some("r1"));
    let review = ReviewSubmitted::from_json(&d.message.payload).unwrap();
    assert_eq!(
        review,
        ReviewSubmitted {
            review_id: "r1".into(),
            product_id: "p1".into(),
            text: "Battery lasts, love it".into(),
            rating: Some(5),
            ts: 1_793_872_800_000,
        }
    );
    sub.ack(&d).await.unwrap();
    let r = c
        .post(&url)
        .json(&json!({"product_id": "p2", "text": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["review_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let d = sub.next().await.unwrap();
    assert_eq!(d.message.key.as_deref(), Some(id.as_str()));
    sub.ack(&d).await.unwrap();

    // Bad input: 4xx with a JSON error, nothing published.
    for (body, status, needle) in [
        (json!({"product_id": "p", "text": ""}), 400, "empty"),
        (json!({"product_id": "p", "text": "  \n"}), 400, "empty"),
        (
            json!({"product_id": "p", "text": "x".repeat(17 * 1024)}),
            413,
            "at most 16384",
        ),
        (
            json!({"product_id": "p", "text": "x", "rating": 6}),
            400,
            "rating",
        ),
        (
            json!({"product_id": "p", "text": "x", "rating": 0}),
            400,
            "rating",
        ),
        (
            json!({"product_id": "p", "text": "x", "rating": "5"}),
            400,
            "invalid",
        ),
        (json!({"text": "x"}), 400, "product_id"),
        (
            json!({"product_id": "p", "text": "x", "stars": 5}),
            400,
            "stars",
        ),
        (json!({"product_id": "", "text": "x"}), 400, "product_id"),
    ] {
        let r = c.post(&url).json(&body).send().await.unwrap();
        expect_error(r, status, needle).await;
    }
    for (body, needle) in [
        (
            b"{\"product_id\": \"p\", \"text\": \"x\"".to_vec(),
            "invalid review JSON",
        ),
        (
            b"{\"product_id\": \"p\", \"text\": \"\xff\"}".to_vec(),
            "UTF-8",
        ),
    ] {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, needle).await;
    }
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "content-type").await;

    // The bus holds 2 unacknowledged messages: the third review is refused with 429.
    for i in 0..2 {
        let r = c
            .post(&url)
            .json(&json!({"product_id": "p", "text": format!("review {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let r = c
        .post(&url)
        .json(&json!({"product_id": "p", "text": "one too many"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 429, "busy").await;

    let text = metrics_text(&gw).await;
    let count = |outcome: &str| {
        sample(
            &text,
            "infermesh_gateway_reviews_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    assert_eq!(count("accepted"), Some(4.0), "{text}");
    assert_eq!(count("bus_full"), Some(1.0));
    assert_eq!(count("disabled"), Some(1.0));
    assert_eq!(count("invalid"), Some(12.0));
    gw.shutdown().await.unwrap();
}

/// With a behaviour bus, `POST /api/v1/events` publishes to user.behavior (keyed by user, a
/// message id each, the event as checked) for `pipeline behavior`; a full bus is a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_the_behavior_bus_and_recent_views_are_left_to_the_pipeline() {
    let mut cfg = infermesh_gateway::GatewayArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        metrics_port: 0,
        inference_url: format!("http://{}", dead_addr()),
        timeout_ms: 2000,
        max_request_bytes: 64 * 1024,
        config: None,
        redis_url: None,
        redis_timeout_ms: 100,
        redis_key_prefix: "infermesh:".into(),
        limits: Default::default(),
        kafka_brokers: None,
    }
    .validate()
    .unwrap();
    let bus = InProcessBus::new(10, Duration::from_secs(60));
    let mut sub = bus.subscribe("user.behavior", "test").await.unwrap();
    cfg.behavior_bus = Some(Arc::new(bus.clone()));
    let gw = infermesh_gateway::start(cfg).await.unwrap();
    let c = reqwest::Client::new();
    let r = c
        .post(format!("http://{}/api/v1/events", gw.addr))
        .json(&json!({"event": "view", "user_id": "u9", "product_id": "p9", "session_id": "s", "ts": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.key.as_deref(), Some("u9"));
    assert!(
        d.message
            .headers
            .iter()
            .any(|(k, v)| k == "message-id" && v.len() == 36)
    );
    let v: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
    assert_eq!(
        v,
        json!({"event": "view", "user_id": "u9", "product_id": "p9", "session_id": "s", "ts": 5})
    );
    // A full bus refuses the event (503), never drops it silently.
    for i in 0..20 {
        let r = c
            .post(format!("http://{}/api/v1/events", gw.addr))
            .json(&json!({"event": "click", "user_id": "u9", "product_id": format!("p{i}")}))
            .send()
            .await
            .unwrap();
        if r.status() != 202 {
            assert_eq!(r.status(), 503);
            gw.shutdown().await.unwrap();
            return;
        }
    }
    panic!("a bus of 10 took 20 unacknowledged events");
}
