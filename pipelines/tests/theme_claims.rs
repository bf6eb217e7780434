//! Which topics had their theme-label job queued, shared through the real Redis: two pipeline
//! processes (two `ThemeJobs` on one key prefix) queue a topic's job once between them; a topic
//! whose enqueue failed (a full queue) is released and queued by its next review; claims carry
//! their TTL; a Redis that is down is an `error` outcome with nothing queued.
//!
//! Redis: `INFERMESH_TEST_REDIS_URL` (default redis://127.0.0.1:6379), keys under a prefix of
//! this test, deleted at its end.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RedisPrefix, conn, dead_addr, redis_url};
use infermesh_pipelines::llm::queue::{JobQueue, QueueConfig};
use infermesh_pipelines::reviews::processor::{THEME_CLAIM_TTL, ThemeJobs};
use infermesh_pipelines::reviews::scoring::TopicScore;
use infermesh_pipelines::reviews::service::theme_claim_prefix;

fn topic(id: i64) -> TopicScore {
    TopicScore {
        id,
        label: format!("{id}_battery_charge"),
        keywords: vec!["battery".into(), "charge".into()],
    }
}

fn exists(key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(&mut conn()).unwrap()
}

#[tokio::test]
async fn two_pipelines_queue_a_topic_once_and_a_failed_enqueue_is_retried() {
    let p = RedisPrefix::new();
    let queue = JobQueue::redis(
        &redis_url(),
        QueueConfig {
            depth: 1,
            prefix: p.0.clone(),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    let claims = theme_claim_prefix(&p.0);
    let timeout = Duration::from_secs(2);
    let a = ThemeJobs::shared(Some(queue.clone()), &redis_url(), &claims, timeout).unwrap();
    let b = ThemeJobs::shared(Some(queue.clone()), &redis_url(), &claims, timeout).unwrap();

    assert_eq!(a.offer(&topic(1)).await, "enqueued");
    assert_eq!(
        b.offer(&topic(1)).await,
        "seen",
        "the other process's claim"
    );
    assert_eq!(a.offer(&topic(1)).await, "seen");
    let key = a.claim_key(1).unwrap();
    assert_eq!(key, format!("{}reviews:theme:1", p.0));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn()).unwrap();
    let max = i64::try_from(THEME_CLAIM_TTL.as_secs()).unwrap();
    assert!((max - 5..=max).contains(&ttl), "{ttl}");

    // The queue holds one job: topic 2 cannot be queued, and its claim is released.
    assert_eq!(b.offer(&topic(2)).await, "queue_full");
    assert!(!exists(&b.claim_key(2).unwrap()), "released");
    assert_eq!(a.offer(&topic(2)).await, "queue_full");
    // A worker takes topic 1's job: topic 2's next review queues it, once.
    let taken = queue.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(taken.job.payload["topic_id"], "1");
    queue.complete(&taken).await.unwrap();
    assert_eq!(a.offer(&topic(2)).await, "enqueued");
    assert_eq!(b.offer(&topic(2)).await, "seen");
    let taken = queue.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(taken.job.payload["topic_id"], "2");
    queue.complete(&taken).await.unwrap();
    assert!(
        queue
            .take(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "one job per topic"
    );
    // Many offers of a new topic at once, from both: one job.
    let three = topic(3);
    let offers: Vec<&str> = futures::future::join_all((0..8).map(|i| {
        if i % 2 == 0 {
            a.offer(&three)
        } else {
            b.offer(&three)
        }
    }))
    .await;
    assert_eq!(
        offers.iter().filter(|o| **o == "enqueued").count(),
        1,
        "{offers:?}"
    );
    assert_eq!(
        offers.iter().filter(|o| **o == "seen").count(),
        7,
        "{offers:?}"
    );
}

#[tokio::test]
async fn a_claim_expires_and_a_redis_that_is_down_is_an_error() {
    let p = RedisPrefix::new();
    let claims = theme_claim_prefix(&p.0);
    let queue = JobQueue::memory(QueueConfig::default());
    let themes = ThemeJobs::shared(
        Some(queue.clone()),
        &redis_url(),
        &claims,
        Duration::from_secs(2),
    )
    .unwrap()
    .with_ttl(Duration::from_secs(1));
    assert_eq!(themes.offer(&topic(7)).await, "enqueued");
    assert_eq!(themes.offer(&topic(7)).await, "seen");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        themes.offer(&topic(7)).await,
        "enqueued",
        "the claim lapsed"
    );

    let down = ThemeJobs::shared(
        Some(JobQueue::memory(QueueConfig::default())),
        &format!("redis://{}", dead_addr()),
        &claims,
        Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(down.offer(&topic(8)).await, "error");
}
