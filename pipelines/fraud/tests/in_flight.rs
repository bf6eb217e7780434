//! The fraud handler with batches in flight: a batch started while an earlier one's alerts
//! are still unacknowledged does not produce them again, and an alert the bus refused leaves
//! the in-flight set, so its retry produces it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use infermesh_pipeline_fraud::handler::{FraudHandler, Scorer};
use infermesh_pipeline_fraud::stream::{StreamConfig, StreamState};
use infermesh_pipeline_fraud::window_rule;
use infermesh_pipelines::bus::{
    BoxFuture, BusError, Delivery, EventBus, InProcessBus, Message, Subscription,
};
use infermesh_pipelines::runtime::{Dedupe, Handler, Incoming, Outcome};
use infermesh_server::local::{LocalConfig, LocalModels};

fn risky(id: &str, user: &str) -> Vec<u8> {
    serde_json::json!({
        "transaction_id": id, "user_id": user, "device_id": "dev-new", "amount": 912.5,
        "currency": "EUR", "merchant": "electronics", "category": "online",
        "created_at": "2026-12-07T03:00:00Z", "merchant_risk": 0.41, "device_risk_score": 0.35,
        "distance_from_home_km": 240.0, "is_foreign": 1, "card_present": 0,
        "account_age_days": 21, "failed_logins_24h": 2, "new_device": 1, "user_avg_spend": 48.0
    })
    .to_string()
    .into_bytes()
}

fn incoming(offset: i64, payload: Vec<u8>) -> Incoming {
    Incoming {
        delivery: Delivery {
            id: offset as u64,
            topic: "finance.transactions".into(),
            message: Message::new("k", payload),
            attempt: 1,
            partition: 0,
            offset,
            timestamp_ms: None,
        },
        span: tracing::Span::none(),
    }
}

async fn handler(bus: Arc<dyn EventBus>, repo: &std::path::Path) -> (FraudHandler, LocalModels) {
    let local = LocalModels::open(LocalConfig {
        model_repository: repo.to_path_buf(),
        poll_interval: None,
        fraud_model: "fraud".into(),
        features: None,
    })
    .await
    .unwrap();
    let h = FraudHandler {
        state: StreamState::memory(StreamConfig::default(), 1000),
        scorer: Scorer::InProcess(local.fraud()),
        model: String::new(),
        top_k_reasons: 3,
        bus,
        alerts_topic: "fraud.alerts".into(),
        produced: Dedupe::memory(1000),
        recover: None,
        writer: None,
        email: None,
        window_threshold: 5,
        window_rule: window_rule(5, 60),
        decimal_scale: 2,
        in_flight: Default::default(),
        spend_turn: Default::default(),
    };
    (h, local)
}

/// An in-process bus whose deliveries resolve only once `open` is set: alerts stay in flight.
#[derive(Debug)]
struct GatedBus {
    inner: Arc<InProcessBus>,
    open: tokio::sync::watch::Sender<bool>,
}

impl EventBus for GatedBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.publish(topic, message)
    }

    fn enqueue(&self, topic: &str, message: Message) -> BoxFuture<'static, Result<(), BusError>> {
        let delivered = self.inner.enqueue(topic, message);
        let mut open = self.open.subscribe();
        Box::pin(async move {
            while !*open.borrow_and_update() {
                if open.changed().await.is_err() {
                    break;
                }
            }
            delivered.await
        })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, BusError>> {
        self.inner.subscribe(topic, group)
    }
}

async fn drain(sub: &mut dyn Subscription) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        sub.ack(&d).await.unwrap();
        out.push(d);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_started_while_an_alert_is_in_flight_does_not_produce_it_again() {
    let repo = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(repo.path()).unwrap();
    let inner = Arc::new(InProcessBus::new(100, Duration::from_secs(60)));
    let mut alerts = inner.subscribe("fraud.alerts", "check").await.unwrap();
    let (open, _) = tokio::sync::watch::channel(false);
    let bus = Arc::new(GatedBus { inner, open });
    let (h, _local) = handler(bus.clone(), repo.path()).await;
    // The same transaction twice at two offsets (a producer's retry), in two batches whose
    // alerts are in flight (unacknowledged) together: one alert of it is produced.
    let first = [incoming(0, risky("tx-1", "u-1"))];
    let second = [
        incoming(1, risky("tx-1", "u-1")),
        incoming(2, risky("tx-2", "u-2")),
    ];
    let pending_first = h.start(&first).await;
    let pending_second = h.start(&second).await;
    let opener = async {
        tokio::time::timeout(Duration::from_secs(30), async {
            while h.in_flight.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("both alerts in flight");
        bus.open.send_replace(true);
    };
    let (a, b, ()) = tokio::join!(pending_first, pending_second, opener);
    assert_eq!(a, [Outcome::Done]);
    assert_eq!(b, [Outcome::Done, Outcome::Done]);
    let got = drain(alerts.as_mut()).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
            v["transaction_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["tx-1", "tx-2"]);
    // Nothing is left in flight once the batches are done.
    assert!(h.in_flight.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_bus_refused_is_produced_on_its_retry() {
    let repo = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(repo.path()).unwrap();
    // One unacknowledged message per group: the second alert is refused while the first is held.
    let bus = Arc::new(InProcessBus::new(1, Duration::from_secs(60)));
    let mut alerts = bus.subscribe("fraud.alerts", "check").await.unwrap();
    let (h, _local) = handler(bus.clone(), repo.path()).await;
    let batch = [
        incoming(0, risky("tx-1", "u-1")),
        incoming(1, risky("tx-2", "u-2")),
    ];
    let outcomes = h.start(&batch).await.await;
    assert_eq!(outcomes[0], Outcome::Done);
    assert!(
        matches!(&outcomes[1], Outcome::Retry(why) if why.contains("alert not produced")),
        "{outcomes:?}"
    );
    assert!(h.in_flight.lock().unwrap().is_empty());
    let held = drain(alerts.as_mut()).await;
    assert_eq!(held.len(), 1);
    // The retry (a redelivery of the second transaction) produces its alert.
    let retry = [incoming(1, risky("tx-2", "u-2"))];
    assert_eq!(h.start(&retry).await.await, [Outcome::Done]);
    let got = drain(alerts.as_mut()).await;
    assert_eq!(got.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].message.payload).unwrap();
    assert_eq!(v["transaction_id"], "tx-2");
}
