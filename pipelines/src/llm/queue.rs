//! The job queue in front of the LLM: API paths enqueue and return at once; workers take jobs
//! at a bounded concurrency, so a burst waits here instead of overloading the LLM.
//!
//! Two backends with the same semantics:
//! - **Redis** (a reliable queue shared by every worker process). New jobs are `LPUSH`ed onto
//!   `<prefix>queue:ready` by a Lua script that first checks the depth (ready plus delayed
//!   retries), so the bound holds under concurrent producers. A worker moves a job with
//!   `BLMOVE` onto `<prefix>queue:processing` (on its own connection: a blocking command
//!   would stall every other call multiplexed on a shared one), then claims it: a lease in the
//!   `queue:leases` ZSET (deadline = job timeout + grace) and one more attempt in the
//!   `queue:attempts` hash. Done jobs leave all three; a failed attempt goes to the
//!   `queue:delayed` ZSET, due after an exponential backoff; a job out of attempts goes to the
//!   `queue:dead` list (capped) with its last error. [`JobQueue::maintain`], run by every
//!   worker every few hundred milliseconds, moves due retries back to ready and recovers jobs
//!   whose lease passed (a crashed or stuck worker): they return to the head of the queue, and
//!   their next claim counts one more attempt, so a job that crashes workers ends dead-lettered
//!   rather than looping.
//! - **Memory** (no Redis configured): [`MemoryState`], a plain struct with the same
//!   transitions, behind a mutex and a `Notify`.
//!
//! Jobs are stored as JSON strings ([`QueuedJob`]); the string itself is the member in the
//! processing list and the lease ZSET, so every transition names exactly one job.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use infermesh_common::metrics_names::{
    LLM_JOB_QUEUE_DEPTH, LLM_JOB_RECOVERED_TOTAL, LLM_JOBS_TOTAL,
};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::llm::cache::redis_manager;

/// Dead-lettered jobs kept (the oldest go first).
pub const MAX_DEAD_LETTERS: usize = 10_000;

/// A job as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// Unique id (a UUID), the key of its result.
    pub id: String,
    /// What to do (a metric label; [`crate::llm::jobs::JobInput`]'s tag for LLM jobs).
    pub kind: String,
    /// The input.
    pub payload: Value,
    /// When it was enqueued, milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// When it last became ready to run (enqueue, or its retry's due time).
    pub ready_at_ms: u64,
}

/// A job a worker holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// The job.
    pub job: QueuedJob,
    /// 1 on the first run, one more on each retry or recovery.
    pub attempt: u32,
    raw: String,
}

/// A dead-lettered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job.
    pub job: QueuedJob,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
}

/// Why a queue call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue is at its depth: refuse the request (HTTP 429) rather than wait.
    #[error("the LLM job queue is full ({depth} jobs waiting)")]
    Full {
        /// The bound.
        depth: usize,
    },
    /// Redis failed.
    #[error("LLM job queue: {0}")]
    Backend(String),
    /// A stored job is not valid JSON (written by something else).
    #[error("LLM job queue: malformed job {0}")]
    Malformed(String),
}

