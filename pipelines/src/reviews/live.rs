//! The live feed: one JSON message per processed review on a Redis Pub/Sub channel
//! ([`CHANNEL`], `infermesh:reviews`), for dashboards' live gauges. Pub/Sub is fire and forget
//! (a listener that is not connected misses messages), so the feed is best effort: a failed
//! publish is counted and logged, and the review is still acknowledged: its row in PostgreSQL
//! is the record.
//!
//! The message: `{"review_id", "product_id", "rating", "sentiment": {"label", "score",
//! "source"} | null, "topic": {"id", "label"} | null, "created_at_ms", "new": bool}` (`new` is
//! false when the review had been processed before: a redelivery).

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::bus::BoxFuture;
use crate::llm::cache::redis_manager;

/// The default Pub/Sub channel.
pub const CHANNEL: &str = "infermesh:reviews";

/// Publishes the live feed's messages.
pub trait LiveFeed: Send + Sync + std::fmt::Debug {
    /// Publishes `json`; an error is a message for the log.
    fn publish<'a>(&'a self, json: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// The feed on Redis Pub/Sub.
#[derive(Clone)]
pub struct RedisLiveFeed {
    conn: ConnectionManager,
    channel: String,
}

impl std::fmt::Debug for RedisLiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLiveFeed")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisLiveFeed {
    /// Publishes on `channel` of the Redis at `url` (connecting lazily; each call bounded by
    /// `timeout`).
    pub fn new(url: &str, channel: &str, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            conn: redis_manager(url, timeout)?,
            channel: channel.to_string(),
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl LiveFeed for RedisLiveFeed {
    fn publish<'a>(&'a self, json: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _receivers: i64 = redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(json)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

/// A feed in memory: a broadcast channel (tests, and a process that shows its own gauges).
#[derive(Debug, Clone)]
pub struct MemoryLiveFeed {
    tx: tokio::sync::broadcast::Sender<String>,
}

impl MemoryLiveFeed {
    /// A feed keeping up to `capacity` messages for slow receivers.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(capacity.max(1)).0,
        }
    }

    /// A receiver of the messages published from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

impl LiveFeed for MemoryLiveFeed {
    fn publish<'a>(&'a self, json: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(json.to_string());
            Ok(())
        })
    }
}
