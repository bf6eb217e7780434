//! Online stores: where feature values live between writes and reads, in Feast's Redis
//! layout ([`crate::key`]). [`RedisStore`] is Feast's Redis online store, so Feast's
//! `materialize` and `get_online_features` and infermesh read and write the same data;
//! [`MemoryStore`] keeps the same hashes in this process (`infermesh up`, tests).
//!
//! Writes follow Feast's Redis store: a row older than (or as old as) the view's stored event
//! time is skipped, so late and replayed events never overwrite newer values; a null feature
//! is stored as empty bytes; with a key TTL, every accepted write resets the key's expiry.
//! Reads of many keys are one pipelined round trip.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use infermesh_common::ErrorKind;
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::Timestamp;
use crate::types::Value;
use crate::value::nanos_of;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store did not answer in time.
    #[error("the online store did not answer within {0:?}")]
    Timeout(Duration),
    /// The memory store is full.
    #[error("the in-memory online store holds its limit of {0} entity keys")]
    Full(usize),
    /// A stored value is not a Feast value or timestamp.
    #[error("a stored value is corrupt: {0}")]
    Corrupt(String),
    /// The Redis URL is not valid.
    #[error("invalid redis url: {0}")]
    Url(String),
}

impl StoreError {
    /// The error's kind: the store being down or slow is UNAVAILABLE (503).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Full(_) => ErrorKind::Overloaded,
            StoreError::Corrupt(_) | StoreError::Url(_) => ErrorKind::Internal,
            StoreError::Redis(_) | StoreError::Timeout(_) => ErrorKind::Unavailable,
        }
    }
}

/// A boxed store future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One read: some features of one view for one entity key.
#[derive(Debug, Clone, Copy)]
pub struct ReadOp<'a> {
    /// The Redis key ([`crate::key::entity_key`]).
    pub key: &'a [u8],
    /// The view's timestamp field.
    pub timestamp_field: &'a [u8],
    /// The features' hash fields.
    pub fields: &'a [[u8; 4]],
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredRow {
    /// Per requested field: its value (`None`: absent or null).
    pub values: Vec<Option<Value>>,
    /// The view's event time for this entity (`None`: never written).
    pub event_time: Option<Timestamp>,
}

/// One write: a view's features for one entity key at one event time.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    /// The Redis key.
    pub key: Vec<u8>,
    /// The view's timestamp field.
    pub timestamp_field: Vec<u8>,
    /// The event time.
    pub event_time: Timestamp,
    /// The features' hash fields and values (`None`: null).
    pub fields: Vec<([u8; 4], Option<Value>)>,
}

/// An online store.
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// Reads every op, in order.
    fn read<'a>(&'a self, ops: &'a [ReadOp<'a>]) -> StoreFuture<'a, Vec<StoredRow>>;
    /// Writes the ops, skipping any not newer than what the store holds (or than an earlier
    /// op of the batch on the same key and view); returns, per op, whether it was written.
    fn write<'a>(&'a self, ops: &'a [WriteOp]) -> StoreFuture<'a, Vec<bool>>;
    /// Whether the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// A short name for logs and metrics (`redis`, `memory`).
    fn name(&self) -> &'static str;
}

