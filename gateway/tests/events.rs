//! `POST /api/v1/events` on its own (no inference server needed): validation, the JSON and
//! `text/plain` (sendBeacon) bodies, and the exact event counts in `/metrics`. Alone in this
//! test binary because the metrics recorder is process-wide: under `cargo test` (one process
//! for a file's tests) the events the other gateway tests send would be counted too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{dead_addr, expect_error, gateway, metrics_text, sample};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_and_accepted_as_json_or_text() {
    let gw = gateway(format!("http://{}", dead_addr()), None, None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let url = format!("{base}/api/v1/events");
    let r = c
        .post(&url)
        .json(&json!({"event": "view", "user_id": "u1", "product_id": "p1", "referrer": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "referrer").await;
    // navigator.sendBeacon with a string body.
    let r = c
        .post(&url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(r#"{"event":"click","user_id":"u1","product_id":"p1","session_id":"s1","ts":"2026-11-05T10:00:00Z","source":"recommendations"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": true}));
    let r = c
        .post(&url)
        .json(&json!({"event": "purchase", "user_id": "u1", "product_id": "p1", "ts": 1_793_872_800_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    for (body, needle) in [
        (
            json!({"event": "hover", "user_id": "u1", "product_id": "p1"}),
            "hover",
        ),
        (
            json!({"event": "view", "user_id": "u1", "product_id": ""}),
            "product_id",
        ),
        (
            json!({"event": "view", "user_id": "u1", "product_id": "p1", "ts": "yesterday"}),
            "ts",
        ),
    ] {
        expect_error(c.post(&url).json(&body).send().await.unwrap(), 400, needle).await;
    }
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=view")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "content-type").await;
    let big = json!({"event": "view", "user_id": "u1", "product_id": "p".repeat(20_000)});
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body(big.to_string())
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "too large").await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        sample(
            &text,
            "infermesh_gateway_events_total",
            &["event=\"click\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "infermesh_gateway_events_total",
            &["event=\"purchase\""]
        ),
        Some(1.0)
    );
    gw.shutdown().await.unwrap();
}
