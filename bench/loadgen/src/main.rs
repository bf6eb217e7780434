//! `infermesh-loadgen`: closed-loop load at a fixed concurrency against the V2 gRPC
//! `ModelInfer`, the typed `FraudScoring/Score` or `TextEmbedding/Embed` (one request = `--rows` rows of `--features` FP32 values, raw contents, as
//! tritonclient sends them), the gateway's fraud route, or a Feast feature server (HTTP or
//! gRPC); prints p50/p90/p99/max latency and
//! throughput as one JSON line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use infermesh_proto::grpc_feature_server::grpc_feature_server_client::GrpcFeatureServerClient;
use infermesh_proto::inference as pb;
use infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use infermesh_proto::v1::recommender_client::RecommenderClient;
use infermesh_proto::v1::text_embedding_client::TextEmbeddingClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// KServe V2 gRPC ModelInfer.
    Grpc,
    /// Typed infermesh.v1.FraudScoring/Score (features f0..fN by name, 5 TreeSHAP reasons).
    Fraud,
    /// Gateway POST /api/v1/fraud/score.
    Gateway,
    /// Typed infermesh.v1.TextEmbedding/Embed: `--rows` sentences of ~12 words per request.
    Embed,
    /// The inference server's OpenAI-compatible POST /v1/embeddings (JSON floats back), the
    /// same sentences as `embed`; `--url` is the server's HTTP address.
    OpenaiEmbed,
    /// Typed infermesh.v1.Recommender/Recommend: top 10 for users 1..=--users in turn.
    Recs,
    /// Gateway GET /api/v1/recommendations/{user}?k=10 for the same user every time (a
    /// cache hit after the first request).
    GatewayRecsHit,
    /// Gateway GET /api/v1/recommendations/{user}?k=K where (user, K) never repeats (a cache
    /// miss every time, up to --users x 90 requests).
    GatewayRecsMiss,
    /// A Feast feature server's HTTP POST /get-online-features (`feast serve` or `infermesh
    /// features serve`): `--rows` entities (`user_id` u1..u{--users}) x `--feature-refs`.
    FeastHttp,
    /// The same read over gRPC `GrpcFeatureServer/GetOnlineFeatures` (`feast listen` or
    /// `infermesh features serve`).
    FeastGrpc,
    /// Typed FraudScoring/Score with the sample fraud model's named features; with
    /// `--store-fill`, user_avg_spend and device_risk_score are left to the server's feature
    /// store (user u1..u{--users}, device dev-1..dev-20).
    FraudSample,
}

const WORDS: [&str; 24] = [
    "payment",
    "coffee",
    "monthly",
    "transfer",
    "grocery",
    "store",
    "refund",
    "invoice",
    "travel",
    "airline",
    "subscription",
    "salary",
    "rent",
    "insurance",
    "online",
    "order",
    "restaurant",
    "fuel",
    "station",
    "electricity",
    "bill",
    "pharmacy",
    "gym",
    "market",
];

/// A deterministic sentence of 12 words.
fn sentence(seed: usize) -> String {
    (0..12)
        .map(|j| WORDS[(seed * 31 + j * 17 + j * j * 7) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Closed-loop load generator for infermesh benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// What to load.
    #[arg(long, value_enum, default_value = "grpc")]
    target: Target,
    /// Server address (gRPC: http://127.0.0.1:8001; gateway: http://127.0.0.1:8080).
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    url: String,
    /// Model name.
    #[arg(long, default_value = "fraud")]
    model: String,
    /// Features per row.
    #[arg(long, default_value_t = 30)]
    features: usize,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Concurrent in-flight requests (each on its own HTTP/2 connection when --connections is 0).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// gRPC connections shared by the workers (0: one per worker).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Requests per worker (after warm-up).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Warm-up requests per worker, not measured.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Stop after this many seconds whatever the count.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Recommender targets: user ids are 1..=users.
    #[arg(long, default_value_t = 943)]
    users: usize,
    /// fraud-sample: leave user_avg_spend and device_risk_score to the feature store.
    #[arg(long)]
    store_fill: bool,
    /// Feast targets: the feature references read (comma-separated `view:feature`).
    #[arg(
        long,
        default_value = "user_stats:avg_spend,user_stats:txn_count,user_stats:risk"
    )]
    feature_refs: String,
}

