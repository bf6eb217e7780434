//! Feast's Redis layout: one hash per entity key and project, shared by every feature view on
//! that entity.
//!
//! - The key is the entity key in Feast's serialisation v3, then the project name's bytes:
//!   `u32le(number of join keys)`; per join key, sorted by name, `u32le(2) u32le(len) name`
//!   (2 = STRING); then per value, in the same order, `u32le(value type) u32le(len) bytes`
//!   (INT64 and UNIX_TIMESTAMP as 8 bytes and INT32 as 4, little-endian; STRING as UTF-8;
//!   BYTES raw). Other types cannot be keys. The value's type is part of the key: int64 1001,
//!   int32 1001 and "1001" are three entities.
//! - A feature's field is the 4 bytes `u32le(murmur3_x86_32("<view>:<feature>", seed 0))`;
//!   its value the `feast.types.Value` protobuf (empty bytes for null).
//! - The field `_ts:<view>` holds the view's event time as a `google.protobuf.Timestamp`.
//!
//! The murmur3 hash is the `murmur3` crate's.

use crate::FeatureError;
use crate::types::{Value, value::Val};

/// The entity key serialisation version written and read (Feast's default and only one).
pub const SERIALIZATION_VERSION: u32 = 3;

/// Feast's ValueType numbers of the types an entity key may hold.
const BYTES: u32 = 1;
const STRING: u32 = 2;
const INT32: u32 = 3;
const INT64: u32 = 4;
const UNIX_TIMESTAMP: u32 = 8;

/// The Redis key of an entity: `pairs` (join key, value), in any order, and the project.
pub fn entity_key(pairs: &[(&str, &Value)], project: &str) -> Result<Vec<u8>, FeatureError> {
    let mut sorted: Vec<&(&str, &Value)> = pairs.iter().collect();
    // Python compares str by code point, which is UTF-8 byte order.
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(FeatureError::InvalidArgument(format!(
            "join key {:?} is given twice",
            w[0].0
        )));
    }
    let payload: usize = sorted.iter().map(|(k, _)| 16 + k.len() + 8).sum();
    let mut out = Vec::with_capacity(4 + payload + project.len());
    put_u32(&mut out, len_u32(sorted.len())?);
    for (name, _) in &sorted {
        put_u32(&mut out, STRING);
        put_u32(&mut out, len_u32(name.len())?);
        out.extend_from_slice(name.as_bytes());
    }
    for (name, value) in &sorted {
        match &value.val {
            Some(Val::StringVal(s)) => put_field(&mut out, STRING, s.as_bytes())?,
            Some(Val::BytesVal(b)) => put_field(&mut out, BYTES, b)?,
            Some(Val::Int32Val(v)) => put_field(&mut out, INT32, &v.to_le_bytes())?,
            Some(Val::Int64Val(v)) => put_field(&mut out, INT64, &v.to_le_bytes())?,
            Some(Val::UnixTimestampVal(v)) => {
                put_field(&mut out, UNIX_TIMESTAMP, &v.to_le_bytes())?
            }
            other => {
                return Err(FeatureError::InvalidArgument(format!(
                    "join key {name:?}: {} cannot be an entity key (string, bytes, int32, int64 or unix timestamp)",
                    crate::value::describe(other.as_ref())
                )));
            }
        }
    }
    out.extend_from_slice(project.as_bytes());
    Ok(out)
}

/// The hash field of a feature of a view.
pub fn feature_field(view: &str, feature: &str) -> [u8; 4] {
    let name = format!("{view}:{feature}");
    // Reading from a slice cannot fail.
    murmur3::murmur3_32(&mut name.as_bytes(), 0)
        .unwrap_or_default()
        .to_le_bytes()
}

/// The hash field of a view's event timestamp.
pub fn timestamp_field(view: &str) -> Vec<u8> {
    format!("_ts:{view}").into_bytes()
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_field(out: &mut Vec<u8>, kind: u32, bytes: &[u8]) -> Result<(), FeatureError> {
    put_u32(out, kind);
    put_u32(out, len_u32(bytes.len())?);
    out.extend_from_slice(bytes);
    Ok(())
}

fn len_u32(n: usize) -> Result<u32, FeatureError> {
    u32::try_from(n)
        .map_err(|_| FeatureError::InvalidArgument(format!("{n} bytes is too long for a key")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(val: Val) -> Value {
        Value { val: Some(val) }
    }

    #[test]
    fn keys_are_feasts_bytes() {
        // Feast 0.67's serialize_entity_key(v3) + b"demo" for driver_id = 1001 (int64).
        let key = entity_key(&[("driver_id", &v(Val::Int64Val(1001)))], "demo").unwrap();
        let want =
            "0100000002000000090000006472697665725f69640400000008000000e90300000000000064656d6f";
        assert_eq!(hex(&key), want);
        // Two keys, given out of order: all names (sorted), then all values.
        let key = entity_key(
            &[
                ("zeta", &v(Val::StringVal("ab".into()))),
                ("alpha", &v(Val::Int32Val(-1))),
            ],
            "",
        )
        .unwrap();
        let want = concat!(
            "02000000",
            "0200000005000000616c706861",
            "02000000040000007a657461",
            "0300000004000000ffffffff",
            "02000000020000006162"
        );
        assert_eq!(hex(&key), want);
        // The type is part of the key.
        let a = entity_key(&[("id", &v(Val::Int64Val(7)))], "p").unwrap();
        let b = entity_key(&[("id", &v(Val::Int32Val(7)))], "p").unwrap();
        let c = entity_key(&[("id", &v(Val::StringVal("7".into())))], "p").unwrap();
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn unkeyable_values_and_repeated_keys_are_refused() {
        assert!(entity_key(&[("x", &v(Val::DoubleVal(1.0)))], "p").is_err());
        assert!(entity_key(&[("x", &Value { val: None })], "p").is_err());
        let one = v(Val::Int64Val(1));
        assert!(entity_key(&[("x", &one), ("x", &one)], "p").is_err());
    }

    #[test]
    fn fields_are_feasts_murmur3() {
        // mmh3.hash("driver_stats:conv_rate", 0, signed=False) = 0x141073fa, little-endian.
        assert_eq!(
            feature_field("driver_stats", "conv_rate"),
            [0xfa, 0x73, 0x10, 0x14]
        );
        assert_eq!(
            feature_field("driver_stats", "trips"),
            [0x42, 0x6a, 0xa4, 0x34]
        );
        assert_eq!(timestamp_field("driver_stats"), b"_ts:driver_stats");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
