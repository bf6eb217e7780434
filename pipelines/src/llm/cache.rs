//! The LLM output cache, as the side channel uses it: the one the Ollama client crate defines
//! ([`infermesh_ollama::cache`]), shared with the sentiment family's zero-shot arm. The
//! worker's caches count under `source="jobs"` ([`CacheConfig::default`]).

pub use infermesh_ollama::cache::*;
