//! `infermesh pipeline fraud` against librdkafka's in-process MockCluster: plain JSON and
//! Debezium transactions in, alerts out (model and velocity-rule alerts with reasons), poison
//! messages dead-lettered with their reason, a replayed transaction producing no second alert,
//! and a drain that commits what was done.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use infermesh_pipeline_fraud::alerts::Alert;
use infermesh_pipeline_fraud::{FraudArgs, start};
use infermesh_pipelines::bus::{EventBus, Message, Subscription};
use infermesh_pipelines::kafka::{KafkaBus, KafkaConfig};
use rdkafka::mocking::MockCluster;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: FraudArgs,
}

/// 2026-12-07T14:00:00Z and 03:00:00Z, in ms.
const AFTERNOON: i64 = 1_796_652_000_000;
const NIGHT: i64 = 1_796_612_400_000;

fn low_risk(id: &str, user: &str, ts: i64) -> Vec<u8> {
    serde_json::json!({
        "transaction_id": id, "user_id": user, "device_id": "dev-ok", "amount": 35.0,
        "currency": "EUR", "merchant": "grocer", "category": "food", "created_at": ts,
        "merchant_risk": 0.02, "device_risk_score": 0.01, "distance_from_home_km": 1.0,
        "is_foreign": 0, "card_present": 1, "account_age_days": 2000, "failed_logins_24h": 0,
        "new_device": 0, "user_avg_spend": 40.0
    })
    .to_string()
    .into_bytes()
}

fn risky_row(id: &str, user: &str) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": id, "user_id": user, "device_id": "dev-new", "amount": 912.5,
        "currency": "EUR", "merchant": "electronics", "category": "online",
        "created_at": "2026-12-07T03:00:00Z", "merchant_risk": 0.41, "device_risk_score": 0.35,
        "distance_from_home_km": 240.0, "is_foreign": 1, "card_present": 0,
        "account_age_days": 21, "failed_logins_24h": 2, "new_device": 1, "user_avg_spend": 48.0
    })
}

/// A MockCluster with the pipeline's topics (3 partitions each) and the pipeline on it,
/// scoring in process with the sample repository, with `extra` flags.
async fn pipeline_on_mock(
    extra: &[&str],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    tempfile::TempDir,
    infermesh_pipeline_fraud::RunningPipeline,
) {
    let mock = MockCluster::new(1).unwrap();
    for t in [
        "finance.transactions",
        "finance.transactions.dlq",
        "fraud.alerts",
    ] {
        mock.create_topic(t, 3, 1).unwrap();
    }
    let brokers = mock.bootstrap_servers();
    let repo = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(repo.path()).unwrap();
    let mut args = vec![
        "pipeline".to_string(),
        "--kafka-brokers".into(),
        brokers.clone(),
        "--model-repository".into(),
        repo.path().to_str().unwrap().into(),
        "--metrics-port".into(),
        "0".into(),
        "--poll-interval".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let pipeline = start(Cli::parse_from(args).args).await.unwrap();
    (mock, brokers, repo, pipeline)
}

async fn publish(bus: &KafkaBus, topic: &str, key: &str, payload: Vec<u8>) {
    bus.publish(topic, Message::new(key, payload))
        .await
        .unwrap();
}

/// Reads `n` messages of `topic` (group `group`), acking them.
async fn read(bus: &KafkaBus, topic: &str, group: &str, n: usize) -> Vec<Message> {
    let mut sub = bus.subscribe_kafka(topic, group).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages on {topic}", out.len()))
            .unwrap();
        sub.ack(&d).await.unwrap();
        out.push(d.message);
    }
    sub.close().await.unwrap();
    out
}

