//! Online reads and writes over the in-memory store: Feast's response layout, statuses,
//! names, and the errors a bad request gets.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use infermesh_features::online::{MAX_ENTITY_ROWS, OnlineRequest, Wanted, get_online_features};
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::serving::{FieldStatus, GetOnlineFeaturesResponse};
use infermesh_features::store::MemoryStore;
use infermesh_features::types::{Value, value::Val};
use infermesh_features::write::{RowWrite, write_rows};
use infermesh_features::{FeatureError, Timestamp};

const TOML: &str = r#"
project = "shop"

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
ttl = "1h"
features = [{ name = "user_avg_spend", type = "DOUBLE" }, { name = "orders", type = "INT64" }]

[[feature_views]]
name = "device_risk"
entities = ["device"]
features = [{ name = "device_risk_score", type = "DOUBLE" }, { name = "orders", type = "INT64" }]

[[feature_services]]
name = "fraud"
features = ["user_spend:user_avg_spend", "device_risk"]
"#;

fn int(v: i64) -> Value {
    Value {
        val: Some(Val::Int64Val(v)),
    }
}
fn double(v: f64) -> Value {
    Value {
        val: Some(Val::DoubleVal(v)),
    }
}
fn string(v: &str) -> Value {
    Value {
        val: Some(Val::StringVal(v.into())),
    }
}
fn now_minus(secs: u64) -> Timestamp {
    let t = SystemTime::now() - Duration::from_secs(secs);
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}

async fn setup() -> Result<(FeatureRegistry, MemoryStore)> {
    let registry = FeatureRegistry::from_toml(TOML, None).map_err(anyhow::Error::msg)?;
    let store = MemoryStore::new(1000, None);
    let rows = vec![
        RowWrite {
            view: "user_spend".into(),
            entity: vec![("user_id".into(), int(1))],
            features: vec![
                ("user_avg_spend".into(), double(42.5)),
                ("orders".into(), int(3)),
            ],
            event_time: now_minus(10),
        },
        // Two hours old: past the view's one-hour ttl.
        RowWrite {
            view: "user_spend".into(),
            entity: vec![("user_id".into(), int(2))],
            features: vec![
                ("user_avg_spend".into(), double(7.0)),
                ("orders".into(), Value::default()),
            ],
            event_time: now_minus(7200),
        },
        RowWrite {
            view: "device_risk".into(),
            entity: vec![("device_id".into(), string("d1"))],
            features: vec![
                ("device_risk_score".into(), double(0.9)),
                ("orders".into(), int(8)),
            ],
            event_time: now_minus(5),
        },
    ];
    assert_eq!(write_rows(&registry, &store, &rows).await?, 3);
    Ok((registry, store))
}

fn names(r: &GetOnlineFeaturesResponse) -> Vec<String> {
    r.metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map(|f| f.val.clone())
        .unwrap_or_default()
}

fn statuses(r: &GetOnlineFeaturesResponse, col: usize) -> Vec<FieldStatus> {
    r.results[col]
        .statuses
        .iter()
        .map(|s| FieldStatus::try_from(*s).unwrap_or(FieldStatus::Invalid))
        .collect()
}

#[tokio::test]
async fn reads_answer_in_feasts_columns_with_statuses() -> Result<()> {
    let (registry, store) = setup().await?;
    let req = OnlineRequest {
        wanted: Wanted::Refs(vec![
            "user_spend:orders".into(),
            "user_spend:user_avg_spend".into(),
        ]),
        // By entity name: answered under the join key.
        entities: vec![("user".into(), vec![int(1), int(2), int(3), int(1)])],
        full_feature_names: false,
    };
    let r = get_online_features(&registry, &store, &req).await?;
    assert_eq!(names(&r), ["user_id", "orders", "user_avg_spend"]);
    assert_eq!(r.results[0].values, vec![int(1), int(2), int(3), int(1)]);
    assert_eq!(statuses(&r, 0), vec![FieldStatus::Present; 4]);
    use FieldStatus::*;
    assert_eq!(statuses(&r, 1), vec![Present, NullValue, NotFound, Present]);
    assert_eq!(
        statuses(&r, 2),
        vec![Present, OutsideMaxAge, NotFound, Present]
    );
    assert_eq!(
        r.results[2].values,
        vec![double(42.5), double(7.0), Value::default(), double(42.5)]
    );
    assert_eq!(r.results[2].event_timestamps[2], Timestamp::default());
    assert!(r.results[2].event_timestamps[0].seconds > 0);
    Ok(())
}

