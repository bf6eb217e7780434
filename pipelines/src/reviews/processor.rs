//! The reviews processor: each `reviews.submitted` delivery through sanitise -> sentiment +
//! topic -> upsert into `reviews` -> live feed -> theme-label job, then ack; in the streaming
//! runtime ([`ReviewsHandler`]), a batch's reviews `concurrency` at a time.
//!
//! Delivery semantics (at least once, idempotent by `review_id`):
//! - a message that is not a valid review can never succeed: it is counted
//!   (`infermesh_reviews_failed_total{reason="invalid"}`) and dead-lettered to
//!   `reviews.submitted.dlq` (`invalid_value`), never retried;
//! - a model or database that is down, slow or overloaded: the message is not acked; after a
//!   back-off (doubling per attempt, capped) it is nacked and comes back. There is no attempt
//!   limit: a review is never dropped because a dependency was down;
//! - a model that refuses the text (gRPC INVALID_ARGUMENT, NOT_FOUND...) does not stop the
//!   review: it is stored without that part (NULL columns) and the refusal is counted;
//! - the row is written with an upsert, so a redelivery rewrites it (one row per review); the
//!   `processed` and `topic` counters count a review only when its row is new;
//! - the live feed and the theme-label job are best effort and never hold a review back: a
//!   failed publish or a full LLM queue is counted, and the topic's label job is tried again the
//!   next time the topic is seen;
//! - once a topic has the LLM's label (`topic_labels`, written back by
//!   [`TopicLabelSink`](crate::reviews::labels::TopicLabelSink)), its reviews are stored and
//!   published with that label, and no label job is queued for it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infermesh_common::metrics_names::{
    REVIEWS_DUPLICATES_TOTAL, REVIEWS_FAILED_TOTAL, REVIEWS_PROCESSED_TOTAL,
    REVIEWS_PROCESSING_SECONDS, REVIEWS_THEME_JOBS_TOTAL, REVIEWS_TOPIC_TOTAL,
};
use serde_json::json;
use tracing::Instrument;

use crate::bus::{Delivery, Subscription};
use crate::llm::cache::redis_manager;
use crate::llm::jobs::JobInput;
use crate::llm::queue::{JobQueue, QueueError};
use crate::llm::sanitise::Sanitiser;
use crate::reviews::event::{ReviewError, ReviewSubmitted};
use crate::reviews::live::LiveFeed;
use crate::reviews::scoring::{
    ScoreError, SentimentScore, SentimentScorer, TopicAssigner, TopicScore,
};
use crate::reviews::store::{ReviewRow, ReviewStore};

/// Topic ids below this are metric labels of their own; higher ids count as `other`. Topic
/// ids of a fitted model are 0.. by size at fit time (BERTopic's order), so these are the
/// largest topics; `-1` (outliers) is `outlier`.
pub const TOP_TOPIC_LABELS: i64 = 20;

/// Most topic ids remembered in memory as "label job queued"; past it the set starts over (a
/// topic may then be labelled twice, which the LLM cache answers).
const MAX_SEEN_TOPICS: usize = 10_000;

/// How long a topic counts as "label job queued". A job that never comes back (dead-lettered,
/// its queue lost) is queued again by the first review of the topic after this; once the label
/// is written back the topic is not offered at all (the store says it is labelled).
pub const THEME_CLAIM_TTL: Duration = Duration::from_secs(3600);

/// The bounded `sentiment` label of a result: positive, negative, neutral, other (a label the
/// model's data named otherwise), or unscored (the model refused the text).
pub fn sentiment_metric_label(s: Option<&SentimentScore>) -> &'static str {
    match s.map(|s| s.label.to_ascii_lowercase()) {
        None => "unscored",
        Some(l) => match l.as_str() {
            "positive" => "positive",
            "negative" => "negative",
            "neutral" => "neutral",
            _ => "other",
        },
    }
}

