//! The LLM output cache (feature `cache`): identical requests (same model, same sanitised
//! prompt, same options) are answered from here, never sent to the LLM twice while the entry
//! lives. Every LLM caller shares it: the side channel's jobs (`infermesh-pipelines`) and the
//! sentiment family's zero-shot arm (`infermesh-sentiment`), which is why it lives beside the
//! client, below both.
//!
//! The key is `prefix + "cache:" + hex SHA-256` over the model, the system text, the prompt and
//! the canonical JSON of the options (keys sorted, `format` included), each length-prefixed so
//! that no two different requests share a byte stream. Backends: Redis (`GET`, `SET .. EX`),
//! shared by every worker, or a bounded in-memory LRU with a TTL when no Redis is configured.
//! A Redis failure is a miss (counted in `infermesh_llm_cache_requests_total{result="error"}`
//! and `infermesh_llm_cache_errors_total`), never an error to the caller: the cache may only
//! make things faster. Both metrics carry `source`, the caller that owns the cache
//! ([`CacheConfig::source`]: `jobs` or `sentiment`), so each one's hit rate reads on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use infermesh_common::metrics_names::{LLM_CACHE_ERRORS_TOTAL, LLM_CACHE_REQUESTS_TOTAL};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// A cache key: hex SHA-256 of the request (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of a request to `model` with `system` text, `prompt` (already sanitised and
    /// built) and `options` (Ollama's options plus `format`, as one JSON value).
    pub fn new(model: &str, system: &str, prompt: &str, options: &Value) -> Self {
        let options = canonical_json(options);
        let mut h = Sha256::new();
        for part in [model, system, prompt, options.as_str()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Self(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// JSON with object keys sorted at every level, so equal options hash equally whatever order
/// they were written in.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let ordered: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in ordered {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json's map keeps insertion order only with `preserve_order`; inserting in sorted
    // order makes the output sorted either way.
    sorted(value).to_string()
}

/// Why the cache could not be set up (at start-up only; lookups never fail).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The Redis URL is invalid.
    #[error("invalid Redis URL: {0}")]
    Url(String),
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long an entry lives.
    pub ttl: Duration,
    /// Key prefix (e.g. `infermesh:llm:`).
    pub prefix: String,
    /// Largest number of entries held in memory (memory backend only).
    pub max_entries: usize,
    /// Deadline of one Redis call; past it the lookup is a miss.
    pub redis_timeout: Duration,
    /// The `source` label of the cache metrics: who owns the cache (a fixed name, never
    /// request data, so the label stays bounded).
    pub source: &'static str,
}

/// [`CacheConfig::source`] of the LLM side channel's jobs (the default).
pub const SOURCE_JOBS: &str = "jobs";
/// [`CacheConfig::source`] of the sentiment family's zero-shot arm.
pub const SOURCE_SENTIMENT: &str = "sentiment";

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            prefix: "infermesh:llm:".into(),
            max_entries: 10_000,
            redis_timeout: Duration::from_millis(250),
            source: SOURCE_JOBS,
        }
    }
}

#[derive(Debug)]
struct MemoryEntry {
    value: String,
    expires: Instant,
    tick: u64,
}

/// The in-memory backend: a map plus a tick-ordered index for least-recently-used eviction.
#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<String, MemoryEntry>,
    by_tick: BTreeMap<u64, String>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, key: &str, now: Instant) -> Option<String> {
        let expired = self.entries.get(key)?.expires <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(key)?;
        self.by_tick.remove(&e.tick);
        e.tick = tick;
        self.by_tick.insert(tick, key.to_string());
        Some(e.value.clone())
    }

    fn put(&mut self, key: &str, value: String, expires: Instant, max: usize) {
        self.remove(key);
        while self.entries.len() >= max.max(1) {
            let Some((_, oldest)) = self.by_tick.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.by_tick.insert(self.tick, key.to_string());
        self.entries.insert(
            key.to_string(),
            MemoryEntry {
                value,
                expires,
                tick: self.tick,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.by_tick.remove(&e.tick);
        }
    }
}

enum Backend {
    Redis(ConnectionManager),
    Memory(Mutex<Lru>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Redis(_) => f.write_str("Redis"),
            Backend::Memory(_) => f.write_str("Memory"),
        }
    }
}

/// The output cache.
#[derive(Debug)]
pub struct OutputCache {
    backend: Backend,
    cfg: CacheConfig,
}

/// A Redis connection manager that reconnects lazily, with one quick retry per failure (the
/// side channel's queue and result sink use it too).
pub fn redis_manager(url: &str, timeout: Duration) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(timeout);
    ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| e.to_string())
}

/// Checks that `url` is a Redis URL the cache can use, without connecting (a config check).
pub fn check_redis_url(url: &str) -> Result<(), CacheError> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| CacheError::Url(e.to_string()))
}

impl OutputCache {
    /// A cache in Redis at `url`. Connects lazily: a Redis that is down at start-up is a run
    /// of misses until it is back.
    pub fn redis(url: &str, cfg: CacheConfig) -> Result<Self, CacheError> {
        let conn = redis_manager(url, cfg.redis_timeout).map_err(CacheError::Url)?;
        Ok(Self::with(Backend::Redis(conn), cfg))
    }

