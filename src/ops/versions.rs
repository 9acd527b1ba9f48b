//! `hubvault versions`: a connector's kept history, with what each manifest says and the
//! newest restore drill, and the window continuous capture can restore it to.

use crate::catalog::history;
pub use crate::catalog::stream::Window;
use crate::error::Result;
use crate::model::layout::{ConnectorKey, VersionId};
use crate::store::Bucket;

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
    let entries = history::list_versions(bucket, ck).await?;
    let current = history::read_latest(bucket, ck).await.map(|m| m.version);
    let drill = history::last_drill(bucket, ck).await?;
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
                    match history::read_manifest(bucket, ck, &e.id).await {
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

/// The span continuous capture can restore the connector to (every commit in it), and
/// the objects behind it; `None` when the stream holds no base of it. Lists the hub's
/// stream (a few LIST requests per 1,000 objects).
pub async fn continuous_window(bucket: &Bucket, ck: &ConnectorKey) -> Result<Option<Window>> {
    crate::catalog::stream::window(bucket, &ck.org, ck.datahub, ck.connector).await
}
