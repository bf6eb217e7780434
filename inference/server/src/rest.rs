//! KServe V2 over HTTP/REST (axum), with Triton's binary tensor data and model repository
//! extensions so `tritonclient.http` works unmodified; TEI's and OpenAI's text routes
//! ([`crate::tei`]) share the port and its body limit.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use infermesh_common::{ErrorKind, ServiceError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::metadata::{self, EXTENSIONS, SERVER_NAME, SERVER_VERSION};
use crate::state::{AppState, Protocol};
use crate::tensor::{bool_to_raw, bytes_to_raw, f32_to_raw, i64_to_raw};
use crate::v2;
use infermesh_inference::TensorData;

/// Triton's header for the JSON part's length in a binary-data request or response.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// The V2 REST router.
pub fn router(state: AppState) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config_v),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .merge(family_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            refuse_declared_oversize,
        ))
        .with_state(state)
}

/// The HTTP routes of the families compiled in (TEI's and OpenAI's, with the text family).
fn family_routes() -> Router<AppState> {
    let routes = Router::new();
    #[cfg(feature = "text")]
    let routes = routes.merge(crate::tei::routes());
    routes
}

/// Refuses a body whose declared Content-Length is over the limit before reading any of it
/// (the body limit above catches chunked bodies as they grow).
async fn refuse_declared_oversize(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ServiceError::new(
            ErrorKind::TooLarge,
            "request body is larger than --max-request-bytes",
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ServiceError {
    ServiceError::not_found("no such endpoint")
}

async fn server_metadata() -> Response {
    axum::Json(json!({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}))
        .into_response()
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(st): State<AppState>) -> StatusCode {
    // Ready once the repository has been read at start-up; broken models are reported per model.
    if st.manager.repository().is_dir() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_metadata(
    State(st): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ServiceError> {
    Ok(axum::Json(metadata::model_meta(&st.manager, &model, None)?).into_response())
}

async fn model_metadata_v(
    State(st): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ServiceError> {
    Ok(axum::Json(metadata::model_meta(&st.manager, &model, Some(&version))?).into_response())
}

fn ready_response(r: Result<bool, ServiceError>) -> Response {
    match r {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => {
            ServiceError::new(ErrorKind::InvalidInput, "model is not ready").into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn model_ready(State(st): State<AppState>, Path(model): Path<String>) -> Response {
    ready_response(metadata::model_ready(&st.manager, &model, None))
}

async fn model_ready_v(
    State(st): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_response(metadata::model_ready(&st.manager, &model, Some(&version)))
}

fn config_json(
    st: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Response, ServiceError> {
    let c = metadata::model_config(&st.manager, model, version)?;
    let tensor = |name: &str, data_type: i32, dims: &[i64]| {
        let dt = infermesh_proto::inference::DataType::try_from(data_type)
            .map_or("TYPE_INVALID", |d| d.as_str_name());
        json!({"name": name, "data_type": dt, "dims": dims})
    };
    let parameters: Map<String, Value> = c
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), json!({"string_value": v.string_value})))
        .collect();
    // Triton's model configuration, as `tritonclient.http` reads it.
    Ok(axum::Json(json!({
        "name": c.name,
        "backend": c.backend,
        "platform": c.platform,
        "max_batch_size": c.max_batch_size,
        "default_model_filename": c.default_model_filename,
        "input": c.input.iter().map(|t| tensor(&t.name, t.data_type, &t.dims)).collect::<Vec<_>>(),
        "output": c.output.iter().map(|t| tensor(&t.name, t.data_type, &t.dims)).collect::<Vec<_>>(),
        "dynamic_batching": {"max_queue_delay_microseconds":
            c.dynamic_batching.map_or(0, |d| d.max_queue_delay_microseconds)},
        "parameters": parameters,
    }))
    .into_response())
}

async fn model_config(
    State(st): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ServiceError> {
    config_json(&st, &model, None)
}

async fn model_config_v(
    State(st): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ServiceError> {
    config_json(&st, &model, Some(&version))
}

pub(crate) fn body_error(rej: BytesRejection) -> ServiceError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ServiceError::new(
            ErrorKind::TooLarge,
            "request body is larger than --max-request-bytes",
        )
    } else {
        ServiceError::invalid(format!("cannot read the request body: {rej}"))
    }
}

async fn infer(
    State(st): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServiceError> {
    infer_inner(st, model, None, headers, body.map_err(body_error)?).await
}

async fn infer_v(
    State(st): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServiceError> {
    infer_inner(st, model, Some(version), headers, body.map_err(body_error)?).await
}

async fn infer_inner(
    st: AppState,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServiceError> {
    let started = Instant::now();
    let json_len = headers
        .get(HEADER_CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap_or(""));
    let (request, prefs) = v2::decode_rest(model, version, json_len, &body)?;
    let id = request.id.clone();
    let resp = st.infer(request, Protocol::Rest).await?;
    let mut outputs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for o in &resp.outputs {
        let datatype = o.data.datatype();
        if prefs.wants_binary(&o.name) {
            let raw = match &o.data {
                TensorData::Fp32(v) => f32_to_raw(v),
                TensorData::Bool(v) => bool_to_raw(v),
                TensorData::Int64(v) => i64_to_raw(v),
                TensorData::Bytes(v) => bytes_to_raw(v),
            };
            outputs.push(
                json!({"name": o.name, "datatype": datatype, "shape": o.shape,
                                "parameters": {"binary_data_size": raw.len()}}),
            );
            tail.extend_from_slice(&raw);
        } else {
            let data: Vec<Value> = match &o.data {
                TensorData::Fp32(v) => v.iter().map(|&x| json_f32(x)).collect(),
                TensorData::Bool(v) => v.iter().map(|&b| Value::Bool(b)).collect(),
                TensorData::Int64(v) => v.iter().map(|&x| Value::from(x)).collect(),
                TensorData::Bytes(v) => v
                    .iter()
                    .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            };
            outputs.push(
                json!({"name": o.name, "datatype": datatype, "shape": o.shape, "data": data}),
            );
        }
    }
    let mut body =
        json!({"model_name": resp.model, "model_version": resp.version, "outputs": outputs});
    if !id.is_empty() {
        body["id"] = Value::String(id);
    }
    let json_bytes = serde_json::to_vec(&body).map_err(ServiceError::internal)?;
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "rest infer"
    );
    if tail.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], json_bytes).into_response());
    }
    let json_len = json_bytes.len();
    let mut full = json_bytes;
    full.extend_from_slice(&tail);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_CONTENT_LENGTH),
                json_len.to_string(),
            ),
        ],
        full,
    )
        .into_response())
}

