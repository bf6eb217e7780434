//! The Kafka event bus: [`KafkaBus`] implements [`EventBus`] on librdkafka (the `rdkafka`
//! crate, librdkafka 2.12 built from source), and [`topics`] creates the platform's topics
//! (`infermesh kafka init`).
//!
//! Delivery is at least once, as the bus seam promises:
//! - the consumer never commits what it was merely handed. An ack *stores* the partition's
//!   offset, and only up to the lowest delivery of that partition still unacked, so the
//!   periodic auto-commit (`commit_interval`, default 1 s) never moves past unfinished work;
//!   [`Subscription::close`] commits what is stored synchronously;
//! - a nack hands the delivery back to this subscription (attempt + 1) without moving the
//!   offset; a crash hands everything past the committed offset to the group again;
//! - when a rebalance takes a partition away, what this process still holds of it is
//!   forgotten (its acks store nothing): the new owner reads it again from the committed
//!   offset, which is why consumers are idempotent by message id.
//!
//! Producers are idempotent (`enable.idempotence`, acks from all in-sync replicas), and
//! [`EventBus::publish`] returns once the broker has the message. Lag per partition comes from
//! librdkafka's statistics (`infermesh_pipeline_consumer_lag{group,topic,partition}`).

pub mod topics;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_common::metrics_names::{
    PIPELINE_ASSIGNED_PARTITIONS, PIPELINE_CONSUMER_ERRORS_TOTAL, PIPELINE_CONSUMER_LAG,
    PIPELINE_PRODUCED_TOTAL,
};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::bus::{BoxFuture, BusError, Delivery, EventBus, Message, Subscription, topic_label};

/// The Kafka flags every Kafka command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long = "kafka-brokers", env = "INFERMESH_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// A librdkafka property for every client, KEY=VALUE (repeatable; e.g.
    /// `security.protocol=SSL`); applied after infermesh's own settings.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
    /// How often acknowledged offsets are committed, in milliseconds (a crash replays at most
    /// this much work, which consumers absorb by message id).
    #[arg(
        long,
        env = "INFERMESH_KAFKA_COMMIT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub kafka_commit_interval_ms: u64,
    /// A consumer that sends no heartbeat for this long, in milliseconds, loses its partitions
    /// to the rest of its group (a killed process's partitions move after this).
    #[arg(
        long,
        env = "INFERMESH_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub kafka_session_timeout_ms: u64,
}

impl KafkaArgs {
    /// The client configuration these flags describe.
    pub fn config(&self, client_id: &str) -> Result<KafkaConfig, BusError> {
        let mut cfg = KafkaConfig::new(&self.kafka_brokers, client_id);
        for kv in &self.kafka_options {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                BusError::Backend(format!("--kafka-option {kv:?} is not KEY=VALUE"))
            })?;
            cfg.options
                .push((k.trim().to_string(), v.trim().to_string()));
        }
        if self.kafka_commit_interval_ms == 0 {
            return Err(BusError::Backend(
                "--kafka-commit-interval-ms must be positive".into(),
            ));
        }
        cfg.commit_interval = Duration::from_millis(self.kafka_commit_interval_ms);
        cfg.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        Ok(cfg)
    }
}

/// How to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// `client.id` (shows in the broker's logs and metrics).
    pub client_id: String,
    /// Extra librdkafka properties, applied last.
    pub options: Vec<(String, String)>,
    /// Auto-commit interval of stored (acknowledged) offsets.
    pub commit_interval: Duration,
    /// Group session timeout.
    pub session_timeout: Duration,
    /// How long a produce may take before it fails (librdkafka's `message.timeout.ms`).
    pub produce_timeout: Duration,
    /// librdkafka's producer batching delay (`linger.ms`).
    pub linger: Duration,
}

