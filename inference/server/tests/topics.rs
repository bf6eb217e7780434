//! The topic-model family through the server: a tiny topic model the test fits on MiniLM
//! embeddings of three themes (weights from the model cache the README's test command
//! fills), served with its `embedder/`: KServe V2 REST (JSON) and gRPC (raw and typed
//! contents, INT64 `topic`), metadata and model config from the family's description, the
//! typed `infermesh.v1.Topics/Assign` and `List`, the request bounds, reflection, and a
//! corrupt version refused while the rest serve.
#![cfg(all(feature = "topics", feature = "text", feature = "trees"))]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use infermesh_proto::inference as v2pb;
use infermesh_text::SentenceEncoder;
use infermesh_topics::serving::pb::topics_client::TopicsClient;
use infermesh_topics::serving::pb::{TopicsAssignRequest, TopicsListRequest};
use infermesh_topics::{HdbscanParams, Matrix, TopicModel, TopicParams, UmapParams};
use serde_json::{Value, json};
use tonic::Code;

const SUBJECTS: [[&str; 5]; 3] = [
    ["striker", "goalkeeper", "referee", "midfielder", "coach"],
    ["baker", "pastry chef", "grandmother", "home cook", "chef"],
    [
        "astronomer",
        "astronaut",
        "telescope team",
        "space agency",
        "physicist",
    ],
];
const PREDICATES: [[&str; 4]; 3] = [
    [
        "scored a late goal in the football match",
        "was sent off during the league game",
        "celebrated the championship win with the fans",
        "trained on the pitch before the cup final",
    ],
    [
        "baked a chocolate cake with butter and sugar",
        "kneaded the bread dough and let it rise in the oven",
        "whisked eggs and flour for the sponge recipe",
        "decorated the cupcakes with vanilla frosting",
    ],
    [
        "observed a distant galaxy through the telescope",
        "launched a rocket to orbit the planet Mars",
        "discovered a comet passing near the sun",
        "studied the stars and black holes of the milky way",
    ],
];

/// Texts the model never saw, one per theme.
const NEW: [&str; 3] = [
    "The forward headed the ball into the net and the football crowd cheered",
    "She rolled out the pastry dough and baked apple pies in the oven",
    "The space telescope photographed a new planet orbiting a distant star",
];

/// Fits the tiny model on 20 texts per theme, embedded by MiniLM.
fn fit(encoder: &SentenceEncoder) -> TopicModel {
    let mut texts = Vec::new();
    for i in 0..20 {
        for t in 0..3 {
            texts.push(format!(
                "The {} {}",
                SUBJECTS[t][i % 5],
                PREDICATES[t][i / 5]
            ));
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let emb = Matrix::from_rows(&encoder.embed(&refs).unwrap()).unwrap();
    // BERTopic's 15 neighbours: with 10, one seed in ten (42 among them) merges two of the
    // themes on these 60 texts.
    let params = TopicParams {
        umap: UmapParams {
            n_neighbors: 15,
            ..UmapParams::default()
        },
        hdbscan: HdbscanParams {
            // Above the 10 texts sharing two predicates (a sub-theme that some CPUs' float
            // rounding lets HDBSCAN split off), below the 20 of a theme.
            min_cluster_size: 11,
            min_samples: None,
        },
        ..TopicParams::default()
    };
    TopicModel::fit(&texts, &emb, &params).unwrap()
}

/// A topics model folder: config, version 1 with the artifact and MiniLM linked as embedder/.
fn write_version(repo: &Path, name: &str, model: &TopicModel) -> PathBuf {
    let dir = repo.join(name).join("1");
    model.save(&dir).unwrap();
    let emb = dir.join("embedder");
    std::fs::create_dir_all(&emb).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling",
    ] {
        std::os::unix::fs::symlink(minilm_dir().join(f), emb.join(f)).unwrap();
    }
    std::fs::write(
        repo.join(name).join("config.toml"),
        "platform = \"topics\"\nengine = \"candle\"\nmax_client_batch_size = 8\nmax_text_bytes = 200\n",
    )
    .unwrap();
    dir
}

/// The error of a typed call that must fail.
fn status<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.unwrap_err()
}

