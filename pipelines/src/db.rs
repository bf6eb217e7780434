//! The pipelines' PostgreSQL schema (`pipelines/migrations`, embedded): `reviews` and
//! `topic_labels` (the reviews pipeline), `transactions` (the product database's table that
//! `infermesh cdc postgres` streams). One migrator for all of them, so every command that
//! migrates one database agrees on its history.

/// The pipelines' migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