fn header<'a>(m: &'a Message, k: &str) -> Option<&'a str> {
    m.headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_alerts_and_dead_letters_out() {
    let (_mock, brokers, _repo, pipeline) =
        pipeline_on_mock(&["--kafka-commit-interval-ms", "100"]).await;
    let bus = KafkaBus::new(KafkaConfig::new(&brokers, "test")).unwrap();

    // Six small transactions of one user, 10 s apart: the fifth and sixth complete 5 in 60 s.
    for i in 1..=6 {
        let id = format!("burst-{i}");
        publish(
            &bus,
            "finance.transactions",
            "u-burst",
            low_risk(&id, "u-burst", AFTERNOON + i64::from(i) * 10_000),
        )
        .await;
    }
    // A risky one as plain JSON, and one as a Debezium insert without schemas.
    publish(
        &bus,
        "finance.transactions",
        "u-risky",
        risky_row("risky-1", "u-risky").to_string().into_bytes(),
    )
    .await;
    let debezium = serde_json::json!({
        "before": null, "after": risky_row("deb-1", "u-deb"), "op": "c", "ts_ms": NIGHT,
        "source": {"connector": "postgresql", "table": "transactions"}
    });
    publish(
        &bus,
        "finance.transactions",
        "u-deb",
        debezium.to_string().into_bytes(),
    )
    .await;
    // Poison: not JSON, an unknown op, a missing field; and a delete, which is skipped.
    publish(&bus, "finance.transactions", "x", b"{not json".to_vec()).await;
    publish(
        &bus,
        "finance.transactions",
        "x",
        br#"{"after":{"transaction_id":"q"},"op":"z"}"#.to_vec(),
    )
    .await;
    publish(
        &bus,
        "finance.transactions",
        "x",
        br#"{"transaction_id":"q","amount":1,"created_at":1}"#.to_vec(),
    )
    .await;
    publish(
        &bus,
        "finance.transactions",
        "x",
        br#"{"before":{"transaction_id":"gone"},"after":null,"op":"d"}"#.to_vec(),
    )
    .await;

    let alerts: Vec<Alert> = read(&bus, "fraud.alerts", "check-1", 4)
        .await
        .iter()
        .map(|m| {
            assert_eq!(header(m, "message-id").map(str::len), Some(32));
            serde_json::from_slice(&m.payload).unwrap()
        })
        .collect();
    let by_tx: HashMap<&str, &Alert> = alerts
        .iter()
        .map(|a| (a.transaction_id.as_str(), a))
        .collect();
    for id in ["burst-5", "burst-6"] {
        let a = by_tx[id];
        assert_eq!(a.rule_hits, ["velocity_5_in_60s"], "{a:?}");
        assert_eq!(a.user_id, "u-burst");
        // Explained although under the model's threshold.
        assert!(!a.is_fraud, "{a:?}");
        assert_eq!(a.reasons.len(), 3, "{a:?}");
    }
    for id in ["risky-1", "deb-1"] {
        let a = by_tx[id];
        assert!(a.is_fraud, "{a:?}");
        assert!(a.probability > a.threshold);
        assert_eq!((a.model.as_str(), a.version.as_str()), ("fraud", "1"));
        assert_eq!(a.reasons.len(), 3);
        assert!(a.rule_hits.is_empty());
        assert_eq!(a.created_at, "2026-12-07T03:00:00.000Z");
        assert!(!a.features_degraded);
    }
    let dead = read(&bus, "finance.transactions.dlq", "check-dlq", 3).await;
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|m| header(m, "x-infermesh-dlq-reason").unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["malformed_json", "missing_field", "unknown_op"]);
    assert!(dead.iter().all(|m| {
        header(m, "x-infermesh-dlq-source")
            .unwrap()
            .starts_with("finance.transactions/")
    }));

    // The same transaction again (a producer retry): the same alert id, so no second alert;
    // then one more risky transaction of that user, whose alert comes next.
    publish(
        &bus,
        "finance.transactions",
        "u-burst",
        low_risk("burst-6", "u-burst", AFTERNOON + 60_000),
    )
    .await;
    let mut late = risky_row("burst-7", "u-burst");
    late["created_at"] = serde_json::json!(AFTERNOON + 65_000);
    publish(
        &bus,
        "finance.transactions",
        "u-burst",
        late.to_string().into_bytes(),
    )
    .await;
    let next: Vec<Alert> = read(&bus, "fraud.alerts", "check-2", 5)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let ids: Vec<&str> = next.iter().map(|a| a.alert_id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{ids:?}");
    assert!(next.iter().any(|a| a.transaction_id == "burst-7"));
    // burst-7's alert was produced after the replay was handled: nothing else follows.
    let mut more = bus.subscribe_kafka("fraud.alerts", "check-2").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), more.next())
            .await
            .is_err(),
        "a sixth alert"
    );
    more.close().await.unwrap();

    let stats = pipeline.shutdown().await.unwrap();
    assert_eq!(stats.dead_lettered, 3);
    assert!(stats.processed >= 11, "{stats:?}");
}

/// Redis down: the dedupe windows answer "not seen" (work is repeated, never lost), the stream
/// features are missing, and every transaction is still scored and alerted, marked
/// `features_degraded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_degrades_scores_and_loses_nothing() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let redis = format!("redis://{dead}");
    let (_mock, brokers, _repo, pipeline) = pipeline_on_mock(&["--redis-url", &redis]).await;
    let bus = KafkaBus::new(KafkaConfig::new(&brokers, "test")).unwrap();
    for i in 0..3 {
        let id = format!("down-{i}");
        publish(
            &bus,
            "finance.transactions",
            "u-down",
            risky_row(&id, &format!("u-down-{i}"))
                .to_string()
                .into_bytes(),
        )
        .await;
    }
    let alerts: Vec<Alert> = read(&bus, "fraud.alerts", "check-down", 3)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    for a in &alerts {
        assert!(a.features_degraded, "{a:?}");
        assert!(a.is_fraud, "{a:?}");
    }
    let stats = pipeline.shutdown().await.unwrap();
    assert_eq!(stats.processed, 3);
}

/// librdkafka's MockCluster answers -1 to every offset-by-time query: the alerts topic's tail
/// is still read back (from at most `max_tail` messages before each end), and only the alerts
/// stamped within the lookback count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_tail_is_read_back_where_the_broker_cannot_look_up_by_time() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("alerts", 2, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let two_hours_ago = now - 2 * 3_600_000;
    let sends = [
        (0, now, r#"{"alert_id":"a0"}"#),
        (1, now, r#"{"alert_id":"a1"}"#),
        (0, two_hours_ago, r#"{"alert_id":"old"}"#),
        (1, now, "not json"),
        (1, now, r#"{"alert_id":"a2"}"#),
    ];
    for (partition, ts, payload) in sends {
        producer
            .send(
                FutureRecord::to("alerts")
                    .key("u")
                    .payload(payload)
                    .partition(partition)
                    .timestamp(ts),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let cfg = KafkaConfig::new(&brokers, "recover-test");
    let read = |max_tail: i64| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut ids = infermesh_pipeline_fraud::alerts::produced_ids(
                &cfg,
                "alerts",
                Duration::from_secs(900),
                max_tail,
            )
            .unwrap();
            ids.sort();
            ids
        })
    };
    assert_eq!(read(100_000).await.unwrap(), ["a0", "a1", "a2"]);
    // At most one message before each end: partition 0's last (stamped too long ago) and
    // partition 1's last.
    assert_eq!(read(1).await.unwrap(), ["a2"]);
}
