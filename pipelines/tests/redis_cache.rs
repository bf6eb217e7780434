//! The LLM output cache against a real Redis: hit, miss, TTL, and a Redis that is down
//! (misses, counted, never an error).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{RedisPrefix, conn, dead_addr, metric_sum, metrics_text, redis_url};
use infermesh_pipelines::llm::cache::{CacheConfig, CacheKey, OutputCache};
use serde_json::json;

fn cache(prefix: &str, ttl: Duration) -> OutputCache {
    OutputCache::redis(
        &redis_url(),
        CacheConfig {
            ttl,
            prefix: prefix.to_string(),
            ..CacheConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn hits_misses_and_expiry() {
    let p = RedisPrefix::new();
    let c = cache(&p.0, Duration::from_secs(1));
    let key = CacheKey::new(
        "smollm2:135m",
        "sys",
        "Review: \"great\"",
        &json!({"temperature": 0}),
    );
    let before = metrics_text();
    assert_eq!(c.get(&key).await, None);
    c.put(&key, "{\"label\":\"positive\",\"score\":0.9}").await;
    assert_eq!(
        c.get(&key).await.as_deref(),
        Some("{\"label\":\"positive\",\"score\":0.9}")
    );
    // Stored under the prefix, as the hex SHA-256, with the TTL.
    assert_eq!(p.keys(), vec![format!("{}cache:{}", p.0, key.as_str())]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(c.redis_key(&key))
        .query(&mut conn())
        .unwrap();
    assert!((0..=1).contains(&ttl), "{ttl}");
    let after = metrics_text();
    let delta = |result: &str| {
        let label = format!("result=\"{result}\"");
        metric_sum(&after, "infermesh_llm_cache_requests_total", &[&label])
            - metric_sum(&before, "infermesh_llm_cache_requests_total", &[&label])
    };
    assert!(delta("hit") >= 1.0 && delta("miss") >= 1.0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(c.get(&key).await, None, "expired");
}

#[tokio::test]
async fn a_redis_that_is_down_is_a_counted_miss() {
    let c = OutputCache::redis(
        &format!("redis://{}", dead_addr()),
        CacheConfig {
            redis_timeout: Duration::from_millis(200),
            ..CacheConfig::default()
        },
    )
    .unwrap();
    let key = CacheKey::new("m", "", "p", &json!({}));
    let before = metrics_text();
    let started = Instant::now();
    c.put(&key, "v").await;
    assert_eq!(c.get(&key).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let after = metrics_text();
    let errors = metric_sum(&after, "infermesh_llm_cache_errors_total", &[])
        - metric_sum(&before, "infermesh_llm_cache_errors_total", &[]);
    assert!(errors >= 2.0, "get and put counted: {errors}");
    let as_error = metric_sum(
        &after,
        "infermesh_llm_cache_requests_total",
        &["result=\"error\""],
    ) - metric_sum(
        &before,
        "infermesh_llm_cache_requests_total",
        &["result=\"error\""],
    );
    assert!(as_error >= 1.0);
}