/// A transaction for the sample fraud model (its 16 named features; two of them left to the
/// feature store with `--store-fill`).
fn sample_score(args: &Args, w: usize, i: usize) -> infermesh_proto::v1::ScoreRequest {
    let n = w * 7919 + i;
    let mut features: HashMap<String, f64> = [
        ("amount", 912.5),
        ("hour_of_day", 3.0),
        ("is_night", 1.0),
        ("merchant_risk", 0.41),
        ("amount_to_avg_ratio", 19.0),
        ("txn_count_1h", 4.0),
        ("txn_count_24h", 9.0),
        ("distance_from_home_km", 240.0),
        ("is_foreign", 1.0),
        ("card_present", 0.0),
        ("account_age_days", 21.0),
        ("failed_logins_24h", 2.0),
        ("new_device", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if !args.store_fill {
        features.insert("user_avg_spend".into(), 48.0);
        features.insert("device_risk_score".into(), 0.35);
    }
    infermesh_proto::v1::ScoreRequest {
        transaction_id: format!("w{w}-{i}"),
        features,
        model_name: args.model.clone(),
        top_k_reasons: Some(3),
        user_id: format!("u{}", 1 + n % args.users),
        device_id: format!("dev-{}", 1 + n % 20),
        ..Default::default()
    }
}

/// The Feast read of worker `w`'s request `i`: `rows` user ids, as HTTP JSON and as gRPC.
fn feast_read(
    args: &Args,
    w: usize,
    i: usize,
) -> (
    serde_json::Value,
    infermesh_proto::feast::serving::GetOnlineFeaturesRequest,
) {
    use infermesh_proto::feast::serving::{FeatureList, get_online_features_request::Kind};
    use infermesh_proto::feast::types::{RepeatedValue, Value, value::Val};
    let users: Vec<String> = (0..args.rows)
        .map(|r| format!("u{}", 1 + (w * 7919 + i * 31 + r) % args.users))
        .collect();
    let refs: Vec<String> = args.feature_refs.split(',').map(str::to_owned).collect();
    let json = serde_json::json!({"entities": {"user_id": users}, "features": refs});
    let grpc = infermesh_proto::feast::serving::GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList { val: refs })),
        entities: HashMap::from([(
            "user_id".to_owned(),
            RepeatedValue {
                val: users
                    .into_iter()
                    .map(|u| Value {
                        val: Some(Val::StringVal(u)),
                    })
                    .collect(),
            },
        )]),
        ..Default::default()
    };
    (json, grpc)
}

