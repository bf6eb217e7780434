//! The sanitiser in front of every LLM call, as the side channel uses it: the one the
//! Ollama client crate defines ([`infermesh_ollama::sanitise`]), with the GGUF token counter
//! (SmolLM2's own tokenizer) that the worker's `--tokenizer` loads.

pub use infermesh_ollama::sanitise::*;
