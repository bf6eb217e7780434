//! The loop every streaming pipeline runs in: take a batch from a consumer group, drop what was
//! already processed, hand the rest to the pipeline's [`Handler`], dead-letter what can never
//! succeed, retry what failed for now, ack the rest, repeat until told to stop.
//!
//! - **At least once.** A delivery is acked only after the handler returned for it, and a
//!   handler returns only after its outputs are acknowledged by their sinks; offsets follow
//!   acks (see the bus). Nothing is acked on the way out: a stop finishes the batch in hand,
//!   then closes the subscription (a synchronous commit on Kafka).
//! - **Idempotence by message id.** A message's id is its `message-id` header, else its topic,
//!   partition and offset (stable across redeliveries). Ids of processed messages are kept in a
//!   bounded window ([`Dedupe`]: Redis `SET .. PX`, shared by the group's processes, or this
//!   process's memory); a redelivered message inside the window is acked without processing.
//!   A Redis that fails makes the check answer "not seen": work is repeated, never lost.
//! - **Dead letters.** [`Outcome::Poison`] messages go to `<topic>.dlq` with their headers and
//!   `x-infermesh-dlq-reason` (bounded), `-detail`, `-source` (topic/partition/offset) and
//!   `-pipeline`; a dead-letter publish that fails leaves the message unacked.
//! - **Pipelined batches, bounded.** A handler's [`Handler::start`] does a batch's ordered work
//!   (state updates) and returns the rest (scoring, outputs, their acknowledgements), and the
//!   next batch starts while that runs; at most [`RuntimeConfig::max_batches_in_flight`]
//!   batches are, past which nothing more is read (backpressure: a slow sink slows the
//!   consumer instead of filling memory). Batches finish in the order they started. A message
//!   whose id is in a batch still in flight is a duplicate of it (acked, not processed).
//! - **Traces.** Each message gets a span that continues the producer's trace (`traceparent`);
//!   handlers run their per-message work in it and stamp it on what they produce.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use infermesh_common::metrics_names::{
    PIPELINE_BATCH_SIZE, PIPELINE_CONSUMED_TOTAL, PIPELINE_CONSUMER_LAG, PIPELINE_DLQ_TOTAL,
    PIPELINE_END_TO_END_SECONDS, PIPELINE_IN_FLIGHT, PIPELINE_MESSAGES_TOTAL,
    PIPELINE_PROCESSING_SECONDS,
};
use infermesh_common::telemetry::propagation;

use crate::bus::{BoxFuture, BusError, Delivery, EventBus, Message, Subscription};

pub use crate::bus::RetryPolicy;

mod running;
pub use running::{Running, TaskError};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; its outputs are acknowledged.
    Done,
    /// Can never succeed (malformed, missing fields, unknown operation): dead-lettered.
    Poison {
        /// A bounded reason (a metric label and the `x-infermesh-dlq-reason` header).
        reason: &'static str,
        /// What exactly was wrong (the `x-infermesh-dlq-detail` header).
        detail: String,
    },
    /// Failed for now (a dependency down): handed back after a back-off.
    Retry(String),
}

/// One message of a batch, with its span.
#[derive(Debug)]
pub struct Incoming {
    /// The delivery.
    pub delivery: Delivery,
    /// `pipeline.message`, a child of the producer's trace when it sent `traceparent`.
    pub span: tracing::Span,
}

/// A batch whose ordered work is done: resolves to one outcome per message once every output
/// of the `Done` ones is acknowledged.
pub type Pending<'h> = BoxFuture<'h, Vec<Outcome>>;

