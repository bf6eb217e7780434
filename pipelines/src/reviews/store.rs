//! Where processed reviews are written: table `reviews` in PostgreSQL ([`PgStore`], schema in
//! `pipelines/migrations/0001_reviews.sql`, applied at start-up by [`MIGRATOR`]), or memory
//! ([`MemoryStore`], for tests). Writes are upserts keyed by `review_id`, so a redelivered
//! message rewrites its row: the pipeline is idempotent by review id.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::bus::BoxFuture;
use crate::reviews::scoring::{SentimentScore, TopicScore};

/// The pipelines' migrations (`pipelines/migrations`), embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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

/// Writes review rows.
pub trait ReviewStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces the row of `row.review_id`; true when it was new.
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<bool, StoreError>>;
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

const UPSERT: &str = "\
INSERT INTO reviews (review_id, product_id, text, rating, sentiment_label, sentiment_score,
                     sentiment_source, topic_id, topic_label, created_at, processed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_timestamp($10::double precision / 1000.0), now())
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
RETURNING (xmax = 0) AS inserted";

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
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let s = row.sentiment.as_ref();
            let t = row.topic.as_ref();
            let inserted: bool = sqlx::query_scalar(UPSERT)
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
                .fetch_one(&self.pool)
                .await?;
            Ok(inserted)
        })
    }
}

/// Rows in memory; [`MemoryStore::set_down`] makes every write fail (a database outage).
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<HashMap<String, ReviewRow>>,
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
}

impl ReviewStore for MemoryStore {
    fn upsert<'a>(&'a self, row: &'a ReviewRow) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable("memory store is down".into()));
            }
            let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            Ok(rows.insert(row.review_id.clone(), row.clone()).is_none())
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
    }
}
