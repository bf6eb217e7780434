//! KServe V2 REST against a real server on port 0.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn url(s: &infermesh_server::RunningServer, path: &str) -> String {
    format!("http://{}{path}", s.http_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_ready() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(url(&s, "/v2/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(url(&s, "/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let meta: Value = c
        .get(url(&s, "/v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], "infermesh");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "model_repository")
    );
    let m: Value = c
        .get(url(&s, "/v2/models/fraud"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["name"], "fraud");
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(m["platform"], "xgboost");
    assert_eq!(
        m["inputs"][0],
        json!({"name": "input__0", "datatype": "FP32", "shape": [-1, 16]})
    );
    assert_eq!(m["outputs"][0]["shape"], json!([-1]));
    assert_eq!(
        c.get(url(&s, "/v2/models/fraud/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(url(&s, "/v2/models/fraud/versions/1/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(url(&s, "/v2/models/fraud/versions/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let cfg: Value = c
        .get(url(&s, "/v2/models/fraud/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["input"][0]["dims"], json!([16]));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_json_and_binary_match_the_model() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let mut rows: Vec<f32> = Vec::new();
    for i in 0..4 {
        rows.extend(row(i));
    }
    rows[4] = f32::NAN; // a missing value
    let expected = direct_predict(&rows);
    let data: Vec<Value> = rows
        .iter()
        .map(|v| if v.is_nan() { Value::Null } else { json!(v) })
        .collect();
    let body = json!({"id": "req-7", "inputs": [{"name": "input__0", "shape": [4, 16], "datatype": "FP32", "data": data}]});
    let r = c
        .post(url(&s, "/v2/models/fraud/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "req-7");
    assert_eq!(v["model_name"], "fraud");
    assert_eq!(v["model_version"], "1");
    assert_eq!(v["outputs"][0]["shape"], json!([4]));
    let got: Vec<f64> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - f64::from(*e)).abs() < 1e-6, "{g} vs {e}");
    }

    // Binary tensor data extension, FP64 input, binary output.
    let mut bin = Vec::new();
    for v in &rows {
        bin.extend_from_slice(&f64::from(*v).to_le_bytes());
    }
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "input__0", "shape": [4, 16], "datatype": "FP64", "parameters": {"binary_data_size": bin.len()}}],
        "outputs": [{"name": "output__0", "parameters": {"binary_data": true}}]
    }))
    .unwrap();
    let mut full = header.clone();
    full.extend_from_slice(&bin);
    let r = c
        .post(url(&s, "/v2/models/fraud/versions/1/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(full)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
    let out: Vec<f32> = bytes[json_len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (g, e) in out.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }

    // INT64, INT32 and BOOL inputs are accepted as features too.
    for dt in ["INT64", "INT32", "BOOL"] {
        let data: Vec<Value> = (0..16)
            .map(|i| {
                if dt == "BOOL" {
                    json!(i % 2 == 0)
                } else {
                    json!(i)
                }
            })
            .collect();
        let body = json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": dt, "data": data}]});
        let r = c
            .post(url(&s, "/v2/models/fraud/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{dt}");
    }
    s.shutdown().await.unwrap();
}

/// Sends only the headers of a POST declaring `len` body bytes and reads the answer.
async fn raw_post(addr: std::net::SocketAddr, path: &str, len: usize) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

async fn read_response(s: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // A reset after the answer reads as the end.
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap_or_default();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(i) = text.find("\r\n\r\n") {
            let cl = text[..i]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + cl {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Sends up to `chunks` chunks of 1000 spaces with chunked encoding (stopping when the server
/// stops reading) and reads the answer.
async fn raw_post_chunked(addr: std::net::SocketAddr, path: &str, chunks: usize) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
    for _ in 0..chunks {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server answered and closed: read what it said
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    read_response(&mut s).await
}

async fn expect_error(r: reqwest::Response, status: u16, contains: &str) {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains(contains),
        "'{msg}' does not contain '{contains}'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 64 * 1024).await;
    let c = reqwest::Client::new();
    let infer = url(&s, "/v2/models/fraud/infer");
    let one = |dt: &str, shape: Value, data: Value| json!({"inputs": [{"name": "input__0", "shape": shape, "datatype": dt, "data": data}]});

    let r = c
        .post(&infer)
        .json(&one("BYTES", json!([1, 16]), json!(vec!["a"; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "BYTES").await;
    let r = c
        .post(&infer)
        .json(&one("FP16", json!([1, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "FP16").await;
    let r = c
        .post(&infer)
        .json(&one("FP32", json!([1, 15]), json!(vec![0; 15])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "expects 16").await;
    let r = c
        .post(&infer)
        .json(&one("FP32", json!([2, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "elements").await;
    let r = c
        .post(&infer)
        .json(&one("FP32", json!([1, -16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "negative").await;
    // A shape claiming far more elements than were sent is refused, not allocated.
    let huge = one(
        "FP32",
        json!([1_000_000_000_000i64, 16]),
        json!(vec![0; 16]),
    );
    let r = c.post(&infer).json(&huge).send().await.unwrap();
    expect_error(r, 400, "elements").await;
    let r = c
        .post(&infer)
        .json(&one("FP32", json!([1, 16]), json!(vec!["x"; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "not a valid FP32").await;
    let bad_name = json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0; 16]}]});
    let r = c.post(&infer).json(&bad_name).send().await.unwrap();
    expect_error(r, 400, "input__0").await;
    let bad_out = json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": vec![0; 16]}], "outputs": [{"name": "nope"}]});
    let r = c.post(&infer).json(&bad_out).send().await.unwrap();
    expect_error(r, 400, "unknown output").await;
    let r = c
        .post(&infer)
        .header("content-type", "application/json")
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "malformed").await;
    let r = c
        .post(&infer)
        .header("Inference-Header-Content-Length", "999999")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "larger than the body").await;
    let r = c
        .post(url(&s, "/v2/models/nope/infer"))
        .json(&one("FP32", json!([1, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "unknown model").await;
    let r = c
        .post(url(&s, "/v2/models/fraud/versions/9/infer"))
        .json(&one("FP32", json!([1, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "no version 9").await;
    let r = c
        .post(url(&s, "/v2/models/fraud/versions/x/infer"))
        .json(&one("FP32", json!([1, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "not a non-negative integer").await;
    let r = c.get(url(&s, "/v2/models/nope")).send().await.unwrap();
    expect_error(r, 404, "unknown model").await;
    let r = c.get(url(&s, "/v2/nothing/here")).send().await.unwrap();
    expect_error(r, 404, "no such endpoint").await;
    // Over --max-request-bytes: refused with 413 and a JSON body, before the body is read.
    let (status, body) = raw_post(s.http_addr, "/v2/models/fraud/infer", 10_000_000).await;
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("max-request-bytes"));
    // A chunked body (no Content-Length) that grows past the limit is refused too.
    let (status, body) = raw_post_chunked(s.http_addr, "/v2/models/fraud/infer", 200).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max-request-bytes"), "{body}");
    // A fresh client: the refused connections above were closed by the server.
    let c = reqwest::Client::new();
    // The server still serves after all of that.
    let r = c
        .post(&infer)
        .json(&one("FP32", json!([1, 16]), json!(vec![0; 16])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A request larger than the model's whole admission capacity can never run: 413 with the
/// limit, not 429 "retry later" (being refused while the queue is full is the batcher's
/// unit test). One that fits runs.
async fn requests_larger_than_admission_capacity_get_413() {
    let repo = sample_repo();
    let cfg = repo.path().join("fraud/config.toml");
    std::fs::write(
        &cfg,
        "platform = \"xgboost\"\nmax_batch_size = 8\nmax_queue_rows = 16\n",
    )
    .unwrap();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let body = json!({"inputs": [{"name": "input__0", "shape": [17, 16], "datatype": "FP32", "data": vec![0.5; 17 * 16]}]});
    let r = c
        .post(url(&s, "/v2/models/fraud/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "admits at most 16").await;
    let body = json!({"inputs": [{"name": "input__0", "shape": [16, 16], "datatype": "FP32", "data": vec![0.5; 16 * 16]}]});
    let r = c
        .post(url(&s, "/v2/models/fraud/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_model_version_and_protocol() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let body = json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": row(1)}]});
    for _ in 0..3 {
        assert_eq!(
            c.post(url(&s, "/v2/models/fraud/infer"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let text = c
        .get(format!("http://{}/metrics", s.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("infermesh_inference_requests_total")
                && l.contains("protocol=\"rest\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    assert!(line.contains("model=\"fraud\"") && line.contains("version=\"1\""));
    assert!(line.trim_end().ends_with(" 3"), "{line}");
    assert!(text.contains("infermesh_inference_request_duration_seconds_bucket"));
    assert!(text.contains("infermesh_batch_size"));
    assert!(text.contains("infermesh_model_load_events_total"));
    assert!(text.contains("infermesh_queue_depth"));
    s.shutdown().await.unwrap();
}
