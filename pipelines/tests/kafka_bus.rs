//! The Kafka bus against librdkafka's in-process MockCluster: publish, consume in a group,
//! offsets that follow acks (never past an unacked delivery), redelivery of what was not
//! acked to the next member, nack, and the runtime's dead letters on Kafka.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use infermesh_pipelines::bus::{EventBus, Message, Subscription};
use infermesh_pipelines::kafka::{KafkaBus, KafkaConfig};
use rdkafka::mocking::MockCluster;

async fn next(sub: &mut dyn Subscription) -> infermesh_pipelines::bus::Delivery {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a delivery within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_follow_acks_and_unacked_messages_come_back() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut cfg = KafkaConfig::new(&brokers, "test");
    cfg.commit_interval = Duration::from_millis(100);
    let bus = KafkaBus::new(cfg).unwrap();
    for i in 0..10 {
        let mut m = Message::new(format!("k{i}"), format!("v{i}").into_bytes());
        m.headers.push(("traceparent".into(), "00-abc".into()));
        bus.publish("t", m).await.unwrap();
    }

    let mut a = bus.subscribe("t", "g").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(next(a.as_mut()).await);
    }
    assert_eq!(
        got.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<i64>>()
    );
    assert_eq!(got[3].message.key.as_deref(), Some("k3"));
    assert_eq!(
        got[3].message.headers,
        [("traceparent".to_string(), "00-abc".to_string())]
    );
    assert!(got[3].timestamp_ms.is_some());
    // Acked out of order, with offset 4 left unacked; 6 nacked: it comes back to this member.
    for d in got.iter().filter(|d| ![4, 6].contains(&d.offset)) {
        a.ack(d).await.unwrap();
    }
    a.nack(&got[6]).await.unwrap();
    let again = next(a.as_mut()).await;
    assert_eq!((again.offset, again.attempt), (6, 2));
    a.ack(&again).await.unwrap();
    // Leaving commits offset 4 (the first unacked), not 10.
    a.close().await.unwrap();
    drop(a);

    let mut b = bus.subscribe("t", "g").await.unwrap();
    let mut back = BTreeSet::new();
    // 4 and everything after it is delivered again (at least once), nothing before.
    for _ in 4..10 {
        let d = next(b.as_mut()).await;
        back.insert(d.offset);
        b.ack(&d).await.unwrap();
    }
    assert_eq!(back, (4..10).collect());
    b.close().await.unwrap();
    drop(b);

    // Everything acked: a new member gets nothing old.
    let mut c = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", Message::new("k", b"new".to_vec()))
        .await
        .unwrap();
    let d = next(c.as_mut()).await;
    assert_eq!(d.message.payload, b"new");
    assert_eq!(d.offset, 10);
}
