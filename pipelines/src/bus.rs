//! The event-bus seam of the pipelines: at-least-once delivery, broker-agnostic.
//!
//! A pipeline publishes [`Message`]s (key, headers, payload bytes) to a topic and reads them
//! through a [`Subscription`] of a consumer group. Delivery is at least once: a delivery stays
//! owned by the group until it is [`Subscription::ack`]ed, which a consumer does only after its
//! outputs are written; one that is not acked within the visibility timeout (a crashed or stuck
//! consumer), or is [`Subscription::nack`]ed, is delivered again with `attempt` one higher.
//! Consumers are therefore idempotent by the message's id or key (ARCHITECTURE.md, "Events").
//!
//! The traits are object-safe (boxed futures) so that a pipeline holds a `Box<dyn EventBus>`
//! chosen by configuration: [`InProcessBus`] here (tests, `infermesh up`) or
//! [`KafkaBus`](crate::kafka::KafkaBus) (feature `kafka`), where a delivery's `id` stands for
//! its partition and offset and an ack moves the group's committed offset.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A boxed, sendable future: what the object-safe bus traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a bus call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The topic (or a group reading it) holds as many unacknowledged messages as it may: the
    /// publisher should slow down or shed load.
    #[error("topic {topic} is full ({capacity} unacknowledged messages)")]
    Overloaded {
        /// The topic.
        topic: String,
        /// Its bound.
        capacity: usize,
    },
    /// The delivery is not (or no longer) owned by this subscription: already acked, or its
    /// visibility timeout passed and it was handed out again.
    #[error("delivery {0} is not held by this subscription")]
    UnknownDelivery(u64),
    /// The broker failed or the bus was closed.
    #[error("event bus: {0}")]
    Backend(String),
}

/// How a failed attempt waits before its message is handed back.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What a publisher sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Partitioning and idempotency key (the entity id), if any.
    pub key: Option<String>,
    /// Headers (trace context, content type, schema version...).
    pub headers: Vec<(String, String)>,
    /// The value (JSON in infermesh's topics).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with `key` and `payload` and no headers.
    pub fn new(key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into()),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }
}

/// One delivery of a message to a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Identifies this message within its topic and group (an offset in Kafka terms); the
    /// handle to ack or nack it.
    pub id: u64,
    /// The topic it came from.
    pub topic: String,
    /// The message.
    pub message: Message,
    /// 1 on the first delivery, then one more on each redelivery.
    pub attempt: u32,
    /// The partition it was read from (0 on a bus without partitions).
    pub partition: i32,
    /// Its offset in that partition (the id on a bus without offsets).
    pub offset: i64,
    /// When the broker (or producer) stamped it, in Unix milliseconds, if known.
    pub timestamp_ms: Option<i64>,
}

/// A broker: topics that publishers write and consumer groups read.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Appends `message` to `topic`; refuses with [`BusError::Overloaded`] when the topic is at
    /// its bound. Returns once the broker has the message.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// Hands `message` to the bus before returning (messages handed over one after another
    /// keep that order) and returns what resolves once the broker has it, as
    /// [`EventBus::publish`] does. A caller that must not wait for the broker (a pipeline
    /// starting its next batch) keeps the future and awaits it later.
    fn enqueue(&self, topic: &str, message: Message) -> BoxFuture<'static, Result<(), BusError>>;

    /// Joins consumer group `group` of `topic`: every message is delivered to one subscription
    /// of each group.
    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, BusError>>;
}

/// A consumer's view of one group of one topic.
pub trait Subscription: Send + std::fmt::Debug {
    /// The next delivery (new, nacked, or past its visibility timeout), waiting for one.
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>>;
    /// Done with `delivery`: its outputs are written, it is never delivered again.
    fn ack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>>;
    /// Not done: deliver it again (now, with `attempt` one higher).
    fn nack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>>;
    /// True once after each time the group assigned partitions to this subscription (a
    /// consumer keeping state derived from its partitions re-reads it then); buses without
    /// partitions never say so.
    fn take_reassigned(&mut self) -> bool {
        false
    }
    /// Messages the group has yet to take, when the bus knows without asking a broker (Kafka
    /// reports lag through librdkafka's statistics instead).
    fn lag(&self) -> Option<u64> {
        None
    }
    /// Leaves the group after making what was acked durable (Kafka: a synchronous commit).
    /// Unacked deliveries go to the group again.
    fn close(&mut self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The `topic` label of a metric: the platform's topics and their dead-letter topics by
/// name, anything else `other` (labels stay bounded whatever a caller publishes to).
pub fn topic_label(topic: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "finance.transactions",
        "fraud.alerts",
        "user.behavior",
        "reviews.submitted",
        "resume.uploaded",
        "resume.scored",
        "marketplace.orders",
    ];
    const DLQ: [&str; 7] = [
        "finance.transactions.dlq",
        "fraud.alerts.dlq",
        "user.behavior.dlq",
        "reviews.submitted.dlq",
        "resume.uploaded.dlq",
        "resume.scored.dlq",
        "marketplace.orders.dlq",
    ];
    KNOWN
        .iter()
        .chain(DLQ.iter())
        .find(|k| **k == topic)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    message: Message,
    attempt: u32,
    /// When it was published, Unix ms (what a broker's timestamp says).
    published_ms: i64,
}

#[derive(Debug, Default)]
struct Group {
    ready: VecDeque<Entry>,
    in_flight: HashMap<u64, (Entry, Instant)>,
}

impl Group {
    fn held(&self) -> usize {
        self.ready.len() + self.in_flight.len()
    }

