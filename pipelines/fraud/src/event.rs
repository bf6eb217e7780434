//! `finance.transactions` values: plain JSON, or Debezium change events from the JSON converter
//! with or without schemas (ARCHITECTURE.md, "Events").
//!
//! - Plain: `{"transaction_id", "user_id", "device_id", "amount", "currency", "merchant",
//!   "category", "created_at", ...}`; other numeric fields are carried as features.
//! - Debezium: `{"schema": {...}, "payload": {"before", "after", "op", "ts_ms", "source"}}` or
//!   the payload alone. `op` `c` (insert), `r` (snapshot read) and `u` (update) carry the row in
//!   `after`; `d` (delete) and `t` (truncate) are not transactions and are skipped; any other op
//!   is refused.
//! - Decimals as Debezium writes them: a number (`decimal.handling.mode=double`), a string
//!   (`string`), base64 of the big-endian two's-complement unscaled value with the scale from
//!   the field's schema (`precise`, the default; without a schema the configured scale), or
//!   `{"scale", "value"}` (`VariableScaleDecimal`).
//! - Times: RFC 3339 text (`ZonedTimestamp`, plain JSON), or epoch numbers whose unit the
//!   schema names (`Timestamp` ms, `MicroTimestamp` µs, `NanoTimestamp` ns) or, without a
//!   schema, their size tells (seconds below 1e11, milliseconds below 1e14, microseconds below
//!   1e17, else nanoseconds).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

/// A transaction, whatever envelope it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Its id (the idempotency key of everything derived from it).
    pub transaction_id: String,
    /// The paying user.
    pub user_id: String,
    /// The device used, if known.
    pub device_id: Option<String>,
    /// The amount.
    pub amount: f64,
    /// ISO currency, if given.
    pub currency: Option<String>,
    /// Merchant, if given.
    pub merchant: Option<String>,
    /// Category, if given.
    pub category: Option<String>,
    /// Event time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Other numeric fields, by name (model features the producer computed).
    pub extra: BTreeMap<String, f64>,
}

/// What a value turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A transaction to score.
    Transaction(Box<Transaction>),
    /// A change event that is not a new row (`d`, `t`): nothing to do.
    Skip(&'static str),
}

/// Why a value is not a transaction; `reason()` is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not an object.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A required field is absent or null.
    #[error("missing field {0:?}")]
    Missing(&'static str),
    /// A field has a value of the wrong kind.
    #[error("field {field:?}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A Debezium op infermesh does not know.
    #[error("unknown Debezium op {0:?}")]
    UnknownOp(String),
}

impl EventError {
    /// The bounded dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Malformed(_) => "malformed_json",
            EventError::Missing(_) => "missing_field",
            EventError::Invalid { .. } => "invalid_value",
            EventError::UnknownOp(_) => "unknown_op",
        }
    }
}

/// Fields that are not features.
const NOT_FEATURES: [&str; 8] = [
    "transaction_id",
    "user_id",
    "device_id",
    "currency",
    "merchant",
    "category",
    "created_at",
    "id",
];

/// Parses one `finance.transactions` value; `default_scale` is the scale of precise decimals
/// that come without a schema.
pub fn parse(bytes: &[u8], default_scale: u32) -> Result<Parsed, EventError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(EventError::Malformed("not a JSON object".into()));
    };
    // Debezium with schemas: {"schema": ..., "payload": {...}}.
    let schema = match (obj.remove("payload"), obj.remove("schema")) {
        (Some(Value::Object(p)), schema) => {
            let fields = schema.as_ref().and_then(after_schema);
            return debezium(p, fields.as_ref(), default_scale);
        }
        (Some(Value::Null), _) => return Ok(Parsed::Skip("tombstone")),
        (Some(_), _) => return Err(EventError::Malformed("payload is not an object".into())),
        (None, schema) => schema,
    };
    let _ = schema;
    if obj.contains_key("op") && (obj.contains_key("after") || obj.contains_key("before")) {
        return debezium(obj, None, default_scale);
    }
    row(&obj, None, default_scale).map(|t| Parsed::Transaction(Box::new(t)))
}