/// A pipeline's processing.
pub trait Handler: Send + Sync {
    /// Processes `batch` in order and returns one outcome per message, once every output of
    /// the `Done` ones is acknowledged.
    fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Does the part of `batch`'s work that must follow the batches before it (state updates)
    /// and returns the rest (stateless work, outputs and their acknowledgements), which runs
    /// while the next batches start. The default runs all of [`Handler::handle`] first (one
    /// batch at a time).
    // The future yields the batch's pending part, itself a future, on purpose.
    #[allow(clippy::async_yields_async)]
    fn start<'h: 'b, 'b>(&'h self, batch: &'b [Incoming]) -> BoxFuture<'b, Pending<'h>> {
        Box::pin(async move {
            let outcomes = self.handle(batch).await;
            Box::pin(std::future::ready(outcomes)) as Pending<'h>
        })
    }

    /// Called when the group assigned partitions to this process, before their messages are
    /// handled (state derived from the partitions' history is re-read here).
    fn on_assigned(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The window of processed message ids.
pub enum Dedupe {
    /// This process's memory: the last `capacity` ids.
    Memory {
        /// Ids in the window and their order of arrival.
        window: Mutex<(HashSet<String>, VecDeque<String>)>,
        /// Most ids kept.
        capacity: usize,
    },
    /// Redis, shared by every process of the group: `SET <prefix><pipeline>:<id> 1 PX <ttl>`.
    Redis {
        /// The connection.
        conn: redis::aio::ConnectionManager,
        /// Key prefix, pipeline included.
        prefix: String,
        /// How long an id is remembered.
        ttl: Duration,
    },
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dedupe::Memory { capacity, .. } => write!(f, "Memory({capacity})"),
            Dedupe::Redis { prefix, ttl, .. } => write!(f, "Redis({prefix}*, {ttl:?})"),
        }
    }
}

impl Dedupe {
    /// A window of the last `capacity` ids in memory.
    pub fn memory(capacity: usize) -> Self {
        Dedupe::Memory {
            window: Mutex::new((HashSet::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Which of `ids` were processed (Redis down: none, so the work is repeated).
    pub async fn seen(&self, ids: &[String]) -> Vec<bool> {
        match self {
            Dedupe::Memory { window, .. } => {
                let w = window.lock().unwrap_or_else(|p| p.into_inner());
                ids.iter().map(|id| w.0.contains(id)).collect()
            }
            Dedupe::Redis { conn, prefix, .. } => {
                if ids.is_empty() {
                    return Vec::new();
                }
                let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
                let mut c = conn.clone();
                let found: Result<Vec<Option<String>>, _> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await;
                match found {
                    Ok(v) => v.into_iter().map(|x| x.is_some()).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "dedupe window unreadable; processing again");
                        vec![false; ids.len()]
                    }
                }
            }
        }
    }

    /// Remembers `ids` as processed.
    pub async fn mark(&self, ids: &[String]) {
        match self {
            Dedupe::Memory { window, capacity } => {
                let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    if w.0.insert(id.clone()) {
                        w.1.push_back(id.clone());
                    }
                }
                while w.1.len() > *capacity {
                    if let Some(old) = w.1.pop_front() {
                        w.0.remove(&old);
                    }
                }
            }
            Dedupe::Redis { conn, prefix, ttl } => {
                if ids.is_empty() {
                    return;
                }
                let mut pipe = redis::pipe();
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                for id in ids {
                    pipe.cmd("SET")
                        .arg(format!("{prefix}{id}"))
                        .arg(1)
                        .arg("PX")
                        .arg(ms)
                        .ignore();
                }
                let mut c = conn.clone();
                if let Err(e) = pipe.query_async::<()>(&mut c).await {
                    tracing::warn!(error = %e, "dedupe window not written");
                }
            }
        }
    }
}

/// How a pipeline runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The pipeline's name (metric label, span field, dead-letter header).
    pub pipeline: String,
    /// Most messages handled as one batch.
    pub max_batch: usize,
    /// Most batches started and not finished (their outputs in flight).
    pub max_batches_in_flight: usize,
    /// Back-off of retried messages.
    pub retry: RetryPolicy,
}

/// Default of [`RuntimeConfig::max_batches_in_flight`]: on the stream bench 2 sustained as
/// much as 4 (within the spread between runs) at 70-84 MB of peak RSS against 89-93 MB
/// (BENCHMARKS.md, "Streaming").
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;

