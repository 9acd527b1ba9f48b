//! A connector's kept versions: listing them, reading their manifests, choosing one.
//!
//! Versions are read from ONE listing of `…/hubvault/versions/`: the key carries the
//! version id (time and sha256 prefix), the listing the sizes. A version is complete
//! when both its data (`.db.zst`) and its manifest (`.json`) are there; a data object
//! without a manifest is what a backup cut off between the two leaves behind.

use crate::error::{Error, Result};
use crate::model::drill::DrillRecord;
use crate::model::layout::{ConnectorKey, KeyKind, VersionId, parse_key};
use crate::model::manifest::Manifest;
use crate::store::{Bucket, ObjectInfo};

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

/// The most a manifest may take: they are a few KiB (one row count per table), and
/// anyone who can write to the bucket could make one a GiB.
pub const MANIFEST_MAX_BYTES: u64 = 16 << 20;

/// Reads and checks the manifest of one version.
pub async fn read_manifest(bucket: &Bucket, ck: &ConnectorKey, id: &VersionId) -> Result<Manifest> {
    let key = ck.version_manifest(id);
    let bytes = bucket.get_bytes_max(&key, MANIFEST_MAX_BYTES).await?;
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

/// The manifest of the canonical object (`latest.json`), if there is a readable one. A
/// damaged one is treated as absent: the next upload writes a new version and a new
/// manifest.
pub async fn read_latest(bucket: &Bucket, ck: &ConnectorKey) -> Option<Manifest> {
    match try_read_latest(bucket, ck).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{e}; treating it as absent");
            None
        }
    }
}

/// As [`read_latest`], but a bucket that did not answer (anything but "not found") is
/// an error rather than "absent": for a caller that deletes by the answer (`prune`).
pub async fn try_read_latest(bucket: &Bucket, ck: &ConnectorKey) -> Result<Option<Manifest>> {
    let key = ck.latest_manifest();
    match bucket.get_bytes_max(&key, MANIFEST_MAX_BYTES).await {
        Ok(bytes) => match Manifest::from_json(&bytes, key.as_ref()) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                tracing::warn!("{e}; treating it as absent");
                Ok(None)
            }
        },
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) if e.store_failure().is_some() => Err(e),
        Err(e) => {
            tracing::warn!("{e}; treating it as absent");
            Ok(None)
        }
    }
}

/// The most a drill record may take (a few KiB when hubvault writes it).
pub const DRILL_RECORD_MAX_BYTES: u64 = 1 << 20;

/// The newest drill record of a connector (one LIST of its drills, one GET). A record
/// stamped in the future is not a drill that happened (as for `status`).
pub async fn last_drill(bucket: &Bucket, ck: &ConnectorKey) -> Result<Option<DrillRecord>> {
    let now = chrono::Utc::now();
    let newest = bucket
        .list(&ck.drills_dir())
        .await?
        .into_iter()
        .filter(|o| match parse_key(&o.key) {
            Some((_, KeyKind::Drill { stamp, .. })) => {
                !crate::model::drill::stamped_in_the_future(&stamp, now)
            }
            _ => false,
        })
        .max_by(|a, b| a.key.cmp(&b.key));
    let Some(obj) = newest else { return Ok(None) };
    Ok(bucket
        .get_bytes_max(&obj.key, DRILL_RECORD_MAX_BYTES)
        .await
        .ok()
        .and_then(|b| DrillRecord::from_json(&b)))
}

/// Of the given versions, the first whose manifest records `sha256`: the second half of
/// how a canonical object is verified (its sha matches `latest.json` or a version
/// manifest, docs/DESIGN.md). Only ids carrying the sha's prefix are read, one GET each;
/// manifests that cannot be read come back as warnings. Gives the manifest found.
pub async fn find_by_sha<'a>(
    bucket: &Bucket,
    ck: &ConnectorKey,
    ids: impl IntoIterator<Item = &'a VersionId>,
    sha256: &str,
) -> (Option<Manifest>, Vec<Error>) {
    let mut warnings = Vec::new();
    for id in ids
        .into_iter()
        .filter(|id| sha256.starts_with(id.sha_prefix()))
    {
        match read_manifest(bucket, ck, id).await {
            Ok(m) if m.sha256 == sha256 => return (Some(m), warnings),
            Ok(_) => {}
            Err(e) => warnings.push(e),
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
            e_tag: None,
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
