//! The time windows of compaction (docs/CONTINUOUS.md, "Compaction"): pure arithmetic on
//! UTC instants, shared by the compactor that writes windows and the planner that reads
//! them.
//!
//! - A **minute** (level 1) holds every commit of the segments sent in it.
//! - A **partial minute** (level 1, agent only) holds every commit of the segments sent
//!   in the current minute up to a recent instant: `[hh:mm, x)`, rewritten as the minute
//!   fills, deleted once the whole minute is written.
//! - A **mark** (level 2) is cumulative from the start of its parent: a 1-minute mark
//!   `[hh:m0, hh:mk)` inside its 10 minutes, a 10-minute mark `[hh:00, hh:m0)` inside its
//!   hour, an hour mark `[P, P+k h)` inside its 6-hour block,
//!   a 6-hour mark `[00:00, 06:00|12:00|18:00)` inside its day. The window that would fill
//!   the whole parent is not written: it is the parent's own next mark (or, for the day,
//!   the next day's base).
//! - A **day** boundary (00:00 UTC) is where the compactor writes new bases.
//!
//! So the state at any instant is: the newest base at or before it, at most one mark of
//! each kind, the minute holding it (or its partial minute and the segments sent since).

use chrono::{DateTime, TimeDelta, Utc};

pub type Time = DateTime<Utc>;

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// (mark length, parent length) in ms, finest first.
pub const MARKS: [(i64, i64); 4] = [
    (MINUTE_MS, 10 * MINUTE_MS),
    (10 * MINUTE_MS, 60 * MINUTE_MS),
    (60 * MINUTE_MS, 360 * MINUTE_MS),
    (360 * MINUTE_MS, DAY_MS),
];

fn ms(t: Time) -> i64 {
    t.timestamp_millis()
}

pub fn at_ms(t: i64) -> Time {
    DateTime::from_timestamp_millis(t).unwrap_or_default()
}

/// `t` rounded down to a multiple of `len` ms since the epoch (UTC days, hours, minutes).
pub fn floor(t: Time, len: i64) -> Time {
    at_ms(ms(t).div_euclid(len) * len)
}

/// The minute `t` falls in.
pub fn minute_of(t: Time) -> Time {
    floor(t, MINUTE_MS)
}

/// The day (00:00 UTC) `t` falls in.
pub fn day_of(t: Time) -> Time {
    floor(t, DAY_MS)
}

pub fn minute_end(start: Time) -> Time {
    start + TimeDelta::milliseconds(MINUTE_MS)
}

/// The kind of the finest marks (1 minute in 10): they live beside the segments
/// (`L0/{hour}`), where a restore of a recent instant lists anyway.
pub const MINUTE_MARK: usize = 0;

/// The kind of mark `[start, end)` is (an index into [`MARKS`]), or `None` when it is not
/// a mark.
pub fn mark_kind(start: Time, end: Time) -> Option<usize> {
    let (s, e) = (ms(start), ms(end));
    MARKS.iter().position(|(w, parent)| {
        s.rem_euclid(*parent) == 0 && e.rem_euclid(*w) == 0 && s < e && e < s + parent
    })
}

/// True if and only if `[start, end)` is a partial minute: from a minute's start to an
/// instant inside it.
pub fn is_partial(start: Time, end: Time) -> bool {
    minute_of(start) == start && start < end && end < minute_end(start)
}

/// The marks that a minute starting at `m` is part of: for each kind, every mark of its
/// parent that ends after the minute (those are cumulative and so hold it).
pub fn marks_holding(m: Time) -> Vec<(Time, Time)> {
    let mut out = Vec::new();
    for (w, parent) in MARKS {
        let p = floor(m, parent);
        let mut e = ms(floor(m, w)) + w;
        while e < ms(p) + parent {
            out.push((p, at_ms(e)));
            e += w;
        }
    }
    out
}

/// The parent window of kind `kind` (an index into [`MARKS`]) that holds `t`.
pub fn parent_of(kind: usize, t: Time) -> Time {
    floor(t, MARKS[kind].1)
}

/// Every mark of kind `kind` in the parent starting at `p`, in order.
pub fn marks_of_parent(kind: usize, p: Time) -> Vec<(Time, Time)> {
    let (w, parent) = MARKS[kind];
    (1..parent / w).map(|i| (p, at_ms(ms(p) + i * w))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn marks_are_told_apart_by_length_and_alignment() {
        assert_eq!(
            mark_kind(t("2026-11-24T07:30:00Z"), t("2026-11-24T07:34:00Z")),
            Some(MINUTE_MARK)
        );
        assert_eq!(
            mark_kind(t("2026-11-24T07:00:00Z"), t("2026-11-24T07:30:00Z")),
            Some(1)
        );
        assert_eq!(
            mark_kind(t("2026-11-24T06:00:00Z"), t("2026-11-24T08:00:00Z")),
            Some(2)
        );
        assert_eq!(
            mark_kind(t("2026-11-24T00:00:00Z"), t("2026-11-24T12:00:00Z")),
            Some(3)
        );
        // Ten minutes from a 10-minute boundary is a 10-minute mark, not a 1-minute one.
        assert_eq!(
            mark_kind(t("2026-11-24T07:30:00Z"), t("2026-11-24T07:40:00Z")),
            None
        );
        // A whole parent is not a mark; nor is a window that starts off its parent.
        assert_eq!(
            mark_kind(t("2026-11-24T07:00:00Z"), t("2026-11-24T08:00:00Z")),
            None
        );
        assert_eq!(
            mark_kind(t("2026-11-24T00:00:00Z"), t("2026-11-25T00:00:00Z")),
            None
        );
        assert_eq!(
            mark_kind(t("2026-11-24T07:10:00Z"), t("2026-11-24T07:30:00Z")),
            None
        );
    }

    #[test]
    fn a_minute_is_held_by_every_later_mark_of_its_parents() {
        let got = marks_holding(t("2026-11-24T07:43:00Z"));
        let want: Vec<(Time, Time)> = [
            ("07:40", "07:44"),
            ("07:40", "07:45"),
            ("07:40", "07:46"),
            ("07:40", "07:47"),
            ("07:40", "07:48"),
            ("07:40", "07:49"),
            ("07:00", "07:50"),
            ("06:00", "08:00"),
            ("06:00", "09:00"),
            ("06:00", "10:00"),
            ("06:00", "11:00"),
            ("00:00", "12:00"),
            ("00:00", "18:00"),
        ]
        .iter()
        .map(|(a, b)| {
            (
                t(&format!("2026-11-24T{a}:00Z")),
                t(&format!("2026-11-24T{b}:00Z")),
            )
        })
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            minute_of(t("2026-11-24T07:43:59.999Z")),
            t("2026-11-24T07:43:00Z")
        );
        assert_eq!(day_of(t("2026-11-24T07:43:59Z")), t("2026-11-24T00:00:00Z"));
    }
}