/// An `f32` as JSON; non-finite values (which JSON cannot hold) become null.
fn json_f32(v: f32) -> Value {
    serde_json::Number::from_f64(f64::from(v)).map_or(Value::Null, Value::Number)
}

#[derive(Debug, Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Response, ServiceError> {
    let req: IndexRequest = if body.is_empty() {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ServiceError::invalid(format!("malformed index request: {e}")))?
    };
    let rows: Vec<Value> = st
        .manager
        .index()
        .into_iter()
        .filter(|e| !req.ready || e.state == "READY")
        .map(|e| {
            let mut v = json!({"name": e.name, "state": e.state, "reason": e.reason});
            if !e.version.is_empty() {
                v["version"] = Value::String(e.version);
            }
            v
        })
        .collect();
    Ok(axum::Json(rows).into_response())
}

async fn repository_load(
    State(st): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ServiceError> {
    st.check_model_control()?;
    let mgr = st.manager.clone();
    tokio::task::spawn_blocking(move || mgr.load_model(&model))
        .await
        .map_err(ServiceError::internal)??;
    Ok(StatusCode::OK.into_response())
}

async fn repository_unload(
    State(st): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ServiceError> {
    st.check_model_control()?;
    let mgr = st.manager.clone();
    tokio::task::spawn_blocking(move || mgr.unload_model(&model))
        .await
        .map_err(ServiceError::internal)??;
    Ok(StatusCode::OK.into_response())
}
