//! A JSON tree that remembers where every value and key starts, so that
//! schema and validation errors can name the line and column of the
//! offending text. Syntax is checked by `serde_json` first; this parser then
//! only has to build the tree.

/// A JSON value and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub start: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Num(String),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(Key, Node)>),
}

/// An object key and the byte offset of its opening quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub start: usize,
    pub name: String,
}

impl Node {
    /// Convert to a `serde_json::Value` (positions are dropped).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Num(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Arr(a) => Value::Array(a.iter().map(Node::to_value).collect()),
            Kind::Obj(o) => {
                let mut m = serde_json::Map::new();
                for (k, v) in o {
                    m.insert(k.name.clone(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }
}

/// A syntax error at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

/// Nesting limit, to keep hostile input from exhausting the stack.
const MAX_DEPTH: usize = 128;

/// Parse standard JSON text (the output of `hujson::standardize`).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // serde_json gives well-worded syntax errors; use it as the judge.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        let offset = crate::hujson::offset_of(text, e.line(), e.column());
        let msg = e.to_string();
        // Drop serde_json's own " at line X column Y" suffix.
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        return Err(SyntaxError {
            offset,
            message: msg,
        });
    }
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, m: &str) -> SyntaxError {
        SyntaxError {
            offset: self.i,
            message: m.to_string(),
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        let start = self.i;
        let kind = match self.s.get(self.i) {
            None => return Err(self.err("unexpected end of input")),
            Some(b'{') => {
                self.enter()?;
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let kstart = self.i;
                        let name = self.string()?;
                        self.ws();
                        if self.s.get(self.i) != Some(&b':') {
                            return Err(self.err("expected `:`"));
                        }
                        self.i += 1;
                        self.ws();
                        let v = self.value()?;
                        members.push((
                            Key {
                                start: kstart,
                                name,
                            },
                            v,
                        ));
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err("expected `,` or `}`")),
                        }
                    }
                }
                self.depth -= 1;
                Kind::Obj(members)
            }
            Some(b'[') => {
                self.enter()?;
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        items.push(self.value()?);
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err("expected `,` or `]`")),
                        }
                    }
                }
                self.depth -= 1;
                Kind::Arr(items)
            }
            Some(b'"') => Kind::Str(self.string()?),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Kind::Bool(true)
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Kind::Bool(false)
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Kind::Null
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                Kind::Num(self.text[start..self.i].to_string())
            }
            Some(_) => return Err(self.err("expected value")),
        };
        Ok(Node { start, kind })
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(self.err("expected string"));
        }
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
            }
        }
        let raw = &self.text[start..self.i];
        if !escaped {
            return Ok(raw[1..raw.len() - 1].to_string());
        }
        serde_json::from_str::<String>(raw).map_err(|e| SyntaxError {
            offset: start,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_offsets() {
        let t = r#"{"a": [1, "x\n"], "b": {"c": null}}"#;
        let v = parse(t).expect("parse");
        let Kind::Obj(m) = &v.kind else {
            panic!("not object")
        };
        assert_eq!(m[0].0.name, "a");
        assert_eq!(m[0].0.start, 1);
        let Kind::Arr(a) = &m[0].1.kind else {
            panic!("not array")
        };
        assert_eq!(a[1].kind, Kind::Str("x\n".into()));
        assert_eq!(a[1].start, 10);
        assert_eq!(v.to_value()["b"]["c"], serde_json::Value::Null);
    }

    #[test]
    fn syntax_error_has_offset() {
        let t = "{\n  \"a\": 1\n  \"b\": 2\n}";
        let e = parse(t).expect_err("syntax error");
        assert_eq!(crate::hujson::position(t, e.offset).line, 3);
        assert!(e.message.contains("expected"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let t = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(&t).is_err());
    }
}
