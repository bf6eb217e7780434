//! The text family's config keys (`engine`, `precision`, `quantize`, TEI's token limits),
//! with their defaults and bounds; see the parent module's doc for the `config.toml` form.

use infermesh_inference::family_parameters;
use infermesh_registry::{ModelConfig, check_max};
use serde::Deserialize;

/// Which engine runs a text model's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEngine {
    /// For the architectures the exported graph covers (BERT encoders and BERT classifiers):
    /// OpenVINO in bf16 on a CPU with native bf16 (AVX-512 BF16 or AMX) when its library
    /// loads, else ONNX Runtime when its library loads; candle otherwise. OpenVINO bf16
    /// measured ~1.6x ONNX Runtime f32, and ONNX Runtime ~2x candle (BENCHMARKS.md); with
    /// `quantize = "int8"` or `precision = "f32"`, ONNX Runtime comes first.
    #[default]
    Auto,
    /// candle (pure Rust; every text platform).
    Candle,
    /// ONNX Runtime (`ort`, graph exported from the safetensors at load); an error when the
    /// library is missing.
    Onnxruntime,
    /// OpenVINO (`openvino`, the same exported graph); an error when the library is missing.
    Openvino,
}

impl TextEngine {
    /// The engine name as configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEngine::Auto => "auto",
            TextEngine::Candle => "candle",
            TextEngine::Onnxruntime => "onnxruntime",
            TextEngine::Openvino => "openvino",
        }
    }
}

/// The arithmetic of a text model's matrix products (`precision = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPrecision {
    /// bf16 where the engine and the CPU compute it natively (OpenVINO on AVX-512 BF16 or
    /// AMX), f32 elsewhere.
    #[default]
    Auto,
    /// bf16 products, f32 accumulation (OpenVINO only; embeddings within cosine ~0.99995 of
    /// the f64 reference for MiniLM); an error on a CPU without native bf16.
    Bf16,
    /// f32 throughout.
    F32,
}

/// Largest `max_batch_tokens`: 1,048,576 padded tokens per forward pass.
pub const MAX_BATCH_TOKENS_LIMIT: usize = 1 << 20;
/// Largest `max_batch_requests`: 65,536 texts per batch.
pub const MAX_BATCH_REQUESTS_LIMIT: usize = 1 << 16;
/// Largest `max_queue_tokens`: 67,108,864 tokens admitted at once.
pub const MAX_QUEUE_TOKENS_LIMIT: usize = 1 << 26;
/// Largest `max_client_batch_size`: 65,536 texts per request.
pub const MAX_CLIENT_BATCH_SIZE_LIMIT: usize = 1 << 16;
/// Largest `intra_op_threads`: 1024.
pub const INTRA_OP_THREADS_LIMIT: usize = 1024;

/// The text family's keys as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextKeys {
    max_batch_tokens: Option<usize>,
    max_batch_requests: Option<usize>,
    max_queue_tokens: Option<usize>,
    max_client_batch_size: Option<usize>,
    engine: Option<TextEngine>,
    intra_op_threads: Option<usize>,
    quantize: Option<String>,
    precision: Option<TextPrecision>,
}

/// Token-budget batching of a text model (TEI's `max_batch_tokens` / `max_batch_requests` /
/// `max_client_batch_size`) and the engine that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Largest batch in tokens (a forward pass holds at most this many padded tokens).
    pub max_batch_tokens: usize,
    /// Largest batch in texts.
    pub max_batch_requests: usize,
    /// Tokens admitted (queued or running) at once; past it requests are refused.
    pub max_queue_tokens: usize,
    /// Most texts in one request.
    pub max_client_batch_size: usize,
    /// The engine.
    pub engine: TextEngine,
    /// ONNX Runtime intra-op threads (0: one per core).
    pub intra_op_threads: usize,
    /// ONNX Runtime only: int8 dynamic quantisation of the encoder's linear layers
    /// (`quantize = "int8"`; faster, embeddings no longer equal the f32 model's).
    pub int8: bool,
    /// The arithmetic (`precision`).
    pub precision: TextPrecision,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_queue_tokens: 262_144,
            max_client_batch_size: 512,
            engine: TextEngine::Auto,
            intra_op_threads: 0,
            int8: false,
            precision: TextPrecision::Auto,
        }
    }
}