impl KafkaConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: &str, client_id: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            client_id: client_id.to_string(),
            options: Vec::new(),
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            produce_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(1),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("statistics.interval.ms", "5000");
        c
    }

    fn apply_options(&self, c: &mut ClientConfig) {
        for (k, v) in &self.options {
            c.set(k, v);
        }
    }

    /// The producer configuration: idempotent, acks from all in-sync replicas.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.produce_timeout.as_millis().to_string(),
            );
        self.apply_options(&mut c);
        c
    }

    /// The consumer configuration of `group`: offsets stored on ack only, auto-committed.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval.as_millis().to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 4).max(100).to_string(),
            )
            .set("fetch.wait.max.ms", "5");
        self.apply_options(&mut c);
        c
    }
}

fn backend(e: KafkaError) -> BusError {
    BusError::Backend(e.to_string())
}

/// The client context of producers: lag-free, but its statistics log nothing.
#[derive(Debug, Clone, Default)]
pub struct QuietContext;

impl ClientContext for QuietContext {}

/// An [`EventBus`] on Kafka (see the module doc).
#[derive(Clone)]
pub struct KafkaBus {
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.cfg.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects a producer (lazily: librdkafka connects on first use).
    pub fn new(cfg: KafkaConfig) -> Result<Self, BusError> {
        let producer: FutureProducer = cfg.producer_config().create().map_err(backend)?;
        Ok(Self { cfg, producer })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The producer, for callers that produce without waiting (fire-and-forget sinks).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// A live tail of `topic`: a member of a group of its own that starts at the topic's end
    /// and commits nothing (the gateway's alert feed: every instance sees every message from
    /// when it started).
    pub fn subscribe_tail(&self, topic: &str) -> Result<KafkaSubscription, BusError> {
        let group = format!("{}-tail-{}", self.cfg.client_id, uuid::Uuid::new_v4());
        let mut cfg = self.cfg.clone();
        cfg.options
            .push(("auto.offset.reset".into(), "latest".into()));
        cfg.options
            .push(("enable.auto.commit".into(), "false".into()));
        KafkaSubscription::new(&cfg, topic, &group)
    }

    /// Joins `group` on `topic` and returns the concrete subscription (what
    /// [`EventBus::subscribe`] boxes).
    pub fn subscribe_kafka(&self, topic: &str, group: &str) -> Result<KafkaSubscription, BusError> {
        KafkaSubscription::new(&self.cfg, topic, group)
    }
}

/// The record of `message` for `topic`.
fn headers_of(message: &Message) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(message.headers.len());
    for (k, v) in &message.headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    h
}

impl EventBus for KafkaBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { self.enqueue(topic, message).await })
    }

    fn enqueue(&self, topic: &str, message: Message) -> BoxFuture<'static, Result<(), BusError>> {
        let headers = headers_of(&message);
        let mut record = FutureRecord::to(topic)
            .payload(&message.payload)
            .headers(headers);
        if let Some(k) = &message.key {
            record = record.key(k);
        }
        let label = topic_label(topic);
        let overloaded = || BusError::Overloaded {
            topic: topic.to_string(),
            capacity: 0,
        };
        match self.producer.send_result(record) {
            Ok(delivery) => Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => {
                        metrics::counter!(PIPELINE_PRODUCED_TOTAL, "topic" => label).increment(1);
                        Ok(())
                    }
                    Ok(Err((e, _))) => Err(backend(e)),
                    Err(_) => Err(backend(KafkaError::Canceled)),
                }
            }),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => Box::pin(std::future::ready(Err(overloaded()))),
            Err((e, _)) => Box::pin(std::future::ready(Err(backend(e)))),
        }
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, BusError>> {
        Box::pin(async move {
            Ok(Box::new(self.subscribe_kafka(topic, group)?) as Box<dyn Subscription>)
        })
    }
}

/// What a rebalance tells the subscription.
#[derive(Debug, Default)]
struct RebalanceLog {
    /// Partitions taken away since the subscription last looked.
    revoked: Vec<i32>,
    /// Rebalances that assigned partitions so far.
    assignments: u64,
}

/// The consumer's context: lag gauges from librdkafka's statistics, and revocations for the
/// subscription to forget what it holds of a partition it lost.
#[derive(Debug, Clone)]
pub struct GroupContext {
    group: String,
    log: Arc<Mutex<RebalanceLog>>,
}

