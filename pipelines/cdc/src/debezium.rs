//! Debezium change events, as Debezium's PostgreSQL connector writes them through Kafka
//! Connect's JSON converter with schemas on (its defaults): `{"schema": {...}, "payload":
//! {"before", "after", "source", "op", "ts_ms"}}`.
//!
//! Column types map as the connector maps them by default (`decimal.handling.mode=precise`,
//! `time.precision.mode=adaptive`): integers to int16/32/64, `numeric(p,s)` to
//! `org.apache.kafka.connect.data.Decimal` (base64 of the big-endian two's-complement unscaled
//! value, scale in the schema), unconstrained `numeric` to `io.debezium.data.VariableScaleDecimal`,
//! `timestamptz` to `io.debezium.time.ZonedTimestamp` (ISO-8601 text), `timestamp` to
//! `io.debezium.time.MicroTimestamp`, `date` to `io.debezium.time.Date`, `uuid`, `json`/`jsonb`
//! to their named strings, `bytea` to bytes; anything else is its text. Values arrive as
//! PostgreSQL's text output with `DateStyle=ISO` and `TimeZone=UTC` (the replication session
//! pins both).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::pgoutput::{Column, Datum, Relation};

/// What Debezium writes for a TOASTed value an update did not touch.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// The `op` of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert.
    Create,
    /// Update.
    Update,
    /// Delete.
    Delete,
}

impl Op {
    /// Debezium's letter.
    pub fn letter(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// Where a change came from (the envelope's `source`).
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The logical server name (Debezium's `topic.prefix`).
    pub server: &'a str,
    /// Database.
    pub db: &'a str,
    /// Commit time, Unix ms.
    pub commit_ms: i64,
    /// Transaction id.
    pub xid: u32,
    /// LSN of the change's transaction commit.
    pub lsn: u64,
}

/// A relation's schema part of the envelope, built once per Relation message.
#[derive(Debug, Clone)]
pub struct EnvelopeSchema {
    schema: String,
}

impl EnvelopeSchema {
    /// The envelope schema of `rel` as server `server` names it.
    pub fn new(server: &str, rel: &Relation) -> Self {
        let record = format!("{server}.{}.{}", rel.namespace, rel.name);
        let fields: Vec<Value> = rel.columns.iter().map(field_schema).collect();
        let row = |field: &str| {
            json!({"type": "struct", "fields": fields, "optional": true,
                   "name": format!("{record}.Value"), "field": field})
        };
        let source_fields: Vec<Value> = [
            ("string", "version", false),
            ("string", "connector", false),
            ("string", "name", false),
            ("int64", "ts_ms", false),
            ("string", "snapshot", true),
            ("string", "db", false),
            ("string", "schema", false),
            ("string", "table", false),
            ("int64", "txId", true),
            ("int64", "lsn", true),
        ]
        .iter()
        .map(|(t, f, o)| json!({"type": t, "optional": o, "field": f}))
        .collect();
        let schema = json!({
            "type": "struct",
            "fields": [
                row("before"),
                row("after"),
                {"type": "struct", "fields": source_fields, "optional": false,
                 "name": "io.debezium.connector.postgresql.Source", "field": "source"},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
            ],
            "optional": false,
            "name": format!("{record}.Envelope"),
            "version": 1,
        });
        Self {
            schema: schema.to_string(),
        }
    }

    /// The whole change event, serialised.
    pub fn envelope(
        &self,
        rel: &Relation,
        op: Op,
        before: Option<&[Datum]>,
        after: Option<&[Datum]>,
        source: &Source<'_>,
        now_ms: i64,
    ) -> Vec<u8> {
        let payload = json!({
            "before": before.map(|t| row(rel, t)),
            "after": after.map(|t| row(rel, t)),
            "source": {
                "version": concat!("infermesh-", env!("CARGO_PKG_VERSION")),
                "connector": "postgresql",
                "name": source.server,
                "ts_ms": source.commit_ms,
                "snapshot": "false",
                "db": source.db,
                "schema": rel.namespace,
                "table": rel.name,
                "txId": source.xid,
                "lsn": source.lsn,
            },
            "op": op.letter(),
            "ts_ms": now_ms,
        });
        let payload = payload.to_string();
        let mut out = Vec::with_capacity(self.schema.len() + payload.len() + 24);
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(self.schema.as_bytes());
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload.as_bytes());
        out.push(b'}');
        out
    }
}

/// The text of column `name` in `tuple`, if present and not null.
pub fn text_of<'a>(rel: &Relation, tuple: &'a [Datum], name: &str) -> Option<&'a str> {
    let i = rel.columns.iter().position(|c| c.name == name)?;
    match tuple.get(i)? {
        Datum::Text(s) => Some(s),
        _ => None,
    }
}

