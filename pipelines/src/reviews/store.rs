//! Where processed reviews are written: table `reviews` in PostgreSQL ([`PgStore`], schema in
//! `pipelines/migrations/0001_reviews.sql`, applied at start-up by [`MIGRATOR`]), or memory
//! ([`MemoryStore`], for tests). Writes are upserts keyed by `review_id`, so a redelivered
//! message rewrites its row: the pipeline is idempotent by review id.
//!
//! Theme labels (`pipelines/migrations/0002_topic_labels.sql`): [`ReviewStore::set_topic_label`]
//! records the LLM's label of a topic in `topic_labels` and sets `reviews.topic_label` of the
//! topic's rows; an upsert of a review whose topic has a label stores that label instead of the
//! topic model's. Both take a transaction-level advisory lock on the topic (the label writer
//! exclusive, a review shared), so a review written while its topic is labelled either sees the
//! label at insert or is relabelled by the writer: never left with the old label.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::bus::BoxFuture;
use crate::reviews::scoring::{SentimentScore, TopicScore};

/// The pipelines' migrations (`pipelines/migrations`), embedded in the binary.
pub use crate::db::MIGRATOR;

/// One row of `reviews`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRow {
    /// Primary key.
    pub review_id: String,
    /// The product.
    pub product_id: String,
    /// The text as submitted (not the sanitised copy the models saw).
    pub text: String,
    /// Stars, 1..=5.
    pub rating: Option<i16>,
    /// Sentiment, unless the model refused the text.
    pub sentiment: Option<SentimentScore>,
    /// Topic, unless the model refused the text.
    pub topic: Option<TopicScore>,
    /// When it was submitted, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A topic's label from the LLM (a finished `theme_label` job).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicLabel {
    /// The topic model's id.
    pub topic_id: i64,
    /// The LLM's theme.
    pub label: String,
    /// The keywords it was shown.
    pub keywords: Vec<String>,
}

/// What an upsert stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The row did not exist before.
    pub new: bool,
    /// The row's `topic_label`: the topic's LLM label when it has one, else the topic model's.
    pub topic_label: Option<String>,
    /// The topic has an LLM label (its label job is done).
    pub labelled: bool,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A bad database URL or schema name.
    #[error("database configuration: {0}")]
    Config(String),
    /// The database refused or did not answer.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The (memory) store is switched off.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Writes review rows and topic labels.
pub trait ReviewStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces the row of `row.review_id` (its topic's LLM label, if any, in place
    /// of the topic model's).
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<Stored, StoreError>>;

    /// Records `label` as its topic's and sets it on the topic's stored reviews; returns how
    /// many reviews changed.
    fn set_topic_label<'a>(
        &'a self,
        label: &'a TopicLabel,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// `reviews` in PostgreSQL, through a connection pool that connects lazily.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    schema: Option<String>,
}

/// Whether `s` is a plain SQL identifier (letters, digits, `_`, not starting with a digit).
fn plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

// $9, the topic model's label, is kept only while the topic has no LLM label.
const UPSERT: &str = "\
WITH llm AS (SELECT label FROM topic_labels WHERE topic_id = $8)
INSERT INTO reviews (review_id, product_id, text, rating, sentiment_label, sentiment_score,
                     sentiment_source, topic_id, topic_label, created_at, processed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE((SELECT label FROM llm), $9),
        to_timestamp($10::double precision / 1000.0), now())
ON CONFLICT (review_id) DO UPDATE SET
    product_id = EXCLUDED.product_id,
    text = EXCLUDED.text,
    rating = EXCLUDED.rating,
    sentiment_label = EXCLUDED.sentiment_label,
    sentiment_score = EXCLUDED.sentiment_score,
    sentiment_source = EXCLUDED.sentiment_source,
    topic_id = EXCLUDED.topic_id,
    topic_label = EXCLUDED.topic_label,
    created_at = EXCLUDED.created_at,
    processed_at = now()
RETURNING (xmax = 0) AS inserted, topic_label, EXISTS (SELECT 1 FROM llm) AS labelled";

