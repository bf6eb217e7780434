//! Review sentiment for the platform: positive / negative (/ neutral, as the training data
//! names its labels) with a score, and which model answered.
//!
//! Two models answer, as the review-analytics spec asks: an LLM's zero-shot answer over
//! Ollama's API ([`zeroshot`]: the sanitised review, the labels as a JSON-schema enum) when
//! it comes in time, else the local classifier `infermesh train sentiment` writes (a
//! class-weighted probe on frozen all-MiniLM-L6-v2 sentence embeddings blended with a TF-IDF
//! head; the text family runs it). With the `serving` feature, [`serving`] is the family
//! behind the inference server's seam: platform `sentiment`, KServe V2 and the typed
//! `infermesh.v1.Sentiment/Analyze`.

pub mod zeroshot;

#[cfg(feature = "serving")]
pub mod serving;
