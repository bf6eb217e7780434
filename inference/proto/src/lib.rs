//! Every infermesh wire protocol, generated at build time from `proto/` (nothing generated is
//! committed).
//!
//! - [`inference`]: the KServe V2 / Open Inference Protocol gRPC service
//!   (`inference.GRPCInferenceService`), written to match the spec's `grpc_predict_v2.proto`
//!   names and field numbers exactly (written here, not copied), plus Triton's
//!   repository-extension RPCs (`RepositoryIndex`, `RepositoryModelLoad`,
//!   `RepositoryModelUnload`) and a field subset of its `ModelConfig`, with the messages, names
//!   and numbers of Triton's `grpc_service.proto` / `model_config.proto`, so `tritonclient.grpc`
//!   works unmodified. (KServe's own repository messages number `model_name` 1; Triton's, used
//!   here, number it 2 after `repository_name`.)
//! - [`v1`]: the typed `infermesh.v1` services for product APIs.
//! - [`feast`]: Feast 0.67's online-serving messages and services (`feast.types`,
//!   `feast.serving`, the registry's `feast.core`) and [`grpc_feature_server`] (the
//!   package-less `GrpcFeatureServer` of `feast listen`), written to Feast's names and field
//!   numbers (see `docs/feast.md`).

/// KServe V2 (`package inference`).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Typed services (`package infermesh.v1`).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("infermesh.v1");
}

/// Feast's messages and services.
pub mod feast {
    /// `package feast.types`: values and entity keys.
    #[allow(missing_docs, missing_debug_implementations, clippy::all)]
    pub mod types {
        tonic::include_proto!("feast.types");
    }
    /// `package feast.serving`: `ServingService` and its messages.
    #[allow(missing_docs, missing_debug_implementations, clippy::all)]
    pub mod serving {
        tonic::include_proto!("feast.serving");
    }
    /// `package feast.core`: the registry (the part online serving reads).
    #[allow(missing_docs, missing_debug_implementations, clippy::all)]
    pub mod core {
        tonic::include_proto!("feast.core");
    }
}

/// `GrpcFeatureServer`, the service of `feast listen` (declared without a package).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod grpc_feature_server {
    // The generated code names the feast packages from the root.
    use super::feast;
    tonic::include_proto!("_");
}