impl QueueError {
    /// The caller-facing classification.
    pub fn kind(&self) -> infermesh_common::ErrorKind {
        match self {
            QueueError::Full { .. } => infermesh_common::ErrorKind::Overloaded,
            QueueError::Backend(_) => infermesh_common::ErrorKind::Unavailable,
            QueueError::Malformed(_) => infermesh_common::ErrorKind::Internal,
        }
    }
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Backend(e.to_string())
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Retries that came due and were queued again.
    pub promoted: usize,
    /// Jobs recovered from expired leases.
    pub recovered: usize,
    /// Jobs waiting (ready plus delayed) after the pass.
    pub depth: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The in-memory queue: the same transitions as the Redis scripts, on plain collections, with
/// the time passed in (unit-tested without a clock).
#[derive(Debug, Default)]
pub struct MemoryState {
    ready: VecDeque<String>,
    /// Due time, then a sequence number for equal times -> job.
    delayed: BTreeMap<(u64, u64), String>,
    /// Job -> lease deadline.
    processing: HashMap<String, u64>,
    attempts: HashMap<String, u32>,
    dead: VecDeque<String>,
    seq: u64,
}

impl MemoryState {
    /// Jobs waiting: ready plus delayed.
    pub fn depth(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Jobs held by workers.
    pub fn in_flight(&self) -> usize {
        self.processing.len()
    }

    /// Dead-lettered entries (JSON [`DeadLetter`]s), newest first.
    pub fn dead(&self) -> impl Iterator<Item = &String> {
        self.dead.iter()
    }

    /// Queues `raw` unless `depth` jobs wait already.
    pub fn enqueue(&mut self, raw: String, depth: usize) -> bool {
        if self.depth() >= depth {
            return false;
        }
        self.ready.push_front(raw);
        true
    }

    /// Takes the oldest ready job, leased until `lease_until`; returns it and its attempt.
    pub fn take(
        &mut self,
        id_of: impl Fn(&str) -> String,
        lease_until: u64,
    ) -> Option<(String, u32)> {
        let raw = self.ready.pop_back()?;
        self.processing.insert(raw.clone(), lease_until);
        let n = self.attempts.entry(id_of(&raw)).or_insert(0);
        *n += 1;
        Some((raw, *n))
    }

    /// Finishes a job; false when it was not held (its lease passed and it was recovered).
    pub fn complete(&mut self, raw: &str, id: &str) -> bool {
        let held = self.processing.remove(raw).is_some();
        if held {
            self.attempts.remove(id);
        }
        held
    }

    /// Schedules `new_raw` (the job with its new ready time) at `due` in place of `raw`.
    pub fn retry(&mut self, raw: &str, new_raw: String, due: u64) -> bool {
        let held = self.processing.remove(raw).is_some();
        if held {
            self.seq += 1;
            self.delayed.insert((due, self.seq), new_raw);
        }
        held
    }

    /// Moves a job to the dead-letter list as `entry`.
    pub fn dead_letter(&mut self, raw: &str, id: &str, entry: String) -> bool {
        let held = self.processing.remove(raw).is_some();
        if held {
            self.attempts.remove(id);
            self.dead.push_front(entry);
            self.dead.truncate(MAX_DEAD_LETTERS);
        }
        held
    }

    /// Moves due retries to ready, and jobs past their lease back to the head of the queue.
    pub fn maintain(&mut self, now: u64) -> Maintenance {
        let mut m = Maintenance::default();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_front(entry.remove());
            m.promoted += 1;
        }
        let expired: Vec<String> = self
            .processing
            .iter()
            .filter(|&(_, &deadline)| deadline <= now)
            .map(|(raw, _)| raw.clone())
            .collect();
        for raw in expired {
            self.processing.remove(&raw);
            self.ready.push_back(raw);
            m.recovered += 1;
        }
        m.depth = self.depth();
        m
    }
}

// KEYS: ready, delayed. ARGV: depth, job.
const ENQUEUE: &str = r"
if redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then
  return -1
end
return redis.call('LPUSH', KEYS[1], ARGV[2])
";

// KEYS: leases, attempts. ARGV: job, lease deadline, id.
const CLAIM: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
";

// KEYS: processing, leases, attempts. ARGV: job, id.
const COMPLETE: &str = r"
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
return n
";

// KEYS: processing, leases, delayed. ARGV: job, new job, due.
const RETRY: &str = r"
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) end
return n
";

// KEYS: processing, leases, attempts, dead. ARGV: job, id, entry, cap.
const DEAD: &str = r"
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('LPUSH', KEYS[4], ARGV[3])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
end
return n
";

// KEYS: ready, processing, leases, delayed. ARGV: now, lease deadline for unleased jobs.
// Returns {promoted, recovered, depth}.
const MAINTAIN: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, 256)
for _, j in ipairs(due) do
  redis.call('ZREM', KEYS[4], j)
  redis.call('LPUSH', KEYS[1], j)