// The advisory lock of topic $1, keyed by the current schema too (each test or tenant schema
// locks its own topics).
const LOCK_TOPIC_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(hashtextextended(\
    'infermesh.topic_labels:' || current_schema() || ':' || $1::text, 0))";
const LOCK_TOPIC: &str = "SELECT pg_advisory_xact_lock(hashtextextended(\
    'infermesh.topic_labels:' || current_schema() || ':' || $1::text, 0))";

const SET_LABEL: &str = "\
INSERT INTO topic_labels (topic_id, label, keywords, labelled_at) VALUES ($1, $2, $3, now())
ON CONFLICT (topic_id) DO UPDATE SET
    label = EXCLUDED.label, keywords = EXCLUDED.keywords, labelled_at = now()";

// processed_at is left alone: a label is not a new processing of the review.
const RELABEL: &str = "\
UPDATE reviews SET topic_label = $2 WHERE topic_id = $1 AND topic_label IS DISTINCT FROM $2";

/// Most keywords stored with a label.
const MAX_LABEL_KEYWORDS: usize = 50;

impl PgStore {
    /// A pool on `url` (`postgres://user@host:port/db`), its tables in `schema` when given
    /// (created by [`PgStore::migrate`] if missing; `search_path` of every connection), else
    /// in the user's default schema. Nothing connects until the first query; a query waits at
    /// most `acquire_timeout` for a connection. Call inside a Tokio runtime (the pool's
    /// maintenance task starts here).
    pub fn connect_lazy(
        url: &str,
        schema: Option<&str>,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // sqlx reads any scheme as PostgreSQL: refuse the others here.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Config(
                "not a PostgreSQL URL (postgres://user@host:port/db)".into(),
            ));
        }
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("not a PostgreSQL URL: {e}")))?;
        if let Some(s) = schema {
            if !plain_identifier(s) {
                return Err(StoreError::Config(format!(
                    "schema '{s}' must be letters, digits and _ (at most 63)"
                )));
            }
            opts = opts.options([("search_path", s)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            schema: schema.map(str::to_string),
        })
    }

    /// Creates the schema (if one is configured) and applies the migrations not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.schema {
            // `s` is a checked plain identifier.
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .execute(&self.pool)
                .await?;
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The pool (queries of tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl ReviewStore for PgStore {
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            let s = row.sentiment.as_ref();
            let t = row.topic.as_ref();
            let mut tx = self.pool.begin().await?;
            if let Some(t) = t {
                // Shared: reviews of one topic do not wait for each other, only for its label.
                sqlx::query(LOCK_TOPIC_SHARED)
                    .bind(t.id)
                    .execute(&mut *tx)
                    .await?;
            }
            // A statement after the lock: in READ COMMITTED it sees a label committed while
            // this transaction waited.
            let (new, topic_label, labelled): (bool, Option<String>, bool) = sqlx::query_as(UPSERT)
                .bind(&row.review_id)
                .bind(&row.product_id)
                .bind(&row.text)
                .bind(row.rating)
                .bind(s.map(|s| s.label.as_str()))
                .bind(s.map(|s| s.score))
                .bind(s.map(|s| s.source.as_str()))
                .bind(t.map(|t| t.id))
                .bind(t.map(|t| t.label.as_str()))
                .bind(row.created_at_ms)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Stored {
                new,
                topic_label,
                labelled,
            })
        })
    }

    fn set_topic_label<'a>(
        &'a self,
        label: &'a TopicLabel,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let keywords: Vec<&str> = label
                .keywords
                .iter()
                .take(MAX_LABEL_KEYWORDS)
                .map(String::as_str)
                .collect();
            let mut tx = self.pool.begin().await?;
            sqlx::query(LOCK_TOPIC)
                .bind(label.topic_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(SET_LABEL)
                .bind(label.topic_id)
                .bind(&label.label)
                .bind(&keywords)
                .execute(&mut *tx)
                .await?;
            let relabelled = sqlx::query(RELABEL)
                .bind(label.topic_id)
                .bind(&label.label)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(relabelled)
        })
    }
}