impl RuntimeConfig {
    /// Defaults for `pipeline`: batches of up to 512, [`MAX_BATCHES_IN_FLIGHT`] in flight.
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            max_batch: 512,
            max_batches_in_flight: MAX_BATCHES_IN_FLIGHT,
            retry: RetryPolicy::default(),
        }
    }
}

/// The id a message is deduplicated by: its `message-id` header, else topic/partition/offset.
pub fn message_id(d: &Delivery) -> String {
    d.message
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("message-id"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("{}/{}/{}", d.topic, d.partition, d.offset))
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Header names of dead letters.
pub const DLQ_REASON: &str = "x-infermesh-dlq-reason";
/// The detail header.
pub const DLQ_DETAIL: &str = "x-infermesh-dlq-detail";
/// The source header (topic/partition/offset).
pub const DLQ_SOURCE: &str = "x-infermesh-dlq-source";
/// The pipeline header.
pub const DLQ_PIPELINE: &str = "x-infermesh-dlq-pipeline";

/// Counts of what a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Processed (outputs acknowledged).
    pub processed: u64,
    /// Skipped as already processed.
    pub duplicates: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Handed back for a retry.
    pub retried: u64,
}

/// A started batch: its fresh messages (with their ids) and when it started.
struct Started {
    fresh: Vec<Incoming>,
    ids: Vec<String>,
    started: Instant,
}

/// Runs `handler` over `sub` until `stop` resolves (then finishes the batches in flight and
/// closes the subscription) or the bus fails.
pub async fn run<H: Handler + ?Sized>(
    cfg: &RuntimeConfig,
    sub: &mut dyn Subscription,
    bus: &dyn EventBus,
    dedupe: &Dedupe,
    handler: &H,
    stop: impl std::future::Future<Output = ()>,
) -> Result<RunStats, BusError> {
    use futures::StreamExt as _;
    tokio::pin!(stop);
    let mut stats = RunStats::default();
    let pipeline = cfg.pipeline.clone();
    let depth = cfg.max_batches_in_flight.max(1);
    let in_flight = metrics::gauge!(PIPELINE_IN_FLIGHT, "pipeline" => pipeline.clone());
    let mut pending = futures::stream::FuturesOrdered::new();
    // Ids of the messages in the batches in flight, and how many those batches hold.
    let mut pending_ids: HashSet<String> = HashSet::new();
    let mut held = 0usize;
    let result = loop {
        let first = tokio::select! {
            biased;
            () = &mut stop => break Ok(()),
            Some((outcomes, b)) = pending.next(), if !pending.is_empty() => {
                let b: Started = b;
                release(&b, &mut held, &mut pending_ids);
                in_flight.set(held as f64);
                if let Err(e) = finish(cfg, sub, bus, dedupe, b, outcomes, &mut stats).await {
                    break Err(e);
                }
                continue;
            }
            d = sub.next(), if pending.len() < depth => d,
        };
        let first = match first {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        let mut batch = vec![first];
        while batch.len() < cfg.max_batch.max(1) {
            match sub.next().now_or_never() {
                Some(Ok(d)) => batch.push(d),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "bus read failed mid-batch");
                    break;
                }
                None => break,
            }
        }
        if sub.take_reassigned() {
            // State re-read on assignment must see the batches in flight finished.
            let mut failed = None;
            while let Some((outcomes, b)) = pending.next().await {
                let b: Started = b;
                release(&b, &mut held, &mut pending_ids);
                if failed.is_none()
                    && let Err(e) = finish(cfg, sub, bus, dedupe, b, outcomes, &mut stats).await
                {
                    failed = Some(e);
                }
            }
            in_flight.set(0.0);
            if let Some(e) = failed {
                break Err(e);
            }
            handler.on_assigned().await;
        }
        if let Some(lag) = sub.lag() {
            metrics::gauge!(PIPELINE_CONSUMER_LAG, "group" => pipeline.clone(),
                "topic" => crate::bus::topic_label(&batch[0].topic), "partition" => "0")
            .set(lag as f64);
        }
        let b = match screen(cfg, sub, dedupe, batch, &pending_ids, &mut stats).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        held += b.fresh.len();
        in_flight.set(held as f64);
        pending_ids.extend(b.ids.iter().cloned());
        // The batches in flight keep running (and finishing) while this one starts.
        let mut failed = None;
        let outputs = {
            let starting = handler.start(&b.fresh);
            tokio::pin!(starting);
            loop {
                tokio::select! {
                    biased;
                    o = &mut starting => break o,
                    Some((outcomes, done)) = pending.next(), if !pending.is_empty() => {
                        let done: Started = done;
                        release(&done, &mut held, &mut pending_ids);
                        in_flight.set(held as f64);
                        if failed.is_none()
                            && let Err(e) =
                                finish(cfg, sub, bus, dedupe, done, outcomes, &mut stats).await
                        {
                            failed = Some(e);
                        }
                    }
                }
            }
        };
        pending.push_back(async move { (outputs.await, b) });
        if let Some(e) = failed {
            break Err(e);
        }
    };
    // Drain: what is in flight finishes (its offsets stored) before the subscription closes.
    let mut drained = Ok(());
    while let Some((outcomes, b)) = pending.next().await {
        if drained.is_ok() {
            drained = finish(cfg, sub, bus, dedupe, b, outcomes, &mut stats).await;
        }
    }
    in_flight.set(0.0);
    let closed = sub.close().await;
    result?;
    drained?;
    closed?;
    Ok(stats)
}