end
local recovered = 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 256)
for _, j in ipairs(expired) do
  redis.call('ZREM', KEYS[3], j)
  if redis.call('LREM', KEYS[2], 1, j) > 0 then
    redis.call('RPUSH', KEYS[1], j)
    recovered = recovered + 1
  end
end
-- A worker that died between BLMOVE and its claim left a job with no lease: give it one, so
-- that it is recovered when that lease passes (not at once: its claim may be on the way).
local held = redis.call('LRANGE', KEYS[2], 0, 1023)
for _, j in ipairs(held) do
  if not redis.call('ZSCORE', KEYS[3], j) then
    redis.call('ZADD', KEYS[3], ARGV[2], j)
  end
end
return {#due, recovered, redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[4])}
";

struct RedisBackend {
    conn: ConnectionManager,
    /// For `BLMOVE` only.
    take_conn: ConnectionManager,
    keys: Keys,
}

#[derive(Debug, Clone)]
struct Keys {
    ready: String,
    processing: String,
    leases: String,
    delayed: String,
    attempts: String,
    dead: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let k = |s: &str| format!("{prefix}queue:{s}");
        Self {
            ready: k("ready"),
            processing: k("processing"),
            leases: k("leases"),
            delayed: k("delayed"),
            attempts: k("attempts"),
            dead: k("dead"),
        }
    }
}

enum Backend {
    Redis(RedisBackend),
    Memory {
        state: Mutex<MemoryState>,
        notify: Notify,
    },
}

/// Queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Most jobs waiting (ready plus delayed retries); more are refused with
    /// [`QueueError::Full`].
    pub depth: usize,
    /// Key prefix in Redis (e.g. `infermesh:llm:`).
    pub prefix: String,
    /// How long a worker holds a job before others may take it back: more than the job
    /// timeout.
    pub lease: Duration,
    /// Deadline of one Redis call.
    pub redis_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            depth: 1000,
            prefix: "infermesh:llm:".into(),
            lease: Duration::from_secs(90),
            redis_timeout: Duration::from_secs(2),
        }
    }
}

struct Inner {
    backend: Backend,
    cfg: QueueConfig,
}

/// A handle on the job queue; cheap to clone, shared by producers and workers.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.inner.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory { .. } => "memory",
        };
        f.debug_struct("JobQueue")
            .field("backend", &backend)
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

fn id_of(raw: &str) -> String {
    serde_json::from_str::<QueuedJob>(raw)
        .map(|j| j.id)
        .unwrap_or_else(|_| raw.to_string())
}

/// Exports the job counters at 0 for every kind and outcome, and the depth at 0, so rates,
/// dashboards and alerts see them before the first job.
fn export_zeros() {
    for kind in crate::llm::jobs::JobKind::ALL {
        for outcome in ["enqueued", "rejected_full", "ok", "retried", "dead_letter"] {
            metrics::counter!(LLM_JOBS_TOTAL, "kind" => kind.as_str(), "outcome" => outcome)
                .increment(0);
        }
    }
    metrics::gauge!(LLM_JOB_QUEUE_DEPTH).increment(0.0);
}