    /// A cache in this process's memory (at most `cfg.max_entries`, least recently used
    /// evicted first).
    pub fn memory(cfg: CacheConfig) -> Self {
        Self::with(Backend::Memory(Mutex::new(Lru::default())), cfg)
    }

    fn with(backend: Backend, cfg: CacheConfig) -> Self {
        // Every result exported from the start, so the hit rate is 0, not absent, before the
        // first hit.
        for result in ["hit", "miss", "error"] {
            metrics::counter!(LLM_CACHE_REQUESTS_TOTAL, "result" => result, "source" => cfg.source)
                .increment(0);
        }
        Self { backend, cfg }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}cache:{}", self.cfg.prefix, key.as_str())
    }

    /// The cached value of `key`, or `None` on a miss, an expired entry, or a failing Redis.
    pub async fn get(&self, key: &CacheKey) -> Option<String> {
        let (value, result) = match &self.backend {
            Backend::Memory(lru) => {
                let v = lock(lru).get(key.as_str(), Instant::now());
                let result = if v.is_some() { "hit" } else { "miss" };
                (v, result)
            }
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("GET").arg(self.redis_key(key)).to_owned();
                let call = async move { cmd.query_async::<Option<String>>(&mut conn).await };
                match tokio::time::timeout(self.cfg.redis_timeout, call).await {
                    Ok(Ok(Some(v))) => (Some(v), "hit"),
                    Ok(Ok(None)) => (None, "miss"),
                    Ok(Err(e)) => {
                        self.failed("get", &e.to_string());
                        (None, "error")
                    }
                    Err(_) => {
                        self.failed("get", "timed out");
                        (None, "error")
                    }
                }
            }
        };
        metrics::counter!(LLM_CACHE_REQUESTS_TOTAL, "result" => result, "source" => self.cfg.source)
            .increment(1);
        value
    }

    /// Stores `value` under `key` for the configured TTL. A failing Redis is counted and
    /// otherwise ignored.
    pub async fn put(&self, key: &CacheKey, value: &str) {
        match &self.backend {
            Backend::Memory(lru) => {
                let expires = Instant::now() + self.cfg.ttl;
                lock(lru).put(
                    key.as_str(),
                    value.to_string(),
                    expires,
                    self.cfg.max_entries,
                );
            }
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("SET")
                    .arg(self.redis_key(key))
                    .arg(value)
                    .arg("EX")
                    .arg(self.cfg.ttl.as_secs().max(1))
                    .to_owned();
                let call = async move { cmd.exec_async(&mut conn).await };
                match tokio::time::timeout(self.cfg.redis_timeout, call).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.failed("put", &e.to_string()),
                    Err(_) => self.failed("put", "timed out"),
                }
            }
        }
    }
}

fn lock(lru: &Mutex<Lru>) -> std::sync::MutexGuard<'_, Lru> {
    // A panic while holding the lock leaves a consistent map (each method finishes its edits
    // before returning); keep using it.
    lru.lock().unwrap_or_else(|p| p.into_inner())
}

impl OutputCache {
    fn failed(&self, op: &'static str, detail: &str) {
        metrics::counter!(LLM_CACHE_ERRORS_TOTAL, "op" => op, "source" => self.cfg.source)
            .increment(1);
        tracing::warn!(
            op,
            source = self.cfg.source,
            error = detail,
            "LLM cache call failed; treated as a miss"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_depend_on_every_part_and_not_on_option_order() {
        let opts = json!({"temperature": 0, "num_predict": 8, "format": {"type": "object", "required": ["a"]}});
        let reordered = json!({"format": {"required": ["a"], "type": "object"}, "num_predict": 8, "temperature": 0});
        let k = CacheKey::new("m", "s", "p", &opts);
        assert_eq!(k, CacheKey::new("m", "s", "p", &reordered));
        assert_eq!(k.as_str().len(), 64);
        assert_ne!(k, CacheKey::new("m2", "s", "p", &opts));
        assert_ne!(k, CacheKey::new("m", "s", "p2", &opts));
        assert_ne!(k, CacheKey::new("m", "s2", "p", &opts));
        assert_ne!(k, CacheKey::new("m", "s", "p", &json!({"temperature": 1})));
        // Length prefixes: moving bytes between parts changes the key.
        assert_ne!(
            CacheKey::new("ab", "", "c", &opts),
            CacheKey::new("a", "", "bc", &opts)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_entries_expire_and_the_least_recent_goes_first() {
        let cache = OutputCache::memory(CacheConfig {
            ttl: Duration::from_secs(10),
            max_entries: 2,
            ..CacheConfig::default()
        });
        let key = |p: &str| CacheKey::new("m", "", p, &json!({}));
        cache.put(&key("a"), "A").await;
        cache.put(&key("b"), "B").await;
        assert_eq!(cache.get(&key("a")).await.as_deref(), Some("A"));
        // "b" is now the least recently used.
        cache.put(&key("c"), "C").await;
        assert_eq!(cache.get(&key("b")).await, None);
        assert_eq!(cache.get(&key("a")).await.as_deref(), Some("A"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.get(&key("a")).await, None);
        assert_eq!(cache.get(&key("c")).await, None);
    }
}