fn v2_texts(texts: &[&str]) -> Value {
    json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [texts.len()], "data": texts}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_models_serve_v2_typed_and_refuse_a_corrupt_version() {
    let encoder = SentenceEncoder::load(&minilm_dir()).unwrap();
    let model = fit(&encoder);
    assert_eq!(model.n_topics(), 3, "{:?}", model.topics());
    // What the served model must answer, computed in process.
    let new_emb = Matrix::from_rows(&encoder.embed(&NEW).unwrap()).unwrap();
    let (want_topics, want_probs) = model.transform(Some(&NEW[..]), &new_emb).unwrap();
    let mut distinct = want_topics.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![0, 1, 2],
        "one theme per topic: {want_topics:?}"
    );

    let repo = sample_repo();
    write_version(repo.path(), "topics", &model);
    // A corrupt version (half of topics.safetensors): refused with its reason, the rest serve.
    let broken = write_version(repo.path(), "broken", &model);
    let t = broken.join("topics.safetensors");
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let s = start(repo.path(), 0.0, 1 << 20).await;
    let base = format!("http://{}", s.http_addr);

    // Metadata and Triton model config come from the family.
    let meta = get_json(&format!("{base}/v2/models/topics")).await;
    assert_eq!(meta["platform"], "topics");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "topic", "datatype": "INT64", "shape": [-1]},
               {"name": "probability", "datatype": "FP32", "shape": [-1]}])
    );
    let config = get_json(&format!("{base}/v2/models/topics/config")).await;
    assert_eq!(config["backend"], "infermesh-topics");
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["output"][0]["data_type"], "TYPE_INT64");
    assert_eq!(
        config["parameters"]["engine"]["string_value"], "candle",
        "{config}"
    );

    // REST JSON: topics as JSON integers, probabilities within tolerance.
    let out = post_json(&format!("{base}/v2/models/topics/infer"), &v2_texts(&NEW)).await;
    assert_eq!(out["model_name"], "topics");
    assert_eq!(out["outputs"][0]["datatype"], "INT64");
    assert_eq!(out["outputs"][0]["shape"], json!([3]));
    let got: Vec<i64> = out["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(got, want_topics, "{out}");
    let probs: Vec<f64> = out["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (g, w) in probs.iter().zip(&want_probs) {
        assert!((g - f64::from(*w)).abs() < 0.05, "{g} vs {w}");
    }

    // Over the bounds, or not texts: 400 with the reason.
    let client = reqwest::Client::new();
    let long = "a".repeat(201);
    for (bad, why) in [
        (v2_texts(&["x"; 9]), "max_client_batch_size"),
        (v2_texts(&["fine", long.as_str()]), "max_text_bytes"),
        (
            json!({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
            "BYTES",
        ),
        (
            json!({"inputs": [{"name": "input__0", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}),
            "text",
        ),
    ] {
        let r = client
            .post(format!("{base}/v2/models/topics/infer"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(why), "{why}: {e}");
    }

    // gRPC V2: raw contents answer INT64 as 8 little-endian bytes each; typed contents as
    // int64_contents.
    let mut g = v2pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!(
        "http://{}",
        s.grpc_addr
    ))
    .await
    .unwrap();
    let input = v2pb::model_infer_request::InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape: vec![3],
        ..Default::default()
    };
    let raw = g
        .model_infer(v2pb::ModelInferRequest {
            model_name: "topics".into(),
            inputs: vec![input.clone()],
            raw_input_contents: vec![raw_bytes(&NEW)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw.outputs[0].datatype, "INT64");
    let topics: Vec<i64> = raw.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(topics, want_topics);
    let typed = g
        .model_infer(v2pb::ModelInferRequest {
            model_name: "topics".into(),
            inputs: vec![v2pb::model_infer_request::InferInputTensor {
                contents: Some(v2pb::InferTensorContents {
                    bytes_contents: NEW.iter().map(|t| t.as_bytes().to_vec()).collect(),
                    ..Default::default()
                }),
                ..input
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        typed.outputs[0].contents.as_ref().unwrap().int64_contents,
        want_topics
    );

    // The typed service; the default model is "topics".
    let mut c = TopicsClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let assigned = c
        .assign(TopicsAssignRequest {
            texts: NEW.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (assigned.model.as_str(), assigned.version.as_str()),
        ("topics", "1")
    );
    assert_eq!(assigned.assignments.len(), 3);
    for ((a, &want), &p) in assigned
        .assignments
        .iter()
        .zip(&want_topics)
        .zip(&want_probs)
    {
        assert_eq!(a.topic, want);
        assert!((a.probability - p).abs() < 0.05);
        let info = model.topics().iter().find(|t| t.id == want).unwrap();
        assert_eq!(a.label, info.label);
        let words: Vec<&str> = info.keywords.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(a.keywords, words);
        assert!(a.label.starts_with(&format!("{want}_")), "{}", a.label);
    }
    let listed = c
        .list(TopicsListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.topics.len(), model.topics().len());
    for (got, want) in listed.topics.iter().zip(model.topics()) {
        assert_eq!((got.id, got.size as usize), (want.id, want.size));
        assert_eq!(got.label, want.label);
        assert_eq!(got.keywords.len(), want.keywords.len());
        for (k, (w, weight)) in got.keywords.iter().zip(&want.keywords) {
            assert_eq!(&k.word, w);
            assert!((k.weight - weight).abs() < 1e-12);
        }
    }
    assert_eq!(listed.topics.iter().map(|t| t.size).sum::<u64>(), 60);

    // Errors through the one ErrorKind mapping.
    let e = status(
        c.assign(TopicsAssignRequest {
            model: "nope".into(),
            texts: vec!["a".into()],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = status(
        c.assign(TopicsAssignRequest {
            texts: vec!["x".into(); 9],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_client_batch_size"), "{e:?}");
    let e = status(
        c.assign(TopicsAssignRequest {
            texts: vec![long.clone()],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_text_bytes"), "{e:?}");
    let e = status(
        c.assign(TopicsAssignRequest {
            model: "fraud".into(),
            texts: vec!["a".into()],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument, "another family's model");
    let e = c
        .list(TopicsListRequest {
            model: "broken".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // Reflection lists the typed service.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut r = ServerReflectionClient::new(channel);
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    assert!(
        list.service.iter().any(|s| s.name == "infermesh.v1.Topics"),
        "{list:?}"
    );

    // The corrupt version is not served, and the index says why.
    let index = post_json(&format!("{base}/v2/repository/index"), &json!({})).await;
    let row = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "broken" && r["version"] == "1")
        .cloned()
        .unwrap();
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("invalid topic model artifact"),
        "{row}"
    );
    s.shutdown().await.unwrap();
}
