//! Decoding of PostgreSQL's `pgoutput` logical-replication messages, protocol version 1, text
//! format (PostgreSQL docs, "Logical Replication Message Formats"): Relation, Insert, Update,
//! Delete and Truncate; Type and Origin are recognised and skipped.
//!
//! Written here because the replication client (`pgwire-replication`) frames the stream and
//! decodes only Begin, Commit and logical messages, handing every other message over as raw
//! bytes; the one crate that decodes them all (`pg_walstream`) brings its own connection stack
//! (aws-lc) instead of the Tokio one the pipelines share. Every length is checked against the
//! bytes that remain before anything is allocated, so a corrupt message is an error, never a
//! panic or a huge allocation.

use std::collections::HashMap;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before its fields did.
    #[error("pgoutput message truncated ({0})")]
    Truncated(&'static str),
    /// A field has a value the protocol does not allow.
    #[error("pgoutput message invalid: {0}")]
    Invalid(String),
    /// A change names a relation no Relation message described.
    #[error("pgoutput change for unknown relation oid {0}")]
    UnknownRelation(u32),
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
    /// Its type modifier (`NUMERIC(p, s)`: `((p << 16) | s) + 4`; -1: none).
    pub type_modifier: i32,
    /// Part of the replica identity (the key).
    pub key: bool,
}

/// A table, as the last Relation message described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Its OID.
    pub oid: u32,
    /// Schema.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<Column>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value the change did not touch (its value is not sent).
    UnchangedToast,
    /// The value in the type's text output format.
    Text(String),
    /// The value in the type's binary format (only when binary mode was asked for).
    Binary(Vec<u8>),
}

/// What a message means for the consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A relation was (re)described; the decoder keeps it.
    Relation(u32),
    /// A row was inserted.
    Insert {
        /// The relation.
        relation: u32,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A row was updated.
    Update {
        /// The relation.
        relation: u32,
        /// The old row (replica identity FULL) or its key, when sent.
        old: Option<Vec<Datum>>,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A row was deleted.
    Delete {
        /// The relation.
        relation: u32,
        /// The old row or its key.
        old: Vec<Datum>,
    },
    /// Tables were truncated.
    Truncate {
        /// The relations.
        relations: Vec<u32>,
    },
    /// Nothing a consumer acts on (Type, Origin, Begin/Commit framing, logical messages).
    Other,
}

/// Decodes messages, remembering relations.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

/// Most columns a relation may have (PostgreSQL's own limit is 1600).
const MAX_COLUMNS: usize = 1600;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| DecodeError::Invalid(format!("{what} is not UTF-8")))?
            .to_string();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.i16("tuple column count")?;
        let n = usize::try_from(n)
            .map_err(|_| DecodeError::Invalid(format!("negative column count {n}")))?;
        // Each column takes at least one byte: a count beyond what remains is corrupt.
        if n > MAX_COLUMNS || n > self.buf.len() {
            return Err(DecodeError::Invalid(format!("tuple of {n} columns")));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.i32("column length")?;
                    let len = usize::try_from(len)
                        .map_err(|_| DecodeError::Invalid(format!("column length {len}")))?;
                    let bytes = self.take(len, "column value")?;
                    if kind == b't' {
                        Datum::Text(
                            std::str::from_utf8(bytes)
                                .map_err(|_| DecodeError::Invalid("text value not UTF-8".into()))?
                                .to_string(),
                        )
                    } else {
                        Datum::Binary(bytes.to_vec())
                    }
                }
                other => {
                    return Err(DecodeError::Invalid(format!(
                        "column kind {:?}",
                        char::from(other)
                    )));
                }
            });
        }
        Ok(out)
    }
}