/// The bounded `topic` label of a topic id: the id below [`TOP_TOPIC_LABELS`], `outlier` for
/// negative ids, `other` above, `unscored` without a topic.
pub fn topic_metric_label(t: Option<&TopicScore>) -> String {
    match t.map(|t| t.id) {
        None => "unscored".into(),
        Some(id) if id < 0 => "outlier".into(),
        Some(id) if id < TOP_TOPIC_LABELS => id.to_string(),
        Some(_) => "other".into(),
    }
}

pub use crate::bus::RetryPolicy;

/// Which topics had their label job queued: in this process, or in Redis, shared by every
/// pipeline process (one `SET <prefix><topic> 1 NX EX <ttl>` key per topic).
enum Claims {
    Memory(Mutex<HashMap<i64, tokio::time::Instant>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claims::Memory(_) => f.write_str("Memory"),
            Claims::Redis { prefix, .. } => write!(f, "Redis({prefix}*)"),
        }
    }
}

/// Queues an LLM theme-label job the first time a topic is seen (by this process, or by any
/// process sharing the Redis the claims are in). A topic is claimed before its job is queued
/// and released when the enqueue fails, so two consumers never queue the same topic and a
/// failed one is tried again by the topic's next review.
#[derive(Debug)]
pub struct ThemeJobs {
    queue: Option<JobQueue>,
    claims: Claims,
    ttl: Duration,
    timeout: Duration,
}

impl ThemeJobs {
    /// Jobs go to `queue` (none: no theme labels), each enqueue bounded by `timeout`; topics
    /// are remembered in this process.
    pub fn new(queue: Option<JobQueue>, timeout: Duration) -> Self {
        Self {
            queue,
            claims: Claims::Memory(Mutex::new(HashMap::new())),
            ttl: THEME_CLAIM_TTL,
            timeout,
        }
    }

    /// As [`ThemeJobs::new`], topics remembered in the Redis at `url` as keys
    /// `<key_prefix><topic id>` (each Redis call bounded by `timeout` too).
    pub fn shared(
        queue: Option<JobQueue>,
        url: &str,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            queue,
            claims: Claims::Redis {
                conn: redis_manager(url, timeout)?,
                prefix: key_prefix.to_string(),
            },
            ttl: THEME_CLAIM_TTL,
            timeout,
        })
    }

    /// How long a claim lasts (default [`THEME_CLAIM_TTL`]; at least a second in Redis).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The Redis key of `topic`'s claim, when the claims are in Redis.
    pub fn claim_key(&self, topic: i64) -> Option<String> {
        match &self.claims {
            Claims::Memory(_) => None,
            Claims::Redis { prefix, .. } => Some(format!("{prefix}{topic}")),
        }
    }

    /// Claims `topic`: `Ok(true)` when no live claim existed (the caller queues its job).
    async fn claim(&self, topic: i64) -> Result<bool, String> {
        match &self.claims {
            Claims::Memory(m) => {
                let now = tokio::time::Instant::now();
                let mut seen = m.lock().unwrap_or_else(|p| p.into_inner());
                if seen.get(&topic).is_some_and(|&until| until > now) {
                    return Ok(false);
                }
                if seen.len() >= MAX_SEEN_TOPICS {
                    seen.retain(|_, until| *until > now);
                    if seen.len() >= MAX_SEEN_TOPICS {
                        seen.clear();
                    }
                }
                seen.insert(topic, now + self.ttl);
                Ok(true)
            }
            Claims::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("SET")
                    .arg(format!("{prefix}{topic}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(self.ttl.as_secs().max(1))
                    .to_owned();
                let set = async move { cmd.query_async::<Option<String>>(&mut conn).await };
                match tokio::time::timeout(self.timeout, set).await {
                    Ok(Ok(reply)) => Ok(reply.is_some()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("Redis did not answer within {:?}", self.timeout)),
                }
            }
        }
    }

    /// Drops `topic`'s claim (its job was not queued).
    async fn release(&self, topic: i64) {
        match &self.claims {
            Claims::Memory(m) => {
                m.lock().unwrap_or_else(|p| p.into_inner()).remove(&topic);
            }
            Claims::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("DEL").arg(format!("{prefix}{topic}")).to_owned();
                let del = async move { cmd.exec_async(&mut conn).await };
                match tokio::time::timeout(self.timeout, del).await {
                    Ok(Ok(())) => {}
                    // The claim expires by itself; the topic waits for it.
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, topic, "cannot release a theme-label claim");
                    }
                    Err(_) => tracing::warn!(topic, "releasing a theme-label claim timed out"),
                }
            }
        }
    }

    /// Queues a label job for `topic` unless one was queued already; returns the outcome
    /// (`enqueued`, `seen`, `skipped`, `queue_full`, `error`), also counted.
    pub async fn offer(&self, topic: &TopicScore) -> &'static str {
        let outcome = self.try_offer(topic).await;
        if outcome != "seen" && outcome != "skipped" {
            metrics::counter!(REVIEWS_THEME_JOBS_TOTAL, "outcome" => outcome).increment(1);
        }
        outcome
    }

    async fn try_offer(&self, topic: &TopicScore) -> &'static str {
        let Some(queue) = &self.queue else {
            return "skipped";
        };
        if topic.id < 0 || topic.keywords.is_empty() {
            return "skipped";
        }
        let input = JobInput::ThemeLabel {
            topic_id: topic.id.to_string(),
            keywords: topic.keywords.clone(),
        };
        let Ok(payload) = serde_json::to_value(&input) else {
            return "error";
        };
        match self.claim(topic.id).await {
            Ok(true) => {}
            Ok(false) => return "seen",
            Err(e) => {
                tracing::warn!(error = %e, topic = topic.id, "cannot claim a topic's theme-label job");
                return "error";
            }
        }
        let kind = input.kind().as_str();
        let outcome = match tokio::time::timeout(self.timeout, queue.enqueue(kind, payload)).await {
            Ok(Ok(_)) => return "enqueued",
            Ok(Err(QueueError::Full { .. })) => "queue_full",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, topic = topic.id, "cannot queue a theme-label job");
                "error"
            }
            Err(_) => {
                tracing::warn!(topic = topic.id, "queueing a theme-label job timed out");
                "error"
            }
        };
        self.release(topic.id).await;
        outcome
    }
}