/// Field schemas of the `after` struct, by field name.
type FieldSchemas = BTreeMap<String, Value>;

fn after_schema(schema: &Value) -> Option<FieldSchemas> {
    let after = schema
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("field").and_then(Value::as_str) == Some("after"))?;
    Some(
        after
            .get("fields")?
            .as_array()?
            .iter()
            .filter_map(|f| Some((f.get("field")?.as_str()?.to_string(), f.clone())))
            .collect(),
    )
}

fn debezium(
    mut env: Map<String, Value>,
    fields: Option<&FieldSchemas>,
    default_scale: u32,
) -> Result<Parsed, EventError> {
    let op = match env.get("op") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(EventError::Invalid {
                field: "op",
                why: "not a string".into(),
            });
        }
        None => return Err(EventError::Missing("op")),
    };
    match op.as_str() {
        "c" | "r" | "u" => {}
        "d" => return Ok(Parsed::Skip("delete")),
        "t" => return Ok(Parsed::Skip("truncate")),
        "m" => return Ok(Parsed::Skip("message")),
        _ => return Err(EventError::UnknownOp(op)),
    }
    match env.remove("after") {
        Some(Value::Object(after)) => {
            row(&after, fields, default_scale).map(|t| Parsed::Transaction(Box::new(t)))
        }
        Some(Value::Null) | None => Err(EventError::Missing("after")),
        Some(_) => Err(EventError::Invalid {
            field: "after",
            why: "not an object".into(),
        }),
    }
}

fn text(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Integer ids are common in product databases.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(EventError::Invalid {
            field,
            why: "not a string".into(),
        }),
    }
}

fn required(obj: &Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    match text(obj, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(EventError::Invalid {
            field,
            why: "empty".into(),
        }),
        None => Err(EventError::Missing(field)),
    }
}

fn schema_name(fields: Option<&FieldSchemas>, field: &str) -> Option<String> {
    fields?
        .get(field)?
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn schema_scale(fields: Option<&FieldSchemas>, field: &str) -> Option<u32> {
    let p = fields?.get(field)?.get("parameters")?;
    p.get("scale")?.as_str()?.parse().ok()
}

/// A decimal as Debezium may encode it.
pub fn decimal(v: &Value, scale: u32, field: &'static str) -> Result<f64, EventError> {
    let bad = |why: String| EventError::Invalid { field, why };
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad("not a finite number".into())),
        Value::String(s) => {
            if let Ok(x) = s.trim().parse::<f64>() {
                return Ok(x);
            }
            unscaled(s, scale).map_err(bad)
        }
        Value::Object(o) => {
            let scale = o
                .get("scale")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("variable-scale decimal without an integer scale".into()))?;
            let value = o
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("variable-scale decimal without a value".into()))?;
            unscaled(value, u32::try_from(scale).unwrap_or(u32::MAX)).map_err(bad)
        }
        _ => Err(bad("not a number".into())),
    }
}

/// Base64 of a big-endian two's-complement integer, divided by 10^scale.
fn unscaled(b64: &str, scale: u32) -> Result<f64, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("{b64:?} is neither a number nor base64: {e}"))?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes (1 to 16 are read)",
            bytes.len()
        ));
    }
    if scale > 38 {
        return Err(format!("scale {scale} (at most 38)"));
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    let n = i128::from_be_bytes(buf);
    Ok(n as f64 / 10f64.powi(scale as i32))
}

