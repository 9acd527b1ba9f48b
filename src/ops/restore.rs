//! Automatic restore: plan, then fetch, verify, rewrite, check, install.
//!
//! Contract of [`execute`]: the target path (`<hub-root>/<newConnectorId>/sqlite.db` or
//! `--output`) only ever holds the database that was there before or the new one,
//! verified, whatever point the process is killed at:
//!
//! 1. The backup is streamed into a temp file IN THE TARGET DIRECTORY (so the final
//!    rename stays on one file system), named `.sqlite.db.hubvault-restore-*`, never
//!    `sqlite.db`.
//! 2. Its sha256 is checked against what `backup` recorded: the version manifest for a
//!    version; for the canonical object `latest.json` OR any version manifest (a backup
//!    cut off between the canonical object and `latest.json` leaves `latest.json` one
//!    backup behind, and must not make a good backup look corrupt). No manifest at all
//!    means a backup the old system uploaded: accepted, with a warning in the report.
//! 3. SQLite header, `integrity_check`, `foreign_key_check`, and the ids it holds must
//!    be the ones asked for.
//! 4. Ids are rewritten ([`crate::rewrite`], its own checks included), the journal mode
//!    recorded at backup time is put back, the file is fsynced and given the owner and
//!    mode of the file it replaces (0600 and the directory's owner for a new one).
//! 5. Install: the old database is checkpointed (so the file alone is complete and no
//!    stale `-wal` can be replayed onto the new file), hard-linked to
//!    `sqlite.db.before-restore-<UTC>`, its `-wal`/`-shm` renamed beside it, then the temp
//!    file is renamed over `sqlite.db` and the directory fsynced.
//!
//! A restore refuses while a process holds the target (or its `-wal`/`-shm`) open
//! (Linux: `/proc/*/fd`), unless forced. Any error before step 5 leaves the target as it
//! was and removes the temp file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::backup;
use crate::bucket::{Bucket, Encoding};
use crate::db;
use crate::error::{Error, Result};
use crate::history;
use crate::ids::{DbFileName, OrgSlug};
use crate::layout::{self, ConnectorKey, VersionId};
use crate::lock::ConnectorLock;
use crate::progress::Progress;
use crate::rewrite::{self, Ids, RewritePlan};
use crate::snapshot::side_path;

/// Which backup of the connector to restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The canonical object (the seed's key).
    Latest,
    /// One kept version.
    Version(VersionId),
    /// The newest complete version taken at or before this time.
    At(chrono::DateTime<chrono::Utc>),
}

/// Where the restored database goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `<hub-root>/<newConnectorId>/<db file>`; the hub root must exist.
    HubRoot(PathBuf),
    /// This file; its directory must exist.
    Output(PathBuf),
}

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub org: OrgSlug,
    /// The ids of the backup.
    pub from: Ids,
    /// The ids the restored database gets (equal to `from` for the same hub).
    pub to: Ids,
    pub source: Source,
    pub target: Target,
    /// True if and only if a target held open by a process is replaced anyway.
    pub force: bool,
    pub db_file: DbFileName,
}

/// How the fetched bytes are checked.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expected {
    /// A version: exactly this sha256, from its manifest.
    Version { sha256: String, manifest: String },
    /// The canonical object: `latest.json`'s sha256, else any version manifest's.
    Canonical {
        latest_sha256: Option<String>,
        versions: usize,
    },
    /// No manifest at all (a backup uploaded by the old system): not checkable.
    Legacy,
}

/// A process that holds a file open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub path: String,
}

/// A file kept beside the target: `from` is renamed (or linked) to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// What [`execute`] will do; computing it changes nothing (`--dry-run` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct RestorePlan {
    pub bucket: String,
    /// The object fetched.
    pub key: String,
    pub compressed: bool,
    pub version: Option<VersionId>,
    pub expected: Expected,
    /// The journal mode to put back (the uploaded snapshot is in `delete` mode).
    pub journal_mode: Option<String>,
    pub from: Ids,
    pub to: Ids,
    /// True if and only if ids are rewritten.
    pub rewrite: bool,
    pub target: PathBuf,
    /// True if and only if a database is at the target now (it is kept, see `keep`).
    pub replaces: bool,
    pub keep: Vec<Kept>,
    pub held_open_by: Vec<Holder>,
    pub force: bool,
    #[serde(skip)]
    key_path: object_store::path::Path,
    #[serde(skip)]
    ck: ConnectorKey,
}

