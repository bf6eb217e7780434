//! The Redis stream state (one Lua script per transaction) against the in-memory one on the
//! same random, partly out-of-order sequence: the same velocity counts, window maxima, late
//! flags and spend, and replays that count nothing twice, with batches awaited one at a time
//! and submitted ahead of their answers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use infermesh_pipeline_fraud::stream::{StreamConfig, StreamState, TxKey};

fn redis_url() -> String {
    std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A tiny deterministic generator (xorshift), so the sequence is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test]
async fn redis_and_memory_agree_on_a_random_stream() {
    let prefix = format!("infermesh-test:{}:", uuid_like());
    let cfg = StreamConfig {
        prefix: prefix.clone(),
        window: Duration::from_secs(60),
        allowed_lateness: Duration::from_secs(10),
        ..StreamConfig::default()
    };
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no Redis at {} ({e}); scripts/test.sh starts one",
                redis_url()
            )
        });
    let redis_state = StreamState::redis(conn, cfg.clone());
    let memory = StreamState::memory(cfg, 1000);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let users = ["a", "b", "c"];
    let devices = [Some("d1"), Some("d2"), None];
    let mut clock = 1_800_000_000_000i64;
    let mut events = Vec::new();
    for i in 0..400 {
        clock += (rng.next() % 9_000) as i64;
        // One in five arrives up to 20 s late (some within the 10 s lateness, some beyond).
        let ts = if rng.next().is_multiple_of(5) {
            clock - (rng.next() % 20_000) as i64
        } else {
            clock
        };
        let u = users[(rng.next() % 3) as usize];
        let d = devices[(rng.next() % 3) as usize];
        let amount = (rng.next() % 10_000) as f64 / 100.0;
        events.push((format!("t{i}"), u, d, ts, amount));
    }
    // Replays of earlier transactions, mixed in.
    let mut with_replays = events.clone();
    for k in [3usize, 50, 120, 399] {
        with_replays.insert(k + 1, events[k].clone());
    }
    let keys: Vec<TxKey<'_>> = with_replays
        .iter()
        .map(|(id, u, d, ts, amount)| TxKey {
            transaction_id: id,
            user_id: u,
            device_id: *d,
            ts_ms: *ts,
            amount: *amount,
        })
        .collect();
    // In batches, as the pipeline sends them: every batch submitted before the first answer
    // is awaited (so Redis gets them merged into round trips, in order), the first ones again
    // one at a time.
    let (ahead, rest) = keys.split_at(74);
    let mut from_redis = Vec::new();
    for chunk in ahead.chunks(37) {
        from_redis.extend(redis_state.update(chunk).await.unwrap());
    }
    let submitted: Vec<_> = rest.chunks(37).map(|c| redis_state.submit(c)).collect();
    for update in submitted {
        from_redis.extend(update.await.unwrap());
    }
    let mut from_memory = Vec::new();
    for chunk in keys.chunks(37) {
        from_memory.extend(memory.update(chunk).await.unwrap());
    }
    assert_eq!(from_redis.len(), from_memory.len());
    for (i, (r, m)) in from_redis.iter().zip(&from_memory).enumerate() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * a.abs().max(1.0);
        assert_eq!(
            (
                r.fresh,
                r.user_1m,
                r.user_1h,
                r.user_24h,
                r.device_1m,
                r.device_1h,
                r.window_max,
                r.late
            ),
            (
                m.fresh,
                m.user_1m,
                m.user_1h,
                m.user_24h,
                m.device_1m,
                m.device_1h,
                m.window_max,
                m.late
            ),
            "event {i}: {:?}",
            keys[i]
        );
        assert!(close(r.avg_spend_after, m.avg_spend_after), "event {i}");
        match (r.avg_spend_before, m.avg_spend_before) {
            (Some(a), Some(b)) => assert!(close(a, b), "event {i}"),
            (a, b) => assert_eq!(a, b, "event {i}"),
        }
    }
    // The replays came back unchanged and not fresh.
    assert_eq!(from_redis.iter().filter(|f| !f.fresh).count(), 4);
    assert!(from_redis.iter().any(|f| f.late));
    assert!(from_redis.iter().any(|f| f.window_max >= 5));

    let mut c = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut c)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(&mut c).unwrap();
    }
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", t.as_nanos(), std::process::id())
}
