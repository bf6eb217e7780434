//! The gateway's small state beside the API: cached recommendation lists, each user's recent
//! views, and the A/B counts. In Redis when `--redis-url` is given (shared by every gateway
//! process), else in this process's memory.
//!
//! Redis layout (`{p}` is `--redis-key-prefix`, default `infermesh:`):
//! - `{p}recs:{user_id}`: a hash per user; field
//!   `{experiment}:{arm}:{model}:{version}:{k}:{recent}`, value the cached list as JSON with
//!   the time it was stored. EXPIRE (the cache TTL) is reset on every write, so a reader also
//!   checks the stored time: entries older than the TTL are misses. Invalidation (a purchase,
//!   or a view, since recent views are an input of the model) is one DEL of the hash, no SCAN.
//! - `{p}recent:{user_id}`: a list of the user's last [`RECENT_ITEMS`] distinct viewed
//!   products, most recent first (LREM + LPUSH + LTRIM + EXPIRE in one MULTI).
//! - `{p}ab:{experiment}`: a hash of counters, fields `{arm}:impressions` and `{arm}:clicks`
//!   (HINCRBY).
//!
//! Redis is a cache here, never a dependency of an answer: every call has a short timeout
//! (`--redis-timeout-ms`), and after a connection failure or timeout the store skips Redis for
//! [`BREAKER_OPEN`] (a small circuit breaker), so a hung or down Redis costs a request at most
//! one timeout a second instead of one per call. Callers count failures and carry on
//! uncached.
//!
//! The in-memory variant is written by hand rather than with a cache crate (moka, lru): it
//! needs only "keep the most recently written N users" plus a TTL check on read, which is a
//! map and an insertion queue ([`Bounded`]), and its behaviour must mirror the Redis layout
//! (per-user invalidation, lists of distinct recent items), which a generic cache would not
//! save us from writing anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use infermesh_common::metrics_names as m;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RecsSettings;

/// Recent views kept per user.
pub const RECENT_ITEMS: usize = 10;
/// How long Redis is skipped after a connection failure or timeout.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Cached lists kept per user in memory (beyond it the user's cache is cleared).
const MEMORY_FIELDS_PER_USER: usize = 64;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis failed recently; calls are skipped for a moment.
    #[error("redis failed recently; skipped")]
    Skipped,
    /// The Redis URL is not valid.
    #[error("invalid redis url: {0}")]
    Url(String),
}

/// Which A/B counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Items served.
    Impressions,
    /// Clicks on served items.
    Clicks,
}

impl Counter {
    /// The hash field suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Impressions => "impressions",
            Counter::Clicks => "clicks",
        }
    }
}

/// Counts a failed store call (`op` label) and logs it; returns the value on success.
pub(crate) fn counted<T>(op: &'static str, res: Result<T, StoreError>) -> Option<T> {
    match res {
        Ok(v) => Some(v),
        Err(e) => {
            metrics::counter!(m::GATEWAY_CACHE_ERRORS_TOTAL, "op" => op).increment(1);
            if matches!(e, StoreError::Skipped) {
                tracing::debug!(op, "store call skipped: redis failed recently");
            } else {
                tracing::warn!(op, error = %e, "store call failed; going on without it");
            }
            None
        }
    }
}

/// The store: Redis or memory.
#[derive(Debug)]
pub enum Store {
    /// Shared, in Redis.
    Redis(RedisStore),
    /// This process only.
    Memory(MemoryStore),
}

impl Store {
    /// An in-memory store.
    pub fn memory(settings: &RecsSettings) -> Self {
        Store::Memory(MemoryStore::new(settings))
    }

    /// A Redis store; nothing connects until the first call (so the gateway starts while
    /// Redis is down). Must run inside a Tokio runtime.
    pub fn redis(
        url: &str,
        prefix: &str,
        timeout: Duration,
        settings: &RecsSettings,
    ) -> Result<Self, StoreError> {
        Ok(Store::Redis(RedisStore::new(
            url, prefix, timeout, settings,
        )?))
    }

    /// Whether this is the Redis variant.
    pub fn is_redis(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// One cached list of `user`, if stored (fresh or not: the caller checks its age).
    pub async fn get_recs(&self, user: &str, field: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Redis(r) => r.get_recs(user, field).await,
            Store::Memory(mem) => Ok(mem.get_recs(user, field)),
        }
    }

