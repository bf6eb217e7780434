//! A reader for the protobuf text format, enough for Triton's `config.pbtxt`.
//!
//! Written by hand: the Rust protobuf crates parse text format only against a compiled
//! descriptor of Triton's `model_config.proto`, which would mean vendoring that schema for the
//! handful of fields the FIL backend uses. This reader is schema-less: it keeps every field as
//! a scalar string or a nested message, and list syntax (`[a, b]`) becomes repeated fields.

use std::fmt;

/// A parsed text-format message: its fields in order (repeated fields appear repeatedly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// `(name, value)` pairs in file order.
    pub fields: Vec<(String, Field)>,
}

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A string (unescaped), number, enum name or boolean, as written.
    Scalar(String),
    /// A nested message.
    Message(Message),
}

/// A syntax error with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Message {
    /// The first scalar field `name`.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|(k, v)| match v {
            Field::Scalar(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }
    /// The first scalar field `name` as an integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.str(name).and_then(|s| s.parse().ok())
    }
    /// Every scalar field `name` that is an integer.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.fields
            .iter()
            .filter_map(|(k, v)| match v {
                Field::Scalar(s) if k == name => s.parse().ok(),
                _ => None,
            })
            .collect()
    }
    /// The first message field `name`.
    pub fn message<'a>(&'a self, name: &'a str) -> Option<&'a Message> {
        self.messages(name).next()
    }
    /// Every message field `name`.
    pub fn messages<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Message> + 'a {
        self.fields.iter().filter_map(move |(k, v)| match v {
            Field::Message(m) if k == name => Some(m),
            _ => None,
        })
    }
}

/// Parses a whole text-format document.
pub fn parse(text: &str) -> Result<Message, ParseError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        line: 1,
        depth: 0,
    };
    let msg = p.message(None)?;
    Ok(msg)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    depth: usize,
}