/// An event time in Unix milliseconds.
pub fn time_ms(v: &Value, unit: Option<&str>, field: &'static str) -> Result<i64, EventError> {
    let bad = |why: String| EventError::Invalid { field, why };
    match v {
        Value::String(s) => {
            if let Ok(x) = s.trim().parse::<f64>() {
                return number_ms(x, unit).ok_or_else(|| bad(format!("{s:?} is out of range")));
            }
            let ts = infermesh_features::value::parse_timestamp(s).map_err(bad)?;
            Ok(ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000)
        }
        Value::Number(n) => {
            let x = n.as_f64().ok_or_else(|| bad("not a number".into()))?;
            number_ms(x, unit).ok_or_else(|| bad(format!("{x} is out of range")))
        }
        _ => Err(bad("not a time".into())),
    }
}

fn number_ms(x: f64, unit: Option<&str>) -> Option<i64> {
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    let ms = match unit {
        Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => x,
        Some("io.debezium.time.MicroTimestamp") => x / 1e3,
        Some("io.debezium.time.NanoTimestamp") => x / 1e6,
        _ if x < 1e11 => x * 1e3,
        _ if x < 1e14 => x,
        _ if x < 1e17 => x / 1e3,
        _ => x / 1e6,
    };
    (ms < 8.64e15).then_some(ms as i64)
}

