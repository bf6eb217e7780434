//! A UBJSON (Universal Binary JSON, draft 12) reader into `serde_json::Value`, enough for
//! XGBoost's `.ubj` models: containers with optional `$` type and `#` count markers, and the
//! numeric, string and boolean types.
//!
//! Written by hand: the UBJSON crates on crates.io are unmaintained or do not read typed
//! (`$`) containers, which XGBoost writes for every node array.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

/// Parses a whole document.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b: bytes, pos: 0 };
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

    fn length(&mut self) -> Result<usize, String> {
        let t = self.byte()?;
        let n = self.int_of(t)?;
        let n = usize::try_from(n).map_err(|_| "negative length".to_string())?;
        // Every string byte or container element takes at least one byte: refuse lengths the
        // data cannot hold before anything is allocated for them.
        if n > self.b.len().saturating_sub(self.pos) {
            return Err(format!("length {n} exceeds the data"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.length()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    fn float(x: f64) -> Value {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }

    fn value(&mut self, t: u8, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nesting too deep".into());
        }
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
            count = Some(self.length()?);
        }
        let mut arr = Vec::new();
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
}
