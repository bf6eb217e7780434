//! Columns as Feast's APIs send them (`entities` and `df` of the HTTP API: a JSON object of
//! equal-length arrays; the string and typed maps of the gRPC push) turned into typed entity
//! columns and rows of a feature view.

use std::fmt;

use infermesh_features::FeatureError;
use infermesh_features::Timestamp;
use infermesh_features::registry::{FeatureRegistry, FeatureView};
use infermesh_features::types::Value;
use infermesh_features::types::value::Val;
use infermesh_features::types::value_type::Enum as ValueType;
use infermesh_features::value::{
    describe, from_json, from_text, parse_time_text, parse_timestamp, timestamp_from_seconds,
    type_of,
};
use infermesh_features::write::RowWrite;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;

/// The most rows one push or write request may carry.
pub const MAX_WRITE_ROWS: usize = 100_000;

/// A JSON object of columns, in the order the request gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonColumns(pub Vec<(String, Vec<Json>)>);

impl<'de> serde::Deserialize<'de> for JsonColumns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonColumns;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping column names to arrays of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonColumns, A::Error> {
                let mut out: Vec<(String, Vec<Json>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Vec<Json>>()? {
                    if out.iter().any(|(n, _)| *n == k) {
                        return Err(serde::de::Error::custom(format!(
                            "column {k:?} is given twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(JsonColumns(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One column of cells in one of the three forms requests carry.
#[derive(Debug, Clone, Copy)]
pub enum Cells<'a> {
    /// JSON values (the HTTP API).
    Json(&'a [Json]),
    /// Text (the `features` map of the gRPC push: one row).
    Text(&'a str),
    /// Feast values (the `typed_features` map of the gRPC push: one row).
    Typed(&'a Value),
}

impl Cells<'_> {
    fn len(&self) -> usize {
        match self {
            Cells::Json(v) => v.len(),
            Cells::Text(_) | Cells::Typed(_) => 1,
        }
    }

    fn value(&self, row: usize, ty: ValueType) -> Result<Value, String> {
        match self {
            Cells::Json(v) => match ty {
                ValueType::Invalid => infer(&v[row]),
                _ => from_json(&v[row], ty),
            },
            Cells::Text(s) => match ty {
                ValueType::Invalid => Ok(Value {
                    val: Some(Val::StringVal((*s).to_owned())),
                }),
                _ => from_text(s, ty),
            },
            Cells::Typed(v) => match type_of(v.val.as_ref()) {
                Some(t) if t == ty || ty == ValueType::Invalid => Ok((*v).clone()),
                None => Ok(Value { val: None }),
                Some(_) => Err(format!(
                    "given {}, not {}",
                    describe(v.val.as_ref()),
                    ty.as_str_name().to_lowercase()
                )),
            },
        }
    }

    fn time(&self, row: usize) -> Result<Timestamp, String> {
        match self {
            Cells::Json(v) => match &v[row] {
                Json::String(s) => parse_timestamp(s),
                Json::Number(n) => timestamp_from_seconds(n.as_f64().unwrap_or(f64::NAN)),
                other => Err(format!("{other} is not a time")),
            },
            Cells::Text(s) => parse_time_text(s),
            Cells::Typed(v) => match &v.val {
                Some(Val::UnixTimestampVal(s)) => Ok(Timestamp {
                    seconds: *s,
                    nanos: 0,
                }),
                Some(Val::StringVal(s)) => parse_timestamp(s),
                Some(Val::Int64Val(s)) => timestamp_from_seconds(*s as f64),
                Some(Val::DoubleVal(s)) => timestamp_from_seconds(*s),
                other => Err(format!("{} is not a time", describe(other.as_ref()))),
            },
        }
    }
}

/// A JSON entity value whose join key has no declared type: integers are INT64, strings
/// STRING (what Feast's type inference does).
fn infer(v: &Json) -> Result<Value, String> {
    match v {
        Json::Number(n) if n.is_i64() => from_json(v, ValueType::Int64),
        Json::String(_) => from_json(v, ValueType::String),
        other => Err(format!(
            "{other} is not an entity value (an integer or a string)"
        )),
    }
}

/// The entity columns of a `/get-online-features` body, each converted to its join key's
/// type (as `feast serve` converts `"1001"` for an INT64 key).
pub fn entity_columns(
    registry: &FeatureRegistry,
    columns: &JsonColumns,
) -> Result<Vec<(String, Vec<Value>)>, FeatureError> {
    columns
        .0
        .iter()
        .map(|(name, values)| {
            let ty = registry.join_key_type(registry.join_key_of(name));
            let cells = Cells::Json(values);
            let typed = (0..values.len())
                .map(|r| {
                    cells.value(r, ty).map_err(|e| {
                        FeatureError::InvalidArgument(format!("entity {name:?}, row {r}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.clone(), typed))
        })
        .collect()
}

/// The rows of `view` in `columns`: its join keys (by join key or entity name), every one of
/// its features, and the event time (the view source's timestamp column, else
/// `event_timestamp`). Other columns (`created`, features of other views) are ignored.
pub fn view_rows(
    registry: &FeatureRegistry,
    view: &FeatureView,
    columns: &[(&str, Cells<'_>)],
) -> Result<Vec<RowWrite>, FeatureError> {
    let bad = |m: String| FeatureError::InvalidArgument(format!("view {}: {m}", view.name));
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    if rows == 0 {
        return Err(bad("no rows: df must map columns to non-empty lists".into()));
    }
    if rows > MAX_WRITE_ROWS {
        return Err(bad(format!(
            "{rows} rows is more than the {MAX_WRITE_ROWS} one request may write"
        )));
    }
    if let Some((name, c)) = columns.iter().find(|(_, c)| c.len() != rows) {
        return Err(bad(format!(
            "column {name:?} has {} values, the first has {rows}",
            c.len()
        )));
    }
    let find = |name: &str| columns.iter().find(|(n, _)| *n == name).map(|(_, c)| c);
    let keys = view
        .join_keys
        .iter()
        .map(|jk| {
            registry
                .key_column_names(view, &jk.name)
                .into_iter()
                .find_map(find)
                .map(|c| (jk, c))
                .ok_or_else(|| bad(format!("join key column {:?} is missing", jk.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let features = view
        .features
        .iter()
        .map(|f| {
            find(&f.name).map(|c| (f, c)).ok_or_else(|| {
                bad(format!(
                    "feature column {:?} is missing (a write gives every feature of the view)",
                    f.name
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let time_names: Vec<&str> = view
        .timestamp_field
        .iter()
        .map(String::as_str)
        .chain(["event_timestamp"])
        .collect();
    let time = time_names.iter().find_map(|n| find(n)).ok_or_else(|| {
        bad(format!(
            "the event time column ({}) is missing",
            time_names.join(" or ")
        ))
    })?;
    (0..rows)
        .map(|r| {
            let cell = |name: &str, e: String| bad(format!("row {r}, {name:?}: {e}"));
            let entity = keys
                .iter()
                .map(|(jk, c)| {
                    let v = c.value(r, jk.value_type).map_err(|e| cell(&jk.name, e))?;
                    if v.val.is_none() {
                        return Err(cell(&jk.name, "a join key cannot be null".into()));
                    }
                    Ok((jk.name.clone(), v))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let features = features
                .iter()
                .map(|(f, c)| {
                    c.value(r, f.value_type)
                        .map(|v| (f.name.clone(), v))
                        .map_err(|e| cell(&f.name, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RowWrite {
                view: view.name.clone(),
                entity,
                features,
                event_time: time.time(r).map_err(|e| cell("event time", e))?,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TOML: &str = r#"
project = "shop"
[[entities]]
name = "user"
join_key = "user_id"
value_type = "INT64"
[[feature_views]]
name = "user_spend"
entities = ["user"]
timestamp_field = "ts"
features = [{ name = "avg", type = "DOUBLE" }, { name = "n", type = "INT64" }]
"#;

    #[test]
    fn columns_keep_their_order_and_refuse_duplicates() {
        let c: JsonColumns = serde_json::from_str(r#"{"b": [1], "a": [2, 3]}"#).unwrap();
        assert_eq!(c.0[0].0, "b");
        assert_eq!(c.0[1].1.len(), 2);
        assert!(serde_json::from_str::<JsonColumns>(r#"{"a": [1], "a": [2]}"#).is_err());
        assert!(serde_json::from_str::<JsonColumns>(r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn rows_of_a_view_are_typed_and_checked() {
        let reg = FeatureRegistry::from_toml(TOML, None).unwrap();
        let (_, view) = reg.view("user_spend").unwrap();
        let df: JsonColumns = serde_json::from_str(
            r#"{"user": ["5", 6], "avg": [1.5, null], "n": [2, "3"], "ts": ["2024-01-01T00:00:00Z", 1704067200.5], "created": [0, 0]}"#,
        )
        .unwrap();
        let cols: Vec<(&str, Cells<'_>)> =
            df.0.iter()
                .map(|(n, v)| (n.as_str(), Cells::Json(v)))
                .collect();
        let rows = view_rows(&reg, view, &cols).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].entity[0].1.val, Some(Val::Int64Val(5)));
        assert_eq!(rows[1].features[0].1.val, None);
        assert_eq!(rows[1].features[1].1.val, Some(Val::Int64Val(3)));
        assert_eq!(
            (rows[1].event_time.seconds, rows[1].event_time.nanos),
            (1_704_067_200, 500_000_000)
        );
        for (body, why) in [
            (
                r#"{"user_id": [1], "avg": [1.0], "ts": [0]}"#,
                "\"n\" is missing",
            ),
            (
                r#"{"user_id": [1], "avg": ["x"], "n": [1], "ts": [0]}"#,
                "row 0, \"avg\"",
            ),
            (
                r#"{"user_id": [1, 2], "avg": [1.0], "n": [1], "ts": [0]}"#,
                "has 1 values",
            ),
            (
                r#"{"user_id": [null], "avg": [1.0], "n": [1], "ts": [0]}"#,
                "cannot be null",
            ),
            (
                r#"{"user_id": [1], "avg": [1.0], "n": [1]}"#,
                "event time column",
            ),
            (
                r#"{"user_id": [1], "avg": [1.0], "n": [1], "ts": [true]}"#,
                "not a time",
            ),
        ] {
            let df: JsonColumns = serde_json::from_str(body).unwrap();
            let cols: Vec<(&str, Cells<'_>)> =
                df.0.iter()
                    .map(|(n, v)| (n.as_str(), Cells::Json(v)))
                    .collect();
            let e = view_rows(&reg, view, &cols).unwrap_err().to_string();
            assert!(e.contains(why), "{body}: {e}");
        }
        // The gRPC push's one row of text.
        let cols = [
            ("user_id", Cells::Text("9")),
            ("avg", Cells::Text("0.5")),
            ("n", Cells::Text("")),
            ("ts", Cells::Text("2024-01-01 00:00:00")),
        ];
        let rows = view_rows(&reg, view, &cols).unwrap();
        assert_eq!(rows[0].features[0].1.val, Some(Val::DoubleVal(0.5)));
        assert_eq!(rows[0].features[1].1.val, None);
    }

    #[test]
    fn entity_values_take_the_join_keys_type() {
        let reg = FeatureRegistry::from_toml(TOML, None).unwrap();
        let c: JsonColumns = serde_json::from_str(r#"{"user": [1, "2"], "other": ["a"]}"#).unwrap();
        let e = entity_columns(&reg, &c).unwrap();
        assert_eq!(e[0].1[1].val, Some(Val::Int64Val(2)));
        assert_eq!(e[1].1[0].val, Some(Val::StringVal("a".into())));
        let c: JsonColumns = serde_json::from_str(r#"{"user_id": ["x"]}"#).unwrap();
        assert!(matches!(
            entity_columns(&reg, &c),
            Err(FeatureError::InvalidArgument(_))
        ));
    }
}