fn decode_row(op: &ReadOp<'_>, raw: Vec<Option<Vec<u8>>>) -> Result<StoredRow, StoreError> {
    let mut raw = raw.into_iter();
    let values = op
        .fields
        .iter()
        .map(|_| match raw.next().flatten() {
            None => Ok(None),
            Some(b) if b.is_empty() => Ok(None),
            Some(b) => Value::decode(b.as_slice())
                .map(|v| v.val.is_some().then_some(v))
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let event_time = match raw.next().flatten() {
        None => None,
        Some(b) => {
            Some(Timestamp::decode(b.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        }
    };
    Ok(StoredRow { values, event_time })
}

fn encode_value(v: &Option<Value>) -> Vec<u8> {
    v.as_ref().map(Message::encode_to_vec).unwrap_or_default()
}

/// The writes of a batch to apply, given each op's stored event time: newer than the store
/// and than any earlier accepted op of the batch on the same key and view.
fn accepted(ops: &[WriteOp], stored: &[Option<Timestamp>]) -> Vec<bool> {
    let mut newest: HashMap<(&[u8], &[u8]), i128> = HashMap::new();
    ops.iter()
        .zip(stored)
        .map(|(op, s)| {
            let slot = (op.key.as_slice(), op.timestamp_field.as_slice());
            let before = newest
                .get(&slot)
                .copied()
                .or_else(|| s.as_ref().map(nanos_of));
            let t = nanos_of(&op.event_time);
            let take = before.is_none_or(|b| t > b);
            if take {
                newest.insert(slot, t);
            }
            take
        })
        .collect()
}

/// Feast's Redis online store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    key_ttl: Option<Duration>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .field("key_ttl", &self.key_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `url` (`redis://host:port/db`); nothing connects until the first call, so
    /// a server starts while Redis is down and answers 503 until it is back. Every call is
    /// bounded by `timeout`; `key_ttl` (Feast's `key_ttl_seconds`) expires keys that are not
    /// written again. Must run inside a Tokio runtime.
    pub fn new(
        url: &str,
        timeout: Duration,
        key_ttl: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            timeout,
            key_ttl,
        })
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        Ok(tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??)
    }
}

impl OnlineStore for RedisStore {
    fn read<'a>(&'a self, ops: &'a [ReadOp<'a>]) -> StoreFuture<'a, Vec<StoredRow>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for op in ops {
                let cmd = pipe.cmd("HMGET").arg(op.key);
                for f in op.fields {
                    cmd.arg(&f[..]);
                }
                cmd.arg(op.timestamp_field);
            }
            let mut conn = self.conn.clone();
            let raw: Vec<Vec<Option<Vec<u8>>>> = self.bounded(pipe.query_async(&mut conn)).await?;
            ops.iter()
                .zip(raw)
                .map(|(op, r)| decode_row(op, r))
                .collect()
        })
    }

    fn write<'a>(&'a self, ops: &'a [WriteOp]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            for op in ops {
                pipe.cmd("HGET").arg(&op.key).arg(&op.timestamp_field);
            }
            let stored: Vec<Option<Vec<u8>>> = self.bounded(pipe.query_async(&mut conn)).await?;
            let stored = stored
                .into_iter()
                .map(|b| {
                    b.filter(|b| !b.is_empty())
                        .map(|b| Timestamp::decode(b.as_slice()))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let take = accepted(ops, &stored);
            if !take.contains(&true) {
                return Ok(take);
            }
            let mut pipe = redis::pipe();
            for (op, _) in ops.iter().zip(&take).filter(|(_, t)| **t) {
                let cmd = pipe.cmd("HSET").arg(&op.key);
                cmd.arg(&op.timestamp_field)
                    .arg(op.event_time.encode_to_vec());
                for (f, v) in &op.fields {
                    cmd.arg(&f[..]).arg(encode_value(v));
                }
                cmd.ignore();
                if let Some(ttl) = self.key_ttl {
                    pipe.cmd("EXPIRE")
                        .arg(&op.key)
                        .arg(ttl.as_secs().max(1))
                        .ignore();
                }
            }
            self.bounded(pipe.query_async::<()>(&mut conn)).await?;
            Ok(take)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            self.bounded(redis::cmd("PING").query_async::<()>(&mut conn))
                .await
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// The same hashes as [`RedisStore`], in this process, bounded to a number of keys.
#[derive(Debug)]
pub struct MemoryStore {
    max_keys: usize,
    key_ttl: Option<Duration>,
    keys: Mutex<HashMap<Vec<u8>, Hash>>,
}

#[derive(Debug, Default)]
struct Hash {
    fields: HashMap<Vec<u8>, Vec<u8>>,
    expires: Option<Instant>,
}

impl MemoryStore {
    /// A store of at most `max_keys` entity keys (writes of new keys past it fail), expiring
    /// keys `key_ttl` after their last write when set.
    pub fn new(max_keys: usize, key_ttl: Option<Duration>) -> Self {
        Self {
            max_keys,
            key_ttl,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Hash>> {
        // A panic while holding the lock cannot leave a hash half-written (each write is
        // built before it is inserted), so a poisoned lock's data is still whole.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of entity keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OnlineStore for MemoryStore {
    fn read<'a>(&'a self, ops: &'a [ReadOp<'a>]) -> StoreFuture<'a, Vec<StoredRow>> {
        Box::pin(async move {
            let now = Instant::now();
            let keys = self.lock();
            ops.iter()
                .map(|op| {
                    let hash = keys
                        .get(op.key)
                        .filter(|h| h.expires.is_none_or(|e| e > now));
                    let get = |f: &[u8]| hash.and_then(|h| h.fields.get(f).cloned());
                    let raw = op
                        .fields
                        .iter()
                        .map(|f| get(&f[..]))
                        .chain(std::iter::once(get(op.timestamp_field)))
                        .collect();
                    decode_row(op, raw)
                })
                .collect()
        })
    }

    fn write<'a>(&'a self, ops: &'a [WriteOp]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut keys = self.lock();
            let stored = ops
                .iter()
                .map(|op| {
                    keys.get(&op.key)
                        .filter(|h| h.expires.is_none_or(|e| e > now))
                        .and_then(|h| h.fields.get(&op.timestamp_field))
                        .filter(|b| !b.is_empty())
                        .map(|b| Timestamp::decode(b.as_slice()))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let take = accepted(ops, &stored);
            for (op, _) in ops.iter().zip(&take).filter(|(_, t)| **t) {
                if !keys.contains_key(&op.key) {
                    keys.retain(|_, h| h.expires.is_none_or(|e| e > now));
                    if keys.len() >= self.max_keys {
                        return Err(StoreError::Full(self.max_keys));
                    }
                }
                let hash = keys.entry(op.key.clone()).or_default();
                if hash.expires.is_some_and(|e| e <= now) {
                    *hash = Hash::default();
                }
                hash.fields
                    .insert(op.timestamp_field.clone(), op.event_time.encode_to_vec());
                for (f, v) in &op.fields {
                    hash.fields.insert(f.to_vec(), encode_value(v));
                }
                hash.expires = self.key_ttl.map(|t| now + t);
            }
            Ok(take)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::value::Val;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn write(key: &[u8], t: i64, v: f64) -> WriteOp {
        WriteOp {
            key: key.to_vec(),
            timestamp_field: b"_ts:v".to_vec(),
            event_time: ts(t),
            fields: vec![(
                [1, 2, 3, 4],
                Some(Value {
                    val: Some(Val::DoubleVal(v)),
                }),
            )],
        }
    }

    fn n(v: Vec<bool>) -> usize {
        v.iter().filter(|t| **t).count()
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_newest_value_and_its_bound() {
        let store = MemoryStore::new(2, None);
        // In one batch: the older row of key a is skipped, whatever the order.
        let took = store
            .write(&[
                write(b"a", 20, 2.0),
                write(b"a", 10, 1.0),
                write(b"b", 5, 5.0),
            ])
            .await
            .unwrap();
        assert_eq!(took, vec![true, false, true]);
        // Later: an older or equal event is skipped, a newer one taken.
        assert_eq!(n(store.write(&[write(b"a", 20, 9.0)]).await.unwrap()), 0);
        assert_eq!(n(store.write(&[write(b"b", 6, 6.0)]).await.unwrap()), 1);
        let fields = [[1, 2, 3, 4], [9, 9, 9, 9]];
        let ops = [b"a".as_slice(), b"b", b"c"].map(|key| ReadOp {
            key,
            timestamp_field: b"_ts:v",
            fields: &fields,
        });
        let rows = store.read(&ops).await.unwrap();
        assert_eq!(rows[0].event_time, Some(ts(20)));
        assert_eq!(
            rows[0].values,
            vec![
                Some(Value {
                    val: Some(Val::DoubleVal(2.0))
                }),
                None
            ]
        );
        assert_eq!(rows[1].event_time, Some(ts(6)));
        assert_eq!(
            rows[2],
            StoredRow {
                values: vec![None, None],
                event_time: None
            }
        );
        // Full: a third key is refused, existing keys still written.
        assert!(matches!(
            store.write(&[write(b"c", 1, 1.0)]).await,
            Err(StoreError::Full(2))
        ));
        assert_eq!(n(store.write(&[write(b"a", 30, 3.0)]).await.unwrap()), 1);
    }

    #[tokio::test]
    async fn expired_memory_keys_read_as_absent() {
        let store = MemoryStore::new(10, Some(Duration::from_millis(1)));
        store.write(&[write(b"a", 1, 1.0)]).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let f = [[1, 2, 3, 4]];
        let rows = store
            .read(&[ReadOp {
                key: b"a",
                timestamp_field: b"_ts:v",
                fields: &f,
            }])
            .await
            .unwrap();
        assert_eq!(rows[0].event_time, None);
        // An expired key is written afresh (an older event is taken).
        assert_eq!(n(store.write(&[write(b"a", 0, 0.5)]).await.unwrap()), 1);
    }

    #[test]
    fn corrupt_values_are_errors() {
        let op = ReadOp {
            key: b"k",
            timestamp_field: b"_ts:v",
            fields: &[[0; 4]],
        };
        assert!(decode_row(&op, vec![Some(vec![0xff, 0xff]), None]).is_err());
        assert!(decode_row(&op, vec![None, Some(vec![0xff])]).is_err());
        let row = decode_row(&op, vec![Some(Vec::new()), None]).unwrap();
        assert_eq!(row.values, vec![None]);
    }
}
