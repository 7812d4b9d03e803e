//! Test helper: compare a JSON body with a Headscale golden file.
//!
//! Rules: objects must have exactly the golden keys; scalars must be equal,
//! except the golden placeholders `"<timestamp>"` (any RFC 3339 string) and
//! `"<secret>"` (any non-empty string); arrays must have the golden length.
//! [`Lenient`] names the few fields where a scenario cannot be reproduced
//! exactly (Headscale's fixtures create nodes without addresses).

use serde_json::Value;

pub struct Golden {
    pub status: u16,
    pub body: Value,
}

pub fn golden(name: &str) -> Golden {
    let path = format!(
        "{}/testdata/headscale-api-v1/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    Golden {
        status: v["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("{path}: no status")) as u16,
        body: v["body"].clone(),
    }
}

#[derive(Default, Clone, Copy)]
pub struct Lenient {
    /// Keys whose golden timestamp may be `null` here.
    pub nullable_ts: &'static [&'static str],
    /// Keys whose array contents may differ (still an array of strings).
    pub any_array: &'static [&'static str],
}

impl Lenient {
    pub fn none() -> Self {
        Lenient::default()
    }
    /// Nodes registered through the real state: addresses are allocated and
    /// `lastSeen` stays null until the node connects.
    pub fn live_nodes() -> Self {
        Lenient {
            nullable_ts: &["lastSeen"],
            any_array: &["ipAddresses"],
        }
    }
}

#[track_caller]
pub fn assert_shape(ours: &Value, golden: &Value, lenient: Lenient) {
    if let Err(e) = check(ours, golden, lenient, "$", "") {
        panic!(
            "{e}\nours:   {}\ngolden: {}",
            serde_json::to_string_pretty(ours).unwrap_or_default(),
            serde_json::to_string_pretty(golden).unwrap_or_default()
        );
    }
}

fn check(ours: &Value, golden: &Value, l: Lenient, path: &str, key: &str) -> Result<(), String> {
    match (golden, ours) {
        (Value::String(g), _) if g == "<timestamp>" => match ours {
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Ok(()),
            Value::Null if l.nullable_ts.contains(&key) => Ok(()),
            _ => Err(format!(
                "{path}: expected an RFC 3339 timestamp, got {ours}"
            )),
        },
        (Value::String(g), _) if g == "<secret>" => match ours {
            Value::String(s) if !s.is_empty() => Ok(()),
            _ => Err(format!("{path}: expected a non-empty string, got {ours}")),
        },
        (Value::Object(g), Value::Object(o)) => {
            let mut gk: Vec<_> = g.keys().collect();
            let mut ok: Vec<_> = o.keys().collect();
            gk.sort();
            ok.sort();
            if gk != ok {
                return Err(format!("{path}: keys differ: golden {gk:?}, ours {ok:?}"));
            }
            for (k, gv) in g {
                check(&o[k], gv, l, &format!("{path}.{k}"), k)?;
            }
            Ok(())
        }
        (Value::Array(_), Value::Array(o)) if l.any_array.contains(&key) => {
            if o.iter().all(Value::is_string) {
                Ok(())
            } else {
                Err(format!("{path}: expected an array of strings"))
            }
        }
        (Value::Array(g), Value::Array(o)) => {
            if g.len() != o.len() {
                return Err(format!(
                    "{path}: golden has {} elements, ours {}",
                    g.len(),
                    o.len()
                ));
            }
            for (i, (gv, ov)) in g.iter().zip(o).enumerate() {
                check(ov, gv, l, &format!("{path}[{i}]"), key)?;
            }
            Ok(())
        }
        (g, o) if g == o => Ok(()),
        (g, o) => Err(format!("{path}: golden {g}, ours {o}")),
    }
}

#[test]
fn the_matcher_can_fail() {
    let g = serde_json::json!({"a": "1", "t": "<timestamp>", "l": [1]});
    assert!(check(
        &serde_json::json!({"a": "1", "t": "2020-01-01T00:00:00Z", "l": [1]}),
        &g,
        Lenient::none(),
        "$",
        ""
    )
    .is_ok());
    assert!(check(
        &serde_json::json!({"a": 1, "t": "2020-01-01T00:00:00Z", "l": [1]}),
        &g,
        Lenient::none(),
        "$",
        ""
    )
    .is_err());
    assert!(check(
        &serde_json::json!({"a": "1", "t": null, "l": [1]}),
        &g,
        Lenient::none(),
        "$",
        ""
    )
    .is_err());
    assert!(check(
        &serde_json::json!({"a": "1", "t": "2020-01-01T00:00:00Z"}),
        &g,
        Lenient::none(),
        "$",
        ""
    )
    .is_err());
    assert!(check(
        &serde_json::json!({"a": "1", "t": "2020-01-01T00:00:00Z", "l": []}),
        &g,
        Lenient::none(),
        "$",
        ""
    )
    .is_err());
}
