//! A connector's kept versions: listing them, reading their manifests, choosing one.
//!
//! Versions are read from ONE listing of `…/hubvault/versions/`: the key carries the
//! version id (time and sha256 prefix), the listing the sizes. A version is complete
//! when both its data (`.db.zst`) and its manifest (`.json`) are there; a data object
//! without a manifest is what a backup cut off between the two leaves behind.

use crate::bucket::{Bucket, ObjectInfo};
use crate::error::{Error, Result};
use crate::layout::{ConnectorKey, KeyKind, VersionId, parse_key};
use crate::manifest::Manifest;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    pub id: VersionId,
    pub data: Option<ObjectInfo>,
    pub manifest: Option<ObjectInfo>,
}

impl VersionEntry {
    /// True if and only if both the data and the manifest are in the bucket.
    pub fn is_complete(&self) -> bool {
        self.data.is_some() && self.manifest.is_some()
    }
}

/// Every version of one connector, newest first.
pub async fn list_versions(bucket: &Bucket, ck: &ConnectorKey) -> Result<Vec<VersionEntry>> {
    let listed = bucket.list(&ck.versions_dir()).await?;
    let mut by_id: std::collections::BTreeMap<VersionId, VersionEntry> = Default::default();
    for obj in listed {
        let Some((owner, kind)) = parse_key(&obj.key) else {
            continue;
        };
        if &owner != ck {
            continue;
        }
        let (id, is_data) = match kind {
            KeyKind::VersionData(id) => (id, true),
            KeyKind::VersionManifest(id) => (id, false),
            _ => continue,
        };
        let e = by_id.entry(id.clone()).or_insert(VersionEntry {
            id,
            data: None,
            manifest: None,
        });
        if is_data {
            e.data = Some(obj);
        } else {
            e.manifest = Some(obj);
        }
    }
    Ok(by_id.into_values().rev().collect())
}

/// Reads and checks the manifest of one version.
pub async fn read_manifest(bucket: &Bucket, ck: &ConnectorKey, id: &VersionId) -> Result<Manifest> {
    let key = ck.version_manifest(id);
    let bytes = bucket.get_bytes(&key).await?;
    let m = Manifest::from_json(&bytes, key.as_ref())?;
    if &m.version != id || m.connector_key() != *ck {
        return Err(Error::check(
            format!(
                "manifest {key} describes {} of {}, not this version",
                m.version,
                m.connector_key().prefix()
            ),
            "the history was tampered with or copied between connectors; run `hubvault verify`",
        ));
    }
    Ok(m)
}

/// One line of `hubvault versions`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VersionRow {
    pub version: VersionId,
    pub snapshot_at: chrono::DateTime<chrono::Utc>,
    /// Plain size, from the manifest.
    pub size: Option<u64>,
    /// Compressed size in the bucket.
    pub stored_size: Option<u64>,
    pub sha256: Option<String>,
    /// True if and only if both data and manifest are there.
    pub complete: bool,
    /// True if and only if the canonical object equals this version.
    pub current: bool,
    /// Rows in `Events`, from the manifest.
    pub events: Option<u64>,
    /// The newest restore drill (`hubvault verify`), on the version it drilled.
    pub last_drill: Option<DrillResult>,
    /// A manifest that could not be read: why.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DrillResult {
    pub ok: bool,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Every version with what its manifest says, newest first. One LIST, one GET of
