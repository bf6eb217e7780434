//! The HTTP API of `feast serve`: `POST /get-online-features`, `/push`,
//! `/write-to-online-store`, and `GET /health`; plus `GET /metrics`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use infermesh_common::ServiceError;
use infermesh_features::FeatureError;
use infermesh_features::online::{OnlineRequest, Wanted};
use infermesh_features::serving::{FieldStatus, GetOnlineFeaturesResponse};
use infermesh_features::value::{format_timestamp, to_json};
use infermesh_features::write::write_rows;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::Value as JsonValue;

use crate::columns::{Cells, JsonColumns, entity_columns, view_rows};
use crate::{FeatureState, service_error};

/// The HTTP routes.
pub(crate) fn router(state: FeatureState, prometheus: PrometheusHandle, max_body: usize) -> Router {
    Router::new()
        .route("/get-online-features", post(get_online))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .route("/health", get(health))
        .route(
            "/metrics",
            get(move || {
                let h = prometheus.clone();
                async move {
                    h.run_upkeep();
                    h.render()
                }
            }),
        )
        .fallback(|| async {
            ServiceError::not_found(
                "no such route: the feature server answers POST /get-online-features, /push, \
                 /write-to-online-store, GET /health and /metrics, and gRPC",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Reads a JSON body, answering malformed JSON with 400 `{"error": ...}`.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ServiceError> {
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::invalid(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Deserialize)]
struct GetOnlineBody {
    entities: JsonColumns,
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    #[serde(default)]
    full_feature_names: bool,
}

async fn get_online(State(state): State<FeatureState>, body: Bytes) -> Response {
    let run = async {
        let req: GetOnlineBody = parse(&body)?;
        let wanted = match (req.features, req.feature_service) {
            (Some(f), None) => Wanted::Refs(f),
            (None, Some(s)) => Wanted::Service(s),
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid(
                    "give either features or feature_service, not both",
                ));
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "give features ([\"view:feature\", ...]) or feature_service",
                ));
            }
        };
        let registry = state.registry();
        let entities = entity_columns(&registry, &req.entities).map_err(service_error)?;
        let resp = state
            .read(&OnlineRequest {
                wanted,
                entities,
                full_feature_names: req.full_feature_names,
            })
            .await?;
        Ok(response_json(&resp))
    };
    match run.await {
        Ok(body) => ([(http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `feast serve`'s response JSON: `metadata.feature_names`, then per column its values,
/// statuses (names) and event timestamps (RFC 3339).
pub(crate) fn response_json(resp: &GetOnlineFeaturesResponse) -> String {
    let names: &[String] = resp
        .metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map_or(&[], |f| &f.val);
    let results: Vec<JsonValue> = resp
        .results
        .iter()
        .map(|col| {
            serde_json::json!({
                "values": col.values.iter().map(to_json).collect::<Vec<_>>(),
                "statuses": col.statuses.iter().map(|s| {
                    FieldStatus::try_from(*s).unwrap_or(FieldStatus::Invalid).as_str_name()
                }).collect::<Vec<_>>(),
                "event_timestamps": col.event_timestamps.iter().map(format_timestamp).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Written field by field so the order is Feast's whatever serde_json's map keeps.
    format!(
        "{{\"metadata\":{{\"feature_names\":{}}},\"results\":{}}}",
        serde_json::to_string(names).unwrap_or_default(),
        JsonValue::Array(results)
    )
}

#[derive(Debug, Deserialize)]
struct PushBody {
    push_source_name: String,
    df: JsonColumns,
    #[serde(default)]
    to: Option<String>,
}

/// Feast's `to`: only the online store exists here, so a push meant for the offline store is
/// refused rather than half done.
pub(crate) fn check_push_target(to: Option<&str>) -> Result<(), ServiceError> {
    match to.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "online") => Ok(()),
        Some(other) => Err(ServiceError::invalid(format!(
            "push to {other:?}: this feature server has an online store only (push with \"to\": \"online\")"
        ))),
    }
}

async fn push(State(state): State<FeatureState>, body: Bytes) -> Response {
    let run = async {
        let req: PushBody = parse(&body)?;
        check_push_target(req.to.as_deref())?;
        let cols: Vec<(&str, Cells<'_>)> = req
            .df
            .0
            .iter()
            .map(|(n, v)| (n.as_str(), Cells::Json(v)))
            .collect();
        crate::grpc::push_columns(&state, &req.push_source_name, &cols).await
    };
    match run.await {
        // Feast answers a push with 200 and an empty body.
        Ok(()) => http::StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct WriteBody {
    feature_view_name: String,
    df: JsonColumns,
}

async fn write_to_online_store(State(state): State<FeatureState>, body: Bytes) -> Response {
    let run = async {
        let req: WriteBody = parse(&body)?;
        let cols: Vec<(&str, Cells<'_>)> = req
            .df
            .0
            .iter()
            .map(|(n, v)| (n.as_str(), Cells::Json(v)))
            .collect();
        write_view(&state, &req.feature_view_name, &cols).await
    };
    match run.await {
        // Feast answers `null`.
        Ok(()) => Json(JsonValue::Null).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Writes the rows of one view.
pub(crate) async fn write_view(
    state: &FeatureState,
    view: &str,
    cols: &[(&str, Cells<'_>)],
) -> Result<(), ServiceError> {
    let registry = state.registry();
    let (_, v) = registry.view(view).ok_or_else(|| {
        ServiceError::not_found(format!(
            "Feature view {view} does not exist in project {}",
            registry.project()
        ))
    })?;
    let rows = view_rows(&registry, v, cols).map_err(service_error)?;
    write_rows(&registry, state.store().as_ref(), &rows)
        .await
        .map_err(service_error)?;
    Ok(())
}

async fn health(State(state): State<FeatureState>) -> Response {
    match state.store().ping().await {
        Ok(()) => http::StatusCode::OK.into_response(),
        Err(e) => service_error(FeatureError::Store(e)).into_response(),
    }
}
