//! KServe V2 gRPC and the typed FraudScoring service against a real server on port 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::*;
use infermesh_proto::inference as pb;
use infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infermesh_proto::v1;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use tonic::Code;
use tonic::transport::Channel;

async fn v2(s: &infermesh_server::RunningServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap()
}

fn infer_req(model: &str, version: &str, rows: &[f32], raw: bool) -> pb::ModelInferRequest {
    let n = (rows.len() / FRAUD_FEATURES) as i64;
    let mut input = pb::model_infer_request::InferInputTensor {
        name: "input__0".into(),
        datatype: "FP32".into(),
        shape: vec![n, FRAUD_FEATURES as i64],
        parameters: HashMap::new(),
        contents: None,
    };
    let mut raw_input_contents = Vec::new();
    if raw {
        raw_input_contents.push(rows.iter().flat_map(|v| v.to_le_bytes()).collect());
    } else {
        input.contents = Some(pb::InferTensorContents {
            fp32_contents: rows.to_vec(),
            ..Default::default()
        });
    }
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        id: "g1".into(),
        inputs: vec![input],
        raw_input_contents,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_grpc_health_metadata_and_infer() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let mut c = v2(&s).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let md = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.name, "infermesh");
    let mm = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "fraud".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mm.versions, vec!["1"]);
    assert_eq!(mm.inputs[0].shape, vec![-1, 16]);
    assert!(
        c.model_ready(pb::ModelReadyRequest {
            name: "fraud".into(),
            version: "1".into()
        })
        .await
        .unwrap()
        .into_inner()
        .ready
    );

    let mut rows = row(2);
    rows.extend(row(5));
    let expected = direct_predict(&rows);
    // Typed contents in, typed contents out.
    let r = c
        .model_infer(infer_req("fraud", "", &rows, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "1");
    assert_eq!(r.id, "g1");
    let got = &r.outputs[0].contents.as_ref().unwrap().fp32_contents;
    assert_eq!(r.outputs[0].shape, vec![2]);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }
    // Raw in, raw out.
    let r = c
        .model_infer(infer_req("fraud", "1", &rows, true))
        .await
        .unwrap()
        .into_inner();
    let raw = &r.raw_output_contents[0];
    let got: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_grpc_errors_have_the_right_codes() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 64 * 1024).await;
    let mut c = v2(&s).await;
    let rows = row(1);
    let code =
        |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(c.model_infer(infer_req("nope", "", &rows, false)).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.model_infer(infer_req("fraud", "7", &rows, false)).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.model_infer(infer_req("fraud", "", &rows[..15], false))
                .await
        ),
        Code::InvalidArgument
    );
    let mut wrong_type = infer_req("fraud", "", &rows, false);
    wrong_type.inputs[0].datatype = "BYTES".into();
    wrong_type.inputs[0].contents = Some(pb::InferTensorContents {
        bytes_contents: vec![b"x".to_vec(); 16],
        ..Default::default()
    });
    assert_eq!(code(c.model_infer(wrong_type).await), Code::InvalidArgument);
    let mut bad_raw = infer_req("fraud", "", &rows, true);
    bad_raw.raw_input_contents[0].pop();
    assert_eq!(code(c.model_infer(bad_raw).await), Code::InvalidArgument);
    let mut mixed = infer_req("fraud", "", &rows, true);
    mixed.raw_input_contents.push(vec![0; 4]);
    assert_eq!(code(c.model_infer(mixed).await), Code::InvalidArgument);
    let err = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Over --max-request-bytes.
    let big: Vec<f32> = (0..FRAUD_FEATURES * 2000).map(|i| i as f32).collect();
    assert_eq!(
        code(c.model_infer(infer_req("fraud", "", &big, true)).await),
        Code::ResourceExhausted
    );

    // Malformed protobuf: field 1 (model_name, a string) sent as a fixed64.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Bogus {
        #[prost(fixed64, tag = "1")]
        model_name: u64,
    }
    let channel = Channel::from_shared(format!("http://{}", s.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Bogus, pb::ModelInferResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer");
    let err = grpc
        .unary(tonic::Request::new(Bogus { model_name: 7 }), path, codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Still serving.
    assert!(
        c.model_infer(infer_req("fraud", "", &rows, false))
            .await
            .is_ok()
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fraud_scoring_returns_probability_decision_and_reasons() {
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let mut c = FraudScoringClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let names = infermesh_server::sample::SAMPLE_FRAUD_FEATURES;
    let r = row(3);
    let mut features: HashMap<String, f64> = names
        .iter()
        .zip(&r)
        .map(|(n, v)| (n.to_string(), f64::from(*v)))
        .collect();
    features.remove("device_risk_score"); // missing
    let mut expected_row = r.clone();
    expected_row[4] = f32::NAN;
    let expected = direct_predict(&expected_row)[0];

    let req = v1::ScoreRequest {
        transaction_id: "t1".into(),
        features: features.clone(),
        top_k_reasons: Some(3),
        ..Default::default()
    };
    let resp = c.score(req).await.unwrap().into_inner();
    assert_eq!(resp.transaction_id, "t1");
    assert_eq!(resp.model_name, "fraud");
    assert_eq!(resp.model_version, "1");
    assert!((resp.probability - f64::from(expected)).abs() < 1e-6);
    assert_eq!(resp.is_fraud, resp.probability > 0.5);
    assert_eq!(resp.threshold, 0.5);
    assert_eq!(resp.reasons.len(), 3);
    for w in resp.reasons.windows(2) {
        assert!(w[0].contribution.abs() >= w[1].contribution.abs());
    }
    // Reasons are the model's exact TreeSHAP values.
    use infermesh_model_core::TabularModel;
    let m = infermesh_trees::TreeEnsemble::load(
        &sample_model_path(),
        infermesh_trees::ModelFormat::XgboostJson,
    )
    .unwrap();
    let contribs = m.contributions(&expected_row).unwrap();
    for reason in &resp.reasons {
        let i = names.iter().position(|n| *n == reason.feature).unwrap();
        assert!((reason.contribution - f64::from(contribs[i])).abs() < 1e-5);
    }
    // Contributions add up to the margin.
    let all = c
        .score(v1::ScoreRequest {
            transaction_id: "t1".into(),
            features: features.clone(),
            top_k_reasons: Some(16),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sum: f64 =
        all.reasons.iter().map(|r| r.contribution).sum::<f64>() + f64::from(contribs[16]);
    assert!((sum - all.margin).abs() < 1e-3, "{sum} vs {}", all.margin);
    assert!(
        all.reasons
            .iter()
            .any(|r| r.feature == "device_risk_score" && r.missing)
    );

    // top_k 0: no reasons (and no TreeSHAP), same probability.
    let none = c
        .score(v1::ScoreRequest {
            transaction_id: "t1".into(),
            features: features.clone(),
            top_k_reasons: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.reasons.is_empty());
    assert_eq!(none.probability, resp.probability);
    // Unset: the default 5.
    let default = c
        .score(v1::ScoreRequest {
            transaction_id: "t1".into(),
            features: features.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.reasons.len(), 5);

    // Batch equals singles.
    let batch = c
        .score_batch(v1::ScoreBatchRequest {
            requests: vec![
                v1::ScoreRequest {
                    transaction_id: "a".into(),
                    features: features.clone(),
                    ..Default::default()
                },
                v1::ScoreRequest {
                    transaction_id: "b".into(),
                    features: HashMap::new(),
                    ..Default::default()
                },
            ],
            top_k_reasons: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.responses.len(), 2);
    assert_eq!(batch.responses[0].transaction_id, "a");
    assert!((batch.responses[0].probability - resp.probability).abs() < 1e-9);
    assert_eq!(batch.responses[1].reasons.len(), 2);

    // Reasons over the threshold only: a row under it gets none unless it asks itself.
    let risky: HashMap<String, f64> = names
        .iter()
        .zip([
            912.5, 3.0, 1.0, 0.41, 0.35, 48.0, 19.0, 4.0, 9.0, 240.0, 1.0, 0.0, 21.0, 2.0, 6.0, 1.0,
        ])
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    let low = features.clone();
    let only = |requests: Vec<v1::ScoreRequest>| v1::ScoreBatchRequest {
        requests,
        top_k_reasons: Some(3),
        reasons_over_threshold_only: true,
        ..Default::default()
    };
    let rows = |top_k: Option<u32>| {
        vec![
            v1::ScoreRequest {
                transaction_id: "high".into(),
                features: risky.clone(),
                ..Default::default()
            },
            v1::ScoreRequest {
                transaction_id: "low".into(),
                features: low.clone(),
                top_k_reasons: top_k,
                ..Default::default()
            },
        ]
    };
    let selective = c.score_batch(only(rows(None))).await.unwrap().into_inner();
    let (high, under) = (&selective.responses[0], &selective.responses[1]);
    assert!(high.is_fraud && !under.is_fraud, "{high:?} {under:?}");
    assert_eq!(high.reasons.len(), 3);
    assert!(under.reasons.is_empty());
    let asked = c
        .score_batch(only(rows(Some(2))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(asked.responses[1].reasons.len(), 2);
    assert_eq!(asked.responses[1].probability, under.probability);

    // Bad input.
    let mut bad = features.clone();
    bad.insert("shoe_size".into(), 42.0);
    let err = c
        .score(v1::ScoreRequest {
            transaction_id: "t2".into(),
            features: bad.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("shoe_size"));
    // A batch may ask for features the model does not take to be dropped instead: it then
    // scores as if they were not sent.
    let lenient = c
        .score_batch(v1::ScoreBatchRequest {
            requests: vec![v1::ScoreRequest {
                transaction_id: "t2".into(),
                features: bad.clone(),
                ..Default::default()
            }],
            ignore_unknown_features: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!((lenient.responses[0].probability - resp.probability).abs() < 1e-9);
    let err = c
        .score(v1::ScoreRequest {
            transaction_id: "t3".into(),
            model_name: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut inf = features.clone();
    inf.insert("amount".into(), f64::INFINITY);
    let err = c
        .score(v1::ScoreRequest {
            transaction_id: "t4".into(),
            features: inf,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_grpc_health_and_reflection() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let repo = sample_repo();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let channel = Channel::from_shared(format!("http://{}", s.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(channel.clone());
    for service in [
        "",
        "inference.GRPCInferenceService",
        "infermesh.v1.FraudScoring",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service}");
    }
    let err = h
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut r = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService"),
        "{names:?}"
    );
    assert!(names.contains(&"infermesh.v1.FraudScoring"), "{names:?}");
    s.shutdown().await.unwrap();
}
