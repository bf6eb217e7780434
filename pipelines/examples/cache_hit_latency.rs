//! Measures the LLM output cache's hit path (GET of a cached answer) against a real Redis and
//! prints p50 / p99 / max. The target is a p99 under 1 ms on the same host.
//!
//! `cargo run --release -p infermesh-pipelines --example cache_hit_latency -- [N]`
//! (Redis: `INFERMESH_TEST_REDIS_URL`, default redis://127.0.0.1:6379; an in-memory run
//! follows for comparison).

use std::time::{Duration, Instant};

use infermesh_pipelines::llm::cache::{CacheConfig, CacheKey, OutputCache};

async fn measure(name: &str, cache: &OutputCache, n: usize) {
    let key = CacheKey::new(
        "smollm2:135m",
        "You classify the sentiment of a product review.",
        "Review: \"The battery lasts two days and the screen is bright.\"",
        &serde_json::json!({"options": {"temperature": 0, "num_predict": 48}, "format": null}),
    );
    cache
        .put(&key, "{\"label\": \"positive\", \"score\": 0.93}")
        .await;
    for _ in 0..200 {
        assert!(
            cache.get(&key).await.is_some(),
            "{name}: the warm-up must hit"
        );
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let hit = cache.get(&key).await;
        times.push(t.elapsed());
        assert!(hit.is_some(), "{name}: a miss while measuring hits");
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    use std::io::Write as _;
    // Not `println!`: it panics when stdout is a closed pipe (`| head`).
    let _ = writeln!(
        std::io::stdout().lock(),
        "{name}: {n} hits, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        us(at(0.50)),
        us(at(0.99)),
        us(times[times.len() - 1])
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let url = std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let prefix = format!("infermesh-bench:{}:", uuid::Uuid::new_v4());
    let cfg = CacheConfig {
        prefix: prefix.clone(),
        ttl: Duration::from_secs(60),
        ..CacheConfig::default()
    };
    let redis_cache = OutputCache::redis(&url, cfg.clone())?;
    measure(&format!("redis ({url})"), &redis_cache, n).await;
    measure("memory", &OutputCache::memory(cfg), n).await;
    // Clean up the one key written.
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).exec_async(&mut conn).await?;
    }
    Ok(())
}
