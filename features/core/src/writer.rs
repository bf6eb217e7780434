//! The streaming writer: rows pushed one at a time (a pipeline's events, `/push` calls)
//! and written to the store in batches, each batch one pipelined round trip.
//!
//! A row is checked against its view when it is pushed, so a bad row is refused to its
//! caller at once. The queue is bounded: [`FeatureWriter::write`] waits for room (a
//! consumer's backpressure) and for the batch holding its row to be written (at-least-once
//! pipelines commit their offsets after that); [`FeatureWriter::try_push`] refuses when the
//! queue is full instead of waiting. Batches form from whatever is queued when the previous
//! batch finishes, with no added delay: one row alone is written at once, and under load a
//! batch grows to [`WriterConfig::max_batch`] rows.

use std::sync::Arc;

use infermesh_common::metrics_names as m;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::FeatureError;
use crate::registry::FeatureRegistry;
use crate::store::{OnlineStore, StoreError, WriteOp};
use crate::write::{RowWrite, write_ops};

/// The writer's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Rows written in one pipelined round trip at most.
    pub max_batch: usize,
    /// Rows queued at most (pushes past it wait, or are refused by `try_push`).
    pub capacity: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            capacity: 65_536,
        }
    }
}

type Ack = oneshot::Sender<Result<bool, Arc<StoreError>>>;

enum Job {
    Row {
        view: String,
        op: WriteOp,
        ack: Option<Ack>,
    },
    Flush(oneshot::Sender<()>),
}

/// Writes rows of feature views to a store in batches (see the module doc).
#[derive(Debug)]
pub struct FeatureWriter {
    registry: Arc<FeatureRegistry>,
    tx: mpsc::Sender<Job>,
    task: JoinHandle<()>,
}

impl FeatureWriter {
    /// Starts the writer's task on the current tokio runtime.
    pub fn start(
        registry: Arc<FeatureRegistry>,
        store: Arc<dyn OnlineStore>,
        cfg: WriterConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let task = tokio::spawn(run(rx, store, cfg.max_batch.max(1)));
        Self { registry, tx, task }
    }

    /// The registry rows are checked against.
    pub fn registry(&self) -> &Arc<FeatureRegistry> {
        &self.registry
    }

    fn job(&self, row: RowWrite, ack: Option<Ack>) -> Result<Job, FeatureError> {
        let op = write_ops(&self.registry, std::slice::from_ref(&row))?
            .pop()
            .ok_or_else(|| FeatureError::InvalidArgument("no row".into()))?;
        Ok(Job::Row {
            view: row.view,
            op,
            ack,
        })
    }

    /// Checks `row`, queues it (waiting for room) and waits until its batch is written;
    /// answers whether it was newer than the stored row (and so written).
    pub async fn write(&self, row: RowWrite) -> Result<bool, FeatureError> {
        let (ack, done) = oneshot::channel();
        let job = self.job(row, Some(ack))?;
        self.tx.send(job).await.map_err(|_| closed())?;
        match done.await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e)) => Err(FeatureError::Write(e)),
            Err(_) => Err(closed()),
        }
    }

    /// Checks `row` and queues it without waiting; refused (overloaded) when the queue is
    /// full. Store errors of its batch are logged and counted, not returned.
    pub fn try_push(&self, row: RowWrite) -> Result<(), FeatureError> {
        let job = self.job(row, None)?;
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => FeatureError::Overloaded(format!(
                "the feature writer's queue holds its limit of {} rows",
                self.tx.max_capacity()
            )),
            mpsc::error::TrySendError::Closed(_) => closed(),
        })
    }

    /// Waits until every row queued before this call is written (or failed).
    pub async fn flush(&self) -> Result<(), FeatureError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Flush(tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }

    /// Writes what is queued and stops.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

fn closed() -> FeatureError {
    FeatureError::Unavailable("the feature writer has stopped".into())
}

