//! The inference log and live drift on a real server (port 0): V2 REST and typed gRPC
//! requests to the sample fraud model land in Parquet files with their features and scores,
//! and the model's recent rows are compared with its drift reference into Prometheus gauges.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use infermesh_proto::v1;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use infermesh_server::sample::{SAMPLE_FRAUD_FEATURES, sample_fraud_rows};
use polars::prelude::*;
use serde_json::json;

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> DataFrame {
    let f = std::fs::File::open(path).unwrap();
    ParquetReader::new(f).finish().unwrap()
}

async fn infer_rows(c: &reqwest::Client, s: &infermesh_server::RunningServer, rows: &[f32]) {
    let n = rows.len() / SAMPLE_FRAUD_FEATURES.len();
    let body = json!({
        "id": "req-7",
        "inputs": [{"name": "input__0", "shape": [n, SAMPLE_FRAUD_FEATURES.len()],
            "datatype": "FP32", "data": rows}]
    });
    let r = c
        .post(format!("http://{}/v2/models/fraud/infer", s.http_addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The generator's rows with most features (spend, risk, time, account age) moved far off
/// the training distribution.
fn shifted(n: usize) -> Vec<f32> {
    let mut rows = sample_fraud_rows(n, 99);
    for r in rows.chunks_exact_mut(SAMPLE_FRAUD_FEATURES.len()) {
        r[0] *= 25.0; // amount
        r[1] = 3.0; // hour_of_day
        r[3] = 0.9; // merchant_risk
        r[5] *= 10.0; // user_avg_spend
        r[12] = 1.0; // account_age_days
        r[14] += 30.0; // session_product_views
        r[4] = 0.8; // device_risk_score
        r[6] *= 25.0; // amount_to_avg_ratio
        r[9] += 900.0; // distance_from_home_km
    }
    rows
}

/// A server over `repo` logging every row into `log_dir`, its live drift evaluated by the
/// test (`evaluate_now`), not by the clock.
async fn start_monitored(
    repo: &Path,
    log_dir: &Path,
    drift_window: usize,
    drift_min_rows: usize,
) -> infermesh_server::RunningServer {
    let mut args = common::args(repo, 0.0, 8 << 20);
    args.monitor = infermesh_server::MonitorArgs {
        log_dir: Some(log_dir.to_path_buf()),
        log_sample_rate: 1.0,
        drift_interval: 3600.0,
        drift_window,
        drift_min_rows,
        ..Default::default()
    };
    infermesh_server::start(args.validate().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_to_parquet_and_drift_reaches_the_gauges() {
    let repo = sample_repo();
    assert!(
        repo.path()
            .join("fraud/1/drift_reference.parquet")
            .is_file(),
        "the sample model carries its drift reference"
    );
    let log_dir = tempfile::tempdir().unwrap();
    let s = start_monitored(repo.path(), log_dir.path(), 300, 100).await;
    let drift = s.monitoring.drift().expect("live drift is on");
    let c = reqwest::Client::new();

    // Too few rows yet: nothing evaluated.
    let sent = sample_fraud_rows(60, 7);
    infer_rows(&c, &s, &sent).await;
    assert!(
        drift.evaluate_now().is_empty(),
        "60 rows < --drift-min-rows"
    );

    // Rows from the training generator: no dataset drift.
    infer_rows(&c, &s, &sample_fraud_rows(240, 8)).await;
    let e = drift.evaluate_now();
    assert_eq!(e.len(), 1, "{e:?}");
    let e = &e[0];
    assert_eq!((e.model.as_str(), e.version, e.rows), ("fraud", 1, 300));
    let tested: Vec<&str> = e.columns.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["amount", "merchant_risk", "hour_of_day", "output__0"] {
        assert!(tested.contains(&want), "{want} not tested: {tested:?}");
    }
    assert!(!e.dataset_drift, "same distribution drifted: {e:?}");

    // A shifted window: the dataset drifts, amount and the model's scores among the columns.
    infer_rows(&c, &s, &shifted(300)).await;
    let e = drift.evaluate_now().remove(0);
    assert!(e.dataset_drift, "{e:?}");
    let col = |name: &str| &e.columns.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(col("amount").drift_detected);
    assert!(col("output__0").drift_detected, "prediction drift");
    assert_eq!(col("amount").stattest.name(), "wasserstein");

    let metrics = metrics_text(&s).await;
    for want in [
        r#"infermesh_drift_score{model="fraud",version="1",feature="amount",method="wasserstein"}"#,
        r#"infermesh_drift_detected{model="fraud",version="1",feature="amount",method="wasserstein"} 1"#,
        r#"infermesh_dataset_drift{model="fraud",version="1"} 1"#,
        r#"infermesh_drift_window_rows{model="fraud",version="1"} 300"#,
    ] {
        assert!(metrics.contains(want), "{want} not in /metrics");
    }
    assert!(metrics.contains("infermesh_dataset_drift_share{model=\"fraud\",version=\"1\"}"));

    // A typed FraudScoring request is observed too (features by name, missing ones NaN).
    let mut g = FraudScoringClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let features: HashMap<String, f64> = [("amount".to_string(), 4321.0)].into();
    g.score(v1::ScoreRequest {
        transaction_id: "t-typed".into(),
        features,
        ..Default::default()
    })
    .await
    .unwrap();

    // Every row is in the log: 60 + 240 + 300 V2 rows and the typed one.
    let log = s.monitoring.log().expect("the log is on");
    assert!(log.flush(Duration::from_secs(10)));
    let files = parquet_files(log_dir.path());
    assert!(!files.is_empty());
    for f in &files {
        let rel = f.strip_prefix(log_dir.path()).unwrap();
        let parts: Vec<_> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(&parts[..2], ["fraud", "1"], "{rel:?}");
        assert_eq!(parts[2].len(), 10, "a day folder: {rel:?}");
    }
    let frames: Vec<DataFrame> = files.iter().map(|f| read(f)).collect();
    let rows: usize = frames.iter().map(DataFrame::height).sum();
    assert_eq!(rows, 601);
    let df = &frames[0];
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut want = vec!["timestamp_ms", "model", "version"];
    want.extend(SAMPLE_FRAUD_FEATURES);
    want.push("output__0");
    assert_eq!(names, want, "no request_id without log_raw");
    let amount = df.column("amount").unwrap().f32().unwrap().clone();
    assert_eq!(amount.get(0), Some(sent[0]));
    let model = df.column("model").unwrap().str().unwrap().clone();
    assert_eq!(model.get(0), Some("fraud"));
    let score = df.column("output__0").unwrap().f32().unwrap().clone();
    let expected = direct_predict(&sent[..SAMPLE_FRAUD_FEATURES.len()])[0];
    assert!((score.get(0).unwrap() - expected).abs() < 1e-6);
    let all = frames
        .iter()
        .flat_map(|f| {
            let a = f.column("amount").unwrap().f32().unwrap().clone();
            (0..a.len()).filter_map(|i| a.get(i)).collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert!(all.contains(&4321.0), "the typed request's row is logged");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_can_opt_out_and_a_sample_rate_of_zero_logs_nothing() {
    let repo = sample_repo();
    let config = repo.path().join("fraud/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[monitoring]\nlog = false\ndrift = false\n");
    std::fs::write(&config, text).unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let mut args = common::args(repo.path(), 0.0, 8 << 20);
    args.monitor = infermesh_server::MonitorArgs {
        log_dir: Some(log_dir.path().to_path_buf()),
        log_sample_rate: 1.0,
        ..Default::default()
    };
    let s = infermesh_server::start(args.validate().unwrap())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    infer_rows(&c, &s, &sample_fraud_rows(200, 1)).await;
    let handle = s.manager.get("fraud", None).unwrap();
    assert!(handle.monitor().is_none(), "the model opted out");
    s.monitoring.log().unwrap().flush(Duration::from_secs(10));
    assert!(parquet_files(log_dir.path()).is_empty());
    s.shutdown().await.unwrap();

    // An unknown [monitoring] key is refused with the model's config error.
    let repo = sample_repo();
    let config = repo.path().join("fraud/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[monitoring]\nlog_everything = true\n");
    std::fs::write(&config, text).unwrap();
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let status = s.manager.model("fraud").unwrap();
    let err = status.error.clone().unwrap();
    assert!(err.contains("log_everything"), "{err}");
    s.shutdown().await.unwrap();

    // A hostile reference (not Parquet at all) is refused; the model still serves, unwatched.
    let repo = sample_repo();
    std::fs::write(
        repo.path().join("fraud/1/drift_reference.parquet"),
        b"PAR1 not really",
    )
    .unwrap();
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let c = reqwest::Client::new();
    infer_rows(&c, &s, &sample_fraud_rows(5, 2)).await;
    assert!(s.manager.get("fraud", None).unwrap().monitor().is_none());
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains(r#"infermesh_drift_reference_errors_total{model="fraud",version="1"}"#),
        "the refused reference is counted"
    );
    s.shutdown().await.unwrap();

    // --log-sample-rate 0 with a directory: no log at all.
    let args = infermesh_server::MonitorArgs {
        log_dir: Some(log_dir.path().to_path_buf()),
        log_sample_rate: 0.0,
        ..Default::default()
    };
    assert!(args.validate().unwrap().log.is_none());
}

/// The recommender's scores: typed `Recommend` answers are logged as the V2 API answers them
/// (`score_0` best first ..., no user or item ids) and compared with the scores the sample
/// recommender gives its training users (its drift reference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendation_scores_are_logged_and_watched() {
    use infermesh_proto::v1::recommender_client::RecommenderClient;
    let repo = sample_repo();
    assert!(repo.path().join("recs/1/drift_reference.parquet").is_file());
    let log_dir = tempfile::tempdir().unwrap();
    let s = start_monitored(repo.path(), log_dir.path(), 100, 30).await;
    let mut c = RecommenderClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    for u in 1..=50 {
        let r = c
            .recommend(v1::RecommendRequest {
                user_id: format!("u{u}"),
                k: 10,
                model_name: "recs".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.items.len(), 10);
    }
    let e = s.monitoring.drift().unwrap().evaluate_now();
    let recs = e
        .iter()
        .find(|e| e.model == "recs")
        .expect("recs is watched");
    assert_eq!(recs.rows, 50);
    let tested: Vec<&str> = recs.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        tested.contains(&"score_0") && tested.contains(&"score_9"),
        "{tested:?}"
    );
    // The same users as the reference's: their scores did not drift.
    assert!(!recs.dataset_drift, "{recs:?}");

    s.monitoring.log().unwrap().flush(Duration::from_secs(10));
    let files: Vec<PathBuf> = parquet_files(log_dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/recs/"))
        .collect();
    assert!(!files.is_empty());
    let df = read(&files[0]);
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(names.contains(&"score_0".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("user") || n.contains("item")),
        "{names:?}"
    );
    s.shutdown().await.unwrap();
}