/// What the processor is built from.
#[derive(Debug)]
pub struct ProcessorParts {
    /// The sanitiser every text passes before a model sees it.
    pub sanitiser: Sanitiser,
    /// Sentiment.
    pub sentiment: Arc<dyn SentimentScorer>,
    /// Topics.
    pub topics: Arc<dyn TopicAssigner>,
    /// Where rows go.
    pub store: Arc<dyn ReviewStore>,
    /// The live feed, if any.
    pub live: Option<Arc<dyn LiveFeed>>,
    /// Theme-label jobs.
    pub themes: ThemeJobs,
    /// Back-off of failed attempts.
    pub retry: RetryPolicy,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Written (`new`: its row did not exist before); acked.
    Stored {
        /// The row was new.
        new: bool,
    },
    /// Not a valid review; acked without output.
    Invalid(String),
    /// A dependency failed (`reason` as in the failed counter); handed back for redelivery.
    Retry {
        /// Metric label.
        reason: &'static str,
        /// For the log.
        message: String,
    },
}

/// The processor (shared by every consumer task).
#[derive(Debug)]
pub struct Processor {
    parts: ProcessorParts,
}

/// The `reason` labels of `infermesh_reviews_failed_total`.
const FAILURE_REASONS: [&str; 8] = [
    "invalid",
    "sentiment",
    "topics",
    "database",
    "sentiment_refused",
    "topics_refused",
    "live_feed",
    "bus",
];

fn failed(reason: &'static str) {
    metrics::counter!(REVIEWS_FAILED_TOTAL, "reason" => reason).increment(1);
}

/// `Ok(Some)` the result, `Ok(None)` a refusal (counted), `Err` a retry.
fn first<T>(r: Result<Vec<T>, ScoreError>) -> Result<Option<T>, ScoreError> {
    match r {
        Ok(v) => Ok(v.into_iter().next()),
        Err(e) if e.retryable => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the model refused the review: stored without it");
            failed(if e.service == "sentiment" {
                "sentiment_refused"
            } else {
                "topics_refused"
            });
            Ok(None)
        }
    }
}