/// What [`execute`] did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub target: PathBuf,
    pub key: String,
    pub version: Option<VersionId>,
    pub sha256_fetched: String,
    /// What the download was checked against: `latest.json`, a version manifest, or
    /// `none (legacy backup)`.
    pub verified_by: String,
    /// True if and only if the backup had no manifest (uploaded by the old system).
    pub legacy: bool,
    pub warnings: Vec<String>,
    pub from: Ids,
    pub to: Ids,
    pub rewrite: Option<RewritePlan>,
    pub journal_mode: String,
    pub check: &'static str,
    pub kept: Vec<Kept>,
    pub sha256_installed: String,
    pub bytes: u64,
    pub events: Option<u64>,
    pub seconds: f64,
}

fn target_path(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.target {
        Target::HubRoot(root) => {
            if !root.is_dir() {
                return Err(Error::usage(
                    format!("--hub-root {}: no such directory", root.display()),
                    "pass the hub's root directory (/var/datahub in production), or set HUBVAULT_HUB_ROOT",
                ));
            }
            Ok(root
                .join(req.to.connector.to_string())
                .join(req.db_file.as_str()))
        }
        Target::Output(file) => {
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(Error::usage(
                    format!(
                        "--output {}: directory {} does not exist",
                        file.display(),
                        parent.display()
                    ),
                    "create the directory first or choose another --output",
                ));
            }
            if file.is_dir() || file.file_name().is_none() {
                return Err(Error::usage(
                    format!("--output {} is a directory", file.display()),
                    "pass a file path, e.g. --output ./restored.db",
                ));
            }
            Ok(file.clone())
        }
    }
}

/// `sqlite.db.before-restore-<UTC>` and its `-wal`, `-shm` beside the target.
fn keep_names(target: &Path, stamp: &str) -> Vec<Kept> {
    let keep = {
        let mut s = target.as_os_str().to_owned();
        s.push(format!(".before-restore-{stamp}"));
        PathBuf::from(s)
    };
    let mut out = Vec::new();
    if target.exists() {
        out.push(Kept {
            from: target.to_path_buf(),
            to: keep.clone(),
        });
    }
    for suffix in ["-wal", "-shm"] {
        let side = side_path(target, suffix);
        if side.exists() {
            out.push(Kept {
                from: side,
                to: side_path(&keep, suffix),
            });
        }
    }
    out
}

/// Decides what to fetch and where it goes; reads the bucket, changes nothing.
pub async fn plan(bucket: &Bucket, req: &RestoreRequest) -> Result<RestorePlan> {
    rewrite::check_ids(req.from, req.to)?;
    let target = target_path(req)?;
    let ck = ConnectorKey::new(req.org.clone(), req.from.datahub, req.from.connector);
    let not_found = |key: &object_store::path::Path, what: String, hint: String| Error::Bucket {
        op: "GET",
        key: format!("{}/{key}", bucket.url().trim_end_matches('/')),
        message: what,
        hint,
        source: None,
    };
    let (key_path, compressed, version, expected, journal_mode) = match &req.source {
        Source::Latest => {
            let key = ck.canonical(&req.db_file);
            if bucket.head(&key).await?.is_none() {
                return Err(not_found(
                    &key,
                    "no backup at this key".into(),
                    "check --org, --datahub and --connector (the OLD ids of the backup); `aws s3 ls` or `hubvault status` list the backups".into(),
                ));
            }
            let latest = backup::read_latest(bucket, &ck).await;
            let versions = history::list_versions(bucket, &ck)
                .await?
                .into_iter()
                .filter(|v| v.is_complete())
                .count();
            let expected = if latest.is_none() && versions == 0 {
                Expected::Legacy
            } else {
                Expected::Canonical {
                    latest_sha256: latest.as_ref().map(|m| m.sha256.clone()),
                    versions,
                }
            };
            let jm = latest.as_ref().map(|m| m.journal_mode.clone());
            (key, false, None, expected, jm)
        }
        Source::Version(_) | Source::At(_) => {
            let versions = history::list_versions(bucket, &ck).await?;
            let id = match &req.source {
                Source::Version(id) => {
                    if !versions.iter().any(|v| &v.id == id && v.is_complete()) {
                        return Err(not_found(
                            &ck.version_data(id),
                            format!("no complete version {id} of this connector"),
                            format!(
                                "list the versions with `hubvault versions --datahub {} --connector {}`",
                                req.from.datahub, req.from.connector
                            ),
                        ));
                    }
                    id.clone()
                }
                Source::At(at) => match history::newest_at_or_before(&versions, *at) {
                    Some(v) => v.id.clone(),
                    None => {
                        return Err(not_found(
                            &ck.versions_dir(),
                            format!("no complete version taken at or before {}", at.to_rfc3339()),
                            format!(
                                "pick a later --at, or list the versions with `hubvault versions --datahub {} --connector {}`",
                                req.from.datahub, req.from.connector
                            ),
                        ));
                    }
                },
                Source::Latest => unreachable!(),
            };
            let m = history::read_manifest(bucket, &ck, &id).await?;
            let expected = Expected::Version {
                sha256: m.sha256.clone(),
                manifest: ck.version_manifest(&id).to_string(),
            };
            let jm = Some(m.journal_mode.clone());
            (ck.version_data(&id), true, Some(id), expected, jm)
        }
    };
    let stamp = layout::stamp(chrono::Utc::now());
    let held_open_by = holders(&target);
    Ok(RestorePlan {
        bucket: bucket.url().to_string(),
        key: key_path.to_string(),
        compressed,
        version,
        expected,
        journal_mode,
        from: req.from,
        to: req.to,
        rewrite: req.from != req.to,
        replaces: target.exists(),
        keep: keep_names(&target, &stamp),
        target,
        held_open_by,
        force: req.force,
        key_path,
        ck,
    })
}