impl TextLimits {
    /// Reads the text family's keys of `config` (defaults for absent ones), refusing unknown
    /// keys, sizes past their bounds and combinations no engine runs.
    pub fn parse(config: &ModelConfig) -> Result<Self, String> {
        let t: TextKeys = family_parameters(config)?;
        let d = TextLimits::default();
        let int8 = match t.quantize.as_deref() {
            None | Some("none") => false,
            Some("int8") => {
                if matches!(t.engine, Some(TextEngine::Candle | TextEngine::Openvino))
                    || t.precision == Some(TextPrecision::Bf16)
                {
                    return Err("quantize = \"int8\" needs the onnxruntime engine (and f32)".into());
                }
                true
            }
            Some(other) => {
                return Err(format!(
                    "quantize {other:?} is not supported (\"none\", \"int8\")"
                ));
            }
        };
        let precision = match (t.precision, t.engine) {
            (Some(TextPrecision::Bf16), Some(TextEngine::Candle | TextEngine::Onnxruntime)) => {
                return Err("precision = \"bf16\" needs the openvino engine (or \"auto\")".into());
            }
            (p, _) => p.unwrap_or(d.precision),
        };
        let limits = Self {
            max_batch_tokens: t.max_batch_tokens.unwrap_or(d.max_batch_tokens),
            max_batch_requests: t.max_batch_requests.unwrap_or(d.max_batch_requests),
            max_queue_tokens: t.max_queue_tokens.unwrap_or(d.max_queue_tokens),
            max_client_batch_size: t.max_client_batch_size.unwrap_or(d.max_client_batch_size),
            engine: t.engine.unwrap_or(d.engine),
            intra_op_threads: t.intra_op_threads.unwrap_or(d.intra_op_threads),
            int8,
            precision,
        };
        for (field, value, max) in [
            (
                "max_batch_tokens",
                limits.max_batch_tokens,
                MAX_BATCH_TOKENS_LIMIT,
            ),
            (
                "max_batch_requests",
                limits.max_batch_requests,
                MAX_BATCH_REQUESTS_LIMIT,
            ),
            (
                "max_queue_tokens",
                limits.max_queue_tokens,
                MAX_QUEUE_TOKENS_LIMIT,
            ),
            (
                "max_client_batch_size",
                limits.max_client_batch_size,
                MAX_CLIENT_BATCH_SIZE_LIMIT,
            ),
            (
                "intra_op_threads",
                limits.intra_op_threads,
                INTRA_OP_THREADS_LIMIT,
            ),
        ] {
            check_max(field, value, max)?;
        }
        if limits.max_batch_tokens == 0
            || limits.max_batch_requests == 0
            || limits.max_client_batch_size == 0
            || limits.max_queue_tokens < limits.max_batch_tokens
        {
            return Err(format!(
                "text limits must be positive and max_queue_tokens ({}) at least max_batch_tokens ({})",
                limits.max_queue_tokens, limits.max_batch_tokens
            ));
        }
        Ok(limits)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ModelConfig {
        ModelConfig::from_toml("m", text).unwrap()
    }

    #[test]
    fn text_keys_have_defaults_bounds_and_valid_combinations() {
        let c = cfg("platform = \"bert-embedding\"");
        assert_eq!(TextLimits::parse(&c).unwrap(), TextLimits::default());
        let l = TextLimits::parse(&cfg(
            "platform = \"distilbert-classifier\"\nmax_batch_tokens = 512\nmax_batch_requests = 4",
        ))
        .unwrap();
        assert_eq!((l.max_batch_tokens, l.max_batch_requests), (512, 4));
        assert_eq!(l.engine, TextEngine::Auto);
        let l = TextLimits::parse(&cfg(
            "platform = \"bert-embedding\"\nengine = \"onnxruntime\"\nintra_op_threads = 2\nquantize = \"int8\"",
        ))
        .unwrap();
        assert_eq!(
            (l.engine, l.intra_op_threads, l.int8),
            (TextEngine::Onnxruntime, 2, true)
        );
        for bad in [
            "engine = \"tensorrt\"",
            "quantize = \"int4\"",
            "quantize = \"int8\"\nengine = \"candle\"",
            "quantize = \"int8\"\nengine = \"openvino\"",
            "quantize = \"int8\"\nprecision = \"bf16\"",
            "precision = \"bf16\"\nengine = \"onnxruntime\"",
            "precision = \"bf16\"\nengine = \"candle\"",
            "precision = \"f16\"",
            "max_batch_tokens = 100\nmax_queue_tokens = 10",
            "threshold = 0.5",
        ] {
            let c = cfg(&format!("platform = \"bert-embedding\"\n{bad}"));
            assert!(TextLimits::parse(&c).is_err(), "{bad}");
        }
        for (field, bad) in [
            ("max_batch_tokens", "1048577"),
            ("max_batch_requests", "65537"),
            ("max_queue_tokens", "67108865"),
            ("max_client_batch_size", "65537"),
            ("intra_op_threads", "1025"),
        ] {
            let queue = if field == "max_queue_tokens" {
                ""
            } else {
                "\nmax_queue_tokens = 67108864"
            };
            let c = cfg(&format!(
                "platform = \"bert-embedding\"\n{field} = {bad}{queue}"
            ));
            let e = TextLimits::parse(&c).unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
