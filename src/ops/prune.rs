//! Applies a retention policy to the kept versions of one connector, a hub, or an org.
//!
//! One LIST of the scope's prefix finds every version; `latest.json` of each connector
//! names the version the canonical object equals. Never removed, whatever the policy:
//! the canonical object and `latest.json` (prune only ever deletes under
//! `hubvault/versions/`), the newest complete version, the newest good one (its manifest
//! reads and describes it, its data is the size the manifest recorded: a damaged newest
//! version must not leave nothing restorable), and the version the canonical object
//! equals. A version whose data or manifest is missing (what a backup cut off
//! between the two leaves) is removed once it is older than a day, by its id AND by the
//! bucket's last-modified of what is there (a backup on a host whose clock is behind
//! writes ids that look old), and never counted by the policy.
//!
//! The newest version a restore drill (`hubvault verify`) verified is kept as well.
//!
//! `dry_run` computes exactly the same plan and deletes nothing: the plan is the
//! report, so a dry run lists exactly what the real run deletes.

use serde::Serialize;

use crate::catalog::history;
pub use crate::catalog::inventory::Scope;
use crate::catalog::inventory::{self, Listed};
use crate::catalog::retention::{self, Policy};
use crate::error::{Error, Result};
use crate::model::drill::{DrillRecord, stamped_in_the_future};
use crate::model::ids::{ConnectorId, DatahubId};
use crate::model::layout::StreamKeys;
use crate::model::layout::{ConnectorKey, VersionId};
use crate::store::{Bucket, StagingLeft};

/// How old an incomplete version must be before prune removes it: a backup may be
/// writing it right now.
pub const INCOMPLETE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

#[derive(Clone, Debug, Serialize)]
pub struct ConnectorPlan {
    pub prefix: String,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    /// Every complete version with the verdict, newest first.
    pub verdicts: Vec<retention::Verdict>,
    /// Incomplete versions old enough to remove.
    pub incomplete: Vec<VersionId>,
    /// The keys deleted (or, in a dry run, to delete), in order.
    pub delete: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub policy: String,
    pub connectors: Vec<ConnectorPlan>,
    pub versions_removed: usize,
    pub versions_kept: usize,
    pub objects_deleted: usize,
}

