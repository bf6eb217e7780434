//! The recommender served over typed gRPC and V2 (REST and gRPC), from the sample repository's
//! `recs` model (a generated shop: users u1..u50 prefer one of four categories).
#![allow(clippy::unwrap_used)]

mod common;

use infermesh_proto::inference as v2;
use infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::recommender_client::RecommenderClient;
use infermesh_recs::RecsArtifact;
use serde_json::{Value, json};

fn request(user: &str, k: u32) -> pb::RecommendRequest {
    pb::RecommendRequest {
        user_id: user.into(),
        k,
        ..Default::default()
    }
}

/// The category of item `p{n}` in the sample shop.
fn category(item: &str) -> usize {
    item[1..].parse::<usize>().unwrap() % 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_recommendations_are_personal_filtered_and_cold_started() {
    let repo = common::sample_repo();
    let art = RecsArtifact::load(&repo.path().join("recs/1")).unwrap();
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let mut c = RecommenderClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();

    // u1 prefers category 1 (bikes) and never gets an item it has seen.
    let r = c.recommend(request("u1", 10)).await.unwrap().into_inner();
    assert_eq!(
        (r.model_name.as_str(), r.model_version.as_str()),
        ("recs", "1")
    );
    assert_eq!(r.strategy, pb::Strategy::Personalised as i32);
    assert_eq!(r.items.len(), 10);
    let u1 = art.users.get("u1").unwrap() as usize;
    let seen: Vec<&str> = art
        .seen
        .row(u1)
        .0
        .iter()
        .map(|&i| art.items.id(i))
        .collect();
    for it in &r.items {
        assert!(
            !seen.contains(&it.item_id.as_str()),
            "{} was seen",
            it.item_id
        );
    }
    let home = r.items.iter().filter(|i| category(&i.item_id) == 1).count();
    assert!(
        home >= 7,
        "only {home} of 10 from u1's category: {:?}",
        r.items
    );
    assert!(r.items.windows(2).all(|w| w[0].score >= w[1].score));

    // With seen items allowed, the list changes (some seen items score high).
    let all = c
        .recommend(pb::RecommendRequest {
            exclude_seen: Some(false),
            ..request("u1", 10)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.items.iter().any(|i| seen.contains(&i.item_id.as_str())));

    // Item-feature filter and exclusions.
    let r = c
        .recommend(pb::RecommendRequest {
            filter: Some(pb::ItemFilter {
                features: vec!["category:tents".into()],
                exclude: vec!["p2".into(), "no-such-item".into()],
                ..Default::default()
            }),
            ..request("u1", 5)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.items
            .iter()
            .all(|i| category(&i.item_id) == 2 && i.item_id != "p2")
    );

    // Recent items excluded.
    let top = c
        .recommend(request("u2", 1))
        .await
        .unwrap()
        .into_inner()
        .items[0]
        .item_id
        .clone();
    let r = c
        .recommend(pb::RecommendRequest {
            recent_items: vec![top.clone()],
            recent_mode: pb::RecentItems::Exclude as i32,
            ..request("u2", 10)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.items.iter().all(|i| i.item_id != top));

    // Cold start: features of a user without history; an unknown user gets popularity
    // within the filter.
    let r = c
        .recommend(request("newcomer", 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.strategy, pb::Strategy::UserFeatures as i32);
    let r = c
        .recommend(pb::RecommendRequest {
            user_features: vec!["segment:shoes".into()],
            ..request("stranger", 5)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.strategy, pb::Strategy::UserFeatures as i32);
    let r = c
        .recommend(pb::RecommendRequest {
            filter: Some(pb::ItemFilter {
                include: vec!["p1".into(), "p2".into(), "p3".into()],
                ..Default::default()
            }),
            ..request("nobody", 2)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.strategy, pb::Strategy::Popularity as i32);
    assert_eq!(r.items.len(), 2);
    let pop = |id: &str| art.popularity[art.items.get(id).unwrap() as usize];
    assert!(pop(&r.items[0].item_id) >= pop(&r.items[1].item_id));

    // Bad requests: clear codes, never a panic.
    for (req, code) in [
        (request("u1", 0), tonic::Code::InvalidArgument),
        (request("u1", 101), tonic::Code::InvalidArgument),
        (request("", 5), tonic::Code::InvalidArgument),
        (
            pb::RecommendRequest {
                filter: Some(pb::ItemFilter {
                    include: vec!["p1".into(), "ghost".into()],
                    ..Default::default()
                }),
                ..request("u1", 5)
            },
            tonic::Code::InvalidArgument,
        ),
        (
            pb::RecommendRequest {
                filter: Some(pb::ItemFilter {
                    features: vec!["category:boats".into()],
                    ..Default::default()
                }),
                ..request("u1", 5)
            },
            tonic::Code::InvalidArgument,
        ),
        (
            pb::RecommendRequest {
                model_name: "nope".into(),
                ..request("u1", 5)
            },
            tonic::Code::NotFound,
        ),
        (
            pb::RecommendRequest {
                model_name: "fraud".into(),
                ..request("u1", 5)
            },
            tonic::Code::InvalidArgument,
        ),
    ] {
        let e = c.recommend(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(!e.message().is_empty());
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_rest_and_grpc_serve_item_ids_and_scores() {
    let repo = common::sample_repo();
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let base = format!("http://{}", s.http_addr);
    let meta = common::get_json(&format!("{base}/v2/models/recs")).await;
    assert_eq!(meta["platform"], "recommender");
    assert_eq!(meta["inputs"][0]["name"], "user_id");
    assert_eq!(meta["outputs"][1]["name"], "score");
    let config = common::get_json(&format!("{base}/v2/models/recs/config")).await;
    assert_eq!(config["backend"], "infermesh-recs", "{config}");

    let http = reqwest::Client::new();
    let resp = common::post_json(
        &format!("{base}/v2/models/recs/infer"),
        &json!({"inputs": [
            {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["u1", "nobody"]},
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [4]}
        ]}),
    )
    .await;
    let ids = &resp["outputs"][0];
    assert_eq!(ids["name"], "item_id");
    assert_eq!(ids["shape"], json!([2, 4]));
    assert_eq!(resp["outputs"][1]["shape"], json!([2, 4]));
    let typed = RecommenderClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap()
        .recommend(request("u1", 4))
        .await
        .unwrap()
        .into_inner();
    let want: Vec<&str> = typed.items.iter().map(|i| i.item_id.as_str()).collect();
    let got: Vec<&str> = ids["data"].as_array().unwrap()[..4]
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, want);

    // Bad V2 input: k of 0, and an unknown output.
    let bad = http
        .post(format!("{base}/v2/models/recs/infer"))
        .json(&json!({"inputs": [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]},
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [0]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains('k'), "{body}");
    let bad = http
        .post(format!("{base}/v2/models/recs/infer"))
        .json(&json!({"inputs": [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]}
        ], "outputs": [{"name": "embedding"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // gRPC V2 with raw BYTES contents (default k of 10).
    let mut g = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let raw = common::raw_bytes(&["u1"]);
    let r = g
        .model_infer(v2::ModelInferRequest {
            model_name: "recs".into(),
            inputs: vec![v2::model_infer_request::InferInputTensor {
                name: "user_id".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![1, 10]);
    assert_eq!(r.outputs[1].datatype, "FP32");
    s.shutdown().await.unwrap();
}
