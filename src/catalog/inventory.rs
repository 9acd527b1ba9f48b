//! The inventory: every connector backup in the bucket (or under one org or hub), from
//! ONE paged LIST and nothing else. `status`, `prune` and `verify` all start from it.
//!
//! At fleet scale a GET per backup would cost thousands of requests; what the inventory
//! gives is in the keys and the listing's metadata instead (see `model::layout`):
//! - the canonical object's size and last-modified give size and age;
//! - the `hubvault/label/{type}/{name}` marker gives the source's name and type;
//! - the `hubvault/drills/{stamp}-{ok|failed}.json` keys give the drills;
//! - `hubvault/versions/` keys give the kept versions.

use std::collections::BTreeMap;

use object_store::path::Path;
use serde::Serialize;

use crate::error::Result;
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{ConnectorKey, DbFileName, KeyKind, VersionId, parse_key};
use crate::store::{Bucket, ObjectInfo};

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
        match (&self.org, &self.datahub, &self.connector) {
            (Some(org), Some(hub), Some(c)) => ConnectorKey::new(org.clone(), *hub, *c).prefix(),
            (Some(org), Some(hub), None) => {
                Path::from_iter([org.as_str(), "datahub", &hub.to_string()])
            }
            // Not `{org}/`: the continuous stream lives in `{org}/stream/`, and a status
            // listing must not page through segments (docs/CONTINUOUS.md).
            (Some(org), None, _) => Path::from_iter([org.as_str(), "datahub"]),
            (None, _, _) => Path::default(),
        }
    }

    fn contains(&self, ck: &ConnectorKey) -> bool {
        self.org.as_ref().is_none_or(|o| *o == ck.org)
            && self.datahub.is_none_or(|h| h == ck.datahub)
            && self.connector.is_none_or(|c| c == ck.connector)
    }

    /// For messages: `acme/`, `acme/datahub/…` or `the whole bucket`.
    pub fn describe(&self) -> String {
        let p = match (&self.org, &self.datahub) {
            (Some(org), None) => Path::from(org.as_str()),
            _ => Scope {
                connector: None,
                ..self.clone()
            }
            .prefix(),
        };
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
    /// The continuous-capture marker: its last-modified is (within a minute) the time
    /// of the newest captured commit.
    pub stream: Option<ObjectInfo>,
    /// True if and only if the source object of the latest backup is beside it
    /// (`hubvault/source.json`, written by backups since restore-hub came).
    pub source: bool,
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
            stream: None,
            source: false,
        }
    }
}

/// The orgs that have anything in the bucket: its top-level names that are org slugs,
/// from one delimiter listing.
pub async fn orgs(bucket: &Bucket) -> Result<Vec<OrgSlug>> {
    Ok(bucket
        .list_prefixes(&Path::default())
        .await?
        .iter()
        .filter_map(|n| OrgSlug::parse(n).ok())
        .collect())
}

/// One paged LIST of the scope's prefix, grouped by connector (sorted by key). For the
/// whole bucket: one delimiter listing of the top level finds the orgs, then one paged
/// LIST of each org's `datahub/` (never its `stream/`, whose segments would make the
/// cost grow with time).
pub async fn scan(bucket: &Bucket, scope: &Scope) -> Result<Vec<Listed>> {
    let objects = if scope.org.is_some() {
        bucket.list(&scope.prefix()).await?
    } else {
        let mut all = Vec::new();
        for org in orgs(bucket).await? {
            all.extend(
                bucket
                    .list(&Path::from_iter([org.as_str(), "datahub"]))
                    .await?,
            );
        }
        all
    };
    Ok(group(objects, scope))
}

/// A listing grouped by connector (sorted by key), keeping only what is in `scope`: for
/// a caller that also wants the listing itself (sizes of versions, say).
pub fn group(objects: impl IntoIterator<Item = ObjectInfo>, scope: &Scope) -> Vec<Listed> {
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
            KeyKind::StreamMarker => l.stream = Some(obj),
            KeyKind::Source => l.source = true,
        }
    }
    let mut out: Vec<Listed> = by.into_values().collect();
    for l in &mut out {
        l.drills.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    }
    out
}
