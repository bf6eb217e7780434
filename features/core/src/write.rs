//! Writes: rows of a feature view checked against its definition and turned into store
//! writes (one pipelined round trip per batch), for `/push`, `/write-to-online-store`,
//! `infermesh features materialize` and the streaming pipelines.

use infermesh_common::metrics_names as m;

use crate::registry::FeatureRegistry;
use crate::store::{OnlineStore, WriteOp};
use crate::types::Value;
use crate::types::value_type::Enum as ValueType;
use crate::value::{describe, type_of};
use crate::{FeatureError, Timestamp, key};

/// One row of one feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// The view.
    pub view: String,
    /// Its join keys' values.
    pub entity: Vec<(String, Value)>,
    /// Every feature of the view, by name (null values allowed).
    pub features: Vec<(String, Value)>,
    /// The event time.
    pub event_time: Timestamp,
}

/// The store writes of `rows`, each checked: the view exists, every join key is given with
/// its type, every feature of the view is given (and nothing else) with its type or null.
pub fn write_ops(
    registry: &FeatureRegistry,
    rows: &[RowWrite],
) -> Result<Vec<WriteOp>, FeatureError> {
    rows.iter()
        .map(|row| {
            let (_, view) = registry.view(&row.view).ok_or_else(|| {
                FeatureError::NotFound(format!(
                    "Feature view {} does not exist in project {}",
                    row.view,
                    registry.project()
                ))
            })?;
            let mut pairs = Vec::with_capacity(view.join_keys.len());
            for jk in &view.join_keys {
                let (_, v) = row.entity.iter().find(|(k, _)| *k == jk.name).ok_or_else(|| {
                    FeatureError::InvalidArgument(format!(
                        "view {}: join key {:?} is missing",
                        view.name, jk.name
                    ))
                })?;
                check_type(&jk.name, v, jk.value_type, false)?;
                pairs.push((jk.name.as_str(), v));
            }
            if let Some((k, _)) = row
                .entity
                .iter()
                .find(|(k, _)| !view.join_keys.iter().any(|j| j.name == *k))
            {
                return Err(FeatureError::InvalidArgument(format!(
                    "view {}: {k:?} is not one of its join keys",
                    view.name
                )));
            }
            if let Some((name, _)) = row.features.iter().find(|(n, _)| view.feature(n).is_none()) {
                return Err(FeatureError::NotFound(format!(
                    "Feature {name} not found in feature view {}",
                    view.name
                )));
            }
            let fields = view
                .features
                .iter()
                .map(|f| {
                    let (_, v) = row.features.iter().find(|(n, _)| *n == f.name).ok_or_else(|| {
                        FeatureError::InvalidArgument(format!(
                            "view {}: feature {:?} is missing (every feature of the view is written)",
                            view.name, f.name
                        ))
                    })?;
                    check_type(&f.name, v, f.value_type, true)?;
                    Ok((f.field, v.val.is_some().then(|| v.clone())))
                })
                .collect::<Result<Vec<_>, FeatureError>>()?;
            Ok(WriteOp {
                key: key::entity_key(&pairs, registry.project())?,
                timestamp_field: view.timestamp_field_key.clone(),
                event_time: row.event_time,
                fields,
            })
        })
        .collect()
}

/// Checks and writes `rows` in one batch; returns how many were newer than the store's and
/// written.
pub async fn write_rows(
    registry: &FeatureRegistry,
    store: &dyn OnlineStore,
    rows: &[RowWrite],
) -> Result<usize, FeatureError> {
    let ops = write_ops(registry, rows)?;
    let took = store.write(&ops).await.inspect_err(|_| {
        metrics::counter!(m::FEATURE_STORE_ERRORS_TOTAL, "store" => store.name(), "op" => "write")
            .increment(1);
    })?;
    for (row, took) in rows.iter().zip(&took) {
        let outcome = if *took { "written" } else { "skipped_older" };
        metrics::counter!(m::FEATURE_WRITES_TOTAL, "view" => row.view.clone(), "outcome" => outcome)
            .increment(1);
    }
    Ok(took.iter().filter(|t| **t).count())
}

fn check_type(name: &str, v: &Value, ty: ValueType, nullable: bool) -> Result<(), FeatureError> {
    match type_of(v.val.as_ref()) {
        None if nullable => Ok(()),
        Some(t) if t == ty || ty == ValueType::Invalid => Ok(()),
        _ => Err(FeatureError::InvalidArgument(format!(
            "{name:?} is {}, given {}",
            ty.as_str_name().to_lowercase(),
            describe(v.val.as_ref())
        ))),
    }
}
