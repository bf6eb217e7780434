//! The Redis online store against a real Redis (`INFERMESH_TEST_REDIS_URL`, which
//! scripts/test.sh provides, else the default port): Feast's layout byte for byte, newest
//! event wins, key TTLs, and a dead Redis as a prompt UNAVAILABLE error.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use infermesh_common::ErrorKind;
use infermesh_features::Timestamp;
use infermesh_features::key::{entity_key, feature_field, timestamp_field};
use infermesh_features::store::{OnlineStore, ReadOp, RedisStore, WriteOp};
use infermesh_features::types::{Value, value::Val};
use prost::Message;

fn redis_url() -> String {
    std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A project name no other run uses, so keys never collide.
fn project() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("infermesh-test-{}-{nanos}", std::process::id())
}

fn double(v: f64) -> Option<Value> {
    Some(Value {
        val: Some(Val::DoubleVal(v)),
    })
}

#[tokio::test]
async fn rows_are_written_in_feasts_layout_and_read_back() -> Result<()> {
    let project = project();
    let store = RedisStore::new(
        &redis_url(),
        Duration::from_secs(2),
        Some(Duration::from_secs(3600)),
    )?;
    store.ping().await?;
    let id = Value {
        val: Some(Val::Int64Val(1001)),
    };
    let key = entity_key(&[("driver_id", &id)], &project)?;
    let conv = feature_field("driver_stats", "conv_rate");
    let trips = feature_field("driver_stats", "trips");
    let ts_field = timestamp_field("driver_stats");
    let at = |seconds| Timestamp { seconds, nanos: 0 };
    let op = |t, v| WriteOp {
        key: key.clone(),
        timestamp_field: ts_field.clone(),
        event_time: at(t),
        fields: vec![(conv, double(v)), (trips, None)],
    };
    assert_eq!(store.write(&[op(1_704_110_400, 0.5)]).await?, [true]);
    // Older and equal events are skipped; a newer one replaces the values.
    assert_eq!(store.write(&[op(1_704_110_000, 0.1)]).await?, [false]);
    assert_eq!(store.write(&[op(1_704_110_400, 0.2)]).await?, [false]);

    // The bytes Feast's Redis store would hold.
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await?;
    let get = |f: &[u8]| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.clone());
    assert_eq!(get(&conv), double(0.5).map(|v| v.encode_to_vec()));
    assert_eq!(
        get(&trips),
        Some(Vec::new()),
        "a null feature is empty bytes"
    );
    assert_eq!(
        get(&ts_field),
        Some(vec![0x08, 0xc0, 0xd2, 0xca, 0xac, 0x06])
    );
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

    let missing = entity_key(
        &[(
            "driver_id",
            &Value {
                val: Some(Val::Int64Val(9999)),
            },
        )],
        &project,
    )?;
    let wanted = [conv, trips];
    let rows = store
        .read(&[
            ReadOp {
                key: &key,
                timestamp_field: &ts_field,
                fields: &wanted,
            },
            ReadOp {
                key: &missing,
                timestamp_field: &ts_field,
                fields: &wanted,
            },
        ])
        .await?;
    assert_eq!(rows[0].values, vec![double(0.5), None]);
    assert_eq!(rows[0].event_time, Some(at(1_704_110_400)));
    assert_eq!(rows[1].values, vec![None, None]);
    assert_eq!(rows[1].event_time, None);

    assert_eq!(store.write(&[op(1_704_120_000, 0.7)]).await?, [true]);
    let rows = store
        .read(&[ReadOp {
            key: &key,
            timestamp_field: &ts_field,
            fields: &wanted,
        }])
        .await?;
    assert_eq!(rows[0].values[0], double(0.7));
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    Ok(())
}

#[tokio::test]
async fn a_dead_redis_is_unavailable_promptly() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    let started = std::time::Instant::now();
    let store = RedisStore::new(&format!("redis://{addr}"), Duration::from_millis(200), None)?;
    let err = store.ping().await.expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = store
        .read(&[ReadOp {
            key: b"k",
            timestamp_field: b"_ts:v",
            fields: &[[0; 4]],
        }])
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}
