//! The gRPC services: `feast.serving.ServingService` (Feast's Go and Java servers) and
//! `GrpcFeatureServer` (`feast listen`), with gRPC health and reflection over Feast's protos.

use std::collections::HashMap;

use infermesh_common::ServiceError;
use infermesh_common::limits::{GrpcLimitsLayer, PortGuard};
use infermesh_features::online::{OnlineRequest, Wanted};
use infermesh_features::serving::get_online_features_request::Kind;
use infermesh_features::serving::serving_service_server::{ServingService, ServingServiceServer};
use infermesh_features::serving::{
    GetFeastServingInfoRequest, GetFeastServingInfoResponse, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse,
};
use infermesh_features::types::{RepeatedValue, Value};
use infermesh_features::write::write_rows;
use infermesh_proto::grpc_feature_server::grpc_feature_server_server::{
    GrpcFeatureServer, GrpcFeatureServerServer,
};
use infermesh_proto::grpc_feature_server::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use tonic::{Request, Response, Status};

use crate::columns::{Cells, view_rows};
use crate::{FeatureServerError, FeatureState, service_error};

#[derive(Debug, Clone)]
struct Feast {
    state: FeatureState,
}

/// Answers a `GetOnlineFeaturesRequest` (both services take the same message). Entity
/// columns come from a protobuf map, which has no order: they are taken by name.
async fn online(
    state: &FeatureState,
    req: GetOnlineFeaturesRequest,
) -> Result<GetOnlineFeaturesResponse, ServiceError> {
    let wanted = match req.kind {
        Some(Kind::FeatureService(s)) => Wanted::Service(s),
        Some(Kind::Features(f)) => Wanted::Refs(f.val),
        None => {
            return Err(ServiceError::invalid("give features or feature_service"));
        }
    };
    let mut entities: Vec<(String, Vec<Value>)> = req
        .entities
        .into_iter()
        .map(|(k, v): (String, RepeatedValue)| (k, v.val))
        .collect();
    entities.sort_by(|a, b| a.0.cmp(&b.0));
    state
        .read(&OnlineRequest {
            wanted,
            entities,
            full_feature_names: req.full_feature_names,
        })
        .await
}

#[tonic::async_trait]
impl ServingService for Feast {
    async fn get_feast_serving_info(
        &self,
        _: Request<GetFeastServingInfoRequest>,
    ) -> Result<Response<GetFeastServingInfoResponse>, Status> {
        Ok(Response::new(GetFeastServingInfoResponse {
            version: concat!("infermesh ", env!("CARGO_PKG_VERSION")).into(),
        }))
    }

    async fn get_online_features(
        &self,
        req: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(online(&self.state, req.into_inner()).await?))
    }
}

/// One row given as a string map or a typed map (a typed map wins, as in Feast).
fn one_row<'a>(
    text: &'a HashMap<String, String>,
    typed: &'a HashMap<String, Value>,
) -> Vec<(&'a str, Cells<'a>)> {
    if typed.is_empty() {
        text.iter()
            .map(|(k, v)| (k.as_str(), Cells::Text(v)))
            .collect()
    } else {
        typed
            .iter()
            .map(|(k, v)| (k.as_str(), Cells::Typed(v)))
            .collect()
    }
}

/// Writes the rows in `cols` to every view the push source feeds.
pub(crate) async fn push_columns(
    state: &FeatureState,
    source: &str,
    cols: &[(&str, Cells<'_>)],
) -> Result<(), ServiceError> {
    let registry = state.registry();
    let views = registry.views_of_push_source(source);
    if views.is_empty() {
        return Err(ServiceError::not_found(format!(
            "Push source {source} does not exist in project {} (no feature view is fed by it)",
            registry.project()
        )));
    }
    let mut rows = Vec::new();
    for i in views {
        rows.extend(view_rows(&registry, &registry.views()[i], cols).map_err(service_error)?);
    }
    write_rows(&registry, state.store().as_ref(), &rows)
        .await
        .map_err(service_error)?;
    Ok(())
}

#[tonic::async_trait]
impl GrpcFeatureServer for Feast {
    async fn push(&self, req: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let req = req.into_inner();
        crate::api::check_push_target(Some(&req.to))?;
        let cols = one_row(&req.features, &req.typed_features);
        push_columns(&self.state, &req.stream_feature_view, &cols).await?;
        Ok(Response::new(PushResponse { status: true }))
    }

    async fn write_to_online_store(
        &self,
        req: Request<WriteToOnlineStoreRequest>,
    ) -> Result<Response<WriteToOnlineStoreResponse>, Status> {
        let req = req.into_inner();
        let cols = one_row(&req.features, &req.typed_features);
        crate::api::write_view(&self.state, &req.feature_view_name, &cols).await?;
        Ok(Response::new(WriteToOnlineStoreResponse { status: true }))
    }

    async fn get_online_features(
        &self,
        req: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(online(&self.state, req.into_inner()).await?))
    }
}

/// The boxed gRPC side of the port.
pub(crate) type GrpcService = tower::util::BoxCloneSyncService<
    axum::extract::Request,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// Both services, health and reflection, behind the port's limits and a span per call.
pub(crate) async fn service(
    state: FeatureState,
    guard: PortGuard,
    max: usize,
) -> Result<GrpcService, FeatureServerError> {
    let feast = Feast { state };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ServingServiceServer<Feast>>()
        .await;
    health_reporter
        .set_serving::<GrpcFeatureServerServer<Feast>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(infermesh_proto::FEAST_FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| FeatureServerError::Serve(format!("gRPC reflection: {e}")))?;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            ServingServiceServer::new(feast.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            GrpcFeatureServerServer::new(feast)
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(health)
        .add_service(reflection);
    let svc = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
        .map_response(infermesh_common::error::fix_decode_status)
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc().make_span_with(
                |req: &http::Request<_>| tracing::info_span!("grpc", path = %req.uri().path()),
            ),
        )
        .layer(GrpcLimitsLayer::new(guard))
        .service(routes.routes());
    Ok(tower::util::BoxCloneSyncService::new(svc))
}