/// Processes (other than this one) that hold `target` or its `-wal`/`-shm` open, from
/// `/proc/*/fd`. Processes we may not look into are skipped.
pub fn holders(target: &Path) -> Vec<Holder> {
    let Some(dir) = target.parent() else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::canonicalize(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let name = target.file_name().unwrap_or_default();
    let wanted: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| side_path(&dir.join(name), s))
        .collect();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.contains(&link)
            {
                let command = std::fs::read_to_string(p.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                out.push(Holder {
                    pid,
                    command,
                    path: link.display().to_string(),
                });
                break;
            }
        }
    }
    out
}

/// A backup fetched into a temp file and checked against its manifest.
pub struct Fetched {
    pub file: tempfile::TempPath,
    pub sha256: String,
    pub bytes: u64,
    pub verified_by: String,
    pub legacy: bool,
}

/// Streams the planned object into a temp file in `dir` and checks its sha256 (see the
/// module's contract, step 2) and its SQLite header.
pub async fn fetch(
    bucket: &Bucket,
    plan: &RestorePlan,
    dir: &Path,
    prefix: &str,
    progress: &dyn Progress,
) -> Result<Fetched> {
    let file = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "cannot create the download file", e))?
        .into_temp_path();
    let encoding = if plan.compressed {
        Encoding::Zstd(0)
    } else {
        Encoding::Plain
    };
    let got = bucket
        .get_to_file(&plan.key_path, &file, encoding, progress)
        .await?;
    let mismatch = |against: &str| {
        Error::check(
            format!(
                "{}/{}: checksum mismatch: the download's sha256 is {}, {against}",
                plan.bucket.trim_end_matches('/'),
                plan.key,
                got.sha256
            ),
            "the object was damaged or replaced after the backup; restore an older version (`hubvault versions`, then --version ID) and run `hubvault verify`",
        )
    };
    let (verified_by, legacy) = match &plan.expected {
        Expected::Version { sha256, manifest } => {
            if *sha256 != got.sha256 {
                return Err(mismatch(&format!(
                    "its manifest {manifest} records {sha256}"
                )));
            }
            (manifest.clone(), false)
        }
        Expected::Legacy => ("none (legacy backup, no manifest)".to_string(), true),
        Expected::Canonical { latest_sha256, .. } => {
            if latest_sha256.as_deref() == Some(got.sha256.as_str()) {
                (plan.ck.latest_manifest().to_string(), false)
            } else {
                match version_with_sha(bucket, &plan.ck, &got.sha256).await? {
                    Some(key) => (key, false),
                    None => {
                        return Err(mismatch(&format!(
                            "which neither latest.json ({}) nor any version manifest records",
                            latest_sha256.as_deref().unwrap_or("unreadable")
                        )));
                    }
                }
            }
        }
    };
    db::check_is_sqlite(&file).map_err(|_| {
        Error::check(
            format!(
                "{}/{}: the download is not a SQLite database (no SQLite header; {} bytes)",
                plan.bucket.trim_end_matches('/'),
                plan.key,
                got.plain_bytes
            ),
            "the object is not a connector database; restore an older version (`hubvault versions`, then --version ID)",
        )
    })?;
    Ok(Fetched {
        file,
        sha256: got.sha256,
        bytes: got.plain_bytes,
        verified_by,
        legacy,
    })
}

