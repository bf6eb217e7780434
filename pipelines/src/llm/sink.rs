//! Where job results go: a [`JobSink`] receives every finished job (done or dead-lettered),
//! with the job itself (its input says what the result is about: a theme label's topic...).
//! The worker acknowledges a job only after its sink accepted the result, so a sink failure is
//! a retry, never a lost result.
//!
//! [`RedisResultSink`] writes `<prefix>result:<job id>` (JSON, with a TTL) for API paths to
//! poll, and publishes the same JSON on the `<prefix>results` Pub/Sub channel for listeners;
//! [`MemoryResultSink`] keeps results in process (no Redis, tests, `infermesh up`) with a
//! broadcast for in-process pipelines; [`FanoutSink`] sends to several.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::bus::BoxFuture;
use crate::llm::cache::redis_manager;
use crate::llm::queue::QueuedJob;

/// A finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job's id (what `enqueue` returned).
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Attempts made.
    pub attempts: u32,
    /// Done or failed.
    #[serde(flatten)]
    pub outcome: JobOutcome,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobOutcome {
    /// Its output ([`crate::llm::jobs::JobOutput`] as JSON for LLM jobs).
    Done {
        /// The output.
        output: Value,
    },
    /// Dead-lettered after its last attempt: callers use their fallback.
    Failed {
        /// The last error.
        error: String,
    },
}

/// Why a sink refused a result.
#[derive(Debug, thiserror::Error)]
#[error("job result sink: {0}")]
pub struct SinkError(pub String);

/// Receives finished jobs.
pub trait JobSink: Send + Sync + std::fmt::Debug {
    /// Stores or forwards `result` of `job`; an error makes the worker retry the job (a
    /// dead-lettered job's result is delivered once, its error only logged).
    fn deliver<'a>(
        &'a self,
        job: &'a QueuedJob,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Results in Redis: a key per job with a TTL, and a Pub/Sub message each.
pub struct RedisResultSink {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for RedisResultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResultSink")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisResultSink {
    /// A sink into the Redis at `url`, keys under `prefix`, kept `ttl`.
    pub fn new(url: &str, prefix: &str, ttl: Duration) -> Result<Self, SinkError> {
        let timeout = Duration::from_secs(2);
        Ok(Self {
            conn: redis_manager(url, timeout).map_err(SinkError)?,
            prefix: prefix.to_string(),
            ttl,
            timeout,
        })
    }

    /// The key holding job `id`'s result.
    pub fn result_key(&self, id: &str) -> String {
        format!("{}result:{id}", self.prefix)
    }

    /// The Pub/Sub channel results are published on.
    pub fn channel(&self) -> String {
        format!("{}results", self.prefix)
    }

    /// Job `id`'s result, if it finished and has not expired.
    pub async fn get(&self, id: &str) -> Result<Option<JobResult>, SinkError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.result_key(id))
            .query_async(&mut conn)
            .await
            .map_err(|e| SinkError(e.to_string()))?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| SinkError(e.to_string())))
            .transpose()
    }
}

impl JobSink for RedisResultSink {
    fn deliver<'a>(
        &'a self,
        _job: &'a QueuedJob,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let json = serde_json::to_string(result).map_err(|e| SinkError(e.to_string()))?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.result_key(&result.id))
                .arg(&json)
                .arg("EX")
                .arg(self.ttl.as_secs().max(1))
                .ignore()
                .cmd("PUBLISH")
                .arg(self.channel())
                .arg(&json)
                .ignore();
            let mut conn = self.conn.clone();
            match tokio::time::timeout(self.timeout, pipe.exec_async(&mut conn)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError(e.to_string())),
                Err(_) => Err(SinkError(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                ))),
            }
        })
    }
}

/// Results in this process: a map by job id (at most `capacity`, oldest dropped) and a
/// broadcast of each.
#[derive(Debug)]
pub struct MemoryResultSink {
    results: Mutex<(
        HashMap<String, JobResult>,
        std::collections::VecDeque<String>,
    )>,
    capacity: usize,
    tx: broadcast::Sender<JobResult>,
}

impl MemoryResultSink {
    /// A sink keeping the latest `capacity` results.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            results: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
            capacity: capacity.max(1),
            tx,
        }
    }

    /// Job `id`'s result, if it finished.
    pub fn get(&self, id: &str) -> Option<JobResult> {
        self.lock().0.get(id).cloned()
    }

    /// Every result from now on (a lagging receiver loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<JobResult> {
        self.tx.subscribe()
    }

    /// Waits up to `timeout` for job `id`'s result.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<JobResult> {
        let mut rx = self.subscribe();
        if let Some(r) = self.get(id) {
            return Some(r);
        }
        tokio::time::timeout(timeout, async {
            loop {
                match rx.recv().await {
                    Ok(r) if r.id == id => return Some(r),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(r) = self.get(id) {
                            return Some(r);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    #[allow(clippy::type_complexity)]
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        (
            HashMap<String, JobResult>,
            std::collections::VecDeque<String>,
        ),
    > {
        // Inserts finish before the guard drops: a poisoned lock guards consistent data.
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobSink for MemoryResultSink {
    fn deliver<'a>(
        &'a self,
        _job: &'a QueuedJob,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            {
                let mut guard = self.lock();
                let (map, order) = &mut *guard;
                if map.insert(result.id.clone(), result.clone()).is_none() {
                    order.push_back(result.id.clone());
                }
                while order.len() > self.capacity {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
            }
            // No receiver is fine: the map has it.
            let _ = self.tx.send(result.clone());
            Ok(())
        })
    }
}

/// Delivers to every sink in order; the first failure fails the delivery.
#[derive(Debug, Default)]
pub struct FanoutSink(pub Vec<Arc<dyn JobSink>>);

impl JobSink for FanoutSink {
    fn deliver<'a>(
        &'a self,
        job: &'a QueuedJob,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for sink in &self.0 {
                sink.deliver(job, result).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job(id: &str) -> QueuedJob {
        QueuedJob {
            id: id.into(),
            kind: "theme_label".into(),
            payload: serde_json::json!({"kind": "theme_label", "topic_id": "1", "keywords": ["k"]}),
            enqueued_at_ms: 0,
            ready_at_ms: 0,
        }
    }

    fn done(id: &str) -> JobResult {
        JobResult {
            id: id.into(),
            kind: "theme_label".into(),
            attempts: 1,
            outcome: JobOutcome::Done {
                output: serde_json::json!({"label": "x"}),
            },
        }
    }

    #[test]
    fn results_serialise_flat_with_a_status() {
        assert_eq!(
            serde_json::to_value(done("a")).unwrap(),
            serde_json::json!({"id": "a", "kind": "theme_label", "attempts": 1,
                               "status": "done", "output": {"label": "x"}})
        );
    }

    #[tokio::test]
    async fn the_memory_sink_keeps_the_latest_and_wakes_waiters() {
        let sink = Arc::new(MemoryResultSink::new(2));
        let waiter = {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.wait("c", Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        for id in ["a", "b", "c"] {
            sink.deliver(&job(id), &done(id)).await.unwrap();
        }
        assert_eq!(waiter.await.unwrap().unwrap().id, "c");
        assert!(
            sink.get("a").is_none(),
            "the oldest is dropped past capacity"
        );
        assert!(sink.get("b").is_some());
    }
}
