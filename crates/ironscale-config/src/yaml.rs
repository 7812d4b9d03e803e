//! A small YAML document tree that keeps the line of every node and the raw
//! text of every scalar, built from `saphyr-parser` events.
//!
//! We deliberately do not resolve scalar types here (YAML 1.1 vs 1.2 bools,
//! octal `0770`, ...): the loader converts each scalar according to the type
//! the configuration key expects, the way viper does for Headscale.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A YAML node with the (1-based) line where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// A scalar with its raw text; `quoted` is true for any non-plain style.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Mapping entries in document order: (key text, key line, value).
    Map(Vec<(String, usize, Node)>),
}

impl Node {
    /// Plain `~`, `null`, `Null`, `NULL` or an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, quoted: false }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A syntax error with its line (1-based).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Upper bound on the nodes that alias expansion may create (billion laughs).
const MAX_NODES: usize = 200_000;

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(String, usize, Node)>,
        /// Entries from `<<` merge keys; explicit keys win over them.
        merged: Vec<(String, usize, Node)>,
        key: Option<(String, usize)>,
    },
}

fn count(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(v) => 1 + v.iter().map(count).sum::<usize>(),
        Kind::Map(v) => 1 + v.iter().map(|(_, _, n)| count(n)).sum::<usize>(),
    }
}

/// Parse the first document of `text`. An empty stream gives an empty mapping.
/// Duplicate keys, complex keys and undefined aliases are errors.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let mut docs = 0usize;

    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| SyntaxError {
            line: e.marker().line().max(1),
            message: format!(
                "YAML syntax error: {} (column {})",
                e.info(),
                e.marker().col() + 1
            ),
        })?;
        let line = span.start.line().max(1);
        let complete: Option<(Node, usize)> = match ev {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(SyntaxError {
                        line,
                        message: "the file holds more than one YAML document (`---`); a config file must hold exactly one".into(),
                    });
                }
                None
            }
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => None,
            Event::Scalar(v, style, anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                Some((
                    Node {
                        line,
                        kind: Kind::Scalar {
                            text: v.into_owned(),
                            quoted,
                        },
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    nodes += count(n);
                    if nodes > MAX_NODES {
                        return Err(SyntaxError {
                            line,
                            message: "alias expansion makes the document too large".into(),
                        });
                    }
                    let mut n = n.clone();
                    n.line = line;
                    Some((n, 0))
                }
                None => {
                    return Err(SyntaxError {
                        line,
                        message: "alias refers to an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    merged: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => Some((
                    Node {
                        line,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                )),
                _ => {
                    return Err(SyntaxError {
                        line,
                        message: "unbalanced sequence".into(),
                    })
                }
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    line,
                    anchor,
                    mut entries,
                    merged,
                    ..
                }) => {
                    for (k, kl, v) in merged {
                        if !entries.iter().any(|(e, _, _)| *e == k) {
                            entries.push((k, kl, v));
                        }
                    }
                    Some((
                        Node {
                            line,
                            kind: Kind::Map(entries),
                        },
                        anchor,
                    ))
                }
                _ => {
                    return Err(SyntaxError {
                        line,
                        message: "unbalanced mapping".into(),
                    })
                }
            },
        };
        let Some((node, anchor)) = complete else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(SyntaxError {
                line,
                message: "the document is too large".into(),
            });
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merged,
                key,
                ..
            }) => match key.take() {
                None => match node.kind {
                    Kind::Scalar { text, .. } => *key = Some((text, node.line)),
                    _ => {
                        return Err(SyntaxError {
                            line: node.line,
                            message: "a mapping key must be a plain scalar, not a list or mapping"
                                .into(),
                        })
                    }
                },
                Some((k, kline)) => {
                    if k == "<<" {
                        merge_into(merged, node, kline)?;
                    } else {
                        if let Some((_, first, _)) = entries.iter().find(|(e, _, _)| *e == k) {
                            return Err(SyntaxError {
                                line: kline,
                                message: format!("key {k:?} appears twice in the same mapping (first on line {first})"),
                            });
                        }
                        entries.push((k, kline, node));
                    }
                }
            },
        }
    }
    let root = root.unwrap_or(Node {
        line: 1,
        kind: Kind::Map(Vec::new()),
    });
    if root.is_null() {
        return Ok(Node {
            line: 1,
            kind: Kind::Map(Vec::new()),
        });
    }
    Ok(root)
}

/// YAML merge key `<<: *anchor` (or a list of anchors): copy entries not yet present.
fn merge_into(
    entries: &mut Vec<(String, usize, Node)>,
    node: Node,
    line: usize,
) -> Result<(), SyntaxError> {
    let sources = match node.kind {
        Kind::Map(m) => vec![m],
        Kind::Seq(items) => {
            let mut v = Vec::new();
            for it in items {
                match it.kind {
                    Kind::Map(m) => v.push(m),
                    _ => {
                        return Err(SyntaxError {
                            line,
                            message: "`<<` merge needs mappings".into(),
                        })
                    }
                }
            }
            v
        }
        _ => {
            return Err(SyntaxError {
                line,
                message: "`<<` merge needs a mapping".into(),
            })
        }
    };
    for m in sources {
        for (k, kl, v) in m {
            if !entries.iter().any(|(e, _, _)| *e == k) {
                entries.push((k, kl, v));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(n: &'a Node, k: &str) -> &'a Node {
        match &n.kind {
            Kind::Map(m) => &m.iter().find(|(e, _, _)| e == k).expect("key").2,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn lines_and_raw_text() {
        let n = parse("a: 1\nb:\n  c: 0770\n  d: \"x\"\ne: [1, 2]\n").expect("parse");
        assert_eq!(get(&n, "a").line, 1);
        let b = get(&n, "b");
        assert_eq!(get(b, "c").line, 3);
        assert_eq!(
            get(b, "c").kind,
            Kind::Scalar {
                text: "0770".into(),
                quoted: false
            }
        );
        assert_eq!(
            get(b, "d").kind,
            Kind::Scalar {
                text: "x".into(),
                quoted: true
            }
        );
        assert!(matches!(&get(&n, "e").kind, Kind::Seq(v) if v.len() == 2));
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("a:\n  b: 1\n   c: 2\n").expect_err("bad indentation");
        assert_eq!(e.line, 3, "{e:?}");
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = parse("a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn anchors_and_merge() {
        let n = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").expect("parse");
        let o = get(&n, "other");
        assert_eq!(
            get(o, "x").kind,
            Kind::Scalar {
                text: "1".into(),
                quoted: false
            }
        );
        assert_eq!(
            get(o, "y").kind,
            Kind::Scalar {
                text: "3".into(),
                quoted: false
            }
        );
    }

    #[test]
    fn billion_laughs_is_bounded() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            s.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = c;
        }
        assert!(parse(&s).is_err());
    }

    #[test]
    fn empty_is_empty_map() {
        assert_eq!(parse("").expect("parse").kind, Kind::Map(vec![]));
        assert_eq!(
            parse("# only a comment\n").expect("parse").kind,
            Kind::Map(vec![])
        );
    }
}