/// The manifest key of a complete version whose sha256 is `sha`, if any. The version id
/// carries the first 12 hex digits, so at most a few manifests are read.
async fn version_with_sha(bucket: &Bucket, ck: &ConnectorKey, sha: &str) -> Result<Option<String>> {
    let versions = history::list_versions(bucket, ck).await?;
    let complete = versions.iter().filter(|v| v.is_complete()).map(|v| &v.id);
    let (found, _) = history::find_by_sha(bucket, ck, complete, sha).await;
    Ok(found.map(|id| ck.version_manifest(&id).to_string()))
}

/// Carries out `plan` (see the module's contract). Runs blocking file and SQLite work on
/// tokio's blocking pool.
pub async fn execute(
    bucket: &Bucket,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = std::time::Instant::now();
    if !plan.held_open_by.is_empty() && !plan.force {
        return Err(held_open_error(&plan.target, &plan.held_open_by));
    }
    let dir = plan
        .target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let created_dir = !dir.exists();
    if created_dir {
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(&dir, "cannot create the connector directory", e))?;
        if let Some(owner) = dir.parent().and_then(|p| std::fs::metadata(p).ok()) {
            let _ = std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid()));
        }
    }
    let result = execute_in(bucket, plan, &dir, progress, started).await;
    if result.is_err() && created_dir {
        // Leave no trace of a restore that did not happen.
        let _ = std::fs::remove_file(ConnectorLock::path_for(&plan.target));
        let _ = std::fs::remove_dir(&dir);
    }
    result
}

fn held_open_error(target: &Path, holders: &[Holder]) -> Error {
    let who: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.command))
        .collect();
    Error::Io {
        path: target.to_path_buf(),
        message: format!("is held open by {}; nothing was changed", who.join(", ")),
        hint: "stop the connector first (or pass --force to replace it anyway: what the process writes afterwards is lost)".into(),
        source: std::io::Error::new(std::io::ErrorKind::ResourceBusy, "held open"),
    }
}

/// The prefix of temp files a restore leaves in the target directory while it runs.
fn temp_prefix(target: &Path) -> String {
    format!(
        ".{}.hubvault-restore-",
        target.file_name().unwrap_or_default().to_string_lossy()
    )
}

async fn execute_in(
    bucket: &Bucket,
    plan: &RestorePlan,
    dir: &Path,
    progress: &dyn Progress,
    started: std::time::Instant,
) -> Result<RestoreReport> {
    // One restore (or backup) of this target at a time; a second waits a little.
    let _lock = ConnectorLock::acquire(&plan.target, Duration::from_secs(10)).await?;
    let prefix = temp_prefix(&plan.target);
    remove_stale_temps(dir, &prefix);
    // Checked again under the lock: the plan may be old.
    let holders = holders(&plan.target);
    if !holders.is_empty() && !plan.force {
        return Err(held_open_error(&plan.target, &holders));
    }
    let fetched = fetch(bucket, plan, dir, &prefix, progress).await?;
    let plan2 = plan.clone();
    let dir2 = dir.to_path_buf();
    tokio::task::spawn_blocking(move || prepare_and_install(&plan2, &dir2, fetched, started))
        .await
        .map_err(|e| Error::check(format!("restore task failed: {e}"), "report this as a bug"))?
}