impl Decoder {
    /// A decoder that knows no relation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The relation of `oid`, as last described.
    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// Decodes one message (the payload of one XLogData).
    pub fn decode(&mut self, msg: &[u8]) -> Result<Change, DecodeError> {
        let mut r = Reader { buf: msg };
        let tag = r.u8("message tag")?;
        match tag {
            b'R' => {
                let oid = r.u32("relation oid")?;
                let namespace = r.cstr("namespace")?;
                let name = r.cstr("relation name")?;
                let _identity = r.u8("replica identity")?;
                let n = r.i16("column count")?;
                let n = usize::try_from(n)
                    .map_err(|_| DecodeError::Invalid(format!("negative column count {n}")))?;
                if n > MAX_COLUMNS || n > r.buf.len() {
                    return Err(DecodeError::Invalid(format!("relation of {n} columns")));
                }
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let flags = r.u8("column flags")?;
                    let name = r.cstr("column name")?;
                    let type_oid = r.u32("column type")?;
                    let type_modifier = r.i32("column type modifier")?;
                    columns.push(Column {
                        name,
                        type_oid,
                        type_modifier,
                        key: flags & 1 == 1,
                    });
                }
                self.relations.insert(
                    oid,
                    Relation {
                        oid,
                        namespace: if namespace.is_empty() {
                            "pg_catalog".into()
                        } else {
                            namespace
                        },
                        name,
                        columns,
                    },
                );
                Ok(Change::Relation(oid))
            }
            b'I' => {
                let relation = self.known(r.u32("relation oid")?)?;
                match r.u8("insert tuple marker")? {
                    b'N' => Ok(Change::Insert {
                        relation,
                        new: self.checked(relation, r.tuple()?)?,
                    }),
                    other => Err(DecodeError::Invalid(format!(
                        "insert marker {:?}",
                        char::from(other)
                    ))),
                }
            }
            b'U' => {
                let relation = self.known(r.u32("relation oid")?)?;
                let mut old = None;
                let mut marker = r.u8("update tuple marker")?;
                if marker == b'K' || marker == b'O' {
                    old = Some(self.checked(relation, r.tuple()?)?);
                    marker = r.u8("update tuple marker")?;
                }
                if marker != b'N' {
                    return Err(DecodeError::Invalid(format!(
                        "update marker {:?}",
                        char::from(marker)
                    )));
                }
                Ok(Change::Update {
                    relation,
                    old,
                    new: self.checked(relation, r.tuple()?)?,
                })
            }
            b'D' => {
                let relation = self.known(r.u32("relation oid")?)?;
                match r.u8("delete tuple marker")? {
                    b'K' | b'O' => Ok(Change::Delete {
                        relation,
                        old: self.checked(relation, r.tuple()?)?,
                    }),
                    other => Err(DecodeError::Invalid(format!(
                        "delete marker {:?}",
                        char::from(other)
                    ))),
                }
            }
            b'T' => {
                let n = r.u32("truncate relation count")?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > r.buf.len() / 4 {
                    return Err(DecodeError::Invalid(format!("truncate of {n} relations")));
                }
                let _options = r.u8("truncate options")?;
                let relations = (0..n)
                    .map(|_| r.u32("truncated relation"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Change::Truncate { relations })
            }
            b'Y' | b'O' | b'B' | b'C' | b'M' => Ok(Change::Other),
            other => Err(DecodeError::Invalid(format!(
                "unknown message tag {:?}",
                char::from(other)
            ))),
        }
    }

    fn known(&self, oid: u32) -> Result<u32, DecodeError> {
        if self.relations.contains_key(&oid) {
            Ok(oid)
        } else {
            Err(DecodeError::UnknownRelation(oid))
        }
    }

