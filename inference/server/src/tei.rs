//! The HTTP routes of Hugging Face Text Embeddings Inference (TEI) on the REST port, so TEI
//! clients work against infermesh: `POST /embed` (sentence embeddings), `POST /predict`
//! (sequence classification), `POST /tokenize` (tokens with their byte spans, as the model
//! sees them) and the OpenAI-compatible `POST /v1/embeddings` that TEI also serves. Request and response bodies follow TEI's and OpenAI's schemas; what differs:
//!
//! * infermesh serves many models: `/embed`, `/predict` and `/tokenize` take an optional
//!   `model` field (an extension; absent, the server's default embedding model, or
//!   categoriser for `/predict`), and
//!   `/v1/embeddings` routes by its `model` field (empty: the default embedding model).
//! * `truncate` defaults to true, as if TEI ran with `--auto-truncate`; `false` refuses a
//!   text longer than the model's maximum length, naming it and its token count.
//! * Errors carry the status of infermesh's error kind (400, 404, 413, 429, 503); the body is
//!   TEI's `{"error": "..."}` on its routes and OpenAI's `{"error": {"message", "type",
//!   "param", "code"}}` on `/v1/embeddings` (`code` is the kind).
//! * `truncation_direction` is honoured (`"Left"` keeps a long text's end), as is `truncate`
//!   for token-id inputs.
//! * Not supported, refused with a clear 400: prompts
//!   (`prompt_name`), sentence pairs, and `dimensions` other than the model's own width (its
//!   encoders are not Matryoshka-trained, so a cut vector would be a worse one).
//! * In `/predict` and `/tokenize`, a list of texts is always a batch (TEI reads a list of exactly two texts as
//!   one sentence pair).
//!
//! Every request runs through the model version's token-budget batcher, as the V2 and typed
//! routes do, and is recorded in the request metrics under protocol `tei` or `openai`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use infermesh_common::ServiceError;
use infermesh_text::serving::{EmbedOptions, TextRows, TextServable as TextVersion};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::rest::body_error;
use crate::state::{AppState, Protocol};
use crate::text::{encoder, with_text_model};

/// The TEI and OpenAI routes (merged into the V2 REST router, under its body limit).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/embed", post(embed))
        .route("/predict", post(predict))
        .route("/tokenize", post(tokenize))
        .route("/v1/embeddings", post(openai_embeddings))
}

/// Texts, or token ids the caller produced with the model's own tokenizer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Ids(Vec<u32>),
    ManyIds(Vec<Vec<u32>>),
}

/// TEI's `POST /embed` body.
#[derive(Debug, Deserialize)]
struct EmbedBody {
    inputs: Input,
    normalize: Option<bool>,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    dimensions: Option<usize>,
    /// infermesh's extension: which model (absent: the default embedding model).
    model: Option<String>,
}

/// TEI's `POST /predict` body.
#[derive(Debug, Deserialize)]
struct PredictBody {
    inputs: Value,
    truncate: Option<bool>,
    #[serde(default)]
    raw_scores: bool,
    truncation_direction: Option<String>,
    /// infermesh's extension: which model (absent: the default categoriser).
    model: Option<String>,
}

/// TEI's `POST /tokenize` body.
#[derive(Debug, Deserialize)]
struct TokenizeBody {
    inputs: Value,
    add_special_tokens: Option<bool>,
    prompt_name: Option<String>,
    /// infermesh's extension: which model (absent: the default embedding model).
    model: Option<String>,
}

