//! The connector page's chart, drawn here as SVG: no script, no library, works in any
//! browser and in a printout. Two panels over the same time axis:
//! - database size at each kept version (from its manifest);
//! - backup age: how old the newest restorable state was at each moment (a saw tooth
//!   that drops to zero at every backup), with the stale threshold as a dashed line.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::time::fmt_age;

const W: f64 = 800.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const PANEL: f64 = 120.0;
const TOP1: f64 = 24.0;
const TOP2: f64 = TOP1 + PANEL + 48.0;
const H: f64 = TOP2 + PANEL + 34.0;

/// `sizes`: (snapshot time, database size) of versions whose size is known.
/// `restore_points`: every instant a state can be restored to, any order.
pub fn render(
    sizes: &[(DateTime<Utc>, u64)],
    restore_points: &[DateTime<Utc>],
    max_age: Duration,
    now: DateTime<Utc>,
) -> String {
    let mut pts: Vec<DateTime<Utc>> = restore_points
        .iter()
        .copied()
        .filter(|t| *t <= now)
        .collect();
    pts.sort();
    pts.dedup();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Database size and backup age over time</title>"#
    );
    let Some(&first) = pts.first().or(sizes.first().map(|(t, _)| t)) else {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="chart-empty">Nothing restorable yet: no chart.</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return s;
    };
    let start = first.min(now - chrono::Duration::hours(1));
    let span = (now - start).num_milliseconds().max(1) as f64;
    let x =
        |t: DateTime<Utc>| LEFT + (t - start).num_milliseconds() as f64 / span * (W - LEFT - RIGHT);

    // Panel 1: size.
    let max_size = sizes.iter().map(|(_, b)| *b).max().unwrap_or(0).max(1) as f64 * 1.1;
    let y1 = |b: u64| TOP1 + PANEL - b as f64 / max_size * PANEL;
    panel(&mut s, TOP1, "Database size", &human_bytes(max_size as u64));
    let mut sorted: Vec<(DateTime<Utc>, u64)> = sizes.to_vec();
    sorted.sort();
    if !sorted.is_empty() {
        let path: Vec<String> = sorted
            .iter()
            .map(|(t, b)| format!("{:.1},{:.1}", x(*t), y1(*b)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#2563eb" stroke-width="2"/>"##,
            path.join(" ")
        );
        for (t, b) in &sorted {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#2563eb"><title>{} · {}</title></circle>"##,
                x(*t),
                y1(*b),
                t.format("%Y-%m-%d %H:%M UTC"),
                human_bytes(*b)
            );
        }
    } else {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="chart-empty">No version manifest read: size unknown.</text>"#,
            W / 2.0,
            TOP1 + PANEL / 2.0
        );
    }

    // Panel 2: age of the newest restorable state, a saw tooth from the first point to now.
    let mut tooth: Vec<(DateTime<Utc>, f64)> = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        if i > 0 {
            tooth.push((*p, (*p - pts[i - 1]).num_milliseconds() as f64 / 1000.0));
        }
        tooth.push((*p, 0.0));
    }
    if let Some(last) = pts.last() {
        tooth.push((now, (now - *last).num_milliseconds() as f64 / 1000.0));
    }
    let worst = tooth.iter().map(|(_, a)| *a).fold(0.0, f64::max);
    let max_secs = worst.max(max_age.as_secs_f64()).max(60.0) * 1.1;
    let y2 = |a: f64| TOP2 + PANEL - a / max_secs * PANEL;
    panel(
        &mut s,
        TOP2,
        "Backup age",
        &fmt_age(Duration::from_secs_f64(max_secs)),
    );
    let ty = y2(max_age.as_secs_f64());
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#dc2626" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" class="chart-note" text-anchor="end">stale at {}</text>"##,
        W - RIGHT,
        W - RIGHT,
        ty - 4.0,
        fmt_age(max_age)
    );
    if !tooth.is_empty() {
        let path: Vec<String> = tooth
            .iter()
            .map(|(t, a)| format!("{:.1},{:.1}", x(*t), y2(*a)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#7c3aed" stroke-width="2"/>"##,
            path.join(" ")
        );
    }

    // Time axis, under the second panel.
    for (t, anchor) in [(start, "start"), (now, "end")] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="chart-axis" text-anchor="{anchor}">{}</text>"#,
            x(t),
            TOP2 + PANEL + 18.0,
            t.format("%Y-%m-%d %H:%M UTC")
        );
    }
    s.push_str("</svg>");
    s
}

fn panel(s: &mut String, top: f64, title: &str, max_label: &str) {
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" class="chart-title">{title}</text><rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#cbd5e1"/><text x="{}" y="{:.1}" class="chart-axis" text-anchor="end">{max_label}</text><text x="{}" y="{:.1}" class="chart-axis" text-anchor="end">0</text>"##,
        top - 8.0,
        W - LEFT - RIGHT,
        LEFT - 6.0,
        top + 10.0,
        LEFT - 6.0,
        top + PANEL,
    );
}

/// `1.5 MiB`: sizes for people.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_chart_has_a_point_per_sized_version_and_a_tooth_per_backup() {
        let now = t("2026-11-24T12:00:00Z");
        let pts = [t("2026-11-22T12:00:00Z"), t("2026-11-23T12:00:00Z")];
        let svg = render(
            &[(pts[0], 4096), (pts[1], 8192)],
            &pts,
            Duration::from_secs(86400),
            now,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("8.0 KiB"), "{svg}");
        assert!(svg.contains("stale at 24h"));
        // Saw tooth: start at 0, rise to 24h, drop to 0, rise to 24h at now.
        let tooth = svg.split("<polyline").nth(2).unwrap();
        assert_eq!(
            tooth.split_whitespace().filter(|w| w.contains(',')).count(),
            4
        );
        assert!(svg.contains("2026-11-22 12:00 UTC") && svg.contains("2026-11-24 12:00 UTC"));
    }

    #[test]
    fn an_empty_history_says_so() {
        let svg = render(&[], &[], Duration::from_secs(60), Utc::now());
        assert!(svg.contains("Nothing restorable yet"));
    }

    #[test]
    fn sizes_are_written_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
