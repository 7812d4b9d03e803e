//! How commands print: `-o/--output`, the Headscale CLI's JSON shape of a
//! REST answer, YAML through serde-saphyr, aligned tables, times and keys.

use anyhow::bail;
use serde_json::Value;

/// `-o/--output`: Headscale's words (`""`, `json`, `json-line`, `yaml`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
    JsonLine,
    Yaml,
}

impl Output {
    pub fn parse(s: &str) -> anyhow::Result<Output> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            "json-line" | "jsonline" | "json_line" => Ok(Output::JsonLine),
            "yaml" | "yml" => Ok(Output::Yaml),
            other => bail!("unknown output format {other:?}: use json, json-line or yaml (or nothing for a table)"),
        }
    }
}

/// The REST JSON of a DTO (what `render` turns into the CLI's shape).
pub(crate) fn rest<T: serde::Serialize>(v: &T) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// `table` for the default format; the Headscale-CLI JSON/YAML of `rest` otherwise.
pub(crate) fn render(out: Output, rest: &Value, table: impl FnOnce() -> String) -> String {
    let v = cli_json(rest);
    match out {
        Output::Table => table(),
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Output::JsonLine => format!("{}\n", serde_json::to_string(&v).unwrap_or_default()),
        Output::Yaml => to_yaml(&v),
    }
}

/// REST JSON to what Headscale's CLI prints: snake_case keys, numeric ids.
pub(crate) fn cli_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let key = snake_case(k);
                    let val = match (key.as_str(), val) {
                        ("id", Value::String(s)) => s
                            .parse::<u64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| val.clone()),
                        _ => cli_json(val),
                    };
                    (key, val)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(cli_json).collect()),
        other => other.clone(),
    }
}

pub(crate) fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Aligned columns separated by " | ", header first.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

pub(crate) fn fmt_time(ts: &chrono::DateTime<chrono::Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(crate) fn fmt_opt_time(ts: Option<&chrono::DateTime<chrono::Utc>>, none: &str) -> String {
    ts.map(fmt_time).unwrap_or_else(|| none.to_string())
}

/// `mkey:0123abcd…` → `mkey:0123abcd`.
pub(crate) fn short_key(k: &str) -> String {
    match k.split_once(':') {
        Some((p, hex)) => format!("{p}:{}", hex.get(..8).unwrap_or(hex)),
        None => k.get(..12).unwrap_or(k).to_string(),
    }
}

/// YAML for a JSON value, through serde-saphyr: block style with lists
/// indented under their key, strings quoted when a YAML 1.1 or 1.2 reader
/// would take them for something else (`"yes"`, `"100.64.0.1"`, timestamps),
/// multi-line strings (a policy) as literal blocks, long lines never folded.
pub(crate) fn to_yaml(v: &Value) -> String {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.compact_list_indent = false;
    o.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(v, o).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_words() {
        assert_eq!(Output::parse("").expect("ok"), Output::Table);
        assert_eq!(Output::parse("json").expect("ok"), Output::Json);
        assert_eq!(Output::parse("json-line").expect("ok"), Output::JsonLine);
        assert_eq!(Output::parse("YAML").expect("ok"), Output::Yaml);
        assert!(Output::parse("xml").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "Name"],
            &[
                vec!["1".into(), "alice".into()],
                vec!["10".into(), "b".into()],
            ],
        );
        assert_eq!(t, "ID | Name\n1  | alice\n10 | b\n");
    }

    #[test]
    fn renders_each_output() {
        let v = json!({"id": "1", "name": "alice", "aclTags": ["tag:a"], "user": null, "createdAt": "2023-11-14T22:13:20Z"});
        assert_eq!(render(Output::Table, &v, || "T\n".into()), "T\n");
        assert_eq!(
            render(Output::JsonLine, &v, String::new),
            "{\"acl_tags\":[\"tag:a\"],\"created_at\":\"2023-11-14T22:13:20Z\",\"id\":1,\"name\":\"alice\",\"user\":null}\n"
        );
        let pretty = render(Output::Json, &v, String::new);
        assert_eq!(
            serde_json::from_str::<Value>(&pretty).expect("json"),
            cli_json(&v)
        );
        assert_eq!(
            render(Output::Yaml, &v, String::new),
            "acl_tags:\n  - tag:a\ncreated_at: \"2023-11-14T22:13:20Z\"\nid: 1\nname: alice\nuser: null\n"
        );
    }

    #[test]
    fn yaml_lists_of_objects_and_quoting() {
        let v = json!([{"a": 1, "b": {"c": "yes"}}, {"a": 2, "b": {}}, "x: y"]);
        assert_eq!(
            to_yaml(&v),
            "- a: 1\n  b:\n    c: \"yes\"\n- a: 2\n  b: {}\n- \"x: y\"\n"
        );
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(to_yaml(&json!("100.64.0.1")), "\"100.64.0.1\"\n");
        assert_eq!(to_yaml(&json!("tag:web")), "tag:web\n");
        assert_eq!(to_yaml(&json!("")), "\"\"\n");
        // Long lines stay one line; a multi-line text is a literal block.
        let long = "word ".repeat(40);
        assert_eq!(to_yaml(&json!({"a": long})), format!("a: \"{long}\"\n"));
        assert_eq!(
            to_yaml(&json!({"policy": "{\n  \"acls\": []\n}\n"})),
            "policy: |\n  {\n    \"acls\": []\n  }\n"
        );
    }

    #[test]
    fn keys_are_shortened() {
        assert_eq!(short_key("nodekey:0123456789abcdef"), "nodekey:01234567");
    }
}
