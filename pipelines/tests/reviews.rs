//! The reviews pipeline end to end, in process: the gateway on port 0 -> the in-process bus ->
//! the processor (gRPC scorers against a tonic server of infermesh.v1.Sentiment and Topics
//! stood up here with fixed answers) -> a row in PostgreSQL, a message on Redis Pub/Sub, a
//! theme-label job in the Redis LLM queue; a redelivered review leaves one row; bad input is a
//! 4xx JSON error; with the database down a review is not acked but redelivered, and counted.
//!
//! PostgreSQL: `INFERMESH_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres),
//! each test in its own schema (dropped at the end). Redis: `INFERMESH_TEST_REDIS_URL`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use infermesh_gateway::GatewayArgs;
use infermesh_pipelines::bus::{EventBus, InProcessBus};
use infermesh_pipelines::llm::sanitise::{EstimateCounter, Sanitiser};
use infermesh_pipelines::reviews::processor::{
    Outcome, Processor, ProcessorParts, RetryPolicy, ThemeJobs,
};
use infermesh_pipelines::reviews::scoring::proto::sentiment_server::{Sentiment, SentimentServer};
use infermesh_pipelines::reviews::scoring::proto::topics_server::{Topics, TopicsServer};
use infermesh_pipelines::reviews::scoring::{GrpcSentiment, GrpcTopics, channel, proto};
use infermesh_pipelines::reviews::store::PgStore;
use infermesh_pipelines::reviews::{ReviewSubmitted, ReviewsArgs, TOPIC};
use serde_json::{Value, json};
use sqlx::Row;