/// Takes a finished batch's messages off the count and the ids in flight.
fn release(b: &Started, held: &mut usize, pending_ids: &mut HashSet<String>) {
    *held -= b.fresh.len();
    for id in &b.ids {
        pending_ids.remove(id);
    }
}

/// Counts `batch` in, acks what was processed before (by the dedupe window, or a batch in
/// flight, or earlier in this batch) and returns the rest with their spans; none when nothing
/// is left.
async fn screen(
    cfg: &RuntimeConfig,
    sub: &mut dyn Subscription,
    dedupe: &Dedupe,
    batch: Vec<Delivery>,
    pending_ids: &HashSet<String>,
    stats: &mut RunStats,
) -> Result<Option<Started>, BusError> {
    let started = Instant::now();
    let pipeline = cfg.pipeline.as_str();
    metrics::histogram!(PIPELINE_BATCH_SIZE, "pipeline" => pipeline.to_string())
        .record(batch.len() as f64);
    for d in &batch {
        metrics::counter!(PIPELINE_CONSUMED_TOTAL, "pipeline" => pipeline.to_string(),
            "topic" => crate::bus::topic_label(&d.topic))
        .increment(1);
    }
    let ids: Vec<String> = batch.iter().map(message_id).collect();
    let mut seen = dedupe.seen(&ids).await;
    // A message repeated within the batch, or in a batch in flight, is a duplicate of its
    // first occurrence, which is still held (its offset unacked) until it is done.
    let mut in_batch = HashSet::with_capacity(ids.len());
    for (id, s) in ids.iter().zip(seen.iter_mut()) {
        if !in_batch.insert(id.as_str()) || pending_ids.contains(id) {
            *s = true;
        }
    }
    let mut fresh = Vec::with_capacity(batch.len());
    let mut fresh_ids = Vec::with_capacity(batch.len());
    for ((d, id), seen) in batch.into_iter().zip(ids).zip(seen) {
        if seen {
            stats.duplicates += 1;
            count(pipeline, "duplicate");
            sub.ack(&d).await?;
            continue;
        }
        let span = tracing::info_span!("pipeline.message", pipeline, topic = %d.topic,
            partition = d.partition, offset = d.offset, attempt = d.attempt);
        propagation::continue_trace(&span, &d.message.headers);
        fresh.push(Incoming { delivery: d, span });
        fresh_ids.push(id);
    }
    if fresh.is_empty() {
        return Ok(None);
    }
    Ok(Some(Started {
        fresh,
        ids: fresh_ids,
        started,
    }))
}

