//! A UBJSON (Universal Binary JSON, draft 12) reader into `serde_json::Value`, enough for
//! XGBoost's `.ubj` models: containers with optional `$` type and `#` count markers, and the
//! numeric, string and boolean types.
//!
//! Written by hand: the UBJSON crates on crates.io are unmaintained or do not read typed
//! (`$`) containers, which XGBoost writes for every node array.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused rather than risking the stack (the parser recurses
/// once per level); the same bound as serde_json's recursion limit for `.json` models.
pub const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    /// Values still allowed: one per input byte. Every value but the elements of a typed
    /// container of nulls or booleans (`[$Z#`, `[$T#`, ...) takes a byte at least; those take
    /// none, so without this budget many such containers, each declaring as many elements as
    /// there are bytes left, would build a document quadratic in the file's size.
    budget: usize,
}

/// Parses a whole document. Builds at most one value per input byte, so memory stays
/// proportional to the input whatever it declares.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader {
        b: bytes,
        pos: 0,
        budget: bytes.len(),
    };
    let t = r.byte()?;
    let v = r.value(t, 0)?;
    Ok(v)
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.pos).ok_or("unexpected end of data")?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.b.get(self.pos..end).ok_or("unexpected end of data")?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn int_of(&mut self, t: u8) -> Result<i64, String> {
        Ok(match t {
            b'i' => i64::from(self.byte()? as i8),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            other => {
                return Err(format!(
                    "expected an integer type, found '{}'",
                    other as char
                ));
            }
        })
    }

    /// A length of items of at least `item_bytes` bytes each (at least 1: a count of
    /// zero-byte items such as nulls is bounded as if each took a byte). Lengths the bytes left
    /// cannot hold are refused before anything is allocated for them.
    fn length(&mut self, item_bytes: usize) -> Result<usize, String> {
        let t = self.byte()?;
        let n = self.int_of(t)?;
        let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        let left = self.b.len().saturating_sub(self.pos);
        if n > left / item_bytes.max(1) {
            return Err(format!(
                "declared length {n} exceeds the {left} bytes left in the data"
            ));
        }
        Ok(n)
    }

    /// The fewest bytes a value of type marker `t` takes after its marker.
    fn min_payload(t: u8) -> usize {
        match t {
            b'i' | b'U' | b'C' => 1,
            b'I' => 2,
            b'l' | b'd' => 4,
            b'L' | b'D' => 8,
            // A length: its type marker and at least one byte.
            b'S' | b'H' => 2,
            // An end marker at least.
            b'[' | b'{' => 1,
            _ => 0,
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.length(1)?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    fn float(x: f64) -> Value {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }

    fn value(&mut self, t: u8, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or("more values than the data has bytes")?;
        Ok(match t {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::Number(self.int_of(t)?.into()),
            b'd' => Self::float(f64::from(f32::from_be_bytes(self.array()?))),
            b'D' => Self::float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String((self.byte()? as char).to_string()),
            b'S' | b'H' => Value::String(self.string()?),
            b'[' => self.container(false, depth)?,
            b'{' => self.container(true, depth)?,
            other => {
                return Err(format!(
                    "unknown type marker '{}' at byte {}",
                    other as char,
                    self.pos - 1
                ));
            }
        })
    }

    fn container(&mut self, object: bool, depth: usize) -> Result<Value, String> {
        let mut typ = None;
        let mut count = None;
        if self.b.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            typ = Some(self.byte()?);
            if self.b.get(self.pos) != Some(&b'#') {
                return Err("a typed container must have a count".into());
            }
        }
        if self.b.get(self.pos) == Some(&b'#') {
            self.pos += 1;
            // Each element: its payload, plus its type marker unless typed, plus a key (a
            // length of two bytes at least) in an object.
            let item = match typ {
                Some(t) => Self::min_payload(t),
                None => 1,
            } + if object { 2 } else { 0 };
            count = Some(self.length(item)?);
        }
        // The count, if any, is bounded by the bytes left just above and by the value budget.
        let capacity = if object {
            0
        } else {
            count.unwrap_or(0).min(self.budget)
        };
        let mut arr = Vec::with_capacity(capacity);
        let mut map = Map::new();
        let mut i = 0usize;
        loop {
            match count {
                Some(c) if i == c => break,
                None => {
                    let next = *self.b.get(self.pos).ok_or("unterminated container")?;
                    if next == if object { b'}' } else { b']' } {
                        self.pos += 1;
                        break;
                    }
                    if next == b'N' {
                        self.pos += 1;
                        continue;
                    }
                }
                _ => {}
            }
            let key = if object { Some(self.string()?) } else { None };
            let t = match typ {
                Some(t) => t,
                None => self.byte()?,
            };
            let v = self.value(t, depth + 1)?;
            match key {
                Some(k) => {
                    map.insert(k, v);
                }
                None => arr.push(v),
            }
            i += 1;
        }
        Ok(if object {
            Value::Object(map)
        } else {
            Value::Array(arr)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_typed_and_untyped_containers() {
        // {"a": [$d#U2 1.5 -2.0], "b": "hi", "c": [i1 T ]}
        let mut b = vec![b'{', b'U', 1, b'a', b'[', b'$', b'd', b'#', b'U', 2];
        b.extend_from_slice(&1.5f32.to_be_bytes());
        b.extend_from_slice(&(-2.0f32).to_be_bytes());
        b.extend_from_slice(&[b'U', 1, b'b', b'S', b'U', 2, b'h', b'i']);
        b.extend_from_slice(&[b'U', 1, b'c', b'[', b'i', 1, b'T', b']', b'}']);
        assert_eq!(
            parse(&b).unwrap(),
            json!({"a": [1.5, -2.0], "b": "hi", "c": [1, true]})
        );
    }

    #[test]
    fn refuses_truncated_and_unknown() {
        assert!(parse(&[b'{', b'U', 1]).is_err());
        assert!(parse(b"Q").is_err());
        assert!(
            parse(&[
                b'[', b'#', b'L', 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        assert!(parse(&vec![b'['; 1000]).is_err());
    }

    /// Typed containers of nulls take no bytes per element: 100 of them, each declaring as
    /// many elements as there are bytes left, must not build ~100 times the input in values.
    #[test]
    fn zero_byte_elements_are_bounded_by_the_input_size() {
        let mut b = vec![b'['];
        for _ in 0..100 {
            b.extend_from_slice(&[b'[', b'$', b'Z', b'#', b'I', 0x01, 0x2c]);
        }
        b.push(b']');
        let e = parse(&b).unwrap_err();
        assert!(e.contains("more values than the data has bytes"), "{e}");
        // Within the budget they parse.
        assert_eq!(
            parse(&[b'[', b'[', b'$', b'Z', b'#', b'i', 2, b'T', b'T', b']']).unwrap(),
            json!([[null, null], true, true])
        );
    }
}
