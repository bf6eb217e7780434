//! The compute core of infermesh's embedded LLM: a GGUF file (llama architecture, e.g.
//! SmolLM2-135M-Instruct Q4_1) run by the crate's own forward pass ([`engine`]: AVX2 Q4_1 and
//! Q8_0 kernels, batched prompts, an in-place KV cache; candle's quantized llama for mixtures of
//! experts and as the tests' reference), a tokenizer built from the
//! file's own metadata (no tokenizer.json ships with a GGUF), its chat template rendered with
//! minijinja, and streaming generation with the options and counters Ollama's API reports.
//!
//! No I/O runtime lives here: `infermesh llm serve` wraps [`LlmModel`] behind a mutex (generation
//! mutates the KV cache) and maps [`LlmError::kind`] to HTTP.
//!
//! - Loading is bounded by [`LoadLimits`]: the GGUF header is walked once by [`gguf::scan`]
//!   with every count and length checked against the limits and the file size before anything is
//!   allocated, and only then handed to candle (whose calls are wrapped so that a panic inside
//!   them is an error, not a crash).
//! - Prompts longer than the context are refused ([`LlmError::PromptTooLong`]), not truncated:
//!   Ollama drops the oldest tokens silently, which hides the problem from the caller.
//! - Ollama's `format` (`"json"` or a JSON schema, [`Format`]) is enforced token by token with
//!   a logit mask from `llguidance` ([`constrain`]).
//! - Embeddings are not offered here: `/api/embed` is served by MiniLM from `infermesh-text`, a
//!   model trained for sentence embeddings, where a chat model's hidden states are not.

pub mod chat;
pub mod constrain;
pub mod engine;
pub mod generate;
pub mod gguf;
mod model;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use constrain::FormatLimits;
pub use generate::{
    DoneReason, Format, GenerateOptions, GenerateOutput, GenerateRequest, Prompt, Timings,
};
pub use gguf::LoadLimits;
pub use model::{LlmModel, ModelInfo, Weights};
pub use tokenizer::GgufTokenizer;

/// What kind of failure an [`LlmError`] is, for a server to map once to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was wrong (bad option, prompt too long, unknown token id, a `format` schema
    /// refused).
    InvalidInput,
    /// The model file is missing, unreadable, hostile or of a kind not supported.
    Unavailable,
    /// A computation failed.
    Internal,
}

/// Why a model could not be loaded or a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A count or length in the file is over its [`LoadLimits`] bound.
    #[error("{what} is {value}, over the limit of {limit}")]
    OverLimit {
        /// What was counted.
        what: String,
        /// The value the file declares.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not a well-formed GGUF file (truncated, wrong magic, inconsistent).
    #[error("malformed GGUF file: {0}")]
    Malformed(String),
    /// The file is well formed but describes something this crate does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A request option or input is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit the context window.
    #[error("the prompt is {tokens} tokens, the context window (num_ctx) is {num_ctx}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// The effective context window.
        num_ctx: usize,
    },
    /// candle failed while loading weights or computing.
    #[error("compute: {0}")]
    Compute(#[from] candle_core::Error),
}

impl LlmError {
    /// The kind of failure, for mapping to a protocol status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) | Self::PromptTooLong { .. } => ErrorKind::InvalidInput,
            Self::Compute(_) | Self::Tokenizer(_) | Self::Template(_) => ErrorKind::Internal,
            Self::Io { .. }
            | Self::OverLimit { .. }
            | Self::Malformed(_)
            | Self::Unsupported(_) => ErrorKind::Unavailable,
        }
    }
}

/// Runs `f`, turning a panic inside a dependency (candle on a hostile tensor table, say) into
/// [`LlmError::Malformed`]. Our own code does not panic on input; this is a second fence.
pub(crate) fn no_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, LlmError>,
) -> Result<T, LlmError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(LlmError::Malformed(format!("{what}: {message}")))
        }
    }
}
