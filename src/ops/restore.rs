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

use crate::blocking::blocking;
use crate::catalog::fetch::{self, Chosen, Fetched};
pub use crate::catalog::fetch::{Expected, Source};
use crate::error::{Error, Result};
use crate::model::ids::{Ids, OrgSlug};
use crate::model::layout::{self, ConnectorKey, DbFileName, VersionId};
use crate::progress::Progress;
use crate::sqlite::db;
use crate::sqlite::fsio::{self, side_path};
use crate::sqlite::lock::ConnectorLock;
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::store::Bucket;

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
    /// True if and only if old ids the rewrite cannot rewrite (listed in the report) may
    /// stay in the installed database; otherwise the restore refuses before installing.
    pub accept_unrewritten: bool,
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
    /// The object fetched and how it is checked.
    #[serde(flatten)]
    pub source: Chosen,
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
    /// See [`RestoreRequest::accept_unrewritten`].
    pub accept_unrewritten: bool,
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
    let source = fetch::choose(bucket, &ck, &req.source, &req.db_file).await?;
    let stamp = layout::stamp(chrono::Utc::now());
    let held_open_by = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || holders(&target))
            .await
            .unwrap_or_default()
    };
    Ok(RestorePlan {
        bucket: bucket.url().to_string(),
        source,
        from: req.from,
        to: req.to,
        rewrite: req.from != req.to,
        replaces: target.exists(),
        keep: keep_names(&target, &stamp),
        target,
        held_open_by,
        force: req.force,
        accept_unrewritten: req.accept_unrewritten,
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
    let dir = fsio::parent_dir(&plan.target).to_path_buf();
    let created_dir = {
        let dir = dir.clone();
        blocking(move || make_connector_dir(&dir)).await?
    };
    let result = execute_in(bucket, plan, &dir, progress, started).await;
    if result.is_err() && created_dir {
        // Leave no trace of a restore that did not happen.
        let (dir, lock) = (dir.clone(), ConnectorLock::path_for(&plan.target));
        let _ = blocking(move || {
            let _ = std::fs::remove_file(lock);
            let _ = std::fs::remove_dir(dir);
            Ok(())
        })
        .await;
    }
    result
}

/// Creates the connector's directory if it is missing, owned like the hub root. True if
/// and only if it was created.
fn make_connector_dir(dir: &Path) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    std::fs::create_dir(dir)
        .map_err(|e| Error::io(dir, "cannot create the connector directory", e))?;
    if let Some(root) = dir.parent() {
        fsio::give_owner_of(dir, root);
    }
    Ok(true)
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
    // Checked again under the lock: the plan may be old.
    let holders = {
        let (dir, prefix, target) = (dir.to_path_buf(), prefix.clone(), plan.target.clone());
        blocking(move || {
            remove_stale_temps(&dir, &prefix);
            Ok(holders(&target))
        })
        .await?
    };
    if !holders.is_empty() && !plan.force {
        return Err(held_open_error(&plan.target, &holders));
    }
    let fetched = fetch::fetch(bucket, &plan.source, dir, &prefix, progress).await?;
    let plan2 = plan.clone();
    let dir2 = dir.to_path_buf();
    blocking(move || prepare_and_install(&plan2, &dir2, fetched, started)).await
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
            plan.source.key
        ));
    }
    // Check the backup as fetched, before anything else touches it.
    let size = fetched.bytes;
    let damaged = |e: Error| {
        Error::check(
            format!("{}: the backup fails its check: {e}", plan.source.key),
            "the backup is damaged; restore an older version (`hubvault versions`, then --version ID)",
        )
    };
    // The temp file is ours alone until the rename: no journal, no syncs until the end.
    // A crash leaves only a temp file that the next restore removes. Locked down like
    // every connection: the download is untrusted input.
    let mut conn = db::open_scratch(tmp).map_err(damaged)?;
    let check = db::check_integrity(&conn, tmp, size).map_err(damaged)?;
    let info = db::read_info(&conn, tmp).map_err(|e| {
        Error::check(
            format!(
                "{}: the backup is not a connector database: {e}",
                plan.source.key
            ),
            "restore an older version (`hubvault versions`, then --version ID)",
        )
    })?;
    if info.datahub != plan.from.datahub || info.connector != plan.from.connector {
        return Err(Error::check(
            format!(
                "{}: the backup holds datahub {} and connector {}, not --datahub {} --connector {}",
                plan.source.key,
                info.datahub,
                info.connector,
                plan.from.datahub,
                plan.from.connector
            ),
            "the object was copied to the wrong key; pass the ids it holds, or restore another version",
        ));
    }
    let rewrite = if plan.rewrite {
        Some(rewrite::apply(
            &mut conn,
            tmp,
            plan.from,
            plan.to,
            plan.accept_unrewritten,
        )?)
    } else {
        None
    };
    if let Some(r) = rewrite.as_ref().filter(|r| r.accepted_unrewritten) {
        warnings.push(format!(
            "{} place(s) still hold an old id that cannot be rewritten (accepted with --accept-unrewritten): {}",
            r.unrewritten.len(),
            r.unrewritten
                .iter()
                .map(|u| format!("{}.{}", u.table, u.column))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Put back the live database's journal mode; else the old target's; else leave it.
    let journal_mode = match &plan.source.journal_mode {
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
    let (sha256_installed, bytes) = fsio::sha256_file(tmp)?;
    set_owner_and_mode(tmp, &plan.target, dir)?;
    fsio::fsync_file(tmp)?;

    let kept = install(plan, tmp, dir)?;
    // The rename consumed the temp file: make sure its drop does not remove the target.
    let _ = fetched.file.keep();
    Ok(RestoreReport {
        target: plan.target.clone(),
        key: plan.source.key.clone(),
        version: plan.source.version.clone(),
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
    fsio::fsync_dir(dir)?;
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