impl GroupContext {
    fn log(&self) -> std::sync::MutexGuard<'_, RebalanceLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 is unknown.
                if *id < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(PIPELINE_CONSUMER_LAG, "group" => self.group.clone(),
                    "topic" => topic_label(name), "partition" => id.to_string())
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(group = %self.group, partitions = ?parts, "partitions revoked");
            metrics::gauge!(PIPELINE_ASSIGNED_PARTITIONS, "group" => self.group.clone()).set(0.0);
            self.log().revoked.extend(parts);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(group = %self.group, partitions = ?parts, "partitions assigned");
            metrics::gauge!(PIPELINE_ASSIGNED_PARTITIONS, "group" => self.group.clone())
                .set(parts.len() as f64);
            self.log().assignments += 1;
        }
    }
}

/// What the subscription tracks of one assigned partition.
#[derive(Debug)]
struct Part {
    /// Offsets handed out and not yet acked.
    in_flight: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: i64,
    /// The offset last stored for commit.
    stored: i64,
    /// Bumped when the partition is revoked, so late acks of the old assignment store nothing.
    epoch: u64,
}

#[derive(Debug)]
struct Held {
    partition: i32,
    offset: i64,
    epoch: u64,
    delivery: Delivery,
}

/// A consumer-group member of one topic (see the module doc for the offset rules).
pub struct KafkaSubscription {
    consumer: StreamConsumer<GroupContext>,
    context: GroupContext,
    topic: String,
    next_id: u64,
    epoch: u64,
    held: HashMap<u64, Held>,
    parts: HashMap<i32, Part>,
    redeliver: VecDeque<u64>,
    seen_assignments: u64,
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.topic)
            .field("group", &self.context.group)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSubscription {
    /// Joins `group` on `topic`.
    pub fn new(cfg: &KafkaConfig, topic: &str, group: &str) -> Result<Self, BusError> {
        let context = GroupContext {
            group: group.to_string(),
            log: Arc::default(),
        };
        let consumer: StreamConsumer<GroupContext> = cfg
            .consumer_config(group)
            .create_with_context(context.clone())
            .map_err(backend)?;
        consumer.subscribe(&[topic]).map_err(backend)?;
        Ok(Self {
            consumer,
            context,
            topic: topic.to_string(),
            next_id: 0,
            epoch: 0,
            held: HashMap::new(),
            parts: HashMap::new(),
            redeliver: VecDeque::new(),
            seen_assignments: 0,
        })
    }

    /// The group's consumer (watermarks, positions, committed offsets).
    pub fn consumer(&self) -> &StreamConsumer<GroupContext> {
        &self.consumer
    }

    /// Forgets what is held of revoked partitions.
    fn apply_revocations(&mut self) {
        let revoked = std::mem::take(&mut self.context.log().revoked);
        if revoked.is_empty() {
            return;
        }
        self.epoch += 1;
        for p in revoked {
            self.parts.remove(&p);
        }
        let parts = &self.parts;
        self.held
            .retain(|_, h| parts.get(&h.partition).is_some_and(|p| p.epoch == h.epoch));
        let held = &self.held;
        self.redeliver.retain(|id| held.contains_key(id));
    }

    fn store(&mut self, partition: i32) -> Result<(), BusError> {
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let to = part.in_flight.first().copied().unwrap_or(part.next);
        if to <= part.stored {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(to))
            .map_err(backend)?;
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                part.stored = to;
                Ok(())
            }
            // Lost in a rebalance that the context has not reported yet: the new owner reads
            // it again.
            Err(e) => {
                tracing::debug!(partition, error = %e, "offset not stored");
                Ok(())
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Subscription for KafkaSubscription {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            self.apply_revocations();
            if let Some(id) = self.redeliver.pop_front()
                && let Some(h) = self.held.get_mut(&id)
            {
                h.delivery.attempt += 1;
                return Ok(h.delivery.clone());
            }
            let msg = loop {
                match self.consumer.recv().await {
                    Ok(m) => break m.detach(),
                    // Errors on the consumer queue are librdkafka reporting what it recovers
                    // from by itself (a broker down, a connection reset, a partition leader
                    // moving): keep polling. Only a fatal error ends the subscription.
                    Err(e) => {
                        if let Some((code, reason)) = self.consumer.client().fatal_error() {
                            return Err(BusError::Backend(format!("fatal: {code:?}: {reason}")));
                        }
                        metrics::counter!(PIPELINE_CONSUMER_ERRORS_TOTAL).increment(1);
                        tracing::warn!(error = %e, "kafka consumer error; librdkafka retries");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            // A rebalance may have run inside recv.
            self.apply_revocations();
            let (partition, offset) = (msg.partition(), msg.offset());
            let epoch = self.epoch;
            let part = self.parts.entry(partition).or_insert_with(|| Part {
                in_flight: BTreeSet::new(),
                next: offset,
                stored: -1,
                epoch,
            });
            part.in_flight.insert(offset);
            part.next = part.next.max(offset + 1);
            let headers = msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), text(h.value.unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default();
            self.next_id += 1;
            let delivery = Delivery {
                id: self.next_id,
                topic: msg.topic().to_string(),
                message: Message {
                    key: msg.key().map(text),
                    headers,
                    payload: msg.payload().unwrap_or_default().to_vec(),
                },
                attempt: 1,
                partition,
                offset,
                timestamp_ms: msg.timestamp().to_millis(),
            };
            self.held.insert(
                delivery.id,
                Held {
                    partition,
                    offset,
                    epoch: part.epoch,
                    delivery: delivery.clone(),
                },
            );
            Ok(delivery)
        })
    }

    fn ack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.apply_revocations();
            let Some(h) = self.held.remove(&delivery.id) else {
                // Forgotten in a rebalance: nothing to store, the new owner has it.
                return Ok(());
            };
            if let Some(part) = self
                .parts
                .get_mut(&h.partition)
                .filter(|p| p.epoch == h.epoch)
            {
                part.in_flight.remove(&h.offset);
                self.store(h.partition)?;
            }
            Ok(())
        })
    }

    fn nack<'a>(&'a mut self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            if self.held.contains_key(&delivery.id) {
                self.redeliver.push_back(delivery.id);
            }
            Ok(())
        })
    }

    fn take_reassigned(&mut self) -> bool {
        let n = self.context.log().assignments;
        let changed = n != self.seen_assignments;
        self.seen_assignments = n;
        changed
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.apply_revocations();
            let mut tpl = TopicPartitionList::new();
            for (p, part) in &self.parts {
                let to = part.in_flight.first().copied().unwrap_or(part.next);
                if to >= 0 {
                    tpl.add_partition_offset(&self.topic, *p, Offset::Offset(to))
                        .map_err(backend)?;
                }
            }
            if tpl.count() > 0 {
                self.consumer
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(backend)?;
            }
            self.consumer.unsubscribe();
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topic_labels_are_bounded() {
        assert_eq!(topic_label("fraud.alerts"), "fraud.alerts");
        assert_eq!(
            topic_label("finance.transactions.dlq"),
            "finance.transactions.dlq"
        );
        assert_eq!(topic_label("anything-else"), "other");
    }

    #[test]
    fn kafka_options_are_key_value() {
        let mut args = KafkaArgs {
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_options: vec!["socket.keepalive.enable = true".into()],
            kafka_commit_interval_ms: 250,
            kafka_session_timeout_ms: 6000,
        };
        let cfg = args.config("t").unwrap();
        assert_eq!(
            cfg.options,
            vec![("socket.keepalive.enable".into(), "true".into())]
        );
        assert_eq!(cfg.commit_interval, Duration::from_millis(250));
        let c = cfg.consumer_config("g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("1500"));
        args.kafka_options = vec!["no-equals".into()];
        assert!(args.config("t").is_err());
    }
}