/// Acks, dead-letters or hands back each message of a finished batch by its outcome.
async fn finish(
    cfg: &RuntimeConfig,
    sub: &mut dyn Subscription,
    bus: &dyn EventBus,
    dedupe: &Dedupe,
    b: Started,
    outcomes: Vec<Outcome>,
    stats: &mut RunStats,
) -> Result<(), BusError> {
    let pipeline = cfg.pipeline.as_str();
    let Started {
        fresh,
        ids: fresh_ids,
        started,
    } = b;
    let mut done_ids = Vec::with_capacity(fresh.len());
    let mut retry_after = Duration::ZERO;
    for ((item, id), outcome) in fresh.iter().zip(fresh_ids).zip(
        outcomes
            .into_iter()
            .chain(std::iter::repeat(Outcome::Retry("no outcome".into()))),
    ) {
        let d = &item.delivery;
        match outcome {
            Outcome::Done => {
                done_ids.push(id);
                stats.processed += 1;
                count(pipeline, "processed");
                if let Some(ts) = d.timestamp_ms {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    metrics::histogram!(PIPELINE_END_TO_END_SECONDS, "pipeline" => pipeline.to_string())
                        .record((now - ts).max(0) as f64 / 1000.0);
                }
                sub.ack(d).await?;
            }
            Outcome::Poison { reason, detail } => {
                let _g = item.span.enter();
                tracing::warn!(reason, %detail, "dead-lettering");
                match bus
                    .publish(&dlq_topic(&d.topic), dead_letter(cfg, d, reason, &detail))
                    .await
                {
                    Ok(()) => {
                        stats.dead_lettered += 1;
                        count(pipeline, "dead_lettered");
                        metrics::counter!(PIPELINE_DLQ_TOTAL, "pipeline" => pipeline.to_string(),
                            "reason" => reason)
                        .increment(1);
                        done_ids.push(id);
                        sub.ack(d).await?;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dead-letter publish failed; retrying");
                        stats.retried += 1;
                        count(pipeline, "retried");
                        retry_after = retry_after.max(cfg.retry.delay(d.attempt));
                        sub.nack(d).await?;
                    }
                }
            }
            Outcome::Retry(why) => {
                let _g = item.span.enter();
                tracing::warn!(%why, attempt = d.attempt, "retrying");
                stats.retried += 1;
                count(pipeline, "retried");
                retry_after = retry_after.max(cfg.retry.delay(d.attempt));
                sub.nack(d).await?;
            }
        }
    }
    dedupe.mark(&done_ids).await;
    metrics::histogram!(PIPELINE_PROCESSING_SECONDS, "pipeline" => pipeline.to_string())
        .record(started.elapsed().as_secs_f64());
    if !retry_after.is_zero() {
        tokio::time::sleep(retry_after).await;
    }
    Ok(())
}

fn count(pipeline: &str, outcome: &'static str) {
    metrics::counter!(PIPELINE_MESSAGES_TOTAL, "pipeline" => pipeline.to_string(),
        "outcome" => outcome)
    .increment(1);
}

