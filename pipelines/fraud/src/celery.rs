//! Email jobs for the platform's Celery workers: one task per alert, queued on Redis in Celery's
//! message protocol v2 as kombu's Redis transport stores it. A JSON envelope is `LPUSH`ed onto
//! the queue's list: `body` is the base64 of `[args, kwargs, embed]`; `headers` carry `task`,
//! `id`, `root_id` and the rest of protocol v2; `properties` carry the delivery info of
//! exchange and routing key = the queue. An unmodified Celery worker with a task of that name
//! (`--celery-task`, one argument: the alert as a dict) runs it.
//!
//! It is written here because no maintained Rust crate produces Celery's wire format on Redis.
//! Enqueueing never holds an alert back: [`CeleryQueue::enqueue`] spawns the `LPUSH` and returns.
//! Jobs waiting on Redis are bounded (`MAX_PENDING`); past that, or when Redis fails, the job is
//! dropped and counted (`infermesh_fraud_email_jobs_total{outcome}`). The alert itself is on
//! `fraud.alerts` either way. The task id is the alert id, so a worker can tell a repeated
//! alert's job from a new one.

use std::sync::Arc;

use base64::Engine as _;
use infermesh_common::metrics_names::FRAUD_EMAIL_JOBS_TOTAL;
use tokio::sync::Semaphore;

use crate::alerts::Alert;

/// Most email jobs on their way to Redis at once.
pub const MAX_PENDING: usize = 1024;

/// A Celery queue on Redis.
#[derive(Clone)]
pub struct CeleryQueue {
    conn: redis::aio::ConnectionManager,
    queue: String,
    task: String,
    pending: Arc<Semaphore>,
}

impl std::fmt::Debug for CeleryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryQueue")
            .field("queue", &self.queue)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// The kombu Redis envelope of one protocol-v2 task message calling `task(*args)` on `queue`.
pub fn envelope(task: &str, task_id: &str, args: &serde_json::Value, queue: &str) -> String {
    let args_repr = args.to_string();
    let body = serde_json::json!([
        args,
        {},
        {"callbacks": null, "errbacks": null, "chain": null, "chord": null}
    ]);
    let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    serde_json::json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": task_id,
            "parent_id": null,
            "argsrepr": args_repr.chars().take(1024).collect::<String>(),
            "kwargsrepr": "{}",
            "origin": "infermesh-pipeline-fraud",
            "ignore_result": true,
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid_v4(),
        },
    })
    .to_string()
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl CeleryQueue {
    /// Jobs for `task` on `queue` of the Redis behind `conn`.
    pub fn new(conn: redis::aio::ConnectionManager, queue: &str, task: &str) -> Self {
        Self {
            conn,
            queue: queue.to_string(),
            task: task.to_string(),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// Queues the email job of `alert` without waiting for Redis.
    pub fn enqueue(&self, alert: &Alert) {
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            metrics::counter!(FRAUD_EMAIL_JOBS_TOTAL, "outcome" => "dropped_full").increment(1);
            return;
        };
        let args = serde_json::json!([alert]);
        let msg = envelope(&self.task, &alert.alert_id, &args, &self.queue);
        let (mut conn, queue) = (self.conn.clone(), self.queue.clone());
        tokio::spawn(async move {
            let r: Result<i64, _> = redis::cmd("LPUSH")
                .arg(&queue)
                .arg(msg)
                .query_async(&mut conn)
                .await;
            drop(permit);
            let outcome = match r {
                Ok(_) => "queued",
                Err(e) => {
                    tracing::warn!(error = %e, "email job not queued");
                    "failed"
                }
            };
            metrics::counter!(FRAUD_EMAIL_JOBS_TOTAL, "outcome" => outcome).increment(1);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_protocol_two_as_kombu_stores_it() {
        let args = serde_json::json!([{"alert_id": "a1", "probability": 0.9}]);
        let v: serde_json::Value =
            serde_json::from_str(&envelope("fraud.send_alert_email", "a1", &args, "celery"))
                .unwrap();
        assert_eq!(v["headers"]["task"], "fraud.send_alert_email");
        assert_eq!(v["headers"]["id"], "a1");
        assert_eq!(v["headers"]["lang"], "py");
        assert_eq!(v["properties"]["body_encoding"], "base64");
        assert_eq!(v["properties"]["delivery_info"]["routing_key"], "celery");
        let body = base64::engine::general_purpose::STANDARD
            .decode(v["body"].as_str().unwrap())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0], args);
        assert_eq!(body[1], serde_json::json!({}));
        assert!(body[2]["callbacks"].is_null());
    }
}