    /// Stores a list of `user` under `field`.
    pub async fn put_recs(&self, user: &str, field: &str, value: String) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.put_recs(user, field, value).await,
            Store::Memory(mem) => {
                mem.put_recs(user, field, value);
                Ok(())
            }
        }
    }

    /// Drops every cached list of `user`.
    pub async fn invalidate(&self, user: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.invalidate(user).await,
            Store::Memory(mem) => {
                mem.invalidate(user);
                Ok(())
            }
        }
    }

    /// Records a view: `item` becomes the user's most recent; their cached lists are dropped
    /// (recent views are an input of the model).
    pub async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.push_recent(user, item).await,
            Store::Memory(mem) => {
                mem.push_recent(user, item);
                Ok(())
            }
        }
    }

    /// The user's recent views, most recent first.
    pub async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Redis(r) => r.recent(user).await,
            Store::Memory(mem) => Ok(mem.recent(user)),
        }
    }

    /// Adds `n` to an A/B counter.
    pub async fn incr(
        &self,
        experiment: &str,
        arm: &str,
        counter: Counter,
        n: u64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.incr(experiment, arm, counter, n).await,
            Store::Memory(mem) => {
                mem.incr(experiment, arm, counter, n);
                Ok(())
            }
        }
    }

    /// The counters of an experiment, by field (`{arm}:impressions`, `{arm}:clicks`).
    pub async fn counts(&self, experiment: &str) -> Result<HashMap<String, u64>, StoreError> {
        match self {
            Store::Redis(r) => r.counts(experiment).await,
            Store::Memory(mem) => Ok(mem.counts(experiment)),
        }
    }

    /// Checks that Redis answers (start-up log line); memory always does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.ping().await,
            Store::Memory(_) => Ok(()),
        }
    }
}

/// The hash field of a counter.
pub fn counter_field(arm: &str, counter: Counter) -> String {
    format!("{arm}:{}", counter.as_str())
}

/// `redis://user:secret@host` -> `redis://***@host`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The Redis variant.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    cache_ttl_s: i64,
    recent_ttl_s: i64,
    epoch: Instant,
    /// Milliseconds after `epoch` until which calls are skipped.
    skip_until_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

impl RedisStore {
    fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        settings: &RecsSettings,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Url(e.to_string()))?;
        // One quick reconnect attempt per failure: the breaker, not the driver, paces retries.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            timeout,
            cache_ttl_s: secs(settings.cache_ttl),
            recent_ttl_s: secs(settings.recent_ttl),
            epoch: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn recs_key(&self, user: &str) -> String {
        format!("{}recs:{user}", self.prefix)
    }
    fn recent_key(&self, user: &str) -> String {
        format!("{}recent:{user}", self.prefix)
    }
    fn ab_key(&self, experiment: &str) -> String {
        format!("{}ab:{experiment}", self.prefix)
    }

    /// Runs one Redis call under the timeout and the breaker.
    async fn call<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Skipped);
        }
        let res = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let connection = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal();
                (StoreError::Redis(e), connection)
            }
            Err(_) => (StoreError::Timeout(self.timeout), true),
        };
        if res.1 {
            let until = self.now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(1000);
            let before = self.skip_until_ms.swap(until, Ordering::Relaxed);
            if before <= self.now_ms() {
                tracing::warn!(error = %res.0, "redis failed: skipping it for {BREAKER_OPEN:?}");
            }
        }
        Err(res.0)
    }

    async fn get_recs(&self, user: &str, field: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("HGET")
            .arg(self.recs_key(user))
            .arg(field)
            .to_owned();
        self.call(async move { cmd.query_async::<Option<String>>(&mut c).await })
            .await
    }

    async fn put_recs(&self, user: &str, field: &str, value: String) -> Result<(), StoreError> {
        let key = self.recs_key(user);
        let mut c = self.conn.clone();
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.cache_ttl_s)
            .ignore();
        self.call(async move { p.exec_async(&mut c).await }).await
    }

    async fn invalidate(&self, user: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("DEL").arg(self.recs_key(user)).to_owned();
        self.call(async move { cmd.exec_async(&mut c).await }).await
    }

    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let key = self.recent_key(user);
        let mut c = self.conn.clone();
        let mut p = redis::pipe();
        p.atomic()
            .cmd("LREM")
            .arg(&key)
            .arg(0)
            .arg(item)
            .ignore()
            .cmd("LPUSH")
            .arg(&key)
            .arg(item)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(RECENT_ITEMS - 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.recent_ttl_s)
            .ignore()
            .cmd("DEL")
            .arg(self.recs_key(user))
            .ignore();
        self.call(async move { p.exec_async(&mut c).await }).await
    }

    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("LRANGE")
            .arg(self.recent_key(user))
            .arg(0)
            .arg(RECENT_ITEMS - 1)
            .to_owned();
        self.call(async move { cmd.query_async::<Vec<String>>(&mut c).await })
            .await
    }

    async fn incr(
        &self,
        experiment: &str,
        arm: &str,
        counter: Counter,
        n: u64,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("HINCRBY")
            .arg(self.ab_key(experiment))
            .arg(counter_field(arm, counter))
            .arg(n)
            .to_owned();
        self.call(async move { cmd.exec_async(&mut c).await }).await
    }

    async fn counts(&self, experiment: &str) -> Result<HashMap<String, u64>, StoreError> {
        let mut c = self.conn.clone();
        let cmd = redis::cmd("HGETALL")
            .arg(self.ab_key(experiment))
            .to_owned();
        self.call(async move { cmd.query_async::<HashMap<String, u64>>(&mut c).await })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        self.call(async move { redis::cmd("PING").exec_async(&mut c).await })
            .await
    }
}

