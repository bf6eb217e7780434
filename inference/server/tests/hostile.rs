//! Hostile model files served beside good ones: every case of `models/trees/tests/hostile/`
//! (and a `[limits]` section stricter than the model) is refused with its reason in the
//! repository index, while the sample fraud model keeps serving; and the repository API stays
//! closed without `--enable-model-control`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/trees/tests/hostile")
}

/// `(case, expected reason)` from the table in the directory's README: the first
/// back-quoted text of each row's third column.
fn cases() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(hostile_dir().join("README.md")).unwrap();
    let mut out = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let file = cols[1].trim_matches('`');
        let reason = cols[3].split('`').nth(1).unwrap_or_default();
        let case = file.split('/').next().unwrap().to_string();
        out.push((case, reason.to_string()));
    }
    out
}

/// The sample fraud model as `name`, with `limits` as its `[limits]` section.
fn sample_fraud_with_limits(repo: &Path, name: &str, limits: &str) {
    std::fs::create_dir_all(repo.join(name).join("1")).unwrap();
    std::fs::copy(sample_model_path(), repo.join(name).join("1/model.json")).unwrap();
    std::fs::write(
        repo.join(name).join("config.toml"),
        format!("platform = \"xgboost\"\n[limits]\n{limits}\n"),
    )
    .unwrap();
}

/// The repository index (`POST /v2/repository/index`).
async fn repository_index(base: &str) -> Vec<Value> {
    let index = post_json(&format!("{base}/v2/repository/index"), &json!({})).await;
    index.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_models_are_refused_with_their_reason_and_the_rest_serve() {
    let repo = sample_repo();
    let r = repo.path();
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "the README's table lists the cases: {cases:?}"
    );
    for (case, _) in &cases {
        let from = hostile_dir().join(case);
        let file = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_file())
            .unwrap();
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let platform = if name.ends_with(".txt") {
            "lightgbm"
        } else {
            "xgboost"
        };
        let dir = r.join(format!("h_{case}"));
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::copy(&file, dir.join("1").join(&name)).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("platform = \"{platform}\"\nmodel_file = \"{name}\"\n"),
        )
        .unwrap();
    }
    // A good model with limits stricter than it: refused by the limit, named.
    sample_fraud_with_limits(r, "strict", "max_features = 8");
    // A limits key no family knows is a config error, not ignored.
    sample_fraud_with_limits(r, "typo", "max_featuers = 8");

    // A recommender whose files are past its limit.
    copy_dir(&r.join("recs"), &r.join("recs_strict"));
    let recs_config = std::fs::read_to_string(r.join("recs/config.toml")).unwrap();
    std::fs::write(
        r.join("recs_strict/config.toml"),
        format!("{recs_config}\n[limits]\nmax_file_bytes = 64\n"),
    )
    .unwrap();

    let s = start(r, 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.http_addr);
    let index = repository_index(&base).await;
    let reason = |model: &str| -> (String, String) {
        let row = index
            .iter()
            .find(|e| e["name"] == model && e["version"] == "1")
            .unwrap_or_else(|| panic!("{model} is not in the index: {index:?}"));
        (
            row["state"].as_str().unwrap().to_string(),
            row["reason"].as_str().unwrap().to_string(),
        )
    };
    for (case, expected) in &cases {
        let (state, why) = reason(&format!("h_{case}"));
        assert_eq!(state, "UNAVAILABLE", "{case}");
        assert!(
            why.contains(expected.as_str()),
            "{case}: '{why}' lacks '{expected}'"
        );
        // Asking it for an inference is UNAVAILABLE with the reason, not a crash.
        let r = c
            .post(format!("{base}/v2/models/h_{case}/infer"))
            .json(&json!({"inputs": [{"name": "input__0", "shape": [1, 2],
                "datatype": "FP32", "data": [0.0, 0.0]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{case}");
    }
    let (state, why) = reason("strict");
    assert_eq!(state, "UNAVAILABLE");
    assert!(why.contains("max_features = 8"), "{why}");
    let (state, why) = reason("recs_strict");
    assert_eq!(state, "UNAVAILABLE");
    assert!(why.contains("max_file_bytes = 64"), "{why}");
    let (state, _) = reason("recs");
    assert_eq!(state, "READY");
    let (state, why) = reason("typo");
    assert_eq!(state, "UNAVAILABLE");
    assert!(why.contains("max_featuers"), "{why}");

    // The good model serves, with the same values as the library.
    let row = row(7);
    let out = post_json(
        &format!("{base}/v2/models/fraud/infer"),
        &json!({"inputs": [{"name": "input__0", "shape": [1, FRAUD_FEATURES],
            "datatype": "FP32", "data": row}]}),
    )
    .await;
    let p = out["outputs"][0]["data"][0].as_f64().unwrap() as f32;
    assert!((p - direct_predict(&row)[0]).abs() < 1e-6, "{out}");
    s.shutdown().await.unwrap();
}

/// Without `--enable-model-control` the repository API answers 403 / PERMISSION_DENIED and
/// changes nothing; the index stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_api_is_closed_unless_enabled() {
    let repo = sample_repo();
    let mut args = args(repo.path(), 0.0, 1 << 20);
    args.enable_model_control = false;
    let s = infermesh_server::start(args.validate().unwrap())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.http_addr);
    for op in ["load", "unload"] {
        let r = c
            .post(format!("{base}/v2/repository/models/fraud/{op}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{op}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("--enable-model-control"),
            "{body}"
        );
    }
    let mut grpc = infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
        format!("http://{}", s.grpc_addr),
    )
    .await
    .unwrap();
    let err = grpc
        .repository_model_unload(infermesh_proto::inference::RepositoryModelUnloadRequest {
            model_name: "fraud".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let index = repository_index(&base).await;
    assert!(
        index
            .iter()
            .any(|e| e["name"] == "fraud" && e["state"] == "READY")
    );
    assert_eq!(served_version(&base, "fraud").await, "1");
    s.shutdown().await.unwrap();
}