/// Plans and (unless `dry_run`) carries out the policy.
pub async fn prune(
    bucket: &Bucket,
    scope: &Scope,
    policy: &Policy,
    dry_run: bool,
) -> Result<PruneReport> {
    if policy.is_empty() {
        return Err(Error::usage(
            "no retention rule given, so nothing would be removed",
            "pass at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly",
        ));
    }
    if scope.connector.is_some() && scope.datahub.is_none() {
        return Err(Error::usage(
            "--connector needs --datahub",
            "pass both --datahub and --connector for one connector, only --datahub for a hub, neither for the org",
        ));
    }
    let now = chrono::Utc::now();
    let mut plans = Vec::new();
    for listed in inventory::scan(bucket, scope).await? {
        if listed.versions.is_empty() {
            continue;
        }
        let ck = &listed.ck;
        // Newest first.
        let ids: Vec<&VersionId> = listed.versions.keys().rev().collect();
        let complete: Vec<VersionId> = ids
            .iter()
            .filter(|id| listed.versions[**id] == (true, true))
            .map(|id| (*id).clone())
            .collect();
        let mut protected: Vec<VersionId> = complete.first().cloned().into_iter().collect();
        // The listing cannot tell a damaged newest version from a good one: the newest
        // one a restore can use is kept as well.
        // Each of these reads decides what is kept: one the bucket did not answer stops
        // the prune before anything is deleted (a guess could delete the only version a
        // restore can use).
        if let Some(v) = newest_good_version(bucket, ck, &complete)
            .await
            .map_err(unsure)?
        {
            protected.push(v);
        }
        if let Some(latest) = history::try_read_latest(bucket, ck).await.map_err(unsure)? {
            protected.push(latest.version);
        }
        if let Some(v) = last_verified_version(bucket, &listed)
            .await
            .map_err(unsure)?
        {
            protected.push(v);
        }
        let verdicts = retention::apply(policy, &complete, &protected);
        let mut incomplete: Vec<VersionId> = Vec::new();
        for id in ids.iter().filter(|id| {
            listed.versions[**id] != (true, true) && now - id.time() > INCOMPLETE_GRACE
        }) {
            // The id's time is the backing-up host's clock: the bucket must also say the
            // objects were written more than a day ago.
            if written_before(bucket, ck, id, listed.versions[*id], now - INCOMPLETE_GRACE).await {
                incomplete.push((*id).clone());
            }
        }
        let mut delete = Vec::new();
        for id in verdicts
            .iter()
            .filter(|v| !v.keep)
            .map(|v| &v.version)
            .chain(incomplete.iter())
        {
            let (data, manifest) = listed.versions[id];
            // Data first: a cut-off prune leaves a manifest without data, which reads as
            // incomplete and is removed next time, never a manifest promising data.
            if data {
                delete.push(ck.version_data(id).to_string());
            }
            if manifest {
                delete.push(ck.version_manifest(id).to_string());
            }
        }
        plans.push(ConnectorPlan {
            prefix: ck.prefix().to_string(),
            datahub: ck.datahub,
            connector: ck.connector,
            verdicts,
            incomplete,
            delete,
        });
    }

    let mut deleted = 0;
    if !dry_run {
        for plan in &plans {
            for key in &plan.delete {
                bucket
                    .delete(&object_store::path::Path::from(key.as_str()))
                    .await?;
                deleted += 1;
            }
        }
    }
    Ok(PruneReport {
        dry_run,
        policy: policy.to_string(),
        versions_removed: plans
            .iter()
            .map(|p| p.verdicts.iter().filter(|v| !v.keep).count() + p.incomplete.len())
            .sum(),
        versions_kept: plans
            .iter()
            .map(|p| p.verdicts.iter().filter(|v| v.keep).count())
            .sum(),
        objects_deleted: deleted,
        connectors: plans,
    })
}

/// What [`sweep_staging`] found and removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StagingSweep {
    /// Staging files older than [`Bucket::STAGING_GRACE`], by key.
    pub files: Vec<StagingLeft>,
    pub bytes: u64,
    /// How many were removed (0 in a dry run).
    pub removed: usize,
}

/// Removes (unless `dry_run`) the staging files that killed uploads left in a
/// local-directory bucket under `scope` (versions, canonical objects, the hubs'
/// continuous streams) once they are older than [`Bucket::STAGING_GRACE`] (a day).
/// Nothing to do on S3 (see [`Bucket::staging_left`]).
pub async fn sweep_staging(bucket: &Bucket, scope: &Scope, dry_run: bool) -> Result<StagingSweep> {
    let grace = Bucket::STAGING_GRACE;
    let prefixes: Vec<object_store::path::Path> = match (&scope.org, scope.datahub, scope.connector)
    {
        (Some(org), Some(hub), None) => {
            vec![scope.prefix(), StreamKeys::new(org.clone(), hub).prefix()]
        }
        (Some(org), None, _) => vec![object_store::path::Path::from(org.as_str())],
        _ => vec![scope.prefix()],
    };
    let mut sweep = StagingSweep::default();
    for prefix in prefixes {
        sweep
            .files
            .extend(bucket.staging_left(&prefix, grace).await?);
    }
    sweep.bytes = sweep.files.iter().map(|f| f.bytes).sum();
    if !dry_run {
        for f in &sweep.files {
            bucket.remove_staging(f).await?;
            sweep.removed += 1;
        }
    }
    Ok(sweep)
}