    /// Moves deliveries past their visibility deadline back to `ready`; returns the earliest
    /// deadline still pending.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((mut entry, _)) = self.in_flight.remove(&id) {
                entry.attempt += 1;
                self.ready.push_back(entry);
            }
        }
        self.in_flight.values().map(|(_, d)| *d).min()
    }
}

#[derive(Debug, Default)]
struct Topic {
    next_id: u64,
    /// Messages published before any group subscribed; the first group takes them over.
    unclaimed: VecDeque<Entry>,
    groups: HashMap<String, Group>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    visibility: Duration,
    topics: Mutex<HashMap<String, Topic>>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An in-process [`EventBus`] on tokio: each topic and group holds at most `capacity`
/// unacknowledged messages; an unacked delivery is handed out again after `visibility`.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

impl InProcessBus {
    /// A bus whose topics hold at most `capacity` unacknowledged messages per group, and whose
    /// deliveries become visible again `visibility` after they were handed out unacked.
    pub fn new(capacity: usize, visibility: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                visibility,
                topics: Mutex::new(HashMap::new()),
                notify: Notify::new(),
            }),
        }
    }

    fn publish_now(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let mut topics = self.shared.lock();
        let t = topics.entry(topic.to_string()).or_default();
        let capacity = self.shared.capacity;
        let full = if t.groups.is_empty() {
            t.unclaimed.len() >= capacity
        } else {
            t.groups.values().any(|g| g.held() >= capacity)
        };
        if full {
            return Err(BusError::Overloaded {
                topic: topic.to_string(),
                capacity,
            });
        }
        t.next_id += 1;
        let entry = Entry {
            id: t.next_id,
            message,
            attempt: 1,
            published_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        };
        if t.groups.is_empty() {
            t.unclaimed.push_back(entry);
        } else {
            for g in t.groups.values_mut() {
                g.ready.push_back(entry.clone());
            }
        }
        drop(topics);
        self.shared.notify.notify_waiters();
        metrics::counter!(infermesh_common::metrics_names::PIPELINE_PRODUCED_TOTAL,
            "topic" => topic_label(topic))
        .increment(1);
        Ok(())
    }
}

impl EventBus for InProcessBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { self.publish_now(topic, message) })
    }

    fn enqueue(&self, topic: &str, message: Message) -> BoxFuture<'static, Result<(), BusError>> {
        let r = self.publish_now(topic, message);
        Box::pin(std::future::ready(r))
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, BusError>> {
        Box::pin(async move {
            let mut topics = self.shared.lock();
            let t = topics.entry(topic.to_string()).or_default();
            if !t.groups.contains_key(group) {
                let ready = std::mem::take(&mut t.unclaimed);
                t.groups.insert(
                    group.to_string(),
                    Group {
                        ready,
                        in_flight: HashMap::new(),
                    },
                );
            }
            Ok(Box::new(InProcessSubscription {
                shared: Arc::clone(&self.shared),
                topic: topic.to_string(),
                group: group.to_string(),
            }) as Box<dyn Subscription>)
        })
    }
}

/// A subscription of [`InProcessBus`].
#[derive(Debug)]
pub struct InProcessSubscription {
    shared: Arc<Shared>,
    topic: String,
    group: String,
}

impl InProcessSubscription {
    fn with_group<T>(&self, f: impl FnOnce(&mut Group) -> T) -> Result<T, BusError> {
        let mut topics = self.shared.lock();
        let g = topics
            .get_mut(&self.topic)
            .and_then(|t| t.groups.get_mut(&self.group))
            .ok_or_else(|| BusError::Backend(format!("group {} is gone", self.group)))?;
        Ok(f(g))
    }
}