impl Processor {
    /// A processor of `parts`.
    pub fn new(parts: ProcessorParts) -> Self {
        // Every reason exported from the start, so failure rates are 0, not absent.
        for reason in FAILURE_REASONS {
            metrics::counter!(REVIEWS_FAILED_TOTAL, "reason" => reason).increment(0);
        }
        Self { parts }
    }

    /// The theme-label jobs.
    pub fn themes(&self) -> &ThemeJobs {
        &self.parts.themes
    }

    /// Processes one message's payload and writes its outputs; does not ack.
    pub async fn process(&self, payload: &[u8]) -> Outcome {
        let review = match ReviewSubmitted::from_json(payload) {
            Ok(r) => r,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        tracing::Span::current().record("review_id", review.review_id.as_str());
        let sanitised = self.parts.sanitiser.sanitise(&review.text);
        if sanitised.text.trim().is_empty() {
            return Outcome::Invalid(ReviewError::EmptyText.to_string());
        }
        if sanitised.report.suspicious() {
            tracing::info!("review text held instruction-like content (neutralised)");
        }
        let texts = vec![sanitised.text];
        let (s, t) = tokio::join!(
            self.parts.sentiment.analyze(&texts),
            self.parts.topics.assign(&texts)
        );
        let (sentiment, topic) = match (first(s), first(t)) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(e), _) | (_, Err(e)) => {
                return Outcome::Retry {
                    reason: e.service,
                    message: e.to_string(),
                };
            }
        };
        let mut row = ReviewRow {
            review_id: review.review_id,
            product_id: review.product_id,
            text: review.text,
            // Validated 1..=5.
            rating: review.rating.and_then(|r| i16::try_from(r).ok()),
            sentiment,
            topic,
            created_at_ms: review.ts,
        };
        let stored = match self.parts.store.upsert(&row).await {
            Ok(stored) => stored,
            Err(e) => {
                return Outcome::Retry {
                    reason: "database",
                    message: e.to_string(),
                };
            }
        };
        let new = stored.new;
        // The live feed says what the table holds: the topic's LLM label once it has one.
        if let (Some(t), Some(label)) = (row.topic.as_mut(), stored.topic_label) {
            t.label = label;
        }
        if new {
            metrics::counter!(REVIEWS_PROCESSED_TOTAL,
                "sentiment" => sentiment_metric_label(row.sentiment.as_ref()))
            .increment(1);
            metrics::counter!(REVIEWS_TOPIC_TOTAL, "topic" => topic_metric_label(row.topic.as_ref()))
                .increment(1);
        } else {
            metrics::counter!(REVIEWS_DUPLICATES_TOTAL).increment(1);
        }
        if let Some(live) = &self.parts.live {
            let msg = live_message(&row, new);
            if let Err(e) = live.publish(&msg).await {
                tracing::warn!(error = %e, "live feed publish failed");
                failed("live_feed");
            }
        }
        // A topic with an LLM label has had its label job.
        if let Some(t) = &row.topic
            && !stored.labelled
        {
            self.parts.themes.offer(t).await;
        }
        Outcome::Stored { new }
    }

    /// Processes `delivery` and acks it, or (a dependency failed) waits the back-off and nacks
    /// it; one tracing span per message.
    pub async fn handle(&self, sub: &mut dyn Subscription, delivery: &Delivery) -> Outcome {
        let span = tracing::info_span!(
            "review",
            delivery = delivery.id,
            attempt = delivery.attempt,
            review_id = tracing::field::Empty
        );
        async {
            let started = Instant::now();
            let outcome = self.process(&delivery.message.payload).await;
            match &outcome {
                Outcome::Stored { .. } => {
                    metrics::histogram!(REVIEWS_PROCESSING_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    ack(sub, delivery).await;
                }
                Outcome::Invalid(why) => {
                    tracing::warn!(error = %why, "not a valid review: dropped");
                    failed("invalid");
                    ack(sub, delivery).await;
                }
                Outcome::Retry { reason, message } => {
                    let delay = self.parts.retry.delay(delivery.attempt);
                    tracing::warn!(reason, error = %message, ?delay, "not processed: will retry");
                    failed(reason);
                    tokio::time::sleep(delay).await;
                    if let Err(e) = sub.nack(delivery).await {
                        // The bus redelivers it after its visibility timeout anyway.
                        tracing::warn!(error = %e, "nack failed");
                        failed("bus");
                    }
                }
            }
            outcome
        }
        .instrument(span)
        .await
    }
}