#[tokio::test]
async fn services_and_full_feature_names() -> Result<()> {
    let (registry, store) = setup().await?;
    let req = OnlineRequest {
        wanted: Wanted::Service("fraud".into()),
        entities: vec![
            ("device_id".into(), vec![string("d1")]),
            ("user_id".into(), vec![int(1)]),
            ("ignored".into(), vec![int(0)]),
        ],
        full_feature_names: true,
    };
    let r = get_online_features(&registry, &store, &req).await?;
    assert_eq!(
        names(&r),
        [
            "device_id",
            "user_id",
            "user_spend__user_avg_spend",
            "device_risk__device_risk_score",
            "device_risk__orders"
        ]
    );
    assert_eq!(r.results[3].values, vec![double(0.9)]);
    // Without full names, the two `orders` features collide.
    let req = OnlineRequest {
        wanted: Wanted::Refs(vec![
            "user_spend:orders".into(),
            "device_risk:orders".into(),
        ]),
        entities: vec![
            ("device_id".into(), vec![string("d1")]),
            ("user_id".into(), vec![int(1)]),
        ],
        full_feature_names: false,
    };
    let err = get_online_features(&registry, &store, &req)
        .await
        .expect_err("colliding names");
    assert!(
        err.to_string().contains("Duplicate features named orders"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused_with_their_reason() -> Result<()> {
    let (registry, store) = setup().await?;
    let ask = |wanted: Wanted, entities: Vec<(String, Vec<Value>)>| OnlineRequest {
        wanted,
        entities,
        full_feature_names: false,
    };
    let refs = || Wanted::Refs(vec!["user_spend:orders".into()]);
    let cases: Vec<(OnlineRequest, &str)> = vec![
        (
            ask(refs(), vec![("user_id".into(), vec![string("1")])]),
            "given string",
        ),
        (
            ask(refs(), vec![("device_id".into(), vec![string("d1")])]),
            "Missing join key",
        ),
        (
            ask(refs(), vec![("user_id".into(), vec![])]),
            "no entity rows",
        ),
        (ask(refs(), vec![]), "no entity rows"),
        (
            ask(
                refs(),
                vec![
                    ("user_id".into(), vec![int(1), int(2)]),
                    ("device_id".into(), vec![string("d1")]),
                ],
            ),
            "has 1 values",
        ),
        (
            ask(
                refs(),
                vec![("user_id".into(), vec![int(1); MAX_ENTITY_ROWS + 1])],
            ),
            "more than",
        ),
        (
            ask(Wanted::Refs(vec![]), vec![("user_id".into(), vec![int(1)])]),
            "no features",
        ),
        (
            ask(
                Wanted::Refs(vec!["nope:x".into()]),
                vec![("user_id".into(), vec![int(1)])],
            ),
            "does not exist",
        ),
        (
            ask(
                Wanted::Service("nope".into()),
                vec![("user_id".into(), vec![int(1)])],
            ),
            "does not exist",
        ),
    ];
    for (req, want) in cases {
        let err = get_online_features(&registry, &store, &req)
            .await
            .expect_err(want);
        assert!(err.to_string().contains(want), "{err} lacks {want}");
        assert!(matches!(
            err,
            FeatureError::InvalidArgument(_) | FeatureError::NotFound(_)
        ));
    }
    Ok(())
}

#[tokio::test]
async fn bad_writes_are_refused() -> Result<()> {
    let (registry, store) = setup().await?;
    let row = |view: &str, entity: Vec<(String, Value)>, features: Vec<(String, Value)>| RowWrite {
        view: view.into(),
        entity,
        features,
        event_time: now_minus(0),
    };
    let full = || {
        vec![
            ("user_avg_spend".to_owned(), double(1.0)),
            ("orders".to_owned(), int(1)),
        ]
    };
    let cases = vec![
        row("nope", vec![("user_id".into(), int(1))], full()),
        row("user_spend", vec![], full()),
        row("user_spend", vec![("user_id".into(), string("1"))], full()),
        row(
            "user_spend",
            vec![("user_id".into(), int(1))],
            full()[..1].to_vec(),
        ),
        row(
            "user_spend",
            vec![("user_id".into(), int(1))],
            vec![
                ("user_avg_spend".to_owned(), int(1)),
                ("orders".to_owned(), int(1)),
            ],
        ),
        row(
            "user_spend",
            vec![
                ("user_id".into(), int(1)),
                ("device_id".into(), string("x")),
            ],
            full(),
        ),
    ];
    for r in cases {
        assert!(
            write_rows(&registry, &store, std::slice::from_ref(&r))
                .await
                .is_err(),
            "{r:?}"
        );
    }
    Ok(())
}
