//! Human durations in configuration (`40s`, `2m`, `1h30m`, `500ms`, or a number of seconds).

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses `40s`, `2m`, `1h30m`, `500ms`, `1d` or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration must not be empty (e.g. `40s`, `2m`)".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return from_secs(secs).map_err(|e| format!("`{text}` {e}"));
    }
    let mut total_ms: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (e.g. `40s`, `2m`, `1h30m`)"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "`{text}` has unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        total_ms = total_ms
            .checked_add(n.checked_mul(unit_ms).ok_or("duration too large")?)
            .ok_or("duration too large")?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| format!("`{text}` is too large a duration"))?;
    Ok(Duration::from_millis(ms))
}

/// The longest duration: `u64::MAX` milliseconds, what timestamps and the store hold.
const MAX_SECS: u64 = u64::MAX / 1000;

/// A bare number of seconds, bounded like every other form (a larger one would not
/// format back to text that parses, and overflows timestamp arithmetic).
fn from_secs(secs: u64) -> Result<Duration, String> {
    if secs > MAX_SECS {
        return Err(format!(
            "is too large a duration (at most {MAX_SECS} seconds)"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// Formats a duration the way [`parse`] reads it (`90s` → `1m30s`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400u64), ("h", 3_600), ("m", 60)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `#[serde(with = "swell_core::duration::serde_human")]` for `Duration` fields.
pub mod serde_human {
    use super::*;

    /// Serializes as a human string (`2m`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserializes from a human string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => from_secs(s).map_err(|e| serde::de::Error::custom(format!("{s} {e}"))),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (text, secs) in [
            ("40s", 40),
            ("2m", 120),
            ("1h30m", 5400),
            ("0", 0),
            ("1d", 86400),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("10x").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999999999999999d").is_err());
        // Found by fuzzing: a bare number of seconds past u64::MAX ms used to be
        // accepted, and formatted back to text that did not parse.
        assert!(
            parse("18446744073709551615")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(
            parse("18446744073709551"),
            Ok(Duration::from_secs(MAX_SECS))
        );
        let max = format(Duration::from_secs(MAX_SECS));
        assert_eq!(parse(&max), Ok(Duration::from_secs(MAX_SECS)));
    }
}