/// Temp files of restores that were killed. Only called under the target's lock, so no
/// live restore owns them.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn prepare_and_install(
    plan: &RestorePlan,
    dir: &Path,
    fetched: Fetched,
    started: std::time::Instant,
) -> Result<RestoreReport> {
    let tmp: &Path = &fetched.file;
    let mut warnings = Vec::new();
    if fetched.legacy {
        warnings.push(format!(
            "{}: no manifest (a backup uploaded by the old system): its checksum could not be checked; integrity and ids were",
            plan.key
        ));
    }
    // Check the backup as fetched, before anything else touches it.
    let size = fetched.bytes;
    let damaged = |e: Error| {
        Error::check(
            format!("{}: the backup fails its check: {e}", plan.key),
            "the backup is damaged; restore an older version (`hubvault versions`, then --version ID)",
        )
    };
    let mut conn = db::open_read_write(tmp).map_err(damaged)?;
    // The temp file is ours alone until the rename: no journal, no syncs until the end.
    // A crash leaves only a temp file that the next restore removes.
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .map_err(|e| damaged(Error::sqlite(tmp, "cannot open the download", e)))?;
    let check = db::check_integrity(&conn, tmp, size).map_err(damaged)?;
    let info = db::read_info(&conn, tmp).map_err(|e| {
        Error::check(
            format!("{}: the backup is not a connector database: {e}", plan.key),
            "restore an older version (`hubvault versions`, then --version ID)",
        )
    })?;
    if info.datahub != plan.from.datahub || info.connector != plan.from.connector {
        return Err(Error::check(
            format!(
                "{}: the backup holds datahub {} and connector {}, not --datahub {} --connector {}",
                plan.key, info.datahub, info.connector, plan.from.datahub, plan.from.connector
            ),
            "the object was copied to the wrong key; pass the ids it holds, or restore another version",
        ));
    }
    let rewrite = if plan.rewrite {
        Some(rewrite::apply(&mut conn, tmp, plan.from, plan.to)?)
    } else {
        None
    };
    // Put back the live database's journal mode; else the old target's; else leave it.
    let journal_mode = match &plan.journal_mode {
        Some(m) => Some(m.clone()),
        None => plan
            .keep
            .first()
            .filter(|k| k.from == plan.target)
            .and_then(|_| {
                db::open_read_only(&plan.target)
                    .ok()
                    .and_then(|c| db::page_info(&c, &plan.target).ok())
                    .map(|p| p.2)
            }),
    };
    if let Some(m) = journal_mode.as_deref().filter(|m| *m == "wal") {
        conn.pragma_update(None, "journal_mode", m)
            .map_err(|e| Error::sqlite(tmp, "cannot set the journal mode", e))?;
    }
    conn.close()
        .map_err(|(_, e)| Error::sqlite(tmp, "cannot close the restored database", e))?;

    // The file alone (closing checkpointed and removed any -wal) must name the new ids.
    let (final_mode, events) = {
        let c = db::open_read_only(tmp)?;
        let info = db::read_info(&c, tmp)?;
        if info.datahub != plan.to.datahub || info.connector != plan.to.connector {
            return Err(Error::check(
                format!("{}: the restored file names the wrong ids", tmp.display()),
                "nothing was installed; report this as a bug",
            ));
        }
        let events = db::table_counts(&c, tmp)?.get("Events").copied();
        (db::page_info(&c, tmp)?.2, events)
    };
    // A read-only connection to a WAL file leaves empty -wal/-shm behind; they belong to
    // the temp name and must not travel.
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(side_path(tmp, s));
    }
    let (sha256_installed, bytes) = crate::bucket::sha256_file(tmp)?;
    set_owner_and_mode(tmp, &plan.target, dir)?;
    let f = std::fs::File::open(tmp).map_err(|e| Error::io(tmp, "cannot open", e))?;
    f.sync_all()
        .map_err(|e| Error::io(tmp, "cannot fsync the restored database", e))?;
    drop(f);

    let kept = install(plan, tmp, dir)?;
    // The rename consumed the temp file: make sure its drop does not remove the target.
    let _ = fetched.file.keep();
    Ok(RestoreReport {
        target: plan.target.clone(),
        key: plan.key.clone(),
        version: plan.version.clone(),
        sha256_fetched: fetched.sha256,
        verified_by: fetched.verified_by,
        legacy: fetched.legacy,
        warnings,
        from: plan.from,
        to: plan.to,
        rewrite,
        journal_mode: final_mode,
        check,
        kept,
        sha256_installed,
        bytes,
        events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The owner and mode of the file being replaced; for a new file 0600 and the owner of
/// its directory (the connector runs as that user; we may be root).
fn set_owner_and_mode(tmp: &Path, target: &Path, dir: &Path) -> Result<()> {
    let (uid, gid, mode) = match std::fs::metadata(target) {
        Ok(m) => (m.uid(), m.gid(), m.mode() & 0o7777),
        Err(_) => {
            let d = std::fs::metadata(dir).map_err(|e| Error::io(dir, "cannot stat", e))?;
            (d.uid(), d.gid(), 0o600)
        }
    };
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(tmp, "cannot set the mode of the restored database", e))?;
    let m = std::fs::metadata(tmp).map_err(|e| Error::io(tmp, "cannot stat", e))?;
    if (m.uid(), m.gid()) != (uid, gid) {
        std::os::unix::fs::chown(tmp, Some(uid), Some(gid))
            .map_err(|e| Error::io(tmp, "cannot give the restored database its owner", e))?;
    }
    Ok(())
}

/// Step 5 of the contract. Every step leaves the target either the old, complete
/// database or the new one.
fn install(plan: &RestorePlan, tmp: &Path, dir: &Path) -> Result<Vec<Kept>> {
    let target = &plan.target;
    let mut kept = Vec::new();
    if target.exists() {
        // Fold the old WAL into the file: then the file alone is the old database, and
        // no -wal is left for SQLite to replay onto the new file.
        checkpoint(target)?;
    }
    let stamp_keep = plan.keep.first().map(|k| k.to.clone());
    let keep_db = match stamp_keep {
        Some(k) if plan.keep[0].from == *target => k,
        _ => {
            let mut s = target.as_os_str().to_owned();
            s.push(format!(
                ".before-restore-{}",
                layout::stamp(chrono::Utc::now())
            ));
            PathBuf::from(s)
        }
    };
    if target.exists() {
        // A second name for the old file: the target keeps it until the rename below.
        if let Err(e) = std::fs::hard_link(target, &keep_db) {
            std::fs::copy(target, &keep_db)
                .map_err(|_| Error::io(&keep_db, "cannot keep the previous database", e))?;
        }
        kept.push(Kept {
            from: target.clone(),
            to: keep_db.clone(),
        });
    }
    for s in ["-wal", "-shm"] {
        let side = side_path(target, s);
        if side.exists() {
            let to = side_path(&keep_db, s);
            std::fs::rename(&side, &to).map_err(|e| Error::io(&side, "cannot move aside", e))?;
            kept.push(Kept { from: side, to });
        }
    }
    std::fs::rename(tmp, target)
        .map_err(|e| Error::io(target, "cannot move the restored database into place", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            Error::io(
                dir,
                "cannot fsync the directory (the database is in place)",
                e,
            )
        })?;
    Ok(kept)
}

fn checkpoint(target: &Path) -> Result<()> {
    let conn = db::open_read_write(target)?;
    let mode = db::page_info(&conn, target)?.2;
    if mode == "wal" {
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| {
                Error::sqlite(target, "cannot checkpoint the database being replaced", e)
            })?;
        if busy != 0 {
            return Err(Error::db(
                target,
                "cannot checkpoint the database being replaced: another connection is using it; nothing was changed",
                "stop the connector and run the restore again",
            ));
        }
    }
    conn.close()
        .map_err(|(_, e)| Error::sqlite(target, "cannot close the database being replaced", e))
}