impl JobQueue {
    /// A queue in Redis at `url` (connections are made lazily).
    pub fn redis(url: &str, cfg: QueueConfig) -> Result<Self, QueueError> {
        export_zeros();
        let conn = redis_manager(url, cfg.redis_timeout).map_err(QueueError::Backend)?;
        // The blocking take waits up to a second on top of the call deadline.
        let take_conn = redis_manager(url, cfg.redis_timeout + Duration::from_secs(2))
            .map_err(QueueError::Backend)?;
        let keys = Keys::new(&cfg.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Redis(RedisBackend {
                    conn,
                    take_conn,
                    keys,
                }),
                cfg,
            }),
        })
    }

    /// A queue in this process's memory.
    pub fn memory(cfg: QueueConfig) -> Self {
        export_zeros();
        Self {
            inner: Arc::new(Inner {
                backend: Backend::Memory {
                    state: Mutex::new(MemoryState::default()),
                    notify: Notify::new(),
                },
                cfg,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    /// Queues a job of `kind` with `payload` and returns its id at once; [`QueueError::Full`]
    /// when the queue is at its depth.
    pub async fn enqueue(&self, kind: &str, payload: Value) -> Result<String, QueueError> {
        let now = now_ms();
        let job = QueuedJob {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            payload,
            enqueued_at_ms: now,
            ready_at_ms: now,
        };
        let raw = serde_json::to_string(&job).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let depth = self.inner.cfg.depth;
        let accepted = match &self.inner.backend {
            Backend::Memory { state, notify } => {
                let ok = lock(state).enqueue(raw, depth);
                if ok {
                    notify.notify_one();
                }
                ok
            }
            Backend::Redis(r) => {
                let n: i64 = self
                    .eval(
                        r,
                        ENQUEUE,
                        &[&r.keys.ready, &r.keys.delayed],
                        &[&depth.to_string(), &raw],
                    )
                    .await?;
                n >= 0
            }
        };
        let outcome = if accepted {
            "enqueued"
        } else {
            "rejected_full"
        };
        metrics::counter!(LLM_JOBS_TOTAL, "kind" => kind.to_string(), "outcome" => outcome)
            .increment(1);
        if accepted {
            Ok(job.id)
        } else {
            Err(QueueError::Full { depth })
        }
    }

    /// Takes the next job, waiting up to `wait` for one; `None` when none came.
    pub async fn take(&self, wait: Duration) -> Result<Option<Taken>, QueueError> {
        let lease_until = now_ms() + millis(self.inner.cfg.lease);
        let (raw, attempt) = match &self.inner.backend {
            Backend::Memory { state, notify } => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let notified = notify.notified();
                    if let Some(t) = lock(state).take(id_of, lease_until) {
                        break t;
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(None);
                    }
                }
            }
            Backend::Redis(r) => {
                let mut conn = r.take_conn.clone();
                let raw: Option<String> = redis::cmd("BLMOVE")
                    .arg(&r.keys.ready)
                    .arg(&r.keys.processing)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(wait.as_secs_f64().clamp(0.01, 1.0))
                    .query_async(&mut conn)
                    .await?;
                let Some(raw) = raw else {
                    return Ok(None);
                };
                let id = id_of(&raw);
                let attempt: i64 = self
                    .eval(
                        r,
                        CLAIM,
                        &[&r.keys.leases, &r.keys.attempts],
                        &[&raw, &lease_until.to_string(), &id],
                    )
                    .await?;
                (raw, u32::try_from(attempt).unwrap_or(u32::MAX))
            }
        };
        let job: QueuedJob =
            serde_json::from_str(&raw).map_err(|e| QueueError::Malformed(format!("{e}: {raw}")))?;
        Ok(Some(Taken { job, attempt, raw }))
    }

    /// Finishes a job (its outputs are written). `false` when its lease had passed and it was
    /// queued again meanwhile (it will run once more: delivery is at least once).
    pub async fn complete(&self, taken: &Taken) -> Result<bool, QueueError> {
        match &self.inner.backend {
            Backend::Memory { state, .. } => Ok(lock(state).complete(&taken.raw, &taken.job.id)),
            Backend::Redis(r) => {
                let n: i64 = self
                    .eval(
                        r,
                        COMPLETE,
                        &[&r.keys.processing, &r.keys.leases, &r.keys.attempts],
                        &[&taken.raw, &taken.job.id],
                    )
                    .await?;
                Ok(n > 0)
            }
        }
    }

    /// Runs the job again after `delay`.
    pub async fn retry(&self, taken: &Taken, delay: Duration) -> Result<bool, QueueError> {
        let due = now_ms() + millis(delay);
        let mut job = taken.job.clone();
        job.ready_at_ms = due;
        let new_raw =
            serde_json::to_string(&job).map_err(|e| QueueError::Malformed(e.to_string()))?;
        match &self.inner.backend {
            Backend::Memory { state, .. } => Ok(lock(state).retry(&taken.raw, new_raw, due)),
            Backend::Redis(r) => {
                let n: i64 = self
                    .eval(
                        r,
                        RETRY,
                        &[&r.keys.processing, &r.keys.leases, &r.keys.delayed],
                        &[&taken.raw, &new_raw, &due.to_string()],
                    )
                    .await?;
                Ok(n > 0)
            }
        }
    }

    /// Moves the job to the dead-letter list with its last `error`.
    pub async fn dead_letter(&self, taken: &Taken, error: &str) -> Result<bool, QueueError> {
        let entry = serde_json::to_string(&DeadLetter {
            job: taken.job.clone(),
            attempts: taken.attempt,
            error: error.to_string(),
        })
        .map_err(|e| QueueError::Malformed(e.to_string()))?;
        match &self.inner.backend {
            Backend::Memory { state, .. } => {
                Ok(lock(state).dead_letter(&taken.raw, &taken.job.id, entry))
            }
            Backend::Redis(r) => {
                let n: i64 = self
                    .eval(
                        r,
                        DEAD,
                        &[
                            &r.keys.processing,
                            &r.keys.leases,
                            &r.keys.attempts,
                            &r.keys.dead,
                        ],
                        &[
                            &taken.raw,
                            &taken.job.id,
                            &entry,
                            &MAX_DEAD_LETTERS.to_string(),
                        ],
                    )
                    .await?;
                Ok(n > 0)
            }
        }
    }

    /// Queues due retries again and recovers jobs past their lease; sets the depth gauge.
    pub async fn maintain(&self) -> Result<Maintenance, QueueError> {
        let now = now_ms();
        let m = match &self.inner.backend {
            Backend::Memory { state, notify } => {
                let m = lock(state).maintain(now);
                for _ in 0..(m.promoted + m.recovered) {
                    notify.notify_one();
                }
                m
            }
            Backend::Redis(r) => {
                let lease_until = now + millis(self.inner.cfg.lease);
                let v: Vec<i64> = self
                    .eval(
                        r,
                        MAINTAIN,
                        &[
                            &r.keys.ready,
                            &r.keys.processing,
                            &r.keys.leases,
                            &r.keys.delayed,
                        ],
                        &[&now.to_string(), &lease_until.to_string()],
                    )
                    .await?;
                let at = |i: usize| usize::try_from(v.get(i).copied().unwrap_or(0)).unwrap_or(0);
                Maintenance {
                    promoted: at(0),
                    recovered: at(1),
                    depth: at(2),
                }
            }
        };
        if m.recovered > 0 {
            tracing::warn!(
                recovered = m.recovered,
                "LLM jobs past their lease (a crashed or stuck worker) queued again"
            );
            metrics::counter!(LLM_JOB_RECOVERED_TOTAL).increment(m.recovered as u64);
        }
        metrics::gauge!(LLM_JOB_QUEUE_DEPTH).set(m.depth as f64);
        Ok(m)
    }

    /// The dead-lettered jobs, newest first (at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let raws: Vec<String> = match &self.inner.backend {
            Backend::Memory { state, .. } => lock(state).dead().take(limit).cloned().collect(),
            Backend::Redis(r) => {
                let mut conn = r.conn.clone();
                redis::cmd("LRANGE")
                    .arg(&r.keys.dead)
                    .arg(0)
                    .arg(i64::try_from(limit).unwrap_or(i64::MAX) - 1)
                    .query_async(&mut conn)
                    .await?
            }
        };
        raws.iter()
            .map(|r| serde_json::from_str(r).map_err(|e| QueueError::Malformed(e.to_string())))
            .collect()
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        r: &RedisBackend,
        script: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, QueueError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        let mut conn = r.conn.clone();
        match tokio::time::timeout(self.inner.cfg.redis_timeout, cmd.query_async(&mut conn)).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(QueueError::Backend(format!(
                "Redis did not answer within {:?}",
                self.inner.cfg.redis_timeout
            ))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock(state: &Mutex<MemoryState>) -> std::sync::MutexGuard<'_, MemoryState> {
    // Every MemoryState method finishes its edits before returning: a poisoned lock still
    // guards consistent data.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(raw: &str) -> String {
        raw.to_string()
    }

    #[test]
    fn the_bound_counts_ready_and_delayed_jobs() {
        let mut q = MemoryState::default();
        assert!(q.enqueue("a".into(), 2));
        assert!(q.enqueue("b".into(), 2));
        assert!(!q.enqueue("c".into(), 2));
        let (a, attempt) = q.take(id, 100).unwrap();
        assert_eq!((a.as_str(), attempt), ("a", 1));
        assert!(q.enqueue("c".into(), 2), "a taken job frees its place");
        assert!(q.retry("a", "a".into(), 50));
        assert!(!q.enqueue("d".into(), 2), "a delayed retry holds a place");
    }

    #[test]
    fn retries_wait_for_their_due_time_and_count_attempts() {
        let mut q = MemoryState::default();
        q.enqueue("a".into(), 10);
        let (raw, _) = q.take(id, 1000).unwrap();
        assert!(q.retry(&raw, "a".into(), 50));
        assert_eq!(q.maintain(49).promoted, 0);
        assert!(q.take(id, 1000).is_none());
        assert_eq!(q.maintain(50).promoted, 1);
        assert_eq!(q.take(id, 1000), Some(("a".into(), 2)));
        assert!(q.complete("a", "a"));
        assert!(!q.complete("a", "a"), "completing twice is refused");
        q.enqueue("a".into(), 10);
        assert_eq!(q.take(id, 1000).unwrap().1, 1, "attempts reset once done");
    }

    #[test]
    fn an_expired_lease_returns_the_job_to_the_head() {
        let mut q = MemoryState::default();
        q.enqueue("a".into(), 10);
        q.enqueue("b".into(), 10);
        let (a, _) = q.take(id, 100).unwrap();
        assert_eq!(q.maintain(99).recovered, 0);
        let m = q.maintain(100);
        assert_eq!((m.recovered, m.depth), (1, 2));
        // Recovered first, with its attempt counted.
        assert_eq!(q.take(id, 1000), Some((a.clone(), 2)));
        // Held again: whichever holder finishes first completes it (at least once).
        assert!(q.complete(&a, &a));
        assert!(!q.complete(&a, &a));
    }

    #[test]
    fn dead_letters_are_kept_newest_first() {
        let mut q = MemoryState::default();
        for j in ["a", "b"] {
            q.enqueue(j.into(), 10);
            let (raw, _) = q.take(id, 100).unwrap();
            assert!(q.dead_letter(&raw, &raw, format!("dead {raw}")));
        }
        assert_eq!(q.dead().collect::<Vec<_>>(), vec!["dead b", "dead a"]);
        assert_eq!((q.depth(), q.in_flight()), (0, 0));
    }

    #[tokio::test]
    async fn the_memory_queue_hands_jobs_to_a_waiting_taker() {
        let q = JobQueue::memory(QueueConfig {
            depth: 1,
            ..QueueConfig::default()
        });
        let taker = {
            let q = q.clone();
            tokio::spawn(async move { q.take(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        let id = q.enqueue("k", serde_json::json!({"x": 1})).await.unwrap();
        let t = taker.await.unwrap().unwrap().unwrap();
        assert_eq!((t.job.id.as_str(), t.attempt), (id.as_str(), 1));
        assert_eq!(t.job.payload["x"], 1);
        q.enqueue("k", Value::Null).await.unwrap();
        assert!(matches!(
            q.enqueue("k", Value::Null).await,
            Err(QueueError::Full { depth: 1 })
        ));
        assert!(q.complete(&t).await.unwrap());
    }
}
