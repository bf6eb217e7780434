//! Feast values: their types, the conversion of JSON request values to a declared type (as
//! `feast serve` converts entity values and pushed rows), and the JSON encoding of
//! `feast serve`'s responses (int64 as bare numbers, doubles always with a decimal point or
//! an exponent so Feast's `remote` client reads them back as doubles, NaN and infinities as
//! strings, bytes as base64, timestamps as RFC 3339 UTC with as many fraction digits as
//! needed).
//!
//! The calendar arithmetic of [`format_timestamp`] is written here (a few lines of the
//! days-to-civil algorithm) rather than taken from humantime, whose formatter stops at
//! 1970; parsing uses humantime.

use base64::Engine;
use serde_json::Value as Json;

use crate::Timestamp;
use crate::types::value::Val;
use crate::types::value_type::Enum as ValueType;
use crate::types::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, StringList, Value,
};

/// A short name of a value's type, for errors.
pub fn describe(val: Option<&Val>) -> &'static str {
    match val {
        None => "null",
        Some(Val::BytesVal(_)) => "bytes",
        Some(Val::StringVal(_)) => "string",
        Some(Val::Int32Val(_)) => "int32",
        Some(Val::Int64Val(_)) => "int64",
        Some(Val::DoubleVal(_)) => "double",
        Some(Val::FloatVal(_)) => "float",
        Some(Val::BoolVal(_)) => "bool",
        Some(Val::UnixTimestampVal(_)) => "unix timestamp",
        Some(Val::NullVal(_)) => "null",
        Some(_) => "a list, set or map",
    }
}

/// The declared type of a value as it is set (`None` for null).
pub fn type_of(val: Option<&Val>) -> Option<ValueType> {
    Some(match val? {
        Val::BytesVal(_) => ValueType::Bytes,
        Val::StringVal(_) => ValueType::String,
        Val::Int32Val(_) => ValueType::Int32,
        Val::Int64Val(_) => ValueType::Int64,
        Val::DoubleVal(_) => ValueType::Double,
        Val::FloatVal(_) => ValueType::Float,
        Val::BoolVal(_) => ValueType::Bool,
        Val::UnixTimestampVal(_) => ValueType::UnixTimestamp,
        Val::BytesListVal(_) => ValueType::BytesList,
        Val::StringListVal(_) => ValueType::StringList,
        Val::Int32ListVal(_) => ValueType::Int32List,
        Val::Int64ListVal(_) => ValueType::Int64List,
        Val::DoubleListVal(_) => ValueType::DoubleList,
        Val::FloatListVal(_) => ValueType::FloatList,
        Val::BoolListVal(_) => ValueType::BoolList,
        Val::UnixTimestampListVal(_) => ValueType::UnixTimestampList,
        Val::NullVal(_) => return None,
        _ => return None,
    })
}