/// `latest.json`, the newest drill record, and one GET per manifest (a few at a time).
pub async fn describe(bucket: &Bucket, ck: &ConnectorKey) -> Result<Vec<VersionRow>> {
    use futures::StreamExt;
    let entries = list_versions(bucket, ck).await?;
    let current = crate::backup::read_latest(bucket, ck)
        .await
        .map(|m| m.version);
    let drill = last_drill(bucket, ck).await?;
    let rows = futures::stream::iter(entries)
        .map(|e| {
            let current = current.clone();
            let drill = drill.clone();
            async move {
                let mut row = VersionRow {
                    snapshot_at: e.id.time(),
                    size: None,
                    stored_size: e.data.as_ref().map(|d| d.size),
                    sha256: None,
                    complete: e.is_complete(),
                    current: current.as_ref() == Some(&e.id),
                    events: None,
                    last_drill: drill
                        .as_ref()
                        .filter(|d| d.version.as_ref() == Some(&e.id))
                        .map(|d| DrillResult {
                            ok: d.ok,
                            time: d.time,
                        }),
                    problem: None,
                    version: e.id.clone(),
                };
                if e.manifest.is_some() {
                    match read_manifest(bucket, ck, &e.id).await {
                        Ok(m) => {
                            row.size = Some(m.size);
                            row.sha256 = Some(m.sha256);
                            row.events = m.rows.get("Events").copied();
                        }
                        Err(err) => row.problem = Some(err.to_string()),
                    }
                } else {
                    row.problem = Some(
                        "no manifest (a backup was cut off; prune removes it after a day)".into(),
                    );
                }
                if e.data.is_none() {
                    row.problem = Some("no data object (prune removes it after a day)".into());
                }
                row
            }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    Ok(rows)
}

/// The newest drill record of a connector (one LIST of its drills, one GET).
async fn last_drill(
    bucket: &Bucket,
    ck: &ConnectorKey,
) -> Result<Option<crate::verify::DrillRecord>> {
    let newest = bucket
        .list(&ck.drills_dir())
        .await?
        .into_iter()
        .filter(|o| matches!(parse_key(&o.key), Some((_, KeyKind::Drill { .. }))))
        .max_by(|a, b| a.key.cmp(&b.key));
    let Some(obj) = newest else { return Ok(None) };
    Ok(bucket
        .get_bytes(&obj.key)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Of the given versions, the first whose manifest records `sha256`: the second half of
/// how a canonical object is verified (its sha matches `latest.json` or a version
/// manifest, docs/DESIGN.md). Only ids carrying the sha's prefix are read, one GET each;
/// manifests that cannot be read come back as warnings.
pub async fn find_by_sha<'a>(
    bucket: &Bucket,
    ck: &ConnectorKey,
    ids: impl IntoIterator<Item = &'a VersionId>,
    sha256: &str,
) -> (Option<VersionId>, Vec<String>) {
    let mut warnings = Vec::new();
    for id in ids
        .into_iter()
        .filter(|id| sha256.starts_with(id.sha_prefix()))
    {
        match read_manifest(bucket, ck, id).await {
            Ok(m) if m.sha256 == sha256 => return (Some(m.version), warnings),
            Ok(_) => {}
            Err(e) => warnings.push(e.to_string()),
        }
    }
    (None, warnings)
}

/// The newest complete version taken at or before `at` (versions newest first).
pub fn newest_at_or_before(
    versions: &[VersionEntry],
    at: chrono::DateTime<chrono::Utc>,
) -> Option<&VersionEntry> {
    versions
        .iter()
        .filter(|v| v.is_complete())
        .find(|v| v.id.time() <= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stamp: &str, complete: bool) -> VersionEntry {
        let id = VersionId::parse(&format!("{stamp}-aaaaaaaaaaaa")).unwrap();
        let info = ObjectInfo {
            key: "k".into(),
            size: 1,
            last_modified: id.time(),
        };
        VersionEntry {
            id,
            data: Some(info.clone()),
            manifest: complete.then_some(info),
        }
    }

    #[test]
    fn at_picks_the_newest_complete_version_not_after_the_time() {
        let vs = vec![
            entry("20261124T120000.000Z", true),
            entry("20261124T100000.000Z", false),
            entry("20261124T090000.000Z", true),
            entry("20261123T090000.000Z", true),
        ];
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(
            newest_at_or_before(&vs, t("2026-11-24T11:00:00Z"))
                .unwrap()
                .id,
            vs[2].id
        );
        assert_eq!(
            newest_at_or_before(&vs, t("2026-11-24T12:00:00Z"))
                .unwrap()
                .id,
            vs[0].id
        );
        assert_eq!(
            newest_at_or_before(&vs, t("2026-11-24T08:59:59Z"))
                .unwrap()
                .id,
            vs[3].id
        );
        assert!(newest_at_or_before(&vs, t("2026-01-01T00:00:00Z")).is_none());
    }
}
