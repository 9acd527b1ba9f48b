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

#[cfg(test)]
mod tests {
    use super::*;

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
