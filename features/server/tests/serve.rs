//! `infermesh features serve` in process on port 0: Feast's HTTP API and both gRPC services on
//! the one port, writes through push and write-to-online-store, bad input, a store that is
//! down, registry reloads, and `materialize` into a real Redis (`INFERMESH_TEST_REDIS_URL`,
//! which scripts/test.sh provides, else the default port).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use infermesh_feature_server::{
    FeatureServerConfig, RegistryArgs, RunningFeatureServer, StoreArgs, start,
};
use infermesh_features::serving::get_online_features_request::Kind;
use infermesh_features::serving::serving_service_client::ServingServiceClient;
use infermesh_features::serving::{FeatureList, FieldStatus, GetOnlineFeaturesRequest};
use infermesh_features::types::{RepeatedValue, Value, value::Val};
use infermesh_proto::grpc_feature_server::PushRequest;
use infermesh_proto::grpc_feature_server::grpc_feature_server_client::GrpcFeatureServerClient;
use serde_json::{Value as Json, json};

fn registry_toml(project: &str) -> String {
    format!(
        r#"
project = "{project}"
[[entities]]
name = "user"
join_key = "user_id"
value_type = "INT64"
[[entities]]
name = "device"
join_key = "device_id"
value_type = "STRING"
[[feature_views]]
name = "user_spend"
entities = ["user"]
ttl = "1d"
push_source = "user_spend_push"
timestamp_field = "event_timestamp"
features = [{{ name = "user_avg_spend", type = "DOUBLE" }}, {{ name = "txn_count", type = "INT64" }}]
[[feature_views]]
name = "device_risk"
entities = ["device"]
features = [{{ name = "device_risk_score", type = "DOUBLE" }}]
[[feature_services]]
name = "fraud"
features = ["user_spend:user_avg_spend", "device_risk"]
"#
    )
}

fn redis_url() -> String {
    std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A project name no other run uses, so Redis keys never collide.
fn project() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("imtest{}x{nanos}", std::process::id())
}

fn now_rfc3339(offset_s: i64) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        + offset_s;
    infermesh_features::value::format_timestamp(&infermesh_features::Timestamp {
        seconds: t,
        nanos: 0,
    })
}

struct Server {
    running: RunningFeatureServer,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    registry: std::path::PathBuf,
}

async fn serve(project: &str, store: StoreArgs, poll: Option<Duration>) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("features.toml");
    std::fs::write(&registry, registry_toml(project))?;
    let running = start(FeatureServerConfig {
        addr: "127.0.0.1:0".parse()?,
        registry: RegistryArgs {
            registry: registry.clone(),
            project: None,
        },
        registry_poll: poll,
        store,
        max_request_bytes: 1 << 20,
        limits: infermesh_common::limits::PortLimitArgs::default()
            .validate()
            .map_err(anyhow::Error::msg)?,
    })
    .await?;
    let addr = running.addr;
    Ok(Server {
        running,
        addr,
        _dir: dir,
        registry,
    })
}