/// The newest of `complete` (newest first) a restore can use: its manifest reads and
/// describes it, and its data object is as large as the manifest says it stored. One GET
/// and one HEAD a version looked at; the newest usually passes. (A same-size corruption
/// is for `verify`'s checksum to find.) A version found missing or damaged is passed
/// over; one the bucket did not answer for is an error, never taken as damaged.
async fn newest_good_version(
    bucket: &Bucket,
    ck: &ConnectorKey,
    complete: &[VersionId],
) -> Result<Option<VersionId>> {
    for id in complete {
        let m = match history::read_manifest(bucket, ck, id).await {
            Ok(m) => m,
            Err(e) if e.is_unanswered() => return Err(e),
            Err(_) => continue,
        };
        match bucket.head(&ck.version_data(id)).await {
            Ok(Some(data)) if data.size == m.stored_size => return Ok(Some(id.clone())),
            Ok(_) => {}
            Err(e) if e.is_unanswered() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(None)
}

/// The error of a prune that could not read what decides which versions it keeps.
fn unsure(e: Error) -> Error {
    Error::check(
        format!(
            "{e}; nothing was deleted: prune reads which version is the newest good one, \
             the canonical object's and the last verified one before it deletes any"
        ),
        "check that the bucket is reachable and these credentials may read it, then run prune again",
    )
}

/// True if and only if each object of the incomplete version `id` that is there
/// (`present`: data, manifest) was last written before `before` by the bucket's record
/// (a HEAD each; one that cannot be read counts as recent).
async fn written_before(
    bucket: &Bucket,
    ck: &ConnectorKey,
    id: &VersionId,
    present: (bool, bool),
    before: chrono::DateTime<chrono::Utc>,
) -> bool {
    let keys = [
        (present.0, ck.version_data(id)),
        (present.1, ck.version_manifest(id)),
    ];
    for (there, key) in keys {
        if !there {
            continue;
        }
        match bucket.head(&key).await {
            Ok(Some(o)) if o.last_modified < before => {}
            Ok(None) => {}
            _ => return false,
        }
    }
    true
}

/// The version named by the newest successful drill record, if any (one GET). A record
/// gone, unreadable or over 1 MiB names none; a bucket that did not answer is an error. A record
/// stamped in the future is not a drill that happened (as for `status`).
async fn last_verified_version(bucket: &Bucket, listed: &Listed) -> Result<Option<VersionId>> {
    let now = chrono::Utc::now();
    let Some(mark) = listed
        .drills
        .iter()
        .rev()
        .find(|d| d.ok && !stamped_in_the_future(&d.stamp, now))
    else {
        return Ok(None);
    };
    match bucket
        .get_bytes_max(&mark.key, history::DRILL_RECORD_MAX_BYTES)
        .await
    {
        Ok(bytes) => Ok(DrillRecord::from_json(&bytes).and_then(|d| d.version)),
        Err(e) if e.is_unanswered() => Err(e),
        Err(_) => Ok(None),
    }
}

/// Applies `policy` to one connector after a backup uploaded to it, and returns how many
/// versions it removed. The backup itself succeeded: a failed prune is logged and gives
/// `None`, never an error.
pub async fn after_upload(bucket: &Bucket, ck: &ConnectorKey, policy: &Policy) -> Option<usize> {
    let scope = Scope {
        org: Some(ck.org.clone()),
        datahub: Some(ck.datahub),
        connector: Some(ck.connector),
    };
    // What an earlier, killed upload of this connector left in a local directory.
    match sweep_staging(bucket, &scope, false).await {
        Ok(s) if s.removed > 0 => tracing::info!(
            "removed {} staging files ({} bytes) that killed uploads left",
            s.removed,
            s.bytes
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "backup done, but removing staging files killed uploads left failed: {e}"
        ),
    }
    if policy.is_empty() {
        return None;
    }
    match prune(bucket, &scope, policy, false).await {
        Ok(r) => Some(r.versions_removed),
        Err(e) => {
            tracing::warn!("backup done, but applying the retention policy failed: {e}");
            None
        }
    }
}
