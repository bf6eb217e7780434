//! Online reads as Feast's `get_online_features` answers them, for the feature server and
//! for the models that fill their inputs from the store in process.
//!
//! The answer is Feast's columnar `GetOnlineFeaturesResponse`: the join-key columns in
//! request order (only keys some requested view uses), then per view, in order of first
//! reference, its features in request order. Statuses: PRESENT; NOT_FOUND when the entity
//! has no row for that view (value null, time the epoch); NULL_VALUE when the row holds a
//! null; OUTSIDE_MAX_AGE when the value is older than the view's `ttl` (the value still
//! returned). Every view and entity is one pipelined store read.

use std::time::{Instant, SystemTime};

use infermesh_common::metrics_names as m;

use crate::registry::{FeatureRegistry, Selection};
use crate::serving::get_online_features_response::FeatureVector;
use crate::serving::{
    FeatureList, FieldStatus, GetOnlineFeaturesResponse, GetOnlineFeaturesResponseMetadata,
};
use crate::store::{OnlineStore, ReadOp};
use crate::types::Value;
use crate::types::value_type::Enum as ValueType;
use crate::value::{describe, type_of};
use crate::{FeatureError, Timestamp, key};

/// The most entity rows one request may ask for (more is INVALID_ARGUMENT).
pub const MAX_ENTITY_ROWS: usize = 10_000;

/// Which features a request wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    /// `view:feature` references.
    Refs(Vec<String>),
    /// A feature service's features.
    Service(String),
}

/// A request: features, and entity columns (join key or entity name -> one value per row).
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineRequest {
    /// The features.
    pub wanted: Wanted,
    /// Entity columns, in request order.
    pub entities: Vec<(String, Vec<Value>)>,
    /// Name features `view__feature`.
    pub full_feature_names: bool,
}

