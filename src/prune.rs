//! Applies a retention policy to the kept versions of one connector, a hub, or an org.
//!
//! One LIST of the scope's prefix finds every version; `latest.json` of each connector
//! names the version the canonical object equals. Never removed, whatever the policy:
//! the canonical object and `latest.json` (prune only ever deletes under
//! `hubvault/versions/`), the newest complete version, and the version the canonical
//! object equals. A version whose data or manifest is missing (what a backup cut off
//! between the two leaves) is removed once it is older than a day, and never counted by
//! the policy.
//!
//! `dry_run` computes exactly the same plan and deletes nothing: the plan is the
//! report, so a dry run lists exactly what the real run deletes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::history::VersionEntry;
use crate::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::layout::{ConnectorKey, KeyKind, VersionId, parse_key};
use crate::retention::{self, Policy};

/// How old an incomplete version must be before prune removes it: a backup may be
/// writing it right now.
pub const INCOMPLETE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What to prune: an org, one hub of it, or one connector.
#[derive(Clone, Debug)]
pub struct Scope {
    pub org: OrgSlug,
    pub datahub: Option<DatahubId>,
    pub connector: Option<ConnectorId>,
}

impl Scope {
    pub fn prefix(&self) -> Result<object_store::path::Path> {
        Ok(match (self.datahub, self.connector) {
            (Some(h), Some(c)) => ConnectorKey::new(self.org.clone(), h, c).prefix(),
            (Some(h), None) => {
                object_store::path::Path::from_iter([self.org.as_str(), "datahub", &h.to_string()])
            }
            (None, None) => object_store::path::Path::from(self.org.as_str()),
            (None, Some(_)) => {
                return Err(Error::usage(
                    "--connector needs --datahub",
                    "pass both --datahub and --connector for one connector, only --datahub for a hub, neither for the org",
                ));
            }
        })
    }
}

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
    let prefix = scope.prefix()?;
    let listed = bucket.list(&prefix).await?;
    let mut by_connector: BTreeMap<ConnectorKey, BTreeMap<VersionId, VersionEntry>> =
        BTreeMap::new();
    for obj in listed {
        let Some((ck, kind)) = parse_key(&obj.key) else {
            continue;
        };
        let (id, is_data) = match kind {
            KeyKind::VersionData(id) => (id, true),
            KeyKind::VersionManifest(id) => (id, false),
            _ => continue,
        };
        let e = by_connector
            .entry(ck)
            .or_default()
            .entry(id.clone())
            .or_insert(VersionEntry {
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

    let now = chrono::Utc::now();
    let mut plans = Vec::new();
    for (ck, entries) in by_connector {
        let entries: Vec<VersionEntry> = entries.into_values().rev().collect();
        let complete: Vec<VersionId> = entries
            .iter()
            .filter(|e| e.is_complete())
            .map(|e| e.id.clone())
            .collect();
        let mut protected: Vec<VersionId> = complete.first().cloned().into_iter().collect();
        if let Some(latest) = crate::backup::read_latest(bucket, &ck).await {
            protected.push(latest.version);
        }
        let verdicts = retention::apply(policy, &complete, &protected);
        let incomplete: Vec<VersionId> = entries
            .iter()
            .filter(|e| !e.is_complete() && now - e.id.time() > INCOMPLETE_GRACE)
            .map(|e| e.id.clone())
            .collect();
        let mut delete = Vec::new();
        let doomed = verdicts
            .iter()
            .filter(|v| !v.keep)
            .map(|v| &v.version)
            .chain(incomplete.iter());
        for id in doomed {
            let e = entries
                .iter()
                .find(|e| &e.id == id)
                .expect("from the same listing");
            // Data first: a cut-off prune leaves a manifest without data, which reads as
            // incomplete and is removed next time, never a manifest promising data.
            delete.extend(e.data.iter().map(|o| o.key.to_string()));
            delete.extend(e.manifest.iter().map(|o| o.key.to_string()));
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
