//! The Redis job queue and the worker loop against a real Redis (`INFERMESH_TEST_REDIS_URL`,
//! default 127.0.0.1:6379): the depth bound, backoff, dead letters, crash recovery, per-job
//! timeouts, results in Redis and on Pub/Sub.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{RedisPrefix, conn, redis_url};
use infermesh_pipelines::bus::BoxFuture;
use infermesh_pipelines::llm::queue::{JobQueue, QueueConfig, QueueError, QueuedJob};
use infermesh_pipelines::llm::sink::{
    FanoutSink, JobOutcome, JobSink, MemoryResultSink, RedisResultSink,
};
use infermesh_pipelines::llm::worker::{HandlerError, JobHandler, WorkerSettings, run_worker};
use serde_json::{Value, json};

fn queue(prefix: &RedisPrefix, depth: usize, lease: Duration) -> JobQueue {
    JobQueue::redis(
        &redis_url(),
        QueueConfig {
            depth,
            prefix: prefix.0.clone(),
            lease,
            ..QueueConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn the_depth_bound_refuses_at_once() {
    let p = RedisPrefix::new();
    let q = queue(&p, 3, Duration::from_secs(30));
    for i in 0..3 {
        q.enqueue("k", json!({"i": i})).await.unwrap();
    }
    let started = Instant::now();
    let err = q.enqueue("k", json!({"i": 3})).await.unwrap_err();
    assert!(matches!(err, QueueError::Full { depth: 3 }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused, not waited"
    );
    let ready: usize = redis::cmd("LLEN")
        .arg(format!("{}queue:ready", p.0))
        .query(&mut conn())
        .unwrap();
    assert_eq!(ready, 3);
    // A taken job frees its place; the oldest is taken first.
    let t = q.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!((t.job.payload["i"].as_i64(), t.attempt), (Some(0), 1));
    q.enqueue("k", json!({"i": 3})).await.unwrap();
}

#[tokio::test]
async fn a_retry_waits_for_its_backoff_then_dead_letters() {
    let p = RedisPrefix::new();
    let q = queue(&p, 10, Duration::from_secs(30));
    let id = q.enqueue("k", json!({})).await.unwrap();
    let t = q.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert!(q.retry(&t, Duration::from_millis(400)).await.unwrap());
    let m = q.maintain().await.unwrap();
    assert_eq!(
        (m.promoted, m.depth),
        (0, 1),
        "delayed, still counted in the depth"
    );
    assert!(q.take(Duration::from_millis(50)).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(q.maintain().await.unwrap().promoted, 1);
    let t2 = q.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!((t2.job.id.as_str(), t2.attempt), (id.as_str(), 2));
    assert!(t2.job.ready_at_ms >= t.job.ready_at_ms + 400);
    assert!(q.dead_letter(&t2, "boom").await.unwrap());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].job.id.as_str(),
            dead[0].attempts,
            dead[0].error.as_str()
        ),
        (id.as_str(), 2, "boom")
    );
    // Nothing left behind but the dead letter.
    let mut keys = p.keys();
    keys.sort();
    assert_eq!(keys, vec![format!("{}queue:dead", p.0)]);
}

#[tokio::test]
async fn a_crashed_workers_job_is_recovered_after_its_lease() {
    let p = RedisPrefix::new();
    let q = queue(&p, 10, Duration::from_millis(300));
    let id = q.enqueue("k", json!({})).await.unwrap();
    // A worker takes the job and dies (the handle is dropped, nothing acknowledged).
    drop(q.take(Duration::from_secs(1)).await.unwrap().unwrap());
    assert_eq!(
        q.maintain().await.unwrap().recovered,
        0,
        "the lease still runs"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let m = q.maintain().await.unwrap();
    assert_eq!((m.recovered, m.depth), (1, 1));
    let again = q.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!((again.job.id.as_str(), again.attempt), (id.as_str(), 2));
    assert!(q.complete(&again).await.unwrap());
    assert!(p.keys().is_empty(), "{:?}", p.keys());
}

#[tokio::test]
async fn a_job_moved_but_never_claimed_is_leased_then_recovered() {
    let p = RedisPrefix::new();
    let q = queue(&p, 10, Duration::from_millis(300));
    // As if a worker died between BLMOVE and its claim.
    let job = QueuedJob {
        id: "orphan".into(),
        kind: "k".into(),
        payload: json!({}),
        enqueued_at_ms: 1,
        ready_at_ms: 1,
    };
    let _: () = redis::cmd("LPUSH")
        .arg(format!("{}queue:processing", p.0))
        .arg(serde_json::to_string(&job).unwrap())
        .query(&mut conn())
        .unwrap();
    assert_eq!(
        q.maintain().await.unwrap().recovered,
        0,
        "first given a lease"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(q.maintain().await.unwrap().recovered, 1);
    let t = q.take(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(t.job.id, "orphan");
    assert!(q.complete(&t).await.unwrap());
}

/// Fails `failures` times (retryable), then answers; or sleeps `sleep` first.
#[derive(Debug)]
struct Flaky {
    failures: u32,
    sleep: Duration,
    calls: AtomicU32,
}

impl JobHandler for Flaky {
    fn handle<'a>(&'a self, job: &'a QueuedJob) -> BoxFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.sleep).await;
            if n <= self.failures {
                return Err(HandlerError {
                    retryable: true,
                    label: "unreachable",
                    message: format!("call {n} failed"),
                });
            }
            Ok(json!({"echo": job.payload.clone(), "calls": n}))
        })
    }
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_worker(
    q: &JobQueue,
    handler: Arc<dyn JobHandler>,
    sink: Arc<dyn JobSink>,
    s: WorkerSettings,
) -> Running {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_worker(q.clone(), handler, sink, s, rx));
    Running { stop, task }
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 2,
        job_timeout: Duration::from_secs(5),
        max_attempts: 3,
        backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        maintain_every: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn the_worker_retries_with_backoff_and_writes_results_to_redis() {
    let p = RedisPrefix::new();
    let q = queue(&p, 10, Duration::from_secs(30));
    let memory = Arc::new(MemoryResultSink::new(100));
    let redis_sink =
        Arc::new(RedisResultSink::new(&redis_url(), &p.0, Duration::from_secs(60)).unwrap());
    let mut pubsub = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(redis_sink.channel()).await.unwrap();
    // Redis first, as `start` orders them: the in-process waiter wakes after the write.
    let sink = Arc::new(FanoutSink(vec![redis_sink.clone(), memory.clone()]));
    let handler = Arc::new(Flaky {
        failures: 2,
        sleep: Duration::ZERO,
        calls: AtomicU32::new(0),
    });
    let w = spawn_worker(&q, handler.clone(), sink, settings());
    let started = Instant::now();
    let id = q.enqueue("k", json!({"x": 1})).await.unwrap();
    let r = memory
        .wait(&id, Duration::from_secs(10))
        .await
        .expect("a result");
    // Two failures: waits of 200 ms then 400 ms before the third attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.attempts, 3);
    assert_eq!(
        r.outcome,
        JobOutcome::Done {
            output: json!({"echo": {"x": 1}, "calls": 3})
        }
    );
    assert_eq!(redis_sink.get(&id).await.unwrap(), Some(r.clone()));
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis_sink.result_key(&id))
        .query(&mut conn())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60, "{ttl}");
    use futures::StreamExt as _;
    let mut messages = std::pin::pin!(pubsub.on_message());
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    let published: infermesh_pipelines::llm::JobResult =
        serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(published, r);
    let _ = w.stop.send(true);
    w.task.await.unwrap();
    // Done: the queue holds nothing of it.
    let mut keys = p.keys();
    keys.sort();
    assert_eq!(keys, vec![redis_sink.result_key(&id)]);
}

#[tokio::test]
async fn a_job_past_its_timeout_is_retried_then_dead_lettered() {
    let p = RedisPrefix::new();
    let q = queue(&p, 10, Duration::from_secs(30));
    let memory = Arc::new(MemoryResultSink::new(100));
    let handler = Arc::new(Flaky {
        failures: 0,
        sleep: Duration::from_secs(30),
        calls: AtomicU32::new(0),
    });
    let s = WorkerSettings {
        job_timeout: Duration::from_millis(200),
        max_attempts: 2,
        backoff: Duration::from_millis(50),
        ..settings()
    };
    let w = spawn_worker(&q, handler.clone(), memory.clone(), s);
    let id = q.enqueue("slow", json!({})).await.unwrap();
    let r = memory
        .wait(&id, Duration::from_secs(10))
        .await
        .expect("a result");
    match &r.outcome {
        JobOutcome::Failed { error } => assert!(error.contains("did not finish"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!((r.attempts, handler.calls.load(Ordering::SeqCst)), (2, 2));
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, id);
    let _ = w.stop.send(true);
    w.task.await.unwrap();
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let p = RedisPrefix::new();
    let q = queue(&p, 100, Duration::from_secs(30));
    let memory = Arc::new(MemoryResultSink::new(100));
    #[derive(Debug, Default)]
    struct Gauge {
        now: AtomicU32,
        max: AtomicU32,
    }
    impl JobHandler for Gauge {
        fn handle<'a>(&'a self, _job: &'a QueuedJob) -> BoxFuture<'a, Result<Value, HandlerError>> {
            Box::pin(async move {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.now.fetch_sub(1, Ordering::SeqCst);
                Ok(Value::Null)
            })
        }
    }
    let gauge = Arc::new(Gauge::default());
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(q.enqueue("k", json!({})).await.unwrap());
    }
    let w = spawn_worker(&q, gauge.clone(), memory.clone(), settings());
    for id in &ids {
        assert!(memory.wait(id, Duration::from_secs(10)).await.is_some());
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2, "concurrency 2");
    let _ = w.stop.send(true);
    w.task.await.unwrap();
}
