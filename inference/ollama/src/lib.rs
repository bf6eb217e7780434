//! Ollama's HTTP API in infermesh: the wire types ([`api`]), a client ([`OllamaClient`]) that
//! the side channel and the sentiment fallback use against a real Ollama or the embedded
//! server alike, the [`sanitise`]r and, with the `cache` feature, the output [`cache`] every
//! such caller puts in front of its calls, and, with the `server` feature, `infermesh llm
//! serve` ([`server`]): the embedded GGUF LLM and MiniLM embeddings behind the same API.

pub mod api;
#[cfg(feature = "cache")]
pub mod cache;
pub mod client;
pub mod sanitise;
#[cfg(feature = "server")]
pub mod server;

pub use client::{ClientError, DEFAULT_OLLAMA_URL, OLLAMA_URL_ENV, OllamaClient};