/// Rows and topic labels in memory; [`MemoryStore::set_down`] makes every write fail (a
/// database outage).
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<HashMap<String, ReviewRow>>,
    labels: Mutex<HashMap<i64, TopicLabel>>,
    down: std::sync::atomic::AtomicBool,
}

impl MemoryStore {
    /// The rows, by review id.
    pub fn rows(&self) -> HashMap<String, ReviewRow> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes writes fail (`true`) or succeed again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The topic labels, by topic id.
    pub fn labels(&self) -> HashMap<i64, TopicLabel> {
        self.labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        Ok(())
    }
}

impl ReviewStore for MemoryStore {
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            self.check_up()?;
            // Labels before rows, as `set_topic_label` takes them: one order, no deadlock.
            let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
            let llm = row
                .topic
                .as_ref()
                .and_then(|t| labels.get(&t.id))
                .map(|l| l.label.clone());
            let mut row = row.clone();
            if let (Some(t), Some(l)) = (row.topic.as_mut(), &llm) {
                t.label = l.clone();
            }
            let topic_label = row.topic.as_ref().map(|t| t.label.clone());
            let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            let new = rows.insert(row.review_id.clone(), row).is_none();
            Ok(Stored {
                new,
                topic_label,
                labelled: llm.is_some(),
            })
        })
    }

    fn set_topic_label<'a>(
        &'a self,
        label: &'a TopicLabel,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.check_up()?;
            let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
            labels.insert(label.topic_id, label.clone());
            let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed = 0;
            for t in rows.values_mut().filter_map(|r| r.topic.as_mut()) {
                if t.id == label.topic_id && t.label != label.label {
                    t.label = label.label.clone();
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_plain_schema_names_are_accepted() {
        for ok in ["reviews", "t_1", "_x"] {
            assert!(plain_identifier(ok), "{ok}");
        }
        for bad in ["", "1x", "a-b", "a;drop table x", "a b", &"x".repeat(64)] {
            assert!(!plain_identifier(bad), "{bad}");
        }
        let err = PgStore::connect_lazy(
            "postgres://u@127.0.0.1/db",
            Some("x;y"),
            1,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)));
        assert!(matches!(
            PgStore::connect_lazy("mysql://x", None, 1, Duration::from_secs(1)),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn the_migration_creates_the_reviews_table() {
        let sql: String = MIGRATOR
            .iter()
            .map(|m| m.sql.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS reviews"));
        assert!(sql.contains("review_id        TEXT PRIMARY KEY"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS topic_labels"));
        assert!(sql.contains("topic_id    BIGINT PRIMARY KEY"));
    }

    #[tokio::test]
    async fn a_label_relabels_stored_rows_and_is_taken_at_insert() {
        use crate::reviews::scoring::TopicScore;
        let store = MemoryStore::default();
        let row = |id: &str, topic: i64| ReviewRow {
            review_id: id.into(),
            product_id: "p".into(),
            text: "t".into(),
            rating: None,
            sentiment: None,
            topic: Some(TopicScore {
                id: topic,
                label: format!("{topic}_model_label"),
                keywords: vec![],
            }),
            created_at_ms: 0,
        };
        let first = store.upsert(&row("a", 1)).await.unwrap();
        assert_eq!(
            first,
            Stored {
                new: true,
                topic_label: Some("1_model_label".into()),
                labelled: false
            }
        );
        store.upsert(&row("b", 2)).await.unwrap();
        let label = TopicLabel {
            topic_id: 1,
            label: "Battery life".into(),
            keywords: vec!["battery".into()],
        };
        assert_eq!(store.set_topic_label(&label).await.unwrap(), 1);
        assert_eq!(store.set_topic_label(&label).await.unwrap(), 0, "unchanged");
        let rows = store.rows();
        assert_eq!(rows["a"].topic.as_ref().unwrap().label, "Battery life");
        assert_eq!(rows["b"].topic.as_ref().unwrap().label, "2_model_label");
        let later = store.upsert(&row("c", 1)).await.unwrap();
        assert_eq!(
            (later.topic_label.as_deref(), later.labelled),
            (Some("Battery life"), true)
        );
        store.set_down(true);
        assert!(store.set_topic_label(&label).await.is_err());
    }
}
