//! The gateway in front of a real inference server, both on port 0.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

mod common;

use common::expect_error as expect;

struct Stack {
    server: common::Upstream,
    gateway: infermesh_gateway::RunningGateway,
}

async fn stack() -> Stack {
    let server = common::upstream(true).await;
    let gateway = common::gateway(server.url(), None, None).await;
    Stack { server, gateway }
}

fn example() -> Value {
    serde_json::from_str(infermesh_server::sample::EXAMPLE_SCORE_REQUEST).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_transactions_with_reasons_and_request_ids() {
    let st = stack().await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", st.gateway.addr);
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = c
        .post(format!("{base}/api/v1/fraud/score"))
        .header("x-request-id", "abc-123")
        .json(&example())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["transaction_id"], "tx-1001");
    assert_eq!(v["model"], "fraud");
    assert_eq!(v["version"], "1");
    let p = v["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(v["is_fraud"], p > 0.5);
    assert_eq!(v["reasons"].as_array().unwrap().len(), 3);
    // session_product_views was not sent: the reason, if listed, says it was missing.
    for reason in v["reasons"].as_array().unwrap() {
        if reason["feature"] == "session_product_views" {
            assert!(reason["value"].is_null());
        }
    }

    // top_k 0: no reasons.
    let mut no_reasons = example();
    no_reasons["top_k"] = json!(0);
    let v0: Value = c
        .post(format!("{base}/api/v1/fraud/score"))
        .json(&no_reasons)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v0["reasons"], json!([]));
    assert_eq!(v0["probability"], v["probability"]);

    // A request without an id gets a generated one.
    let r = c
        .post(format!("{base}/api/v1/fraud/score"))
        .json(&example())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"].to_str().unwrap().len(), 36);

    let batch = json!({"transactions": [example(), {"transaction_id": "tx-2", "features": {"amount": 5.0}}]});
    let v: Value = c
        .post(format!("{base}/api/v1/fraud/score/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][1]["transaction_id"], "tx-2");
    assert!((v["results"][0]["probability"].as_f64().unwrap() - p).abs() < 1e-9);

    let text = c
        .get(format!("http://{}/metrics", st.gateway.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "infermesh_gateway_requests_total{route=\"/api/v1/fraud/score\",status=\"200\"}"
        ),
        "{text}"
    );
    st.gateway.shutdown().await.unwrap();
    st.server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_resumes_from_text_and_base64_documents() {
    use base64::Engine;
    let s = stack().await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/api/v1/resumes/rank", s.gateway.addr);
    let strong = "Backend engineer, 6 years of experience with Python, Kubernetes and PostgreSQL.";
    let body = json!({
        "job_description": "Backend engineer: 4+ years of experience, Python, Kubernetes, PostgreSQL.",
        "resumes": [
            {"id": "baker", "text": "Baker with 10 years of experience making bread and cakes."},
            {"id": "dev", "document_base64":
                base64::engine::general_purpose::STANDARD.encode(strong)},
        ],
        "top_k": 2,
    });
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "minilm");
    assert_eq!(v["candidates"][0]["id"], "dev", "{v}");
    assert_eq!(
        v["candidates"][0]["breakdown"]["skill_coverage"], 1.0,
        "{v}"
    );
    assert_eq!(
        v["candidates"][1]["breakdown"]["matched_skills"],
        json!([]),
        "{v}"
    );
    assert_eq!(v["candidates"][0]["breakdown"]["required_years"], 4.0);
    // Bad input: both text and document, bad base64, an unreadable upload, no resumes.
    for (body, needle) in [
        (
            json!({"job_description": "x", "resumes": [{"id": "a", "text": "t", "document_base64": "dA=="}]}),
            "exactly one",
        ),
        (
            json!({"job_description": "x", "resumes": [{"id": "a", "document_base64": "%%%"}]}),
            "base64",
        ),
        (
            json!({"job_description": "x", "resumes": [{"id": "scan", "document_base64":
            base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.7\nbroken")}]}),
            "scan",
        ),
        (json!({"job_description": "x", "resumes": []}), "resumes"),
        (
            json!({"job_description": "x", "resumes": [{"id": "a", "txt": "t"}]}),
            "unknown field",
        ),
    ] {
        expect(c.post(&url).json(&body).send().await.unwrap(), 400, needle).await;
    }
    s.server.server.shutdown().await.unwrap();
    s.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors() {
    let st = stack().await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/api/v1/fraud/score", st.gateway.addr);
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect(r, 400, "").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "surprise": 1}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "surprise").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "features": {"shoe_size": 42}}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "shoe_size").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "features": {"amount": "lots"}}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": ""}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "transaction_id").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "top_k": 1000}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "top_k").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "model": "ghost"}))
        .send()
        .await
        .unwrap();
    expect(r, 404, "ghost").await;
    let r = c
        .post(&url)
        .json(&json!({"transaction_id": "x", "version": "9"}))
        .send()
        .await
        .unwrap();
    expect(r, 404, "9").await;
    let big = json!({"transaction_id": "x".repeat(20_000)});
    let r = c.post(&url).json(&big).send().await.unwrap();
    expect(r, 413, "too large").await;
    let r = c
        .post(format!(
            "http://{}/api/v1/fraud/score/batch",
            st.gateway.addr
        ))
        .json(&json!({"transactions": []}))
        .send()
        .await
        .unwrap();
    expect(r, 400, "1 to").await;
    let r = c
        .get(format!("http://{}/nope", st.gateway.addr))
        .send()
        .await
        .unwrap();
    expect(r, 404, "no such route").await;
    st.gateway.shutdown().await.unwrap();
    st.server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_503_not_a_hang() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let gw = common::gateway(format!("http://{dead}"), None, None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    expect(
        c.get(format!("{base}/readyz")).send().await.unwrap(),
        503,
        "unavailable",
    )
    .await;
    let r = c
        .post(format!("{base}/api/v1/fraud/score"))
        .json(&example())
        .send()
        .await
        .unwrap();
    expect(r, 503, "unavailable").await;
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let spec = infermesh_gateway::openapi::spec();
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/openapi.json",
        "/api/v1/fraud/score",
        "/api/v1/fraud/score/batch",
        "/api/v1/resumes/rank",
        "/api/v1/recommendations/{user_id}",
        "/api/v1/events",
        "/api/v1/reviews",
        "/api/v1/experiments",
        "/t.js",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} undocumented");
    }
    assert_eq!(spec["openapi"], "3.1.0");
    // Every $ref resolves.
    let text = spec.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            spec["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
}