/// `v` as a value of type `ty`, converted as Feast converts request values: numbers and
/// numeric strings to the numeric types (an integer type takes only whole numbers), strings
/// to STRING, booleans to BOOL, base64 strings to BYTES, epoch seconds or RFC 3339 strings
/// to UNIX_TIMESTAMP, arrays to the list types; `null` is the null value.
pub fn from_json(v: &Json, ty: ValueType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value { val: None });
    }
    let bad = || format!("{v} is not a {}", ty.as_str_name().to_lowercase());
    let list = |f: &dyn Fn(&Json) -> Result<Val, String>| -> Result<Vec<Val>, String> {
        v.as_array().ok_or_else(bad)?.iter().map(f).collect()
    };
    let scalar = |t: ValueType| move |x: &Json| from_json(x, t)?.val.ok_or_else(bad);
    let val = match ty {
        ValueType::Int64 => Val::Int64Val(int(v).ok_or_else(bad)?),
        ValueType::Int32 => {
            Val::Int32Val(int(v).and_then(|i| i32::try_from(i).ok()).ok_or_else(bad)?)
        }
        ValueType::UnixTimestamp => Val::UnixTimestampVal(match v {
            Json::String(s) => parse_timestamp(s)?.seconds,
            _ => int(v).ok_or_else(bad)?,
        }),
        ValueType::Double => Val::DoubleVal(float(v).ok_or_else(bad)?),
        ValueType::Float => Val::FloatVal(float(v).ok_or_else(bad)? as f32),
        ValueType::String => Val::StringVal(v.as_str().ok_or_else(bad)?.to_owned()),
        ValueType::Bool => Val::BoolVal(v.as_bool().ok_or_else(bad)?),
        ValueType::Bytes => Val::BytesVal(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or_else(bad)?)
                .map_err(|_| bad())?,
        ),
        ValueType::Int64List => Val::Int64ListVal(Int64List {
            val: unwrap_list(list(&scalar(ValueType::Int64))?, |v| match v {
                Val::Int64Val(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::Int32List => Val::Int32ListVal(Int32List {
            val: unwrap_list(list(&scalar(ValueType::Int32))?, |v| match v {
                Val::Int32Val(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::DoubleList => Val::DoubleListVal(DoubleList {
            val: unwrap_list(list(&scalar(ValueType::Double))?, |v| match v {
                Val::DoubleVal(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::FloatList => Val::FloatListVal(FloatList {
            val: unwrap_list(list(&scalar(ValueType::Float))?, |v| match v {
                Val::FloatVal(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::StringList => Val::StringListVal(StringList {
            val: unwrap_list(list(&scalar(ValueType::String))?, |v| match v {
                Val::StringVal(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::BoolList => Val::BoolListVal(BoolList {
            val: unwrap_list(list(&scalar(ValueType::Bool))?, |v| match v {
                Val::BoolVal(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::BytesList => Val::BytesListVal(BytesList {
            val: unwrap_list(list(&scalar(ValueType::Bytes))?, |v| match v {
                Val::BytesVal(i) => Some(i),
                _ => None,
            }),
        }),
        ValueType::UnixTimestampList => Val::UnixTimestampListVal(Int64List {
            val: unwrap_list(list(&scalar(ValueType::UnixTimestamp))?, |v| match v {
                Val::UnixTimestampVal(i) => Some(i),
                _ => None,
            }),
        }),
        other => {
            return Err(format!(
                "values of type {} are not taken from JSON",
                other.as_str_name()
            ));
        }
    };
    Ok(Value { val: Some(val) })
}

fn unwrap_list<T>(vals: Vec<Val>, f: impl Fn(Val) -> Option<T>) -> Vec<T> {
    vals.into_iter().filter_map(f).collect()
}

/// A whole number from a JSON integer, a float with no fraction, or a numeric string.
fn int(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A number from a JSON number or a numeric string (`"NaN"`, `"Infinity"` included).
fn float(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The JSON of a value in `feast serve`'s responses.
pub fn to_json(v: &Value) -> Json {
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    let Some(val) = &v.val else {
        return Json::Null;
    };
    match val {
        Val::BytesVal(b) => b64(b),
        Val::StringVal(s) | Val::JsonVal(s) | Val::UuidVal(s) | Val::TimeUuidVal(s) => {
            Json::String(s.clone())
        }
        Val::DecimalVal(s) => Json::String(s.clone()),
        Val::Int32Val(i) => Json::from(*i),
        Val::Int64Val(i) | Val::UnixTimestampVal(i) => Json::from(*i),
        Val::DoubleVal(f) => double(*f),
        Val::FloatVal(f) => double(f64::from(*f)),
        Val::BoolVal(b) => Json::Bool(*b),
        Val::NullVal(_) => Json::Null,
        Val::BytesListVal(l) => Json::Array(l.val.iter().map(|b| b64(b)).collect()),
        Val::BytesSetVal(l) => Json::Array(l.val.iter().map(|b| b64(b)).collect()),
        Val::StringListVal(l)
        | Val::JsonListVal(l)
        | Val::UuidListVal(l)
        | Val::TimeUuidListVal(l)
        | Val::DecimalListVal(l) => Json::from(l.val.clone()),
        Val::StringSetVal(l)
        | Val::UuidSetVal(l)
        | Val::TimeUuidSetVal(l)
        | Val::DecimalSetVal(l) => Json::from(l.val.clone()),
        Val::Int32ListVal(l) => Json::from(l.val.clone()),
        Val::Int32SetVal(l) => Json::from(l.val.clone()),
        Val::Int64ListVal(l) | Val::UnixTimestampListVal(l) => Json::from(l.val.clone()),
        Val::Int64SetVal(l) | Val::UnixTimestampSetVal(l) => Json::from(l.val.clone()),
        Val::DoubleListVal(l) => Json::Array(l.val.iter().map(|f| double(*f)).collect()),
        Val::DoubleSetVal(l) => Json::Array(l.val.iter().map(|f| double(*f)).collect()),
        Val::FloatListVal(l) => Json::Array(l.val.iter().map(|f| double(f64::from(*f))).collect()),
        Val::FloatSetVal(l) => Json::Array(l.val.iter().map(|f| double(f64::from(*f))).collect()),
        Val::BoolListVal(l) => Json::from(l.val.clone()),
        Val::BoolSetVal(l) => Json::from(l.val.clone()),
        Val::MapVal(m) | Val::StructVal(m) => {
            Json::Object(m.val.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        Val::MapListVal(l) | Val::StructListVal(l) => Json::Array(
            l.val
                .iter()
                .map(|m| Json::Object(m.val.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()))
                .collect(),
        ),
        Val::ListVal(l) | Val::SetVal(l) => Json::Array(l.val.iter().map(to_json).collect()),
        Val::ZonedTimestampVal(z) => Json::String(format_timestamp(&Timestamp {
            seconds: z.unix_timestamp,
            nanos: 0,
        })),
        Val::ScalarMapVal(_) => Json::Null,
    }
}

/// A double as JSON: finite ones as numbers (serde_json writes `1.0`, never `1`), the
/// others as Python's JSON strings.
fn double(f: f64) -> Json {
    if f.is_nan() {
        Json::String("NaN".into())
    } else if f == f64::INFINITY {
        Json::String("Infinity".into())
    } else if f == f64::NEG_INFINITY {
        Json::String("-Infinity".into())
    } else {
        Json::from(f)
    }
}

/// RFC 3339 UTC with a `Z` and the fewest of 0, 3, 6 or 9 fraction digits that hold the
/// nanoseconds (as protobuf's JSON writes timestamps).
pub fn format_timestamp(ts: &Timestamp) -> String {
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let n = ts.nanos.clamp(0, 999_999_999);
    if n != 0 {
        if n % 1_000_000 == 0 {
            out.push_str(&format!(".{:03}", n / 1_000_000));
        } else if n % 1_000 == 0 {
            out.push_str(&format!(".{:06}", n / 1_000));
        } else {
            out.push_str(&format!(".{n:09}"));
        }
    }
    out.push('Z');
    out
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An RFC 3339 time from 1970 to 9999 (`2024-01-01T12:00:00Z`, `2024-01-01 12:00:00.5`;
/// no zone means UTC, as pandas reads naive times in a push) as a timestamp.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    let trimmed = s.trim();
    // A numeric offset (`+00:00`, `-05:30`, as pandas' isoformat writes zoned times) is
    // applied here; humantime reads `Z` or no zone.
    let (local, offset) = split_offset(trimmed);
    let t = humantime::parse_rfc3339_weak(local)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?;
    let t = if offset >= 0 {
        t.checked_sub(std::time::Duration::from_secs(offset.unsigned_abs()))
    } else {
        t.checked_add(std::time::Duration::from_secs(offset.unsigned_abs()))
    }
    .ok_or_else(|| format!("{s:?} is out of range"))?;
    let (seconds, nanos) = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i32),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i32);
            if n == 0 {
                (s, 0)
            } else {
                (s - 1, 1_000_000_000 - n)
            }
        }
    };
    Ok(Timestamp { seconds, nanos })
}

/// `s` without a trailing `+HH:MM` / `-HH:MM` (or `+HHMM`) zone offset, and the offset in
/// seconds (0 when there is none).
fn split_offset(s: &str) -> (&str, i64) {
    let b = s.as_bytes();
    for len in [6, 5] {
        if b.len() <= len + 10 {
            continue;
        }
        let at = b.len() - len;
        let tail = &s[at..];
        let sign = match b[at] {
            b'+' => 1,
            b'-' => -1,
            _ => continue,
        };
        let digits: String = tail[1..].chars().filter(|c| *c != ':').collect();
        let colon_ok = if len == 6 { b[at + 3] == b':' } else { true };
        if digits.len() != 4 || !colon_ok || !digits.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let (h, m) = (
            digits[..2].parse::<i64>().unwrap_or(0),
            digits[2..].parse::<i64>().unwrap_or(0),
        );
        if h > 23 || m > 59 {
            continue;
        }
        return (&s[..at], sign * (h * 3600 + m * 60));
    }
    (s, 0)
}

/// `s` (text from a CSV cell, a string cast of a Parquet column, or a `map<string, string>`
/// of Feast's gRPC push) as a value of type `ty`: numbers, `true`/`false` (and `1`/`0`) for
/// BOOL, base64 for BYTES, epoch seconds or RFC 3339 for UNIX_TIMESTAMP, JSON arrays for the
/// list types; an empty cell is null.
pub fn from_text(s: &str, ty: ValueType) -> Result<Value, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(Value { val: None });
    }
    match ty {
        ValueType::Bool => {
            let b = match t.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("{s:?} is not a bool")),
            };
            Ok(Value {
                val: Some(Val::BoolVal(b)),
            })
        }
        ValueType::String => Ok(Value {
            val: Some(Val::StringVal(s.to_owned())),
        }),
        ValueType::Int64
        | ValueType::Int32
        | ValueType::Double
        | ValueType::Float
        | ValueType::Bytes
        | ValueType::UnixTimestamp => from_json(&Json::String(t.to_owned()), ty),
        _ => {
            let v: Json = serde_json::from_str(t)
                .map_err(|e| format!("{s:?} is not a JSON list for {}: {e}", ty.as_str_name()))?;
            from_json(&v, ty)
        }
    }
}

/// Epoch seconds (fractions allowed) as a timestamp; refused when not finite or beyond
/// ±2.5e11 seconds (the years 1970 ± 7,900).
pub fn timestamp_from_seconds(seconds: f64) -> Result<Timestamp, String> {
    if !seconds.is_finite() || seconds.abs() > 2.5e11 {
        return Err(format!("{seconds} is not a time in epoch seconds"));
    }
    let s = seconds.floor();
    Ok(Timestamp {
        seconds: s as i64,
        nanos: ((seconds - s) * 1e9).round().min(999_999_999.0) as i32,
    })
}

/// A time written as text: epoch seconds, or RFC 3339 ([`parse_timestamp`]).
pub fn parse_time_text(s: &str) -> Result<Timestamp, String> {
    match s.trim().parse::<f64>() {
        Ok(x) => timestamp_from_seconds(x),
        Err(_) => parse_timestamp(s),
    }
}

/// Nanoseconds since the epoch, for ordering timestamps.
pub fn nanos_of(ts: &Timestamp) -> i128 {
    i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_values_take_the_declared_type() {
        let int64 = |v: Json| from_json(&v, ValueType::Int64).map(|v| v.val);
        assert_eq!(int64(json!(1001)), Ok(Some(Val::Int64Val(1001))));
        assert_eq!(int64(json!("1001")), Ok(Some(Val::Int64Val(1001))));
        assert_eq!(int64(json!(3.0)), Ok(Some(Val::Int64Val(3))));
        assert!(int64(json!(3.5)).is_err());
        assert!(int64(json!("x")).is_err());
        assert!(int64(json!(true)).is_err());
        assert_eq!(int64(json!(null)), Ok(None));
        assert!(from_json(&json!(1i64 << 40), ValueType::Int32).is_err());
        assert_eq!(
            from_json(&json!("2.5"), ValueType::Double).unwrap().val,
            Some(Val::DoubleVal(2.5))
        );
        assert!(from_json(&json!(1), ValueType::String).is_err());
        assert_eq!(
            from_json(&json!([1, 2]), ValueType::Int64List).unwrap().val,
            Some(Val::Int64ListVal(Int64List { val: vec![1, 2] }))
        );
        assert!(from_json(&json!([1, "x"]), ValueType::Int64List).is_err());
        assert_eq!(
            from_json(&json!("2024-01-01T12:00:00Z"), ValueType::UnixTimestamp)
                .unwrap()
                .val,
            Some(Val::UnixTimestampVal(1_704_110_400))
        );
    }

    #[test]
    fn response_json_is_feast_serves() {
        let j = |val| to_json(&Value { val: Some(val) }).to_string();
        assert_eq!(j(Val::DoubleVal(1.0)), "1.0");
        assert_eq!(j(Val::DoubleVal(0.5)), "0.5");
        assert_eq!(j(Val::DoubleVal(f64::NAN)), "\"NaN\"");
        assert_eq!(j(Val::DoubleVal(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(j(Val::Int64Val(1 << 60)), "1152921504606846976");
        assert_eq!(j(Val::BytesVal(b"hi".to_vec())), "\"aGk=\"");
        assert_eq!(to_json(&Value { val: None }), Json::Null);
    }

    #[test]
    fn timestamps_are_rfc3339_with_the_digits_needed() {
        let f = |seconds, nanos| format_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(f(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(f(1_704_110_400, 0), "2024-01-01T12:00:00Z");
        assert_eq!(f(1_706_781_600, 123_456_000), "2024-02-01T10:00:00.123456Z");
        assert_eq!(f(1_706_781_600, 500_000_000), "2024-02-01T10:00:00.500Z");
        assert_eq!(f(1_706_781_600, 7), "2024-02-01T10:00:00.000000007Z");
        assert_eq!(f(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(f(951_782_400, 0), "2000-02-29T00:00:00Z");
        for (s, want) in [
            ("2024-02-01T10:00:00.123456Z", (1_706_781_600, 123_456_000)),
            ("2024-03-01 00:00:00", (1_709_251_200, 0)),
            ("2024-03-01T02:00:00+02:00", (1_709_251_200, 0)),
            ("2024-02-29T19:30:00.5-04:30", (1_709_251_200, 500_000_000)),
            ("2024-03-01T00:00:00+0000", (1_709_251_200, 0)),
        ] {
            let t = parse_timestamp(s).unwrap();
            assert_eq!((t.seconds, t.nanos), want, "{s}");
        }
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2024-03-01T00:00:00+25:00").is_err());
        let t = parse_time_text(" 1704067200.5 ").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_704_067_200, 500_000_000));
        assert_eq!(
            parse_time_text("2024-01-01T00:00:00Z").unwrap().seconds,
            1_704_067_200
        );
        assert!(timestamp_from_seconds(f64::NAN).is_err() && timestamp_from_seconds(1e12).is_err());
        // humantime reads 1970 to 9999.
        assert!(parse_timestamp("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn text_cells_take_the_declared_type() {
        let t = |s, ty| from_text(s, ty).map(|v| v.val);
        assert_eq!(t(" 7 ", ValueType::Int64), Ok(Some(Val::Int64Val(7))));
        assert_eq!(t("", ValueType::Int64), Ok(None));
        assert_eq!(t("0.25", ValueType::Double), Ok(Some(Val::DoubleVal(0.25))));
        assert_eq!(t("True", ValueType::Bool), Ok(Some(Val::BoolVal(true))));
        assert_eq!(t("0", ValueType::Bool), Ok(Some(Val::BoolVal(false))));
        assert!(t("yes", ValueType::Bool).is_err());
        assert_eq!(
            t("[1, 2]", ValueType::Int64List),
            Ok(Some(Val::Int64ListVal(Int64List { val: vec![1, 2] })))
        );
        assert_eq!(
            t("2024-01-01T12:00:00Z", ValueType::UnixTimestamp),
            Ok(Some(Val::UnixTimestampVal(1_704_110_400)))
        );
        assert!(t("x", ValueType::Double).is_err());
    }
}
