//! Go `time.Time` JSON: RFC 3339, zero time = `0001-01-01T00:00:00Z` (= `None`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub const ZERO: &str = "0001-01-01T00:00:00Z";

pub fn to_string(t: &Option<DateTime<Utc>>) -> String {
    match t {
        None => ZERO.to_string(),
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }
}

pub fn parse(s: &str) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    let t = DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc);
    // Year 1 (Go's zero) and earlier mean "unset".
    if t.timestamp() <= -62135596800 {
        Ok(None)
    } else {
        Ok(Some(t))
    }
}

/// `#[serde(with = "gotime::opt")]` for an `Option<DateTime<Utc>>` that is always emitted.
pub mod opt {
    use super::*;
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_string(t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => parse(s).map_err(serde::de::Error::custom),
        }
    }
}

/// For a `DateTime<Utc>` that is always set.
pub mod req {
    use super::*;
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        Ok(DateTime::parse_from_rfc3339(&s)
            .map_err(serde::de::Error::custom)?
            .with_timezone(&Utc))
    }
}

/// For an `Option<DateTime<Utc>>` pointer field (`*time.Time`, omitted when nil).
pub mod ptr {
    use super::*;
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(_) => s.serialize_str(&to_string(t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::opt::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn zero_round_trip() {
        assert_eq!(parse(ZERO).unwrap(), None);
        assert_eq!(to_string(&None), ZERO);
        let t = parse("2025-10-01T12:34:56.123456789+02:00")
            .unwrap()
            .unwrap();
        assert_eq!(to_string(&Some(t)), "2025-10-01T10:34:56.123456789Z");
    }
}
