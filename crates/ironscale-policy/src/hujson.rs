//! HuJSON ("JSON with commas and comments") to standard JSON.
//!
//! HuJSON is JSON plus `//` line comments, `/* */` block comments and a
//! trailing comma after the last element of an array or object. Nothing
//! else is added: no single quotes, no unquoted keys, no hex numbers.
//!
//! [`standardize`] overwrites comments and trailing commas with spaces (line
//! breaks inside block comments are kept), so every byte offset, line and
//! column in the output is the same as in the input. Errors found by a later
//! JSON parser can therefore be reported against the user's own text.

use crate::error::Pos;

/// A problem found while removing comments and trailing commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HujsonError {
    /// Byte offset of the problem in the input.
    pub offset: usize,
    pub message: String,
}

/// Turn HuJSON into standard JSON of exactly the same length.
///
/// Only comments and trailing commas are rewritten; everything else is left
/// for the JSON parser to judge (so `{"a": 1,, }` still fails there).
pub fn standardize(input: &str) -> Result<String, HujsonError> {
    let src = input.as_bytes();
    let mut out: Vec<u8> = src.to_vec();
    // A leading byte-order mark (some editors add one) becomes spaces.
    if src.starts_with(&[0xEF, 0xBB, 0xBF]) {
        out[..3].copy_from_slice(b"   ");
    }
    // Offset of the last significant (non-space, non-comment) byte written,
    // used to blank a comma that turns out to be trailing.
    let mut last_sig: Option<usize> = None;
    let mut i = if src.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    while i < src.len() {
        let c = src[i];
        match c {
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match src.get(i) {
                        None => {
                            return Err(HujsonError {
                                offset: start,
                                message: "unterminated string".into(),
                            })
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\n') => {
                            return Err(HujsonError {
                                offset: i,
                                message: "newline inside string".into(),
                            })
                        }
                        Some(_) => i += 1,
                    }
                }
                last_sig = Some(i - 1);
            }
            b'/' if src.get(i + 1) == Some(&b'/') => {
                while i < src.len() && src[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if src.get(i + 1) == Some(&b'*') => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i >= src.len() {
                        return Err(HujsonError {
                            offset: start,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if src[i] == b'*' && src.get(i + 1) == Some(&b'/') {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if src[i] != b'\n' && src[i] != b'\r' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b']' | b'}' => {
                if let Some(p) = last_sig {
                    if out[p] == b',' {
                        out[p] = b' ';
                    }
                }
                last_sig = Some(i);
                i += 1;
            }
            _ => {
                last_sig = Some(i);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII spaces, and only whole comments
    // (which start and end on ASCII delimiters) were blanked, so the result
    // is still valid UTF-8.
    String::from_utf8(out).map_err(|e| HujsonError {
        offset: e.utf8_error().valid_up_to(),
        message: "invalid UTF-8".into(),
    })
}

/// Line and column (both 1-based, column counted in characters) of a byte
/// offset in `text`.
pub fn position(text: &str, offset: usize) -> Pos {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    // Count characters, not bytes; the offset may sit inside a character
    // only for corrupt input, so be lenient.
    let col = String::from_utf8_lossy(&text.as_bytes()[line_start..offset])
        .chars()
        .count()
        + 1;
    Pos {
        line: line as u32,
        col: col as u32,
    }
}

/// Byte offset of a 1-based line and byte column (as serde_json reports
/// them) in `text`.
pub fn offset_of(text: &str, line: usize, byte_col: usize) -> usize {
    let mut cur = 1;
    let mut start = 0;
    if line > 1 {
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                cur += 1;
                if cur == line {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    (start + byte_col.saturating_sub(1)).min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_ok(s: &str) -> String {
        let out = standardize(s).expect("standardize");
        assert_eq!(out.len(), s.len());
        out
    }

    #[test]
    fn strips_comments_and_trailing_commas() {
        let s = "{\n  // hello\n  \"a\": [1, 2, ], /* x\n y */ \"b\": {\"c\": 1,},\n}";
        let out = std_ok(s);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["a"][1], 2);
        assert_eq!(v["b"]["c"], 1);
        // Line structure is kept.
        assert_eq!(out.matches('\n').count(), s.matches('\n').count());
    }

    #[test]
    fn comment_markers_inside_strings_are_kept() {
        let out = std_ok(r#"{"a": "http://x/*y*/", "b": "\"//"}"#);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["a"], "http://x/*y*/");
        assert_eq!(v["b"], "\"//");
    }

    #[test]
    fn trailing_comma_before_comment() {
        let out = std_ok("[1, 2, // two\n]");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn double_comma_is_not_hidden() {
        let out = std_ok("[1,, ]");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_err());
    }

    #[test]
    fn unterminated_block_comment() {
        let e = standardize("{ /* abc").expect_err("unterminated");
        assert_eq!(e.offset, 2);
    }

    #[test]
    fn byte_order_mark_is_blanked() {
        let out = std_ok("\u{feff}{\"a\": 1}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn positions() {
        let t = "ab\ncdé\nf";
        assert_eq!(position(t, 0), Pos { line: 1, col: 1 });
        assert_eq!(position(t, 3), Pos { line: 2, col: 1 });
        // after "cdé" (4 bytes) -> column 4 in characters
        assert_eq!(position(t, 7), Pos { line: 2, col: 4 });
        assert_eq!(offset_of(t, 2, 2), 4);
    }
}