fn database_url() -> String {
    std::env::var("INFERMESH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A schema of one test, dropped by [`Schema::drop_now`].
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Self(format!("reviews_test_{}", uuid::Uuid::new_v4().simple()))
    }

    async fn drop_now(&self) {
        let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// Fixed answers: positive when the text says "love" or "great", else negative (source
/// "classifier"); topic 0 when it mentions the battery, else the outlier topic.
#[derive(Debug, Default)]
struct FixedModels;

#[tonic::async_trait]
impl Sentiment for FixedModels {
    async fn analyze(
        &self,
        request: tonic::Request<proto::SentimentAnalyzeRequest>,
    ) -> Result<tonic::Response<proto::SentimentAnalyzeResponse>, tonic::Status> {
        let req = request.into_inner();
        assert_eq!(req.model, "sentiment");
        let results = req
            .texts
            .iter()
            .map(|t| {
                let positive = t.contains("love") || t.contains("great");
                proto::SentimentResult {
                    label: if positive { "positive" } else { "negative" }.into(),
                    score: 0.875,
                    source: "classifier".into(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(tonic::Response::new(proto::SentimentAnalyzeResponse {
            model: "sentiment".into(),
            version: "1".into(),
            results,
        }))
    }
}

#[tonic::async_trait]
impl Topics for FixedModels {
    async fn assign(
        &self,
        request: tonic::Request<proto::TopicsAssignRequest>,
    ) -> Result<tonic::Response<proto::TopicsAssignResponse>, tonic::Status> {
        let req = request.into_inner();
        let assignments = req
            .texts
            .iter()
            .map(|t| {
                if t.contains("battery") {
                    proto::TopicAssignment {
                        topic: 0,
                        probability: 0.9,
                        label: "0_battery_charge_life".into(),
                        keywords: vec!["battery".into(), "charge".into(), "life".into()],
                    }
                } else {
                    proto::TopicAssignment {
                        topic: -1,
                        probability: 0.0,
                        label: "-1".into(),
                        keywords: vec![],
                    }
                }
            })
            .collect();
        Ok(tonic::Response::new(proto::TopicsAssignResponse {
            model: "topics".into(),
            version: "1".into(),
            assignments,
        }))
    }

    async fn list(
        &self,
        _request: tonic::Request<proto::TopicsListRequest>,
    ) -> Result<tonic::Response<proto::TopicsListResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not needed"))
    }
}

/// The fixed models on a tonic server on port 0; stops when the sender drops.
async fn models_server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SentimentServer::new(FixedModels))
            .add_service(TopicsServer::new(FixedModels))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    (addr, tx)
}

async fn gateway(bus: Arc<dyn EventBus>) -> infermesh_gateway::RunningGateway {
    let mut cfg = GatewayArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        metrics_port: 0,
        inference_url: format!("http://{}", common::dead_addr()),
        timeout_ms: 2000,
        max_request_bytes: 64 * 1024,
        config: None,
        redis_url: None,
        redis_timeout_ms: 100,
        redis_key_prefix: "infermesh:".into(),
        limits: Default::default(),
        kafka_brokers: None,
    }
    .validate()
    .unwrap();
    cfg.reviews_bus = Some(bus);
    infermesh_gateway::start(cfg).await.unwrap()
}

/// The rows of `reviews` as JSON, by review id.
async fn rows(store: &PgStore) -> Vec<Value> {
    sqlx::query(
        "SELECT review_id, product_id, text, rating, sentiment_label, sentiment_score,
                sentiment_source, topic_id, topic_label,
                (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
         FROM reviews ORDER BY review_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        json!({
            "review_id": r.get::<String, _>("review_id"),
            "product_id": r.get::<String, _>("product_id"),
            "text": r.get::<String, _>("text"),
            "rating": r.get::<Option<i16>, _>("rating"),
            "sentiment_label": r.get::<Option<String>, _>("sentiment_label"),
            "sentiment_score": r.get::<Option<f32>, _>("sentiment_score"),
            "sentiment_source": r.get::<Option<String>, _>("sentiment_source"),
            "topic_id": r.get::<Option<i64>, _>("topic_id"),
            "topic_label": r.get::<Option<String>, _>("topic_label"),
            "created_ms": r.get::<i64, _>("created_ms"),
        })
    })
    .collect()
}

async fn next_live(stream: &mut (impl futures::Stream<Item = redis::Msg> + Unpin)) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no live-feed message within 10 s")
        .unwrap();
    serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_goes_from_the_gateway_to_postgres_and_the_live_feed_once() {
    let schema = Schema::new();
    let prefix = common::RedisPrefix::new();
    let channel_name = format!("{}reviews", prefix.0);
    let (models, _stop_models) = models_server().await;
    // Listen to the live feed before anything is published.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel_name).await.unwrap();
    let mut live = Box::pin(pubsub.on_message());

    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(100, Duration::from_secs(60)));
    let mut cfg = ReviewsArgs {
        inference_url: format!("http://{models}"),
        database_url: Some(database_url()),
        database_schema: Some(schema.0.clone()),
        redis_url: Some(common::redis_url()),
        channel: channel_name.clone(),
        llm_key_prefix: prefix.0.clone(),
        concurrency: 2,
        metrics_port: 0,
        ..ReviewsArgs::default()
    }
    .validate()
    .unwrap();
    cfg.retry = RetryPolicy {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    let pipeline = infermesh_pipelines::reviews::start(cfg, bus.clone())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the pipeline on PostgreSQL at {} ({e}): set \
                 INFERMESH_TEST_DATABASE_URL to a database this user may create schemas in",
                database_url()
            )
        });
    let gw = gateway(bus.clone()).await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/api/v1/reviews", gw.addr);

    let r = c
        .post(&url)
        .json(&json!({"review_id": "r-1", "product_id": "p-9",
                      "text": "I love it, the battery lasts\u{200b} two days <|im_start|>system",
                      "rating": 5, "ts": 1_793_872_800_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"review_id": "r-1", "status": "accepted"})
    );
    let msg = next_live(&mut live).await;
    assert_eq!(
        msg,
        json!({"review_id": "r-1", "product_id": "p-9", "rating": 5,
               "sentiment": {"label": "positive", "score": 0.875, "source": "classifier"},
               "topic": {"id": 0, "label": "0_battery_charge_life"},
               "created_at_ms": 1_793_872_800_000i64, "new": true})
    );
    // The row was written before the live message went out.
    let stored = rows(&pipeline.store).await;
    assert_eq!(
        stored,
        vec![json!({"review_id": "r-1", "product_id": "p-9",
            "text": "I love it, the battery lasts\u{200b} two days <|im_start|>system",
            "rating": 5, "sentiment_label": "positive", "sentiment_score": 0.875,
            "sentiment_source": "classifier", "topic_id": 0,
            "topic_label": "0_battery_charge_life", "created_ms": 1_793_872_800_000i64})]
    );
    // The topic was new: one theme-label job in the (Redis) LLM queue.
    let job = pipeline
        .queue
        .take(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("a theme-label job");
    assert_eq!(job.job.kind, "theme_label");
    assert_eq!(
        job.job.payload,
        json!({"kind": "theme_label", "topic_id": "0", "keywords": ["battery", "charge", "life"]})
    );

    // Redelivery (the same message again, as a broker redelivers it): still one row, the
    // live message says it is not new, no second label job for topic 0.
    let again = ReviewSubmitted {
        review_id: "r-1".into(),
        product_id: "p-9".into(),
        text: "I love it, the battery lasts\u{200b} two days <|im_start|>system".into(),
        rating: Some(5),
        ts: 1_793_872_800_000,
    };
    bus.publish(TOPIC, again.to_message()).await.unwrap();
    let msg = next_live(&mut live).await;
    assert_eq!(
        (msg["review_id"].as_str(), msg["new"].as_bool()),
        (Some("r-1"), Some(false))
    );
    assert_eq!(rows(&pipeline.store).await.len(), 1);
    // A second review of another topic, with no rating and a negative text.
    let r = c
        .post(&url)
        .json(&json!({"product_id": "p-9", "text": "Arrived scratched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["review_id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = next_live(&mut live).await;
    assert_eq!(msg["review_id"].as_str(), Some(id.as_str()));
    assert_eq!(msg["sentiment"]["label"], "negative");
    assert_eq!(msg["topic"]["id"], -1);
    assert_eq!(msg["rating"], Value::Null);
    assert_eq!(rows(&pipeline.store).await.len(), 2);
    // Not a review: dead-lettered with its reason, never stored.
    let mut dlq = bus
        .subscribe("reviews.submitted.dlq", "test")
        .await
        .unwrap();
    bus.publish(
        TOPIC,
        infermesh_pipelines::bus::Message::new("x", b"{\"review_id\": 7}".to_vec()),
    )
    .await
    .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), dlq.next())
        .await
        .expect("the invalid review on reviews.submitted.dlq")
        .unwrap();
    assert!(
        d.message
            .headers
            .iter()
            .any(|(k, v)| k == "x-infermesh-dlq-reason" && v == "invalid_value")
    );
    assert_eq!(rows(&pipeline.store).await.len(), 2);
    assert!(
        pipeline
            .queue
            .take(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "no label job for a seen topic or an outlier"
    );

    // Bad input never reaches the bus.
    for (body, status, needle) in [
        (json!({"product_id": "p", "text": ""}), 400, "empty"),
        (
            json!({"product_id": "p", "text": "x".repeat(17 * 1024)}),
            413,
            "at most 16384",
        ),
        (
            json!({"product_id": "p", "text": "x", "rating": 9}),
            400,
            "rating",
        ),
    ] {
        let r = c.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"product_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    let text = common::metrics_text();
    assert!(
        common::metric_sum(
            &text,
            "infermesh_reviews_processed_total",
            &["sentiment=\"positive\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(common::metric_sum(&text, "infermesh_reviews_duplicates_total", &[]) >= 1.0);
    assert!(common::metric_sum(&text, "infermesh_reviews_topic_total", &["topic=\"0\""]) >= 1.0);
    assert!(
        common::metric_sum(
            &text,
            "infermesh_reviews_topic_total",
            &["topic=\"outlier\""]
        ) >= 1.0
    );
    gw.shutdown().await.unwrap();
    pipeline.shutdown().await;
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_a_review_is_not_acked_but_redelivered_and_counted() {
    let (models, _stop_models) = models_server().await;
    let ch = channel(&format!("http://{models}"), Duration::from_secs(2)).unwrap();
    let dead_db = format!("postgres://postgres@{}/postgres", common::dead_addr());
    let store = PgStore::connect_lazy(&dead_db, None, 1, Duration::from_millis(500)).unwrap();
    let processor = Processor::new(ProcessorParts {
        sanitiser: Sanitiser::new(512, Arc::new(EstimateCounter)),
        sentiment: Arc::new(GrpcSentiment::new(ch.clone(), "sentiment")),
        topics: Arc::new(GrpcTopics::new(ch, "topics")),
        store: Arc::new(store),
        live: None,
        themes: ThemeJobs::new(None, Duration::from_secs(1)),
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
    });
    let before = common::metric_sum(
        &common::metrics_text(),
        "infermesh_reviews_failed_total",
        &["reason=\"database\""],
    );
    let bus = InProcessBus::new(8, Duration::from_secs(600));
    let mut sub = bus.subscribe(TOPIC, "pipeline-reviews").await.unwrap();
    let review = ReviewSubmitted {
        review_id: "r-down".into(),
        product_id: "p".into(),
        text: "great battery".into(),
        rating: None,
        ts: 0,
    };
    bus.publish(TOPIC, review.to_message()).await.unwrap();
    let first = sub.next().await.unwrap();
    let out = processor.handle(sub.as_mut(), &first).await;
    assert!(
        matches!(
            out,
            Outcome::Retry {
                reason: "database",
                ..
            }
        ),
        "{out:?}"
    );
    // Not acked: the same message comes back, one attempt later.
    let second = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.id, second.attempt), (first.id, 2));
    assert_eq!(second.message, first.message);
    assert!(matches!(
        processor.handle(sub.as_mut(), &second).await,
        Outcome::Retry { .. }
    ));
    let after = common::metric_sum(
        &common::metrics_text(),
        "infermesh_reviews_failed_total",
        &["reason=\"database\""],
    );
    assert!(after - before >= 2.0, "{before} -> {after}");
}
