//! Durations as Istio and Kubernetes write them: Go's `time.ParseDuration` syntax (`1s`, `3m`,
//! `1h30m`, `0.5s`, `250ms`, `10us`), always positive in policy.

use std::time::Duration;

use crate::Error;

/// Parses a Go-style duration such as `1h30m` or `0.25s`.
pub fn parse(text: &str) -> Result<Duration, Error> {
    let fail = |reason| Error::Duration { value: text.to_owned(), reason };
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(fail("durations in policy cannot be negative"));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(fail("empty duration"));
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_end];
        if number.is_empty() || number == "." {
            return Err(fail("expected a number"));
        }
        let value: f64 = number.parse().map_err(|_| fail("expected a number"))?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(fail("missing unit (one of ns, us, ms, s, m, h)")),
            _ => return Err(fail("unknown unit (expected one of ns, us, ms, s, m, h)")),
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(fail("duration is too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats a duration the way Go prints one, so a round trip keeps the user's meaning (`90s` -> `1m30s`).
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}us", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = duration.subsec_nanos();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let fraction = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations_parse_to_the_right_length() {
        assert_eq!(parse("1s").ok(), Some(Duration::from_secs(1)));
        assert_eq!(parse("3m").ok(), Some(Duration::from_secs(180)));
        assert_eq!(parse("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse("0.5s").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse("250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse("10us").ok(), Some(Duration::from_micros(10)));
        assert_eq!(parse("0").ok(), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_rejected_with_a_reason() {
        for bad in ["", "1", "s", "1x", "-1s", "1.2.3s", "abc", "1 s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formatting_matches_go_and_parses_back() {
        for (d, text) in [
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(5), "5ms"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text).ok(), Some(d));
        }
    }
}