/// A map keeping the `cap` most recently written keys: a hash map plus a queue of
/// (key, write generation); an entry is evicted when its latest write is the oldest.
#[derive(Debug)]
pub struct Bounded<V> {
    map: HashMap<String, (u64, V)>,
    order: VecDeque<(String, u64)>,
    generation: u64,
    cap: usize,
}

impl<V: Default> Bounded<V> {
    /// Holds at most `cap` keys (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
            cap: cap.max(1),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `key` (default if absent) for writing; the key becomes the newest, and
    /// the oldest keys go when there are more than `cap`.
    pub fn upsert(&mut self, key: &str) -> &mut V {
        // Re-written keys leave stale queue entries behind: rebuild the queue from the map
        // when they dominate, so memory stays proportional to `cap`.
        if self.order.len() > 2 * self.cap + 64 {
            let mut live: Vec<(String, u64)> =
                self.map.iter().map(|(k, (g, _))| (k.clone(), *g)).collect();
            live.sort_unstable_by_key(|(_, g)| *g);
            self.order = live.into();
        }
        self.generation += 1;
        let generation = self.generation;
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                let Some((old, g)) = self.order.pop_front() else {
                    break;
                };
                if self.map.get(&old).is_some_and(|(cur, _)| *cur == g) {
                    self.map.remove(&old);
                }
            }
        }
        self.order.push_back((key.to_string(), generation));
        let slot = self
            .map
            .entry(key.to_string())
            .or_insert_with(|| (generation, V::default()));
        slot.0 = generation;
        &mut slot.1
    }
}

#[derive(Debug)]
struct RecentList {
    items: VecDeque<String>,
    touched: Instant,
}

impl Default for RecentList {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            touched: Instant::now(),
        }
    }
}

/// The in-memory variant.
#[derive(Debug)]
pub struct MemoryStore {
    recs: Mutex<Bounded<HashMap<String, String>>>,
    recent: Mutex<Bounded<RecentList>>,
    counts: Mutex<HashMap<String, HashMap<String, u64>>>,
    recent_ttl: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    fn new(settings: &RecsSettings) -> Self {
        Self {
            recs: Mutex::new(Bounded::new(settings.memory_max_users)),
            recent: Mutex::new(Bounded::new(settings.memory_max_users)),
            counts: Mutex::new(HashMap::new()),
            recent_ttl: settings.recent_ttl,
        }
    }

    fn get_recs(&self, user: &str, field: &str) -> Option<String> {
        lock(&self.recs).get(user)?.get(field).cloned()
    }

    fn put_recs(&self, user: &str, field: &str, value: String) {
        let mut recs = lock(&self.recs);
        let fields = recs.upsert(user);
        if fields.len() >= MEMORY_FIELDS_PER_USER && !fields.contains_key(field) {
            fields.clear();
        }
        fields.insert(field.to_string(), value);
    }

    fn invalidate(&self, user: &str) {
        lock(&self.recs).remove(user);
    }