fn dead_letter(cfg: &RuntimeConfig, d: &Delivery, reason: &str, detail: &str) -> Message {
    let mut headers = d.message.headers.clone();
    headers.retain(|(k, _)| !k.starts_with("x-infermesh-dlq-"));
    // Header values are bounded: a detail quoting a huge payload is cut.
    let detail: String = detail.chars().take(1024).collect();
    headers.extend([
        (DLQ_REASON.to_string(), reason.to_string()),
        (DLQ_DETAIL.to_string(), detail),
        (
            DLQ_SOURCE.to_string(),
            format!("{}/{}/{}", d.topic, d.partition, d.offset),
        ),
        (DLQ_PIPELINE.to_string(), cfg.pipeline.clone()),
    ]);
    Message {
        key: d.message.key.clone(),
        headers,
        payload: d.message.payload.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::bus::InProcessBus;

    /// Fails "retry" once, dead-letters "poison", processes the rest.
    #[derive(Default)]
    struct Probe {
        handled: Mutex<Vec<String>>,
        retry_failures: AtomicUsize,
    }

    impl Handler for Probe {
        fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>> {
            Box::pin(async move {
                batch
                    .iter()
                    .map(|i| {
                        let body = String::from_utf8_lossy(&i.delivery.message.payload).to_string();
                        match body.as_str() {
                            "poison" => Outcome::Poison {
                                reason: "malformed_json",
                                detail: "not JSON".into(),
                            },
                            "retry" if self.retry_failures.fetch_add(1, Ordering::SeqCst) == 0 => {
                                Outcome::Retry("down".into())
                            }
                            _ => {
                                self.handled.lock().unwrap().push(body);
                                Outcome::Done
                            }
                        }
                    })
                    .collect()
            })
        }
    }

    fn msg(body: &str, id: Option<&str>) -> Message {
        let mut m = Message::new("k", body.as_bytes().to_vec());
        if let Some(id) = id {
            m.headers.push(("message-id".into(), id.into()));
        }
        m.headers.push((
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ));
        m
    }

    #[tokio::test]
    async fn processes_dead_letters_retries_and_skips_duplicates() {
        let bus = Arc::new(InProcessBus::new(64, Duration::from_secs(30)));
        let mut sub = bus.subscribe("in", "g").await.unwrap();
        let mut dlq = bus.subscribe("in.dlq", "check").await.unwrap();
        for (body, id) in [
            ("a", Some("m1")),
            ("poison", None),
            ("retry", None),
            ("a-again", Some("m1")),
            ("b", None),
        ] {
            bus.publish("in", msg(body, id)).await.unwrap();
        }
        let cfg = RuntimeConfig {
            retry: RetryPolicy {
                base: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            ..RuntimeConfig::new("test")
        };
        let probe = Probe::default();
        let dedupe = Dedupe::memory(100);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handled = async {
            loop {
                if probe.handled.lock().unwrap().len() >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = tx.send(());
        };
        let stop = async {
            let _ = rx.await;
        };
        let (stats, ()) = tokio::join!(
            run(&cfg, sub.as_mut(), bus.as_ref(), &dedupe, &probe, stop),
            handled
        );
        let stats = stats.unwrap();
        let mut got = probe.handled.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, ["a", "b", "retry"]);
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.dead_lettered, 1);
        assert_eq!(stats.retried, 1);
        let dead = dlq.next().await.unwrap();
        assert_eq!(dead.message.payload, b"poison");
        let header = |k: &str| {
            dead.message
                .headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(DLQ_REASON).as_deref(), Some("malformed_json"));
        assert_eq!(header(DLQ_PIPELINE).as_deref(), Some("test"));
        assert_eq!(header(DLQ_SOURCE).as_deref(), Some("in/0/2"));
        // The producer's trace context travels with the dead letter.
        assert!(header("traceparent").is_some());
    }

    /// Starts every batch at once and holds its outcome until its first message's body is
    /// released.
    /// A batch whose body is `after:X` starts only once the batch of `X` finished.
    #[derive(Default)]
    struct Gate {
        started: Mutex<Vec<String>>,
        released: Mutex<HashSet<String>>,
        finished: Mutex<Vec<String>>,
    }

    impl Gate {
        fn release(&self, body: &str) {
            self.released.lock().unwrap().insert(body.to_string());
        }
    }

    impl Handler for Gate {
        fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>> {
            Box::pin(async move { self.start(batch).await.await })
        }

        #[allow(clippy::async_yields_async)]
        fn start<'h: 'b, 'b>(&'h self, batch: &'b [Incoming]) -> BoxFuture<'b, Pending<'h>> {
            let bodies: Vec<String> = batch
                .iter()
                .map(|i| String::from_utf8_lossy(&i.delivery.message.payload).to_string())
                .collect();
            Box::pin(async move {
                let first = bodies[0].clone();
                if let Some(before) = first.strip_prefix("after:") {
                    while !self.finished.lock().unwrap().iter().any(|f| f == before) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                self.started.lock().unwrap().extend(bodies);
                let n = batch.len();
                Box::pin(async move {
                    while !self.released.lock().unwrap().contains(&first) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    self.finished.lock().unwrap().push(first);
                    vec![Outcome::Done; n]
                }) as Pending<'h>
            })
        }
    }

    async fn until(what: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !what() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
    }

    /// One message per batch, two batches in flight, a gated handler, a memory dedupe window,
    /// and a stop that resolves when its sender fires.
    fn gated_setup() -> (
        RuntimeConfig,
        Gate,
        Dedupe,
        tokio::sync::oneshot::Sender<()>,
        impl std::future::Future<Output = ()>,
    ) {
        let cfg = RuntimeConfig {
            max_batch: 1,
            max_batches_in_flight: 2,
            ..RuntimeConfig::new("test")
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async {
            let _ = rx.await;
        };
        (cfg, Gate::default(), Dedupe::memory(100), tx, stop)
    }

    #[tokio::test]
    async fn batches_start_while_earlier_outputs_are_in_flight_up_to_the_bound() {
        // Room for four unacked messages: publishing four more afterwards shows all were acked.
        let bus = Arc::new(InProcessBus::new(4, Duration::from_secs(30)));
        let mut sub = bus.subscribe("in", "g").await.unwrap();
        for (body, id) in [("a", "m1"), ("b", "m2"), ("b-again", "m2"), ("c", "m3")] {
            bus.publish("in", msg(body, Some(id))).await.unwrap();
        }
        let (cfg, gate, dedupe, tx, stop) = gated_setup();
        let drive = async {
            let started = || gate.started.lock().unwrap().clone();
            // Two batches start although neither finished; the bound keeps the rest unread.
            until(|| started().len() == 2).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(started(), ["a", "b"]);
            // "b-again" repeats a message of a batch in flight: a duplicate, never started.
            gate.release("a");
            until(|| started().len() == 3).await;
            assert_eq!(started(), ["a", "b", "c"]);
            // A stop drains what is in flight before the loop returns.
            let _ = tx.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            gate.release("b");
            gate.release("c");
        };
        let (stats, ()) = tokio::join!(
            run(&cfg, sub.as_mut(), bus.as_ref(), &dedupe, &gate, stop),
            drive
        );
        let stats = stats.unwrap();
        assert_eq!(stats.processed, 3);
        assert_eq!(stats.duplicates, 1);
        // Every message was acked: the topic has room for four again.
        for _ in 0..4 {
            bus.publish("in", msg("more", None)).await.unwrap();
        }
        assert_eq!(
            dedupe.seen(&["m1".into(), "m2".into(), "m3".into()]).await,
            [true, true, true]
        );
    }

    #[tokio::test]
    async fn batches_in_flight_finish_while_a_later_batch_starts() {
        let bus = Arc::new(InProcessBus::new(64, Duration::from_secs(30)));
        let mut sub = bus.subscribe("in", "g").await.unwrap();
        // The second batch's start waits for the first batch to finish, which happens only if
        // the batches in flight are driven while a batch starts.
        for body in ["a", "after:a"] {
            bus.publish("in", msg(body, None)).await.unwrap();
        }
        let (cfg, gate, dedupe, tx, stop) = gated_setup();
        let drive = async {
            until(|| gate.started.lock().unwrap().len() == 1).await;
            // "a" is in flight; "after:a" is being started when "a" is released.
            tokio::time::sleep(Duration::from_millis(20)).await;
            gate.release("a");
            gate.release("after:a");
            until(|| gate.finished.lock().unwrap().len() == 2).await;
            let _ = tx.send(());
        };
        let (stats, ()) = tokio::join!(
            run(&cfg, sub.as_mut(), bus.as_ref(), &dedupe, &gate, stop),
            drive
        );
        assert_eq!(stats.unwrap().processed, 2);
    }

    #[test]
    fn the_memory_window_is_bounded() {
        let d = Dedupe::memory(2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            d.mark(&["a".into(), "b".into(), "c".into()]).await;
            assert_eq!(
                d.seen(&["a".into(), "b".into(), "c".into()]).await,
                [false, true, true]
            );
        });
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
        assert_eq!(p.delay(40), Duration::from_millis(350));
    }
}