impl Subscription for InProcessSubscription {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            loop {
                // Register for wake-ups before looking, so a publish in between is not missed.
                let notified = self.shared.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let visibility = self.shared.visibility;
                let (taken, next_deadline) = self.with_group(|g| {
                    let now = Instant::now();
                    let next_deadline = g.expire(now);
                    match g.ready.pop_front() {
                        Some(entry) => {
                            g.in_flight
                                .insert(entry.id, (entry.clone(), now + visibility));
                            (Some(entry), next_deadline)
                        }
                        None => (None, next_deadline),
                    }
                })?;
                if let Some(entry) = taken {
                    return Ok(Delivery {
                        id: entry.id,
                        topic: self.topic.clone(),
                        message: entry.message,
                        attempt: entry.attempt,
                        partition: 0,
                        offset: i64::try_from(entry.id).unwrap_or(i64::MAX),
                        timestamp_ms: Some(entry.published_ms),
                    });
                }
                match next_deadline {
                    Some(deadline) => {
                        let _ = tokio::time::timeout_at(deadline, notified).await;
                    }
                    None => notified.await,
                }
            }
        })
    }

    fn lag(&self) -> Option<u64> {
        self.with_group(|g| g.ready.len() as u64).ok()
    }

    fn ack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let removed = self.with_group(|g| g.in_flight.remove(&delivery.id).is_some())?;
            if !removed {
                return Err(BusError::UnknownDelivery(delivery.id));
            }
            // A publisher may be waiting for room.
            self.shared.notify.notify_waiters();
            Ok(())
        })
    }

    fn nack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let requeued = self.with_group(|g| match g.in_flight.remove(&delivery.id) {
                Some((mut entry, _)) => {
                    entry.attempt += 1;
                    g.ready.push_back(entry);
                    true
                }
                None => false,
            })?;
            if !requeued {
                return Err(BusError::UnknownDelivery(delivery.id));
            }
            self.shared.notify.notify_waiters();
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(key: &str) -> Message {
        Message::new(key, key.as_bytes().to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unacked_delivery_comes_back_after_the_visibility_timeout() {
        let bus = InProcessBus::new(8, Duration::from_secs(30));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", msg("a")).await.unwrap();
        let started = Instant::now();
        let first = sub.next().await.unwrap();
        assert_eq!(
            (first.message.key.as_deref(), first.attempt),
            (Some("a"), 1)
        );
        // Not acked: nothing else to read until the timeout passes, then the same message.
        let again = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.attempt, 2);
        assert!(started.elapsed() >= Duration::from_secs(30));
        // The first handle is stale now.
        sub.ack(&again).await.unwrap();
        assert_eq!(
            sub.ack(&first).await,
            Err(BusError::UnknownDelivery(first.id))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ack_removes_and_nack_redelivers_at_once() {
        let bus = InProcessBus::new(8, Duration::from_secs(30));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", msg("a")).await.unwrap();
        bus.publish("t", msg("b")).await.unwrap();
        let a = sub.next().await.unwrap();
        sub.ack(&a).await.unwrap();
        let b = sub.next().await.unwrap();
        assert_eq!(b.message.key.as_deref(), Some("b"));
        sub.nack(&b).await.unwrap();
        let b2 = sub.next().await.unwrap();
        assert_eq!((b2.id, b2.attempt), (b.id, 2));
        sub.ack(&b2).await.unwrap();
        // Acked messages never return, even after the timeout.
        assert!(
            tokio::time::timeout(Duration::from_secs(120), sub.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_full_topic_refuses_until_acked() {
        let bus = InProcessBus::new(2, Duration::from_secs(30));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", msg("a")).await.unwrap();
        bus.publish("t", msg("b")).await.unwrap();
        let err = bus.publish("t", msg("c")).await.unwrap_err();
        assert_eq!(
            err,
            BusError::Overloaded {
                topic: "t".into(),
                capacity: 2
            }
        );
        // Delivered but unacked still counts against the bound.
        let a = sub.next().await.unwrap();
        assert!(bus.publish("t", msg("c")).await.is_err());
        sub.ack(&a).await.unwrap();
        bus.publish("t", msg("c")).await.unwrap();
    }

    #[tokio::test]
    async fn every_group_gets_every_message_and_members_share_one() {
        let bus: Box<dyn EventBus> = Box::new(InProcessBus::new(8, Duration::from_secs(30)));
        // Published before anyone subscribed: kept for the first group.
        bus.publish("t", msg("early")).await.unwrap();
        let mut g1a = bus.subscribe("t", "g1").await.unwrap();
        let mut g1b = bus.subscribe("t", "g1").await.unwrap();
        let mut g2 = bus.subscribe("t", "g2").await.unwrap();
        assert_eq!(
            g1a.next().await.unwrap().message.key.as_deref(),
            Some("early")
        );
        bus.publish("t", msg("x")).await.unwrap();
        assert_eq!(g1b.next().await.unwrap().message.key.as_deref(), Some("x"));
        assert_eq!(g2.next().await.unwrap().message.key.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_publish() {
        let bus = InProcessBus::new(8, Duration::from_secs(30));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let waiter = tokio::spawn(async move { sub.next().await });
        tokio::task::yield_now().await;
        bus.publish("t", msg("late")).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.message.payload, b"late");
    }
}
