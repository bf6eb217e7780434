//! [`OllamaClient`]: a client of Ollama's HTTP API, for a real Ollama or `infermesh llm serve`
//! alike (`INFERMESH_OLLAMA_URL`, default `http://127.0.0.1:11434`).
//!
//! Every call has a deadline and reads at most [`MAX_RESPONSE_BYTES`]; generation is asked
//! for with `stream: false` (a side channel wants the whole answer, and one JSON body is
//! simpler to bound than a stream). Failures are typed ([`ClientError`]) so that callers can
//! tell a server that is down or slow (fall back) from a request it refused (do not retry).

use std::time::{Duration, Instant};

use infermesh_common::error::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorResponse, GenerateRequest,
    GenerateResponse, ShowRequest, ShowResponse, TagsResponse, VersionResponse,
};
use infermesh_common::metrics_names::{LLM_CLIENT_REQUEST_SECONDS, LLM_CLIENT_REQUESTS_TOTAL};

/// The environment variable naming the Ollama API to call.
pub const OLLAMA_URL_ENV: &str = "INFERMESH_OLLAMA_URL";
/// Where `infermesh llm serve` (and Ollama) listen by default.
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";
/// The most a response body may hold: an answer of a few thousand tokens is far below it.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http(s)://` URL.
    #[error("invalid Ollama URL {0:?}")]
    InvalidUrl(String),
    /// No connection (refused, reset, DNS).
    #[error("cannot reach the LLM at {url}: {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// No complete answer within the deadline.
    #[error("the LLM did not answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error status (its `error` message kept).
    #[error("the LLM refused the request ({status}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Ollama's `error` field, or the body's start.
        message: String,
    },
    /// The answer is not what the API promises (bad JSON, too large).
    #[error("malformed answer from the LLM: {0}")]
    Malformed(String),
}

impl ClientError {
    /// The caller-facing classification: down, slow, busy or malformed answers are
    /// `Unavailable` or `Overloaded` (retry later or fall back); a refused request keeps its
    /// meaning.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::InvalidUrl(_) => ErrorKind::InvalidInput,
            ClientError::Unreachable { .. }
            | ClientError::Timeout(_)
            | ClientError::Malformed(_) => ErrorKind::Unavailable,
            ClientError::Status { status, .. } => match *status {
                400 | 422 => ErrorKind::InvalidInput,
                404 => ErrorKind::NotFound,
                413 => ErrorKind::TooLarge,
                429 | 503 => ErrorKind::Overloaded,
                _ => ErrorKind::Unavailable,
            },
        }
    }

    /// Whether trying again later may succeed (the server was down, slow, busy, or failed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::Overloaded | ErrorKind::Internal
        )
    }

    fn outcome(&self) -> &'static str {
        match self {
            ClientError::InvalidUrl(_) => "invalid_url",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Timeout(_) => "timeout",
            ClientError::Status { .. } => "status",
            ClientError::Malformed(_) => "malformed",
        }
    }
}

/// A client of one Ollama API server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    timeout: Duration,
    http: reqwest::Client,
}

impl OllamaClient {
    /// A client of the API at `base_url` (e.g. `http://127.0.0.1:11434`), each call bounded by
    /// `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let valid = ["http://", "https://"]
            .iter()
            .any(|s| base.len() > s.len() && base.starts_with(s));
        if !valid {
            return Err(ClientError::InvalidUrl(base_url.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| ClientError::InvalidUrl(format!("{base_url}: {e}")))?;
        Ok(Self {
            base,
            timeout,
            http,
        })
    }

    /// A client of `INFERMESH_OLLAMA_URL`, or of [`DEFAULT_OLLAMA_URL`] when it is unset.
    pub fn from_env(timeout: Duration) -> Result<Self, ClientError> {
        let url = std::env::var(OLLAMA_URL_ENV).unwrap_or_else(|_| DEFAULT_OLLAMA_URL.into());
        Self::new(&url, timeout)
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The same client with another deadline per call.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// `POST /api/generate` with `stream: false`.
    pub async fn generate(
        &self,
        request: &GenerateRequest,
    ) -> Result<GenerateResponse, ClientError> {
        let mut request = request.clone();
        request.stream = Some(false);
        self.call(
            "generate",
            reqwest::Method::POST,
            "/api/generate",
            Some(&request),
        )
        .await
    }

    /// `POST /api/chat` with `stream: false`.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ClientError> {
        let mut request = request.clone();
        request.stream = Some(false);
        self.call("chat", reqwest::Method::POST, "/api/chat", Some(&request))
            .await
    }

    /// `POST /api/embed`.
    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ClientError> {
        self.call("embed", reqwest::Method::POST, "/api/embed", Some(request))
            .await
    }

    /// `GET /api/tags`.
    pub async fn tags(&self) -> Result<TagsResponse, ClientError> {
        self.call::<(), _>("tags", reqwest::Method::GET, "/api/tags", None)
            .await
    }

    /// `POST /api/show`.
    pub async fn show(&self, model: &str) -> Result<ShowResponse, ClientError> {
        let request = ShowRequest {
            model: Some(model.to_string()),
            ..ShowRequest::default()
        };
        self.call("show", reqwest::Method::POST, "/api/show", Some(&request))
            .await
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        self.call::<(), _>("version", reqwest::Method::GET, "/api/version", None)
            .await
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .unwrap_or(Err(ClientError::Timeout(self.timeout)));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        metrics::counter!(LLM_CLIENT_REQUESTS_TOTAL, "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(LLM_CLIENT_REQUEST_SECONDS, "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn exchange<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut builder = self.http.request(method, &url);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let mut response = builder.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(ClientError::Malformed(format!(
                "a body of {} bytes (limit {MAX_RESPONSE_BYTES})",
                response.content_length().unwrap_or_default()
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ClientError::Malformed(format!(
                    "a body over {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorResponse>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into());
            return Err(ClientError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(OllamaClient::new("http://127.0.0.1:11434/", Duration::from_secs(1)).is_ok());
        assert_eq!(
            OllamaClient::new("http://h:1/", Duration::from_secs(1))
                .unwrap()
                .base_url(),
            "http://h:1"
        );
        for bad in ["", "127.0.0.1:11434", "ftp://x", "http://"] {
            assert!(
                matches!(
                    OllamaClient::new(bad, Duration::from_secs(1)),
                    Err(ClientError::InvalidUrl(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_are_classified() {
        let status = |status| ClientError::Status {
            status,
            message: String::new(),
        };
        assert_eq!(status(400).kind(), ErrorKind::InvalidInput);
        assert_eq!(status(404).kind(), ErrorKind::NotFound);
        assert_eq!(status(503).kind(), ErrorKind::Overloaded);
        assert_eq!(status(500).kind(), ErrorKind::Unavailable);
        assert!(status(503).is_transient());
        assert!(!status(400).is_transient());
        assert!(ClientError::Timeout(Duration::from_secs(1)).is_transient());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_hang() {
        // Bind then drop: the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c =
            OllamaClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let err = c.version().await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
    }
}
