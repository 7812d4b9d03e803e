//! Go `time.Duration` text: parsing (`time.ParseDuration`) and formatting
//! (`Duration.String`), so that `checkPeriod` errors read like Tailscale's.

const NS: i128 = 1;
const US: i128 = 1_000;
const MS: i128 = 1_000_000;
const S: i128 = 1_000_000_000;
const M: i128 = 60 * S;
const H: i128 = 60 * M;

/// Parse a Go duration such as `"12h"`, `"1h30m"`, `"-1m"`, `"0"`.
/// The error text is Go's: `time: invalid duration "abc"`.
pub fn parse(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration \"{s}\"");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        let int_part = &rest[..digits];
        rest = &rest[digits..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let fd = r.bytes().take_while(|b| b.is_ascii_digit()).count();
            frac_part = &r[..fd];
            rest = &r[fd..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let ul = rest
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let unit = match &rest[..ul] {
            "ns" => NS,
            "us" | "µs" | "μs" => US,
            "ms" => MS,
            "s" => S,
            "m" => M,
            "h" => H,
            "" => return Err(format!("time: missing unit in duration \"{s}\"")),
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        rest = &rest[ul..];
        let iv: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut v = iv.checked_mul(unit).ok_or_else(bad)?;
        if !frac_part.is_empty() {
            let mut scale: i128 = 1;
            let mut fv: i128 = 0;
            for c in frac_part.bytes().take(30) {
                fv = fv * 10 + (c - b'0') as i128;
                scale *= 10;
            }
            v += fv * unit / scale;
        }
        total = total.checked_add(v).ok_or_else(bad)?;
        if total > i64::MAX as i128 {
            return Err(bad());
        }
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}

/// Format like Go's `Duration.String()`: `1h0m0s`, `-1m0s`, `1.5s`, `0s`.
pub fn format(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = (d as i128).unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if u < S as u128 {
        // Sub-second: pick the largest fitting unit with a fraction.
        let (unit, name) = if u < US as u128 {
            (1u128, "ns")
        } else if u < MS as u128 {
            (US as u128, "µs")
        } else {
            (MS as u128, "ms")
        };
        out.push_str(&frac(u, unit));
        out.push_str(name);
        return out;
    }
    let h = u / H as u128;
    let rem = u % H as u128;
    let m = rem / M as u128;
    let s = rem % M as u128;
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s, S as u128));
    out.push('s');
    out
}

fn frac(v: u128, unit: u128) -> String {
    let whole = v / unit;
    let mut f = v % unit;
    if f == 0 {
        return whole.to_string();
    }
    let mut digits = String::new();
    let mut u = unit;
    while f > 0 && u > 1 {
        u /= 10;
        digits.push(char::from(b'0' + (f / u) as u8));
        f %= u;
    }
    let digits = digits.trim_end_matches('0');
    format!("{whole}.{digits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_like_go() {
        assert_eq!(parse("168h0m1s").map(format), Ok("168h0m1s".to_string()));
        assert_eq!(parse("-1m").map(format), Ok("-1m0s".to_string()));
        assert_eq!(parse("200h").map(format), Ok("200h0m0s".to_string()));
        assert_eq!(parse("1.5s").map(format), Ok("1.5s".to_string()));
        assert_eq!(parse("0s"), Ok(0));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(
            parse("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert!(parse("5").is_err());
        assert_eq!(format(1_500_000), "1.5ms");
    }
}