/// Deepest message nesting accepted (`a { b { c { ... } } }`): deeper is a parse error, not
/// a stack overflow. Triton configs nest four or five levels.
pub const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.src.get(self.pos) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | b',' | b';' => self.pos += 1,
                b'#' => {
                    while let Some(&c) = self.src.get(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.src.get(self.pos).copied()
    }

    fn message(&mut self, close: Option<u8>) -> Result<Message, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        let mut msg = Message::default();
        loop {
            match self.peek() {
                None if close.is_none() => break,
                None => return self.err("unexpected end of input inside a message"),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {
                    let name = self.ident()?;
                    let mut colon = false;
                    if self.peek() == Some(b':') {
                        self.pos += 1;
                        colon = true;
                    }
                    match self.peek() {
                        Some(b'[') => {
                            self.pos += 1;
                            loop {
                                match self.peek() {
                                    Some(b']') => {
                                        self.pos += 1;
                                        break;
                                    }
                                    None => return self.err("unterminated list"),
                                    Some(_) => {
                                        let v = self.value()?;
                                        msg.fields.push((name.clone(), v));
                                    }
                                }
                            }
                        }
                        Some(b'{') | Some(b'<') => {
                            let v = self.value()?;
                            msg.fields.push((name, v));
                        }
                        Some(_) if colon => {
                            let v = self.value()?;
                            msg.fields.push((name, v));
                        }
                        _ => return self.err(format!("expected ':' or '{{' after '{name}'")),
                    }
                }
            }
        }
        self.depth -= 1;
        Ok(msg)
    }

    fn value(&mut self) -> Result<Field, ParseError> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Ok(Field::Message(self.message(Some(b'}'))?))
            }
            Some(b'<') => {
                self.pos += 1;
                Ok(Field::Message(self.message(Some(b'>'))?))
            }
            Some(b'"' | b'\'') => {
                // Adjacent string literals concatenate, as in protobuf text format. A loop,
                // not a recursive call per literal: a file of a million `""` must not
                // exhaust the stack.
                let mut out = Vec::new();
                while let Some(q @ (b'"' | b'\'')) = self.peek() {
                    self.pos += 1;
                    self.string_body(q, &mut out)?;
                }
                let s = String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))?;
                Ok(Field::Scalar(s))
            }
            Some(_) => {
                let start = self.pos;
                while let Some(&c) = self.src.get(self.pos) {
                    if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if start == self.pos {
                    return self.err(format!(
                        "unexpected character '{}'",
                        self.src[start] as char
                    ));
                }
                Ok(Field::Scalar(
                    String::from_utf8_lossy(&self.src[start..self.pos]).into_owned(),
                ))
            }
            None => self.err("expected a value"),
        }
    }

    /// The rest of a string literal opened by `q` (already consumed), unescaped into `out`.
    fn string_body(&mut self, q: u8, out: &mut Vec<u8>) -> Result<(), ParseError> {
        loop {
            let Some(&c) = self.src.get(self.pos) else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match c {
                b'\n' => return self.err("newline in string"),
                b'\\' => {
                    let Some(&e) = self.src.get(self.pos) else {
                        return self.err("unterminated string");
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                c if c == q => return Ok(()),
                c => out.push(c),
            }
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        let start = self.pos;
        while let Some(&c) = self.src.get(self.pos) {
            if c.is_ascii_alphanumeric() || c == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        if start == self.pos {
            let found = self.src.get(self.pos).map(|&c| c as char).unwrap_or(' ');
            return self.err(format!("expected a field name, found '{found}'"));
        }
        Ok(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_lists_and_comments() {
        let m = parse(
            "# comment\nname: \"m\" max_batch_size: 8\ninput [ { name: 'a' dims: [1, 2] }, { name: \"b\" } ]\nopt < x: 1 >\n",
        )
        .unwrap();
        assert_eq!(m.str("name"), Some("m"));
        assert_eq!(m.int("max_batch_size"), Some(8));
        let inputs: Vec<_> = m.messages("input").collect();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].ints("dims"), vec![1, 2]);
        assert_eq!(inputs[1].str("name"), Some("b"));
        assert_eq!(m.message("opt").unwrap().int("x"), Some(1));
    }

    #[test]
    fn reports_errors_with_lines() {
        let e = parse("a: 1\nb {\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(parse("a: \"x").is_err());
        assert!(parse("a 1").is_err());
        assert!(parse("}").is_err());
        let deep = "a {".repeat(200);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn adjacent_strings_concatenate_without_recursion() {
        let m = parse("a: \"x\" 'y' \"z\"\nb: 1").unwrap();
        assert_eq!((m.str("a"), m.int("b")), (Some("xyz"), Some(1)));
        // A million adjacent literals once meant a million nested calls.
        let many = format!("a: {}", "\"\" ".repeat(1_000_000));
        assert_eq!(parse(&many).unwrap().str("a"), Some(""));
    }

    #[test]
    fn every_nesting_form_is_bounded() {
        for open in ["a {", "a <", "a: {", "a [{", "a [ <"] {
            let ok = open.repeat(MAX_DEPTH - 1);
            // Unterminated, but within the bound: an ordinary syntax error.
            let e = parse(&ok).unwrap_err();
            assert!(!e.message.contains("too deep"), "{open}: {e}");
            let deep = open.repeat(100_000);
            let e = parse(&deep).unwrap_err();
            assert!(e.message.contains("too deep"), "{open}: {e}");
        }
        let exact = format!(
            "{}{}",
            "a {".repeat(MAX_DEPTH - 1),
            "}".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&exact).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::time::{Duration, Instant};

        const PIECES: [&str; 16] = [
            "a", "b_1", ":", "{", "}", "<", ">", "[", "]", ",", "\"", "'", "\\", "\n", "#", " ",
        ];

        fn timed(text: &str) {
            let started = Instant::now();
            let _ = parse(text);
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "took {took:?} on {text:?}");
        }

        proptest! {
            // Cases: proptest's default (256), or PROPTEST_CASES.
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_text_parses_or_errs(text in any::<String>()) {
                timed(&text);
            }

            #[test]
            fn any_arrangement_of_the_syntax_parses_or_errs(
                pieces in prop::collection::vec(prop::sample::select(&PIECES[..]), 0..2000),
            ) {
                timed(&pieces.concat());
            }
        }
    }
}
