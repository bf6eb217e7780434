//! Model repository behaviour: Triton FIL directories, broken models, version policy, hot
//! reload without failing in-flight requests, and the repository extension.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn versions(c: &reqwest::Client, base: &str, model: &str) -> Value {
    let r = c
        .get(format!("{base}/v2/models/{model}"))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Value::Null;
    }
    r.json::<Value>().await.unwrap()["versions"].clone()
}

const FIL_CONFIG: &str = r#"
name: "fil_fraud"
backend: "fil"
max_batch_size: 4096
input [{ name: "input__0" data_type: TYPE_FP32 dims: [ 16 ] }]
output [{ name: "output__0" data_type: TYPE_FP32 dims: [ 2 ] }]
instance_group [{ kind: KIND_CPU }]
parameters [
  { key: "model_type" value: { string_value: "xgboost_json" } },
  { key: "output_class" value: { string_value: "true" } },
  { key: "predict_proba" value: { string_value: "true" } },
  { key: "threshold" value: { string_value: "0.5" } }
]
dynamic_batching { max_queue_delay_microseconds: 50 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_fil_directory_and_broken_models() {
    let repo = sample_repo();
    let r = repo.path();
    std::fs::create_dir_all(r.join("fil_fraud/1")).unwrap();
    std::fs::copy(sample_model_path(), r.join("fil_fraud/1/xgboost.json")).unwrap();
    std::fs::write(r.join("fil_fraud/config.pbtxt"), FIL_CONFIG).unwrap();
    // A corrupt artifact and an unsupported backend.
    std::fs::create_dir_all(r.join("corrupt/1")).unwrap();
    std::fs::write(r.join("corrupt/config.toml"), "platform = \"xgboost\"").unwrap();
    std::fs::write(r.join("corrupt/1/model.json"), "{\"learner\": 42").unwrap();
    std::fs::create_dir_all(r.join("onnx/1")).unwrap();
    std::fs::write(
        r.join("onnx/config.pbtxt"),
        "name: \"onnx\"\nbackend: \"onnxruntime\"",
    )
    .unwrap();

    let s = start(r, 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.http_addr);
    // FIL: same tensor names, [n, 2] class probabilities.
    let row = row(4);
    let p = direct_predict(&row)[0];
    let body = json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": row}]});
    let v = post_json(&format!("{base}/v2/models/fil_fraud/infer"), &body).await;
    assert_eq!(v["outputs"][0]["name"], "output__0");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 2]));
    let got = v["outputs"][0]["data"].as_array().unwrap();
    assert!((got[1].as_f64().unwrap() - f64::from(p)).abs() < 1e-6);
    assert!((got[0].as_f64().unwrap() - (1.0 - f64::from(p))).abs() < 1e-6);
    let m: Value = c
        .get(format!("{base}/v2/models/fil_fraud"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["platform"], "fil");

    // Broken models are reported, not served, and do not stop the others.
    assert_eq!(
        c.get(format!("{base}/v2/models/corrupt/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let r503 = c
        .get(format!("{base}/v2/models/corrupt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r503.status(), 503);
    let err: Value = r503.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("not ready"));
    let index: Value = c
        .post(format!("{base}/v2/repository/index"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = index.as_array().unwrap();
    let corrupt = rows.iter().find(|e| e["name"] == "corrupt").unwrap();
    assert_eq!(corrupt["state"], "UNAVAILABLE");
    assert!(!corrupt["reason"].as_str().unwrap().is_empty());
    let onnx = rows.iter().find(|e| e["name"] == "onnx").unwrap();
    assert!(onnx["reason"].as_str().unwrap().contains("onnxruntime"));
    assert!(
        rows.iter()
            .any(|e| e["name"] == "fraud" && e["state"] == "READY" && e["version"] == "1")
    );
    let ready_only: Value = c
        .post(format!("{base}/v2/repository/index"))
        .json(&json!({"ready": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready_only
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "READY")
    );
    assert_eq!(
        c.get(format!("{base}/v2/models/fraud/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_versions_without_failing_requests() {
    let repo = sample_repo();
    let r = repo.path().to_path_buf();
    let s = start(&r, 0.05, 1 << 20).await;
    let base = format!("http://{}", s.http_addr);
    let c = reqwest::Client::new();

    // Load: requests never stop while versions come and go.
    let load = Load::start(&base, "fraud", 4);
    for v in 2..=4u64 {
        // Write the artifact first, then make the folder appear atomically.
        let tmp = r.join(format!("fraud/.tmp{v}"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(sample_model_path(), tmp.join("model.json")).unwrap();
        std::fs::rename(&tmp, r.join(format!("fraud/{v}"))).unwrap();
        let want = json!([v.to_string()]);
        wait_for(
            async || versions(&c, &base, "fraud").await == want,
            "the new version",
        )
        .await;
        // The retired version is gone from disk too, as a deploy would do.
        std::fs::remove_dir_all(r.join(format!("fraud/{}", v - 1))).unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "a request failed during reloads");
    assert!(ok > 20);
    assert_eq!(served_version(&base, "fraud").await, "4");

    // A new model directory appears, then disappears.
    copy_dir(&r.join("fraud"), &r.join("fraud_b"));
    wait_for(
        async || versions(&c, &base, "fraud_b").await == json!(["4"]),
        "the new model",
    )
    .await;
    std::fs::remove_dir_all(r.join("fraud_b")).unwrap();
    wait_for(
        async || versions(&c, &base, "fraud_b").await.is_null(),
        "the model to retire",
    )
    .await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_policies_select_versions() {
    let repo = sample_repo();
    let r = repo.path();
    for v in [2, 3] {
        copy_dir(&r.join("fraud/1"), &r.join(format!("fraud/{v}")));
    }
    std::fs::write(
        r.join("fraud/config.toml"),
        "platform = \"xgboost\"\nversion_policy = { latest = 2 }",
    )
    .unwrap();
    copy_dir(&r.join("fraud"), &r.join("all"));
    std::fs::write(
        r.join("all/config.toml"),
        "platform = \"xgboost\"\nversion_policy = \"all\"",
    )
    .unwrap();
    copy_dir(&r.join("fraud"), &r.join("specific"));
    std::fs::write(
        r.join("specific/config.toml"),
        "platform = \"xgboost\"\nversion_policy = { specific = [1, 3] }",
    )
    .unwrap();
    let s = start(r, 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.http_addr);
    assert_eq!(versions(&c, &base, "fraud").await, json!(["2", "3"]));
    assert_eq!(versions(&c, &base, "all").await, json!(["1", "2", "3"]));
    assert_eq!(versions(&c, &base, "specific").await, json!(["1", "3"]));
    assert_eq!(
        c.get(format!("{base}/v2/models/specific/versions/2/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_load_and_unload() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.05, 1 << 20).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.http_addr);
    assert_eq!(
        c.post(format!("{base}/v2/repository/models/fraud/unload"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/v2/models/fraud/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Polling does not bring an unloaded model back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.get(format!("{base}/v2/models/fraud/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let index: Value = c
        .post(format!("{base}/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "fraud" && e["reason"] == "unloaded")
    );
    assert_eq!(
        c.post(format!("{base}/v2/repository/models/fraud/load"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/v2/models/fraud/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(format!("{base}/v2/repository/models/ghost/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{base}/v2/repository/models/ghost/unload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{base}/v2/repository/models/..%2Fetc/load"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    s.shutdown().await.unwrap();
}