    fn checked(&self, oid: u32, tuple: Vec<Datum>) -> Result<Vec<Datum>, DecodeError> {
        let want = self.relations.get(&oid).map_or(0, |r| r.columns.len());
        if tuple.len() != want {
            return Err(DecodeError::Invalid(format!(
                "tuple of {} columns for a relation of {want}",
                tuple.len()
            )));
        }
        Ok(tuple)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Builds pgoutput messages the way the server writes them.
    pub(crate) fn relation_msg(oid: u32, table: &str, cols: &[(&str, u32, i32, bool)]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(oid.to_be_bytes());
        m.extend(b"public\0");
        m.extend(table.as_bytes());
        m.push(0);
        m.push(b'd');
        m.extend((cols.len() as i16).to_be_bytes());
        for (name, ty, typmod, key) in cols {
            m.push(u8::from(*key));
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(ty.to_be_bytes());
            m.extend(typmod.to_be_bytes());
        }
        m
    }

    pub(crate) fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => m.push(b'n'),
                Some(s) => {
                    m.push(b't');
                    m.extend((s.len() as i32).to_be_bytes());
                    m.extend(s.as_bytes());
                }
            }
        }
        m
    }

    pub(crate) fn insert_msg(oid: u32, values: &[Option<&str>]) -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend(oid.to_be_bytes());
        m.push(b'N');
        m.extend(tuple(values));
        m
    }

    #[test]
    fn relation_then_insert_update_delete() {
        let mut d = Decoder::new();
        let rel = relation_msg(16384, "t", &[("id", 25, -1, true), ("n", 23, -1, false)]);
        assert_eq!(d.decode(&rel).unwrap(), Change::Relation(16384));
        let r = d.relation(16384).unwrap();
        assert_eq!(r.name, "t");
        assert_eq!(r.namespace, "public");
        assert!(r.columns[0].key && !r.columns[1].key);

        let ins = insert_msg(16384, &[Some("a"), None]);
        assert_eq!(
            d.decode(&ins).unwrap(),
            Change::Insert {
                relation: 16384,
                new: vec![Datum::Text("a".into()), Datum::Null]
            }
        );

        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'K');
        upd.extend(tuple(&[Some("a"), None]));
        upd.push(b'N');
        upd.extend(tuple(&[Some("a"), Some("2")]));
        assert_eq!(
            d.decode(&upd).unwrap(),
            Change::Update {
                relation: 16384,
                old: Some(vec![Datum::Text("a".into()), Datum::Null]),
                new: vec![Datum::Text("a".into()), Datum::Text("2".into())]
            }
        );

        let mut del = vec![b'D'];
        del.extend(16384u32.to_be_bytes());
        del.push(b'O');
        del.extend(tuple(&[Some("a"), Some("2")]));
        assert!(matches!(d.decode(&del).unwrap(), Change::Delete { .. }));

        let mut tr = vec![b'T'];
        tr.extend(1u32.to_be_bytes());
        tr.push(0);
        tr.extend(16384u32.to_be_bytes());
        assert_eq!(
            d.decode(&tr).unwrap(),
            Change::Truncate {
                relations: vec![16384]
            }
        );
    }

    #[test]
    fn unknown_relation_and_wrong_arity_are_refused() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&insert_msg(7, &[Some("a")])),
            Err(DecodeError::UnknownRelation(7))
        );
        d.decode(&relation_msg(7, "t", &[("id", 25, -1, true)]))
            .unwrap();
        assert!(matches!(
            d.decode(&insert_msg(7, &[Some("a"), Some("b")])),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error_not_a_panic() {
        let mut d = Decoder::new();
        let rel = relation_msg(9, "t", &[("id", 25, -1, true), ("n", 23, -1, false)]);
        for cut in 0..rel.len() {
            assert!(Decoder::new().decode(&rel[..cut]).is_err(), "cut {cut}");
        }
        d.decode(&rel).unwrap();
        let ins = insert_msg(9, &[Some("abc"), Some("1")]);
        for cut in 0..ins.len() {
            assert!(d.decode(&ins[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn hostile_lengths_allocate_nothing() {
        let mut d = Decoder::new();
        d.decode(&relation_msg(9, "t", &[("id", 25, -1, true)]))
            .unwrap();
        // A column claiming 2 GiB in a 20-byte message.
        let mut m = vec![b'I'];
        m.extend(9u32.to_be_bytes());
        m.push(b'N');
        m.extend(1i16.to_be_bytes());
        m.push(b't');
        m.extend(i32::MAX.to_be_bytes());
        assert_eq!(d.decode(&m), Err(DecodeError::Truncated("column value")));
        // A relation claiming 32767 columns.
        let mut r = vec![b'R'];
        r.extend(9u32.to_be_bytes());
        r.extend(b"public\0t\0d");
        r.extend(i16::MAX.to_be_bytes());
        assert!(matches!(d.decode(&r), Err(DecodeError::Invalid(_))));
        // Negative counts and unknown tags.
        let mut n = vec![b'I'];
        n.extend(9u32.to_be_bytes());
        n.push(b'N');
        n.extend((-1i16).to_be_bytes());
        assert!(d.decode(&n).is_err());
        assert!(d.decode(b"Zxx").is_err());
        assert!(d.decode(b"").is_err());
    }
}