fn request(args: &Args, seed: usize) -> pb::ModelInferRequest {
    let n = args.rows * args.features;
    let raw: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 7 + seed * 13) % 101) as f32 / 10.0).to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: args.model.clone(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input__0".into(),
            datatype: "FP32".into(),
            shape: vec![args.rows as i64, args.features as i64],
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut channels = Vec::new();
    if matches!(
        args.target,
        Target::Grpc
            | Target::Fraud
            | Target::Embed
            | Target::Recs
            | Target::FeastGrpc
            | Target::FraudSample
    ) {
        let n = if args.connections == 0 {
            args.concurrency
        } else {
            args.connections
        };
        for _ in 0..n.max(1) {
            let ch = tonic::transport::Endpoint::from_shared(args.url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", args.url))?;
            channels.push(ch);
        }
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let args = args.clone();
        let channel = channels.get(w % channels.len().max(1)).cloned();
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            let req = request(&args, w);
            let features: HashMap<String, f64> =
                (0..args.features).map(|i| (format!("f{i}"), ((i * 7 + w * 13) % 101) as f64 / 10.0)).collect();
            let score = infermesh_proto::v1::ScoreRequest {
                transaction_id: format!("w{w}"),
                features: features.clone(),
                model_name: args.model.clone(),
                ..Default::default()
            };
            let body = serde_json::json!({"transaction_id": format!("w{w}"), "features": features, "model": args.model});
            let embed_req = infermesh_proto::v1::EmbedRequest {
                texts: (0..args.rows).map(|r| sentence(w * 1000 + r)).collect(),
                model_name: args.model.clone(),
                ..Default::default()
            };
            let openai_body = serde_json::json!({"input": &embed_req.texts, "model": args.model});
            let mut embed = channel.clone().map(TextEmbeddingClient::new);
            let mut recs = channel.clone().map(RecommenderClient::new);
            let mut fraud = channel.clone().map(FraudScoringClient::new);
            let mut feast = channel.clone().map(GrpcFeatureServerClient::new);
            let mut client = channel.map(GrpcInferenceServiceClient::new);
            for i in 0..(args.warmup + args.requests) {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let ok = match (&mut client, args.target) {
                    (Some(c), Target::Grpc) => c.model_infer(req.clone()).await.is_ok(),
                    (_, Target::Fraud) => match &mut fraud {
                        Some(f) => f.score(score.clone()).await.is_ok(),
                        None => false,
                    },
                    (_, Target::Embed) => match &mut embed {
                        Some(e) => e.embed(embed_req.clone()).await.is_ok(),
                        None => false,
                    },
                    (_, Target::OpenaiEmbed) => {
                        match http
                            .post(format!("{}/v1/embeddings", args.url))
                            .json(&openai_body)
                            .send()
                            .await
                        {
                            // Read the whole answer, as a client must to reuse the connection.
                            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                            _ => false,
                        }
                    }
                    (_, Target::Recs) => match &mut recs {
                        Some(r) => r
                            .recommend(infermesh_proto::v1::RecommendRequest {
                                user_id: format!("{}", 1 + (w * 7919 + i) % args.users),
                                k: 10,
                                model_name: args.model.clone(),
                                ..Default::default()
                            })
                            .await
                            .is_ok(),
                        None => false,
                    },
                    (_, Target::FeastHttp) => {
                        let (body, _) = feast_read(&args, w, i);
                        match http
                            .post(format!("{}/get-online-features", args.url))
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                            _ => false,
                        }
                    }
                    (_, Target::FraudSample) => match &mut fraud {
                        Some(f) => f.score(sample_score(&args, w, i)).await.is_ok(),
                        None => false,
                    },
                    (_, Target::FeastGrpc) => match &mut feast {
                        Some(f) => f.get_online_features(feast_read(&args, w, i).1).await.is_ok(),
                        None => false,
                    },
                    (_, Target::GatewayRecsHit | Target::GatewayRecsMiss) => {
                        let (user, k) = if args.target == Target::GatewayRecsHit {
                            (1 + w % args.users, 10)
                        } else {
                            let n = w * (args.warmup + args.requests) + i;
                            (1 + n % args.users, 10 + (n / args.users) % 90)
                        };
                        http.get(format!("{}/api/v1/recommendations/{user}?k={k}", args.url))
                            .send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false)
                    }
                    _ => http
                        .post(format!("{}/api/v1/fraud/score", args.url))
                        .json(&body)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false),
                };
                if i >= args.warmup {
                    if ok {
                        hist.record(t.elapsed().as_nanos() as u64)?;
                    } else {
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut total = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        total.add(h)?;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    let us = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(), "concurrency": args.concurrency, "rows": args.rows,
            "requests": total.len(), "errors": errors,
            "p50_us": us(0.5), "p90_us": us(0.9), "p99_us": us(0.99), "max_us": total.max() as f64 / 1000.0,
            "throughput_rps": total.len() as f64 / secs,
            "rows_per_s": (total.len() as usize * args.rows) as f64 / secs,
        })
    );
    Ok(())
}