fn row(rel: &Relation, tuple: &[Datum]) -> Value {
    let mut m = Map::with_capacity(rel.columns.len());
    for (c, d) in rel.columns.iter().zip(tuple) {
        m.insert(c.name.clone(), value(c, d));
    }
    Value::Object(m)
}

mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// `numeric(p, s)`'s precision and scale from its type modifier.
fn numeric_typmod(typmod: i32) -> Option<(u32, u32)> {
    if typmod < 4 {
        return None;
    }
    let t = (typmod - 4) as u32;
    Some(((t >> 16) & 0xffff, t & 0xffff))
}

fn field_schema(c: &Column) -> Value {
    let optional = !c.key;
    let named = |ty: &str, name: &str| json!({"type": ty, "optional": optional, "name": name, "version": 1, "field": c.name});
    match c.type_oid {
        oid::BOOL => json!({"type": "boolean", "optional": optional, "field": c.name}),
        oid::INT2 => json!({"type": "int16", "optional": optional, "field": c.name}),
        oid::INT4 => json!({"type": "int32", "optional": optional, "field": c.name}),
        oid::INT8 | oid::OID => json!({"type": "int64", "optional": optional, "field": c.name}),
        oid::FLOAT4 => json!({"type": "float", "optional": optional, "field": c.name}),
        oid::FLOAT8 => json!({"type": "double", "optional": optional, "field": c.name}),
        oid::BYTEA => json!({"type": "bytes", "optional": optional, "field": c.name}),
        oid::NUMERIC => match numeric_typmod(c.type_modifier) {
            Some((p, s)) => json!({
                "type": "bytes", "optional": optional,
                "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                "parameters": {"scale": s.to_string(), "connect.decimal.precision": p.to_string()},
                "field": c.name
            }),
            None => json!({
                "type": "struct",
                "fields": [
                    {"type": "int32", "optional": false, "field": "scale"},
                    {"type": "bytes", "optional": false, "field": "value"}
                ],
                "optional": optional, "name": "io.debezium.data.VariableScaleDecimal",
                "version": 1, "field": c.name
            }),
        },
        oid::TIMESTAMPTZ => named("string", "io.debezium.time.ZonedTimestamp"),
        oid::TIMESTAMP => named("int64", "io.debezium.time.MicroTimestamp"),
        oid::DATE => named("int32", "io.debezium.time.Date"),
        oid::UUID => named("string", "io.debezium.data.Uuid"),
        oid::JSON | oid::JSONB => named("string", "io.debezium.data.Json"),
        _ => json!({"type": "string", "optional": optional, "field": c.name}),
    }
}

fn value(c: &Column, d: &Datum) -> Value {
    let s = match d {
        Datum::Null => return Value::Null,
        Datum::UnchangedToast => return Value::String(UNAVAILABLE.into()),
        Datum::Binary(b) => {
            return Value::String(base64::engine::general_purpose::STANDARD.encode(b));
        }
        Datum::Text(s) => s.as_str(),
    };
    let text = || Value::String(s.to_string());
    match c.type_oid {
        oid::BOOL => Value::Bool(s == "t"),
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            s.parse::<i64>().map_or_else(|_| text(), Value::from)
        }
        oid::FLOAT4 | oid::FLOAT8 => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        oid::NUMERIC => match numeric_typmod(c.type_modifier) {
            Some((_, scale)) => unscaled(s, scale).map_or(Value::Null, |v| Value::String(b64(v))),
            None => {
                let scale = s.split_once('.').map_or(0, |(_, f)| f.len() as u32);
                unscaled(s, scale).map_or(Value::Null, |v| json!({"scale": scale, "value": b64(v)}))
            }
        },
        oid::BYTEA => s.strip_prefix("\\x").and_then(hex).map_or_else(text, |b| {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }),
        oid::TIMESTAMPTZ => Value::String(zoned(s)),
        oid::TIMESTAMP => civil_micros(s).map_or_else(text, Value::from),
        oid::DATE => civil_days(s).map_or_else(text, Value::from),
        _ => text(),
    }
}

fn b64(v: i128) -> String {
    base64::engine::general_purpose::STANDARD.encode(twos_complement(v))
}

