//! Which versions a retention policy keeps: restic's `forget` semantics, in UTC.
//!
//! Versions are walked newest first. Each rule (`last`, `hourly`, `daily`, `weekly`,
//! `monthly`, `yearly`) keeps the newest version of each of the N most recent periods
//! that *have* a version (gaps do not use up the count), exactly as restic does: a
//! version kept by one rule still counts against the others. `last` treats every
//! version as its own period. A version is kept if any rule keeps it. Weeks are ISO
//! weeks. A count of `None` means the rule is off; `Some(u32::MAX)` is "unlimited".
//!
//! On top of the policy, whatever is `protected` is always kept (the caller protects
//! the newest complete version, the one the canonical object equals, and the newest
//! one a drill verified). An empty policy keeps everything: `prune` refuses to run
//! without a rule, as `restic forget` does.

use chrono::{Datelike, Timelike};
use serde::{Deserialize, Serialize};

use crate::model::layout::VersionId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl Policy {
    /// True if and only if no rule is set.
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| n.is_none())
    }

    fn rules(&self) -> [(Rule, Option<u32>); 6] {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Yearly, self.keep_yearly),
        ]
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .rules()
            .iter()
            .filter_map(|(r, n)| {
                n.map(|n| {
                    format!(
                        "--keep-{} {}",
                        r.name(),
                        if n == u32::MAX {
                            "unlimited".into()
                        } else {
                            n.to_string()
                        }
                    )
                })
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The period a time falls in, as a number that differs between periods.
    fn period(self, t: chrono::DateTime<chrono::Utc>, index: usize) -> i64 {
        let (y, m, d, h) = (
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
        );
        match self {
            Rule::Last => index as i64,
            Rule::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Rule::Daily => (y * 100 + m) * 100 + d,
            Rule::Weekly => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Rule::Monthly => y * 100 + m,
            Rule::Yearly => y,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub version: VersionId,
    pub keep: bool,
    /// Why it is kept: `last`, `daily`, …, `protected`. Empty when removed.
    pub reasons: Vec<String>,
}

/// Decides for each version (given newest first) whether the policy keeps it.
pub fn apply(policy: &Policy, versions: &[VersionId], protected: &[VersionId]) -> Vec<Verdict> {
    let mut sorted: Vec<&VersionId> = versions.iter().collect();
    sorted.sort_by(|a, b| b.cmp(a));
    let mut state: Vec<(Rule, u32, Option<i64>)> = policy
        .rules()
        .iter()
        .filter_map(|(r, n)| n.map(|n| (*r, n, None)))
        .collect();
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut reasons = Vec::new();
            for (rule, left, last) in state.iter_mut() {
                if *left == 0 {
                    continue;
                }
                let p = rule.period(v.time(), i);
                if *last != Some(p) {
                    *last = Some(p);
                    if *left != u32::MAX {
                        *left -= 1;
                    }
                    reasons.push(rule.name().to_string());
                }
            }
            if protected.contains(v) {
                reasons.push("protected".to_string());
            }
            Verdict {
                version: v.clone(),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: &str) -> VersionId {
        VersionId::parse(&format!("{stamp}-abcdefabcdef")).unwrap()
    }

    /// Version ids for "YYYY-MM-DD HH:MM" strings.
    fn vs(times: &[&str]) -> Vec<VersionId> {
        times
            .iter()
            .map(|t| {
                let dt = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M")
                    .unwrap()
                    .and_utc();
                VersionId::new(dt, "abcdefabcdefabcdef")
            })
            .collect()
    }

    fn kept(policy: Policy, versions: &[VersionId]) -> Vec<String> {
        apply(&policy, versions, &[])
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.version.time().format("%Y-%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_n_newest() {
        let versions = vs(&[
            "2026-11-01 10:00",
            "2026-11-03 10:00",
            "2026-11-02 10:00",
            "2026-11-04 10:00",
        ]);
        let p = Policy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(p, &versions), ["2026-11-04 10:00", "2026-11-03 10:00"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day_and_many_on_one_day_count_once() {
        let versions = vs(&[
            "2026-11-24 23:59",
            "2026-11-24 12:00",
            "2026-11-24 00:00",
            "2026-11-23 18:00",
            "2026-11-23 06:00",
            "2026-11-22 09:00",
        ]);
        let p = Policy {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(p, &versions), ["2026-11-24 23:59", "2026-11-23 18:00"]);
    }

    #[test]
    fn gaps_do_not_use_up_the_count() {
        // Days with no version are skipped: 3 daily keeps reach back over the gap.
        let versions = vs(&[
            "2026-11-24 10:00",
            "2026-11-10 10:00",
            "2026-10-01 10:00",
            "2026-09-01 10:00",
        ]);
        let p = Policy {
            keep_daily: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(p, &versions),
            ["2026-11-24 10:00", "2026-11-10 10:00", "2026-10-01 10:00"]
        );
    }

    #[test]
    fn keep_hourly_uses_utc_hours() {
        let versions = vs(&[
            "2026-11-24 10:59",
            "2026-11-24 10:01",
            "2026-11-24 09:30",
            "2026-11-24 08:00",
        ]);
        let p = Policy {
            keep_hourly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(p, &versions), ["2026-11-24 10:59", "2026-11-24 09:30"]);
    }

    #[test]
    fn keep_monthly_crosses_month_and_year_boundaries() {
        let versions = vs(&[
            "2027-01-01 00:00",
            "2026-12-31 23:59",
            "2026-12-01 00:00",
            "2026-11-30 23:59",
            "2026-11-01 00:00",
        ]);
        let p = Policy {
            keep_monthly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(p, &versions),
            ["2027-01-01 00:00", "2026-12-31 23:59", "2026-11-30 23:59"]
        );
        let p = Policy {
            keep_yearly: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(p, &versions), ["2027-01-01 00:00", "2026-12-31 23:59"]);
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        // 2026-11-23 is a Monday; 2026-11-22 a Sunday (previous ISO week); 2027-01-01 is
        // a Friday in ISO week 53 of 2026, like 2026-12-28.
        let versions = vs(&[
            "2027-01-01 12:00",
            "2026-12-28 12:00",
            "2026-11-23 12:00",
            "2026-11-22 12:00",
        ]);
        let p = Policy {
            keep_weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(p, &versions),
            ["2027-01-01 12:00", "2026-11-23 12:00", "2026-11-22 12:00"]
        );
    }

    #[test]
    fn rules_combine_and_each_counts_every_period_it_sees() {
        // restic: a version kept by keep-last still uses up a daily slot.
        let versions = vs(&[
            "2026-11-24 12:00",
            "2026-11-24 08:00",
            "2026-11-23 12:00",
            "2026-11-22 12:00",
        ]);
        let p = Policy {
            keep_last: Some(1),
            keep_daily: Some(2),
            ..Default::default()
        };
        let d = apply(&p, &versions, &[]);
        assert_eq!(d[0].reasons, ["last", "daily"]);
        assert!(!d[1].keep);
        assert_eq!(d[2].reasons, ["daily"]);
        assert!(!d[3].keep);
    }

    #[test]
    fn protected_versions_are_always_kept_and_unlimited_keeps_all_periods() {
        let versions = vs(&["2026-11-24 12:00", "2026-11-20 12:00", "2026-01-01 12:00"]);
        let p = Policy {
            keep_last: Some(1),
            ..Default::default()
        };
        let d = apply(&p, &versions, &[versions[2].clone()]);
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(d[2].reasons, ["protected"]);
        let p = Policy {
            keep_daily: Some(u32::MAX),
            ..Default::default()
        };
        assert!(apply(&p, &versions, &[]).iter().all(|d| d.keep));
    }

    #[test]
    fn an_empty_policy_keeps_nothing_by_itself() {
        let versions = vs(&["2026-11-24 12:00"]);
        assert!(Policy::default().is_empty());
        assert!(!apply(&Policy::default(), &versions, &[])[0].keep);
        assert_eq!(v("20261124T120000.000Z").time(), versions[0].time());
    }
}
