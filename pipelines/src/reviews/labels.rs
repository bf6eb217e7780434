//! Theme labels written back: when a `theme_label` job finishes, its label (the LLM's
//! human-readable theme of the topic's keywords) becomes the topic's in `topic_labels` and that
//! of every stored review of the topic; reviews stored later take it at insert
//! ([`ReviewStore::set_topic_label`], [`ReviewStore::upsert`]).
//!
//! [`TopicLabelSink`] is a [`JobSink`] of the LLM worker: the worker acknowledges a job only
//! after its sinks accepted the result, so a database that is down makes the job run again
//! (its answer then comes from the LLM cache), never loses the label. `infermesh up` hands it
//! to its in-process worker; `infermesh pipeline llm --database-url` adds it to a worker of its
//! own.

use std::sync::Arc;

use infermesh_common::metrics_names::REVIEWS_TOPIC_LABELS_TOTAL;

use crate::bus::BoxFuture;
use crate::llm::jobs::{JobInput, JobKind, JobOutput};
use crate::llm::queue::QueuedJob;
use crate::llm::sink::{JobOutcome, JobResult, JobSink, SinkError};
use crate::reviews::store::{ReviewStore, TopicLabel};

/// What a finished job means for the topic labels.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelUpdate {
    /// A label to write.
    Write(TopicLabel),
    /// Not a theme-label job: nothing to do, not counted.
    Other,
    /// A theme-label job that carries no label to write (why, for the log): a topic id this
    /// pipeline does not number, or an output that is not a label.
    Skip(String),
    /// A theme-label job that was dead-lettered: nothing to write.
    Failed,
}

/// Reads `result` of `job` as a topic label.
pub fn label_update(job: &QueuedJob, result: &JobResult) -> LabelUpdate {
    if result.kind != JobKind::ThemeLabel.as_str() {
        return LabelUpdate::Other;
    }
    let output = match &result.outcome {
        JobOutcome::Done { output } => output,
        JobOutcome::Failed { .. } => return LabelUpdate::Failed,
    };
    let label = match serde_json::from_value::<JobOutput>(output.clone()) {
        Ok(JobOutput::ThemeLabel { label }) if !label.trim().is_empty() => label,
        _ => return LabelUpdate::Skip("the output is not a theme label".into()),
    };
    let (topic_id, keywords) = match serde_json::from_value::<JobInput>(job.payload.clone()) {
        Ok(JobInput::ThemeLabel { topic_id, keywords }) => (topic_id, keywords),
        _ => return LabelUpdate::Skip("the job's input is not a theme label's".into()),
    };
    // The reviews pipeline queues topic ids as the topic model numbers them; another caller's
    // ids (names, UUIDs) are not topics of `reviews`.
    match topic_id.trim().parse::<i64>() {
        Ok(topic_id) if topic_id >= 0 => LabelUpdate::Write(TopicLabel {
            topic_id,
            label,
            keywords,
        }),
        _ => LabelUpdate::Skip(format!("topic id {topic_id:?} is not a topic number")),
    }
}

/// Writes the labels of finished theme-label jobs to the reviews store.
#[derive(Debug, Clone)]
pub struct TopicLabelSink {
    store: Arc<dyn ReviewStore>,
}

impl TopicLabelSink {
    /// A sink writing to `store`.
    pub fn new(store: Arc<dyn ReviewStore>) -> Self {
        Self { store }
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!(REVIEWS_TOPIC_LABELS_TOTAL, "outcome" => outcome).increment(1);
}

impl JobSink for TopicLabelSink {
    fn deliver<'a>(
        &'a self,
        job: &'a QueuedJob,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            match label_update(job, result) {
                LabelUpdate::Other => Ok(()),
                LabelUpdate::Failed => {
                    counted("failed");
                    Ok(())
                }
                LabelUpdate::Skip(why) => {
                    tracing::debug!(id = %job.id, why, "theme-label result not written");
                    counted("skipped");
                    Ok(())
                }
                LabelUpdate::Write(label) => match self.store.set_topic_label(&label).await {
                    Ok(relabelled) => {
                        tracing::info!(topic = label.topic_id, label = %label.label, relabelled, "topic labelled");
                        counted("written");
                        Ok(())
                    }
                    Err(e) => {
                        counted("error");
                        Err(SinkError(format!(
                            "cannot write the label of topic {}: {e}",
                            label.topic_id
                        )))
                    }
                },
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reviews::store::MemoryStore;
    use serde_json::json;

    fn job(topic_id: &str) -> QueuedJob {
        QueuedJob {
            id: "j1".into(),
            kind: "theme_label".into(),
            payload: json!({"kind": "theme_label", "topic_id": topic_id,
                            "keywords": ["battery", "charge"]}),
            enqueued_at_ms: 0,
            ready_at_ms: 0,
        }
    }

    fn done(kind: &str, output: serde_json::Value) -> JobResult {
        JobResult {
            id: "j1".into(),
            kind: kind.into(),
            attempts: 1,
            outcome: JobOutcome::Done { output },
        }
    }

    #[test]
    fn only_done_theme_labels_of_topic_numbers_are_written() {
        let label = json!({"kind": "theme_label", "label": "Battery life"});
        assert_eq!(
            label_update(&job("3"), &done("theme_label", label.clone())),
            LabelUpdate::Write(TopicLabel {
                topic_id: 3,
                label: "Battery life".into(),
                keywords: vec!["battery".into(), "charge".into()],
            })
        );
        assert!(matches!(
            label_update(&job("t7"), &done("theme_label", label.clone())),
            LabelUpdate::Skip(_)
        ));
        assert!(matches!(
            label_update(&job("-1"), &done("theme_label", label.clone())),
            LabelUpdate::Skip(_)
        ));
        assert!(matches!(
            label_update(
                &job("3"),
                &done(
                    "theme_label",
                    json!({"kind": "fraud_reason", "summary": "x"})
                )
            ),
            LabelUpdate::Skip(_)
        ));
        assert_eq!(
            label_update(&job("3"), &done("fraud_reason", label)),
            LabelUpdate::Other
        );
        let failed = JobResult {
            outcome: JobOutcome::Failed {
                error: "down".into(),
            },
            ..done("theme_label", json!(null))
        };
        assert_eq!(label_update(&job("3"), &failed), LabelUpdate::Failed);
    }

    #[tokio::test]
    async fn a_store_that_is_down_fails_the_delivery() {
        let store = Arc::new(MemoryStore::default());
        let sink = TopicLabelSink::new(store.clone());
        let result = done(
            "theme_label",
            json!({"kind": "theme_label", "label": "Battery life"}),
        );
        store.set_down(true);
        assert!(sink.deliver(&job("3"), &result).await.is_err());
        store.set_down(false);
        sink.deliver(&job("3"), &result).await.unwrap();
        assert_eq!(store.labels()[&3].label, "Battery life");
    }
}
