//! Ollama's HTTP API, request and response bodies, named field for field as Ollama's
//! `api/types.go` and its official Python client (`ollama/_types.py`) name them.
//!
//! One set of types serves both sides: [`crate::OllamaClient`] sends the requests and reads the
//! responses, and `infermesh llm serve` (feature `server`) reads the requests and writes the
//! responses. Fields a side does not use are optional and left out when unset, as Ollama does.
//! Requests keep `options` as a JSON object: Ollama accepts any of its option names and
//! ignores the ones a model does not use, so the server checks them itself (with their types)
//! rather than through a closed struct.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Ollama's `options` object (`temperature`, `num_predict`, `stop`, ...).
pub type Options = Map<String, Value>;

/// `POST /api/generate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Model name (`name` or `name:tag`).
    pub model: String,
    /// Text to continue; empty or absent only loads the model (`done_reason: "load"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Text after the completion (fill-in-the-middle models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// System message, in place of the template's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A prompt template overriding the model's (Go template syntax in Ollama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Token ids returned by an earlier response, continued from (deprecated in Ollama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<u32>>,
    /// Stream NDJSON chunks (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Send `prompt` to the model as it is, with no chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
    /// `"json"` or a JSON schema the output must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// Sampling and length options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// How long the model stays loaded (a duration string or seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// Base64 images (multimodal models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Thinking mode (`true`/`false` or `"low"|"medium"|"high"`; thinking models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
}

/// The counters every final response carries (nanoseconds and token counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// Whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Loading the model (0 when it was loaded already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Prompt tokens evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    /// Evaluating the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    /// Tokens generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    /// Generating them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
}

/// One `/api/generate` response: a chunk while streaming, or the whole answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    /// The model that answered.
    pub model: String,
    /// RFC 3339 time of this chunk.
    pub created_at: String,
    /// Text (a fragment while streaming; all of it with `stream: false`).
    #[serde(default)]
    pub response: String,
    /// Whether this is the last chunk.
    pub done: bool,
    /// `stop`, `length`, `load` or `unload`; on the last chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Prompt and answer token ids, to continue from; on the last chunk, not in raw mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<u32>>,
    /// Counters; on the last chunk.
    #[serde(flatten)]
    pub durations: Durations,
}

/// A chat message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text (a fragment in a streamed response).
    #[serde(default)]
    pub content: String,
    /// Thinking text (thinking models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Base64 images (multimodal models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// The tool a `tool` message answers for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// `POST /api/chat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation; empty only loads the model.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Tools the model may call (tool-calling models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// `"json"` or a JSON schema the answer must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// Sampling and length options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Stream NDJSON chunks (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// How long the model stays loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// Thinking mode (thinking models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
}

/// One `/api/chat` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered.
    pub model: String,
    /// RFC 3339 time of this chunk.
    pub created_at: String,
    /// The assistant's message (a fragment while streaming).
    pub message: Message,
    /// Whether this is the last chunk.
    pub done: bool,
    /// `stop`, `length`, `load` or `unload`; on the last chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Counters; on the last chunk.
    #[serde(flatten)]
    pub durations: Durations,
}

/// `input` of `/api/embed`: one text or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    /// One text.
    One(String),
    /// Several texts, one embedding each.
    Many(Vec<String>),
}

impl EmbedInput {
    /// The texts, in order.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            EmbedInput::One(t) => vec![t.as_str()],
            EmbedInput::Many(ts) => ts.iter().map(String::as_str).collect(),
        }
    }
}

/// `POST /api/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// Model name.
    pub model: String,
    /// Text(s) to embed.
    pub input: EmbedInput,
    /// Cut inputs longer than the model's context (default `true`); `false` refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Keep the first `dimensions` values (then normalised again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// Options (unused by embedding models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// How long the model stays loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// `/api/embed` response: unit-length vectors, one per input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// The model that answered.
    pub model: String,
    /// One vector per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// Whole request, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Loading the model, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
}

/// `POST /api/embeddings` (the older, single-text endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: String,
    /// The text.
    #[serde(default)]
    pub prompt: String,
    /// Options (unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// How long the model stays loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// `/api/embeddings` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// The vector.
    pub embedding: Vec<f32>,
}

/// What `/api/tags`, `/api/ps` and `/api/show` say of a model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetails {
    /// The model this one was made from.
    #[serde(default)]
    pub parent_model: String,
    /// `gguf`, or `safetensors` for the embedding model.
    #[serde(default)]
    pub format: String,
    /// Architecture family (`llama`, `bert`).
    #[serde(default)]
    pub family: String,
    /// Families.
    #[serde(default)]
    pub families: Option<Vec<String>>,
    /// Parameter count, e.g. `135M`.
    #[serde(default)]
    pub parameter_size: String,
    /// Weight format, e.g. `Q4_1`.
    #[serde(default)]
    pub quantization_level: String,
}

