//! Theme labels written back, against the real PostgreSQL: a finished theme-label job's label
//! lands in `topic_labels` and on the topic's stored reviews, a review stored later takes it at
//! insert, a label written while reviews of its topic are being stored leaves none with the old
//! label, and the LLM worker (a stub LLM) writes the label before it acknowledges the job; a
//! database that is down makes the job retry, never drops the label silently.
//!
//! PostgreSQL: `INFERMESH_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres),
//! each test in its own schema (dropped at the end).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use infermesh_pipelines::llm::jobs::JobInput;
use infermesh_pipelines::llm::queue::QueuedJob;
use infermesh_pipelines::llm::sink::{JobOutcome, JobResult, JobSink};
use infermesh_pipelines::llm::worker::{LlmWorkerArgs, start};
use infermesh_pipelines::reviews::labels::TopicLabelSink;
use infermesh_pipelines::reviews::scoring::TopicScore;
use infermesh_pipelines::reviews::store::{PgStore, ReviewRow, ReviewStore, TopicLabel};
use serde_json::json;

fn database_url() -> String {
    std::env::var("INFERMESH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A schema of one test, dropped by [`Schema::drop_now`].
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Self(format!("labels_test_{}", uuid::Uuid::new_v4().simple()))
    }

    /// A migrated store in this schema.
    async fn store(&self, connections: u32) -> PgStore {
        let store = PgStore::connect_lazy(
            &database_url(),
            Some(&self.0),
            connections,
            Duration::from_secs(10),
        )
        .unwrap();
        store.migrate().await.unwrap_or_else(|e| {
            panic!(
                "cannot migrate PostgreSQL at {} ({e}): set INFERMESH_TEST_DATABASE_URL to a \
                 database this user may create schemas in",
                database_url()
            )
        });
        store
    }

    async fn drop_now(&self) {
        let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .execute(&pool)
            .await
            .unwrap();
    }
}

fn review(id: &str, topic: i64) -> ReviewRow {
    ReviewRow {
        review_id: id.into(),
        product_id: "p1".into(),
        text: format!("review {id}"),
        rating: Some(4),
        sentiment: None,
        topic: Some(TopicScore {
            id: topic,
            label: format!("{topic}_battery_charge"),
            keywords: vec!["battery".into(), "charge".into()],
        }),
        created_at_ms: 1_793_872_800_000,
    }
}

fn theme_job(topic_id: &str) -> QueuedJob {
    QueuedJob {
        id: format!("job-{topic_id}"),
        kind: "theme_label".into(),
        payload: serde_json::to_value(JobInput::ThemeLabel {
            topic_id: topic_id.into(),
            keywords: vec!["battery".into(), "charge".into(), "hours".into()],
        })
        .unwrap(),
        enqueued_at_ms: 0,
        ready_at_ms: 0,
    }
}

fn done(job: &QueuedJob, label: &str) -> JobResult {
    JobResult {
        id: job.id.clone(),
        kind: job.kind.clone(),
        attempts: 1,
        outcome: JobOutcome::Done {
            output: json!({"kind": "theme_label", "label": label}),
        },
    }
}

