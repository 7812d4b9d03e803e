//! Durations as Headscale writes them: Go's `time.ParseDuration` syntax
//! ("24h", "3m30s", "1.5h", "300ms") plus Prometheus' day/week/year units
//! ("180d", "1w", "1y") that Headscale accepts for `node.expiry`.

use std::time::Duration;

/// Parse a duration. `"0"` is zero; any other number needs a unit.
/// Negative durations are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Some(rest) = t.strip_prefix('-') {
        if rest.chars().all(|c| c == '0' || c == '.') && !rest.is_empty() {
            return Ok(Duration::ZERO);
        }
        return Err(format!("{s:?} is negative"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: f64 = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("{s:?} is not a duration (expected a number followed by a unit, e.g. \"24h\" or \"3m30s\")"));
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs_per = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 7.0 * 86_400.0,
            "y" => 365.0 * 86_400.0,
            "" => {
                return Err(format!(
                    "{s:?} has no unit; write e.g. \"{num}s\", \"{num}m\" or \"{num}h\" (valid units: ns, us, ms, s, m, h, d, w, y)"
                ))
            }
            other => {
                return Err(format!(
                    "{s:?} has an unknown unit {other:?} (valid units: ns, us, ms, s, m, h, d, w, y)"
                ))
            }
        };
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        total += n * secs_per;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Format a duration the way Go prints it ("3h0m0s" style, shortened: "3h", "3m30s").
pub fn format_duration(d: Duration) -> String {
    let total = d.as_secs();
    let ms = d.subsec_millis();
    if total == 0 && ms == 0 {
        return "0s".into();
    }
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if ms > 0 {
        out.push_str(&format!("{s}.{ms:03}s"));
    } else if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("3m30s"), Ok(Duration::from_secs(210)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn prometheus_forms() {
        assert_eq!(
            parse_duration("180d"),
            Ok(Duration::from_secs(180 * 86_400))
        );
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn rejects() {
        for bad in ["", "24", "h", "3x", "1..5h", "-5m", "abc", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_duration("3600")
            .expect_err("no unit")
            .contains("no unit"));
    }

    #[test]
    fn format() {
        assert_eq!(format_duration(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(format_duration(Duration::from_secs(210)), "3m30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
