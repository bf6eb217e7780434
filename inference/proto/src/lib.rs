//! Every infermesh wire protocol, generated at build time from `proto/` (nothing generated is
//! committed).
//!
//! - [`inference`]: the KServe V2 / Open Inference Protocol gRPC service
//!   (`inference.GRPCInferenceService`), written to match the spec's `grpc_predict_v2.proto`
//!   names and field numbers exactly, plus Triton's repository-extension RPCs from its
//!   `grpc_service.proto`, so `tritonclient.grpc` works unmodified;
//! - [`v1`]: the typed `infermesh.v1` services for product APIs.
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// KServe V2 (`package inference`).
pub mod inference {
    tonic::include_proto!("inference");
}

/// Typed services (`package infermesh.v1`).
pub mod v1 {
    tonic::include_proto!("infermesh.v1");
}

/// The encoded `FileDescriptorSet` of every proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

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
    fn descriptor_set_is_embedded() {
        let fds = prost_types_free_decode(super::FILE_DESCRIPTOR_SET);
        assert!(fds > 0);
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