/// The encoded `FileDescriptorSet` of the inference server's protos (KServe V2 and
/// `infermesh.v1`), for its gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// The encoded `FileDescriptorSet` of Feast's protos, for the feature server's reflection.
pub const FEAST_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/feast_descriptor.bin"));

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::inference::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_spec() {
        // raw_input_contents is field 7 (wire type 2): tag byte 7 << 3 | 2 = 0x3a.
        let req = ModelInferRequest::decode(&[0x3a, 0x02, 0xab, 0xcd][..]).unwrap();
        assert_eq!(req.raw_input_contents, vec![vec![0xab, 0xcd]]);
        // model_name = 1, model_version = 2, id = 3.
        let req =
            ModelInferRequest::decode(&[0x0a, 0x01, b'm', 0x12, 0x01, b'2', 0x1a, 0x01, b'i'][..])
                .unwrap();
        assert_eq!(
            (
                req.model_name.as_str(),
                req.model_version.as_str(),
                req.id.as_str()
            ),
            ("m", "2", "i")
        );
        // raw_output_contents is field 6 of the response: 6 << 3 | 2 = 0x32.
        let resp = ModelInferResponse {
            raw_output_contents: vec![vec![1]],
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), vec![0x32, 0x01, 0x01]);
        // fp32_contents is field 6 (packed): 0x32.
        let c = InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        };
        assert_eq!(c.encode_to_vec()[0], 0x32);
        // bytes_contents is field 8: 0x42.
        let c = InferTensorContents {
            bytes_contents: vec![vec![7]],
            ..Default::default()
        };
        assert_eq!(c.encode_to_vec(), vec![0x42, 0x01, 0x07]);
        // RepositoryIndexRequest.ready is field 2 (varint): 0x10.
        assert_eq!(
            RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            }
            .encode_to_vec(),
            vec![0x10, 0x01]
        );
    }

    #[test]
    fn model_infer_request_round_trips() {
        let mut parameters = std::collections::HashMap::new();
        parameters.insert(
            "priority".to_owned(),
            InferParameter {
                parameter_choice: Some(infer_parameter::ParameterChoice::Uint64Param(3)),
            },
        );
        let req = ModelInferRequest {
            model_name: "fraud".into(),
            model_version: "2".into(),
            id: "req-1".into(),
            parameters,
            inputs: vec![model_infer_request::InferInputTensor {
                name: "features".into(),
                datatype: "FP32".into(),
                shape: vec![1, 3],
                parameters: Default::default(),
                contents: Some(InferTensorContents {
                    fp32_contents: vec![0.5, -1.0, 2.25],
                    ..Default::default()
                }),
            }],
            outputs: vec![model_infer_request::InferRequestedOutputTensor {
                name: "probability".into(),
                parameters: Default::default(),
            }],
            raw_input_contents: vec![vec![0, 0, 128, 63]],
        };
        let back = ModelInferRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
        // uint64_param is oneof member 5 (Triton's addition to KServe's 1..=3): 5 << 3 = 0x28.
        let p = InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::Uint64Param(3)),
        };
        assert_eq!(p.encode_to_vec(), vec![0x28, 0x03]);
        // RepositoryModelLoadRequest.model_name is field 2 (Triton), not 1 (KServe's own copy).
        let load = RepositoryModelLoadRequest::decode(&[0x12, 0x01, b'm'][..]).unwrap();
        assert_eq!(load.model_name, "m");
        assert!(load.repository_name.is_empty());
    }

    #[test]
    fn fraud_field_numbers() {
        use crate::v1::ScoreResponse;
        // probability is field 2 (fixed64: 2 << 3 | 1 = 0x11), margin field 8 (0x41).
        let r = ScoreResponse {
            probability: 1.0,
            margin: 1.0,
            ..Default::default()
        };
        let mut want = vec![0x11];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.push(0x41);
        want.extend_from_slice(&1.0f64.to_le_bytes());
        assert_eq!(r.encode_to_vec(), want);
    }

    #[test]
    fn descriptor_set_is_embedded() {
        let files = prost_types_free_decode(super::FILE_DESCRIPTOR_SET);
        assert_eq!(
            files, 5,
            "grpc_predict_v2, fraud, text, resume and recs protos"
        );
        let has = |needle: &[u8]| {
            super::FILE_DESCRIPTOR_SET
                .windows(needle.len())
                .any(|w| w == needle)
        };
        assert!(has(b"GRPCInferenceService"));
        assert!(has(b"FraudScoring"));
        assert!(has(b"Recommender"));
        assert!(has(b"TextEmbedding") && has(b"Categorizer") && has(b"ResumeMatcher"));
        assert!(
            !has(b"GrpcFeatureServer"),
            "Feast's services are the feature server's"
        );
        // Feast's five files and the two well-known types they import.
        assert_eq!(prost_types_free_decode(super::FEAST_FILE_DESCRIPTOR_SET), 7);
        let feast = |needle: &[u8]| {
            super::FEAST_FILE_DESCRIPTOR_SET
                .windows(needle.len())
                .any(|w| w == needle)
        };
        assert!(feast(b"GrpcFeatureServer") && feast(b"ServingService"));
    }

    /// Counts the files in the descriptor set without pulling in prost-types: field 1 of
    /// FileDescriptorSet is `repeated FileDescriptorProto file`.
    fn prost_types_free_decode(mut bytes: &[u8]) -> usize {
        let mut n = 0;
        while !bytes.is_empty() {
            let key = prost::encoding::decode_varint(&mut bytes).unwrap();
            assert_eq!(key, (1 << 3) | 2);
            let len = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
            bytes = &bytes[len..];
            n += 1;
        }
        n
    }
}
