//! Time as people read it in reports: coarse ages.

use std::time::Duration;

/// `25h`, `23h 59m`, `12s`: coarse, for humans.
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..172800 => {
            if s % 3600 / 60 == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h {}m", s / 3600, s % 3600 / 60)
            }
        }
        _ => {
            if s % 86400 / 3600 == 0 {
                format!("{}d", s / 86400)
            } else {
                format!("{}d {}h", s / 86400, s % 86400 / 3600)
            }
        }
    }
}

/// Parses `restore --at TIME`: RFC 3339 (`2026-11-24T07:00:00Z`, `…+01:00`), the same
/// without a zone (UTC assumed; `T` or a space; seconds and fractions optional), a date
/// (`2026-11-24`: its first instant, UTC), or a duration ago (`15m`, `2h ago`,
/// `1h 30m ago`), or `now`. `now` is passed in so the result is testable.
///
/// `now` is read as `now` plus [`crate::clock::SKEW_PROBLEM`] (14 minutes): "everything
/// the bucket holds", which is what an operator asking for now means. A state stamped by
/// a hub whose clock ran a little ahead of this machine's is in the bucket already; taken
/// as the bare clock, `now` left it out and gave the state before it, with no word. No
/// clock S3 accepts writes from stamps further ahead than that.
pub fn parse_instant(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = s.trim();
    if t.is_empty() {
        return Err("empty".into());
    }
    if t.eq_ignore_ascii_case("now") {
        return Ok(now + crate::clock::SKEW_PROBLEM);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.to_utc());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc());
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.fZ",
    ] {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, f) {
            return Ok(d.to_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let ago = t.strip_suffix("ago").map(str::trim_end).unwrap_or(t);
    match humantime::parse_duration(ago) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| format!("{t:?} reaches before the year 0")),
        Err(_) => Err(format!(
            "{t:?} is not an RFC 3339 time, a date or a duration ago"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_read_in_every_documented_form() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s: &str| parse_instant(s, now).map(|t| t.to_rfc3339());
        assert_eq!(
            at("2026-11-24T07:00:00Z").unwrap(),
            "2026-11-24T07:00:00+00:00"
        );
        assert_eq!(
            at("2026-11-24T08:00:00+01:00").unwrap(),
            "2026-11-24T07:00:00+00:00"
        );
        assert_eq!(
            at("2026-11-24T07:00:00.250").unwrap(),
            "2026-11-24T07:00:00.250+00:00"
        );
        assert_eq!(at("2026-11-24 07:00").unwrap(), "2026-11-24T07:00:00+00:00");
        assert_eq!(at("2026-11-24").unwrap(), "2026-11-24T00:00:00+00:00");
        assert_eq!(at("15m").unwrap(), "2026-11-24T11:45:00+00:00");
        assert_eq!(at("2h ago").unwrap(), "2026-11-24T10:00:00+00:00");
        assert_eq!(at("1h 30m ago").unwrap(), "2026-11-24T10:30:00+00:00");
        // `now` takes in what a clock up to 14 minutes ahead stamped.
        assert_eq!(at("now").unwrap(), "2026-11-24T12:14:00+00:00");
        assert_eq!(at(" NOW ").unwrap(), "2026-11-24T12:14:00+00:00");
        for bad in ["", "yesterday-ish", "2026-13-01", "ago", "12:00"] {
            assert!(at(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ages_are_written_in_the_largest_sensible_units() {
        let s = Duration::from_secs;
        assert_eq!(fmt_age(s(12)), "12s");
        assert_eq!(fmt_age(s(61)), "1m 1s");
        assert_eq!(fmt_age(s(25 * 3600)), "25h");
        assert_eq!(fmt_age(s(23 * 3600 + 59 * 60)), "23h 59m");
        assert_eq!(fmt_age(s(3 * 86400 + 3600)), "3d 1h");
    }
}