/// The processor in the streaming runtime (`crate::runtime`), which `infermesh pipeline reviews`
/// runs on Kafka and on the in-process bus alike: a batch's reviews go through the processor
/// `concurrency` at a time, in order; a stored review is done, an invalid one dead-lettered to
/// `reviews.submitted.dlq` (`invalid_value`, counted as `invalid` too), one whose dependency
/// failed handed back after the runtime's back-off.
#[derive(Debug, Clone)]
pub struct ReviewsHandler {
    /// The processor.
    pub processor: Arc<Processor>,
    /// Reviews processed at once.
    pub concurrency: usize,
}

impl ReviewsHandler {
    async fn one(&self, inc: &crate::runtime::Incoming) -> crate::runtime::Outcome {
        let span = tracing::info_span!(
            parent: &inc.span,
            "review",
            delivery = inc.delivery.id,
            attempt = inc.delivery.attempt,
            review_id = tracing::field::Empty
        );
        async {
            let started = Instant::now();
            match self.processor.process(&inc.delivery.message.payload).await {
                Outcome::Stored { .. } => {
                    metrics::histogram!(REVIEWS_PROCESSING_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    crate::runtime::Outcome::Done
                }
                Outcome::Invalid(why) => {
                    tracing::warn!(error = %why, "not a valid review: dead-lettered");
                    failed("invalid");
                    crate::runtime::Outcome::Poison {
                        reason: "invalid_value",
                        detail: why,
                    }
                }
                Outcome::Retry { reason, message } => {
                    tracing::warn!(reason, error = %message, "not processed: will retry");
                    failed(reason);
                    crate::runtime::Outcome::Retry(message)
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl crate::runtime::Handler for ReviewsHandler {
    fn handle<'a>(
        &'a self,
        batch: &'a [crate::runtime::Incoming],
    ) -> crate::bus::BoxFuture<'a, Vec<crate::runtime::Outcome>> {
        use futures::StreamExt as _;
        let each: Vec<_> = batch.iter().map(|inc| self.one(inc)).collect();
        Box::pin(
            futures::stream::iter(each)
                .buffered(self.concurrency.max(1))
                .collect(),
        )
    }
}

async fn ack(sub: &mut dyn Subscription, delivery: &Delivery) {
    if let Err(e) = sub.ack(delivery).await {
        // Outputs are written; a redelivery will rewrite them (idempotent).
        tracing::warn!(error = %e, "ack failed: the review may be processed again");
        failed("bus");
    }
}

/// The live feed's JSON for `row`.
pub fn live_message(row: &ReviewRow, new: bool) -> String {
    json!({
        "review_id": row.review_id,
        "product_id": row.product_id,
        "rating": row.rating,
        "sentiment": row.sentiment.as_ref().map(|s| json!({
            "label": s.label, "score": s.score, "source": s.source})),
        "topic": row.topic.as_ref().map(|t| json!({"id": t.id, "label": t.label})),
        "created_at_ms": row.created_at_ms,
        "new": new,
    })
    .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bus::{EventBus, InProcessBus};
    use crate::llm::queue::QueueConfig;
    use crate::llm::sanitise::EstimateCounter;
    use crate::reviews::live::MemoryLiveFeed;
    use crate::reviews::scoring::{FixedSentiment, FixedTopics};
    use crate::reviews::store::MemoryStore;

    fn parts(store: Arc<MemoryStore>, live: Option<Arc<MemoryLiveFeed>>) -> ProcessorParts {
        ProcessorParts {
            sanitiser: Sanitiser::new(512, Arc::new(EstimateCounter)),
            sentiment: Arc::new(FixedSentiment {
                positive_words: vec!["great".into()],
                negative_words: vec!["broken".into()],
            }),
            topics: Arc::new(FixedTopics {
                topics: vec![(
                    3,
                    "3_battery_charge".into(),
                    vec!["battery".into(), "charge".into()],
                )],
            }),
            store,
            live: live.map(|l| l as Arc<dyn LiveFeed>),
            themes: ThemeJobs::new(
                Some(JobQueue::memory(QueueConfig {
                    depth: 1,
                    ..QueueConfig::default()
                })),
                Duration::from_secs(1),
            ),
            retry: RetryPolicy {
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
        }
    }

    fn review(id: &str, text: &str) -> Vec<u8> {
        ReviewSubmitted {
            review_id: id.into(),
            product_id: "p1".into(),
            text: text.into(),
            rating: Some(5),
            ts: 1_000,
        }
        .to_json()
    }

    #[test]
    fn metric_labels_are_bounded() {
        let s = |l: &str| SentimentScore {
            label: l.into(),
            score: 1.0,
            source: "x".into(),
        };
        assert_eq!(sentiment_metric_label(Some(&s("Positive"))), "positive");
        assert_eq!(sentiment_metric_label(Some(&s("meh"))), "other");
        assert_eq!(sentiment_metric_label(None), "unscored");
        let t = |id| TopicScore {
            id,
            label: String::new(),
            keywords: vec![],
        };
        assert_eq!(topic_metric_label(Some(&t(-1))), "outlier");
        assert_eq!(topic_metric_label(Some(&t(7))), "7");
        assert_eq!(topic_metric_label(Some(&t(TOP_TOPIC_LABELS))), "other");
        assert_eq!(topic_metric_label(None), "unscored");
    }

    #[test]
    fn back_off_doubles_to_its_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        let d: Vec<u128> = (1..=4).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350]);
    }

    #[tokio::test]
    async fn a_review_is_stored_published_and_its_topic_labelled_once() {
        let store = Arc::new(MemoryStore::default());
        let live = Arc::new(MemoryLiveFeed::new(16));
        let mut feed = live.subscribe();
        let p = Processor::new(parts(store.clone(), Some(live)));
        let out = p
            .process(&review("r1", "Great phone, the battery lasts"))
            .await;
        assert_eq!(out, Outcome::Stored { new: true });
        let row = store.rows()["r1"].clone();
        assert_eq!(row.sentiment.unwrap().label, "positive");
        assert_eq!(row.topic.as_ref().unwrap().id, 3);
        assert_eq!(row.rating, Some(5));
        let msg: serde_json::Value = serde_json::from_str(&feed.recv().await.unwrap()).unwrap();
        assert_eq!(msg["review_id"], "r1");
        assert_eq!(msg["sentiment"]["label"], "positive");
        assert_eq!(msg["topic"]["id"], 3);
        assert_eq!(msg["new"], true);
        // The same review again: one row, not new; the topic's label job is not queued twice.
        assert_eq!(
            p.process(&review("r1", "Great phone, the battery lasts"))
                .await,
            Outcome::Stored { new: false }
        );
        assert_eq!(store.rows().len(), 1);
        let queue = p.themes().queue.clone().unwrap();
        let job = queue
            .take(Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.job.kind, "theme_label");
        assert_eq!(job.job.payload["topic_id"], "3");
        assert!(
            queue
                .take(Duration::from_millis(10))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_labelled_topic_is_published_with_its_label_and_not_queued_again() {
        let store = Arc::new(MemoryStore::default());
        let live = Arc::new(MemoryLiveFeed::new(16));
        let mut feed = live.subscribe();
        let p = Processor::new(parts(store.clone(), Some(live)));
        store
            .set_topic_label(&crate::reviews::store::TopicLabel {
                topic_id: 3,
                label: "Battery life".into(),
                keywords: vec!["battery".into()],
            })
            .await
            .unwrap();
        p.process(&review("r1", "The battery lasts")).await;
        let msg: serde_json::Value = serde_json::from_str(&feed.recv().await.unwrap()).unwrap();
        assert_eq!(msg["topic"], json!({"id": 3, "label": "Battery life"}));
        assert_eq!(
            store.rows()["r1"].topic.as_ref().unwrap().label,
            "Battery life"
        );
        let queue = p.themes().queue.clone().unwrap();
        assert!(
            queue
                .take(Duration::from_millis(10))
                .await
                .unwrap()
                .is_none(),
            "a labelled topic's job is not queued again"
        );
    }

    #[tokio::test]
    async fn a_full_llm_queue_is_counted_not_an_error_and_tried_again_later() {
        let themes = ThemeJobs::new(
            Some(JobQueue::memory(QueueConfig {
                depth: 1,
                ..QueueConfig::default()
            })),
            Duration::from_secs(1),
        );
        let t = |id| TopicScore {
            id,
            label: String::new(),
            keywords: vec!["k".into()],
        };
        assert_eq!(themes.offer(&t(1)).await, "enqueued");
        assert_eq!(themes.offer(&t(1)).await, "seen");
        assert_eq!(themes.offer(&t(2)).await, "queue_full");
        assert_eq!(themes.offer(&t(2)).await, "queue_full");
        assert_eq!(themes.offer(&t(-1)).await, "skipped");
        assert_eq!(
            ThemeJobs::new(None, Duration::from_secs(1))
                .offer(&t(1))
                .await,
            "skipped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_lapses_so_a_lost_job_is_queued_again() {
        let themes = ThemeJobs::new(
            Some(JobQueue::memory(QueueConfig::default())),
            Duration::from_secs(1),
        )
        .with_ttl(Duration::from_secs(60));
        let t = TopicScore {
            id: 4,
            label: String::new(),
            keywords: vec!["k".into()],
        };
        assert_eq!(themes.offer(&t).await, "enqueued");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(themes.offer(&t).await, "seen");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(themes.offer(&t).await, "enqueued");
    }

    #[tokio::test]
    async fn invalid_messages_are_acked_and_failures_redelivered() {
        let store = Arc::new(MemoryStore::default());
        let p = Processor::new(parts(store.clone(), None));
        let bus = InProcessBus::new(8, Duration::from_secs(600));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", crate::bus::Message::new("x", b"{not json".to_vec()))
            .await
            .unwrap();
        let d = sub.next().await.unwrap();
        assert!(matches!(
            p.handle(sub.as_mut(), &d).await,
            Outcome::Invalid(_)
        ));
        // Zero-width characters only: empty once sanitised.
        bus.publish(
            "t",
            crate::bus::Message::new("z", review("z", "\u{200b}\u{200b}")),
        )
        .await
        .unwrap();
        let d = sub.next().await.unwrap();
        assert!(matches!(
            p.handle(sub.as_mut(), &d).await,
            Outcome::Invalid(_)
        ));
        // The store is down: not acked, handed back with the next attempt number.
        store.set_down(true);
        bus.publish("t", crate::bus::Message::new("r2", review("r2", "broken")))
            .await
            .unwrap();
        let d = sub.next().await.unwrap();
        assert!(matches!(
            p.handle(sub.as_mut(), &d).await,
            Outcome::Retry {
                reason: "database",
                ..
            }
        ));
        store.set_down(false);
        let again = sub.next().await.unwrap();
        assert_eq!((again.id, again.attempt), (d.id, 2));
        assert_eq!(
            p.handle(sub.as_mut(), &again).await,
            Outcome::Stored { new: true }
        );
        assert_eq!(
            store.rows()["r2"].sentiment.as_ref().unwrap().label,
            "negative"
        );
        // Everything was acked: nothing is left to deliver.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sub.next())
                .await
                .is_err()
        );
    }
}
