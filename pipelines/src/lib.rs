//! infermesh's pipelines: the event-bus seam every pipeline consumes and produces through
//! ([`bus`]), the reviews pipeline ([`reviews`]: `reviews.submitted` -> sentiment and topic ->
//! PostgreSQL, live feed, theme labels), and the LLM side channel ([`llm`]): sanitised prompts,
//! an output cache, a job queue and the worker `infermesh pipeline llm` runs.
//!
//! Streaming on Kafka (feature `kafka`): the Kafka bus and `infermesh kafka init` ([`kafka`]),
//! and the consumer-group loop every streaming pipeline runs in ([`runtime`]: at least once,
//! idempotent by message id, dead letters, backpressure, metrics, trace context).
//!
//! Features: `llm` (the side channel; links the LLM client), `reviews` (the processor;
//! PostgreSQL, gRPC), both default, and `kafka` (librdkafka). Without them the crate is the bus
//! and the event types, which is all the gateway links.

pub mod bus;
#[cfg(feature = "postgres")]
pub mod db;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "llm")]
pub mod llm;
pub mod reviews;
#[cfg(feature = "kafka")]
pub mod runtime;