/// One model of `/api/tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedModel {
    /// Name (`name:tag`).
    pub name: String,
    /// The same name.
    pub model: String,
    /// RFC 3339 time the file was last modified.
    pub modified_at: String,
    /// Bytes on disk.
    pub size: u64,
    /// `sha256:` and the file's SHA-256 in hex.
    pub digest: String,
    /// Details.
    pub details: ModelDetails,
}

/// `GET /api/tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsResponse {
    /// The models this server has.
    pub models: Vec<ListedModel>,
}

/// One model of `/api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningModel {
    /// Name.
    pub name: String,
    /// The same name.
    pub model: String,
    /// Bytes the loaded model holds.
    pub size: u64,
    /// As in `/api/tags`.
    pub digest: String,
    /// Details.
    pub details: ModelDetails,
    /// When it would be unloaded (RFC 3339).
    pub expires_at: String,
    /// Bytes in GPU memory (0: CPU only).
    pub size_vram: u64,
    /// Context window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
}

/// `GET /api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsResponse {
    /// Loaded models.
    pub models: Vec<RunningModel>,
}

/// `POST /api/show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowRequest {
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model name (the older field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Include long metadata arrays (the vocabulary) in `model_info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbose: Option<bool>,
}

/// `/api/show` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowResponse {
    /// The model's licence text or name.
    #[serde(default)]
    pub license: String,
    /// A Modelfile that would recreate the model.
    #[serde(default)]
    pub modelfile: String,
    /// Default parameters, one `name value` per line.
    #[serde(default)]
    pub parameters: String,
    /// The prompt template (the GGUF's Jinja chat template here).
    #[serde(default)]
    pub template: String,
    /// Details.
    #[serde(default)]
    pub details: ModelDetails,
    /// GGUF metadata (`general.architecture`, `llama.context_length`, ...).
    #[serde(default)]
    pub model_info: Map<String, Value>,
    /// `completion`, `embedding`, ...
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// RFC 3339 time the file was last modified.
    #[serde(default)]
    pub modified_at: String,
}

/// `GET /api/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The API version spoken.
    pub version: String,
}

/// Every error body (and a failed stream's last line): `{"error": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: String,
}

/// RFC 3339 UTC time with nanoseconds, as Ollama writes `created_at`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// [`rfc3339`] of now.
pub fn now() -> String {
    rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn final_chunk_has_ollamas_field_names() {
        let r = GenerateResponse {
            model: "m".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            response: String::new(),
            done: true,
            done_reason: Some("stop".into()),
            context: Some(vec![1, 2]),
            durations: Durations {
                total_duration: Some(10),
                load_duration: Some(0),
                prompt_eval_count: Some(2),
                prompt_eval_duration: Some(3),
                eval_count: Some(4),
                eval_duration: Some(5),
            },
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"model": "m", "created_at": "2026-01-01T00:00:00Z", "response": "", "done": true,
                   "done_reason": "stop", "context": [1, 2], "total_duration": 10, "load_duration": 0,
                   "prompt_eval_count": 2, "prompt_eval_duration": 3, "eval_count": 4, "eval_duration": 5})
        );
        let chunk = GenerateResponse {
            model: "m".into(),
            created_at: "t".into(),
            response: "Hi".into(),
            ..GenerateResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&chunk).unwrap(),
            json!({"model": "m", "created_at": "t", "response": "Hi", "done": false})
        );
    }

    #[test]
    fn requests_read_as_clients_send_them() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
            "stream": false, "format": {"type": "object"}, "options": {"temperature": 0}
        }))
        .unwrap();
        assert_eq!(r.messages, vec![Message::new("user", "hi")]);
        assert_eq!(r.stream, Some(false));
        assert_eq!(r.format, Some(json!({"type": "object"})));
        let e: EmbedRequest =
            serde_json::from_value(json!({"model": "all-minilm", "input": "one"})).unwrap();
        assert_eq!(e.input.texts(), vec!["one"]);
        let e: EmbedRequest =
            serde_json::from_value(json!({"model": "all-minilm", "input": ["a", "b"]})).unwrap();
        assert_eq!(e.input.texts(), vec!["a", "b"]);
        assert!(serde_json::from_value::<EmbedRequest>(json!({"model": "m", "input": 3})).is_err());
    }

    #[test]
    fn created_at_is_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
    }
}
