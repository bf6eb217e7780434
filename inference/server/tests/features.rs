//! Model inputs filled from the feature store: FraudScoring reads user_avg_spend and
//! device_risk_score for the request's user and device, the recommender reads
//! session_product_views; a store past its deadline degrades to the missing-value path.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use infermesh_features::Timestamp;
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::store::{
    MemoryStore, OnlineStore, ReadOp, StoreFuture, StoredRow, WriteOp,
};
use infermesh_features::types::value::Val;
use infermesh_features::types::{StringList, Value};
use infermesh_features::write::{RowWrite, write_rows};
use infermesh_proto::v1;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use infermesh_proto::v1::recommender_client::RecommenderClient;
use infermesh_server::features::FeatureSource;

const REGISTRY: &str = include_str!("../../../features/repo/features.toml");

fn v(val: Val) -> Value {
    Value { val: Some(val) }
}

fn row(view: &str, key: &str, id: &str, feature: &str, value: Val, age_s: i64) -> RowWrite {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    RowWrite {
        view: view.into(),
        entity: vec![(key.into(), v(Val::StringVal(id.into())))],
        features: vec![(feature.into(), v(value))],
        event_time: Timestamp {
            seconds: now - age_s,
            nanos: 0,
        },
    }
}

async fn seeded() -> (Arc<FeatureRegistry>, Arc<dyn OnlineStore>) {
    let registry = Arc::new(FeatureRegistry::from_toml(REGISTRY, None).unwrap());
    let store: Arc<dyn OnlineStore> = Arc::new(MemoryStore::new(1000, None));
    let rows = [
        row(
            "user_spend",
            "user_id",
            "u7",
            "user_avg_spend",
            Val::DoubleVal(99.5),
            60,
        ),
        // Older than the view's 30-day ttl: served as missing.
        row(
            "user_spend",
            "user_id",
            "u8",
            "user_avg_spend",
            Val::DoubleVal(5.0),
            40 * 86_400,
        ),
        row(
            "device_risk",
            "device_id",
            "dev-3",
            "device_risk_score",
            Val::DoubleVal(0.95),
            60,
        ),
        row(
            "session_views",
            "user_id",
            "u1",
            "session_product_views",
            Val::StringListVal(StringList {
                val: vec!["p5".into(), "p9".into()],
            }),
            60,
        ),
    ];
    write_rows(&registry, store.as_ref(), &rows).await.unwrap();
    (registry, store)
}

async fn serve(repo: &std::path::Path, source: FeatureSource) -> infermesh_server::RunningServer {
    let mut cfg = args(repo, 0.0, 1 << 20).validate().unwrap();
    cfg.feature_source = Some(Arc::new(source));
    infermesh_server::start(cfg).await.unwrap()
}

/// The sample transaction without the two store-held inputs.
fn transaction(user: &str, device: &str) -> v1::ScoreRequest {
    let names = infermesh_server::sample::SAMPLE_FRAUD_FEATURES;
    let features: HashMap<String, f64> = names
        .iter()
        .zip(common::row(3))
        .filter(|(n, _)| !matches!(**n, "user_avg_spend" | "device_risk_score"))
        .map(|(n, v)| (n.to_string(), f64::from(v)))
        .collect();
    v1::ScoreRequest {
        transaction_id: "t1".into(),
        features,
        top_k_reasons: Some(16),
        user_id: user.into(),
        device_id: device.into(),
        ..Default::default()
    }
}

