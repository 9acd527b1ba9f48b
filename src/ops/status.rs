//! Fleet status: every connector backup in scope, its age, size, freshness and last
//! restore drill, from the inventory's one paged LIST.
//!
//! A connector is *broken* when its history exists but the canonical object does not,
//! when the canonical object is empty, or when its last restore drill failed; *stale*
//! when its canonical object is at least `max_age` old; *fresh* otherwise.

use std::time::Duration;

use serde::Serialize;

pub use crate::catalog::inventory::Scope;
use crate::catalog::inventory::{self, DrillMark, Listed};
use crate::error::Result;
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::store::Bucket;

/// Display order too: broken first, then stale, then fresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Broken,
    Stale,
    Fresh,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectorStatus {
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    /// Source name and type from the label marker; `None` for a backup hubvault did not
    /// write (the platform's own upload).
    pub name: Option<String>,
    pub source_type: Option<String>,
    pub state: State,
    pub key: Option<String>,
    pub size: Option<u64>,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
    pub age_seconds: Option<f64>,
    pub versions: usize,
    pub last_drill: Option<DrillMark>,
    /// Continuous capture: when it last uploaded a commit of this connector (the stream
    /// marker's last-modified: rewritten at most once a minute, so within a minute of
    /// the newest captured commit), and how long ago that is. `None`: not captured.
    pub captured_at: Option<chrono::DateTime<chrono::Utc>>,
    pub capture_lag_seconds: Option<f64>,
    /// Why the connector is broken (empty otherwise).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub fresh: usize,
    pub stale: usize,
    pub broken: usize,
    /// Backups without any restore drill (`hubvault verify` never ran on them).
    pub never_verified: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub scope: String,
    pub max_age_seconds: u64,
    pub checked_at: chrono::DateTime<chrono::Utc>,
    /// Broken first, then stale, then fresh; oldest first within each.
    pub connectors: Vec<ConnectorStatus>,
    pub summary: Summary,
    /// When nothing is in scope: the orgs the bucket does hold (from one delimiter
    /// listing of its top level), and what to try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty: Option<EmptyScope>,
}

/// Why a scope with no backups is not healthy, and where the backups are.
#[derive(Clone, Debug, Serialize)]
pub struct EmptyScope {
    pub orgs_in_bucket: Vec<OrgSlug>,
    pub hint: String,
}

impl StatusReport {
    /// True if and only if some backup is stale or broken, or the scope holds no backup
    /// at all (a typo in --org must not read as a healthy fleet): exit 3.
    pub fn needs_attention(&self) -> bool {
        self.summary.stale + self.summary.broken > 0 || self.summary.total == 0
    }
}

/// What to try when `scope` holds no backup, given the orgs the bucket holds.
fn empty_hint(scope: &Scope, orgs: &[OrgSlug]) -> String {
    let names = orgs
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match &scope.org {
        _ if orgs.is_empty() => "the bucket holds no backups yet: check --bucket, then run `hubvault doctor` and `hubvault backup --db ...` (or start the agent)".to_string(),
        Some(org) if !orgs.contains(org) => format!(
            "no org \"{org}\" in this bucket; it holds: {names}. Check --org (or HUBVAULT_ORG), e.g. hubvault status --org {}",
            orgs[0]
        ),
        Some(org) => format!(
            "org {org} has backups, but none match --datahub/--connector; check the ids with hubvault status --org {org}"
        ),
        None => format!("this bucket holds the orgs {names}, but no connector backup matches the filter"),
    }
}

/// Status of every backup in `scope`, from one paged LIST.
pub async fn run(
    bucket: &Bucket,
    scope: &Scope,
    max_age: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<StatusReport> {
    let listed = inventory::scan(bucket, scope).await?;
    let mut connectors: Vec<ConnectorStatus> =
        listed.into_iter().map(|l| judge(l, max_age, now)).collect();
    connectors.sort_by(|a, b| {
        a.state.cmp(&b.state).then(
            b.age_seconds
                .unwrap_or(f64::INFINITY)
                .total_cmp(&a.age_seconds.unwrap_or(f64::INFINITY)),
        )
    });
    let mut summary = Summary {
        total: connectors.len(),
        ..Default::default()
    };
    for c in &connectors {
        if c.last_drill.is_none() {
            summary.never_verified += 1;
        }
        match c.state {
            State::Fresh => summary.fresh += 1,
            State::Stale => summary.stale += 1,
            State::Broken => summary.broken += 1,
        }
    }
    let empty = if connectors.is_empty() {
        let orgs = inventory::orgs(bucket).await?;
        Some(EmptyScope {
            hint: empty_hint(scope, &orgs),
            orgs_in_bucket: orgs,
        })
    } else {
        None
    };
    Ok(StatusReport {
        scope: scope.describe(),
        max_age_seconds: max_age.as_secs(),
        checked_at: now,
        connectors,
        summary,
        empty,
    })
}

pub use crate::model::drill::stamped_in_the_future;

/// The status of one listed connector as of `now` (what [`run`] does for each; the web
/// page judges the listings it keeps).
pub fn judge(l: Listed, max_age: Duration, now: chrono::DateTime<chrono::Utc>) -> ConnectorStatus {
    let mut problems = Vec::new();
    let complete = l.versions.values().filter(|(d, m)| *d && *m).count();
    // A stamp further ahead than any clock S3 takes requests from is not a drill that
    // happened: one such object (hostile, or a clock off by years) would otherwise stand
    // for every drill after it.
    let last_drill = l
        .drills
        .iter()
        .rev()
        .find(|d| !stamped_in_the_future(&d.stamp, now))
        .cloned();
    let age = l.canonical.as_ref().map(|(_, o)| {
        (now - o.last_modified)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64()
    });
    match &l.canonical {
        None => problems.push(format!(
            "no object at the canonical key, but {} kept version(s){}",
            complete,
            if l.latest_manifest {
                " and latest.json"
            } else {
                ""
            }
        )),
        Some((_, o)) if o.size == 0 => {
            problems.push("the object at the canonical key is empty".to_string())
        }
        Some(_) => {}
    }
    if let Some(d) = last_drill.as_ref().filter(|d| !d.ok) {
        problems.push(format!(
            "the last restore drill ({}) failed; see hubvault verify --connector {}",
            d.stamp, l.ck.connector
        ));
    }
    let state = if !problems.is_empty() {
        State::Broken
    } else if age.is_some_and(|a| a >= max_age.as_secs_f64()) {
        State::Stale
    } else {
        State::Fresh
    };
    let (source_type, name) = match l.label {
        Some((t, n)) => (Some(t), Some(n)),
        None => (None, None),
    };
    ConnectorStatus {
        key: l
            .canonical
            .as_ref()
            .map(|(name, _)| l.ck.canonical(name).to_string()),
        size: l.canonical.as_ref().map(|(_, o)| o.size),
        last_modified: l.canonical.as_ref().map(|(_, o)| o.last_modified),
        org: l.ck.org,
        datahub: l.ck.datahub,
        connector: l.ck.connector,
        name,
        source_type,
        state,
        age_seconds: age,
        versions: complete,
        last_drill,
        captured_at: l.stream.as_ref().map(|o| o.last_modified),
        capture_lag_seconds: l.stream.as_ref().map(|o| {
            (now - o.last_modified)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        }),
        problems,
    }
}
