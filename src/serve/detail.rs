//! One connector's page: its versions, drills and what they say, read from the bucket.
//!
//! Cost of one refresh: ONE listing of the connector's prefix (canonical object, versions,
//! drills, label), one GET of `latest.json` (which version is current), one GET of the
//! newest drill record (why it failed), and one GET per version manifest not read
//! before, for at most [`MANIFESTS_READ`] newest versions. Manifests of kept versions
//! never change, so they are read once per server and kept in [`Manifests`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::catalog::history;
use crate::catalog::inventory::{self, Scope};
use crate::error::{Error, Result};
use crate::model::drill::DrillRecord;
use crate::model::layout::{ConnectorKey, KeyKind, VersionId, parse_key};
use crate::serve::fleet::{Row, Window};
use crate::store::Bucket;

/// Manifests read for the chart and the table, newest versions first.
pub const MANIFESTS_READ: usize = 60;
/// Kept manifest facts across all connectors; past this the memo starts over.
const MEMO_MAX: usize = 50_000;

/// What a version's manifest says that the page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub size: u64,
    pub events: Option<u64>,
}

/// Manifest facts by version, kept for the life of the server (versions are immutable).
#[derive(Default)]
pub struct Manifests {
    memo: Mutex<HashMap<(ConnectorKey, VersionId), Option<Facts>>>,
}

impl Manifests {
    fn get(&self, ck: &ConnectorKey, v: &VersionId) -> Option<Option<Facts>> {
        let memo = self
            .memo
            .lock()
            .expect("manifest memo lock is never poisoned");
        memo.get(&(ck.clone(), v.clone())).copied()
    }

    fn put(&self, ck: &ConnectorKey, v: &VersionId, f: Option<Facts>) {
        let mut memo = self
            .memo
            .lock()
            .expect("manifest memo lock is never poisoned");
        if memo.len() >= MEMO_MAX {
            memo.clear();
        }
        memo.insert((ck.clone(), v.clone()), f);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionPoint {
    pub version: VersionId,
    pub snapshot_at: DateTime<Utc>,
    /// Size of the plain database, from the manifest (`None` if not read or unreadable).
    pub size: Option<u64>,
    /// Size of the compressed object in the bucket, from the listing.
    pub stored_size: Option<u64>,
    /// Rows in `Events`, from the manifest.
    pub events: Option<u64>,
    /// True if and only if both data and manifest are in the bucket.
    pub complete: bool,
    /// True if and only if `latest.json` says the canonical object is this version.
    pub current: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DrillPoint {
    pub stamp: String,
    pub at: Option<DateTime<Utc>>,
    pub ok: bool,
}

/// Everything the connector page shows.
#[derive(Clone, Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub row: Row,
    pub checked_at: DateTime<Utc>,
    /// Newest first.
    pub versions: Vec<VersionPoint>,
    /// Newest first.
    pub drills: Vec<DrillPoint>,
    /// The newest drill's record (its problems and warnings), when readable.
    pub last_drill_record: Option<DrillRecord>,
    /// The span continuous capture can restore to (`None` until it reports).
    pub continuous_window: Option<Window>,
}

/// Reads one connector's page from the bucket. `Ok(None)` when nothing of it is there.
pub async fn load(
    bucket: &Bucket,
    ck: &ConnectorKey,
    max_age: Duration,
    memo: &Manifests,
) -> Result<Option<Detail>> {
    let objects = bucket.list(&ck.prefix()).await?;
    let mut stored: HashMap<VersionId, u64> = HashMap::new();
    for o in &objects {
        if let Some((owner, KeyKind::VersionData(v))) = parse_key(&o.key)
            && owner == *ck
        {
            stored.insert(v, o.size);
        }
    }
    let scope = Scope {
        org: Some(ck.org.clone()),
        datahub: Some(ck.datahub),
        connector: Some(ck.connector),
    };
    let Some(listed) = inventory::group(objects, &scope).into_iter().next() else {
        return Ok(None);
    };
    let now = Utc::now();
    let versions = listed.versions.clone();
    let drill_marks = listed.drills.clone();
    let current = if listed.latest_manifest {
        history::read_latest(bucket, ck).await.map(|m| m.version)
    } else {
        None
    };
    let row = Row::from_listed(listed, max_age, now);

    // Manifests of the newest complete versions, each read once per server.
    let wanted: Vec<VersionId> = versions
        .iter()
        .rev()
        .filter(|(_, (d, m))| *d && *m)
        .map(|(v, _)| v.clone())
        .take(MANIFESTS_READ)
        .filter(|v| memo.get(ck, v).is_none())
        .collect();
    let read: Vec<(VersionId, Option<Facts>)> = futures::stream::iter(wanted)
        .map(|v| async move {
            let facts = match history::read_manifest(bucket, ck, &v).await {
                Ok(m) => Some(Facts {
                    size: m.size,
                    events: m.rows.get("Events").copied(),
                }),
                Err(e) if e.store_failure().is_some() && !e.is_not_found() => return Err(e),
                // Damaged or gone: shown as unknown, not read again.
                Err(_) => None,
            };
            Ok::<_, Error>((v, facts))
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    for (v, f) in read {
        memo.put(ck, &v, f);
    }

    let points = versions
        .iter()
        .rev()
        .map(|(v, (data, manifest))| {
            let facts = memo.get(ck, v).flatten();
            VersionPoint {
                version: v.clone(),
                snapshot_at: v.time(),
                size: facts.map(|f| f.size),
                stored_size: stored.get(v).copied(),
                events: facts.and_then(|f| f.events),
                complete: *data && *manifest,
                current: current.as_ref() == Some(v),
            }
        })
        .collect();
    // The record of the drill the row calls the last (not one stamped in the future).
    let last_drill_record = match &row.status.last_drill {
        Some(d) => match bucket
            .get_bytes_max(&d.key, history::DRILL_RECORD_MAX_BYTES)
            .await
        {
            Ok(b) => DrillRecord::from_json(&b),
            Err(e) if e.store_failure().is_some() && !e.is_not_found() => return Err(e),
            // Gone, or too big to be one: no record.
            Err(_) => None,
        },
        None => None,
    };
    let drills = drill_marks
        .iter()
        .rev()
        .map(|d| DrillPoint {
            at: chrono::NaiveDateTime::parse_from_str(&d.stamp, VersionId::STAMP_FORMAT)
                .ok()
                .map(|t| t.and_utc()),
            stamp: d.stamp.clone(),
            ok: d.ok,
        })
        .collect();
    Ok(Some(Detail {
        row,
        checked_at: now,
        versions: points,
        drills,
        last_drill_record,
        continuous_window: None,
    }))
}