    fn push_recent(&self, user: &str, item: &str) {
        {
            let mut recent = lock(&self.recent);
            let list = recent.upsert(user);
            if list.touched.elapsed() >= self.recent_ttl {
                list.items.clear();
            }
            list.items.retain(|x| x != item);
            list.items.push_front(item.to_string());
            list.items.truncate(RECENT_ITEMS);
            list.touched = Instant::now();
        }
        self.invalidate(user);
    }

    fn recent(&self, user: &str) -> Vec<String> {
        let mut recent = lock(&self.recent);
        match recent.get(user) {
            Some(list) if list.touched.elapsed() < self.recent_ttl => {
                list.items.iter().cloned().collect()
            }
            Some(_) => {
                recent.remove(user);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn incr(&self, experiment: &str, arm: &str, counter: Counter, n: u64) {
        let mut counts = lock(&self.counts);
        let c = counts
            .entry(experiment.to_string())
            .or_default()
            .entry(counter_field(arm, counter))
            .or_default();
        *c = c.saturating_add(n);
    }

    fn counts(&self, experiment: &str) -> HashMap<String, u64> {
        lock(&self.counts)
            .get(experiment)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn bounded_keeps_the_most_recently_written() {
        let mut b: Bounded<u32> = Bounded::new(3);
        for k in ["a", "b", "c"] {
            *b.upsert(k) += 1;
        }
        // Re-writing "a" makes "b" the oldest.
        *b.upsert("a") += 1;
        *b.upsert("d") += 1;
        assert_eq!(b.len(), 3);
        assert!(b.get("b").is_none());
        assert_eq!(b.get("a"), Some(&2));
        // Many re-writes of one key never grow the queue without bound nor evict others.
        for _ in 0..1000 {
            *b.upsert("c") += 1;
        }
        assert!(b.order.len() <= 2 * 3 + 64 + 1);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get("c"), Some(&1001));
        *b.upsert("e") += 1;
        assert!(b.get("a").is_none(), "a was the oldest write");
        assert!(b.get("d").is_some() && b.get("c").is_some());
    }

    #[tokio::test]
    async fn memory_store_mirrors_the_redis_layout() {
        let mut settings = Settings::default().recs;
        settings.memory_max_users = 2;
        let s = Store::memory(&settings);
        s.put_recs("u1", "f", "v".into()).await.unwrap();
        assert_eq!(s.get_recs("u1", "f").await.unwrap().as_deref(), Some("v"));
        s.invalidate("u1").await.unwrap();
        assert_eq!(s.get_recs("u1", "f").await.unwrap(), None);

        for i in 0..12 {
            s.push_recent("u1", &format!("p{i}")).await.unwrap();
        }
        s.push_recent("u1", "p5").await.unwrap();
        let r = s.recent("u1").await.unwrap();
        assert_eq!(r.len(), RECENT_ITEMS);
        assert_eq!(r[0], "p5");
        assert_eq!(r[1], "p11");
        assert_eq!(r.iter().filter(|x| *x == "p5").count(), 1, "distinct");
        // A view drops the user's cached lists.
        s.put_recs("u1", "f", "v".into()).await.unwrap();
        s.push_recent("u1", "p1").await.unwrap();
        assert_eq!(s.get_recs("u1", "f").await.unwrap(), None);

        s.incr("e", "a", Counter::Impressions, 5).await.unwrap();
        s.incr("e", "a", Counter::Clicks, 1).await.unwrap();
        s.incr("e", "a", Counter::Impressions, 2).await.unwrap();
        let c = s.counts("e").await.unwrap();
        assert_eq!(c["a:impressions"], 7);
        assert_eq!(c["a:clicks"], 1);
        assert!(s.counts("other").await.unwrap().is_empty());

        // Bounded users.
        for u in ["x", "y", "z"] {
            s.put_recs(u, "f", "v".into()).await.unwrap();
        }
        assert!(s.get_recs("x", "f").await.unwrap().is_none());
        assert!(s.get_recs("z", "f").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn memory_recent_views_expire() {
        let mut settings = Settings::default().recs;
        settings.recent_ttl = Duration::from_millis(30);
        let s = Store::memory(&settings);
        s.push_recent("u", "p1").await.unwrap();
        assert_eq!(s.recent("u").await.unwrap(), ["p1"]);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(s.recent("u").await.unwrap().is_empty());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