/// Environment of the `--then` hook.
pub fn hook_env(plan: &RestorePlan) -> Vec<(&'static str, String)> {
    vec![
        ("HUBVAULT_OLD_DATAHUB", plan.from.datahub.to_string()),
        ("HUBVAULT_OLD_CONNECTOR", plan.from.connector.to_string()),
        ("HUBVAULT_NEW_DATAHUB", plan.to.datahub.to_string()),
        ("HUBVAULT_NEW_CONNECTOR", plan.to.connector.to_string()),
        ("HUBVAULT_DB_PATH", plan.target.display().to_string()),
    ]
}

/// Runs the `--then` hook with `sh -c` after the database is installed. Its stderr is
/// ours; its stdout too, unless `stdout_to_stderr` (to keep a JSON stdout clean).
pub fn run_hook(cmd: &str, plan: &RestorePlan, stdout_to_stderr: bool) -> Result<()> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .envs(hook_env(plan))
        .stdin(std::process::Stdio::null());
    if stdout_to_stderr {
        c.stdout(std::io::stderr());
    }
    let status = c
        .status()
        .map_err(|e| Error::io("sh", "cannot run the --then command", e))?;
    if !status.success() {
        return Err(Error::Check {
            message: format!(
                "the --then command {cmd:?} failed ({status}); the restored database IS installed at {}",
                plan.target.display()
            ),
            hint: "run the platform's \"Update config\" and \"Sync\" by hand, or fix the command and run it alone (the database needs no second restore)".into(),
        });
    }
    Ok(())
}

/// What the operator still has to do when no `--then` hook is given (the seed's steps 13
/// to 15).
pub fn remaining_steps(plan: &RestorePlan) -> Vec<String> {
    vec![
        format!(
            "In the platform, set the correct connection settings of connector {}.",
            plan.to.connector
        ),
        "From the hub menu (upper right), run \"Update config\".".into(),
        "From the hub menu, run \"Sync\".".into(),
    ]
}
