//! `/api/embed`: sentence embeddings from all-MiniLM-L6-v2 (infermesh-text's candle encoder),
//! mean-pooled and L2-normalised as Ollama returns them.
//!
//! The GGUF LLM offers no embeddings (candle's quantized llama returns logits only), so
//! embeddings come from the sentence encoder the rest of the mesh uses: the vectors the
//! recommender and resume matcher compare are the ones `/api/embed` gives.

use std::path::Path;
use std::sync::Arc;

use infermesh_text::{SentenceEncoder, TextError, TextModel, normalize};
use tokio::sync::Semaphore;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::Response;
use std::time::Instant;

use super::routes::{ApiError, State, Target, answer, elapsed, read_json, unsupported};
use crate::api::{EmbedRequest, EmbedResponse, EmbeddingsRequest, EmbeddingsResponse};

/// Most texts in one request.
pub(crate) const MAX_INPUTS: usize = 512;
/// Texts per forward pass.
const BATCH: usize = 32;

/// Why an embedding request failed.
#[derive(Debug)]
pub(crate) enum EmbedError {
    /// The caller's input (too long with `truncate: false`, bad `dimensions`, too many texts).
    Invalid(String),
    /// Too many embedding requests at once.
    Busy,
    /// The model failed.
    Internal(String),
}

/// The embedding model and a bound on concurrent requests.
#[derive(Debug)]
pub(crate) struct Embedder {
    model: Arc<SentenceEncoder>,
    permits: Arc<Semaphore>,
}

impl Embedder {
    /// Loads the encoder in `dir` (Hugging Face layout).
    pub(crate) fn load(dir: &Path) -> Result<Self, TextError> {
        Ok(Self {
            model: Arc::new(SentenceEncoder::load(dir)?),
            // Two requests compute at once (one per core); a third waits for a permit.
            permits: Arc::new(Semaphore::new(2)),
        })
    }

    /// Vector width.
    pub(crate) fn width(&self) -> usize {
        self.model.output_width()
    }

    /// Longest input in tokens.
    pub(crate) fn max_len(&self) -> usize {
        self.model.max_len()
    }

    /// Unit vectors for `texts` (cut to the model's length when `truncate`, else refused),
    /// keeping the first `dimensions` values when asked; with the token count.
    pub(crate) async fn embed(
        &self,
        texts: Vec<String>,
        truncate: bool,
        dimensions: Option<usize>,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        if texts.len() > MAX_INPUTS {
            return Err(EmbedError::Invalid(format!(
                "{} inputs (at most {MAX_INPUTS} per request)",
                texts.len()
            )));
        }
        let width = self.width();
        if let Some(d) = dimensions
            && (d == 0 || d > width)
        {
            return Err(EmbedError::Invalid(format!(
                "dimensions {d}: the model's embeddings have {width}"
            )));
        }
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| EmbedError::Busy)?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let ids = if truncate {
                model.tokenize(&refs)
            } else {
                model.tokenize_exact(&refs)
            }
            .map_err(|e| match e {
                TextError::TooLong { .. } => EmbedError::Invalid(format!(
                    "{e} (the input length exceeds the context length; send truncate: true to cut it)"
                )),
                other => EmbedError::Internal(other.to_string()),
            })?;
            let tokens = ids.iter().map(Vec::len).sum();
            let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            // Forward passes of at most BATCH texts bound the padded activations.
            let mut rows = Vec::with_capacity(seqs.len());
            for batch in seqs.chunks(BATCH) {
                rows.extend(
                    model
                        .forward_tokens(batch)
                        .map_err(|e| EmbedError::Internal(e.to_string()))?,
                );
            }
            for row in &mut rows {
                if let Some(d) = dimensions {
                    row.truncate(d);
                }
                normalize(row);
            }
            Ok((rows, tokens))
        })
        .await
        .map_err(|e| EmbedError::Internal(e.to_string()))?
    }
}

async fn embed_texts(
    s: &State,
    model: &str,
    texts: Vec<String>,
    truncate: bool,
    dimensions: Option<usize>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    if s.resolve(model)? == Target::Llm {
        return Err(unsupported(model, "embeddings"));
    }
    let (embedder, _) = s
        .embedder
        .as_ref()
        .ok_or_else(|| unsupported(model, "embeddings"))?;
    embedder
        .embed(texts, truncate, dimensions)
        .await
        .map_err(|e| match e {
            EmbedError::Invalid(m) => ApiError::bad(m),
            EmbedError::Busy => ApiError::busy(),
            EmbedError::Internal(m) => {
                tracing::error!(error = %m, "embedding failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        })
}

pub(super) async fn embed(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        let req: EmbedRequest = read_json(body, s.max_body).await?;
        let texts = req.input.texts().into_iter().map(str::to_string).collect();
        let (embeddings, tokens) = embed_texts(
            &s,
            &req.model,
            texts,
            req.truncate.unwrap_or(true),
            req.dimensions,
        )
        .await?;
        Ok::<_, ApiError>(EmbedResponse {
            model: req.model,
            embeddings,
            total_duration: Some(elapsed(started)),
            load_duration: Some(0),
            prompt_eval_count: Some(tokens as u64),
        })
    }
    .await;
    answer("embed", started, result)
}

pub(super) async fn embeddings(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        let req: EmbeddingsRequest = read_json(body, s.max_body).await?;
        let (mut rows, _) = embed_texts(&s, &req.model, vec![req.prompt], true, None).await?;
        Ok::<_, ApiError>(EmbeddingsResponse {
            embedding: rows.pop().unwrap_or_default(),
        })
    }
    .await;
    answer("embeddings", started, result)
}
