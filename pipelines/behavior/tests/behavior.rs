//! `pipeline behavior` end to end in process: the gateway's `BusSink` publishes events to
//! `user.behavior`, the pipeline applies them to the gateway's store in Redis (the machine's,
//! or `INFERMESH_TEST_REDIS_URL`; a key prefix of the test's own) and to the feature store;
//! poison events are dead-lettered with their reason; a redelivered message id is applied once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_features::online::{OnlineRequest, Wanted, get_online_features};
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::store::{MemoryStore, OnlineStore};
use infermesh_features::types::{Value, value::Val};
use infermesh_features::writer::{FeatureWriter, WriterConfig};
use infermesh_gateway::config::Settings;
use infermesh_gateway::events::{BusSink, Event, EventKind, EventSink};
use infermesh_gateway::store::Store;
use infermesh_pipeline_behavior::{BehaviorHandler, Sessions, start_with};
use infermesh_pipelines::bus::{EventBus, InProcessBus, Message};
use infermesh_pipelines::runtime::{Dedupe, RuntimeConfig};

fn redis_url() -> String {
    std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

fn event(kind: EventKind, user: &str, product: &str, session: &str) -> Event {
    Event {
        event: kind,
        user_id: user.into(),
        product_id: product.into(),
        session_id: Some(session.into()),
        // Now: the session view's TTL (2 h) hides older values.
        ts: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        source: None,
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_recent_views_session_features_and_invalidations() {
    let prefix = format!("infermesh-test-behavior-{}:", std::process::id());
    let settings = Settings::default();
    let store = Arc::new(
        Store::redis(
            &redis_url(),
            &prefix,
            Duration::from_secs(2),
            &settings.recs,
        )
        .unwrap(),
    );
    let conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .expect("Redis for the behaviour test (scripts/test.sh starts one)");
    let registry = Arc::new(
        FeatureRegistry::load(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../features/repo/features.toml"
            )),
            None,
        )
        .unwrap(),
    );
    let online = Arc::new(MemoryStore::new(1000, None));
    let writer = FeatureWriter::start(
        registry.clone(),
        online.clone() as Arc<dyn OnlineStore>,
        WriterConfig::default(),
    );
    let bus = Arc::new(InProcessBus::new(1000, Duration::from_secs(30)));
    let sub = bus
        .subscribe("user.behavior", "pipeline-behavior")
        .await
        .unwrap();
    let mut dlq = bus.subscribe("user.behavior.dlq", "t").await.unwrap();
    let pipeline = start_with(
        RuntimeConfig::new("behavior"),
        sub,
        bus.clone(),
        Dedupe::memory(1000),
        BehaviorHandler {
            store: store.clone(),
            sessions: Sessions::Redis {
                conn,
                prefix: prefix.clone(),
                items: 20,
                ttl: Duration::from_secs(60),
            },
            writer: Some(writer),
        },
        None,
    )
    .await
    .unwrap();

    // What the gateway's route does with a bus: publish, and leave the rest to the pipeline.
    let sink = BusSink::new(bus.clone());
    assert!(sink.applied_downstream());
    store
        .put_recs("u1", "field", "[\"cached\"]".into())
        .await
        .unwrap();
    for p in ["p1", "p2", "p1", "p3"] {
        sink.publish(&event(EventKind::View, "u1", p, "s1"))
            .await
            .unwrap();
    }
    eventually("u1's recent views", || async {
        store.recent("u1").await.unwrap() == ["p3", "p1", "p2"]
    })
    .await;
    // A view drops the cached lists (recent views are an input of the model).
    assert_eq!(store.get_recs("u1", "field").await.unwrap(), None);

    // The session's products reach the feature store, most recent first.
    let session = || async {
        let r = get_online_features(
            &registry,
            online.as_ref(),
            &OnlineRequest {
                wanted: Wanted::Refs(vec!["session_views:session_product_views".into()]),
                entities: vec![(
                    "user_id".into(),
                    vec![Value {
                        val: Some(Val::StringVal("u1".into())),
                    }],
                )],
                full_feature_names: false,
            },
        )
        .await
        .unwrap();
        r.results
            .last()
            .and_then(|c| c.values.first().cloned())
            .and_then(|v| match v.val {
                Some(Val::StringListVal(l)) => Some(l.val),
                _ => None,
            })
    };
    eventually("session_product_views", || async {
        session().await == Some(vec!["p3".into(), "p1".into(), "p2".into()])
    })
    .await;

    // A purchase drops the cache; a new session starts its own list.
    store
        .put_recs("u1", "field", "[\"cached\"]".into())
        .await
        .unwrap();
    sink.publish(&event(EventKind::Purchase, "u1", "p3", "s1"))
        .await
        .unwrap();
    eventually("the purchase's invalidation", || async {
        store.get_recs("u1", "field").await.unwrap().is_none()
    })
    .await;
    sink.publish(&event(EventKind::View, "u1", "p9", "s2"))
        .await
        .unwrap();
    eventually("a second browsing session", || async {
        session().await == Some(vec!["p9".into()])
    })
    .await;
    assert_eq!(store.recent("u1").await.unwrap(), ["p9", "p3", "p1", "p2"]);

    // The same message id twice: applied once (p5 would otherwise move back to the front).
    let mut dup = Message::new(
        "u2",
        serde_json::to_vec(&event(EventKind::View, "u2", "p5", "s")).unwrap(),
    );
    dup.headers.push(("message-id".into(), "once".into()));
    bus.publish("user.behavior", dup.clone()).await.unwrap();
    sink.publish(&event(EventKind::View, "u2", "p6", "s"))
        .await
        .unwrap();
    eventually("u2's views", || async {
        store.recent("u2").await.unwrap() == ["p6", "p5"]
    })
    .await;
    bus.publish("user.behavior", dup).await.unwrap();
    sink.publish(&event(EventKind::View, "u2", "p7", "s"))
        .await
        .unwrap();
    eventually("u2's third view", || async {
        store
            .recent("u2")
            .await
            .unwrap()
            .first()
            .map(String::as_str)
            == Some("p7")
    })
    .await;
    assert_eq!(store.recent("u2").await.unwrap(), ["p7", "p6", "p5"]);

    // Poison: dead-lettered with the reason.
    bus.publish("user.behavior", Message::new("u3", b"{not json".to_vec()))
        .await
        .unwrap();
    bus.publish(
        "user.behavior",
        Message::new(
            "u3",
            br#"{"event":"teleport","user_id":"u3","product_id":"p","ts":1}"#.to_vec(),
        ),
    )
    .await
    .unwrap();
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(10), dlq.next())
            .await
            .unwrap()
            .unwrap();
        reasons.push(
            d.message
                .headers
                .iter()
                .find(|(k, _)| k == "x-infermesh-dlq-reason")
                .map(|(_, v)| v.clone())
                .unwrap(),
        );
        dlq.ack(&d).await.unwrap();
    }
    assert_eq!(reasons, ["malformed_json", "invalid_value"]);

    let stats = pipeline.shutdown().await.unwrap();
    assert_eq!((stats.dead_lettered, stats.duplicates), (2, 1), "{stats:?}");
    // 4 + purchase + 1 + u2's 3 distinct messages.
    assert_eq!(stats.processed, 9, "{stats:?}");
    // Clean up the test's keys.
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}