/// (review_id, topic_label) of every row, by id.
async fn labels(store: &PgStore) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT review_id, topic_label FROM reviews ORDER BY review_id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_is_written_back_and_taken_at_insert() {
    let schema = Schema::new();
    let store = schema.store(4).await;
    for (id, topic) in [("a", 0), ("b", 0), ("c", 1)] {
        let stored = store.upsert(&review(id, topic)).await.unwrap();
        assert!(stored.new && !stored.labelled, "{stored:?}");
        assert_eq!(stored.topic_label, Some(format!("{topic}_battery_charge")));
    }
    let sink = TopicLabelSink::new(Arc::new(store.clone()));
    let job = theme_job("0");
    sink.deliver(&job, &done(&job, "Battery life"))
        .await
        .unwrap();
    assert_eq!(
        labels(&store).await,
        vec![
            ("a".into(), Some("Battery life".into())),
            ("b".into(), Some("Battery life".into())),
            ("c".into(), Some("1_battery_charge".into())),
        ]
    );
    let (label, keywords, fresh): (String, Vec<String>, bool) = sqlx::query_as(
        "SELECT label, keywords, labelled_at > now() - interval '1 minute' FROM topic_labels \
         WHERE topic_id = 0",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((label.as_str(), fresh), ("Battery life", true));
    assert_eq!(keywords, ["battery", "charge", "hours"]);
    // A review stored later (and a redelivery) takes the label at insert.
    let later = store.upsert(&review("d", 0)).await.unwrap();
    assert_eq!(
        (later.new, later.topic_label.as_deref(), later.labelled),
        (true, Some("Battery life"), true)
    );
    let again = store.upsert(&review("a", 0)).await.unwrap();
    assert_eq!(
        (again.new, again.topic_label.as_deref()),
        (false, Some("Battery life"))
    );
    // A newer label replaces it everywhere; jobs that carry no topic number write nothing.
    sink.deliver(&job, &done(&job, "Battery and charging"))
        .await
        .unwrap();
    let other = theme_job("t7");
    sink.deliver(&other, &done(&other, "Ignored"))
        .await
        .unwrap();
    let failed = JobResult {
        outcome: JobOutcome::Failed {
            error: "the LLM is down".into(),
        },
        ..done(&job, "x")
    };
    sink.deliver(&job, &failed).await.unwrap();
    let rows = labels(&store).await;
    assert_eq!(rows.len(), 4);
    for (id, label) in &rows {
        let want = if id == "c" {
            "1_battery_charge"
        } else {
            "Battery and charging"
        };
        assert_eq!(label.as_deref(), Some(want), "{id}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM topic_labels")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    schema.drop_now().await;
}

/// Reviews of a topic stored while its label is written: each either reads the label at insert
/// or is relabelled by the writer (the topic's advisory lock orders them); none keeps the
/// topic model's label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_written_while_reviews_arrive_reaches_every_row() {
    let schema = Schema::new();
    let store = schema.store(8).await;
    let label = TopicLabel {
        topic_id: 5,
        label: "Screen quality".into(),
        keywords: vec!["screen".into()],
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..80 {
        let writer = store.clone();
        tasks.spawn(async move {
            writer
                .upsert(&review(&format!("r{i:03}"), 5))
                .await
                .unwrap();
        });
        if i == 40 {
            let (store, label) = (store.clone(), label.clone());
            tasks.spawn(async move {
                store.set_topic_label(&label).await.unwrap();
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let rows = labels(&store).await;
    assert_eq!(rows.len(), 80);
    let stale: Vec<_> = rows
        .iter()
        .filter(|(_, l)| l.as_deref() != Some("Screen quality"))
        .collect();
    assert!(stale.is_empty(), "rows left with the old label: {stale:?}");
    schema.drop_now().await;
}

/// The LLM worker (stub LLM) writes a finished theme-label job's label into PostgreSQL before
/// it acknowledges and publishes the result; with the database down the job is retried and
/// then dead-lettered, counted as a sink error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_writes_the_label_before_acknowledging_the_job() {
    let schema = Schema::new();
    let store = schema.store(2).await;
    store.upsert(&review("a", 3)).await.unwrap();
    let llm = common::stub_llm(200, common::chat_answer("Label: \"Battery life\".")).await;
    let mut cfg = LlmWorkerArgs {
        ollama_url: llm.url(),
        job_timeout_ms: 2000,
        backoff_ms: 50,
        database_url: Some(database_url()),
        database_schema: Some(schema.0.clone()),
        ..LlmWorkerArgs::default()
    }
    .validate()
    .unwrap();
    cfg.metrics_addr = None;
    let worker = start(cfg, None).await.unwrap();
    let id = worker
        .enqueue(&JobInput::ThemeLabel {
            topic_id: "3".into(),
            keywords: vec!["battery".into(), "charge".into()],
        })
        .await
        .unwrap();
    // The in-process result is published after the label sink wrote: no polling needed.
    let result = worker
        .results
        .wait(&id, Duration::from_secs(20))
        .await
        .expect("the job finishes");
    assert!(
        matches!(result.outcome, JobOutcome::Done { .. }),
        "{result:?}"
    );
    assert_eq!(
        labels(&store).await,
        vec![("a".into(), Some("Battery life".into()))]
    );
    worker.shutdown().await;

    // The database is down: the sink refuses, the job is retried, then dead-lettered.
    let dead_db = format!("postgres://postgres@{}/postgres", common::dead_addr());
    let down = PgStore::connect_lazy(&dead_db, None, 1, Duration::from_millis(300)).unwrap();
    let mut cfg = LlmWorkerArgs {
        ollama_url: llm.url(),
        job_timeout_ms: 2000,
        max_attempts: 2,
        backoff_ms: 50,
        ..LlmWorkerArgs::default()
    }
    .validate()
    .unwrap();
    cfg.metrics_addr = None;
    let sink: Arc<dyn JobSink> = Arc::new(TopicLabelSink::new(Arc::new(down)));
    let worker = start(cfg, Some(sink)).await.unwrap();
    let sink_errors = || {
        common::metric_sum(
            &common::metrics_text(),
            "infermesh_llm_job_errors_total",
            &["kind=\"theme_label\"", "error=\"sink\""],
        )
    };
    let before = sink_errors();
    let id = worker
        .enqueue(&JobInput::ThemeLabel {
            topic_id: "4".into(),
            keywords: vec!["screen".into()],
        })
        .await
        .unwrap();
    let result = worker
        .results
        .wait(&id, Duration::from_secs(20))
        .await
        .expect("the job ends");
    let JobOutcome::Failed { error } = &result.outcome else {
        panic!("{result:?}");
    };
    assert!(error.contains("label of topic 4"), "{error}");
    assert_eq!(result.attempts, 2);
    assert_eq!(sink_errors() - before, 2.0);
    worker.shutdown().await;
    schema.drop_now().await;
}