async fn post(addr: SocketAddr, path: &str, body: &Json) -> Result<(u16, String)> {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feasts_http_api_and_both_grpc_services_share_one_port() -> Result<()> {
    let s = serve(&project(), StoreArgs::default(), None).await?;
    let addr = s.addr;
    assert_eq!(
        reqwest::get(format!("http://{addr}/health"))
            .await?
            .status(),
        200
    );

    // Push (the push source feeds user_spend) and write-to-online-store (device_risk).
    let (code, body) = post(
        addr,
        "/push",
        &json!({"push_source_name": "user_spend_push", "to": "online", "df": {
            "user_id": [1001, 1002], "user_avg_spend": [12.5, null], "txn_count": [3, 4],
            "event_timestamp": [now_rfc3339(-60), now_rfc3339(-60)]}}),
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, ""));
    let (code, body) = post(
        addr,
        "/write-to-online-store",
        &json!({"feature_view_name": "device_risk", "df": {
            "device_id": ["d-1"], "device_risk_score": [0.25],
            "event_timestamp": [now_rfc3339(-5)], "created": [now_rfc3339(0)]}}),
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "null"));

    // Read back over HTTP: join keys first, then views in first-reference order.
    let (code, body) = post(
        addr,
        "/get-online-features",
        &json!({"entities": {"user_id": [1001, "1002", 9], "device_id": ["d-1", "d-1", "zz"]},
                "features": ["user_spend:user_avg_spend", "device_risk:device_risk_score", "user_spend:txn_count"]}),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    let v: Json = serde_json::from_str(&body)?;
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "user_id",
            "device_id",
            "user_avg_spend",
            "txn_count",
            "device_risk_score"
        ])
    );
    let col = |i: usize| v["results"][i].clone();
    assert_eq!(col(0)["values"], json!([1001, 1002, 9]));
    assert_eq!(col(2)["values"], json!([12.5, null, null]));
    assert_eq!(
        col(2)["statuses"],
        json!(["PRESENT", "NULL_VALUE", "NOT_FOUND"])
    );
    assert_eq!(col(3)["values"], json!([3, 4, null]));
    assert_eq!(col(4)["values"], json!([0.25, 0.25, null]));
    assert_eq!(col(4)["event_timestamps"][2], json!("1970-01-01T00:00:00Z"));
    // Doubles keep their point, as Feast's remote client needs.
    assert!(body.contains("12.5") && !body.contains("\"values\":[0,"));

    // A feature service with full feature names.
    let (code, body) = post(
        addr,
        "/get-online-features",
        &json!({"entities": {"user": [1001], "device": ["d-1"]}, "feature_service": "fraud", "full_feature_names": true}),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    let v: Json = serde_json::from_str(&body)?;
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "user_id",
            "device_id",
            "user_spend__user_avg_spend",
            "device_risk__device_risk_score"
        ])
    );

    // gRPC feast.serving.ServingService and GrpcFeatureServer on the same port.
    let endpoint = format!("http://{addr}");
    let mut serving = ServingServiceClient::connect(endpoint.clone()).await?;
    let info = serving
        .get_feast_serving_info(infermesh_features::serving::GetFeastServingInfoRequest {})
        .await?
        .into_inner();
    assert!(info.version.starts_with("infermesh"));
    let int64s = |v: &[i64]| RepeatedValue {
        val: v
            .iter()
            .map(|i| Value {
                val: Some(Val::Int64Val(*i)),
            })
            .collect(),
    };
    let req = GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList {
            val: vec!["user_spend:user_avg_spend".into()],
        })),
        entities: HashMap::from([("user_id".to_owned(), int64s(&[1001, 5]))]),
        ..Default::default()
    };
    let resp = serving.get_online_features(req.clone()).await?.into_inner();
    assert_eq!(resp.results[1].values[0].val, Some(Val::DoubleVal(12.5)));
    assert_eq!(
        resp.results[1].statuses,
        vec![FieldStatus::Present as i32, FieldStatus::NotFound as i32]
    );
    let mut listen = GrpcFeatureServerClient::connect(endpoint).await?;
    let pushed = listen
        .push(PushRequest {
            features: HashMap::from([
                ("user_id".to_owned(), "5".to_owned()),
                ("user_avg_spend".to_owned(), "7.25".to_owned()),
                ("txn_count".to_owned(), "1".to_owned()),
                ("event_timestamp".to_owned(), now_rfc3339(-1)),
            ]),
            stream_feature_view: "user_spend_push".into(),
            to: "online".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(pushed.status);
    let resp = listen.get_online_features(req.clone()).await?.into_inner();
    assert_eq!(resp.results[1].values[1].val, Some(Val::DoubleVal(7.25)));

    // gRPC errors: a wrong entity type, an unknown view, no push source.
    let mut wrong = req.clone();
    wrong.entities = HashMap::from([(
        "user_id".to_owned(),
        RepeatedValue {
            val: vec![Value {
                val: Some(Val::Int32Val(1)),
            }],
        },
    )]);
    let e = serving.get_online_features(wrong).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let mut unknown = req.clone();
    unknown.kind = Some(Kind::Features(FeatureList {
        val: vec!["nope:x".into()],
    }));
    let e = serving.get_online_features(unknown).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = listen
        .push(PushRequest {
            stream_feature_view: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // The metrics of the reads above.
    let m = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    assert!(m.contains("infermesh_feature_values_total"), "{m}");
    s.running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() -> Result<()> {
    let s = serve(&project(), StoreArgs::default(), None).await?;
    let addr = s.addr;
    let many: Vec<i64> = (0..10_001).collect();
    for (path, body, code, why) in [
        (
            "/get-online-features",
            json!({"entities": {"user_id": [1]}, "features": ["nope:x"]}),
            404,
            "nope",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": [1]}, "features": ["user_spend:nope"]}),
            404,
            "nope",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": ["abc"]}, "features": ["user_spend:txn_count"]}),
            400,
            "user_id",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": []}, "features": ["user_spend:txn_count"]}),
            400,
            "no entity rows",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": many}, "features": ["user_spend:txn_count"]}),
            400,
            "10000",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": [1]}}),
            400,
            "feature_service",
        ),
        (
            "/get-online-features",
            json!({"entities": {"device_id": ["a"]}, "features": ["user_spend:txn_count"]}),
            400,
            "user_id",
        ),
        (
            "/get-online-features",
            json!({"entities": {"user_id": [1]}, "feature_service": "nope"}),
            404,
            "nope",
        ),
        (
            "/push",
            json!({"push_source_name": "user_spend_push", "df": {"user_id": [1]}}),
            400,
            "missing",
        ),
        (
            "/push",
            json!({"push_source_name": "user_spend_push", "to": "offline", "df": {"user_id": [1]}}),
            400,
            "online store only",
        ),
        (
            "/push",
            json!({"push_source_name": "nope", "df": {"user_id": [1]}}),
            404,
            "nope",
        ),
        (
            "/write-to-online-store",
            json!({"feature_view_name": "nope", "df": {}}),
            404,
            "nope",
        ),
        (
            "/write-to-online-store",
            json!({"feature_view_name": "device_risk", "df": {"device_id": ["a"], "device_risk_score": ["high"], "event_timestamp": [0]}}),
            400,
            "device_risk_score",
        ),
    ] {
        let (got, text) = post(addr, path, &body).await?;
        assert_eq!(got, code, "{path} {body}: {text}");
        let v: Json = serde_json::from_str(&text)?;
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{path}: {msg}");
    }
    // Malformed JSON and an unknown route.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/get-online-features"))
        .header("content-type", "application/json")
        .body("{\"entities\": ")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("invalid JSON"));
    let r = reqwest::get(format!("http://{addr}/nope")).await?;
    assert_eq!(r.status(), 404);
    // A body over the limit.
    let big = "x".repeat(2 << 20);
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/push"))
        .body(big)
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    s.running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_answers_503_and_unavailable() -> Result<()> {
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let s = serve(
        &project(),
        StoreArgs {
            redis_url: Some(format!("redis://{free}")),
            store_timeout_ms: 200,
            ..StoreArgs::default()
        },
        None,
    )
    .await?;
    let addr = s.addr;
    let r = reqwest::get(format!("http://{addr}/health")).await?;
    assert_eq!(r.status(), 503);
    let (code, body) = post(
        addr,
        "/get-online-features",
        &json!({"entities": {"user_id": [1]}, "features": ["user_spend:txn_count"]}),
    )
    .await?;
    assert_eq!(code, 503, "{body}");
    assert!(serde_json::from_str::<Json>(&body)?["error"].is_string());
    let mut c = ServingServiceClient::connect(format!("http://{addr}")).await?;
    let e = c
        .get_online_features(GetOnlineFeaturesRequest {
            kind: Some(Kind::Features(FeatureList {
                val: vec!["user_spend:txn_count".into()],
            })),
            entities: HashMap::from([(
                "user_id".to_owned(),
                RepeatedValue {
                    val: vec![Value {
                        val: Some(Val::Int64Val(1)),
                    }],
                },
            )]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    s.running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_registry_is_reloaded_and_a_broken_one_ignored() -> Result<()> {
    let project = project();
    let s = serve(
        &project,
        StoreArgs::default(),
        Some(Duration::from_millis(50)),
    )
    .await?;
    let body = json!({"entities": {"user_id": [1]}, "features": ["user_spend:extra"]});
    assert_eq!(post(s.addr, "/get-online-features", &body).await?.0, 404);
    // A broken file is ignored...
    std::fs::write(&s.registry, "project = [")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = json!({"entities": {"user_id": [1]}, "features": ["user_spend:txn_count"]});
    assert_eq!(post(s.addr, "/get-online-features", &ok).await?.0, 200);
    // ... and a good one taken.
    let text = registry_toml(&project).replace(
        "{ name = \"txn_count\", type = \"INT64\" }",
        "{ name = \"txn_count\", type = \"INT64\" }, { name = \"extra\", type = \"STRING\" }",
    );
    std::fs::write(&s.registry, text)?;
    let mut code = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        code = post(s.addr, "/get-online-features", &body).await?.0;
        if code == 200 {
            break;
        }
    }
    assert_eq!(code, 200);
    s.running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_writes_the_latest_row_per_entity_into_redis() -> Result<()> {
    use infermesh_feature_server::materialize::{MaterializeArgs, run};
    let project = project();
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("features.toml");
    std::fs::write(&registry, registry_toml(&project))?;
    let csv = dir.path().join("spend.csv");
    std::fs::write(
        &csv,
        format!(
            "user_id,user_avg_spend,txn_count,event_timestamp\n\
             1,10.0,1,{}\n1,20.0,2,{}\n2,5.5,,{}\n3,1.0,1,2001-01-01T00:00:00Z\n",
            now_rfc3339(-100),
            now_rfc3339(-50),
            now_rfc3339(-70)
        ),
    )?;
    let redis = StoreArgs {
        redis_url: Some(redis_url()),
        ..StoreArgs::default()
    };
    let args = MaterializeArgs {
        registry: RegistryArgs {
            registry: registry.clone(),
            project: None,
        },
        source: csv.clone(),
        view: "user_spend".into(),
        timestamp_field: None,
        start: Some("2020-01-01T00:00:00Z".into()),
        end: None,
        batch_rows: 2,
        store: redis.clone(),
        no_progress: true,
    };
    let report = run(args.clone()).await?;
    assert_eq!(
        (
            report.rows_read,
            report.rows_in_window,
            report.entities,
            report.written
        ),
        (4, 3, 2, 2)
    );
    // A second run writes nothing: nothing is newer.
    assert_eq!(run(args.clone()).await?.written, 0);
    // The server reads what materialize wrote.
    let s = serve(&project, redis, None).await?;
    let (code, body) = post(
        s.addr,
        "/get-online-features",
        &json!({"entities": {"user_id": [1, 2, 3]}, "features": ["user_spend:user_avg_spend", "user_spend:txn_count"]}),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    let v: Json = serde_json::from_str(&body)?;
    assert_eq!(v["results"][1]["values"], json!([20.0, 5.5, null]));
    assert_eq!(v["results"][2]["values"], json!([2, null, null]));
    assert_eq!(
        v["results"][2]["statuses"],
        json!(["PRESENT", "NULL_VALUE", "NOT_FOUND"])
    );
    s.running.shutdown().await?;
    // A bad cell stops the run before anything is written.
    std::fs::write(
        &csv,
        "user_id,user_avg_spend,txn_count,event_timestamp\n9,abc,1,2024-01-01T00:00:00Z\n",
    )?;
    let e = run(args).await.unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("user_avg_spend"), "{e}");
    Ok(())
}