fn reason(r: &v1::ScoreResponse, feature: &str) -> (f64, bool) {
    let x = r.reasons.iter().find(|x| x.feature == feature).unwrap();
    (x.value, x.missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fraud_scores_read_missing_inputs_from_the_store() {
    let (registry, store) = seeded().await;
    let repo = sample_repo();
    let s = serve(
        repo.path(),
        FeatureSource::new(registry, store, Duration::from_secs(2)),
    )
    .await;
    let mut c = FraudScoringClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let names = infermesh_server::sample::SAMPLE_FRAUD_FEATURES;
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();

    // Both inputs from the store: the score is the model's on the filled row.
    let r = c
        .score(transaction("u7", "dev-3"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.features_degraded);
    assert_eq!(reason(&r, "user_avg_spend"), (99.5, false));
    assert!((reason(&r, "device_risk_score").0 - 0.95).abs() < 1e-6);
    let mut filled = common::row(3);
    filled[at("user_avg_spend")] = 99.5;
    filled[at("device_risk_score")] = 0.95;
    let want = direct_predict(&filled)[0];
    assert!((r.probability - f64::from(want)).abs() < 1e-6);

    // What the request carries wins over the store.
    let mut given = transaction("u7", "dev-3");
    given.features.insert("user_avg_spend".into(), 1.0);
    let r = c.score(given).await.unwrap().into_inner();
    assert_eq!(reason(&r, "user_avg_spend"), (1.0, false));

    // Unknown entities and values past the ttl stay missing, not degraded.
    let r = c
        .score(transaction("u8", "nobody"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.features_degraded);
    assert!(reason(&r, "user_avg_spend").1);
    assert!(reason(&r, "device_risk_score").1);
    let mut missing = common::row(3);
    missing[at("user_avg_spend")] = f32::NAN;
    missing[at("device_risk_score")] = f32::NAN;
    assert!((r.probability - f64::from(direct_predict(&missing)[0])).abs() < 1e-6);

    // No entities: nothing to read.
    let r = c.score(transaction("", "")).await.unwrap().into_inner();
    assert!(reason(&r, "user_avg_spend").1);

    // A batch reads all its transactions at once, each its own values.
    let batch = c
        .score_batch(v1::ScoreBatchRequest {
            requests: vec![transaction("u7", "nobody"), transaction("u8", "dev-3")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&batch.responses[0], "user_avg_spend"), (99.5, false));
    assert!(reason(&batch.responses[0], "device_risk_score").1);
    assert!(reason(&batch.responses[1], "user_avg_spend").1);
    assert!(!reason(&batch.responses[1], "device_risk_score").1);

    // The recommender takes the user's session_product_views as its recent items.
    let mut recs = RecommenderClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let ask = |recent: Vec<String>| v1::RecommendRequest {
        user_id: "u1".into(),
        k: 10,
        recent_items: recent,
        ..Default::default()
    };
    let from_store = recs.recommend(ask(vec![])).await.unwrap().into_inner();
    let given = recs
        .recommend(ask(vec!["p5".into(), "p9".into()]))
        .await
        .unwrap()
        .into_inner();
    assert!(!from_store.features_degraded);
    let ids = |r: &v1::RecommendResponse| {
        r.items
            .iter()
            .map(|i| i.item_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&from_store), ids(&given));
    s.shutdown().await.unwrap();
}

/// A store that never answers.
#[derive(Debug)]
struct Stuck;

impl OnlineStore for Stuck {
    fn read<'a>(&'a self, _: &'a [ReadOp<'a>]) -> StoreFuture<'a, Vec<StoredRow>> {
        Box::pin(std::future::pending())
    }
    fn write<'a>(&'a self, _: &'a [WriteOp]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(std::future::pending())
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
    fn name(&self) -> &'static str {
        "stuck"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_past_its_deadline_degrades_to_missing_inputs() {
    let registry = Arc::new(FeatureRegistry::from_toml(REGISTRY, None).unwrap());
    let repo = sample_repo();
    let s = serve(
        repo.path(),
        FeatureSource::new(registry, Arc::new(Stuck), Duration::from_millis(20)),
    )
    .await;
    let mut c = FraudScoringClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = c
        .score(transaction("u7", "dev-3"))
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.features_degraded);
    assert!(reason(&r, "user_avg_spend").1 && reason(&r, "device_risk_score").1);
    // Everything given: the store is not asked, nothing degrades.
    let mut full = transaction("u7", "dev-3");
    full.features.insert("user_avg_spend".into(), 10.0);
    full.features.insert("device_risk_score".into(), 0.1);
    assert!(!c.score(full).await.unwrap().into_inner().features_degraded);
    let mut recs = RecommenderClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let r = recs
        .recommend(v1::RecommendRequest {
            user_id: "u1".into(),
            k: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.features_degraded && r.items.len() == 5);
    let metrics = reqwest::get(format!("http://{}/metrics", s.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("infermesh_features_degraded_total")
                && l.contains("reason=\"timeout\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    s.shutdown().await.unwrap();
}
