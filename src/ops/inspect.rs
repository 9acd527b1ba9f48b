//! `hubvault inspect`: ids, name, type, row counts and schema of a database: a local
//! file, or a connector's latest backup fetched and checked as `restore` does.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::catalog::fetch::{self, Source};
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, Ids, OrgSlug};
use crate::model::layout::{ConnectorKey, DbFileName};
use crate::progress::Progress;
use crate::sqlite::db;
use crate::store::Bucket;

/// What `hubvault inspect` shows of a database.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    /// For a backup: the object downloaded, when it is not `path` (the zstd version that
    /// stands in for the canonical object, [`crate::catalog::fetch::InsteadOf`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<String>,
    pub size: u64,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    pub name: String,
    pub source_type: String,
    pub page_size: u64,
    pub page_count: u64,
    pub journal_mode: String,
    pub tables: BTreeMap<String, u64>,
    /// `CREATE` statements of tables, indexes, views and triggers, in schema order.
    pub schema: Vec<String>,
}

/// Inspects a local database file.
pub fn inspect(path: &Path) -> Result<Inspection> {
    db::check_is_sqlite(path)?;
    let conn = db::open_read_only(path)?;
    let info = db::read_info(&conn, path)?;
    let tables = db::table_counts(&conn, path)?;
    let (page_size, page_count, journal_mode) = db::page_info(&conn, path)?;
    let schema: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| Error::sqlite(path, "cannot read the schema", e))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Inspection {
        path: path.display().to_string(),
        fetched: None,
        size,
        datahub: info.datahub,
        connector: info.connector,
        name: info.name,
        source_type: info.source_type,
        page_size,
        page_count,
        journal_mode,
        tables,
        schema,
    })
}

/// Downloads the latest backup of `ids` into a temp directory, checks it as `restore`
/// does (sha256 against the manifests), and inspects the copy. Returns the inspection and
/// the manifest that vouched for the bytes.
pub async fn inspect_backup(
    bucket: &Bucket,
    org: OrgSlug,
    ids: Ids,
    progress: &dyn Progress,
) -> Result<(Inspection, String)> {
    let tmp = crate::blocking::blocking(|| {
        tempfile::Builder::new()
            .prefix("hubvault-inspect-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), "cannot create a temp directory", e))
    })
    .await?;
    let ck = ConnectorKey::new(org, ids.datahub, ids.connector);
    let chosen = fetch::choose(bucket, &ck, &Source::Latest, &DbFileName::default()).await?;
    let fetched = fetch::fetch(bucket, &chosen, tmp.path(), "backup-", progress).await?;
    // The backup inspected is the canonical object, whichever object held its bytes.
    let shown = match &fetched.instead_of {
        Some(_) => chosen
            .instead_of
            .as_ref()
            .map(|c| bucket.shown(&c.key_path))
            .unwrap_or_default(),
        None => bucket.shown(&object_store::path::Path::from(fetched.key.as_str())),
    };
    let fetched_from = fetched
        .instead_of
        .is_some()
        .then(|| bucket.shown(&object_store::path::Path::from(fetched.key.as_str())));
    crate::blocking::blocking(move || {
        let mut report = inspect(&fetched.file)?;
        report.path = shown;
        report.fetched = fetched_from;
        drop(tmp);
        Ok((report, fetched.verified_by))
    })
    .await
}