/// OpenAI's `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
struct OpenAiBody {
    input: Input,
    #[serde(default)]
    model: String,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ServiceError> {
    let body = body.map_err(body_error)?;
    serde_json::from_slice(&body)
        .map_err(|e| ServiceError::invalid(format!("invalid request body: {e}")))
}

fn check_no_prompt(prompt_name: Option<&str>) -> Result<(), ServiceError> {
    match prompt_name {
        Some(p) => Err(ServiceError::invalid(format!(
            "prompt_name {p:?}: this server defines no prompts"
        ))),
        None => Ok(()),
    }
}

/// TEI's `truncation_direction` (`"Right"`, the default, or `"Left"`, any case): true for
/// left.
fn truncate_left(direction: Option<&str>) -> Result<bool, ServiceError> {
    match direction {
        None => Ok(false),
        Some(d) if d.eq_ignore_ascii_case("right") => Ok(false),
        Some(d) if d.eq_ignore_ascii_case("left") => Ok(true),
        Some(d) => Err(ServiceError::invalid(format!(
            "truncation_direction {d:?}: use \"Right\" (the default) or \"Left\""
        ))),
    }
}

fn check_dimensions(dimensions: Option<usize>, width: usize) -> Result<(), ServiceError> {
    match dimensions {
        Some(d) if d != width => Err(ServiceError::invalid(format!(
            "dimensions {d}: this model's embeddings have {width} values and it is not \
             Matryoshka-trained; leave dimensions out or set it to {width}"
        ))),
        _ => Ok(()),
    }
}

async fn run_input(
    text: &TextVersion,
    input: Input,
    options: EmbedOptions,
) -> Result<TextRows, ServiceError> {
    match input {
        Input::One(t) => text.run_with(vec![t], options).await,
        Input::Many(ts) => text.run_with(ts, options).await,
        Input::Ids(ids) => text.run_ids_with(vec![ids], options).await,
        Input::ManyIds(ids) => text.run_ids_with(ids, options).await,
    }
}

async fn embed(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Vec<Vec<f32>>>, ServiceError> {
    let mut b: EmbedBody = parse(body)?;
    let truncate_left = truncate_left(b.truncation_direction.as_deref())?;
    check_no_prompt(b.prompt_name.as_deref())?;
    let model = b.model.take().unwrap_or_default();
    let span = tracing::info_span!("embed", api = "tei", model = %model);
    let options = EmbedOptions {
        normalize: b.normalize.unwrap_or(true),
        truncate: b.truncate.unwrap_or(true),
        truncate_left,
    };
    let rows = with_text_model(
        &st,
        &model,
        &st.default_embedding_model,
        "",
        Protocol::Tei,
        span,
        |h| async move {
            let text = encoder(&h)?;
            check_dimensions(b.dimensions, text.output_width())?;
            Ok(run_input(text, b.inputs, options).await?.rows)
        },
    )
    .await?;
    Ok(axum::Json(rows))
}

/// TEI's `inputs` for `/predict` and `/tokenize`: a text, a list of texts, or (refused)
/// sentence pairs; true for a single text.
fn texts_of(inputs: Value) -> Result<(Vec<String>, bool), ServiceError> {
    let bad = || {
        ServiceError::invalid(
            "inputs must be a text or a list of texts (sentence pairs are not supported)",
        )
    };
    match inputs {
        Value::String(s) => Ok((vec![s], true)),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| (texts, false)),
        _ => Err(bad()),
    }
}

async fn predict(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ServiceError> {
    let b: PredictBody = parse(body)?;
    let truncate_left = truncate_left(b.truncation_direction.as_deref())?;
    let (texts, single) = texts_of(b.inputs)?;
    let model = b.model.unwrap_or_default();
    let span = tracing::info_span!("predict", api = "tei", model = %model, n = texts.len());
    let options = EmbedOptions {
        normalize: false,
        truncate: b.truncate.unwrap_or(true),
        truncate_left,
    };
    let raw = b.raw_scores;
    let per_text = with_text_model(
        &st,
        &model,
        &st.default_categorizer_model,
        "",
        Protocol::Tei,
        span,
        |h| async move {
            // classify_with refuses an encoder.
            let text = crate::text::text_family(&h)?;
            let labels = text.labels();
            Ok(text
                .classify_with(texts, options)
                .await?
                .into_iter()
                .map(|c| {
                    let scores = if raw { &c.logits } else { &c.probabilities };
                    let mut order: Vec<usize> = (0..scores.len()).collect();
                    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
                    Value::Array(
                        order
                            .into_iter()
                            .map(|i| json!({"score": scores[i], "label": labels[i]}))
                            .collect(),
                    )
                })
                .collect::<Vec<Value>>())
        },
    )
    .await?;
    Ok(axum::Json(if single {
        per_text
            .into_iter()
            .next()
            .unwrap_or(Value::Array(Vec::new()))
    } else {
        Value::Array(per_text)
    }))
}

/// TEI's `/tokenize`: each text's tokens (id, text, special, byte span) as the model sees
/// them, truncated at its maximum length; always a list of lists, as TEI answers.
async fn tokenize(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ServiceError> {
    let b: TokenizeBody = parse(body)?;
    check_no_prompt(b.prompt_name.as_deref())?;
    let (texts, _) = texts_of(b.inputs)?;
    let model = b.model.unwrap_or_default();
    let span = tracing::info_span!("tokenize", api = "tei", model = %model, n = texts.len());
    let special = b.add_special_tokens.unwrap_or(true);
    let tokens = with_text_model(
        &st,
        &model,
        &st.default_embedding_model,
        "",
        Protocol::Tei,
        span,
        |h| async move { crate::text::text_family(&h)?.tokens(texts, special).await },
    )
    .await?;
    Ok(axum::Json(json!(tokens)))
}

async fn openai_embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match openai_inner(st, body).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => openai_error(e),
    }
}

/// An error as the OpenAI API shapes it (`{"error": {"message", "type", "param", "code"}}`,
/// which its clients read the message from), with the status of infermesh's error kind.
fn openai_error(e: ServiceError) -> Response {
    let status = e.kind.http_status();
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {
        "message": e.message, "type": kind, "param": null, "code": e.kind.as_str(),
    }});
    (status, axum::Json(body)).into_response()
}

async fn openai_inner(
    st: AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ServiceError> {
    let b: OpenAiBody = parse(body)?;
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ServiceError::invalid(format!(
                "encoding_format {other:?}: use \"float\" or \"base64\""
            )));
        }
    };
    let span = tracing::info_span!("embeddings", api = "openai", model = %b.model);
    let (rows, name) = with_text_model(
        &st,
        &b.model,
        &st.default_embedding_model,
        "",
        Protocol::OpenAi,
        span,
        |h| async move {
            let text = encoder(&h)?;
            check_dimensions(b.dimensions, text.output_width())?;
            let rows = run_input(text, b.input, EmbedOptions::default()).await?;
            Ok((rows, h.name.clone()))
        },
    )
    .await?;
    let data: Vec<Value> = rows
        .rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(row)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": rows.tokens, "total_tokens": rows.tokens},
    }))
}
