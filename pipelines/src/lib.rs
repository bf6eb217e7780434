//! infermesh's pipelines: the event-bus seam every pipeline consumes and produces through
//! ([`bus`]), the reviews pipeline ([`reviews`]: `reviews.submitted` -> sentiment and topic ->
//! PostgreSQL, live feed, theme labels), and the LLM side channel ([`llm`]): sanitised prompts,
//! an output cache, a job queue and the worker `infermesh pipeline llm` runs.
//!
//! Features: `llm` (the side channel; links the LLM client) and `reviews` (the processor;
//! PostgreSQL, gRPC), both default. Without them the crate is the bus and the event types,
//! which is all the gateway links.

pub mod bus;
#[cfg(feature = "llm")]
pub mod llm;
pub mod reviews;
