//! The Isolation Forest family through the server: KServe V2 REST (JSON and binary) and gRPC,
//! metadata and model config from the family's description, the typed
//! `infermesh.v1.Anomaly/Score`, and a hostile artifact refused while the rest serve.
#![cfg(feature = "anomaly")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use infermesh_anomaly::serving::pb::anomaly_client::AnomalyClient;
use infermesh_anomaly::serving::pb::{AnomalyRow, AnomalyScoreRequest};
use infermesh_anomaly::{IsolationForest, LoadLimits};
use infermesh_proto::inference as v2pb;
use serde_json::{Value, json};

/// Two trees over two features (max_samples 4, offset -0.56): rows far from 10 / 0.5 are
/// isolated faster.
const FOREST: &str = r#"{
  "format": "isolation-forest", "version": 1, "n_features": 2,
  "feature_names": ["amount", "hour"], "max_samples": 4, "offset": -0.56,
  "trees": [
    {"children_left": [1, -1, 3, -1, -1], "children_right": [2, -1, 4, -1, -1],
     "feature": [0, -2, 1, -2, -2], "threshold": [10.0, -2, 0.5, -2, -2],
     "n_node_samples": [4, 1, 3, 2, 1]},
    {"features": [1], "children_left": [1, -1, -1], "children_right": [2, -1, -1],
     "feature": [0, -2, -2], "threshold": [0.5, -2, -2], "n_node_samples": [4, 3, 1]}
  ]}"#;

fn write_model(repo: &Path, name: &str, artifact: &str) {
    let dir = repo.join(name).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("isolation_forest.json"), artifact).unwrap();
    std::fs::write(
        repo.join(name).join("config.toml"),
        "platform = \"isolation-forest\"\nmax_batch_size = 8\nmax_queue_rows = 64\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_forest_serves_v2_typed_and_refuses_a_hostile_artifact() {
    let repo = tempfile::tempdir().unwrap();
    write_model(repo.path(), "anomaly", FOREST);
    // A cycle (node 2's left child is the root): refused with its reason; the rest serve.
    write_model(
        repo.path(),
        "hostile",
        &FOREST.replace("[1, -1, 3, -1, -1]", "[1, -1, 0, -1, -1]"),
    );
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let base = format!("http://{}", s.http_addr);
    let forest = IsolationForest::from_json(FOREST.as_bytes(), &LoadLimits::default()).unwrap();
    let rows = [[5.0f32, 0.0], [20.0, 1.0], [10.0, 0.5]];
    let want: Vec<_> = rows.iter().map(|r| forest.score_row(r).unwrap()).collect();
    // Rows that differ in verdict, so `is_anomaly` is tested both ways.
    assert!(want.iter().any(|w| w.is_anomaly()) && want.iter().any(|w| !w.is_anomaly()));

    // Metadata and Triton model config come from the family.
    let meta = get_json(&format!("{base}/v2/models/anomaly")).await;
    assert_eq!(meta["platform"], "isolation-forest");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 2]));
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "is_anomaly", "datatype": "BOOL", "shape": [-1]})
    );
    let config = get_json(&format!("{base}/v2/models/anomaly/config")).await;
    assert_eq!(config["backend"], "infermesh-anomaly");
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["output"][1]["data_type"], "TYPE_BOOL");

    // REST JSON.
    let body = json!({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [3, 2],
        "data": rows.concat()}]});
    let out = post_json(&format!("{base}/v2/models/anomaly/infer"), &body).await;
    let score: Vec<f64> = out["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (got, w) in score.iter().zip(&want) {
        assert!((got - w.score).abs() < 1e-6, "{got} vs {}", w.score);
    }
    let verdicts: Vec<Value> = want.iter().map(|w| Value::Bool(w.is_anomaly())).collect();
    assert_eq!(out["outputs"][1]["data"], Value::Array(verdicts));
    assert_eq!(out["outputs"][1]["datatype"], "BOOL");
    // Wrong width, too many rows, an unknown output: INVALID_ARGUMENT with the reason.
    let client = reqwest::Client::new();
    for (bad, why) in [
        (
            json!({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
            "features",
        ),
        (
            json!({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [9, 2], "data": vec![1.0; 18]}]}),
            "max_batch_size",
        ),
        (
            json!({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
                "outputs": [{"name": "decision"}]}),
            "unknown output",
        ),
    ] {
        let r = client
            .post(format!("{base}/v2/models/anomaly/infer"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(why), "{e}");
    }

    // gRPC V2 with raw contents: BOOL comes back one byte per element.
    let mut g = v2pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!(
        "http://{}",
        s.grpc_addr
    ))
    .await
    .unwrap();
    let raw: Vec<u8> = rows.concat().iter().flat_map(|v| v.to_le_bytes()).collect();
    let resp = g
        .model_infer(v2pb::ModelInferRequest {
            model_name: "anomaly".into(),
            inputs: vec![v2pb::model_infer_request::InferInputTensor {
                name: "input__0".into(),
                datatype: "FP32".into(),
                shape: vec![3, 2],
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bools: Vec<u8> = want.iter().map(|w| u8::from(w.is_anomaly())).collect();
    assert_eq!(resp.raw_output_contents[1], bools);

    // The typed service, by position and by name; the default model is "anomaly".
    let mut a = AnomalyClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let typed = a
        .score(AnomalyScoreRequest {
            rows: vec![
                AnomalyRow {
                    values: rows[0].to_vec(),
                    ..Default::default()
                },
                AnomalyRow {
                    features: [("amount".to_string(), 20.0), ("hour".to_string(), 1.0)]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (typed.model.as_str(), typed.version.as_str()),
        ("anomaly", "1")
    );
    for (got, w) in typed.results.iter().zip(&want) {
        assert!((got.score - w.score).abs() < 1e-6);
        assert!((got.decision - w.decision).abs() < 1e-6);
        assert_eq!(got.is_anomaly, w.is_anomaly());
    }
    let missing = a
        .score(AnomalyScoreRequest {
            rows: vec![AnomalyRow {
                features: [("amount".to_string(), 1.0)].into_iter().collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert!(missing.message().contains("hour"), "{}", missing.message());
    let wrong_family = a
        .score(AnomalyScoreRequest {
            model: "hostile".into(),
            rows: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_family.code(), tonic::Code::Unavailable);

    // The hostile version is not served, and the index says why.
    let index = post_json(&format!("{base}/v2/repository/index"), &json!({})).await;
    let row = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hostile" && r["version"] == "1")
        .cloned()
        .unwrap();
    assert!(
        row["reason"].as_str().unwrap().contains("later node"),
        "{row}"
    );
    s.shutdown().await.unwrap();
}
