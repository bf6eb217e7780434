//! KServe V2 over gRPC (`inference.GRPCInferenceService`), with Triton's repository
//! extension, so `tritonclient.grpc` works unmodified.

use std::collections::HashMap;

use infermesh_common::ServiceError;
use infermesh_proto::inference as pb;
use infermesh_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use tonic::{Request, Response, Status};

use crate::metadata::{self, EXTENSIONS, SERVER_NAME, SERVER_VERSION};
use crate::state::{AppState, Protocol};
use crate::tensor::{bool_to_raw, bytes_to_raw, f32_to_raw, i64_to_raw};
use crate::v2;
use infermesh_inference::TensorData;

/// The V2 gRPC service.
#[derive(Debug, Clone)]
pub struct V2Grpc {
    state: AppState,
}

impl V2Grpc {
    /// A service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn version_opt(v: &str) -> Option<&str> {
    if v.is_empty() { None } else { Some(v) }
}

#[tonic::async_trait]
impl GrpcInferenceService for V2Grpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.manager.repository().is_dir(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        // As Triton: an unknown or unloaded model is simply not ready (tritonclient's
        // is_model_ready() then returns False instead of raising).
        let ready =
            match metadata::model_ready(&self.state.manager, &r.name, version_opt(&r.version)) {
                Ok(ready) => ready,
                Err(e) if e.kind == infermesh_common::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: SERVER_VERSION.into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let meta = metadata::model_meta(&self.state.manager, &r.name, version_opt(&r.version))?;
        let t = |m: &metadata::TensorMeta| pb::model_metadata_response::TensorMetadata {
            name: m.name.clone(),
            datatype: m.datatype.clone(),
            shape: m.shape.clone(),
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: meta.name.clone(),
            versions: meta.versions.clone(),
            platform: meta.platform.clone(),
            inputs: meta.inputs.iter().map(t).collect(),
            outputs: meta.outputs.iter().map(t).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (request, use_raw) = v2::decode_grpc(req.into_inner())?;
        let resp = self.state.infer(request, Protocol::Grpc).await?;
        let mut outputs = Vec::with_capacity(resp.outputs.len());
        let mut raw_output_contents = Vec::new();
        for o in resp.outputs {
            // Answer in the form the request used: raw bytes for raw requests (what Triton and
            // tritonclient use), typed contents otherwise.
            let datatype = o.data.datatype();
            let contents = match (use_raw, o.data) {
                (true, TensorData::Fp32(v)) => {
                    raw_output_contents.push(f32_to_raw(&v));
                    None
                }
                (true, TensorData::Bool(v)) => {
                    raw_output_contents.push(bool_to_raw(&v));
                    None
                }
                (true, TensorData::Int64(v)) => {
                    raw_output_contents.push(i64_to_raw(&v));
                    None
                }
                (true, TensorData::Bytes(v)) => {
                    raw_output_contents.push(bytes_to_raw(&v));
                    None
                }
                (false, TensorData::Fp32(v)) => Some(pb::InferTensorContents {
                    fp32_contents: v,
                    ..Default::default()
                }),
                (false, TensorData::Bool(v)) => Some(pb::InferTensorContents {
                    bool_contents: v,
                    ..Default::default()
                }),
                (false, TensorData::Int64(v)) => Some(pb::InferTensorContents {
                    int64_contents: v,
                    ..Default::default()
                }),
                (false, TensorData::Bytes(v)) => Some(pb::InferTensorContents {
                    bytes_contents: v,
                    ..Default::default()
                }),
            };
            outputs.push(pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: datatype.into(),
                shape: o.shape,
                parameters: HashMap::new(),
                contents,
            });
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: resp.model,
            model_version: resp.version,
            id: resp.id,
            parameters: HashMap::new(),
            outputs,
            raw_output_contents,
        }))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let config = metadata::model_config(&self.state.manager, &r.name, version_opt(&r.version))?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        let models = self
            .state
            .manager
            .index()
            .into_iter()
            .filter(|e| !r.ready || e.state == "READY")
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state,
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.state.check_model_control()?;
        let name = req.into_inner().model_name;
        let mgr = self.state.manager.clone();
        tokio::task::spawn_blocking(move || mgr.load_model(&name))
            .await
            .map_err(ServiceError::internal)??;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.state.check_model_control()?;
        let name = req.into_inner().model_name;
        let mgr = self.state.manager.clone();
        tokio::task::spawn_blocking(move || mgr.unload_model(&name))
            .await
            .map_err(ServiceError::internal)??;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tensor::InputValues;

    fn input(
        name: &str,
        dt: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    #[test]
    fn decodes_typed_and_raw_contents() {
        let req = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT64",
                vec![1, 2],
                Some(pb::InferTensorContents {
                    int64_contents: vec![3, 4],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let t = v2::decode_grpc(req).unwrap().0.v2.inputs;
        assert!(matches!(&t[0].values, InputValues::Numeric(v) if v == &vec![3.0, 4.0]));

        let raw = pb::ModelInferRequest {
            inputs: vec![input("x", "FP64", vec![1, 1], None)],
            raw_input_contents: vec![7.5f64.to_le_bytes().to_vec()],
            ..Default::default()
        };
        let t = v2::decode_grpc(raw).unwrap().0.v2.inputs;
        assert!(matches!(&t[0].values, InputValues::Numeric(v) if v == &vec![7.5]));
    }

    #[test]
    fn refuses_mismatched_counts() {
        let req = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "FP32",
                vec![1, 3],
                Some(pb::InferTensorContents {
                    fp32_contents: vec![1.0],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        assert!(v2::decode_grpc(req).is_err());
        let raw = pb::ModelInferRequest {
            inputs: vec![
                input("x", "FP32", vec![1, 1], None),
                input("y", "FP32", vec![1, 1], None),
            ],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(v2::decode_grpc(raw).is_err());
    }
}