fn row(
    obj: &Map<String, Value>,
    fields: Option<&FieldSchemas>,
    default_scale: u32,
) -> Result<Transaction, EventError> {
    let transaction_id = match text(obj, "transaction_id")? {
        Some(s) => s,
        // A table whose key column is `id`.
        None => required(obj, "id").map_err(|_| EventError::Missing("transaction_id"))?,
    };
    if transaction_id.len() > 256 {
        return Err(EventError::Invalid {
            field: "transaction_id",
            why: "longer than 256 bytes".into(),
        });
    }
    let user_id = required(obj, "user_id")?;
    if user_id.len() > 256 {
        return Err(EventError::Invalid {
            field: "user_id",
            why: "longer than 256 bytes".into(),
        });
    }
    let amount_v = obj.get("amount").filter(|v| !v.is_null());
    let amount = decimal(
        amount_v.ok_or(EventError::Missing("amount"))?,
        schema_scale(fields, "amount").unwrap_or(default_scale),
        "amount",
    )?;
    if !amount.is_finite() {
        return Err(EventError::Invalid {
            field: "amount",
            why: "not finite".into(),
        });
    }
    let created = obj
        .get("created_at")
        .filter(|v| !v.is_null())
        .ok_or(EventError::Missing("created_at"))?;
    let created_at_ms = time_ms(
        created,
        schema_name(fields, "created_at").as_deref(),
        "created_at",
    )?;
    let mut extra = BTreeMap::new();
    for (k, v) in obj {
        if NOT_FEATURES.contains(&k.as_str()) || k == "amount" {
            continue;
        }
        if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
            extra.insert(k.clone(), x);
        } else if let Value::Bool(b) = v {
            extra.insert(k.clone(), f64::from(u8::from(*b)));
        }
    }
    Ok(Transaction {
        transaction_id,
        user_id,
        device_id: text(obj, "device_id")?.filter(|s| !s.is_empty()),
        amount,
        currency: text(obj, "currency")?,
        merchant: text(obj, "merchant")?,
        category: text(obj, "category")?,
        created_at_ms,
        extra,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tx(p: Parsed) -> Transaction {
        match p {
            Parsed::Transaction(t) => *t,
            other => panic!("not a transaction: {other:?}"),
        }
    }

    #[test]
    fn plain_json() {
        let t = tx(parse(
            br#"{"transaction_id":"t1","user_id":"u1","device_id":"d1","amount":12.5,"currency":"EUR","merchant":"m","category":"food","created_at":"2026-12-07T10:00:00Z","merchant_risk":0.4,"is_foreign":true}"#,
            2,
        )
        .unwrap());
        assert_eq!(t.transaction_id, "t1");
        assert_eq!(t.device_id.as_deref(), Some("d1"));
        assert_eq!(t.amount, 12.5);
        assert_eq!(t.created_at_ms, 1_796_637_600_000);
        assert_eq!(t.extra["merchant_risk"], 0.4);
        assert_eq!(t.extra["is_foreign"], 1.0);
        assert!(!t.extra.contains_key("amount"));
    }

    #[test]
    fn debezium_with_schema_precise_decimal_and_micro_timestamp() {
        // 1234.56 at scale 2 is 123456 = 0x01E240.
        let v = br#"{"schema":{"type":"struct","fields":[{"field":"before","type":"struct","optional":true,"fields":[]},{"field":"after","type":"struct","optional":true,"fields":[{"field":"id","type":"int64"},{"field":"user_id","type":"string"},{"field":"amount","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"12"}},{"field":"created_at","type":"int64","name":"io.debezium.time.MicroTimestamp"}]},{"field":"op","type":"string"}]},"payload":{"before":null,"after":{"id":42,"user_id":"u9","amount":"AeJA","created_at":1796637600000000},"op":"c","ts_ms":1796637600123,"source":{"table":"transactions"}}}"#;
        let t = tx(parse(v, 0).unwrap());
        assert_eq!(t.transaction_id, "42");
        assert_eq!(t.amount, 1234.56);
        assert_eq!(t.created_at_ms, 1_796_637_600_000);
    }

    #[test]
    fn debezium_without_schema_ops_and_decimal_modes() {
        let snap = br#"{"before":null,"after":{"transaction_id":"t2","user_id":"u","amount":"-0.50","created_at":"2026-12-07T10:00:00.250+01:00"},"op":"r","ts_ms":1}"#;
        let t = tx(parse(snap, 2).unwrap());
        assert_eq!(t.amount, -0.5);
        assert_eq!(t.created_at_ms, 1_796_637_600_000 - 3_600_000 + 250);
        // Precise without a schema: the configured scale. -1.00 at scale 2 is -100 = 0xFF9C.
        let neg = br#"{"after":{"transaction_id":"t3","user_id":"u","amount":"/5w=","created_at":1796637600},"op":"u"}"#;
        let t = tx(parse(neg, 2).unwrap());
        assert_eq!(t.amount, -1.0);
        assert_eq!(t.created_at_ms, 1_796_637_600_000);
        let var = br#"{"after":{"transaction_id":"t4","user_id":"u","amount":{"scale":3,"value":"MDk="},"created_at":1796637600000},"op":"c"}"#;
        assert_eq!(tx(parse(var, 2).unwrap()).amount, 12.345);
        let del = br#"{"before":{"transaction_id":"t4"},"after":null,"op":"d"}"#;
        assert_eq!(parse(del, 2).unwrap(), Parsed::Skip("delete"));
        let tomb = br#"{"schema":null,"payload":null}"#;
        assert_eq!(parse(tomb, 2).unwrap(), Parsed::Skip("tombstone"));
    }

    #[test]
    fn bad_values_name_their_reason() {
        let cases: [(&[u8], &str); 8] = [
            (b"{not json", "malformed_json"),
            (b"[1,2]", "malformed_json"),
            (
                br#"{"user_id":"u","amount":1,"created_at":1}"#,
                "missing_field",
            ),
            (
                br#"{"transaction_id":"t","amount":1,"created_at":1}"#,
                "missing_field",
            ),
            (
                br#"{"transaction_id":"t","user_id":"u","amount":"abc!","created_at":1}"#,
                "invalid_value",
            ),
            (
                br#"{"transaction_id":"t","user_id":"u","amount":1,"created_at":"yesterday"}"#,
                "invalid_value",
            ),
            (
                br#"{"after":{"transaction_id":"t"},"op":"x"}"#,
                "unknown_op",
            ),
            (br#"{"after":null,"op":"c"}"#, "missing_field"),
        ];
        for (bytes, reason) in cases {
            let e = parse(bytes, 2).unwrap_err();
            assert_eq!(
                e.reason(),
                reason,
                "{}: {e}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
