//! The reviews pipeline: product reviews from `reviews.submitted` to a table, a live feed and
//! theme labels.
//!
//! ```text
//! gateway POST /api/v1/reviews --ReviewSubmitted--> EventBus "reviews.submitted"
//!   -> Processor (group "pipeline-reviews", N consumers):
//!        sanitise (llm::sanitise) -> Sentiment/Analyze + Topics/Assign (gRPC, concurrently)
//!        -> upsert into PostgreSQL `reviews` -> Redis Pub/Sub `infermesh:reviews`
//!        -> LLM theme-label job (llm::queue) the first time a topic is seen (claims in
//!           Redis, shared by every pipeline process, or in memory)
//!        -> ack
//!   LLM worker (in process, or `infermesh pipeline llm --database-url`): theme-label result
//!        -> TopicLabelSink -> `topic_labels` + `reviews.topic_label` of the topic -> job ack
//! ```
//!
//! - [`event`]: the message and its validation (always built: the gateway links only this and
//!   the bus, with the crate's default features off);
//! - [`scoring`]: the [`SentimentScorer`](scoring::SentimentScorer) and
//!   [`TopicAssigner`](scoring::TopicAssigner) seams and their gRPC clients;
//! - [`store`]: tables `reviews` and `topic_labels` (sqlx, migrations
//!   `pipelines/migrations/0001_reviews.sql`, `0002_topic_labels.sql`);
//! - [`labels`]: the LLM's theme labels written back ([`TopicLabelSink`](labels::TopicLabelSink),
//!   a sink of the LLM worker's results);
//! - [`live`]: the Pub/Sub live feed;
//! - [`processor`]: at-least-once processing, idempotent by `review_id` (see there for what is
//!   retried, dropped or counted);
//! - [`service`]: `infermesh pipeline reviews` (flags, `start`, `run`).
//!
//! Metrics (names in `infermesh_common::metrics_names`): `infermesh_reviews_processed_total`
//! by `sentiment` (reviews per minute is `60 * sum(rate(...[5m]))`, the sentiment distribution
//! the same counter by label), `infermesh_reviews_topic_total` by `topic` (top themes; ids
//! below 20 are labels of their own, the rest `other`), `infermesh_reviews_failed_total` by
//! `reason`, `infermesh_reviews_processing_seconds`, and the LLM queue's own metrics
//! (`infermesh_llm_job_queue_wait_seconds`...) for the theme-label jobs.

pub mod event;
#[cfg(feature = "reviews")]
pub mod labels;
#[cfg(feature = "reviews")]
pub mod live;
#[cfg(feature = "reviews")]
pub mod processor;
#[cfg(feature = "reviews")]
pub mod scoring;
#[cfg(feature = "reviews")]
pub mod service;
#[cfg(feature = "reviews")]
pub mod store;

pub use event::{ReviewError, ReviewSubmitted, TOPIC, new_review_id};
#[cfg(feature = "reviews")]
pub use service::{ReviewsArgs, ReviewsConfig, ReviewsError, RunningReviews, run, start};