/// `value` as Java's `BigInteger.toByteArray`: big-endian two's complement, fewest bytes.
fn twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// The unscaled integer of decimal text `s` at `scale` (digits beyond it are rounded half
/// away from zero, as PostgreSQL rounds); `None` for NaN, infinities or more than 38 digits.
fn unscaled(s: &str, scale: u32) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = scale as usize;
    let mut v: i128 = 0;
    for b in int
        .bytes()
        .chain(frac.bytes().take(scale))
        .chain(std::iter::repeat_n(b'0', scale.saturating_sub(frac.len())))
    {
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    if frac.as_bytes().get(scale).is_some_and(|&b| b >= b'5') {
        v = v.checked_add(1)?;
    }
    Some(if neg { -v } else { v })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// ISO text of a `timestamptz` output (`2026-12-07 09:00:00.5+00`) as Debezium's
/// ZonedTimestamp writes it (`2026-12-07T09:00:00.5Z`); other text (infinity) as it is.
fn zoned(s: &str) -> String {
    let Some((date, rest)) = s.split_once(' ') else {
        return s.to_string();
    };
    let Some(at) = rest.rfind(['+', '-']) else {
        return s.to_string();
    };
    let (time, offset) = rest.split_at(at);
    let offset = match offset {
        "+00" | "-00" | "+00:00" => "Z".to_string(),
        o if o.len() == 3 => format!("{o}:00"),
        o => o.to_string(),
    };
    format!("{date}T{time}{offset}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_days(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

fn civil_micros(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let days = civil_days(date)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut it = hms.splitn(3, ':');
    let h: i64 = it.next()?.parse().ok()?;
    let mi: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    let mut micros: i64 = 0;
    for (i, b) in frac.bytes().take(6).enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
    }
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000) + micros)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn col(name: &str, ty: u32, typmod: i32) -> Column {
        Column {
            name: name.into(),
            type_oid: ty,
            type_modifier: typmod,
            key: false,
        }
    }

    #[test]
    fn decimals_are_javas_big_integer_bytes() {
        assert_eq!(twos_complement(0), vec![0]);
        assert_eq!(twos_complement(127), vec![0x7f]);
        assert_eq!(twos_complement(128), vec![0x00, 0x80]);
        assert_eq!(twos_complement(-1), vec![0xff]);
        assert_eq!(twos_complement(-128), vec![0x80]);
        assert_eq!(twos_complement(-129), vec![0xff, 0x7f]);
        assert_eq!(unscaled("12.50", 2), Some(1250));
        assert_eq!(unscaled("-0.5", 2), Some(-50));
        assert_eq!(unscaled("7", 2), Some(700));
        assert_eq!(unscaled("1.005", 2), Some(101));
        assert_eq!(unscaled("NaN", 2), None);
        assert_eq!(unscaled("", 2), None);
        // numeric(14,2) 1234.56 -> unscaled 123456 = 0x01E240.
        let v = value(
            &col("amount", oid::NUMERIC, (14 << 16 | 2) + 4),
            &Datum::Text("1234.56".into()),
        );
        assert_eq!(v, Value::String("AeJA".into()));
        let v = value(&col("x", oid::NUMERIC, -1), &Datum::Text("-1.5".into()));
        assert_eq!(v, json!({"scale": 1, "value": "8Q=="}));
    }

    #[test]
    fn times_as_debezium_writes_them() {
        assert_eq!(
            zoned("2026-12-07 09:00:00.123456+00"),
            "2026-12-07T09:00:00.123456Z"
        );
        assert_eq!(
            zoned("2026-12-07 09:00:00+05:30"),
            "2026-12-07T09:00:00+05:30"
        );
        assert_eq!(zoned("2026-12-07 09:00:00-08"), "2026-12-07T09:00:00-08:00");
        assert_eq!(zoned("infinity"), "infinity");
        assert_eq!(civil_days("1970-01-01"), Some(0));
        assert_eq!(civil_days("2000-03-01"), Some(11_017));
        assert_eq!(civil_days("1969-12-31"), Some(-1));
        assert_eq!(civil_micros("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(
            civil_micros("2026-12-07 09:00:00"),
            Some(days_from_civil(2026, 12, 7) * 86_400_000_000 + 9 * 3_600_000_000)
        );
    }

    #[test]
    fn other_types() {
        assert_eq!(
            value(&col("b", oid::BOOL, -1), &Datum::Text("t".into())),
            json!(true)
        );
        assert_eq!(
            value(&col("i", oid::INT8, -1), &Datum::Text("-42".into())),
            json!(-42)
        );
        assert_eq!(
            value(&col("f", oid::FLOAT8, -1), &Datum::Text("NaN".into())),
            Value::Null
        );
        assert_eq!(
            value(&col("y", oid::BYTEA, -1), &Datum::Text("\\x0102".into())),
            json!("AQI=")
        );
        assert_eq!(
            value(&col("t", 25, -1), &Datum::UnchangedToast),
            json!(UNAVAILABLE)
        );
        assert_eq!(value(&col("t", 25, -1), &Datum::Null), Value::Null);
    }
}