/// Answers `req` from `store`.
pub async fn get_online_features(
    registry: &FeatureRegistry,
    store: &dyn OnlineStore,
    req: &OnlineRequest,
) -> Result<GetOnlineFeaturesResponse, FeatureError> {
    let selections = match &req.wanted {
        Wanted::Refs(r) if r.is_empty() => {
            return Err(FeatureError::InvalidArgument(
                "no features requested".into(),
            ));
        }
        Wanted::Refs(r) => registry.select(r)?,
        Wanted::Service(s) => registry.select_service(s)?,
    };
    // Entity columns by join key, in request order.
    let mut columns: Vec<(&str, &[Value])> = Vec::new();
    for (name, values) in &req.entities {
        let key = registry.join_key_of(name);
        if columns.iter().any(|(k, _)| *k == key) {
            return Err(FeatureError::InvalidArgument(format!(
                "join key {key:?} is given twice"
            )));
        }
        columns.push((key, values));
    }
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    if rows == 0 {
        return Err(FeatureError::InvalidArgument(
            "no entity rows: entities must map join keys to non-empty lists".into(),
        ));
    }
    if rows > MAX_ENTITY_ROWS {
        return Err(FeatureError::InvalidArgument(format!(
            "{rows} entity rows is more than the {MAX_ENTITY_ROWS} one request may read"
        )));
    }
    if let Some((k, v)) = columns.iter().find(|(_, v)| v.len() != rows) {
        return Err(FeatureError::InvalidArgument(format!(
            "entity column {k:?} has {} values, the first has {rows}",
            v.len()
        )));
    }
    // Per view: each row's Redis key, the distinct keys read once.
    struct ViewRead<'a> {
        sel: &'a Selection,
        fields: Vec<[u8; 4]>,
        row_key: Vec<usize>,
        keys: Vec<Vec<u8>>,
    }
    let mut reads = Vec::with_capacity(selections.len());
    for sel in &selections {
        let view = &registry.views()[sel.view];
        if let Some(why) = &view.unavailable {
            return Err(FeatureError::Unavailable(why.clone()));
        }
        let mut key_columns = Vec::with_capacity(view.join_keys.len());
        for jk in &view.join_keys {
            let Some((_, values)) = columns.iter().find(|(k, _)| *k == jk.name) else {
                return Err(FeatureError::InvalidArgument(format!(
                    "Missing join key values for keys: [{:?}] (feature view {})",
                    jk.name, view.name
                )));
            };
            if let Some(v) = values.iter().find(|v| !type_fits(v, jk.value_type)) {
                return Err(FeatureError::InvalidArgument(format!(
                    "join key {:?} is {}, given {}",
                    jk.name,
                    jk.value_type.as_str_name().to_lowercase(),
                    describe(v.val.as_ref())
                )));
            }
            key_columns.push((jk.name.as_str(), *values));
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut row_key = Vec::with_capacity(rows);
        for r in 0..rows {
            let pairs: Vec<(&str, &Value)> = key_columns.iter().map(|(k, v)| (*k, &v[r])).collect();
            let k = key::entity_key(&pairs, registry.project())?;
            let at = *index.entry(k.clone()).or_insert_with(|| {
                keys.push(k);
                keys.len() - 1
            });
            row_key.push(at);
        }
        reads.push(ViewRead {
            sel,
            fields: sel
                .features
                .iter()
                .map(|&f| view.features[f].field)
                .collect(),
            row_key,
            keys,
        });
    }
    let ops: Vec<ReadOp<'_>> = reads
        .iter()
        .flat_map(|r| {
            let ts = registry.views()[r.sel.view].timestamp_field_key.as_slice();
            r.keys.iter().map(move |k| ReadOp {
                key: k,
                timestamp_field: ts,
                fields: &r.fields,
            })
        })
        .collect();
    let started = Instant::now();
    let stored = store.read(&ops).await.inspect_err(|_| {
        metrics::counter!(m::FEATURE_STORE_ERRORS_TOTAL, "store" => store.name(), "op" => "read")
            .increment(1);
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);

    let epoch = Timestamp::default();
    let mut names = Vec::new();
    let mut results = Vec::new();
    let used_keys: Vec<&str> = columns
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| {
            reads.iter().any(|r| {
                registry.views()[r.sel.view]
                    .join_keys
                    .iter()
                    .any(|j| j.name == *k)
            })
        })
        .collect();
    for (k, values) in columns.iter().filter(|(k, _)| used_keys.contains(k)) {
        names.push((*k).to_owned());
        results.push(FeatureVector {
            values: values.to_vec(),
            statuses: vec![FieldStatus::Present as i32; rows],
            event_timestamps: vec![epoch; rows],
        });
    }
    let mut offset = 0;
    for r in &reads {
        let view = &registry.views()[r.sel.view];
        let rows_of_view = &stored[offset..offset + r.keys.len()];
        offset += r.keys.len();
        let label = view.name.clone();
        metrics::histogram!(m::FEATURE_READ_SECONDS, "view" => label.clone()).record(elapsed);
        let ttl = view.ttl.map(|t| t.as_secs_f64());
        let (mut present, mut missing, mut null, mut stale) = (0u64, 0u64, 0u64, 0u64);
        for (i, &f) in r.sel.features.iter().enumerate() {
            let feature = &view.features[f];
            names.push(if req.full_feature_names {
                format!("{}__{}", r.sel.name_to_use, feature.name)
            } else {
                feature.name.clone()
            });
            let mut col = FeatureVector {
                values: Vec::with_capacity(rows),
                statuses: Vec::with_capacity(rows),
                event_timestamps: Vec::with_capacity(rows),
            };
            for &k in &r.row_key {
                let row = &rows_of_view[k];
                let (value, status, ts) = match (&row.event_time, &row.values[i]) {
                    (None, _) => {
                        missing += 1;
                        (Value::default(), FieldStatus::NotFound, epoch)
                    }
                    (Some(t), None) => {
                        null += 1;
                        (Value::default(), FieldStatus::NullValue, *t)
                    }
                    (Some(t), Some(v)) => {
                        let age = now - (t.seconds as f64 + f64::from(t.nanos) * 1e-9);
                        if ttl.is_some_and(|ttl| age > ttl) {
                            stale += 1;
                            (v.clone(), FieldStatus::OutsideMaxAge, *t)
                        } else {
                            present += 1;
                            (v.clone(), FieldStatus::Present, *t)
                        }
                    }
                };
                col.values.push(value);
                col.statuses.push(status as i32);
                col.event_timestamps.push(ts);
            }
            results.push(col);
        }
        for row in rows_of_view {
            if let Some(t) = &row.event_time {
                let age = now - (t.seconds as f64 + f64::from(t.nanos) * 1e-9);
                metrics::histogram!(m::FEATURE_AGE_SECONDS, "view" => label.clone())
                    .record(age.max(0.0));
            }
        }
        for (status, n) in [
            ("present", present),
            ("not_found", missing),
            ("null_value", null),
            ("outside_max_age", stale),
        ] {
            metrics::counter!(m::FEATURE_VALUES_TOTAL, "view" => label.clone(), "status" => status)
                .increment(n);
        }
    }
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(FeatureError::InvalidArgument(format!(
            "Duplicate features named {}: set full_feature_names to tell them apart",
            w[0]
        )));
    }
    Ok(GetOnlineFeaturesResponse {
        metadata: Some(GetOnlineFeaturesResponseMetadata {
            feature_names: Some(FeatureList { val: names }),
            feature_view_metadata: Vec::new(),
        }),
        results,
        status: true,
    })
}

/// Whether `v` can stand for a join key of type `ty` (any keyable value when the registry
/// does not say).
fn type_fits(v: &Value, ty: ValueType) -> bool {
    match type_of(v.val.as_ref()) {
        None => false,
        Some(t) => ty == ValueType::Invalid || t == ty,
    }
}
