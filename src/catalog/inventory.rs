//! Fleet status: every connector backup in the bucket (or under one org or hub), its
//! age, size, freshness and last restore drill, from ONE paged LIST and nothing else.
//!
//! At fleet scale a GET per backup would cost thousands of requests; everything status
//! shows is in the keys and the listing's metadata instead (see `layout`):
//! - the canonical object's size and last-modified give size and age;
//! - the `hubvault/label/{type}/{name}` marker gives the source's name and type;
//! - the newest `hubvault/drills/{stamp}-{ok|failed}.json` key gives the last drill;
//! - `hubvault/versions/` keys give the number of kept versions.
//!
//! A connector is *broken* when its history exists but the canonical object does not,
//! when the canonical object is empty, or when its last restore drill failed; *stale*
//! when its canonical object is at least `max_age` old; *fresh* otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::path::Path;
use serde::Serialize;

use crate::bucket::{Bucket, ObjectInfo};
use crate::error::Result;
use crate::ids::{ConnectorId, DatahubId, DbFileName, OrgSlug};
use crate::layout::{ConnectorKey, KeyKind, VersionId, parse_key};

/// Which part of the bucket to look at.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub org: Option<OrgSlug>,
    pub datahub: Option<DatahubId>,
    pub connector: Option<ConnectorId>,
}

impl Scope {
    /// The narrowest key prefix that holds everything in scope ("" for the whole bucket).
    pub fn prefix(&self) -> Path {
        match (&self.org, &self.datahub) {
            (Some(org), Some(hub)) => Path::from_iter([org.as_str(), "datahub", &hub.to_string()]),
            (Some(org), None) => Path::from(org.as_str()),
            (None, _) => Path::default(),
        }
    }

    fn contains(&self, ck: &ConnectorKey) -> bool {
        self.org.as_ref().is_none_or(|o| *o == ck.org)
            && self.datahub.is_none_or(|h| h == ck.datahub)
            && self.connector.is_none_or(|c| c == ck.connector)
    }

    /// For messages: `acme/datahub/…` or `the whole bucket`.
    pub fn describe(&self) -> String {
        let p = self.prefix();
        let mut s = if p.as_ref().is_empty() {
            "the whole bucket".to_string()
        } else {
            format!("{p}/")
        };
        if let Some(c) = self.connector {
            s.push_str(&format!(" (connector {c})"));
        }
        s
    }
}

/// One drill result as its key tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillMark {
    /// UTC stamp of the drill, as in the key (sorts by time).
    pub stamp: String,
    pub ok: bool,
    #[serde(skip)]
    pub key: Path,
}

/// Everything one listing says about one connector.
#[derive(Clone, Debug)]
pub struct Listed {
    pub ck: ConnectorKey,
    /// The canonical object: `sqlite.db` if there, else the first other database name.
    pub canonical: Option<(DbFileName, ObjectInfo)>,
    pub latest_manifest: bool,
    /// Kept versions: (data is there, manifest is there).
    pub versions: BTreeMap<VersionId, (bool, bool)>,
    /// Oldest first.
    pub drills: Vec<DrillMark>,
    pub label: Option<(String, String)>,
}

impl Listed {
    fn new(ck: ConnectorKey) -> Self {
        Listed {
            ck,
            canonical: None,
            latest_manifest: false,
            versions: BTreeMap::new(),
            drills: Vec::new(),
            label: None,
        }
    }
}

/// One paged LIST of the scope's prefix, grouped by connector (sorted by key).
pub async fn scan(bucket: &Bucket, scope: &Scope) -> Result<Vec<Listed>> {
    let objects = bucket.list(&scope.prefix()).await?;
    let mut by: BTreeMap<ConnectorKey, Listed> = BTreeMap::new();
    for obj in objects {
        let Some((ck, kind)) = parse_key(&obj.key) else {
            continue;
        };
        if !scope.contains(&ck) {
            continue;
        }
        let l = by.entry(ck.clone()).or_insert_with(|| Listed::new(ck));
        match kind {
            KeyKind::Canonical(name) => {
                let prefer = name == DbFileName::default() || l.canonical.is_none();
                if prefer {
                    l.canonical = Some((name, obj));
                }
            }
            KeyKind::LatestManifest => l.latest_manifest = true,
            KeyKind::VersionData(v) => l.versions.entry(v).or_default().0 = true,
            KeyKind::VersionManifest(v) => l.versions.entry(v).or_default().1 = true,
            KeyKind::Drill { stamp, ok } => l.drills.push(DrillMark {
                stamp,
                ok,
                key: obj.key,
            }),
            KeyKind::Label { source_type, name } => l.label = Some((source_type, name)),
        }
    }
    let mut out: Vec<Listed> = by.into_values().collect();
    for l in &mut out {
        l.drills.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    }
    Ok(out)
}

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
    /// write (the seed's own upload).
    pub name: Option<String>,
    pub source_type: Option<String>,
    pub state: State,
    pub key: Option<String>,
    pub size: Option<u64>,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
    pub age_seconds: Option<f64>,
    pub versions: usize,
    pub last_drill: Option<DrillMark>,
    /// Why the connector is broken (empty otherwise).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub fresh: usize,
    pub stale: usize,
    pub broken: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub scope: String,
    pub max_age_seconds: u64,
    pub checked_at: chrono::DateTime<chrono::Utc>,
    /// Broken first, then stale, then fresh; oldest first within each.
    pub connectors: Vec<ConnectorStatus>,
    pub summary: Summary,
}

impl StatusReport {
    /// True if and only if some backup is stale or broken (exit 3).
    pub fn needs_attention(&self) -> bool {
        self.summary.stale + self.summary.broken > 0
    }
}

/// Status of every backup in `scope`, from one paged LIST.
pub async fn run(
    bucket: &Bucket,
    scope: &Scope,
    max_age: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<StatusReport> {
    let listed = scan(bucket, scope).await?;
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
        match c.state {
            State::Fresh => summary.fresh += 1,
            State::Stale => summary.stale += 1,
            State::Broken => summary.broken += 1,
        }
    }
    Ok(StatusReport {
        scope: scope.describe(),
        max_age_seconds: max_age.as_secs(),
        checked_at: now,
        connectors,
        summary,
    })
}

fn judge(l: Listed, max_age: Duration, now: chrono::DateTime<chrono::Utc>) -> ConnectorStatus {
    let mut problems = Vec::new();
    let complete = l.versions.values().filter(|(d, m)| *d && *m).count();
    let last_drill = l.drills.last().cloned();
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
        problems,
    }
}