async fn run(mut rx: mpsc::Receiver<Job>, store: Arc<dyn OnlineStore>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        jobs.clear();
        if rx.recv_many(&mut jobs, max_batch).await == 0 {
            return;
        }
        let mut ops = Vec::with_capacity(jobs.len());
        let mut rows = Vec::with_capacity(jobs.len());
        let mut flushes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Row { view, op, ack } => {
                    ops.push(op);
                    rows.push((view, ack));
                }
                Job::Flush(tx) => flushes.push(tx),
            }
        }
        if !ops.is_empty() {
            match store.write(&ops).await {
                Ok(took) => {
                    for ((view, ack), took) in rows.into_iter().zip(took) {
                        let outcome = if took { "written" } else { "skipped_older" };
                        metrics::counter!(m::FEATURE_WRITES_TOTAL, "view" => view, "outcome" => outcome)
                            .increment(1);
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(took));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, rows = ops.len(), "feature write batch failed");
                    metrics::counter!(m::FEATURE_STORE_ERRORS_TOTAL, "store" => store.name(), "op" => "write")
                        .increment(1);
                    let e = Arc::new(e);
                    for (_, ack) in rows {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::online::{OnlineRequest, Wanted, get_online_features};
    use crate::serving::FieldStatus;
    use crate::store::MemoryStore;
    use crate::types::Value;
    use crate::types::value::Val;

    const REGISTRY: &str = r#"
project = "shop"
[[entities]]
name = "user"
join_key = "user_id"
value_type = "INT64"
[[feature_views]]
name = "user_stats"
entities = ["user"]
features = [{ name = "avg_spend", type = "DOUBLE" }]
"#;

    fn row(user: i64, t: i64, v: f64) -> RowWrite {
        RowWrite {
            view: "user_stats".into(),
            entity: vec![(
                "user_id".into(),
                Value {
                    val: Some(Val::Int64Val(user)),
                },
            )],
            features: vec![(
                "avg_spend".into(),
                Value {
                    val: Some(Val::DoubleVal(v)),
                },
            )],
            event_time: crate::Timestamp {
                seconds: t,
                nanos: 0,
            },
        }
    }

    #[tokio::test]
    async fn rows_are_written_in_batches_and_bad_rows_refused_at_once() {
        let registry = Arc::new(FeatureRegistry::from_toml(REGISTRY, None).unwrap());
        let store = Arc::new(MemoryStore::new(1000, None));
        let w = FeatureWriter::start(
            registry.clone(),
            store.clone(),
            WriterConfig {
                max_batch: 8,
                capacity: 64,
            },
        );
        // 50 pushes without waiting, then one acknowledged write and a flush.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for u in 0..50 {
            w.try_push(row(u, now, u as f64)).unwrap();
        }
        assert!(w.write(row(7, now + 1, 70.0)).await.unwrap());
        // Older than what is stored: skipped, not an error.
        assert!(!w.write(row(7, now - 10, 1.0)).await.unwrap());
        w.flush().await.unwrap();
        assert_eq!(store.len(), 50);
        let bad = RowWrite {
            view: "nope".into(),
            ..row(1, now, 1.0)
        };
        assert!(matches!(w.try_push(bad), Err(FeatureError::NotFound(_))));
        let mut wrong = row(1, now, 1.0);
        wrong.features[0].1 = Value {
            val: Some(Val::StringVal("x".into())),
        };
        assert!(matches!(
            w.write(wrong).await,
            Err(FeatureError::InvalidArgument(_))
        ));
        let resp = get_online_features(
            &registry,
            store.as_ref(),
            &OnlineRequest {
                wanted: Wanted::Refs(vec!["user_stats:avg_spend".into()]),
                entities: vec![(
                    "user_id".into(),
                    vec![
                        Value {
                            val: Some(Val::Int64Val(7)),
                        },
                        Value {
                            val: Some(Val::Int64Val(49)),
                        },
                    ],
                )],
                full_feature_names: false,
            },
        )
        .await
        .unwrap();
        let col = &resp.results[1];
        assert_eq!(col.values[0].val, Some(Val::DoubleVal(70.0)));
        assert_eq!(col.values[1].val, Some(Val::DoubleVal(49.0)));
        assert_eq!(col.statuses, vec![FieldStatus::Present as i32; 2]);
        w.close().await;
    }

    #[tokio::test]
    async fn a_full_queue_refuses_pushes() {
        // A store that never answers holds the first batch; the queue then fills.
        #[derive(Debug)]
        struct Stuck;
        impl OnlineStore for Stuck {
            fn read<'a>(
                &'a self,
                _: &'a [crate::store::ReadOp<'a>],
            ) -> crate::store::StoreFuture<'a, Vec<crate::store::StoredRow>> {
                Box::pin(std::future::pending())
            }
            fn write<'a>(&'a self, _: &'a [WriteOp]) -> crate::store::StoreFuture<'a, Vec<bool>> {
                Box::pin(std::future::pending())
            }
            fn ping(&self) -> crate::store::StoreFuture<'_, ()> {
                Box::pin(async { Ok(()) })
            }
            fn name(&self) -> &'static str {
                "stuck"
            }
        }
        let registry = Arc::new(FeatureRegistry::from_toml(REGISTRY, None).unwrap());
        let w = FeatureWriter::start(
            registry,
            Arc::new(Stuck),
            WriterConfig {
                max_batch: 1,
                capacity: 4,
            },
        );
        let mut refused = 0;
        for u in 0..20 {
            if matches!(w.try_push(row(u, 1, 1.0)), Err(FeatureError::Overloaded(_))) {
                refused += 1;
            }
            tokio::task::yield_now().await;
        }
        // One row in the stuck batch and four queued; the rest refused.
        assert_eq!(refused, 15);
    }
}
