//! Durations as people write them in flags and policies: `5s`, `500ms`, `2m`, `1h`,
//! and Gateway API's GEP-2257 form, up to four parts: `1h30m`, `2m30s500ms`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(d) = gep2257(text) {
        return Ok(d);
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// The Gateway API duration format only (GEP-2257, what policies take): `1m30s`
/// is a duration, a bare number or `1.5s` is not.
pub fn parse_gep2257(text: &str) -> Result<Duration, String> {
    gep2257(text).ok_or_else(|| format!("{text:?} is not a Gateway API duration (GEP-2257): one to four parts of up to 5 digits and a unit h, m, s or ms, e.g. 30s, 1m30s, 500ms"))
}

/// GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`; None if `text` is not of that form.
fn gep2257(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if !(1..=5).contains(&digits) {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * value as u32;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_negative_or_unknown_ones_are_refused() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert!(parse("-5s").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn gep_2257_durations_parse() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2m30s500ms"), Ok(Duration::from_millis(150_500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("1h2m3s4ms5s").is_err(), "at most four parts");
        assert!(parse("1d").is_err());
    }

    #[test]
    fn policies_take_only_the_gateway_api_format() {
        assert_eq!(parse_gep2257("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_gep2257("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["30", "1.5s", "-5s", "5 s", "123456s", ""] {
            assert!(parse_gep2257(bad).unwrap_err().contains("is not a Gateway API duration (GEP-2257)"), "{bad}");
        }
    }
}
